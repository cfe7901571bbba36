/* SPDX-License-Identifier: BSD-2-Clause */
/* The service step: a small sequence of XML-RPC calls to supervisord, one at
 * a time on the loop. Faults that mean "already so" (ALREADY_STARTED on a
 * start, NOT_RUNNING on a stop, ALREADY_ADDED, BAD_NAME on a removal) are
 * not errors: the step is then unchanged. */
#include "step_service.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/http.h"
#include "log.h"
#include "plan.h"
#include "rootfs.h"
#include "io/supervisor.h"
#include "util.h"

/* How often a started program's state is asked for while it is STARTING,
 * and how much of its stderr log a failure quotes (the run log gets it all,
 * the step's error its last line). */
#define POLL_MS 200
#define TAIL_BYTES 2048
/* A describe blocks the loop (plan.h): each of its calls waits at most this. */
#define DESCRIBE_TIMEOUT_MS 3000
#define DESCRIBE_SLOW_USEC (30 * 1000000LL)

enum svc_phase {
	PH_RELOAD,       /* update: reloadConfig sent */
	PH_GROUPS,       /* update: the app's group changes sent */
	PH_INFO,         /* update: getAllProcessInfo sent, to start what is not running */
	PH_ONE_INFO,     /* start, restart: getProcessInfo sent */
	PH_STARTS,       /* starts sent: then wait for RUNNING */
	PH_POLL,         /* getAllProcessInfo sent while waiting */
	PH_TAIL,         /* readProcessStderrLog of the program that did not start */
	PH_STOP_FAILED,  /* stopProcess of it, so that it does not flap */
	PH_END,          /* the last call: done when it answers */
};

struct svc_conf {
	char *path;    /* on the managed system */
	char *content; /* what the plan writes there */
};

struct svc_data {
	enum service_action action;
	char *socket;
	long timeout_ms;
	long start_timeout_ms;
	char *name;
	long delay_sec;
	const struct step *update;
	char **programs;   /* owned, NULL-terminated */
	char *app;
	char *conf_dir;
	char *root;
	struct svc_conf *confs; /* owned: the program files the plan writes before this step */
	size_t n_confs;

	/* While running. */
	struct plan_exec *x;
	struct http_request *req; /* on the loop's one HTTP client (step_env.http) */
	uv_timer_t *timer; /* allocated; freed in its close callback */
	void (*on_timer)(struct svc_data *d);
	json_t *queue;     /* pending ops: array of {method, params, ok: [faults], changes} */
	enum svc_phase phase;
	bool changed;
	json_t *added;     /* update: names added in this run (array of strings) */
	json_t *marked;    /* update: programs whose files name the app (read, or removed, in this run) */
	json_t *await;     /* programs started (or found STARTING) that must reach RUNNING */
	uint64_t deadline; /* uv_now() by which they must */
	char *fail_msg;    /* the program that did not start: why, once its log's tail is read */
	char *fail_name;
	bool fail_stop;    /* stop it after reading its log (it was STARTING or in BACKOFF) */
	bool cancelled;    /* a hard cancel came during a call: no delay, no wait */
};

/* The first line of each program file agentd writes names its app (apps.c
 * program_conf()); files of agentd before it start with the second form. */
#define APP_MARKER "; agentd app="
#define APP_MARKER_OLD "; Written by agentd for "

static bool strv_has(char *const *v, const char *s)
{
	for (; v && *v; v++)
		if (strcmp(*v, s) == 0)
			return true;
	return false;
}

static bool json_strv_has(const json_t *a, const char *s)
{
	size_t i;
	json_t *v;

	json_array_foreach((json_t *)a, i, v)
		if (json_is_string(v) && strcmp(json_string_value(v), s) == 0)
			return true;
	return false;
}

/* Whether the program file's first line names app: "; agentd app=<app>" or
 * "; Written by agentd for <app>: ...". A prefix of the name is not enough:
 * app "plone" does not own "plone-zeo"'s programs. */
static bool conf_names_app(int dfd, const char *file, const char *app)
{
	_cleanup_close_ int fd = openat(dfd, file, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	char line[512];
	struct stat st;
	size_t n = strlen(app);
	ssize_t len;

	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		return false;
	len = read(fd, line, sizeof(line) - 1);
	if (len <= 0)
		return false;
	line[len] = '\0';
	line[strcspn(line, "\n")] = '\0';
	if (strncmp(line, APP_MARKER, strlen(APP_MARKER)) == 0)
		return strcmp(line + strlen(APP_MARKER), app) == 0;
	return strncmp(line, APP_MARKER_OLD, strlen(APP_MARKER_OLD)) == 0 &&
	       strncmp(line + strlen(APP_MARKER_OLD), app, n) == 0 && line[strlen(APP_MARKER_OLD) + n] == ':';
}

/* A group of the app: one it wants, or one whose program file names it. */
static bool owned_by_app(const struct svc_data *d, const char *name)
{
	return strv_has(d->programs, name) || json_strv_has(d->marked, name);
}

static void svc_free(void *data)
{
	struct svc_data *d = data;

	if (!d)
		return;
	free(d->socket);
	free(d->name);
	free(d->app);
	free(d->conf_dir);
	free(d->root);
	for (char **p = d->programs; p && *p; p++)
		free(*p);
	free(d->programs);
	for (size_t i = 0; i < d->n_confs; i++) {
		free(d->confs[i].path);
		free(d->confs[i].content);
	}
	free(d->confs);
	json_decref(d->queue);
	json_decref(d->added);
	json_decref(d->marked);
	json_decref(d->await);
	free(d->fail_msg);
	free(d->fail_name);
	free(d);
}

static void on_timer_closed(uv_handle_t *h)
{
	free(h);
}

static void timer_stop(struct svc_data *d)
{
	if (!d->timer)
		return;
	uv_timer_stop(d->timer);
	uv_close((uv_handle_t *)d->timer, on_timer_closed);
	d->timer = NULL;
	d->on_timer = NULL;
}

static void on_timer(uv_timer_t *t)
{
	struct svc_data *d = t->data;
	void (*fn)(struct svc_data *) = d->on_timer;

	timer_stop(d);
	fn(d);
}

static void timer_start(struct svc_data *d, uint64_t ms, void (*fn)(struct svc_data *))
{
	d->timer = xcalloc(1, sizeof(*d->timer));
	uv_timer_init(plan_exec_env(d->x)->loop, d->timer);
	d->timer->data = d;
	d->on_timer = fn;
	uv_timer_start(d->timer, on_timer, ms, 0);
}

static void svc_finish(struct svc_data *d, enum step_status st, const char *err)
{
	struct plan_exec *x = d->x;

	d->x = NULL;
	if (d->req) {
		http_request_cancel(d->req);
		d->req = NULL;
	}
	timer_stop(d);
	json_decref(d->queue);
	d->queue = NULL;
	if (err)
		plan_step_done(x, STEP_FAILED, "%s", err);
	else
		plan_step_done(x, st, NULL);
}

/* Queues a call: ok1, ok2 are fault codes that count as success-without-change. */
static void svc_queue(struct svc_data *d, const char *method, json_t *params, int ok1, int ok2, bool changes)
{
	if (!d->queue)
		d->queue = json_array();
	json_array_append_new(d->queue, json_pack("{s:s, s:o, s:i, s:i, s:b}", "method", method, "params", params,
						  "ok1", ok1, "ok2", ok2, "changes", changes));
}

static void svc_next(struct svc_data *d);
static void svc_phase(struct svc_data *d, const json_t *result);

static void cb_call(void *userdata, const json_t *result, int fault, const char *error)
{
	struct svc_data *d = userdata;
	json_t *op = json_array_get(d->queue, 0);
	int ok1 = (int)json_integer_value(json_object_get(op, "ok1"));
	int ok2 = (int)json_integer_value(json_object_get(op, "ok2"));
	bool changes = json_is_true(json_object_get(op, "changes"));
	const char *method = json_string_value(json_object_get(op, "method"));

	d->req = NULL;
	if (fault && (fault == ok1 || fault == ok2))
		changes = false;
	else if (error && d->fail_msg) /* reading the log of a program that did not start: its failure is the news */
		return svc_finish(d, STEP_FAILED, d->fail_msg);
	else if (error) {
		_cleanup_free_ char *msg = fault ? xasprintf("supervisord %s: fault %d: %s", method, fault, error)
						 : xstrdup(error);
		return svc_finish(d, STEP_FAILED, msg);
	}
	if (changes) {
		d->changed = true;
		if (strcmp(method, "supervisor.addProcessGroup") == 0) {
			json_t *p = json_object_get(op, "params");
			json_array_append(d->added, json_array_get(p, 0));
		}
	}
	json_array_remove(d->queue, 0);
	if (json_array_size(d->queue) > 0)
		return svc_next(d);
	/* A phase ends when its queue is empty; the reply of its last call goes to the planner of the next one. */
	svc_phase(d, fault ? NULL : result);
}

static void svc_next(struct svc_data *d)
{
	json_t *op = json_array_get(d->queue, 0);
	int r = supervisor_call(plan_exec_env(d->x)->http, d->socket, json_string_value(json_object_get(op, "method")),
				json_object_get(op, "params"), d->timeout_ms, cb_call, d, &d->req);
	if (r < 0) {
		_cleanup_free_ char *msg = xasprintf("cannot call supervisord at %s: %s", d->socket, strerror(-r));
		svc_finish(d, STEP_FAILED, msg);
	}
}

static bool state_is(const json_t *info, const char *state)
{
	const char *st = json_string_value(json_object_get(info, "statename"));

	return st && strcmp(st, state) == 0;
}

/* Starts a program that is not running, and waits for it: one in BACKOFF
 * (supervisord retrying it) is stopped first, since startProcess refuses
 * it (ALREADY_STARTED). A spawn error is left to the wait, which reports
 * the state and supervisord's description. */
static void queue_start(struct svc_data *d, const char *name, const json_t *info)
{
	if (state_is(info, "BACKOFF"))
		svc_queue(d, "supervisor.stopProcess", json_pack("[s, b]", name, 1), SUPERVISOR_NOT_RUNNING,
			  SUPERVISOR_BAD_NAME, true);
	svc_queue(d, "supervisor.startProcess", json_pack("[s, b]", name, 0), SUPERVISOR_ALREADY_STARTED,
		  SUPERVISOR_SPAWN_ERROR, true);
	if (!json_strv_has(d->await, name))
		json_array_append_new(d->await, json_string(name));
}

static void poll_now(struct svc_data *d);

static void svc_fail_cancelled(struct svc_data *d)
{
	_cleanup_free_ char *msg = xasprintf("cancelled while waiting for %s to reach RUNNING",
					     json_string_value(json_array_get(d->await, 0)));
	svc_finish(d, STEP_FAILED, msg);
}

/* After the calls that started something: wait (the deadline counts from
 * here), or finish when nothing is to be waited for. */
static void await_start(struct svc_data *d)
{
	if (json_array_size(d->await) == 0)
		return svc_finish(d, d->changed ? STEP_CHANGED : STEP_UNCHANGED, NULL);
	if (d->cancelled)
		return svc_fail_cancelled(d);
	d->deadline = uv_now(plan_exec_env(d->x)->loop) + (uint64_t)d->start_timeout_ms;
	timer_start(d, POLL_MS, poll_now);
}

static void poll_now(struct svc_data *d)
{
	d->phase = PH_POLL;
	svc_queue(d, "supervisor.getAllProcessInfo", json_array(), 0, 0, false);
	svc_next(d);
}

static const json_t *info_of(const json_t *all, const char *name)
{
	size_t i;
	json_t *info;

	json_array_foreach((json_t *)all, i, info) {
		const char *n = json_string_value(json_object_get(info, "name"));
		if (n && strcmp(n, name) == 0)
			return info;
	}
	return NULL;
}

/* A program that did not reach RUNNING: the message says its name, its
 * state and supervisord's description; its stderr log's tail is read next
 * (the step's output, and its last line in the message), then a program
 * still STARTING or in BACKOFF is stopped, so that it neither flaps nor
 * comes up behind the failed run's back (the next run starts it). */
static void fail_program(struct svc_data *d, const char *name, const json_t *info, bool timed_out)
{
	const char *st = json_string_value(json_object_get(info, "statename"));
	const char *desc = json_string_value(json_object_get(info, "description"));
	const char *spawnerr = json_string_value(json_object_get(info, "spawnerr"));
	_cleanup_free_ char *why = NULL;

	if (!info) {
		_cleanup_free_ char *msg = xasprintf("program %s is not known to supervisord (is %s in its [include]?)",
						     name, d->conf_dir ? d->conf_dir : "its program file");
		return svc_finish(d, STEP_FAILED, msg);
	}
	if (spawnerr && *spawnerr)
		why = xasprintf(" (%s)", spawnerr);
	else if (state_is(info, "EXITED")) /* its description is the time it exited */
		why = xasprintf(" (exit status %lld)", (long long)json_integer_value(json_object_get(info, "exitstatus")));
	else if (desc && *desc)
		why = xasprintf(" (%s)", desc);
	if (timed_out)
		d->fail_msg = xasprintf("program %s did not reach RUNNING within %ld s: %s%s", name,
					(d->start_timeout_ms + 999) / 1000, st ? st : "UNKNOWN", why ? why : "");
	else
		d->fail_msg = xasprintf("program %s did not reach RUNNING: %s%s", name, st ? st : "UNKNOWN",
					why ? why : "");
	d->fail_name = xstrdup(name);
	d->fail_stop = st && (strcmp(st, "BACKOFF") == 0 || strcmp(st, "STARTING") == 0);
	d->phase = PH_TAIL;
	svc_queue(d, "supervisor.readProcessStderrLog", json_pack("[s, i, i]", name, -TAIL_BYTES, 0),
		  SUPERVISOR_NO_FILE, SUPERVISOR_FAILED, false);
	svc_next(d);
}

/* The reply of one poll: done when every awaited program is RUNNING. */
static void poll_reply(struct svc_data *d, const json_t *all)
{
	bool late = uv_now(plan_exec_env(d->x)->loop) >= d->deadline;
	size_t i = 0;

	while (i < json_array_size(d->await)) {
		const char *name = json_string_value(json_array_get(d->await, i));
		const json_t *info = info_of(all, name);

		if (info && state_is(info, "RUNNING")) {
			json_array_remove(d->await, i);
			continue;
		}
		if (!info || !state_is(info, "STARTING") || late)
			return fail_program(d, name, info, info && late);
		i++;
	}
	if (json_array_size(d->await) == 0)
		return svc_finish(d, d->changed ? STEP_CHANGED : STEP_UNCHANGED, NULL);
	if (d->cancelled)
		return svc_fail_cancelled(d);
	timer_start(d, POLL_MS, poll_now);
}

/* Its last line that says something, for the step's error. */
static char *last_line(const char *s)
{
	size_t end = strlen(s), start;

	while (end > 0 && (s[end - 1] == '\n' || s[end - 1] == '\r' || s[end - 1] == ' '))
		end--;
	start = end;
	while (start > 0 && s[start - 1] != '\n')
		start--;
	return end > start ? xstrndup(s + start, end - start) : NULL;
}

static void tail_reply(struct svc_data *d, const json_t *tail)
{
	const char *text = json_string_value(tail);
	_cleanup_free_ char *line = text ? last_line(text) : NULL;

	if (line) {
		_cleanup_free_ char *head = xasprintf("stderr of %s, last %d bytes:\n", d->fail_name, TAIL_BYTES);
		_cleanup_free_ char *eline = str_escape_ctl(line);
		char *msg = xasprintf("%s; its stderr ends: %s", d->fail_msg, eline);

		plan_step_output(d->x, head, strlen(head));
		plan_step_output(d->x, text, strlen(text));
		if (text[strlen(text) - 1] != '\n')
			plan_step_output(d->x, "\n", 1);
		free(d->fail_msg);
		d->fail_msg = msg;
	}
	if (!d->fail_stop)
		return svc_finish(d, STEP_FAILED, d->fail_msg);
	d->phase = PH_STOP_FAILED;
	svc_queue(d, "supervisor.stopProcess", json_pack("[s, b]", d->fail_name, 1), SUPERVISOR_NOT_RUNNING,
		  SUPERVISOR_BAD_NAME, false);
	svc_next(d);
}

/* Update, after reloadConfig ([[added, changed, removed]]): the app's
 * groups that went away are stopped and removed, changed ones replaced,
 * new ones added (supervisord starts them: autostart). */
static void reload_reply(struct svc_data *d, const json_t *result)
{
	const json_t *lists = json_array_get(result, 0);
	const json_t *added = json_array_get(lists, 0), *changed = json_array_get(lists, 1),
		     *removed = json_array_get(lists, 2);
	size_t i;
	json_t *v;

	json_array_foreach((json_t *)removed, i, v) {
		const char *n = json_string_value(v);
		if (!n || !owned_by_app(d, n))
			continue;
		svc_queue(d, "supervisor.stopProcessGroup", json_pack("[s, b]", n, 1), SUPERVISOR_BAD_NAME, 0, true);
		svc_queue(d, "supervisor.removeProcessGroup", json_pack("[s]", n), SUPERVISOR_BAD_NAME, 0, true);
	}
	json_array_foreach((json_t *)changed, i, v) {
		const char *n = json_string_value(v);
		if (!n || !owned_by_app(d, n))
			continue;
		svc_queue(d, "supervisor.stopProcessGroup", json_pack("[s, b]", n, 1), SUPERVISOR_BAD_NAME, 0, true);
		svc_queue(d, "supervisor.removeProcessGroup", json_pack("[s]", n), SUPERVISOR_BAD_NAME, 0, true);
		svc_queue(d, "supervisor.addProcessGroup", json_pack("[s]", n), SUPERVISOR_ALREADY_ADDED, 0, true);
	}
	json_array_foreach((json_t *)added, i, v) {
		const char *n = json_string_value(v);
		if (!n || !owned_by_app(d, n))
			continue;
		svc_queue(d, "supervisor.addProcessGroup", json_pack("[s]", n), SUPERVISOR_ALREADY_ADDED, 0, true);
	}
	d->phase = PH_GROUPS;
	if (json_array_size(d->queue) > 0)
		return svc_next(d);
	svc_phase(d, NULL);
}

/* Update, with every program's state: each of the app's programs must run
 * (design.md §8: a converged run starts what is not running); one that is
 * STARTING (just added) is waited for. */
static void info_reply(struct svc_data *d, const json_t *all)
{
	for (char **p = d->programs; p && *p; p++) {
		const json_t *info = info_of(all, *p);

		if (!info)
			return fail_program(d, *p, NULL, false);
		if (state_is(info, "STARTING")) {
			if (!json_strv_has(d->await, *p))
				json_array_append_new(d->await, json_string(*p));
		} else if (!state_is(info, "RUNNING"))
			queue_start(d, *p, info);
	}
	if (json_array_size(d->queue) > 0) {
		d->phase = PH_STARTS;
		return svc_next(d);
	}
	await_start(d);
}

static void restart_now(struct svc_data *d)
{
	svc_next(d);
}

/* Start and restart, with the program's state. */
static void one_info_reply(struct svc_data *d, const json_t *info)
{
	if (d->action == SERVICE_RESTART) {
		bool running = state_is(info, "RUNNING");

		svc_queue(d, "supervisor.stopProcess", json_pack("[s, b]", d->name, 1), SUPERVISOR_NOT_RUNNING, 0,
			  true);
		svc_queue(d, "supervisor.startProcess", json_pack("[s, b]", d->name, 0), SUPERVISOR_ALREADY_STARTED,
			  SUPERVISOR_SPAWN_ERROR, true);
		json_array_append_new(d->await, json_string(d->name));
		d->phase = PH_STARTS;
		/* Rolling restart: a running service waits its delay first. */
		if (running && d->delay_sec > 0 && !d->cancelled)
			return timer_start(d, (uint64_t)d->delay_sec * 1000, restart_now);
		return svc_next(d);
	}
	if (state_is(info, "STARTING"))
		json_array_append_new(d->await, json_string(d->name));
	else if (!state_is(info, "RUNNING"))
		queue_start(d, d->name, info);
	if (json_array_size(d->queue) > 0) {
		d->phase = PH_STARTS;
		return svc_next(d);
	}
	await_start(d);
}

/* Update: reloadConfig -> group changes -> getAllProcessInfo -> starts -> polls.
 * Start, restart: getProcessInfo -> (delay) stop, start -> polls.
 * A failure to reach RUNNING: readProcessStderrLog -> stopProcess -> failed. */
static void svc_phase(struct svc_data *d, const json_t *result)
{
	switch (d->phase) {
	case PH_RELOAD:
		return reload_reply(d, result);
	case PH_GROUPS:
		d->phase = PH_INFO;
		svc_queue(d, "supervisor.getAllProcessInfo", json_array(), 0, 0, false);
		return svc_next(d);
	case PH_INFO:
		return info_reply(d, result);
	case PH_ONE_INFO:
		return one_info_reply(d, result);
	case PH_STARTS:
		return await_start(d);
	case PH_POLL:
		return poll_reply(d, result);
	case PH_TAIL:
		return tail_reply(d, result);
	case PH_STOP_FAILED:
		return svc_finish(d, STEP_FAILED, d->fail_msg);
	case PH_END:
		break;
	}
	svc_finish(d, d->changed ? STEP_CHANGED : STEP_UNCHANGED, NULL);
}

/* Removes the app's program files that are no longer wanted (with dry_run,
 * only counts them). Notes in marked the programs whose files name the app.
 * Returns the number removed or a negative errno (a missing directory is 0). */
static int remove_stale_confs(struct svc_data *d, json_t *marked, bool dry_run, char **ret_error)
{
	_cleanup_close_ int rootfd = rootfs_open(d->root);
	_cleanup_close_ int dfd = rootfd < 0 ? rootfd : rootfs_resolve(rootfd, d->conf_dir, true);
	int fd, n = 0;
	DIR *dir;
	struct dirent *de;

	if (dfd == -ENOENT)
		return 0;
	fd = dfd < 0 ? dfd : openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(dir = fdopendir(fd))) {
		int r = fd < 0 ? (dfd < 0 ? dfd : -errno) : -errno;
		if (fd >= 0)
			(void)close(fd);
		*ret_error = xasprintf("cannot list %s: %s", d->conf_dir, rootfs_strerror(r));
		return r;
	}
	while ((de = readdir(dir))) {
		size_t len = strlen(de->d_name);
		_cleanup_free_ char *prog = NULL;

		if (len <= 5 || strcmp(de->d_name + len - 5, ".conf") != 0)
			continue;
		prog = xstrndup(de->d_name, len - 5);
		if (!conf_names_app(dirfd(dir), de->d_name, d->app))
			continue;
		json_array_append_new(marked, json_string(prog));
		if (strv_has(d->programs, prog))
			continue;
		if (!dry_run && unlinkat(dirfd(dir), de->d_name, 0) < 0) {
			int r = -errno;
			_cleanup_free_ char *ename = str_escape_ctl(de->d_name); /* may be another user's */

			*ret_error = xasprintf("cannot remove %s/%s: %s", d->conf_dir, ename, strerror(-r));
			closedir(dir);
			return r;
		}
		n++;
	}
	closedir(dir);
	return n;
}

static void svc_apply(struct step *s, struct plan_exec *x)
{
	struct svc_data *d = s->data;
	int r;

	if (d->action == SERVICE_RESTART && d->update && d->update->data &&
	    json_strv_has(((const struct svc_data *)d->update->data)->added, d->name))
		return plan_step_done(x, STEP_UNCHANGED, NULL); /* just added, and waited for by the update */
	if (!plan_exec_env(x)->http)
		return plan_step_done(x, STEP_FAILED, "cannot set up HTTP: %s", strerror(EINVAL));
	d->x = x;
	d->changed = false;
	json_decref(d->added);
	d->added = json_array();
	json_decref(d->marked);
	d->marked = json_array();
	json_decref(d->await);
	d->await = json_array();
	free(d->fail_msg);
	d->fail_msg = NULL;
	free(d->fail_name);
	d->fail_name = NULL;
	d->cancelled = false;
	switch (d->action) {
	case SERVICE_UPDATE:
		if (d->conf_dir) {
			_cleanup_free_ char *err = NULL;
			r = remove_stale_confs(d, d->marked, false, &err);
			if (r < 0) {
				d->x = NULL;
				return plan_step_done(x, STEP_FAILED, "%s", err);
			}
			d->changed = r > 0;
		}
		d->phase = PH_RELOAD;
		svc_queue(d, "supervisor.reloadConfig", json_array(), 0, 0, false);
		break;
	case SERVICE_START:
	case SERVICE_RESTART:
		d->phase = PH_ONE_INFO;
		svc_queue(d, "supervisor.getProcessInfo", json_pack("[s]", d->name), 0, 0, false);
		break;
	case SERVICE_STOP:
		d->phase = PH_END;
		svc_queue(d, "supervisor.stopProcess", json_pack("[s, b]", d->name, 1), SUPERVISOR_NOT_RUNNING,
			  SUPERVISOR_BAD_NAME, true);
		break;
	}
	svc_next(d);
}

static void svc_cancel(struct step *s)
{
	/* Calls are short (bounded by timeout_ms); a rolling-restart delay is
	 * cut short; a wait for RUNNING ends the step failed. */
	struct svc_data *d = s->data;

	if (!d->x)
		return;
	d->cancelled = true;
	if (!d->timer)
		return;
	if (d->on_timer == restart_now) {
		timer_stop(d);
		svc_next(d);
		return;
	}
	svc_fail_cancelled(d);
}

/* Whether a program file on disk differs from what the plan writes there:
 * then the run's reloadConfig will see its group changed. */
static bool confs_differ(const struct svc_data *d)
{
	for (size_t i = 0; i < d->n_confs; i++) {
		_cleanup_close_ int dfd = -1;
		_cleanup_free_ char *name = NULL, *old = NULL;
		size_t len = 0;

		if (rootfs_open_parent_path(d->root, d->confs[i].path, false, 0755, &dfd, &name) < 0 ||
		    file_read_regular(dfd, name, 0, strlen(d->confs[i].content) + 1, &old, &len) < 0 ||
		    len != strlen(d->confs[i].content) || memcmp(old, d->confs[i].content, len) != 0)
			return true;
	}
	return false;
}

/* Asks supervisord in describe; 0 with *ret (new reference), or a negative
 * errno with *ret_error. ok is a fault that counts as an answer (*ret NULL). */
static int describe_call(const struct svc_data *d, const char *method, json_t *params, int ok, json_t **ret,
			 char **ret_error)
{
	/* A supervisord that did not answer in time is not asked again for a
	 * while: the next steps of the plan (and the next plans) would each
	 * hold the loop as long. */
	static char *slow_socket;
	static int64_t slow_until;
	long t = d->timeout_ms < DESCRIBE_TIMEOUT_MS ? d->timeout_ms : DESCRIBE_TIMEOUT_MS;
	_cleanup_free_ char *err = NULL;
	int fault = 0, r;

	if (slow_socket && strcmp(slow_socket, d->socket) == 0 && time_monotonic_usec() < slow_until) {
		json_decref(params);
		*ret_error = xasprintf("cannot ask supervisord at %s: it did not answer within %ld ms a moment ago",
				       d->socket, t);
		return -ETIMEDOUT;
	}
	r = supervisor_call_sync(d->socket, method, params, t, ret, &fault, &err);
	json_decref(params);
	if (r == -ETIMEDOUT) {
		free(slow_socket);
		slow_socket = xstrdup(d->socket);
		slow_until = time_monotonic_usec() + DESCRIBE_SLOW_USEC;
	}
	if (r >= 0 && (!fault || fault == ok))
		return 0;
	*ret_error = r < 0 ? xasprintf("cannot ask supervisord at %s: %s", d->socket, err)
			   : xasprintf("%s", err);
	return r < 0 ? r : -EPROTO;
}

/* Update, as the run would find it: a stale program file to remove, a
 * program file that changes, a group of the app that supervisord would add,
 * replace or remove ("update"); a program of the app that is not running
 * ("start"); else "none". The questions are the run's own first ones:
 * reloadConfig (what `supervisorctl reread` does: it changes no process)
 * and getAllProcessInfo. */
static int describe_update(struct svc_data *d, const char **ret_action, char **ret_error)
{
	json_auto_t *marked = json_array(), *reload = NULL, *all = NULL;
	json_t *saved = d->marked;
	const json_t *lists;
	bool owned = false;
	int r;

	if (d->conf_dir && (r = remove_stale_confs(d, marked, true, ret_error)) != 0) {
		*ret_action = "update";
		return r < 0 ? r : 0;
	}
	if (confs_differ(d)) {
		*ret_action = "update";
		return 0;
	}
	r = describe_call(d, "supervisor.reloadConfig", json_array(), 0, &reload, ret_error);
	if (r < 0)
		return r;
	lists = json_array_get(reload, 0);
	d->marked = marked;
	for (size_t k = 0; k < 3 && !owned; k++) {
		size_t i;
		json_t *v;

		json_array_foreach(json_array_get(lists, k), i, v)
			if (json_is_string(v) && owned_by_app(d, json_string_value(v)))
				owned = true;
	}
	d->marked = saved;
	if (owned) {
		*ret_action = "update";
		return 0;
	}
	r = describe_call(d, "supervisor.getAllProcessInfo", json_array(), 0, &all, ret_error);
	if (r < 0)
		return r;
	*ret_action = "none";
	for (char **p = d->programs; p && *p; p++)
		if (!state_is(info_of(all, *p), "RUNNING"))
			*ret_action = "start";
	return 0;
}

static int svc_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			char **ret_error)
{
	struct svc_data *d = s->data;
	json_auto_t *info = NULL;
	int r;

	/* Asked in a plan as the run would ask (bounded, on supervisord's local
	 * socket): a converged instance plans "none" where its run would be
	 * unchanged (design.md §5). A restart always restarts. */
	switch (d->action) {
	case SERVICE_UPDATE:
		return describe_update(d, ret_action, ret_error);
	case SERVICE_RESTART:
		*ret_action = "restart";
		return 0;
	case SERVICE_START:
	case SERVICE_STOP:
		break;
	}
	r = describe_call(d, "supervisor.getProcessInfo", json_pack("[s]", d->name),
			  d->action == SERVICE_STOP ? SUPERVISOR_BAD_NAME : 0, &info, ret_error);
	if (r < 0)
		return r;
	if (d->action == SERVICE_START)
		*ret_action = state_is(info, "RUNNING") ? "none" : "start";
	else
		*ret_action = state_is(info, "RUNNING") || state_is(info, "STARTING") || state_is(info, "BACKOFF")
				      ? "stop"
				      : "none";
	return 0;
}

static const struct step_ops service_ops = {
	.kind = "service",
	.describe = svc_describe,
	.apply = svc_apply,
	.cancel = svc_cancel,
	.free_data = svc_free,
};

struct step *plan_add_service(struct plan *p, const struct service_step_opts *o, char **ret_error)
{
	struct svc_data *d;
	size_t n = 0;
	_cleanup_free_ char *target = NULL;

	if (!o->socket || (o->action != SERVICE_UPDATE && !o->name) || (o->action == SERVICE_UPDATE && !o->app)) {
		*ret_error = xstrdup("service step without a socket, program or app");
		return NULL;
	}
	d = xcalloc(1, sizeof(*d));
	d->action = o->action;
	d->socket = xstrdup(o->socket);
	d->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 30000;
	d->start_timeout_ms = o->start_timeout_ms > 0 ? o->start_timeout_ms : d->timeout_ms;
	d->name = o->name ? xstrdup(o->name) : NULL;
	d->delay_sec = o->delay_sec;
	d->update = o->update;
	d->app = o->app ? xstrdup(o->app) : NULL;
	d->conf_dir = o->conf_dir ? xstrdup(o->conf_dir) : NULL;
	d->root = xstrdup(p->root);
	while (o->programs && o->programs[n])
		n++;
	d->programs = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		d->programs[i] = xstrdup(o->programs[i]);
	d->confs = xcalloc(o->n_confs + 1, sizeof(*d->confs));
	for (size_t i = 0; i < o->n_confs; i++) {
		d->confs[i].path = xstrdup(o->confs[i].path);
		d->confs[i].content = xstrdup(o->confs[i].content);
	}
	d->n_confs = o->n_confs;
	d->added = json_array();
	d->await = json_array();
	target = o->action == SERVICE_UPDATE ? xasprintf("supervisor:%s", o->app) : xasprintf("supervisor:%s", o->name);
	return plan_add(p, &service_ops, target, d);
}

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

#define OPS_MAX 8

struct svc_op {
	char *method;   /* owned */
	json_t *params; /* owned */
	int ok_faults[3];
	bool changes;   /* success of this call changes something */
};

struct svc_data {
	enum service_action action;
	char *socket;
	long timeout_ms;
	char *name;
	long delay_sec;
	const struct step *update;
	char **programs;   /* owned, NULL-terminated */
	char *app;
	char *conf_dir;
	char *root;

	/* While running. */
	struct plan_exec *x;
	struct http_request *req; /* on the loop's one HTTP client (step_env.http) */
	uv_timer_t *timer; /* allocated; freed in its close callback */
	json_t *queue;     /* pending ops: array of [method, params, ok_faults..., changes] */
	int phase;
	bool changed;
	json_t *added;     /* update: names added in this run (array of strings) */
	json_t *marked;    /* update: programs whose files name the app (read, or removed, in this run) */
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
	json_decref(d->queue);
	json_decref(d->added);
	json_decref(d->marked);
	free(d);
}


static void svc_finish(struct svc_data *d, enum step_status st, const char *err)
{
	struct plan_exec *x = d->x;

	d->x = NULL;
	if (d->req) {
		http_request_cancel(d->req);
		d->req = NULL;
	}
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

static void on_timer_closed(uv_handle_t *h)
{
	free(h);
}

static void on_delay(uv_timer_t *t)
{
	struct svc_data *d = t->data;

	uv_close((uv_handle_t *)t, on_timer_closed);
	d->timer = NULL;
	svc_next(d);
}

/* Update: 0 reloadConfig -> 1 (act on added/changed/removed) -> 2 getAllProcessInfo -> 3 start -> done.
 * Restart: 0 getProcessInfo -> 1 (delay) stop, start -> done. */
static void svc_phase(struct svc_data *d, const json_t *result)
{
	int phase = d->phase++;

	if (d->action == SERVICE_UPDATE) {
		if (phase == 0) {
			/* reloadConfig returns [[added, changed, removed]]. */
			const json_t *lists = json_array_get(result, 0);
			const json_t *added = json_array_get(lists, 0), *changed = json_array_get(lists, 1),
				     *removed = json_array_get(lists, 2);
			size_t i;
			json_t *v;

			json_array_foreach((json_t *)removed, i, v) {
				const char *n = json_string_value(v);
				if (!n || !owned_by_app(d, n))
					continue;
				svc_queue(d, "supervisor.stopProcessGroup", json_pack("[s, b]", n, 1), SUPERVISOR_BAD_NAME, 0,
					  true);
				svc_queue(d, "supervisor.removeProcessGroup", json_pack("[s]", n), SUPERVISOR_BAD_NAME, 0,
					  true);
			}
			json_array_foreach((json_t *)changed, i, v) {
				const char *n = json_string_value(v);
				if (!n || !owned_by_app(d, n))
					continue;
				svc_queue(d, "supervisor.stopProcessGroup", json_pack("[s, b]", n, 1), SUPERVISOR_BAD_NAME, 0,
					  true);
				svc_queue(d, "supervisor.removeProcessGroup", json_pack("[s]", n), SUPERVISOR_BAD_NAME, 0,
					  true);
				svc_queue(d, "supervisor.addProcessGroup", json_pack("[s]", n), SUPERVISOR_ALREADY_ADDED, 0,
					  true);
			}
			json_array_foreach((json_t *)added, i, v) {
				const char *n = json_string_value(v);
				if (!n || !owned_by_app(d, n))
					continue;
				svc_queue(d, "supervisor.addProcessGroup", json_pack("[s]", n), SUPERVISOR_ALREADY_ADDED, 0,
					  true);
			}
			if (json_array_size(d->queue) > 0)
				return svc_next(d);
			phase = d->phase++;
		}
		if (phase == 1) {
			svc_queue(d, "supervisor.getAllProcessInfo", json_array(), 0, 0, false);
			return svc_next(d);
		}
		if (phase == 2) {
			size_t i;
			json_t *info;

			json_array_foreach((json_t *)result, i, info) {
				const char *n = json_string_value(json_object_get(info, "name"));
				const char *st = json_string_value(json_object_get(info, "statename"));
				if (!n || !st || !strv_has(d->programs, n))
					continue;
				if (strcmp(st, "RUNNING") != 0 && strcmp(st, "STARTING") != 0)
					svc_queue(d, "supervisor.startProcess", json_pack("[s, b]", n, 1),
						  SUPERVISOR_ALREADY_STARTED, 0, true);
			}
			if (json_array_size(d->queue) > 0)
				return svc_next(d);
		}
		return svc_finish(d, d->changed ? STEP_CHANGED : STEP_UNCHANGED, NULL);
	}
	if (d->action == SERVICE_RESTART && phase == 0) {
		const char *st = json_string_value(json_object_get(result, "statename"));
		bool running = st && strcmp(st, "RUNNING") == 0;

		svc_queue(d, "supervisor.stopProcess", json_pack("[s, b]", d->name, 1), SUPERVISOR_NOT_RUNNING, 0, true);
		svc_queue(d, "supervisor.startProcess", json_pack("[s, b]", d->name, 1), SUPERVISOR_ALREADY_STARTED, 0,
			  true);
		if (running && d->delay_sec > 0) {
			/* Rolling restart: a running service waits its delay first. */
			d->timer = xcalloc(1, sizeof(*d->timer));
			uv_timer_init(plan_exec_env(d->x)->loop, d->timer);
			d->timer->data = d;
			uv_timer_start(d->timer, on_delay, (uint64_t)d->delay_sec * 1000, 0);
			return;
		}
		return svc_next(d);
	}
	svc_finish(d, d->changed ? STEP_CHANGED : STEP_UNCHANGED, NULL);
}

/* Removes the app's program files that are no longer wanted. Returns the
 * number removed or a negative errno (a missing directory is 0). */
static int remove_stale_confs(struct svc_data *d, char **ret_error)
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
		json_array_append_new(d->marked, json_string(prog));
		if (strv_has(d->programs, prog))
			continue;
		if (unlinkat(dirfd(dir), de->d_name, 0) < 0) {
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
		return plan_step_done(x, STEP_UNCHANGED, NULL); /* just added and started: no second start */
	if (!plan_exec_env(x)->http)
		return plan_step_done(x, STEP_FAILED, "cannot set up HTTP: %s", strerror(EINVAL));
	d->x = x;
	d->phase = 0;
	d->changed = false;
	json_decref(d->added);
	d->added = json_array();
	json_decref(d->marked);
	d->marked = json_array();
	switch (d->action) {
	case SERVICE_UPDATE:
		if (d->conf_dir) {
			_cleanup_free_ char *err = NULL;
			r = remove_stale_confs(d, &err);
			if (r < 0) {
				d->x = NULL;
				return plan_step_done(x, STEP_FAILED, "%s", err);
			}
			d->changed = r > 0;
		}
		svc_queue(d, "supervisor.reloadConfig", json_array(), 0, 0, false);
		break;
	case SERVICE_START:
		svc_queue(d, "supervisor.startProcess", json_pack("[s, b]", d->name, 1), SUPERVISOR_ALREADY_STARTED, 0,
			  true);
		d->phase = 99;
		break;
	case SERVICE_STOP:
		svc_queue(d, "supervisor.stopProcess", json_pack("[s, b]", d->name, 1), SUPERVISOR_NOT_RUNNING,
			  SUPERVISOR_BAD_NAME, true);
		d->phase = 99;
		break;
	case SERVICE_RESTART:
		svc_queue(d, "supervisor.getProcessInfo", json_pack("[s]", d->name), 0, 0, false);
		break;
	}
	svc_next(d);
}

static void svc_cancel(struct step *s)
{
	/* Calls are short (bounded by timeout_ms); a rolling-restart delay is cut short. */
	struct svc_data *d = s->data;

	if (d->timer && uv_is_active((uv_handle_t *)d->timer)) {
		uv_timer_stop(d->timer);
		uv_close((uv_handle_t *)d->timer, on_timer_closed);
		d->timer = NULL;
		svc_next(d);
	}
}

static int svc_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			char **ret_error)
{
	struct svc_data *d = s->data;
	static const char *const actions[] = { "update", "start", "stop", "restart" };

	/* Asking supervisord would take a round trip per step; the plan says what would be asked. */
	*ret_action = actions[d->action];
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
	d->added = json_array();
	target = o->action == SERVICE_UPDATE ? xasprintf("supervisor:%s", o->app) : xasprintf("supervisor:%s", o->name);
	return plan_add(p, &service_ops, target, d);
}

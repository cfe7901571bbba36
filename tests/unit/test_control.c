/* SPDX-License-Identifier: BSD-2-Clause */
/* agent/control.c against a fake engine defined here (every engine_*
 * function, so that engine.o is never pulled from libagent.a). The server
 * runs on a real loop and a real socket; the test is its client. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "config.h"
#include "control/control.h"
#include "engine/engine.h"
#include "steps/plan.h"
#include "proto.h"
#include "util.h"

/* ---- the fake engine ---- */

struct engine {
	uv_loop_t *loop;
	struct engine_watch *watches;
	long last_id;
	long active_id; /* 0: none */
	bool fail_next;
	bool paused;
	char dir[64];
	uv_timer_t timer;
	int phase;
	size_t big_output; /* phase 2 emits big_count output events of this many bytes */
	int big_count;
	void (*after_output)(struct engine *e); /* called last in phase 2; may free e */
	bool stall; /* a requested run does not start until the test starts e->timer */
	const char *const *chunks; /* phase 2 emits these output chunks, NULL-terminated */
	json_t *stack; /* engine_stack_json() returns this when set */
	/* fleet and stack-push: answered from a timer of their own */
	bool stall_calls; /* a call is not answered until cancelled */
	bool not_etcd;    /* stack-push: -ENOTSUP */
	int calls, answered, cancelled;
	size_t pushed_len;  /* the last document pushed */
	char pushed_head[16];
	int64_t pushed_base;
};

static void fake_emit(struct engine *e, json_t *ev)
{
	struct engine_watch *w, *next;

	for (w = e->watches; w; w = next) {
		next = w->next;
		w->on_event(w->userdata, ev);
	}
	json_decref(ev);
}

static void fake_append_log(struct engine *e, long id, const char *s)
{
	char *path = engine_run_log_path(e, id);
	FILE *f = fopen(path, "a");
	assert_non_null(f);
	fputs(s, f);
	fclose(f);
	free(path);
}

/* Steps a run forward one event per timer tick, like the real executor. */
static void on_fake_timer(uv_timer_t *t)
{
	struct engine *e = t->data;
	long id = e->active_id;

	switch (e->phase++) {
	case 0:
		fake_emit(e, json_pack("{s:s, s:I, s:s}", "event", "run-started", "run", (json_int_t)id, "event_name",
				       "configure"));
		break;
	case 1:
		fake_emit(e, json_pack("{s:s, s:I, s:i, s:s, s:s}", "event", "step-started", "run", (json_int_t)id,
				       "index", 0, "kind", "exec", "target", "touch"));
		break;
	case 2:
		if (e->chunks) {
			for (size_t i = 0; e->chunks[i]; i++) {
				fake_append_log(e, id, e->chunks[i]);
				fake_emit(e, json_pack("{s:s, s:I, s:s}", "event", "output", "run", (json_int_t)id,
						       "data", e->chunks[i]));
			}
		} else if (e->big_output) {
			char *data = xmalloc(e->big_output + 1);
			memset(data, 'o', e->big_output);
			data[e->big_output] = '\0';
			for (int i = 0; i < e->big_count; i++)
				fake_emit(e, json_pack("{s:s, s:I, s:s}", "event", "output", "run", (json_int_t)id,
						       "data", data));
			free(data);
		} else {
			fake_append_log(e, id, "db_password=hunter2\n");
			fake_emit(e, json_pack("{s:s, s:I, s:s}", "event", "output", "run", (json_int_t)id, "data",
					       "db_password=hunter2\n"));
		}
		if (e->after_output)
			e->after_output(e); /* last: e may be gone */
		break;
	case 3:
		fake_emit(e, json_pack("{s:s, s:I, s:i, s:s}", "event", "step-finished", "run", (json_int_t)id, "index",
				       0, "status", e->fail_next ? "failed" : "changed"));
		break;
	default:
		e->active_id = 0;
		fake_emit(e, json_pack("{s:s, s:I, s:s}", "event", "run-finished", "run", (json_int_t)id, "status",
				       e->fail_next ? "failed" : "success"));
		e->fail_next = false;
		uv_timer_stop(t);
		return;
	}
}

static void on_fake_closed(uv_handle_t *h)
{
	free(h->data);
}

int engine_new(uv_loop_t *loop, const struct config *config, struct engine **ret)
{
	struct engine *e = xcalloc(1, sizeof(*e));

	e->loop = loop;
	snprintf(e->dir, sizeof(e->dir), "/tmp/test-control-XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	uv_timer_init(loop, &e->timer);
	e->timer.data = e;
	*ret = e;
	return 0;
}

int engine_start(struct engine *e)
{
	return 0;
}

void engine_stop(struct engine *e, void (*done)(void *userdata), void *userdata)
{
	done(userdata);
}

void engine_free(struct engine *e)
{
	char cmd[128];

	if (!e)
		return;
	/* Like the real engine: a watch left on the list would dangle. */
	assert_null(e->watches);
	snprintf(cmd, sizeof(cmd), "%s", e->dir);
	for (long i = 1; i <= e->last_id; i++) {
		char *p = engine_run_log_path(e, i);
		(void)unlink(p);
		free(p);
	}
	(void)rmdir(cmd);
	json_decref(e->stack);
	uv_close((uv_handle_t *)&e->timer, on_fake_closed);
}

json_t *engine_status(struct engine *e)
{
	return json_pack("{s:s, s:[s], s:s, s:n, s:n, s:[], s:i, s:s}", "instance", "app1", "layers", "web", "state",
			 e->paused ? "paused" : "idle", "current_run", "last_run", "queue", "uptime", 5, "version",
			 "test");
}

json_t *engine_schedule(struct engine *e)
{
	return json_pack("{s:[], s:b}", "jobs", "paused", e->paused);
}

json_t *engine_metrics(struct engine *e)
{
	return json_pack("{s:[], s:n, s:n}", "metrics", "file", "file_error");
}

json_t *engine_runs(struct engine *e, long n)
{
	json_t *runs = json_array();

	for (long i = e->last_id; i >= 1 && (long)json_array_size(runs) < n; i--)
		json_array_append_new(runs, json_pack("{s:I}", "id", (json_int_t)i));
	return json_pack("{s:o}", "runs", runs);
}

json_t *engine_run_info(struct engine *e, long id)
{
	if (id < 1 || id > e->last_id)
		return NULL;
	return json_pack("{s:I, s:s, s:[]}", "id", (json_int_t)id, "status",
			 id == e->active_id ? "running" : "success", "steps");
}

/* Deliberately unredacted: control.c must redact for unprivileged callers. */
json_t *engine_stack_json(struct engine *e)
{
	if (e->stack)
		return json_incref(e->stack);
	return json_pack("{s:{s:s, s:s}, s:s}", "ebs_snapshots", "aws_secret", "s3cr3t", "aws_key", "AKIA", "name",
			 "stack");
}

const char *engine_stack_revision(struct engine *e)
{
	return "0123456789abcdef";
}

long engine_last_run_id(struct engine *e)
{
	return e->last_id;
}

char *engine_run_log_path(struct engine *e, long id)
{
	return xasprintf("%s/%ld.log", e->dir, id);
}

size_t engine_run_plan_size(struct engine *e, long id)
{
	return 0;
}

bool engine_run_is_active(struct engine *e, long id)
{
	return id != 0 && id == e->active_id;
}

int engine_request_run(struct engine *e, enum event ev, const char *layer, const char *app, const char *recipe,
		       enum trigger_kind trig, long *ret_id, char **ret_error)
{
	if (e->active_id) {
		*ret_error = xstrdup("a run is active");
		return -EBUSY;
	}
	e->active_id = *ret_id = ++e->last_id;
	e->phase = 0;
	fake_append_log(e, e->active_id, "");
	if (!e->stall)
		uv_timer_start(&e->timer, on_fake_timer, 1, 1);
	return 0;
}

int engine_plan(struct engine *e, enum event ev, const char *layer, const char *app, const char *recipe, json_t **ret,
		char **ret_error)
{
	if (layer && strcmp(layer, "nope") == 0) {
		*ret_error = xstrdup("no layer nope");
		return -ENOENT;
	}
	*ret = json_pack("{s:[]}", "steps");
	return 0;
}

void engine_reload(struct engine *e)
{
}

int engine_pause(struct engine *e, const char *reason, char **ret_error)
{
	e->paused = true;
	return 0;
}

int engine_resume(struct engine *e, char **ret_error)
{
	e->paused = false;
	return 0;
}

int engine_clear_failed(struct engine *e, char **ret_error)
{
	return 0;
}

int engine_rollback(struct engine *e, const char *app, json_t **ret, char **ret_error)
{
	*ret_error = xasprintf("app %s has no previous release", app);
	return -ENOENT;
}

struct engine_call {
	uv_timer_t timer;
	struct engine *e;
	engine_reply_cb cb;
	void *userdata;
	json_t *result;
	char *error;
};

static void on_call_closed(uv_handle_t *h)
{
	struct engine_call *call = h->data;

	json_decref(call->result);
	free(call->error);
	free(call);
}

static void on_call_timer(uv_timer_t *t)
{
	struct engine_call *call = t->data;
	json_t *result = call->result;

	call->result = NULL;
	call->e->answered++;
	call->cb(call->userdata, result, call->error);
	uv_close((uv_handle_t *)&call->timer, on_call_closed);
}

/* Like the real engine: the answer comes later, from the loop. */
static struct engine_call *fake_call(struct engine *e, json_t *result, const char *error, engine_reply_cb cb,
				     void *userdata)
{
	struct engine_call *call = xcalloc(1, sizeof(*call));

	uv_timer_init(e->loop, &call->timer);
	call->timer.data = call;
	call->e = e;
	call->cb = cb;
	call->userdata = userdata;
	call->result = result;
	call->error = error ? xstrdup(error) : NULL;
	e->calls++;
	if (!e->stall_calls)
		uv_timer_start(&call->timer, on_call_timer, 1, 0);
	return call;
}

int engine_fleet(struct engine *e, engine_reply_cb cb, void *userdata, struct engine_call **ret, char **ret_error)
{
	*ret = fake_call(e,
			 json_pack("{s:[{s:s, s:[s,s], s:s, s:s, s:s, s:{s:i, s:s, s:s}, s:i, s:s}], s:s}", "instances",
				   "hostname", "app1", "layers", "web", "db", "address", "10.0.0.1", "state", "idle",
				   "applied_revision", "0123456789abcdef", "last_run", "id", 3, "event", "configure",
				   "status", "success", "lease_ttl", 7, "api_token", "t0ken", "source", "etcd"),
			 NULL, cb, userdata);
	return 0;
}

/* A document that is not JSON is invalid at once; base 7 is stale. */
int engine_stack_push(struct engine *e, const char *doc, size_t len, int64_t base, engine_reply_cb cb,
		      void *userdata, struct engine_call **ret, char **ret_error)
{
	json_t *parsed;

	if (e->not_etcd) {
		*ret_error = xstrdup("stack push needs an etcd source");
		return -ENOTSUP;
	}
	e->pushed_len = len;
	e->pushed_base = base;
	snprintf(e->pushed_head, sizeof(e->pushed_head), "%.*s", (int)(len < 15 ? len : 15), doc);
	parsed = json_loadb(doc, len, 0, NULL);
	if (!parsed) {
		*ret_error = xstrdup("stack rejected at $: not JSON");
		return -EINVAL;
	}
	json_decref(parsed);
	if (base == 7)
		*ret = fake_call(e, NULL, "stale base: PREFIX/stack is at revision 41, not 7", cb, userdata);
	else
		*ret = fake_call(e, json_pack("{s:s, s:i, s:I}", "key", "/p/stack", "revision", 42, "base",
					      (json_int_t)(base >= 0 ? base : 41)),
				 NULL, cb, userdata);
	return 0;
}

void engine_call_cancel(struct engine_call *call)
{
	call->e->cancelled++;
	uv_timer_stop(&call->timer);
	uv_close((uv_handle_t *)&call->timer, on_call_closed);
}

void engine_watch_add(struct engine *e, struct engine_watch *w)
{
	w->next = e->watches;
	e->watches = w;
}

/* Watches of clients: the control server keeps one of its own (the first
 * added, so the last on the list) for as long as it lives. */
static size_t client_watches(struct engine *e)
{
	size_t n = 0;

	for (struct engine_watch *w = e->watches; w; w = w->next)
		n++;
	assert_true(n >= 1);
	return n - 1;
}

void engine_watch_remove(struct engine *e, struct engine_watch *w)
{
	for (struct engine_watch **p = &e->watches; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			return;
		}
	fail_msg("removing a watch that is not there");
}

/* ---- fixture ---- */

struct fx {
	uv_loop_t loop;
	struct config config;
	struct engine *engine;
	struct control *control;
	char dir[64];
	char sock[100];
};

static int setup(void **state)
{
	struct fx *f = xcalloc(1, sizeof(*f));

	signal(SIGPIPE, SIG_IGN);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	snprintf(f->dir, sizeof(f->dir), "/tmp/test-control-sock-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	assert_int_equal(chmod(f->dir, 0755), 0);
	snprintf(f->sock, sizeof(f->sock), "%s/run/agentd.sock", f->dir);
	f->config.socket = f->sock;
	f->config.admin_group = xstrdup("agentd-test-no-such-group");
	assert_int_equal(engine_new(&f->loop, &f->config, &f->engine), 0);
	assert_int_equal(control_new(&f->loop, &f->config, f->engine, -1, &f->control), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	char path[192];

	control_free(f->control);
	engine_free(f->engine);
	/* The loop ends with nothing left behind: every handle closed. */
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	assert_int_equal(access(f->sock, F_OK), -1);
	snprintf(path, sizeof(path), "%s/run", f->dir);
	(void)rmdir(path);
	(void)rmdir(f->dir);
	free(f->config.admin_group);
	free(f);
	return 0;
}

static int client_connect(struct fx *f)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", f->sock);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

static void client_write(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EAGAIN)
			continue; /* only in tests that write more than the buffer; see pump_write */
		assert_true(n > 0);
		data += n;
		len -= (size_t)n;
	}
}

/* Writes while running the loop, for data larger than the socket buffer. */
static void pump_write(struct fx *f, int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			assert_int_equal(errno, EAGAIN);
			uv_run(&f->loop, UV_RUN_NOWAIT);
			continue;
		}
		data += n;
		len -= (size_t)n;
	}
}

static void client_send(int fd, const char *line)
{
	client_write(fd, line, strlen(line));
}

/* Runs the loop until one line arrives on fd; a safety deadline only. */
static json_t *pump_line(struct fx *f, int fd)
{
	static char buf[1 << 20];
	size_t len = 0;
	int64_t deadline = time_monotonic_usec() + 10 * 1000000;

	for (;;) {
		ssize_t n = recv(fd, buf + len, 1, MSG_DONTWAIT);
		if (n == 1) {
			if (buf[len] == '\n') {
				json_error_t jerr;
				json_t *v = json_loadb(buf, len, 0, &jerr);
				if (!v)
					fail_msg("bad reply line: %.*s", (int)len, buf);
				return v;
			}
			len++;
			assert_true(len < sizeof(buf));
			continue;
		}
		if (n == 0)
			return NULL; /* EOF */
		assert_true(errno == EAGAIN);
		assert_true(time_monotonic_usec() < deadline);
		uv_run(&f->loop, UV_RUN_ONCE);
	}
}

static json_t *call(struct fx *f, int fd, const char *line)
{
	client_send(fd, line);
	return pump_line(f, fd);
}

static const char *err_code(json_t *reply)
{
	assert_non_null(reply);
	assert_true(json_is_false(json_object_get(reply, "ok")));
	return json_string_value(json_object_get(json_object_get(reply, "error"), "code"));
}

static json_t *ok_result(json_t *reply)
{
	assert_non_null(reply);
	if (!json_is_true(json_object_get(reply, "ok"))) {
		char *s = json_dumps(reply, 0);
		fail_msg("not ok: %s", s);
	}
	return json_object_get(reply, "result");
}

/* ---- tests ---- */

/* Read-only methods are open to every local user; the others need
 * privilege (moved here from test_proto.c with the privilege column). */
static void test_method_privilege(void **state)
{
	static const enum proto_method open[] = { PROTO_METHOD_VERSION, PROTO_METHOD_STATUS, PROTO_METHOD_STACK,
						  PROTO_METHOD_RUNS,	PROTO_METHOD_RUN_INFO, PROTO_METHOD_LOG,
						  PROTO_METHOD_PLAN, PROTO_METHOD_FLEET, PROTO_METHOD_SCHEDULE,
						  PROTO_METHOD_METRICS };
	static const enum proto_method priv[] = { PROTO_METHOD_RUN,    PROTO_METHOD_RELOAD,
						  PROTO_METHOD_PAUSE,  PROTO_METHOD_RESUME,
						  PROTO_METHOD_CLEAR_FAILED, PROTO_METHOD_ROLLBACK,
						  PROTO_METHOD_STACK_PUSH };

	assert_int_equal(ELEMENTSOF(open) + ELEMENTSOF(priv), _PROTO_METHOD_MAX);
	for (size_t i = 0; i < ELEMENTSOF(open); i++)
		assert_int_equal(control_method_priv(open[i]), PROTO_OPEN);
	for (size_t i = 0; i < ELEMENTSOF(priv); i++)
		assert_int_equal(control_method_priv(priv[i]), PROTO_PRIV);
}

/* The cap on a plan's diffs counts what each caller is shown: five secret
 * files of 0.9 MiB and a public one. A privileged caller sees four diffs and
 * two notes; the others a note for each secret file, which costs little,
 * and so the public file's diff. */
static void test_plan_view_per_caller(void **state)
{
	char root[] = "/tmp/test-control-plan-XXXXXX";
	struct buf big;
	struct plan p;
	char *err = NULL;
	json_t *j, *steps;

	assert_non_null(mkdtemp(root));
	buf_init(&big);
	for (int i = 0; i < 9000; i++)
		buf_printf(&big, "%0104d\n", i);
	plan_init(&p, root);
	for (int i = 0; i < 6; i++) {
		char name[32];
		struct step *s;

		snprintf(name, sizeof(name), "/etc/f%d", i);
		s = plan_add_file(&p, name, big.data, big.len, 0644, NULL, NULL, &err);
		assert_non_null(s);
		s->secret = i < 5;
	}
	for (int privileged = 0; privileged < 2; privileged++) {
		j = plan_describe(&p, NULL);
		control_plan_view(j, privileged);
		steps = json_object_get(j, "steps");
		for (size_t k = 0; k < 6; k++) {
			json_t *st = json_array_get(steps, k);
			const char *d = json_string_value(json_object_get(st, "diff"));

			assert_null(json_object_get(st, "diff_secret"));
			assert_null(json_object_get(st, "diff_cost"));
			if (privileged && k < 4)
				assert_non_null(strstr(d, "@@ -0,0 +1,9000 @@\n"));
			else if (privileged)
				assert_string_equal(d, "(diff not shown: the diffs of this plan would pass 4 MiB)");
			else if (k < 5)
				assert_string_equal(d, "(diff hidden: contains secrets)");
			else
				assert_non_null(strstr(d, "@@ -0,0 +1,9000 @@\n"));
		}
		json_decref(j);
	}
	plan_free(&p);
	buf_free(&big);
	assert_int_equal(rmdir(root), 0);
}

static void test_version_status(void **state)
{
	struct fx *f = *state;
	int fd = client_connect(f);
	json_t *r;

	r = call(f, fd, "{\"method\":\"version\"}\n");
	assert_string_equal(json_string_value(json_object_get(ok_result(r), "version")), AGENTD_VERSION);
	assert_int_equal(json_integer_value(json_object_get(ok_result(r), "protocol")), 1);
	json_decref(r);
	r = call(f, fd, "{\"method\":\"status\",\"params\":{}}\n");
	assert_string_equal(json_string_value(json_object_get(ok_result(r), "state")), "idle");
	json_decref(r);
	r = call(f, fd, "{\"method\":\"status\",\"params\":{\"x\":1}}\n");
	assert_string_equal(err_code(r), "invalid-params");
	json_decref(r);
	close(fd);
}

static void test_bad_requests(void **state)
{
	struct fx *f = *state;
	static const struct {
		const char *line, *code;
	} cases[] = {
		{ "garbage\n", "bad-request" },
		{ "[1,2]\n", "bad-request" },
		{ "\"status\"\n", "bad-request" },
		{ "{}\n", "bad-request" },
		{ "{\"method\":5}\n", "bad-request" },
		{ "{\"method\":\"status\",\"params\":[]}\n", "bad-request" },
		{ "{\"method\":\"status\",\"method\":\"run\"}\n", "bad-request" },
		{ "{\"method\":\"shell\"}\n", "unknown-method" },
		{ "{\"method\":\"runs\",\"params\":{\"n\":\"5\"}}\n", "invalid-params" },
		{ "{\"method\":\"runs\",\"params\":{\"n\":0}}\n", "invalid-params" },
		{ "{\"method\":\"run-info\",\"params\":{\"id\":-1}}\n", "invalid-params" },
		{ "{\"method\":\"run-info\",\"params\":{\"id\":99}}\n", "not-found" },
		{ "{\"method\":\"log\",\"params\":{\"id\":\"last\"}}\n", "not-found" },
		{ "{\"method\":\"plan\",\"params\":{\"event\":\"explode\"}}\n", "invalid-params" },
		{ "{\"method\":\"plan\",\"params\":{\"event\":\"configure\",\"layer\":\"../x\"}}\n", "invalid-params" },
		{ "{\"method\":\"plan\",\"params\":{\"event\":\"configure\",\"layer\":\"nope\"}}\n", "not-found" },
		{ "{\"method\":\"run\",\"params\":{\"event\":\"configure\",\"wait\":1}}\n", "invalid-params" },
		{ "{\"method\":\"rollback\",\"params\":{}}\n", "invalid-params" },
		{ "{\"method\":\"rollback\",\"params\":{\"app\":\"x\"}}\n", "not-found" },
		{ "{\"method\":\"pause\",\"params\":{\"reason\":3}}\n", "invalid-params" },
	};
	int fd = client_connect(f);
	char *big;
	json_t *r;

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		r = call(f, fd, cases[i].line);
		if (strcmp(err_code(r), cases[i].code) != 0)
			fail_msg("%s: got %s", cases[i].line, err_code(r));
		json_decref(r);
	}

	/* 100 KB in one line: one error, and the connection still works. */
	big = xmalloc(100 * 1024 + 1);
	memset(big, 'x', 100 * 1024);
	big[100 * 1024] = '\n';
	pump_write(f, fd, big, 100 * 1024 + 1);
	free(big);
	r = pump_line(f, fd);
	assert_string_equal(err_code(r), "bad-request");
	assert_string_equal(json_string_value(json_object_get(json_object_get(r, "error"), "message")),
			    "request longer than 65536 bytes");
	json_decref(r);
	r = call(f, fd, "{\"method\":\"version\"}\n");
	ok_result(r);
	json_decref(r);
	close(fd);
}

static void test_pipelined(void **state)
{
	struct fx *f = *state;
	int fd = client_connect(f);
	json_t *r;

	client_send(fd, "{\"method\":\"version\"}\n{\"method\":\"nope\"}\n{\"method\":\"status\"}\n");
	r = pump_line(f, fd);
	assert_non_null(json_object_get(ok_result(r), "version"));
	json_decref(r);
	r = pump_line(f, fd);
	assert_string_equal(err_code(r), "unknown-method");
	json_decref(r);
	r = pump_line(f, fd);
	assert_non_null(json_object_get(ok_result(r), "state"));
	json_decref(r);
	/* EOF after requests: answered, then closed. */
	client_send(fd, "{\"method\":\"version\"}\n");
	shutdown(fd, SHUT_WR);
	r = pump_line(f, fd);
	ok_result(r);
	json_decref(r);
	assert_null(pump_line(f, fd));
	close(fd);
}

static void test_run_wait_and_log(void **state)
{
	struct fx *f = *state;
	int fd = client_connect(f), fd2;
	json_t *r;
	bool saw_output = false;

	/* A request pipelined behind the stream is answered after it. */
	client_send(fd, "{\"method\":\"run\",\"params\":{\"event\":\"configure\",\"wait\":true}}\n"
			"{\"method\":\"version\"}\n");
	for (;;) {
		r = pump_line(f, fd);
		assert_non_null(r);
		if (json_object_get(r, "ok"))
			break;
		assert_int_equal(json_integer_value(json_object_get(r, "run")), 1);
		if (strcmp(json_string_value(json_object_get(r, "event")), "output") == 0) {
			/* Privileged: output as is. */
			assert_string_equal(json_string_value(json_object_get(r, "data")), "db_password=hunter2\n");
			saw_output = true;
		}
		json_decref(r);
	}
	assert_true(saw_output);
	assert_int_equal(json_integer_value(json_object_get(ok_result(r), "id")), 1);
	assert_string_equal(json_string_value(json_object_get(ok_result(r), "status")), "success");
	json_decref(r);
	r = pump_line(f, fd);
	assert_non_null(json_object_get(ok_result(r), "version"));
	json_decref(r);

	/* log of a finished run: its content. */
	r = call(f, fd, "{\"method\":\"log\",\"params\":{\"id\":\"last\",\"follow\":true}}\n");
	assert_string_equal(json_string_value(json_object_get(ok_result(r), "output")), "db_password=hunter2\n");
	json_decref(r);

	/* log -f of an active run: existing output, new output, final status. */
	r = call(f, fd, "{\"method\":\"run\",\"params\":{\"event\":\"deploy\"}}\n");
	assert_int_equal(json_integer_value(json_object_get(ok_result(r), "id")), 2);
	assert_true(json_is_true(json_object_get(ok_result(r), "queued")));
	json_decref(r);
	fd2 = client_connect(f);
	r = call(f, fd, "{\"method\":\"run\",\"params\":{\"event\":\"deploy\"}}\n");
	assert_string_equal(err_code(r), "busy");
	json_decref(r);
	r = call(f, fd2, "{\"method\":\"log\",\"params\":{\"id\":2,\"follow\":true}}\n");
	assert_string_equal(json_string_value(json_object_get(r, "event")), "output");
	json_decref(r);
	for (;;) {
		r = pump_line(f, fd2);
		assert_non_null(r);
		if (json_object_get(r, "ok"))
			break;
		json_decref(r);
	}
	assert_string_equal(json_string_value(json_object_get(ok_result(r), "status")), "success");
	json_decref(r);
	close(fd2);
	close(fd);
}

static void test_disconnect_mid_stream(void **state)
{
	struct fx *f = *state;
	int fd = client_connect(f);
	json_t *r;

	r = call(f, fd, "{\"method\":\"run\",\"params\":{\"event\":\"configure\",\"wait\":true}}\n");
	assert_string_equal(json_string_value(json_object_get(r, "event")), "run-queued");
	json_decref(r);
	assert_true(client_watches(f->engine) > 0);
	close(fd);
	/* The watch goes with the client. */
	while (client_watches(f->engine) > 0)
		uv_run(&f->loop, UV_RUN_ONCE);
	while (f->engine->active_id)
		uv_run(&f->loop, UV_RUN_ONCE);
}

static void test_half_close_keeps_the_stream(void **state)
{
	struct fx *f = *state;
	int fd = client_connect(f);
	json_t *r;

	/* Like socat: the request, then shutdown of the sending side only. */
	client_send(fd, "{\"method\":\"run\",\"params\":{\"event\":\"configure\",\"wait\":true}}\n");
	shutdown(fd, SHUT_WR);
	for (;;) {
		r = pump_line(f, fd);
		assert_non_null(r);
		if (json_object_get(r, "ok"))
			break;
		json_decref(r);
	}
	assert_string_equal(json_string_value(json_object_get(ok_result(r), "status")), "success");
	json_decref(r);
	assert_null(pump_line(f, fd));
	assert_int_equal(client_watches(f->engine), 0);
	close(fd);
}

static void test_idle_client_does_not_block(void **state)
{
	struct fx *f = *state;
	int idle = client_connect(f), fd = client_connect(f);
	json_t *r;

	client_send(idle, "{\"method\":\"sta"); /* half a request, then silence */
	r = call(f, fd, "{\"method\":\"status\"}\n");
	ok_result(r);
	json_decref(r);
	close(idle);
	close(fd);
}

/* Reads one line (blocking); returns its length, 0 at EOF. */
static size_t child_read_line(int fd, char *buf, size_t size)
{
	size_t len = 0;

	while (len + 1 < size) {
		ssize_t n = read(fd, buf + len, 1);
		if (n <= 0)
			break;
		if (buf[len++] == '\n')
			break;
	}
	buf[len] = '\0';
	return len;
}

static int child_connect(const char *sock)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -1;
	return fd;
}

/* As nobody: PROTO_MAX_CLIENTS_PER_UID connections, then a refused one. */
static int per_uid_child(const char *sock)
{
	const char *req = "{\"method\":\"version\"}\n";
	char buf[512];

	if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
		return 10;
	for (int i = 0; i <= PROTO_MAX_CLIENTS_PER_UID; i++) {
		int fd = child_connect(sock); /* left open */
		if (fd < 0)
			return 11;
		if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
			return 12;
		if (child_read_line(fd, buf, sizeof(buf)) == 0)
			return 13;
		if (i < PROTO_MAX_CLIENTS_PER_UID && !strstr(buf, "\"ok\":true"))
			return 14;
		if (i == PROTO_MAX_CLIENTS_PER_UID && !strstr(buf, "\"code\":\"limit\""))
			return 15;
	}
	return 0;
}

static void wait_child(struct fx *f, pid_t pid)
{
	int status = 0;

	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_per_uid_limit(void **state)
{
	struct fx *f = *state;
	enum { N = PROTO_MAX_CLIENTS_PER_UID + 8 };
	int fds[N];
	json_t *r;
	pid_t pid;

	if (geteuid() != 0)
		skip();
	/* Root is not limited per uid. */
	for (int i = 0; i < N; i++) {
		fds[i] = client_connect(f);
		r = call(f, fds[i], "{\"method\":\"version\"}\n");
		ok_result(r);
		json_decref(r);
	}
	/* Another uid is, while root holds its connections. */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(per_uid_child(f->sock));
	wait_child(f, pid);
	for (int i = 0; i < N; i++)
		close(fds[i]);
}

/* As nobody, in a child: privileged methods are refused, secrets hidden. */
static int unprivileged_child(const char *sock)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char buf[8192];
	size_t len = 0;
	int fd;
	const char *req = "{\"method\":\"run\",\"params\":{\"event\":\"configure\"}}\n"
			  "{\"method\":\"pause\"}\n"
			  "{\"method\":\"stack\"}\n"
			  "{\"method\":\"log\",\"params\":{\"id\":1}}\n"
			  "{\"method\":\"status\"}\n";

	if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
		return 10;
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return 11;
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
		return 12;
	shutdown(fd, SHUT_WR);
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	if (!strstr(buf, "{\"ok\":false,\"error\":{\"code\":\"permission-denied\""))
		return 13;
	if (strstr(buf, "s3cr3t") || strstr(buf, "AKIA") || !strstr(buf, "\"aws_secret\":\"***\""))
		return 14;
	if (strstr(buf, "hunter2") || !strstr(buf, "db_password=***"))
		return 15;
	if (!strstr(buf, "\"state\":\"idle\""))
		return 16;
	return 0;
}

static void test_unprivileged(void **state)
{
	struct fx *f = *state;
	int fd, status = 0;
	json_t *r;
	pid_t pid;

	if (geteuid() != 0)
		skip();
	/* A finished run with a secret in its log. */
	fd = client_connect(f);
	r = call(f, fd, "{\"method\":\"run\",\"params\":{\"event\":\"configure\",\"wait\":true}}\n");
	while (!json_object_get(r, "ok")) {
		json_decref(r);
		r = pump_line(f, fd);
	}
	json_decref(r);
	close(fd);

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(unprivileged_child(f->sock));
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* nobody's primary group is the admin group: privileged. */
static int admin_group_child(const char *sock)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char buf[8192];
	size_t len = 0;
	int fd;
	const char *req = "{\"method\":\"pause\",\"params\":{\"reason\":\"test\"}}\n"
			  "{\"method\":\"stack\"}\n";

	if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
		return 10;
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return 11;
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
		return 12;
	shutdown(fd, SHUT_WR);
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	if (strncmp(buf, "{\"ok\":true,\"result\":{}}\n", strlen("{\"ok\":true,\"result\":{}}\n")) != 0)
		return 13;
	if (!strstr(buf, "s3cr3t"))
		return 14;
	return 0;
}

static void test_admin_group(void **state)
{
	struct fx *f = *state;
	struct group *gr = getgrgid(65534);
	int status = 0;
	pid_t pid;

	if (geteuid() != 0 || !gr)
		skip();
	free(f->config.admin_group);
	f->config.admin_group = xstrdup(gr->gr_name);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(admin_group_child(f->sock));
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_true(f->engine->paused);
}

/* Shutdown as main does it, from inside the loop: the control server, then
 * the engine, before libuv runs the close callbacks. */
static struct fx *free_fx;

static void free_control_and_engine(struct engine *e)
{
	control_free(free_fx->control);
	free_fx->control = NULL;
	engine_free(free_fx->engine); /* asserts that no watch is left */
	free_fx->engine = NULL;
}

/* A stream client that does not read is dropped for its output queue from
 * inside the engine's callback, then the server and the engine are freed
 * before its close callback runs: that callback must not touch the engine. */
static void test_free_after_a_dropped_stream_client(void **state)
{
	struct fx *f = *state;
	int fd = client_connect(f), small = 4096;
	json_t *r;

	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
	/* Some other client stays connected with its own stream. */
	int other = client_connect(f);
	r = call(f, other, "{\"method\":\"version\"}\n");
	ok_result(r);
	json_decref(r);

	f->engine->big_output = 1024 * 1024;
	f->engine->big_count = 8;
	f->engine->after_output = free_control_and_engine;
	free_fx = f;
	client_send(fd, "{\"method\":\"run\",\"params\":{\"event\":\"configure\",\"wait\":true}}\n");
	while (f->engine)
		uv_run(&f->loop, UV_RUN_ONCE);
	/* teardown runs the loop to the end: every close callback. */
	close(fd);
	close(other);
}

/* Runs the loop until the server has closed its end of fd (which the
 * client shut down for writing): a safety deadline only. */
static void pump_until_hup(struct fx *f, int fd, int seconds)
{
	int64_t deadline = time_monotonic_usec() + (int64_t)seconds * 1000000;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		assert_true(poll(&p, 1, 0) >= 0);
		if (p.revents & POLLHUP)
			return;
		assert_true(time_monotonic_usec() < deadline);
		uv_run(&f->loop, UV_RUN_NOWAIT); /* never blocks for good */
		usleep(1000);
	}
}

static bool peer_closed(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	assert_true(poll(&p, 1, 0) >= 0);
	return (p.revents & POLLHUP) != 0;
}

static void write_big_log(struct fx *f, long id, size_t size)
{
	char *path = engine_run_log_path(f->engine, id);
	char *data = xmalloc(size);
	FILE *file = fopen(path, "w");

	assert_non_null(file);
	memset(data, 'l', size);
	for (size_t i = 99; i < size; i += 100)
		data[i] = '\n';
	assert_int_equal(fwrite(data, 1, size, file), size);
	fclose(file);
	free(data);
	free(path);
}

static void finish_run(struct fx *f, int fd)
{
	json_t *r = call(f, fd, "{\"method\":\"run\",\"params\":{\"event\":\"configure\",\"wait\":true}}\n");
	while (!json_object_get(r, "ok")) {
		json_decref(r);
		r = pump_line(f, fd);
		assert_non_null(r);
	}
	json_decref(r);
}

/* A request, then EOF, and the reply is never read: the connection closes
 * once the reply stops making progress, instead of waiting for a shutdown
 * that never completes. Takes PROTO_FINISH_TIMEOUT_MS. */
static void test_finish_deadline(void **state)
{
	struct fx *f = *state;
	int fd = client_connect(f), small = 4096;

	finish_run(f, fd);
	close(fd);
	write_big_log(f, 1, PROTO_MAX_LOG_OUTPUT);
	fd = client_connect(f);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
	client_send(fd, "{\"method\":\"log\",\"params\":{\"id\":1}}\n");
	shutdown(fd, SHUT_WR);
	pump_until_hup(f, fd, PROTO_FINISH_TIMEOUT_MS / 1000 + 5);
	close(fd);
}

/* Requests pipelined behind a big reply are answered once it is out, in
 * order: at most one reply is queued per request-driven client. */
static void test_requests_wait_for_unsent_replies(void **state)
{
	struct fx *f = *state;
	int fd = client_connect(f);
	json_t *r;

	finish_run(f, fd);
	write_big_log(f, 1, 512 * 1024); /* more than the socket buffers take */
	client_send(fd, "{\"method\":\"log\",\"params\":{\"id\":1}}\n"
			"{\"method\":\"log\",\"params\":{\"id\":1}}\n"
			"{\"method\":\"version\"}\n");
	for (int i = 0; i < 2; i++) {
		r = pump_line(f, fd);
		assert_non_null(json_object_get(ok_result(r), "output"));
		json_decref(r);
	}
	r = pump_line(f, fd);
	assert_non_null(json_object_get(ok_result(r), "version"));
	json_decref(r);

	/* More requests than PROTO_MAX_OUTPUT_QUEUE worth of replies, from a
	 * client that reads late: not dropped, every reply comes. */
	enum { N = 12 };
	for (int i = 0; i < N; i++)
		client_send(fd, "{\"method\":\"log\",\"params\":{\"id\":1}}\n");
	for (int i = 0; i < 50; i++)
		uv_run(&f->loop, UV_RUN_NOWAIT);
	int lines = 0;
	int64_t deadline = time_monotonic_usec() + 20 * 1000000;
	while (lines < N) {
		static char buf[65536];
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0) {
			assert_int_equal(errno, EAGAIN);
			assert_true(time_monotonic_usec() < deadline);
			uv_run(&f->loop, UV_RUN_ONCE);
			continue;
		}
		assert_true(n > 0); /* not dropped */
		for (ssize_t i = 0; i < n; i++)
			lines += buf[i] == '\n';
	}
	close(fd);
}

/* A stream client that closes after a half-close, while the stream is
 * quiet: the stream and its watch end anyway. */
static void test_stream_ends_when_a_half_closed_client_leaves(void **state)
{
	struct fx *f = *state;
	int fd = client_connect(f);
	json_t *r;

	f->engine->stall = true;
	client_send(fd, "{\"method\":\"run\",\"params\":{\"event\":\"configure\",\"wait\":true}}\n");
	shutdown(fd, SHUT_WR);
	r = pump_line(f, fd);
	assert_string_equal(json_string_value(json_object_get(r, "event")), "run-queued");
	json_decref(r);
	assert_true(client_watches(f->engine) > 0);
	/* The server sees the half-close first, and stops reading. */
	for (int i = 0; i < 20; i++)
		uv_run(&f->loop, UV_RUN_NOWAIT);
	assert_true(client_watches(f->engine) > 0);
	close(fd);
	int64_t deadline = time_monotonic_usec() + 10 * 1000000;
	while (client_watches(f->engine) > 0) {
		assert_true(time_monotonic_usec() < deadline);
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
}

/* Many stream clients that do not read, each under the per-client cap:
 * the biggest queues are dropped to keep the total under
 * PROTO_MAX_OUTPUT_TOTAL. */
static void test_global_output_cap(void **state)
{
	struct fx *f = *state;
	enum { N = 14 };
	int fds[N], small = 4096, dropped = 0;
	json_t *r;

	f->engine->stall = true;
	fds[0] = client_connect(f);
	r = call(f, fds[0], "{\"method\":\"run\",\"params\":{\"event\":\"configure\"}}\n");
	ok_result(r);
	json_decref(r);
	for (int i = 0; i < N; i++) {
		if (i > 0)
			fds[i] = client_connect(f);
		assert_int_equal(setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
		r = call(f, fds[i], "{\"method\":\"log\",\"params\":{\"id\":1,\"follow\":true}}\n");
		assert_string_equal(json_string_value(json_object_get(r, "event")), "output");
		json_decref(r);
	}
	/* 3 MiB for each: under PROTO_MAX_OUTPUT_QUEUE, over the total. */
	f->engine->big_output = 1024 * 1024;
	f->engine->big_count = 3;
	f->engine->phase = 2;
	on_fake_timer(&f->engine->timer);
	for (int i = 0; i < 10; i++)
		uv_run(&f->loop, UV_RUN_NOWAIT);
	for (int i = 0; i < N; i++)
		dropped += peer_closed(fds[i]);
	assert_true(dropped >= 1);
	assert_true(dropped < N);
	for (int i = 0; i < N; i++)
		close(fds[i]);
	f->engine->active_id = 0;
}

static void test_stale_socket_and_in_use(void **state)
{
	struct fx *f = *state;
	struct control *second = NULL;

	/* A live server on the path: a second one refuses to take it over. */
	assert_int_equal(control_new(&f->loop, &f->config, f->engine, -1, &second), -EADDRINUSE);
	assert_null(second);
}

#define FOLLOW_VALUE "Qx9-VALUE"

/* As nobody: follows run 1, which is active, to its end. */
static int follower_child(const char *sock)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	static char buf[1 << 16];
	size_t len = 0;
	int fd;
	const char *req = "{\"method\":\"log\",\"params\":{\"id\":1,\"follow\":true}}\n";

	if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
		return 10;
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return 11;
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req))
		return 12;
	while (!strstr(buf, "\"ok\":")) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = '\0';
	}
	if (!strstr(buf, "\"ok\":true"))
		return 13;
	if (strstr(buf, "Qx9") || strstr(buf, "two words"))
		return 14;
	/* The rest of a line after a secret's name and separator is hidden. */
	if (!strstr(buf, "db_password=***\\n") || strstr(buf, "api_token") ||
	    !strstr(buf, "secret=***\\n") || !strstr(buf, "api_key: ***") || strstr(buf, "more"))
		return 15;
	return 0;
}

/* Unprivileged followers get run output a line at a time, redacted as a
 * whole: a secret's name in one chunk and its value in the next, a follower
 * that joins while the name is the line being written, a quoted value, and
 * the run's last line without a newline (sent when its step ends). */
static void test_unprivileged_follower_gets_whole_lines(void **state)
{
	static const char *const chunks[] = { "=" FOLLOW_VALUE " more\n",
					      "quoted secret='" FOLLOW_VALUE " two words'\n", "last api_key",
					      ": " FOLLOW_VALUE, NULL };
	struct fx *f = *state;
	int fd, status = 0;
	pid_t pid;
	json_t *r;

	if (geteuid() != 0)
		skip();
	f->engine->stall = true;
	f->engine->chunks = chunks;
	fd = client_connect(f);
	r = call(f, fd, "{\"method\":\"run\",\"params\":{\"event\":\"configure\"}}\n");
	ok_result(r);
	json_decref(r);
	/* Output before the follower comes: the line is not complete. */
	fake_append_log(f->engine, 1, "db_password=" FOLLOW_VALUE " api_token");
	fake_emit(f->engine, json_pack("{s:s, s:i, s:s}", "event", "output", "run", 1, "data",
				       "db_password=" FOLLOW_VALUE " api_token"));

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(follower_child(f->sock));
	while (client_watches(f->engine) == 0) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	f->engine->phase = 2;
	uv_timer_start(&f->engine->timer, on_fake_timer, 1, 1);
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(fd);
}

/* A follower that shut down its sending side is closed once its stream
 * makes no progress for PROTO_FINISH_TIMEOUT_MS, not kept for the run. */
static void test_half_closed_follower_is_closed(void **state)
{
	struct fx *f = *state;
	int fd = client_connect(f);
	json_t *r;

	f->engine->stall = true;
	r = call(f, fd, "{\"method\":\"run\",\"params\":{\"event\":\"configure\"}}\n");
	ok_result(r);
	json_decref(r);
	client_send(fd, "{\"method\":\"log\",\"params\":{\"id\":1,\"follow\":true}}\n");
	shutdown(fd, SHUT_WR);
	r = pump_line(f, fd);
	assert_string_equal(json_string_value(json_object_get(r, "event")), "output");
	json_decref(r);
	/* pump_line()'s deadline is 10 s: EOF must come before. */
	assert_null(pump_line(f, fd));
	assert_true(f->engine->active_id == 1);
	while (client_watches(f->engine) > 0)
		uv_run(&f->loop, UV_RUN_ONCE);
	close(fd);
	f->engine->active_id = 0;
}

/* Ten readers of a 6 MiB stack at once: 60 MiB of replies, above
 * PROTO_MAX_OUTPUT_TOTAL were each a copy, and all of them get it whole,
 * from one serialisation written in slices. */
static void test_many_readers_of_a_large_stack(void **state)
{
	enum { N = 10, SIZE = 6 * 1024 * 1024 };
	struct fx *f = *state;
	int fds[N], small = 4096;
	size_t got[N] = { 0 }, want = 0;
	bool done[N] = { false };
	char *big = xmalloc(SIZE + 1), *first = NULL;
	static char buf[1 << 16];
	int left = N;
	int64_t deadline = time_monotonic_usec() + 60 * 1000000;

	memset(big, 'v', SIZE);
	big[SIZE] = '\0';
	f->engine->stack = json_pack("{s:s, s:s}", "blob", big, "name", "stack");
	free(big);
	for (int i = 0; i < N; i++) {
		fds[i] = client_connect(f);
		assert_int_equal(setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
		client_send(fds[i], "{\"method\":\"stack\"}\n");
	}
	while (left > 0) {
		assert_true(time_monotonic_usec() < deadline);
		uv_run(&f->loop, UV_RUN_NOWAIT);
		for (int i = 0; i < N; i++) {
			ssize_t n;

			if (done[i])
				continue;
			n = recv(fds[i], buf, sizeof(buf), MSG_DONTWAIT);
			if (n < 0 && errno == EAGAIN)
				continue;
			/* A dropped reader gets EOF before its newline. */
			assert_true(n > 0);
			if (i == 0) {
				first = xrealloc(first, got[0] + (size_t)n);
				memcpy(first + got[0], buf, (size_t)n);
			}
			got[i] += (size_t)n;
			if (buf[n - 1] == '\n') {
				done[i] = true;
				left--;
			}
		}
	}
	want = got[0];
	assert_true(want > SIZE);
	for (int i = 0; i < N; i++) {
		assert_int_equal(got[i], want);
		close(fds[i]);
	}
	{
		json_t *v = json_loadb(first, want, 0, NULL);
		assert_non_null(v);
		assert_int_equal(json_string_length(json_object_get(ok_result(v), "stack") ?
							   json_object_get(json_object_get(ok_result(v), "stack"), "blob")
							   : NULL),
				 SIZE);
		json_decref(v);
	}
	free(first);
}

/* ---- fleet and stack-push ---- */

/* Sends line with pass attached to its bytes (SCM_RIGHTS), as agentctl does. */
static void client_send_fd(int fd, const char *line, int pass)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u = { 0 };
	struct iovec iov = { .iov_base = (void *)line, .iov_len = strlen(line) };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &pass, sizeof(int));
	assert_int_equal(sendmsg(fd, &msg, MSG_NOSIGNAL), (ssize_t)strlen(line));
}

/* How many of our descriptors are the pipe whose inode is ino. */
static int count_pipe_fds(ino_t ino)
{
	char want[64], link[64], path[300];
	struct dirent *de;
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	snprintf(want, sizeof(want), "pipe:[%lu]", (unsigned long)ino);
	while ((de = readdir(d))) {
		ssize_t l;

		snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
		l = readlink(path, link, sizeof(link) - 1);
		if (l < 0)
			continue;
		link[l] = '\0';
		n += strcmp(link, want) == 0;
	}
	closedir(d);
	return n;
}

/* fleet answers later, in order with what follows on the connection. */
static void test_fleet(void **state)
{
	struct fx *f = *state;
	int fd = client_connect(f);
	json_t *r, *inst;

	client_send(fd, "{\"method\":\"fleet\"}\n{\"method\":\"version\"}\n");
	r = pump_line(f, fd);
	inst = json_array_get(json_object_get(ok_result(r), "instances"), 0);
	assert_string_equal(json_string_value(json_object_get(inst, "hostname")), "app1");
	assert_int_equal(json_integer_value(json_object_get(inst, "lease_ttl")), 7);
	assert_string_equal(json_string_value(json_object_get(inst, "api_token")), "t0ken"); /* privileged */
	json_decref(r);
	r = pump_line(f, fd);
	assert_non_null(json_object_get(ok_result(r), "version"));
	json_decref(r);
	r = call(f, fd, "{\"method\":\"fleet\",\"params\":{\"x\":1}}\n");
	assert_string_equal(err_code(r), "invalid-params");
	json_decref(r);
	close(fd);
	assert_int_equal(f->engine->answered, 1);
}

static void test_stack_push_inline(void **state)
{
	struct fx *f = *state;
	int fd = client_connect(f);
	json_t *r;

	r = call(f, fd, "{\"method\":\"stack-push\",\"params\":{\"document\":\"{\\\"a\\\":1}\"}}\n");
	assert_int_equal(json_integer_value(json_object_get(ok_result(r), "revision")), 42);
	assert_int_equal(json_integer_value(json_object_get(ok_result(r), "base")), 41);
	assert_int_equal(f->engine->pushed_len, 7);
	assert_int_equal(f->engine->pushed_base, -1); /* ENGINE_PUSH_BASE_READ: no base given */
	json_decref(r);
	/* Stale: the engine's message names both revisions. */
	r = call(f, fd, "{\"method\":\"stack-push\",\"params\":{\"document\":\"{}\",\"base\":7}}\n");
	assert_string_equal(err_code(r), "failed");
	assert_non_null(strstr(json_string_value(json_object_get(json_object_get(r, "error"), "message")), "41"));
	json_decref(r);
	/* Invalid: refused at once, with its path. */
	r = call(f, fd, "{\"method\":\"stack-push\",\"params\":{\"document\":\"nope\"}}\n");
	assert_string_equal(err_code(r), "invalid-params");
	assert_non_null(strstr(json_string_value(json_object_get(json_object_get(r, "error"), "message")), "at $"));
	json_decref(r);
	/* base 0: only when there is no stack yet (passed as is). */
	r = call(f, fd, "{\"method\":\"stack-push\",\"params\":{\"document\":\"{}\",\"base\":0}}\n");
	assert_int_equal(json_integer_value(json_object_get(ok_result(r), "base")), 0);
	assert_int_equal(f->engine->pushed_base, 0);
	json_decref(r);
	/* Bad parameters. */
	r = call(f, fd, "{\"method\":\"stack-push\",\"params\":{\"document\":\"{}\",\"base\":-3}}\n");
	assert_string_equal(err_code(r), "invalid-params");
	json_decref(r);
	r = call(f, fd, "{\"method\":\"stack-push\",\"params\":{}}\n");
	assert_string_equal(err_code(r), "invalid-params");
	json_decref(r);
	r = call(f, fd, "{\"method\":\"stack-push\",\"params\":{\"fd\":true}}\n");
	assert_string_equal(err_code(r), "invalid-params");
	assert_non_null(strstr(json_string_value(json_object_get(json_object_get(r, "error"), "message")), "SCM_RIGHTS"));
	json_decref(r);
	f->engine->not_etcd = true;
	r = call(f, fd, "{\"method\":\"stack-push\",\"params\":{\"document\":\"{}\"}}\n");
	assert_string_equal(err_code(r), "failed");
	json_decref(r);
	close(fd);
}

/* A document larger than a request comes as a descriptor: read whole on
 * the thread pool; a pipe is refused, and so is a file over 16 MiB. */
static void test_stack_push_fd(void **state)
{
	struct fx *f = *state;
	char path[] = "/tmp/test-control-push-XXXXXX";
	int fd = client_connect(f), file = mkstemp(path), p[2];
	size_t size = 3 * PROTO_MAX_REQUEST;
	char *doc = xmalloc(size);
	json_t *r;

	assert_true(file >= 0);
	memset(doc, ' ', size);
	memcpy(doc, "{\"blob\":1}", 10);
	assert_int_equal(write(file, doc, size), (ssize_t)size);
	client_send_fd(fd, "{\"method\":\"stack-push\",\"params\":{\"fd\":true,\"base\":12}}\n", file);
	r = pump_line(f, fd);
	assert_int_equal(json_integer_value(json_object_get(ok_result(r), "revision")), 42);
	assert_int_equal(f->engine->pushed_len, size);
	assert_int_equal(f->engine->pushed_base, 12);
	assert_string_equal(f->engine->pushed_head, "{\"blob\":1}     ");
	json_decref(r);

	assert_int_equal(ftruncate(file, PROTO_MAX_PUSH_FILE + 1), 0);
	client_send_fd(fd, "{\"method\":\"stack-push\",\"params\":{\"fd\":true}}\n", file);
	r = pump_line(f, fd);
	assert_string_equal(err_code(r), "invalid-params");
	assert_non_null(strstr(json_string_value(json_object_get(json_object_get(r, "error"), "message")), "16 MiB"));
	json_decref(r);

	assert_int_equal(pipe(p), 0);
	client_send_fd(fd, "{\"method\":\"stack-push\",\"params\":{\"fd\":true}}\n", p[0]);
	r = pump_line(f, fd);
	assert_string_equal(err_code(r), "invalid-params");
	assert_non_null(strstr(json_string_value(json_object_get(json_object_get(r, "error"), "message")), "regular"));
	json_decref(r);
	close(p[0]);
	close(p[1]);
	close(file);
	unlink(path);
	free(doc);
	close(fd);
}

/* The client leaves before the engine answers: the call is cancelled. */
static void test_deferred_cancelled(void **state)
{
	struct fx *f = *state;
	int fd = client_connect(f), fd2;
	json_t *r;

	f->engine->stall_calls = true;
	client_send(fd, "{\"method\":\"fleet\"}\n");
	while (f->engine->calls == 0)
		uv_run(&f->loop, UV_RUN_ONCE);
	close(fd);
	while (f->engine->cancelled == 0)
		uv_run(&f->loop, UV_RUN_ONCE);
	assert_int_equal(f->engine->answered, 0);
	/* The server goes on. */
	fd2 = client_connect(f);
	r = call(f, fd2, "{\"method\":\"version\"}\n");
	ok_result(r);
	json_decref(r);
	close(fd2);
}

/* nobody: fleet redacted, stack-push denied, and the descriptor it passed
 * is not kept. */
static int unprivileged_fleet_child(const char *sock, const int *p)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char buf[8192];
	size_t len = 0;
	int fd;

	if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
		return 10;
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return 11;
	for (int i = 0; i < 8; i++)
		client_send_fd(fd, "{\"method\":\"stack-push\",\"params\":{\"fd\":true}}\n", p[0]);
	client_send(fd, "{\"method\":\"fleet\"}\n");
	shutdown(fd, SHUT_WR);
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	if (!strstr(buf, "{\"ok\":false,\"error\":{\"code\":\"permission-denied\""))
		return 13;
	if (strstr(buf, "t0ken") || !strstr(buf, "\"api_token\":\"***\"") || !strstr(buf, "\"lease_ttl\":7"))
		return 14;
	return 0;
}

static void test_unprivileged_fleet_and_push(void **state)
{
	struct fx *f = *state;
	int status = 0, p[2];
	struct stat st;
	pid_t pid;

	if (geteuid() != 0)
		skip();
	assert_int_equal(pipe(p), 0);
	assert_int_equal(fstat(p[0], &st), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(unprivileged_fleet_child(f->sock, p));
	close(p[0]);
	close(p[1]);
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		uv_run(&f->loop, UV_RUN_NOWAIT);
		usleep(1000);
	}
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(f->engine->calls, 1); /* fleet only */
	/* Every descriptor it passed was closed as it came. */
	assert_int_equal(count_pipe_fds(st.st_ino), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_method_privilege),
		cmocka_unit_test(test_plan_view_per_caller),
		cmocka_unit_test_setup_teardown(test_version_status, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipelined, setup, teardown),
		cmocka_unit_test_setup_teardown(test_run_wait_and_log, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disconnect_mid_stream, setup, teardown),
		cmocka_unit_test_setup_teardown(test_half_close_keeps_the_stream, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_client_does_not_block, setup, teardown),
		cmocka_unit_test_setup_teardown(test_per_uid_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unprivileged, setup, teardown),
		cmocka_unit_test_setup_teardown(test_admin_group, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_after_a_dropped_stream_client, setup, teardown),
		cmocka_unit_test_setup_teardown(test_finish_deadline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_requests_wait_for_unsent_replies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stream_ends_when_a_half_closed_client_leaves, setup, teardown),
		cmocka_unit_test_setup_teardown(test_global_output_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_socket_and_in_use, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unprivileged_follower_gets_whole_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_half_closed_follower_is_closed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many_readers_of_a_large_stack, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fleet, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stack_push_inline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stack_push_fd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_deferred_cancelled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unprivileged_fleet_and_push, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

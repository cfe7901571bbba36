/* SPDX-License-Identifier: BSD-2-Clause */
/* The control methods (design.md §5): the method table, indexed by the
 * protocol's enum, with each method's privilege, checked once in
 * methods_dispatch(); one handler per method, which reads its parameters,
 * asks the engine and answers; and the streams of log with follow and run
 * with wait. What a caller that is not privileged sees is decided at this
 * boundary (redact.c), whatever the engine returns. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
#include "control_int.h"
#include "engine/runlog.h"
#include "event.h"
#include "log.h"

#define CONTROL_MAX_REASON 1024 /* bytes in a pause reason */

/* Each getter returns NULL, or an error reply for the caller to send. */

/* Each getter returns NULL, or an error reply for the caller to send. */

json_t *params_only(json_t *params, const char *const *allowed)
{
	const char *k;
	json_t *v;

	json_object_foreach(params, k, v)
	{
		bool ok = false;
		for (size_t i = 0; allowed && allowed[i]; i++)
			if (strcmp(allowed[i], k) == 0)
				ok = true;
		if (!ok)
			return proto_reply_error(PROTO_E_INVALID_PARAMS, "unknown parameter \"%.64s\"", k);
	}
	return NULL;
}

static json_t *param_bool(json_t *params, const char *key, bool *ret)
{
	json_t *v = json_object_get(params, key);

	*ret = false;
	if (!v || json_is_null(v))
		return NULL;
	if (!json_is_boolean(v))
		return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"%s\" must be a boolean", key);
	*ret = json_is_true(v);
	return NULL;
}

/* A layer or app name, optional unless required. */
static json_t *param_name(json_t *params, const char *key, bool required, const char **ret)
{
	json_t *v = json_object_get(params, key);

	*ret = NULL;
	if (!v || json_is_null(v))
		return required ? proto_reply_error(PROTO_E_INVALID_PARAMS, "\"%s\" is required", key) : NULL;
	if (!json_is_string(v))
		return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"%s\" must be a string", key);
	if (!name_is_valid(json_string_value(v)))
		return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"%s\" is not a valid name", key);
	*ret = json_string_value(v);
	return NULL;
}

static json_t *param_event(json_t *params, enum event *ret)
{
	json_t *v = json_object_get(params, "event");

	*ret = EVENT_INVALID;
	if (!v || json_is_null(v))
		return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"event\" is required");
	if (!json_is_string(v))
		return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"event\" must be a string");
	*ret = event_from_string(json_string_value(v));
	if (*ret == EVENT_INVALID)
		return proto_reply_error(PROTO_E_INVALID_PARAMS,
					 "unknown event \"%.64s\" (setup, configure, deploy, undeploy, shutdown, maintenance)",
					 json_string_value(v));
	return NULL;
}

/* A run id: a positive integer, or "last". */
static json_t *param_run_id(struct client *c, json_t *params, long *ret)
{
	json_t *v = json_object_get(params, "id");

	*ret = 0;
	if (!v || json_is_null(v))
		return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"id\" is required");
	if (json_is_string(v) && strcmp(json_string_value(v), "last") == 0) {
		*ret = engine_last_run_id(c->ctl->engine);
		if (*ret <= 0)
			return proto_reply_error(PROTO_E_NOT_FOUND, "no runs yet");
		return NULL;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > LONG_MAX)
		return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"id\" must be a positive integer or \"last\"");
	*ret = (long)json_integer_value(v);
	return NULL;
}

json_t *reply_engine_error(int r, char *msg /* freed */)
{
	json_t *reply = proto_reply_error(proto_error_code_from_errno(r), "%s", msg ? msg : strerror(-r));
	free(msg);
	return reply;
}

/* ---- streams ---- */

static void on_watch_event(void *userdata, const json_t *ev);

static void client_stream_start(struct client *c, enum client_stream kind, long run)
{
	c->stream = kind;
	c->stream_run = run;
	if (!c->watching) {
		c->watch = (struct engine_watch){ .on_event = on_watch_event, .userdata = c };
		engine_watch_add(c->ctl->engine, &c->watch);
		c->watching = true;
	}
	client_arm_timer(c);
}

/* The watch is removed, and requests that queued up meanwhile are answered,
 * from the timer: we are inside the engine's callback here. */
static void client_stream_end(struct client *c)
{
	c->stream = STREAM_NONE;
	c->stream_run = 0;
	c->deferred = true;
	client_arm_timer(c);
}

/* Sends the rollback answer held in c: ok when the run's rollback step
 * switched current, else the step's (or the run's) error. */
static void rollback_answer(struct client *c, const json_t *step, const json_t *info, bool finished)
{
	struct control *ctl = c->ctl;
	const char *status = json_string_value(json_object_get(step, "status"));

	ctl->in_engine_cb++;
	if (status && (strcmp(status, "changed") == 0 || strcmp(status, "unchanged") == 0)) {
		if (finished)
			json_object_del(c->stream_reply, "restart_run");
		client_send_new(c, proto_reply_ok(c->stream_reply));
	} else {
		const char *why = json_string_value(json_object_get(step, "error"));

		if (!why)
			why = json_string_value(json_object_get(info, "error"));
		client_send_new(c, proto_reply_error(PROTO_E_FAILED, "%s", why ? why : "the rollback run failed"));
		json_decref(c->stream_reply);
	}
	c->stream_reply = NULL;
	client_stream_end(c);
	ctl->in_engine_cb--;
}

/* The answer to rollback, once its run has switched current (the run's
 * first step, the rollback step): today's promise, current has moved when
 * agentctl returns. When restarts follow, the answer names their run
 * (restart_run) at once; a rollback alone is answered when its run is over,
 * so that the next request finds no run in progress. A switch that failed
 * when it ran (something changed since the preview) is the error. */
static void rollback_event(struct client *c, const char *name, const json_t *ev)
{
	struct control *ctl = c->ctl;
	bool switched = strcmp(name, "step-finished") == 0 && json_integer_value(json_object_get(ev, "index")) == 0;
	bool finished = strcmp(name, "run-finished") == 0;
	json_t *info = NULL;
	const json_t *step = ev;
	const char *status;

	if (!switched && !finished)
		return;
	if (finished) {
		info = engine_run_info(ctl->engine, c->stream_run);
		step = json_array_get(json_object_get(info, "steps"), 0);
	}
	status = json_string_value(json_object_get(step, "status"));
	if (switched && status && strcmp(status, "failed") != 0 &&
	    engine_run_plan_size(ctl->engine, c->stream_run) <= 1)
		return; /* the rollback alone: answered when its run is over */
	rollback_answer(c, step, info, finished);
	json_decref(info);
}

static void on_watch_event(void *userdata, const json_t *ev)
{
	struct client *c = userdata;
	struct control *ctl = c->ctl;
	const char *name = json_string_value(json_object_get(ev, "event"));
	json_t *run = json_object_get(ev, "run");
	bool output, finished;

	if (c->closing || c->stream == STREAM_NONE || !name || !json_is_integer(run) ||
	    json_integer_value(run) != c->stream_run)
		return;
	if (c->stream == STREAM_ROLLBACK) {
		rollback_event(c, name, ev);
		return;
	}
	output = strcmp(name, "output") == 0;
	finished = strcmp(name, "run-finished") == 0;

	ctl->in_engine_cb++;
	/* Whichever watch sees a step or run boundary first completes the held
	 * line, so that it comes before what follows it. */
	if (!output)
		held_flush(ctl, c->stream_run);
	if (output) {
		if (client_privileged(c))
			client_send_new(c, output_event(ev));
	} else if (c->stream == STREAM_RUN) {
		if (client_privileged(c))
			client_send(c, ev);
		else {
			json_t *copy = json_deep_copy(ev);
			redact_texts(ctl, copy);
			client_send_new(c, copy);
		}
	}

	if (finished && c->stream == STREAM_LOG) {
		json_t *status = json_object_get(ev, "status");
		client_send_new(c, proto_reply_ok(json_pack("{s:I, s:O}", "id", (json_int_t)c->stream_run, "status",
							     status ? status : json_null())));
		client_stream_end(c);
	} else if (finished && c->stream == STREAM_RUN) {
		json_t *info = engine_run_info(ctl->engine, c->stream_run);
		if (!info) {
			json_t *status = json_object_get(ev, "status");
			info = json_pack("{s:I, s:O}", "id", (json_int_t)c->stream_run, "status",
					 status ? status : json_null());
		}
		if (!client_privileged(c))
			redact_texts(c->ctl, info);
		client_send_new(c, proto_reply_ok(info));
		client_stream_end(c);
	}
	ctl->in_engine_cb--;
}

/* ---- methods ---- */

typedef json_t *(*ctl_handler)(struct client *c, json_t *params);

static json_t *ctl_version(struct client *c, json_t *params)
{
	json_t *err = params_only(params, NULL);
	if (err)
		return err;
	return proto_reply_ok(
		json_pack("{s:s, s:i}", "version", AGENTD_VERSION, "protocol", PROTO_VERSION));
}

static json_t *ctl_status(struct client *c, json_t *params)
{
	json_t *err = params_only(params, NULL);
	json_t *st;

	if (err)
		return err;
	st = engine_status(c->ctl->engine);
	if (!st)
		return proto_reply_error(PROTO_E_INTERNAL, "no status");
	if (!client_privileged(c))
		redact_texts(c->ctl, st);
	return proto_reply_ok(st);
}

/* `schedule` (design.md §5, §8.1): the maintenance jobs, read-only; no
 * secret in it (names, cron expressions, times). */
static json_t *ctl_schedule(struct client *c, json_t *params)
{
	json_t *err = params_only(params, NULL);

	if (err)
		return err;
	return proto_reply_ok(engine_schedule(c->ctl->engine));
}

/* `metrics` (design.md §4 metrics_file): the figures metrics_file holds,
 * read-only and open to all like the file (0644): names, counts, times and
 * revisions, no secret. */
static json_t *ctl_metrics(struct client *c, json_t *params)
{
	json_t *err = params_only(params, NULL);

	if (err)
		return err;
	return proto_reply_ok(engine_metrics(c->ctl->engine));
}

static json_t *ctl_stack(struct client *c, json_t *params)
{
	json_t *err = params_only(params, NULL);

	if (err)
		return err;
	return outq_send_stack(c);
}

static json_t *ctl_runs(struct client *c, json_t *params)
{
	static const char *const allowed[] = { "n", NULL };
	json_t *err = params_only(params, allowed);
	json_t *n = json_object_get(params, "n");
	json_t *runs;
	long count = 20;

	if (err)
		return err;
	if (n && !json_is_null(n)) {
		if (!json_is_integer(n) || json_integer_value(n) < 1 || json_integer_value(n) > 1000)
			return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"n\" must be an integer from 1 to 1000");
		count = (long)json_integer_value(n);
	}
	runs = engine_runs(c->ctl->engine, count);
	if (!runs)
		runs = json_pack("{s:[]}", "runs");
	if (!client_privileged(c))
		redact_texts(c->ctl, runs);
	return proto_reply_ok(runs);
}

static json_t *ctl_run_info(struct client *c, json_t *params)
{
	static const char *const allowed[] = { "id", NULL };
	json_t *err = params_only(params, allowed);
	json_t *info;
	long id;

	if (err || (err = param_run_id(c, params, &id)))
		return err;
	info = engine_run_info(c->ctl->engine, id);
	if (!info)
		return proto_reply_error(PROTO_E_NOT_FOUND, "no run %ld", id);
	if (!client_privileged(c))
		redact_texts(c->ctl, info);
	return proto_reply_ok(info);
}

static json_t *ctl_log(struct client *c, json_t *params)
{
	static const char *const allowed[] = { "id", "follow", NULL };
	struct engine *e = c->ctl->engine;
	json_t *err = params_only(params, allowed);
	_cleanup_free_ char *path = NULL, *data = NULL;
	json_t *text, *info, *status, *result;
	bool follow, truncated = false, hidden;
	size_t len = 0;
	long id;
	int r;

	if (err || (err = param_run_id(c, params, &id)) || (err = param_bool(params, "follow", &follow)))
		return err;
	if (!engine_run_is_active(e, id) && outq_send_log_cached(c, id))
		return NULL;
	if (!client_privileged(c)) {
		/* One log reply being built or sent per unprivileged uid: a
		 * burst of requests for large logs is not a burst of copies. */
		for (struct client *o = c->ctl->clients; o; o = o->next)
			if (o != c && !o->closing && o->uid == c->uid && o->big && o->big_is_log)
				return proto_reply_error(PROTO_E_LIMIT,
							 "another log reply for this user is still being sent");
	}
	info = engine_run_info(e, id);
	path = engine_run_log_path(e, id);
	r = path ? runlog_read_tail(path, PROTO_MAX_LOG_OUTPUT, &data, &len, &truncated) : -ENOENT;
	if (r == -ENOENT && info)
		r = 0; /* the run exists and has written nothing yet */
	if (r < 0) {
		json_decref(info);
		if (r == -ENOENT)
			return proto_reply_error(PROTO_E_NOT_FOUND, "no run %ld", id);
		return proto_reply_error(PROTO_E_FAILED, "cannot read the log of run %ld: %s", id, strerror(-r));
	}
	if (!client_privileged(c) && engine_run_is_active(e, id)) {
		/* The line being written stays out until it is complete: a
		 * follower gets it, whole and redacted, from held_feed(). */
		char *nl = data ? memrchr(data, '\n', len) : NULL;
		len = nl ? (size_t)(nl - data) + 1 : 0;
	}
	hidden = !client_privileged(c) && len > 0 &&
		 needles_unsure(c->ctl, json_string_value(json_object_get(info, "stack_revision")));
	if (hidden) {
		/* Its secrets cannot all be found in it: none of it is shown. */
		text = json_string(control_hidden_marker);
		if (engine_run_is_active(e, id))
			c->ctl->marker_run = id;
	} else
		text = proto_string_lossy(data ? data : "", len);
	if (!client_privileged(c) && !hidden) {
		_cleanup_free_ char *red = control_redact_text(c->ctl, json_string_value(text));
		json_decref(text);
		text = json_string(red);
	}

	status = info ? json_object_get(info, "status") : NULL;
	/* A run still queued is followed too: its output comes once it starts. */
	if (follow && (engine_run_is_active(e, id) || (json_is_string(status) &&
						       (strcmp(json_string_value(status), "queued") == 0 ||
							strcmp(json_string_value(status), "waiting") == 0)))) {
		json_decref(info);
		client_send_new(c, json_pack("{s:s, s:I, s:o}", "event", "output", "run", (json_int_t)id, "data", text));
		if (!c->closing)
			client_stream_start(c, STREAM_LOG, id);
		return NULL;
	}
	result = json_pack("{s:I, s:o, s:O, s:b}", "id", (json_int_t)id, "output", text, "status",
			   status ? status : json_null(), "truncated", truncated);
	json_decref(info);
	return outq_send_log(c, id, proto_reply_ok(result), !engine_run_is_active(e, id));
}

static json_t *ctl_plan(struct client *c, json_t *params)
{
	static const char *const allowed[] = { "event", "layer", "app", "recipe", NULL };
	json_t *err = params_only(params, allowed);
	const char *layer, *app, *recipe;
	char *msg = NULL;
	json_t *result = NULL;
	enum event ev;
	int r;

	if (err || (err = param_event(params, &ev)) || (err = param_name(params, "layer", false, &layer)) ||
	    (err = param_name(params, "app", false, &app)) || (err = param_name(params, "recipe", false, &recipe)))
		return err;
	r = engine_plan(c->ctl->engine, ev, layer, app, recipe, &result, &msg);
	if (r < 0)
		return reply_engine_error(r, msg);
	free(msg);
	control_plan_view(result, client_privileged(c));
	if (result && !client_privileged(c))
		redact_texts(c->ctl, result);
	return proto_reply_ok(result);
}

static json_t *ctl_run(struct client *c, json_t *params)
{
	static const char *const allowed[] = { "event", "layer", "app", "recipe", "wait", NULL };
	struct engine *e = c->ctl->engine;
	json_t *err = params_only(params, allowed);
	const char *layer, *app, *recipe;
	char *msg = NULL;
	enum event ev;
	bool wait;
	long id = 0;
	int r;

	if (err || (err = param_event(params, &ev)) || (err = param_name(params, "layer", false, &layer)) ||
	    (err = param_name(params, "app", false, &app)) || (err = param_name(params, "recipe", false, &recipe)) ||
	    (err = param_bool(params, "wait", &wait)))
		return err;
	r = engine_request_run(e, ev, layer, app, recipe, TRIGGER_CTL, &id, &msg);
	if (r < 0)
		return reply_engine_error(r, msg);
	free(msg);
	log_info("control: run %ld (%s%s%s%s%s%s%s) requested by uid %u pid %d", id, event_to_string(ev),
		 layer ? " layer " : "", layer ? layer : "", app ? " app " : "", app ? app : "", recipe ? " recipe " : "",
		 recipe ? recipe : "", (unsigned)c->uid, (int)c->pid);
	if (!wait)
		return proto_reply_ok(json_pack("{s:I, s:b}", "id", (json_int_t)id, "queued", 1));
	if (!engine_run_is_active(e, id)) {
		json_t *info = engine_run_info(e, id);
		return proto_reply_ok(info ? info : json_pack("{s:I}", "id", (json_int_t)id));
	}
	client_send_new(c, json_pack("{s:s, s:I}", "event", "run-queued", "run", (json_int_t)id));
	if (!c->closing)
		client_stream_start(c, STREAM_RUN, id);
	return NULL;
}

static json_t *ctl_reload(struct client *c, json_t *params)
{
	json_t *err = params_only(params, NULL);
	if (err)
		return err;
	engine_reload(c->ctl->engine);
	return proto_reply_ok(NULL);
}

static json_t *ctl_pause(struct client *c, json_t *params)
{
	static const char *const allowed[] = { "reason", NULL };
	json_t *err = params_only(params, allowed);
	json_t *v = json_object_get(params, "reason");
	const char *reason = NULL;
	char *msg = NULL;
	int r;

	if (err)
		return err;
	if (v && !json_is_null(v)) {
		if (!json_is_string(v))
			return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"reason\" must be a string");
		if (json_string_length(v) > CONTROL_MAX_REASON)
			return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"reason\" is longer than %d bytes",
						 CONTROL_MAX_REASON);
		reason = json_string_value(v);
	}
	r = engine_pause(c->ctl->engine, reason, &msg);
	if (r < 0)
		return reply_engine_error(r, msg);
	free(msg);
	{
		/* The caller's text: its control characters cannot forge a log line. */
		_cleanup_free_ char *shown = reason ? str_escape_ctl(reason) : NULL;
		log_info("control: paused by uid %u%s%s", (unsigned)c->uid, shown ? ": " : "", shown ? shown : "");
	}
	return proto_reply_ok(NULL);
}

static json_t *ctl_resume(struct client *c, json_t *params)
{
	json_t *err = params_only(params, NULL);
	char *msg = NULL;
	int r;

	if (err)
		return err;
	r = engine_resume(c->ctl->engine, &msg);
	if (r < 0)
		return reply_engine_error(r, msg);
	free(msg);
	return proto_reply_ok(NULL);
}

static json_t *ctl_clear_failed(struct client *c, json_t *params)
{
	json_t *err = params_only(params, NULL);
	char *msg = NULL;
	int r;

	if (err)
		return err;
	r = engine_clear_failed(c->ctl->engine, &msg);
	if (r < 0)
		return reply_engine_error(r, msg);
	free(msg);
	return proto_reply_ok(NULL);
}

static json_t *ctl_rollback(struct client *c, json_t *params)
{
	static const char *const allowed[] = { "app", NULL };
	json_t *err = params_only(params, allowed);
	json_t *result = NULL;
	const char *app;
	char *msg = NULL;
	int r;

	if (err || (err = param_name(params, "app", true, &app)))
		return err;
	r = engine_rollback(c->ctl->engine, app, &result, &msg);
	if (r < 0)
		return reply_engine_error(r, msg);
	free(msg);
	log_info("control: rollback of %s requested by uid %u", app, (unsigned)c->uid);
	if (c->closing) {
		json_decref(result);
		return NULL;
	}
	/* The answer waits for the switch: see rollback_event(). */
	c->stream_reply = result;
	client_stream_start(c, STREAM_ROLLBACK,
			    (long)json_integer_value(json_object_get(result, "restart_run")));
	return NULL;
}

struct control_method {
	ctl_handler handler;
	enum proto_priv priv;
};

/* The method table: the handler and privilege of every method of
 * lib/proto.h. A switch without default, so that the compiler (-Wswitch, in
 * -Wall, with -Werror) refuses a method that has no line here. Privilege is
 * checked once, in client_dispatch(): anything not PROTO_OPEN is denied to
 * peers that are not privileged. */
static struct control_method control_method_get(enum proto_method m)
{
	switch (m) {
	case PROTO_METHOD_VERSION:
		return (struct control_method){ ctl_version, PROTO_OPEN };
	case PROTO_METHOD_STATUS:
		return (struct control_method){ ctl_status, PROTO_OPEN };
	case PROTO_METHOD_STACK:
		return (struct control_method){ ctl_stack, PROTO_OPEN };
	case PROTO_METHOD_RUNS:
		return (struct control_method){ ctl_runs, PROTO_OPEN };
	case PROTO_METHOD_RUN_INFO:
		return (struct control_method){ ctl_run_info, PROTO_OPEN };
	case PROTO_METHOD_LOG:
		return (struct control_method){ ctl_log, PROTO_OPEN };
	case PROTO_METHOD_PLAN:
		return (struct control_method){ ctl_plan, PROTO_OPEN };
	case PROTO_METHOD_RUN:
		return (struct control_method){ ctl_run, PROTO_PRIV };
	case PROTO_METHOD_RELOAD:
		return (struct control_method){ ctl_reload, PROTO_PRIV };
	case PROTO_METHOD_PAUSE:
		return (struct control_method){ ctl_pause, PROTO_PRIV };
	case PROTO_METHOD_RESUME:
		return (struct control_method){ ctl_resume, PROTO_PRIV };
	case PROTO_METHOD_CLEAR_FAILED:
		return (struct control_method){ ctl_clear_failed, PROTO_PRIV };
	case PROTO_METHOD_ROLLBACK:
		return (struct control_method){ ctl_rollback, PROTO_PRIV };
	case PROTO_METHOD_FLEET:
		return (struct control_method){ ctl_fleet, PROTO_OPEN };
	case PROTO_METHOD_STACK_PUSH:
		return (struct control_method){ ctl_stack_push, PROTO_PRIV };
	case PROTO_METHOD_SCHEDULE:
		return (struct control_method){ ctl_schedule, PROTO_OPEN };
	case PROTO_METHOD_METRICS:
		return (struct control_method){ ctl_metrics, PROTO_OPEN };
	case _PROTO_METHOD_MAX:
	case PROTO_METHOD_INVALID:
		break;
	}
	return (struct control_method){ NULL, PROTO_PRIV };
}

enum proto_priv control_method_priv(enum proto_method m)
{
	return control_method_get(m).priv;
}

json_t *methods_dispatch(struct client *c, const char *line)
{
	struct control_method m;
	enum proto_method id;
	json_t *params, *method;
	json_error_t jerr;
	json_auto_t *req = NULL;
	json_auto_t *empty = NULL;

	req = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
	/* JSON numbers have no range, ours do: a number beyond 64 bits is a
	 * parameter out of range, not malformed JSON. */
	if (!req && (strstr(jerr.text, "too big integer") || strstr(jerr.text, "real number overflow")))
		return proto_reply_error(PROTO_E_INVALID_PARAMS, "a number is out of range: %s", jerr.text);
	if (!req)
		return proto_reply_error(PROTO_E_BAD_REQUEST, "invalid JSON: %s", jerr.text);
	if (!json_is_object(req))
		return proto_reply_error(PROTO_E_BAD_REQUEST, "a request must be a JSON object");
	method = json_object_get(req, "method");
	if (!json_is_string(method))
		return proto_reply_error(PROTO_E_BAD_REQUEST, "\"method\" must be a string");
	params = json_object_get(req, "params");
	if (!params || json_is_null(params))
		params = empty = json_object();
	else if (!json_is_object(params))
		return proto_reply_error(PROTO_E_BAD_REQUEST, "\"params\" must be an object");

	id = proto_method_from_string(json_string_value(method));
	if (id == PROTO_METHOD_INVALID)
		return proto_reply_error(PROTO_E_UNKNOWN_METHOD, "unknown method \"%.64s\"",
					 json_string_value(method));
	m = control_method_get(id);
	if (m.priv != PROTO_OPEN && !client_privileged(c)) {
		log_info("control: %s denied to uid %u pid %d", proto_method_to_string(id), (unsigned)c->uid,
			 (int)c->pid);
		return proto_reply_error(PROTO_E_PERMISSION, "%s needs root, uid %u or membership of group %s",
					 proto_method_to_string(id), (unsigned)c->ctl->peers.euid,
					 c->ctl->config && c->ctl->config->admin_group ? c->ctl->config->admin_group
										      : "(none)");
	}
	return m.handler(c, params);
}

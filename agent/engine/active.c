/* SPDX-License-Identifier: BSD-2-Clause */
/* The running run (design.md §7): on disk as running before it starts,
 * planned by recipes/build.c, executed step by step (steps/plan.h) with
 * its log, its record's steps and its watchers' events, and finished with
 * a keyed result line in its log. Its log context is in effect only while
 * its own callbacks run. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "config.h"
#include "internal.h"
#include "io/exec.h"
#include "log.h"
#include "proto.h"
#include "recipes/recipe.h"
#include "stack/stack.h"
#include "util.h"

/* ----------------------------------------------------------------- runs */

/* Data for the active run's log, also sent to watchers as output: a
 * follower (agentctl log -f) sees what the log has, step lines included. */
static void active_log(struct engine *e, const char *data, size_t len)
{
	struct active *a = e->active;

	runlog_write(a->log_fd, a->id, data, len);
	if (e->watchers) {
		json_t *ev = json_object();
		json_object_set_new(ev, "event", json_string("output"));
		json_object_set_new(ev, "run", json_integer(a->id));
		json_object_set_new(ev, "data", proto_string_lossy(data, len));
		engine_emit(e, ev);
	}
}

static void active_logf(struct engine *e, const char *fmt, ...) _printf_(2, 3);
static void active_logf(struct engine *e, const char *fmt, ...)
{
	_cleanup_free_ char *s = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n >= 0)
		active_log(e, s, (size_t)n);
}

/* "==> [n/N] kind target (recipe)": every step has one, a skipped step
 * too, so that the reader of the log can tell which steps were skipped. */
static void active_log_header(struct engine *e, const struct step *s, size_t index)
{
	e->active->headed = index + 1;
	active_logf(e, "==> [%zu/%zu] %s %s (%s)\n", index + 1, e->active->plan.n_steps, s->ops->kind,
		    str_or_empty(s->target), str_or_empty(s->recipe));
}

static json_t *step_json(const struct step *s, size_t index)
{
	json_t *o = json_object();
	json_object_set_new(o, "index", json_integer((json_int_t)index));
	json_object_set_new(o, "kind", json_string(s->ops->kind));
	/* Texts are cut to RUN_TEXT_MAX: the record must stay within what its
	 * reader accepts; the run log has them whole. */
	json_object_set_new(o, "target", run_text_json(s->target));
	json_object_set_new(o, "recipe", run_text_json(s->recipe));
	json_object_set_new(o, "layer", run_text_json(s->layer));
	json_object_set_new(o, "status", json_string(step_status_to_string(s->status)));
	json_object_set_new(o, "duration_ms", json_real((double)s->duration_us / 1000.0));
	if (s->error)
		json_object_set_new(o, "error", run_text_json(s->error));
	if (s->message)
		json_object_set_new(o, "message", run_text_json(s->message));
	return o;
}

static void on_step_start(void *userdata, struct step *s, size_t index)
{
	struct engine *e = userdata;
	struct active *a = e->active;
	const struct log_context *prev;
	json_t *ev;

	log_context_set(&a->logctx, a->id, run_event(a->rec), s->layer, s->target);
	prev = run_ctx_enter(a);
	active_log_header(e, s, index);
	ev = json_pack("{s:s, s:I, s:I, s:s, s:s?, s:s?}", "event", "step-started", "run", (json_int_t)a->id, "index",
		       (json_int_t)index, "kind", s->ops->kind, "target", s->target, "recipe", s->recipe);
	engine_emit(e, ev);
	run_ctx_leave(prev);
}

static void on_output(void *userdata, struct step *s, const char *data, size_t len)
{
	struct engine *e = userdata;
	struct active *a = e->active;
	const struct log_context *prev = run_ctx_enter(a);

	active_log(e, data, len);
	run_ctx_leave(prev);
}

/* The record keeps the first steps, within the bounds its reader checks
 * (RUN_STEPS_MAX, RUN_STEPS_MAX_BYTES); the rest are counted. The run log
 * has them all. */
static void active_keep_step(struct active *a, const struct step *s, size_t index)
{
	json_t *sj = step_json(s, index);
	char *d = json_dumps(sj, JSON_COMPACT);
	size_t n = d ? strlen(d) + 1 : 0;

	free(d);
	if (!a->rec->steps)
		a->rec->steps = json_array();
	if (n > 0 && json_array_size(a->rec->steps) < RUN_STEPS_MAX && a->steps_bytes + n <= RUN_STEPS_MAX_BYTES) {
		a->steps_bytes += n;
		json_array_append_new(a->rec->steps, sj);
	} else {
		json_decref(sj);
		a->steps_omitted++;
		a->rec->steps_omitted = (long)a->steps_omitted;
	}
}

static void on_step_done(void *userdata, struct step *s, size_t index)
{
	struct engine *e = userdata;
	struct active *a = e->active;
	const struct log_context *prev = run_ctx_enter(a);
	json_t *ev;

	a->rec->has_pgid = false;
	if (s->status == STEP_CHANGED)
		a->changed++;
	active_keep_step(a, s, index);
	engine_metrics_step(e, s);
	/* The link moved: saved at once, before the restarts that follow can
	 * hang or the agent be killed, so that a start after a kill queues the
	 * restarts alone, never a second rollback. */
	if (strcmp(s->ops->kind, RUN_RECIPE_ROLLBACK) == 0 && (s->status == STEP_CHANGED || s->status == STEP_UNCHANGED)) {
		a->rec->switched = true;
		engine_persist_active(e);
	}
	if (a->headed != index + 1)
		active_log_header(e, s, index); /* skipped without starting: after a failure */
	active_logf(e, "<== %s%s%s (%.1f ms)\n", step_status_to_string(s->status), s->error || s->message ? ": " : "",
		    s->error ? s->error : str_or_empty(s->message), (double)s->duration_us / 1000.0);
	if (s->status == STEP_FAILED)
		log_error("Step %s %s failed: %s", s->ops->kind, str_or_empty(s->target), str_or_empty(s->error));
	ev = step_json(s, index);
	json_object_set_new(ev, "event", json_string("step-finished"));
	json_object_set_new(ev, "run", json_integer(a->id));
	engine_emit(e, ev);
	run_ctx_leave(prev);
}

static void on_spawn(void *userdata, struct step *s, int pgid)
{
	struct engine *e = userdata;
	struct active *a = e->active;
	uint64_t start;

	/* The start time (field 22 of /proc/PID/stat) tells this group's
	 * leader from a later process that reused its pid. */
	if (exec_proc_stat(pgid, NULL, &start) < 0 || start == 0 || start > INT64_MAX)
		return;
	a->rec->has_pgid = true;
	a->rec->pgid = pgid;
	a->rec->pgid_start = (int64_t)start;
	/* If we are killed now, the next start ends this process group: the
	 * run's own file has the steps done so far, state.json the group. */
	engine_persist_active(e);
}

static void on_timeout_closed(uv_handle_t *h)
{
	struct active *a = h->data;
	free(a);
}

/* A queued retry that a success supersedes: the same ordinary event and
 * app, for the succeeded run's layer (or any when it ran for every layer).
 * Queued before the success (a retry is queued from a recorded failure,
 * which the success clears), it would run the event once more for
 * nothing: wait for a slot again and deploy the same revision twice
 * (issue 12, B2). */
static bool retry_superseded(const struct run *done, const struct run *q)
{
	return q != done && q->status == RUN_QUEUED && q->req.trigger == TRIGGER_RETRY && !q->req.recipe &&
	       !done->req.recipe && q->req.event == done->req.event && str_eq(q->req.app, done->req.app) &&
	       (!done->req.layer || str_eq(done->req.layer, q->req.layer));
}

/* Drops the queued retries a success supersedes, as joins are dropped
 * (active_absorb_queued): their records go, they never started. */
static void drop_superseded_retries(struct engine *e, const struct run *done)
{
	for (size_t i = 0; i < e->runs.n;) {
		struct run *q = e->runs.v[i];

		if (!retry_superseded(done, q)) {
			i++;
			continue;
		}
		log_info("Run %ld (%s, retry) is dropped: run %ld of the same event succeeded after it was queued", q->id,
			 run_event(q), done->id);
		run_free(run_list_take(&e->runs, i));
	}
}

/* Whether a failed step of the plan said that retrying cannot help. */
static bool plan_says_no_retry(const struct plan *p)
{
	for (size_t i = 0; i < p->n_steps; i++)
		if (p->steps[i]->status == STEP_FAILED && p->steps[i]->no_retry)
			return true;
	return false;
}

/* What a finished run leads to: a failure recorded for a retry, an
 * interrupted run queued again, or a success. */
static void finish_outcome(struct engine *e, struct active *a, const char *error)
{
	struct run *rec = a->rec;

	if (rec->status == RUN_FAILED && a->unassigned) {
		/* Not a failure to retry: nothing runs until the instance is
		 * found in a layer, which a new stack or a restart diffs as a
		 * layer added (status says "unassigned" meanwhile). */
		log_warn("Run %ld (%s) ran nothing: %s", a->id, run_event(rec), str_or_empty(error));
	} else if (rec->status == RUN_FAILED) {
		/* Runs asked for by an operator are not retried on their own,
		 * nor a run whose step failed for good (refused credentials). */
		bool permanent = plan_says_no_retry(&a->plan);

		engine_record_failure(e, rec, rec->req.trigger != TRIGGER_CTL && !a->no_retry && !permanent);
		if (permanent && rec->req.trigger != TRIGGER_CTL)
			log_warn("Run %ld (%s) is not retried: retrying cannot help (see its failed step)", a->id,
				 run_event(rec));
		log_error("Run %ld (%s) failed: %s", a->id, run_event(rec), str_or_empty(error));
	} else if (rec->status == RUN_INTERRUPTED) {
		/* Stopped by SIGTERM: run the event again on the next start. */
		rec->requeued = true;
		engine_requeue(e, rec);
		log_warn("Run %ld (%s) interrupted; queued again", a->id, run_event(rec));
	} else if (rec->req.recipe) {
		engine_record_success(e, rec, NULL);
		log_info("Run %ld (%s %s) succeeded", a->id, rec->req.recipe, str_or_empty(rec->req.app));
	} else {
		engine_record_success(e, rec, a->stack->revision);
		drop_superseded_retries(e, rec);
		log_info("Run %ld (%s) succeeded: %zu of %zu steps changed", a->id, run_event(rec), a->changed,
			 a->plan.n_steps);
	}
}

static void engine_finish_run(struct engine *e, enum run_status status, const char *error)
{
	struct active *a = e->active;
	struct run *rec = a->rec;
	const struct log_context *prev = run_ctx_enter(a);
	_cleanup_free_ char *line = NULL;

	rec->status = status;
	json_decref(rec->waiting_for);
	rec->waiting_for = NULL;
	free(rec->finished);
	rec->finished = engine_now();
	rec->changed = (long)a->changed;
	rec->duration_ms = (double)(time_monotonic_usec() - a->started_mono) / 1000.0;
	if (error)
		run_set_text(&rec->error, error);
	/* The result line, last in the log (log_dir, maybe another disk): if
	 * state.json cannot take it before we exit, the next start takes the
	 * result from here (runlog_result). */
	line = runlog_result_line(a->id, a->log_key, run_status_to_string(status), a->changed, rec->finished,
				  error ? rec->error : NULL);
	active_log(e, line, strlen(line));
	finish_outcome(e, a, error);
	engine_schedule_run_done(e, rec);
	engine_metrics_run_done(e, rec);
	engine_gate_run_done(e, rec, !a->done_elsewhere);
	run_ctx_leave(prev);

	json_t *ev = json_pack("{s:s, s:I, s:s, s:I}", "event", "run-finished", "run", (json_int_t)a->id, "status",
			       run_status_to_string(status), "changed", (json_int_t)a->changed);
	if (a->log_fd >= 0)
		(void)close(a->log_fd);
	a->log_fd = -1;
	plan_free(&a->plan);
	stack_unref(a->stack);
	e->active = NULL;
	uv_timer_stop(&a->timeout);
	uv_close((uv_handle_t *)&a->timeout, on_timeout_closed);

	/* The steps go to the run's own file: memory and state.json stay
	 * small however many runs the history keeps. */
	state_save_finished_run(e, rec);
	state_trim_history(e);
	state_gc_stacks(e);
	engine_persist(e);
	engine_notify_status(e);
	engine_emit(e, ev);

	if (e->stopping) {
		engine_stop_finish(e);
		return;
	}
	engine_kick(e);
}

static void on_plan_done(void *userdata, bool failed)
{
	struct engine *e = userdata;
	struct active *a = e->active;
	_cleanup_free_ char *error = NULL;

	a->x = NULL;
	if (a->timed_out)
		error = xasprintf("run timed out after %ld s", e->config->run_timeout);
	else if (failed) {
		for (size_t i = 0; i < a->plan.n_steps; i++) {
			struct step *s = a->plan.steps[i];
			if (s->status == STEP_FAILED) {
				error = xasprintf("step %zu (%s %s) failed: %s", i + 1, s->ops->kind, str_or_empty(s->target),
						  str_or_empty(s->error));
				break;
			}
		}
	}
	if (e->stopping && failed && (!error || a->killed))
		engine_finish_run(e, RUN_INTERRUPTED, a->killed ? "agentd was stopped during the run; its step was terminated"
							       : "agentd was stopped during the run");
	else
		engine_finish_run(e, failed || a->timed_out ? RUN_FAILED : RUN_SUCCESS, error);
}

static void on_run_timeout(uv_timer_t *t)
{
	struct active *a = t->data;
	a->timed_out = true;
	if (a->x)
		plan_execute_cancel(a->x, true);
}

/* The stack a run plans against: its own (an older one, loaded from
 * state_dir), or the applied or current one. A new reference or NULL. */
static struct stack *run_stack(struct engine *e, const struct run *rec)
{
	const char *srev = rec->stack;

	/* A layer left under another name: the stack as applied then. */
	if (srev && e->previous && strcmp(srev, e->previous->revision) == 0)
		return stack_ref(e->previous);
	if (srev && e->applied && strcmp(srev, e->applied->revision) == 0)
		return stack_ref(e->applied);
	if (srev && (!e->current || strcmp(srev, e->current->revision) != 0))
		return state_load_stack(e, srev);
	return stack_ref(e->current);
}

/* The plan of a run against stack s (run_id 0: a dry run). For an
 * undeploy: what the stack not planned against still places here. */
int engine_build_plan(struct engine *e, struct stack *s, const struct run_request *req, long run_id,
		      struct plan *plan, char **ret_error)
{
	struct recipe_ctx ctx = {
		.stack = s,
		.config = e->config,
		.event = req->event,
		.layer = req->layer,
		.app = req->app,
		.run_id = run_id,
		.other_stack = s != e->current ? e->current : e->applied,
	};

	return recipes_build_plan(&ctx, req->recipe, plan, ret_error);
}

/* Opens the run's log and writes its first line, with the key its result
 * line will repeat. */
static void active_open_log(struct engine *e, struct active *a)
{
	_cleanup_free_ char *log_path = engine_run_log_path(e, a->id);
	const struct run *rec = a->rec;

	a->log_fd = runlog_open(log_path);
	if (getrandom(&a->log_key, sizeof(a->log_key), GRND_NONBLOCK) != sizeof(a->log_key))
		a->log_key = ((uint64_t)random() << 32) ^ (uint64_t)random() ^ (uint64_t)time_now_usec();
	active_logf(e, "=== run %ld: %s layer=%s app=%s trigger=%s stack=%s started %s key=%016llx\n", a->id,
		    run_event(rec), rec->req.layer ? rec->req.layer : "(all)", str_or_empty(rec->req.app),
		    trigger_to_string(rec->req.trigger), a->stack ? a->stack->revision : "-", rec->started,
		    (unsigned long long)a->log_key);
}

static void active_run_plan(struct engine *e, struct active *a);

/* Plans the run and starts executing it, once its gate is held; a run
 * that cannot be planned ends here as failed. Also what a run that waited
 * for its gate does when the stack changed meanwhile (active_replan). */
static void active_execute(struct engine *e, struct active *a)
{
	_cleanup_free_ char *error = NULL;
	int r;

	if (!a->stack) {
		plan_init(&a->plan, e->config->root);
		a->no_retry = true;
		engine_finish_run(e, RUN_FAILED, "the stack this run needs is no longer available");
		return;
	}
	run_set_str(&a->rec->stack_revision, a->stack->revision);
	if (!a->rec->req.layer && !a->rec->req.recipe && a->stack->n_self_layers == 0) {
		/* The event of every layer of an instance in no layer would
		 * succeed with nothing done: it is no success (design.md §3
		 * Identity). */
		_cleanup_free_ char *why = xasprintf("instance \"%s\" is in no layer of the stack (unassigned): nothing to run",
						     a->stack->instance);
		plan_init(&a->plan, e->config->root);
		a->no_retry = a->unassigned = true;
		engine_finish_run(e, RUN_FAILED, why);
		return;
	}
	r = engine_build_plan(e, a->stack, &a->rec->req, a->id, &a->plan, &error);
	if (r < 0) {
		/* A layer or app that is not in the stack will not appear by retrying. */
		a->no_retry = r == -ENOENT;
		engine_finish_run(e, RUN_FAILED, error);
		return;
	}
	/* A fleet lock or slot first (design.md §9): the run waits for it. */
	if (engine_gate_take(e, a) == 0) {
		json_t *g = plan_gate_json(&a->plan.gate);
		_cleanup_free_ char *what = g ? json_dumps(g, JSON_COMPACT) : NULL;

		json_decref(g);
		active_logf(e, "--- waiting for %s\n", str_or_empty(what));
		return;
	}
	active_run_plan(e, a);
}

/* Executes the planned run (its gate, if any, held). */
static void active_run_plan(struct engine *e, struct active *a)
{
	static const struct plan_exec_cbs cbs = {
		.on_step_start = on_step_start,
		.on_output = on_output,
		.on_step_done = on_step_done,
		.on_done = on_plan_done,
		.on_spawn = on_spawn,
	};
	int r;

	struct step_env env = {
		.loop = e->loop,
		.http = e->http,
		.root = e->config->root,
		.run_id = a->id,
		.output_max = (size_t)e->config->step_output_max,
		.memory = &e->memory,
		.state_dir = e->config->state_dir,
		.log_dir = e->config->log_dir,
		.metrics_file = e->config->metrics_file,
	};
	(void)uv_timer_start(&a->timeout, on_run_timeout, (uint64_t)e->config->run_timeout * 1000, 0);
	r = plan_execute(e->loop, &a->plan, &env, &cbs, e, &a->x);
	if (r < 0) {
		_cleanup_free_ char *msg = xasprintf("cannot execute the plan: %s", strerror(-r));
		engine_finish_run(e, RUN_FAILED, msg);
	}
}

/* Whether q, queued, is a run that a now covers: the same ordinary event
 * and app on the current stack, for a's layer (or any when a is for every
 * layer). An operator's queued run is left alone: `run --wait` follows it. */
static bool active_covers(const struct run *a, const struct run *q)
{
	return q->status == RUN_QUEUED && q->req.trigger != TRIGGER_CTL && !q->req.recipe && !a->req.recipe &&
	       !q->stack && !a->stack && q->req.event == a->req.event && str_eq(q->req.app, a->req.app) &&
	       (!a->req.layer || str_eq(a->req.layer, q->req.layer));
}

/* The queued runs a re-planned run covers join it: their records go (they
 * never started), so that a newer revision is deployed once. */
static void active_absorb_queued(struct engine *e, struct active *a)
{
	for (size_t i = 0; i < e->runs.n;) {
		struct run *q = e->runs.v[i];

		if (q == a->rec || !active_covers(a->rec, q)) {
			i++;
			continue;
		}
		active_logf(e, "--- queued run %ld (%s, %s) joins this one\n", q->id, run_event(q),
			    trigger_to_string(q->req.trigger));
		log_info("Run %ld joins run %ld, which now runs against stack %s", q->id, a->id, a->stack->revision);
		run_free(run_list_take(&e->runs, i));
	}
}

/* A run of the current stack (rec->stack NULL) that waited for its fleet
 * gate while newer stacks came (design.md §9): no step ran, so it runs the
 * stack that is current now, not the one it was planned against, and the
 * queued runs of the same event and app that the newer stacks queued join
 * it. An operator who pushed revision B, then C, while the instance waited
 * for its slot gets one deploy, of C: never B, never C twice. Returns true
 * when the run was planned again (it goes on, waits again, or ended). */
static bool active_replan(struct engine *e, struct active *a)
{
	_cleanup_free_ char *was = NULL;

	if (a->rec->stack || !a->stack || !e->current || strcmp(a->stack->revision, e->current->revision) == 0)
		return false;
	was = xstrdup(a->stack->revision);
	stack_unref(a->stack);
	a->stack = stack_ref(e->current);
	plan_free(&a->plan);
	active_logf(e, "--- the stack changed while this run waited (planned against %s): planning it again against %s\n",
		    was, a->stack->revision);
	log_info("Run %ld waited while the stack changed: planning it again against %s (was %s)", a->id,
		 a->stack->revision, was);
	active_absorb_queued(e, a);
	engine_persist(e);
	active_execute(e, a);
	return true;
}

void engine_active_gate_open(struct engine *e, const char *done_by)
{
	struct active *a = e->active;
	const struct log_context *prev = run_ctx_enter(a);

	json_decref(a->rec->waiting_for);
	a->rec->waiting_for = NULL;
	engine_notify_status(e);
	if (!done_by) {
		if (!active_replan(e, a)) {
			active_logf(e, "--- holding it: the run goes on\n");
			active_run_plan(e, a);
		}
		run_ctx_leave(prev);
		return;
	}
	/* A singleton job done meanwhile by another instance: once is
	 * enough. Its steps say who did it. */
	a->done_elsewhere = true;
	for (size_t i = 0; i < a->plan.n_steps; i++) {
		struct step *s = a->plan.steps[i];

		s->status = STEP_SKIPPED;
		free(s->message);
		s->message = xstrdup(done_by);
		on_step_done(e, s, i);
	}
	engine_finish_run(e, RUN_SUCCESS, NULL);
	run_ctx_leave(prev);
}

void engine_active_abandon(struct engine *e)
{
	engine_finish_run(e, RUN_INTERRUPTED, "agentd was stopped while the run waited for its fleet lock or slot");
}

void engine_start_run(struct engine *e, struct run *rec)
{
	const struct log_context *prev;
	struct active *a;

	/* The run is on disk as "running" (with next_run_id past it) before
	 * anything runs: its id is taken for good, and a restart knows it ran.
	 * While state_dir takes no writes, the run waits in the queue; the
	 * retry of the write starts it (engine_on_state_retry). */
	rec->status = RUN_RUNNING;
	rec->started = engine_now();
	/* Changes that follow within `settle` of this start wait for the
	 * stack to settle (design.md §3 Settling). */
	if (rec->req.trigger == TRIGGER_STACK_CHANGE && e->settle.first == 0)
		settle_applied(&e->settle, time_monotonic_usec());
	if (engine_persist(e) < 0) {
		rec->status = RUN_QUEUED;
		run_set_str(&rec->started, NULL);
		log_warn("Run %ld waits: its start cannot be recorded in %s", rec->id, e->config->state_dir);
		return;
	}

	a = xcalloc(1, sizeof(*a));
	a->rec = rec;
	a->id = rec->id;
	a->log_fd = -1;
	a->started_mono = time_monotonic_usec();
	a->stack = run_stack(e, rec);
	(void)uv_timer_init(e->loop, &a->timeout);
	a->timeout.data = a;
	e->active = a;
	json_decref(rec->steps);
	rec->steps = json_array();
	active_open_log(e, a);

	log_context_set(&a->logctx, a->id, run_event(rec), rec->req.layer, NULL);
	prev = run_ctx_enter(a);
	log_info("Run %ld started: %s (%s)", a->id, run_event(rec), trigger_to_string(rec->req.trigger));
	engine_notify_status(e);
	engine_emit(e, json_pack("{s:s, s:I, s:s, s:s?, s:s?, s:s}", "event", "run-started", "run", (json_int_t)a->id, "kind",
			  run_event(rec), "layer", rec->req.layer, "app", rec->req.app, "trigger",
			  trigger_to_string(rec->req.trigger)));
	active_execute(e, a);
	run_ctx_leave(prev);
}

static void on_kick(uv_timer_t *t);

/* A burst of stack changes has settled: its runs may start. */
static void on_settled(uv_timer_t *t)
{
	struct engine *e = t->data;

	e->settle_until = 0;
	e->settle.first = 0;
	on_kick(&e->kick);
}

/* Whether runs of stack changes wait for a burst to settle (design.md §3
 * Settling); if so, the settle timer kicks the queue when it has. */
static bool engine_settling(struct engine *e)
{
	int64_t now = time_monotonic_usec();

	if (e->settle_until == 0)
		return false;
	if (now >= e->settle_until) {
		e->settle_until = 0;
		e->settle.first = 0;
		return false;
	}
	(void)uv_timer_start(&e->settle_timer, on_settled, (uint64_t)(e->settle_until - now + 999) / 1000, 0);
	return true;
}

static void on_kick(uv_timer_t *t)
{
	struct engine *e = t->data;
	struct run *rec;

	if (e->active || e->stopping || !e->current)
		return;
	rec = queue_next(&e->runs, e->paused != NULL, e->failed, engine_settling(e));
	if (rec)
		engine_start_run(e, rec);
}

/* Starts the next run from a fresh loop iteration, never from inside a
 * callback of the run that just ended. */
void engine_kick(struct engine *e)
{
	if (!e->stopping)
		(void)uv_timer_start(&e->kick, on_kick, 0, 0);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* The engine: stack versions in, runs out (design.md §3, §7): the queue and
 * its coalescing (queue.c), one run at a time, failures and retries, and
 * the operator's actions. state_dir is state.c's; run logs are runlog.c's;
 * what a run's plan holds is recipes/build.c's.
 *
 * The queue is simply the records whose status is "queued": a new stack's
 * triggers and the stack they came from are committed by one write of
 * state.json, so a crash at any point either loses nothing or repeats a
 * diff whose triggers coalesce with the ones already queued.
 *
 * "applied" is the stack whose triggers have been queued; "current" is the
 * newest valid stack. They differ only while paused. */
#include "engine.h"

#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "config.h"
#include "internal.h"
#include "io/exec.h"
#include "io/http.h"
#include "log.h"
#include "proto.h"
#include "recipes/recipe.h"
#include "source/source.h"
#include "stack/stack.h"
#include "steps/plan.h"
#include "steps/step_ec2_snapshot.h"
#include "steps/step_rollback.h"
#include "strv.h"
#include "util.h"

/* On SIGTERM, how long a state.json that cannot be written is tried again
 * before agentd exits anyway (each run's result is also in its log, which
 * the next start reads: see runlog_result). Below systemd's stop timeout. */
#define STOP_STATE_RETRY_USEC (5 * 1000000)
#define STOP_STATE_RETRY_MS 250

/* ---------------------------------------------------------------- helpers */

char *engine_now(void)
{
	char buf[40];

	time_format_rfc3339(time_now_usec(), buf, sizeof(buf));
	return xstrdup(buf);
}

/* A maintenance job's failure is its own ("maintenance///JOB"), retried
 * as that job; record.c makes the same keys. */
static char *fail_key(const struct run_request *req)
{
	if (req->event == EVENT_MAINTENANCE && req->recipe)
		return xasprintf("%s///%s", event_to_string(req->event), req->recipe);
	return xasprintf("%s/%s/%s", event_to_string(req->event), str_or_empty(req->layer), str_or_empty(req->app));
}

void engine_emit(struct engine *e, json_t *ev /* stolen */)
{
	struct engine_watch *w, *next;

	for (w = e->watchers; w; w = next) {
		next = w->next;
		w->on_event(w->userdata, ev);
	}
	json_decref(ev);
}

void engine_watch_add(struct engine *e, struct engine_watch *w)
{
	w->next = e->watchers;
	e->watchers = w;
}

void engine_watch_remove(struct engine *e, struct engine_watch *w)
{
	for (struct engine_watch **p = &e->watchers; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			w->next = NULL;
			return;
		}
}

void engine_notify_status(struct engine *e)
{
	if (e->active)
		(void)sd_notifyf(0, "STATUS=running %s (run %ld)", run_event(e->active->rec), e->active->id);
	else if (e->paused)
		(void)sd_notifyf(0, "STATUS=paused: %s", e->paused);
	else if (json_object_size(e->failed) > 0)
		(void)sd_notify(0, "STATUS=failed (see agentctl status)");
	else
		(void)sd_notify(0, "STATUS=idle");
	engine_fleet_publish(e);
	engine_metrics_write(e);
}

/* Queues a request (queue.c joins it to a queued run that covers it);
 * returns the run, or NULL when the queue is full or no id is left. */
struct run *engine_enqueue_ex(struct engine *e, const struct run_request *req, const char *stack, bool fresh)
{
	_cleanup_free_ char *now = engine_now();
	int r;

	return queue_add(&e->runs, &e->next_id, req, stack, fresh, now, &r);
}

struct run *engine_enqueue(struct engine *e, enum event ev, const char *layer, const char *app,
			   enum trigger_kind trig, const char *stack)
{
	struct run_request req = { .event = ev, .layer = (char *)layer, .app = (char *)app, .trigger = trig };

	return engine_enqueue_ex(e, &req, stack, false);
}

void engine_requeue(struct engine *e, const struct run *rec)
{
	_cleanup_free_ char *now = engine_now();
	int r;

	(void)queue_requeue(&e->runs, &e->next_id, rec, now, &r);
}

/* ------------------------------------------------------------ failures */

static int64_t retry_delay_usec(struct engine *e, long count)
{
	int64_t d = (int64_t)e->config->retry_min * 1000000;
	for (long i = 1; i < count && d < (int64_t)e->config->retry_max * 1000000; i++)
		d *= 2;
	if (d > (int64_t)e->config->retry_max * 1000000)
		d = (int64_t)e->config->retry_max * 1000000;
	return d;
}

static void on_retry(uv_timer_t *t);

void engine_arm_retry(struct engine *e)
{
	int64_t now = time_now_usec(), next = 0;
	const char *k;
	json_t *v;

	json_object_foreach(e->failed, k, v) {
		int64_t at = (int64_t)json_integer_value(json_object_get(v, "next_retry"));
		if (at > 0 && (next == 0 || at < next))
			next = at;
	}
	if (next == 0 || e->stopping) {
		(void)uv_timer_stop(&e->retry);
		return;
	}
	(void)uv_timer_start(&e->retry, on_retry, next > now ? (uint64_t)(next - now) / 1000 : 0, 0);
}

static void on_retry(uv_timer_t *t)
{
	struct engine *e = t->data;
	int64_t now = time_now_usec();
	const char *k;
	json_t *v;
	bool queued = false;

	json_object_foreach(e->failed, k, v) {
		int64_t at = (int64_t)json_integer_value(json_object_get(v, "next_retry"));
		if (at <= 0 || at > now + 1000)
			continue;
		enum event ev = event_from_string(json_string_value(json_object_get(v, "event")));
		const char *job = json_string_value(json_object_get(v, "recipe"));
		if (ev == EVENT_INVALID)
			continue;
		if (ev == EVENT_MAINTENANCE) {
			/* A job's retry is that job, never two of it queued. */
			struct run_request req = { .event = ev, .recipe = (char *)job, .trigger = TRIGGER_RETRY };
			bool pending = false;
			for (size_t i = 0; job && i < e->runs.n; i++)
				pending |= run_is_pending(e->runs.v[i]) && str_eq(e->runs.v[i]->req.recipe, job);
			if (job && !pending)
				(void)engine_enqueue_ex(e, &req, NULL, true);
		} else
			engine_enqueue(e, ev, json_string_value(json_object_get(v, "layer")),
				       json_string_value(json_object_get(v, "app")), TRIGGER_RETRY,
				       json_string_value(json_object_get(v, "stack")));
		json_object_set_new(v, "next_retry", json_integer(0));
		queued = true;
	}
	if (queued) {
		engine_persist(e);
		engine_kick(e);
	}
	engine_arm_retry(e);
}

void engine_record_failure(struct engine *e, const struct run *rec, bool retry)
{
	_cleanup_free_ char *key = fail_key(&rec->req);
	json_t *f = json_object_get(e->failed, key);
	long count = f ? (long)json_integer_value(json_object_get(f, "count")) + 1 : 1;

	if (!f && json_object_size(e->failed) >= ENGINE_KEYS_MAX) {
		/* Within what state.json's reader accepts: only a stack with
		 * thousands of apps failing at once gets here. */
		log_error("Not recording the failure of run %ld for a retry: %d failures are recorded already", rec->id,
			  ENGINE_KEYS_MAX);
		return;
	}
	f = json_object();
	json_object_set_new(f, "event", json_string(run_event(rec)));
	json_object_set_new(f, "layer", json_string_or_null(rec->req.layer));
	json_object_set_new(f, "app", json_string_or_null(rec->req.app));
	if (rec->req.event == EVENT_MAINTENANCE && rec->req.recipe)
		json_object_set_new(f, "recipe", json_string(rec->req.recipe));
	json_object_set_new(f, "run", json_integer(rec->id));
	json_object_set_new(f, "count", json_integer(count));
	if (rec->stack)
		json_object_set_new(f, "stack", json_string(rec->stack));
	json_object_set_new(f, "next_retry", json_integer(retry ? time_now_usec() + retry_delay_usec(e, count) : 0));
	json_object_set_new(e->failed, key, f);
	engine_arm_retry(e);
}

/* A success of an event clears the failures it covers: the same event for
 * the same app, and for the same layer unless it ran for every layer. */
static void clear_failures_for(struct engine *e, const struct run *rec)
{
	const char *ev = run_event(rec);
	void *tmp;
	const char *k;
	json_t *v;

	json_object_foreach_safe(e->failed, tmp, k, v) {
		if (!str_eq(json_string_value(json_object_get(v, "event")), ev))
			continue;
		if (!str_eq(json_string_value(json_object_get(v, "app")), rec->req.app))
			continue;
		if (rec->req.layer && !str_eq(json_string_value(json_object_get(v, "layer")), rec->req.layer))
			continue;
		json_object_del(e->failed, k);
	}
	engine_arm_retry(e);
}

/* A success of an ordinary run: no failure of what it covers is left, and
 * its stack is the last that succeeded for its event and layer. A run with
 * a recipe (a rollback) is no deploy: a failed deploy the operator rolled
 * back from stays failed. */
void engine_record_success(struct engine *e, const struct run *rec, const char *rev)
{
	_cleanup_free_ char *k = xasprintf("%s/%s", run_event(rec), str_or_empty(rec->req.layer));

	if (rec->req.event == EVENT_MAINTENANCE && rec->req.recipe) {
		/* A job's success clears its own failure. */
		_cleanup_free_ char *job = fail_key(&rec->req);
		json_object_del(e->failed, job);
		engine_arm_retry(e);
		return;
	}
	if (rec->req.recipe)
		return;
	clear_failures_for(e, rec);
	if (rev && revision_is_valid(rev) &&
	    (json_object_get(e->last_success, k) || json_object_size(e->last_success) < ENGINE_KEYS_MAX))
		json_object_set_new(e->last_success, k,
				    json_pack("{s:s, s:I, s:s}", "revision", rev, "run", (json_int_t)rec->id, "finished",
					      str_or_empty(rec->finished)));
}

/* ------------------------------------------------------------- lifecycle */

void engine_on_state_retry(uv_timer_t *t)
{
	struct engine *e = t->data;

	if (e->stopping || engine_persist(e) < 0)
		return;
	if (e->stack_save_failed) {
		/* Fetch the document again: its stack is saved this time, or
		 * the failure re-arms this timer. */
		e->stack_save_failed = false;
		free(e->state_error);
		e->state_error = NULL;
		e->state_failures = 0;
		engine_reload(e);
	}
	/* A run that waited for its start to be recorded can start now. */
	engine_kick(e);
}

int engine_new(uv_loop_t *loop, const struct config *config, struct engine **ret)
{
	struct engine *e = xcalloc(1, sizeof(*e));
	char host[256];

	e->loop = loop;
	state_memory_init(e);
	e->config = config;
	e->source_url = source_url_redact(config->source);
	e->failed = json_object();
	e->input_hashes = json_object();
	e->last_success = json_object();
	e->next_id = 1;
	e->start_mono = time_monotonic_usec();
	if (config->instance)
		e->instance = xstrdup(config->instance);
	else if (gethostname(host, sizeof(host)) == 0) {
		host[sizeof(host) - 1] = '\0';
		e->instance = xstrdup(host);
	} else
		e->instance = xstrdup("localhost");
	(void)uv_timer_init(loop, &e->kick);
	(void)uv_timer_init(loop, &e->retry);
	(void)uv_timer_init(loop, &e->state_retry);
	(void)uv_timer_init(loop, &e->settle_timer);
	e->kick.data = e->retry.data = e->state_retry.data = e->settle_timer.data = e;
	*ret = e;
	return 0;
}

/* The steps of a run that ended at a start leave memory when its file
 * (written at its last step transition) has them. */
static void drop_steps_in_file(struct engine *e, struct run *rec)
{
	_cleanup_free_ char *steps = run_file_path(e, rec->id);
	struct stat st;

	if (lstat(steps, &st) == 0 && S_ISREG(st.st_mode)) {
		json_decref(rec->steps);
		rec->steps = NULL;
	}
}

/* A run recorded as running whose log ends with its result: it finished,
 * only its record was not written (a full state_dir). */
static void reconcile_finished(struct engine *e, struct run *rec)
{
	rec->has_pgid = false;
	drop_steps_in_file(e, rec);
	if (rec->status == RUN_FAILED)
		engine_record_failure(e, rec, rec->req.trigger != TRIGGER_CTL);
	else
		engine_record_success(e, rec, rec->stack_revision ? rec->stack_revision : rec->stack);
	log_warn("Run %ld (%s) finished (%s) but was still recorded as running: its result was taken from its log",
		 rec->id, run_event(rec), run_status_to_string(rec->status));
}

/* A run that was running when we died did not finish: its step's process
 * group, perhaps still alive, is ended (two copies of a recipe must never
 * run at once), and the run is queued again. Returns whether anything
 * changed. */
static bool reconcile_running(struct engine *e)
{
	struct exec_recorded_group *groups = xcalloc(e->runs.n + 1, sizeof(*groups));
	size_t n_groups = 0;
	bool changed = false;

	for (size_t i = 0; i < e->runs.n; i++) {
		struct run *rec = e->runs.v[i];
		_cleanup_free_ char *log = NULL;
		if (rec->status != RUN_RUNNING)
			continue;
		changed = true;
		log = engine_run_log_path(e, rec->id);
		if (runlog_result(log, rec)) {
			reconcile_finished(e, rec);
			continue;
		}
		if (rec->has_pgid)
			groups[n_groups++] = (struct exec_recorded_group){
				.run = rec->id, .pgid = rec->pgid, .start = rec->pgid_start,
				.start_known = rec->pgid_start != INT64_MIN,
			};
		rec->has_pgid = false;
		drop_steps_in_file(e, rec);
		rec->status = RUN_INTERRUPTED;
		free(rec->finished);
		rec->finished = engine_now();
		run_set_str(&rec->error, "agentd stopped during the run");
		log_warn("Run %ld (%s) was interrupted; queueing it again", rec->id, run_event(rec));
	}
	exec_kill_orphans(groups, n_groups);
	free(groups);
	if (!changed)
		return false;
	/* queue_requeue inserts at the front of the list: collect first,
	 * oldest first. */
	struct run **again = xcalloc(e->runs.n + 1, sizeof(*again));
	size_t n = 0;
	for (size_t i = e->runs.n; i-- > 0;)
		if (e->runs.v[i]->status == RUN_INTERRUPTED && !e->runs.v[i]->requeued) {
			e->runs.v[i]->requeued = true;
			again[n++] = e->runs.v[i];
		}
	for (size_t i = 0; i < n; i++)
		engine_requeue(e, again[i]);
	free(again);
	return true;
}

int engine_start(struct engine *e)
{
	_cleanup_free_ char *stacks = state_path(e, "stacks"), *runs = xasprintf("%s/runs", e->config->log_dir);
	_cleanup_free_ char *run_files = state_path(e, "runs");
	_cleanup_free_ char *err = NULL;
	int r;

	if ((r = mkdir_p(stacks, 0700)) < 0)
		return log_error_errno(r, "Failed to create %s: %m", stacks);
	if ((r = mkdir_p(runs, 0750)) < 0)
		return log_error_errno(r, "Failed to create %s: %m", runs);
	if ((r = mkdir_p(run_files, 0700)) < 0)
		return log_error_errno(r, "Failed to create %s: %m", run_files);

	/* A file system an agentd killed mid-snapshot left frozen. */
	ec2_snapshot_thaw_left(e->config->state_dir);
	state_load(e);
	state_fix_next_id(e);
	/* A state file may hold more finished runs than history allows. */
	state_trim_history(e);
	(void)reconcile_running(e);
	/* Written at every start, changed or not: it records what was
	 * reconciled above, and it probes state_dir, so that status says at
	 * once when it takes no writes (state_error, retried on a timer),
	 * not only at the first run. */
	engine_persist(e);

	if ((r = http_new(e->loop, &e->http)) < 0)
		return log_error_errno(r, "Failed to set up the HTTP client: %m");
	static const struct source_callbacks cbs = { engine_on_document, engine_on_source_error, engine_on_source_unchanged };
	r = source_new(e->loop, e->config, e->http, &cbs, e, &e->source, &err);
	if (r < 0) {
		log_error("%s", err);
		return r;
	}
	engine_arm_retry(e);
	/* What the last run of agentd did not apply (a burst that was
	 * settling), or applied as another instance (another `instance`, host
	 * name): the source's document is the saved one, so it is applied
	 * now, not when the source sends it. */
	engine_check_identity(e);
	engine_apply_current(e);
	/* After the boot's own runs are queued: a catch-up comes after them. */
	engine_schedule_start(e);
	engine_notify_status(e);
	r = source_start(e->source);
	if (r < 0)
		return log_error_errno(r, "Failed to start the stack source %s: %m", e->source_url);
	engine_fleet_publish(e);
	/* Queued work from before a restart goes on with the stack we saved. */
	engine_kick(e);
	return 0;
}

void engine_stop_now(struct engine *e)
{
	if (e->stopping && e->stop_deadline && uv_is_active((uv_handle_t *)&e->state_retry)) {
		/* Asked twice: one last try of state.json, then go. */
		(void)uv_timer_stop(&e->state_retry);
		e->stop_deadline = time_monotonic_usec();
		engine_stop_finish(e);
		return;
	}
	if (e->stopping && e->active && e->active->x) {
		log_warn("Stopping now: terminating the current step of run %ld", e->active->id);
		e->active->killed = true;
		plan_execute_cancel(e->active->x, true);
	}
}

static void on_stop_retry(uv_timer_t *t)
{
	engine_stop_finish(t->data);
}

/* The last step of a stop: state.json must hold what happened (a run's
 * result above all). When it cannot be written (a full disk), it is tried
 * again every STOP_STATE_RETRY_MS for STOP_STATE_RETRY_USEC, while status
 * still answers; then agentd goes anyway, saying so: each run's result is
 * also the last line of its log, which the next start reads. */
void engine_stop_finish(struct engine *e)
{
	void (*done)(void *);

	if (!e->stop_done || e->closing)
		return;
	if (e->state_error && engine_persist(e) < 0) {
		int64_t now = time_monotonic_usec();
		if (e->stop_deadline == 0) {
			e->stop_deadline = now + STOP_STATE_RETRY_USEC;
			log_warn("Stopping, but %s: trying again for %d s before exiting", e->state_error,
				 STOP_STATE_RETRY_USEC / 1000000);
		}
		if (now < e->stop_deadline) {
			(void)uv_timer_start(&e->state_retry, on_stop_retry, STOP_STATE_RETRY_MS, 0);
			return;
		}
		log_error("Exiting without having written state.json (%s): the result of a run finished since is the "
			  "last line of its log in %s/runs, and the next start takes it from there",
			  e->state_error, e->config->log_dir);
	}
	(void)uv_timer_stop(&e->state_retry);
	log_debug("state_dir writes in this run of agentd: %u of state.json, %u of a running run's file, %.1f ms",
		  e->persists, e->run_file_writes, (double)e->persist_usec / 1000.0);
	done = e->stop_done;
	e->stop_done = NULL;
	done(e->stop_userdata);
}

void engine_stop(struct engine *e, void (*done)(void *userdata), void *userdata)
{
	e->stopping = true;
	e->stop_done = done;
	e->stop_userdata = userdata;
	(void)uv_timer_stop(&e->kick);
	(void)uv_timer_stop(&e->retry);
	(void)uv_timer_stop(&e->state_retry);
	(void)uv_timer_stop(&e->settle_timer);
	engine_schedule_stop(e);
	engine_gates_free(e); /* before the etcd client goes with the source */
	if (e->source) {
		source_free(e->source);
		e->source = NULL;
	}
	if (e->active && e->active->x) {
		log_info("Stopping: letting the current step of run %ld finish", e->active->id);
		plan_execute_cancel(e->active->x, false);
		return;
	}
	if (e->active) {
		engine_active_abandon(e); /* waiting for a fleet gate: ends the stop itself */
		return;
	}
	engine_stop_finish(e);
}

static void on_engine_closed(uv_handle_t *h)
{
	struct engine *e = h->data;
	if (--e->closing == 0)
		free(e);
}

void engine_free(struct engine *e)
{
	if (!e)
		return;
	engine_schedule_stop(e);
	engine_gates_free(e);
	engine_metrics_free(e);
	if (e->source)
		source_free(e->source);
	if (e->http)
		http_free(e->http);
	stack_unref(e->current);
	stack_unref(e->applied);
	stack_unref(e->previous);
	free(e->applied_instance);
	strv_free(e->applied_layers);
	run_list_clear(&e->runs);
	json_decref(e->failed);
	json_decref(e->input_hashes);
	json_decref(e->last_success);
	free(e->paused);
	free(e->instance);
	free(e->source_url);
	free(e->source_error);
	free(e->source_error_path);
	free(e->state_error);
	e->closing = 4;
	uv_close((uv_handle_t *)&e->settle_timer, on_engine_closed);
	uv_close((uv_handle_t *)&e->kick, on_engine_closed);
	uv_close((uv_handle_t *)&e->retry, on_engine_closed);
	uv_close((uv_handle_t *)&e->state_retry, on_engine_closed);
}

json_t *engine_stack_json(struct engine *e)
{
	if (!e->current)
		return NULL;
	/* No copy: a 16 MiB document read by many users at once must not be
	 * duplicated per reader. */
	return json_incref(e->current->root);
}

/* --------------------------------------------------------------- actions */

/* Records a run an operator asked for: it must be in state.json before the
 * answer, or the operator learns now that it is not (rather than find it
 * gone after a restart; its id stays spent). */
static int commit_requested(struct engine *e, struct run *run, long first_new, long *ret_id, char **ret_error)
{
	*ret_id = run->id;
	if (engine_persist(e) < 0 && run->id >= first_new) {
		for (size_t i = 0; i < e->runs.n; i++)
			if (e->runs.v[i] == run) {
				run_free(run_list_take(&e->runs, i));
				break;
			}
		*ret_error = xasprintf("the run cannot be recorded: %s", e->state_error);
		*ret_id = 0;
		return -EIO;
	}
	engine_kick(e);
	return 0;
}

int engine_request_run(struct engine *e, enum event ev, const char *layer, const char *app, const char *recipe,
		       enum trigger_kind trig, long *ret_id, char **ret_error)
{
	struct run_request req = { .event = ev, .layer = (char *)layer, .app = (char *)app, .recipe = (char *)recipe,
				   .trigger = trig };
	struct run *run;
	long first_new = e->next_id;
	int r;

	if (e->stopping) {
		*ret_error = xstrdup("agentd is stopping");
		return -EBUSY;
	}
	if (!e->current) {
		*ret_error = xstrdup("no valid stack yet: nothing to run");
		return -ENOENT;
	}
	if (layer && !stack_has_self_layer(e->current, layer)) {
		*ret_error = xasprintf("instance \"%s\" is not a member of layer \"%s\"", e->current->instance, layer);
		return -ENOENT;
	}
	if (app && !stack_app_find(e->current, app)) {
		*ret_error = xasprintf("app \"%s\" is not in the stack's deploy section", app);
		return -ENOENT;
	}
	/* A maintenance run is one job, a custom recipe (design.md §8.1); a
	 * named plan otherwise is rollback's own. */
	if ((ev == EVENT_MAINTENANCE) != (recipe != NULL)) {
		*ret_error = xstrdup(recipe ? "--recipe names a maintenance job: only with event maintenance"
					    : "a maintenance run is one job: name it with --recipe");
		return -EINVAL;
	}
	if (recipe && (layer || app)) {
		*ret_error = xstrdup("a maintenance job runs for the instance: no layer or app");
		return -EINVAL;
	}
	if (recipe && (r = recipes_job_check(e->current, e->config, recipe, NULL, ret_error)) < 0)
		return r;
	run = recipe ? engine_enqueue_ex(e, &req, NULL, true) : engine_enqueue(e, ev, layer, app, trig, NULL);
	if (!run) {
		*ret_error = xstrdup(e->next_id > ENGINE_RUN_ID_MAX ? "no run id left" : "the queue is full");
		*ret_id = 0;
		return -ERANGE;
	}
	return commit_requested(e, run, first_new, ret_id, ret_error);
}

int engine_plan(struct engine *e, enum event ev, const char *layer, const char *app, const char *recipe, json_t **ret,
		char **ret_error)
{
	struct run_request req = { .event = ev, .layer = (char *)layer, .app = (char *)app, .recipe = (char *)recipe };
	struct plan plan;
	int r;

	if (!e->current) {
		*ret_error = xstrdup("no valid stack yet: nothing to plan");
		return -ENOENT;
	}
	r = engine_build_plan(e, e->current, &req, 0, &plan, ret_error);
	if (r < 0) {
		plan_free(&plan);
		return r;
	}
	struct step_env env = {
		.loop = e->loop,
		.http = e->http,
		.root = e->config->root,
		.run_id = 0,
		.output_max = (size_t)e->config->step_output_max,
	};
	json_t *o = plan_describe(&plan, &env);
	json_object_set_new(o, "event", json_string(event_to_string(ev)));
	json_object_set_new(o, "layer", json_string_or_null(layer));
	json_object_set_new(o, "app", json_string_or_null(app));
	if (recipe)
		json_object_set_new(o, "recipe", json_string(recipe));
	json_object_set_new(o, "stack_revision", json_string(e->current->revision));
	/* An instance in no layer has nothing to plan: say why rather than
	 * show an empty plan as if all were done. */
	char *why = engine_unassigned_reason(e);
	if (why) {
		json_object_set_new(o, "state", json_string("unassigned"));
		json_object_set_new(o, "warning", json_string(why));
		free(why);
	}
	/* Any local user may ask for a plan, and a plan holds a copy of each
	 * file's content (up to the stack's 16 MiB): give a large one back to
	 * the kernel now, rather than keep that peak for good. */
	bool large = plan_content_bytes(&plan) >= (1u << 20);
	plan_free(&plan);
	if (large)
		(void)malloc_trim(0);
	*ret = o;
	return 0;
}

void engine_reload(struct engine *e)
{
	e->have_raw_hash = false;
	if (e->source)
		source_reload(e->source);
}

int engine_pause(struct engine *e, const char *reason, char **ret_error)
{
	free(e->paused);
	e->paused = xstrdup(reason ? reason : "");
	log_info("Paused%s%s", reason && *reason ? ": " : "", reason ? reason : "");
	engine_persist(e);
	engine_notify_status(e);
	return 0;
}

int engine_resume(struct engine *e, char **ret_error)
{
	if (!e->paused) {
		*ret_error = xstrdup("not paused");
		return -EINVAL;
	}
	free(e->paused);
	e->paused = NULL;
	log_info("Resumed");
	engine_persist(e);
	engine_apply_current(e);
	engine_kick(e);
	engine_notify_status(e);
	return 0;
}

int engine_clear_failed(struct engine *e, char **ret_error)
{
	json_object_clear(e->failed);
	engine_gates_clear_kept(e); /* slots failed deploys kept (design.md §9) */
	engine_arm_retry(e);
	engine_persist(e);
	engine_notify_status(e);
	return 0;
}

int engine_rollback(struct engine *e, const char *app, json_t **ret, char **ret_error)
{
	struct run_request req = { .event = EVENT_DEPLOY, .app = (char *)app, .recipe = (char *)RUN_RECIPE_ROLLBACK,
				   .trigger = TRIGGER_CTL };
	const struct stack_app *a;
	_cleanup_free_ char *from = NULL, *to = NULL;
	long first_new = e->next_id, id;
	struct run *run;
	int r;

	if (!e->current || !(a = stack_app_find(e->current, app))) {
		*ret_error = xasprintf("app \"%s\" is not in the stack's deploy section", app);
		return -ENOENT;
	}
	if (e->active) {
		*ret_error = xstrdup("a run is in progress; try again when it has finished");
		return -EBUSY;
	}
	/* The answer now (from, to, or why not); the switch itself, and the
	 * restarts of the app's services, are a run of their own, in the
	 * history and its log like any other. */
	r = rollback_preview_app(e->config->root, app, a->deploy_to, &from, &to, ret_error);
	if (r < 0)
		return r;
	run = engine_enqueue_ex(e, &req, e->current->revision, true);
	if (!run) {
		*ret_error = xstrdup(e->next_id > ENGINE_RUN_ID_MAX ? "no run id left" : "the queue is full");
		return -ERANGE;
	}
	r = commit_requested(e, run, first_new, &id, ret_error);
	if (r < 0)
		return r;
	log_info("Rolling back %s from %s to %s (run %ld)", app, from, to, id);
	*ret = json_pack("{s:s, s:s, s:s, s:I}", "app", app, "from", from, "to", to, "restart_run", (json_int_t)id);
	return 0;
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* What engine.c, state.c and runlog.c share: the engine's structure and the
 * functions of state_dir (state.c) and of run logs (runlog.c). Not for
 * other stages: they go through engine.h. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <uv.h>

#include "engine.h"
#include "log.h"
#include "run.h"
#include "steps/plan.h"

struct config;
struct stack;
struct stack_error;

/* Bounds of what agentd writes to state_dir, and so of what it reads back.
 * Memory follows the number of JSON elements, not the bytes (a file of
 * small integers takes ~50 bytes per byte), so both are checked before a
 * file is parsed (json_bounds_check), and a writer keeps within them:
 *   - a run record keeps at most RUN_STEPS_MAX steps, of at most
 *     RUN_STEPS_MAX_BYTES as JSON, and texts (a step's target, error and
 *     message, the run's error) of at most RUN_TEXT_MAX bytes; the run
 *     log has everything, the record counts what it left out in
 *     "steps_omitted";
 *   - state.json holds `history` finished runs, at most RUN_QUEUE_MAX
 *     queued ones and the running one, and at most ENGINE_KEYS_MAX entries
 *     in each of failed, input_hashes and last_success. */
#define RUN_STEPS_MAX 4096
#define RUN_STEPS_MAX_BYTES (6u << 20)
#define ENGINE_KEYS_MAX 2048
#define ENGINE_KEY_MAX_BYTES 512 /* of an input hash's key */
#define STATE_VERSION 1
#define RUN_STEP_ELEMENTS 24         /* a step: the object, 10 keys, 10 values */
#define RUN_REC_ELEMENTS 48          /* a record without its steps: the object, 22 keys, 22 values */
#define RUN_REC_MAX_BYTES (8u << 10) /* names of 255, texts of RUN_TEXT_MAX, JSON escapes included */
/* runs/<id>.json: one record with its steps. */
#define RUN_FILE_MAX_ELEMENTS ((size_t)RUN_STEPS_MAX * RUN_STEP_ELEMENTS + RUN_REC_ELEMENTS)
#define RUN_FILE_MAX_BYTES ((size_t)RUN_STEPS_MAX_BYTES + RUN_REC_MAX_BYTES)
#define ENGINE_KEY_ENTRY_ELEMENTS 16 /* a failure: key, object, 7 keys, 7 values */
#define ENGINE_KEY_ENTRY_MAX_BYTES (2u << 10)
#define STATE_JSON_MAX_DEPTH 8       /* state, runs, record, steps, step: 5 */
/* Beyond any history (config allows 10000): the cap of the old reader. */
#define STATE_MAX_BYTES (64u << 20)
#define ENGINE_RUNS_MAX (10000 + RUN_QUEUE_MAX + 1)
#define ENGINE_FAIL_COUNT_MAX 1000000
#define ENGINE_TIME_USEC_MAX INT64_C(253402300799000000) /* 9999-12-31 */


struct active {
	struct run *rec;            /* borrowed from e->runs */
	long id;
	struct stack *stack;        /* owned ref: what the run plans against */
	struct plan plan;
	struct plan_exec *x;        /* NULL once done */
	int log_fd;
	int64_t started_mono;
	uv_timer_t timeout;
	bool timed_out;
	bool no_retry;              /* retrying cannot help: the run's stack, layer or app is gone */
	bool killed;                /* its step was terminated by a second SIGTERM */
	bool unassigned;            /* ran nothing: the instance is in no layer (not a failure to retry) */
	size_t changed;
	size_t headed;              /* 1 + index of the last step whose header is in the log */
	uint64_t log_key;           /* random, in the log's first and result lines: output cannot fake a result */
	size_t steps_bytes;         /* of the steps kept in rec, as JSON */
	size_t steps_omitted;       /* steps left out of rec (over RUN_STEPS_MAX or RUN_STEPS_MAX_BYTES) */
	struct log_context logctx;  /* RUN_ID, EVENT, LAYER, STEP of this run's own lines */
	int64_t snapshot_mono;      /* when its steps were last written to its file, 0: never */
	bool done_elsewhere;        /* a singleton job another instance ran since it was asked for: steps skipped */
};

struct engine {
	uv_loop_t *loop;               /* borrowed */
	const struct config *config;   /* borrowed */
	struct http *http;             /* owned */
	struct step_memory memory;     /* input hashes and owed work, kept in state.json */
	struct source *source;         /* owned */

	struct stack *current;         /* owned ref, newest valid stack */
	struct stack *applied;         /* owned ref, the stack whose triggers were queued */
	char *instance;                /* owned: the configured or system host name */
	/* owned: the name applied was applied as (its layers are this
	 * instance's layers then): when it differs from instance, a restart
	 * diffs the layer sets (design.md §3 Identity). NULL: instance. */
	char *applied_instance;
	char **applied_layers;         /* owned strv: agentd.conf's `layers` when applied, NULL: from the stack */
	struct stack *previous;        /* owned ref: the stack applied before, under another name; NULL when none */
	bool unassigned_logged;        /* the journal said why this instance is in no layer of current */
	char *source_url;              /* owned: config->source with credentials hidden, for status and logs */
	bool first_start;              /* no state: the first valid stack runs setup */

	uint64_t last_raw_hash;        /* of the last document seen, to skip re-parsing */
	bool have_raw_hash;
	bool source_error_fetch;       /* source_error is an error of fetching (on_source_error) */
	bool raw_ok;                   /* the last document was accepted (kept across fetch errors, for a 304 after them) */
	char *source_error;            /* owned: the last fetch or validation error, NULL when fine */
	char *source_error_path;       /* owned: its JSON path, when a validation error */
	int64_t last_change_usec;

	struct run_list runs;          /* owned: run records, newest first */
	long next_id;
	json_t *failed;                /* owned: object "event/layer/app" -> {run, count, next_retry} */
	json_t *input_hashes;          /* owned: object key -> hex; owed work under "pending:" keys on disk */
	json_t *last_success;          /* owned: object "event/layer" -> {revision, run} */
	char *paused;                  /* owned: reason ("" when none given), NULL when not paused */

	struct active *active;         /* owned, NULL when idle */
	uv_timer_t kick;               /* starts the next run from a clean stack */
	struct settle settle;          /* bursts of stack changes (design.md §3 Settling) */
	int64_t settle_until;          /* monotonic usec: runs of stack changes wait until then; 0: they do not */
	uv_timer_t settle_timer;       /* starts them when the burst has settled */
	uv_timer_t retry;              /* the next retry of a failed change */
	uv_timer_t state_retry;        /* the next try to write state_dir after a failure */
	char *state_error;             /* owned: why state_dir cannot be written, NULL when fine */
	unsigned state_failures;       /* writes failed in a row, for the backoff */
	bool stack_save_failed;        /* a new stack could not be saved: fetch it again once state_dir takes writes */
	unsigned persists;             /* writes of state.json, for log_debug (the cost of persisting) */
	unsigned run_file_writes;      /* writes of the running run's file */
	int64_t persist_usec;          /* time spent in both */
	int64_t start_mono;

	struct engine_gate *gates;     /* owned list: fleet locks and slots taken or kept (gate.c) */
	struct schedule *schedule;     /* owned: maintenance jobs (schedule.c), NULL before start and after stop */
	struct metrics *metrics;       /* owned: metrics.c's counters and its file, NULL until first used */
	int64_t stack_pushed;          /* fleet.c: the mod revision of PREFIX/stack this agent's last push wrote, 0: none */

	struct engine_watch *watchers;
	bool stopping;
	int64_t stop_deadline;         /* monotonic usec: the end of the state retries at a stop, 0 before */
	void (*stop_done)(void *userdata);
	void *stop_userdata;
	unsigned closing;
	bool freed_on_close;
};

/* ---- state.c: state_dir */

/* Views of a run record as JSON. */
enum run_view {
	RUN_VIEW_PUBLIC,       /* what status, runs and run-info show: no private member, no steps */
	RUN_VIEW_PUBLIC_STEPS, /* the same with its steps ([] when none in memory) */
	RUN_VIEW_STATE,        /* its entry in state.json: private members, no steps */
	RUN_VIEW_FILE,         /* its file runs/<id>.json: everything */
};
json_t *run_to_json(const struct run *r, enum run_view view);
/* A record that engine_state_parse checked; NULL when it has no use. */
struct run *run_from_json(const json_t *clean);
/* A record as read from its file (checked here); NULL when unusable. */
struct run *run_from_file(const json_t *full);
/* A text of a record as JSON: at most RUN_TEXT_MAX bytes, cut at a
 * character boundary; NULL gives null. */
json_t *run_text_json(const char *s);
/* The most bytes of a state.json written with this history. */
size_t state_max_bytes(long history);

char *state_path(const struct engine *e, const char *name);
char *run_file_path(const struct engine *e, long id);
/* Writes state.json; on failure the state stays in memory and the write is
 * retried on a timer (state_write_failed). 0 or a negative errno. */
int engine_persist(struct engine *e);
/* At a step transition of the running run (a step's process spawned):
 * state.json (the record without its steps, with the step's process
 * group: a restart ends that group), and at most every RUN_SNAPSHOT_USEC
 * its file runs/<id>.json with the steps so far. state.json never holds
 * the steps of the running run. */
#define RUN_SNAPSHOT_USEC 1000000
void engine_persist_active(struct engine *e);
/* At the end of a run: its file with every kept step; the steps leave
 * memory. On failure they stay in the record (and state.json). */
void state_save_finished_run(struct engine *e, struct run *rec);
/* The steps of a finished run from its file into o ("steps", or
 * "steps_error"). */
void state_read_run_steps(struct engine *e, long id, json_t *o);
void state_write_failed(struct engine *e, const char *what, int r);
void state_move_aside(struct engine *e, const char *path);
int state_save_stack(struct engine *e, const struct stack *s);
char *state_stack_path(const struct engine *e, const char *rev);
struct stack *state_load_stack(struct engine *e, const char *rev);
/* The same as another instance name (the applied stack's, design.md §3
 * Identity). */
struct stack *state_load_stack_as(struct engine *e, const char *rev, const char *instance,
				  const char *const *layers);
/* recipes_stack_load() as this instance: by instance, in layers when not
 * NULL (agentd.conf's `layers`), else in the layers that name it. */
int engine_stack_load(struct engine *e, const char *data, size_t len, const char *instance,
		      const char *const *layers, struct stack **ret, struct stack_error *err);
void state_gc_stacks(struct engine *e);
void state_load(struct engine *e);
void state_fix_next_id(struct engine *e);
/* Drops the oldest finished records beyond history, with their files. */
void state_trim_history(struct engine *e);
bool revision_is_valid(const char *r);
void state_memory_init(struct engine *e);
/* Whether the last state.json write failed. */
static inline bool state_dirty(const struct engine *e)
{
	return e->state_error != NULL;
}

/* ---- small helpers */

static inline const char *str_or_empty(const char *s)
{
	return s ? s : "";
}

static inline json_t *json_string_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

static inline bool str_eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

static inline const char *run_event(const struct run *r)
{
	return event_to_string(r->req.event);
}

/* The running run's log context is in effect only while its own code runs:
 * a line logged meanwhile for anything else (a control client, the source)
 * carries none of it. Returns what to give back to run_ctx_leave. */
static inline const struct log_context *run_ctx_enter(struct active *a)
{
	return log_context_use(&a->logctx);
}

static inline void run_ctx_leave(const struct log_context *prev)
{
	(void)log_context_use(prev);
}

/* ---- engine.c: the queue, failures, lifecycle, actions */

/* Now in RFC 3339 (malloc'd). */
char *engine_now(void);
/* Passes ev (stolen) to every watcher. */
void engine_emit(struct engine *e, json_t *ev);
void engine_notify_status(struct engine *e);
/* Queues a request (queue.c joins it to a queued run that covers it);
 * returns the run, or NULL when the queue is full or no id is left. */
struct run *engine_enqueue_ex(struct engine *e, const struct run_request *req, const char *stack, bool fresh);
struct run *engine_enqueue(struct engine *e, enum event ev, const char *layer, const char *app,
			   enum trigger_kind trig, const char *stack);
/* Queues an interrupted run again (queue_requeue). */
void engine_requeue(struct engine *e, const struct run *rec);
void engine_arm_retry(struct engine *e);
void engine_record_failure(struct engine *e, const struct run *rec, bool retry);
void engine_record_success(struct engine *e, const struct run *rec, const char *rev);
void engine_on_state_retry(uv_timer_t *t);
void engine_stop_finish(struct engine *e);

/* ---- active.c: the running run */

/* Starts rec (queued): on disk as running first, then planned and executed. */
void engine_start_run(struct engine *e, struct run *rec);
/* Starts the next run from a fresh loop iteration. */
void engine_kick(struct engine *e);
/* The plan of req against s (run_id 0: a dry run), by recipes_build_plan. */
int engine_build_plan(struct engine *e, struct stack *s, const struct run_request *req, long run_id,
		      struct plan *plan, char **ret_error);

/* The active run may go on: its gate is held (done_by NULL), or its
 * singleton job was done by another instance since it was asked for
 * (done_by says who and when: its steps are recorded skipped with it). */
void engine_active_gate_open(struct engine *e, const char *done_by);
/* The active run, waiting for its gate, ends as interrupted (a stop). */
void engine_active_abandon(struct engine *e);

/* ---- gate.c: fleet locks and slots of runs (design.md §9) */

struct engine_gate;
/* Takes a's plan's gate, with an etcd source only: 1 when the run may
 * start now (no gate, no etcd), 0 when it waits (status "waiting";
 * engine_active_gate_open() follows once it holds). */
int engine_gate_take(struct engine *e, struct active *a);
/* rec finished: its gate is given back, or kept (a failed run of a gate
 * that keeps); a success also gives back a gate a failed run of the same
 * event and app kept. ran_job: write a singleton's PREFIX/jobs/<job>
 * before giving back its lock. */
void engine_gate_run_done(struct engine *e, const struct run *rec, bool ran_job);
/* clear-failed: gives back every kept gate. */
void engine_gates_clear_kept(struct engine *e);
/* Gives back every gate, before the etcd client goes (a stop). */
void engine_gates_free(struct engine *e);
/* Whether this instance holds the mutex name now (etcd sources; false for
 * others). */
bool engine_gate_held(struct engine *e, const char *name);

/* ---- schedule.c: maintenance jobs (design.md §8.1) */

/* After state and the saved stack are loaded: the scheduler, its state
 * file state_dir/schedule.json, the current stack's jobs, the catch-up. */
void engine_schedule_start(struct engine *e);
/* A new current stack: its jobs (recipes_jobs) replace the previous ones. */
void engine_schedule_stack(struct engine *e);
/* rec finished: a success of a maintenance job is its last success. */
void engine_schedule_run_done(struct engine *e, const struct run *rec);
void engine_schedule_stop(struct engine *e);

/* ---- metrics.c: the figures of `metrics` and metrics_file (design.md §4) */

/* A step of the running run finished (skipped ones are not counted). */
void engine_metrics_step(struct engine *e, const struct step *s);
/* rec finished (success, failed or interrupted). */
void engine_metrics_run_done(struct engine *e, const struct run *rec);
/* A fetch or a document of the source failed. */
void engine_metrics_source_error(struct engine *e);
/* Writes metrics_file (atomically, 0644) when the figures changed since
 * the last write; a failure is logged once per cause, never fatal. */
void engine_metrics_write(struct engine *e);
void engine_metrics_free(struct engine *e);

/* ---- views.c */

/* "running", "paused", "unassigned", "failed" or "idle": status's state. */
const char *engine_state_name(const struct engine *e);

/* ---- intake.c: stack documents from the source */

void engine_on_document(void *userdata, const char *data, size_t len);
void engine_on_source_error(void *userdata, const char *message);
bool engine_on_source_unchanged(void *userdata);
/* Queues what it takes to go from the applied stack to the current one. */
void engine_apply_current(struct engine *e);
/* A new current stack: applied at once, or when its burst has settled. */
void engine_stack_changed(struct engine *e);
/* Whether the current stack places this instance in no layer. */
bool engine_unassigned(const struct engine *e);
/* Why (a line for status, plan and the journal), malloc'd; NULL when the
 * instance has a layer or there is no stack. */
char *engine_unassigned_reason(const struct engine *e);
/* Says in the journal, once per change, why the instance is in no layer. */
void engine_check_identity(struct engine *e);

/* ---- fleet.c: the fleet (design.md §9) */

/* This agent's state, applied revision and last run into its registration
 * (etcd sources; a no-op for others). Called where they may change. */
void engine_fleet_publish(struct engine *e);

/* ---- runlog.c: run logs in log_dir/runs (runlog.h has the reader) */

/* Opens a run's log for writing: never through a symlink, never blocking
 * on a FIFO or device planted in its place. The fd, or -1 (logged). */
int runlog_open(const char *path);
void runlog_write(int fd, long id, const char *data, size_t len);
/* A run recorded as running whose log ends with its keyed result line:
 * takes status, finished, changed and error into rec; false when the log
 * has none (the run was cut short). */
bool runlog_result(const char *path, struct run *rec);
/* The result line of a run (the last line of its log). */
char *runlog_result_line(long id, uint64_t key, const char *status, size_t changed, const char *finished,
			 const char *error);

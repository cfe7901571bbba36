/* SPDX-License-Identifier: BSD-2-Clause */
/* The engine: stack versions in, runs out. Trigger queue with coalescing,
 * one run at a time, history, failed/interrupted states, retry with backoff,
 * persistence in state_dir (design.md §3, §7). The control server calls the
 * functions below; every one returns at once (nothing here blocks). */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "event.h"

struct config;
struct engine;
struct stack;

/* Run ids are 1 .. ENGINE_RUN_ID_MAX (2^53 - 1: exact in any JSON reader).
 * An id is never given twice; when none is left, runs are refused. */
#define ENGINE_RUN_ID_MAX ((long)((INT64_C(1) << 53) - 1))

/* Takes the lock that makes one agentd per state_dir (design.md §3): an
 * exclusive flock() on the state_dir directory itself (created 0700 when
 * missing), so that deleting or swapping a file in it cannot let a second
 * agentd in; our pid is written as text to state_dir/lock (0600) for the
 * message of a second agentd. Call it first, before reading any state or
 * touching any process. The descriptor (of state_dir) is close-on-exec and
 * kept for the life of the process (exit releases the lock). Returns it, or
 * a negative errno with a malloc'd message: -EBUSY when another process
 * holds the lock (the message names its pid when it is known). */
int engine_lock_state_dir(const char *state_dir, char **ret_error);

/* Parses a state.json document from memory into a checked, normalised
 * object (every number range-checked, unknown members dropped):
 *   {"runs":[...], "dropped_runs":N, "next_run_id":N (0: none usable),
 *    "failed":{...}, "input_hashes":{...}, "last_success":{...},
 *    "paused":"..."?, "applied_revision":"hex16"?, "stack_revision":"hex16"?,
 *    "instance":NAME?, "applied_instance":NAME?}
 * history is the configured `history` (1..10000): what agentd writes with
 * it bounds the bytes, JSON elements and depth accepted, which are checked
 * before anything is parsed (a file beyond them is -EFBIG).
 * Returns 0 with *ret (a new reference), or -EINVAL / -EFBIG with a malloc'd
 * message. Used by engine_start, and by the fuzz target. */
int engine_state_parse(const char *data, size_t len, long history, json_t **ret, char **ret_error);

int engine_new(uv_loop_t *loop, const struct config *config, struct engine **ret);
/* Loads state (marks an interrupted run and queues it again), starts the source. */
int engine_start(struct engine *e);
/* Graceful stop: no new runs; the current step finishes (a child is not
 * killed), the rest of the run is recorded as interrupted, handles close,
 * then done() runs. */
void engine_stop(struct engine *e, void (*done)(void *userdata), void *userdata);
/* After engine_stop: also terminate the current step (a second SIGTERM). */
void engine_stop_now(struct engine *e);
void engine_free(struct engine *e);

/* Read-only views (new references), secrets included: what a caller that
 * is not privileged may see is decided by control. */
json_t *engine_status(struct engine *e);
json_t *engine_runs(struct engine *e, long n);
json_t *engine_run_info(struct engine *e, long id);   /* NULL: no such run */
/* The current stack document, secrets included: a new reference that
 * shares the engine's tree, so it must not be modified. NULL: no stack
 * yet. */
json_t *engine_stack_json(struct engine *e);
/* The current stack's revision (borrowed, valid until the stack changes),
 * NULL when there is none: a document served once may be cached under it. */
const char *engine_stack_revision(struct engine *e);
long engine_last_run_id(struct engine *e);            /* 0: none */
/* `schedule` (design.md §5, §8.1): {"jobs": [{"name", "schedule", "splay",
 * "offset" (this host's seconds), "source", "lock" (or null), "holds_lock",
 * "last_run" ({"id","status","started","finished"} or null),
 * "last_success" (RFC 3339 or null), "last_success_run", "next_run" (RFC
 * 3339 or null)}...], "paused": bool}. */
json_t *engine_schedule(struct engine *e);
/* `metrics` (design.md §4 metrics_file, issue 14): {"metrics": [{"name",
 * "type" ("counter"|"gauge"|"histogram"), "help", "samples": [{"name",
 * "labels": {...}, "value": N}]}...], "file": metrics_file or null,
 * "file_error": why the file's last write failed, or null}: the figures
 * that metrics_file holds as Prometheus text (lib/metrics.h prints them);
 * engine/metrics.c says what counts since when. */
json_t *engine_metrics(struct engine *e);
/* Path of a run's log file (malloc'd), whether or not it exists yet. */
char *engine_run_log_path(struct engine *e, long id);
bool engine_run_is_active(struct engine *e, long id); /* queued or running */
/* The number of steps in the plan of run id while it runs; 0 otherwise. */
size_t engine_run_plan_size(struct engine *e, long id);

/* Actions. Each returns 0, or a negative errno with a malloc'd message. */
/* recipe: with ev maintenance (and only then, no layer or app) the job, a
 * custom recipe of agent.recipes (design.md §8.1): -EINVAL otherwise,
 * -ENOENT when the stack has no such recipe. */
int engine_request_run(struct engine *e, enum event ev, const char *layer, const char *app, const char *recipe,
		       enum trigger_kind trig, long *ret_id, char **ret_error);
/* plan_describe() of what ev would do, unredacted (see plan.h for its
 * diff_secret, diff_private and diff_cost members), with the event, layer,
 * app and stack_revision. */
/* recipe: NULL for the event's recipes, or a named plan of the registry
 * ("rollback" with ev deploy and app: what `agentctl rollback APP` would
 * do). */
int engine_plan(struct engine *e, enum event ev, const char *layer, const char *app, const char *recipe, json_t **ret,
		char **ret_error);
void engine_reload(struct engine *e);
int engine_pause(struct engine *e, const char *reason, char **ret_error);
int engine_resume(struct engine *e, char **ret_error);
int engine_clear_failed(struct engine *e, char **ret_error);
/* `agentctl rollback APP`: answers at once with {"app", "from", "to",
 * "restart_run": ID} (control sends it once the run has switched current) (rollback_preview: -ENOENT, -EINVAL, -ELOOP with its
 * message), and queues one run (deploy of app, recipe "rollback", trigger
 * ctl; its plan from recipes_build_plan: the link back one release, then
 * the app's restarts) that joins no other run. -ENOENT: no such app;
 * -EBUSY: a run is in progress. */
int engine_rollback(struct engine *e, const char *app, json_t **ret, char **ret_error);

/* Fleet (design.md §5, §9). An answer that needs etcd arrives later:
 * cb(userdata, result, NULL) with a new reference, or cb(userdata, NULL,
 * message) on failure; it is never called from inside the function, nor
 * after engine_call_cancel. */
struct engine_call;
typedef void (*engine_reply_cb)(void *userdata, json_t *result, const char *error);
/* `fleet`: {"instances": [{"hostname", "layers", "address", "state",
 * "applied_revision", "last_run", "lease_ttl"}...], "source": "etcd"|...},
 * sorted by hostname. Other sources: the static members, state "unknown",
 * lease_ttl null, answered at once through cb (still from the loop). */
int engine_fleet(struct engine *e, engine_reply_cb cb, void *userdata, struct engine_call **ret, char **ret_error);
/* `stack-push`: validates doc exactly as a delivered document is (the same
 * code and JSON-path errors: -EINVAL with the message, nothing written),
 * then puts PREFIX/stack with a compare on its mod revision being base
 * (ENGINE_PUSH_BASE_READ: the newer of the revision this agent read last
 * and the one its own last push wrote; 0: only when the key does not
 * exist). Result {"key": PREFIX/stack, "revision": N (the new mod
 * revision), "base": B}. A stale base fails through cb with a message that
 * starts "refused: stale base" and names both revisions; a transport error
 * or timeout of the txn fails with a message saying the outcome is unknown
 * (etcd may still apply it). -ENOTSUP: the source is not etcd. doc need
 * only stay valid during the call (it is copied). */
#define ENGINE_PUSH_BASE_READ (-1)
int engine_stack_push(struct engine *e, const char *doc, size_t len, int64_t base, engine_reply_cb cb,
		      void *userdata, struct engine_call **ret, char **ret_error);
void engine_call_cancel(struct engine_call *call);

/* Streaming: watchers see every run's progress. Events are objects such as
 *   {"event":"run-started","run":ID,...}   {"event":"step-started","run":ID,"index":N,"kind":..,"target":..}
 *   {"event":"output","run":ID,"data":"..."}  {"event":"step-finished","run":ID,"index":N,"status":..}
 *   {"event":"run-finished","run":ID,"status":"success"|"failed"|"interrupted"}
 * ev is borrowed for the duration of the call. Output is passed to every
 * watcher; a watcher for unprivileged callers must redact as it sees fit. */
struct engine_watch {
	void (*on_event)(void *userdata, const json_t *ev);
	void *userdata;
	struct engine_watch *next; /* engine's list, do not touch */
};
void engine_watch_add(struct engine *e, struct engine_watch *w);
void engine_watch_remove(struct engine *e, struct engine_watch *w);

/* SPDX-License-Identifier: BSD-2-Clause */
/* The maintenance scheduler (design.md §8.1): the jobs of this instance
 * (recipes_jobs), each a cron expression in UTC plus a fixed per-host
 * offset, their last success in state_dir, one catch-up after downtime
 * (systemd's Persistent=true), and one uv_timer armed for the next due job
 * only. It asks for runs through ops (the engine's engine_request_run with
 * TRIGGER_SCHEDULE): ordinary runs, one at a time, never two of one job
 * queued. The clock is ops->now_usec, so tests inject one. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct recipe_jobs;
struct schedule;

struct schedule_ops {
	/* The wall clock: microseconds since the epoch, UTC. */
	int64_t (*now_usec)(void *userdata);
	/* Whether a run of job (event maintenance, recipe job) is queued or
	 * running, whatever asked for it. */
	bool (*pending)(void *userdata, const char *job);
	/* Asks for one run of job; 0 or a negative errno (it logs why). */
	int (*request)(void *userdata, const char *job);
};

/* The per-host offset of job in [0, splay] seconds: FNV-1a of the
 * instance's name and the job's, so it is the same at every start and on
 * every machine, and differs between hosts (systemd #21166: a delay drawn
 * again at each start can starve a daily job). */
long schedule_offset(const char *instance, const char *job, long splay);

/* A scheduler whose state is the file state_path (JSON, written
 * atomically, read back within bounds; a bad file is logged and taken as
 * none). No job until schedule_set_jobs. Returns 0 or a negative errno. */
int schedule_new(uv_loop_t *loop, const char *state_path, const struct schedule_ops *ops, void *userdata,
		 struct schedule **ret);
/* Stops its timer and watch; memory goes in the handles' close callbacks. */
void schedule_free(struct schedule *s);

/* The jobs of this instance, named instance (the splay's host), replace the
 * previous ones (copied). A job seen for the first time, or whose schedule
 * or splay changed, records "now" as its baseline and waits for its next
 * due time; a job gone is forgotten. Then schedule_check. */
void schedule_set_jobs(struct schedule *s, const char *instance, const struct recipe_jobs *jobs);
/* Catch-up and the timer: for each job whose latest due time (cron time
 * + offset, at or before now) is later than its baseline, its last success
 * and the due time it last asked a run for, and of which no run is
 * pending, asks for ONE run (a due time missed by more than a minute:
 * at the moment the miss is seen plus the job's offset, as systemd delays
 * Persistent=true by RandomizedDelaySec); then arms the timer for the next
 * due time of all jobs (none: stopped). Stamps more than a minute in the
 * future are dropped first (a baseline becomes now), with a warning. Called at start, on a new stack, when the
 * clock is set, and by the timer. */
void schedule_check(struct schedule *s);
/* A run of job succeeded (or was skipped: another instance did it), as run
 * run_id, finishing at finished_usec: its last success. */
void schedule_success(struct schedule *s, const char *job, long run_id, int64_t finished_usec);

/* {"jobs": [{"name", "schedule", "splay", "offset", "source", "lock",
 * "last_success" (RFC 3339 or null), "last_success_run" (id or null),
 * "next_run" (RFC 3339 or null)}...]} in the jobs' order. */
json_t *schedule_json(const struct schedule *s);
/* The i-th job, in the jobs' order: its name (borrowed, valid until the
 * jobs change) and last success (seconds since the epoch, 0: none). false
 * when there are not that many jobs. */
bool schedule_job_last_success(const struct schedule *s, size_t i, const char **ret_name, int64_t *ret_sec);
/* The due time the timer is armed for (seconds since the epoch), -1 when
 * none. */
int64_t schedule_next_due(const struct schedule *s);

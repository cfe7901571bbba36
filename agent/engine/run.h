/* SPDX-License-Identifier: BSD-2-Clause */
/* Run records and the queue (design.md §7). A run is what one request asked
 * for (struct run_request) and what became of it. The queue is simply the
 * records whose status is RUN_QUEUED in the engine's list, newest first;
 * queue.c decides what joins what and what runs next, without a loop or a
 * disk (tests/unit/test_engine.c). Records are read and written only by
 * state.c. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "event.h"

#define RUN_ID_MAX ENGINE_RUN_ID_MAX
/* Queued runs at most: within what state.json's reader accepts. */
#define RUN_QUEUE_MAX 256
/* Of a text in a record (an error, a step's target or message). */
#define RUN_TEXT_MAX 1024

/* The recipe of a run that only restarts an app's services: written by an
 * older agentd as "_rollback_restart" (its link switch was done before the
 * run), and queued again for a rollback run interrupted after its link
 * step (the link must not go back a second release). */
#define RUN_RECIPE_RESTART "restart"
#define RUN_RECIPE_ROLLBACK "rollback"

enum run_status { RUN_QUEUED, RUN_RUNNING, RUN_SUCCESS, RUN_FAILED, RUN_INTERRUPTED };

struct run_request {
	enum event event;
	char *layer;             /* NULL: every layer of this instance */
	char *app;               /* NULL: no app */
	/* NULL for an ordinary run (the event's recipes of the stack);
	 * else a named plan (RUN_RECIPE_*) that recipes_build_plan makes.
	 * Such a run joins no other and none joins it. */
	char *recipe;
	enum trigger_kind trigger;
};

struct run {
	long id;
	struct run_request req;
	enum run_status status;
	char *stack;             /* revision to plan against; NULL: the current stack */
	char *queued, *started, *finished; /* RFC 3339, NULL when not yet */
	long changed;
	double duration_ms;      /* < 0: not finished */
	char *error;             /* the run's error, at most RUN_TEXT_MAX bytes */
	char *stack_revision;    /* the stack it ran against, NULL before it started */
	json_t *steps;           /* owned array, NULL when in the run's file (or never run) */
	long steps_omitted;      /* < 0: none left out */
	char *steps_error;       /* why the steps are not shown, or NULL */
	/* The process group of the step running now, as recorded (from disk:
	 * range-checked where it is used, by exec_kill_recorded_group). */
	bool has_pgid;
	int64_t pgid, pgid_start;
	bool front;              /* runs before the others (an interrupted event) */
	bool requeued;           /* interrupted and queued again already */
	/* A rollback run whose rollback step finished: current has moved.
	 * Saved in state.json at that step transition, so that a run killed
	 * after it is queued again as a restart, never a second rollback. */
	bool switched;
	/* Running but waiting for a fleet lock or slot before its first step
	 * (design.md §9): {"lock"|"semaphore": name, "holders": [...]}, owned;
	 * NULL otherwise. Public views show status "waiting" with it; state
	 * and file views keep "running" (a restart treats it as interrupted). */
	json_t *waiting_for;
};

struct run_list {
	struct run **v;          /* owned, newest first */
	size_t n;
};

const char *run_status_to_string(enum run_status s);
/* -1 when s names no status. */
int run_status_from_string(const char *s);
static inline bool run_is_pending(const struct run *r)
{
	return r->status == RUN_QUEUED || r->status == RUN_RUNNING;
}

void run_request_copy(struct run_request *dst, const struct run_request *src);
void run_request_done(struct run_request *r);
struct run *run_new(long id, const struct run_request *req, const char *stack);
void run_free(struct run *r);
/* Sets *field to a copy of s (NULL allowed), freeing what it held. */
void run_set_str(char **field, const char *s);
/* The same for a text of the record (an error): at most RUN_TEXT_MAX
 * bytes, cut at a character boundary (the record must stay within what
 * its reader accepts; the run log has it whole). */
void run_set_text(char **field, const char *s);

void run_list_insert_front(struct run_list *l, struct run *r); /* takes r */
/* Removes the i-th record and returns it (the caller frees it). */
struct run *run_list_take(struct run_list *l, size_t i);
struct run *run_list_find(const struct run_list *l, long id);
void run_list_clear(struct run_list *l);

/* The queued run a request joins, or NULL: same event, app and stack (stack:
 * the revision the request is tied to, NULL for the current one), for the
 * same layer or one that covers every layer; an operator's request (trigger
 * ctl) joins only an operator's; a request or run with a recipe joins
 * nothing. A burst of triggers gives one run. */
struct run *queue_join(const struct run_list *l, const struct run_request *req, const char *stack);
size_t queue_count(const struct run_list *l);

/* Queues req: returns the run it joined (unless fresh), or a new record
 * with id *next_id (then incremented) at the front of l, or NULL with
 * -ENOSPC (RUN_QUEUE_MAX queued) or -ERANGE (no id left) in *ret_r. */
struct run *queue_add(struct run_list *l, long *next_id, const struct run_request *req, const char *stack,
		      bool fresh, const char *now, int *ret_r);

/* Queues an interrupted run again, ahead of the others (front). An ordinary
 * run becomes a retry that may join a queued one; a run with a recipe stays
 * one of its own, and a rollback whose link step finished becomes a restart
 * (rolling back again would go one release too far). */
struct run *queue_requeue(struct run_list *l, long *next_id, const struct run *interrupted, const char *now,
			  int *ret_r);

/* Whether a failed setup holds r back (design.md §3 First start, OpsWorks'
 * setup_failed): the configure and deploy of a boot wait while a setup
 * fails, and those of a layer the instance joined while that layer's
 * setup fails; the retry of setup that succeeds clears the failure and
 * they follow. failed is the engine's object of failures ("event/layer/
 * app" -> {event, layer, ...}), NULL for none. An operator's run never
 * waits: the operator asked for it. */
bool queue_held_by_setup(const struct run *r, const json_t *failed);

/* The next run to start: front runs first, then the oldest, skipping runs
 * a failed setup holds back (queue_held_by_setup), and runs of stack
 * changes while settling (a burst of changes has not settled yet). While
 * paused only operators' runs (trigger ctl) start. NULL when none. */
struct run *queue_next(const struct run_list *l, bool paused, const json_t *failed, bool settling);

/* Settling (design.md §3): a stack change after a quiet period is applied
 * at once (the leading edge); changes that follow within `settle` of the
 * last stack-change run's start wait until the stack has been quiet for
 * `settle`, but no longer than `settle_max` after the first of them, and
 * are then applied as one (the trailing edge), like consul-template's
 * `wait`. Times are monotonic microseconds. */
struct settle {
	int64_t mark;            /* the last stack-change run's start, 0: none yet */
	int64_t first;           /* the first change of the burst that waits, 0: none waits */
};

/* A stack change at now: 0 to apply it at once, else the monotonic time at
 * which to apply the burst it belongs to (> 0, maybe <= now: at once, but
 * as the trailing edge). settle <= 0 turns settling off. */
int64_t settle_change(struct settle *s, int64_t now, int64_t settle, int64_t settle_max);
/* A stack-change run started at now: the quiet period counts from here. */
void settle_applied(struct settle *s, int64_t now);

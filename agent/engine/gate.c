/* SPDX-License-Identifier: BSD-2-Clause */
/* Fleet gates of runs (design.md §9): the lock or semaphore slot a plan
 * asks for (struct plan_gate, decided by recipes/build.c: the engine knows
 * no family), taken before the run's first step, with an etcd source only
 * (other sources: ignored, §9 last bullet). Meanwhile the run is "waiting"
 * with the holders' hostnames, kept current as holders go and come (the
 * last known ones while the lock ranks again or is taken again, none
 * before the first ranking: "holders" is then absent, never empty) and
 * the junk keys the lock ignores ("ignored", issue 12 #6). A success gives the gate back (a singleton
 * job first writes PREFIX/jobs/<job>); a failure of a gate that says so
 * (a rolling deploy) keeps it until the next success of the same event
 * and app, or clear-failed, so a bad release stops at max_parallel
 * instances. A gate whose key went (a new lease: registration granted
 * again) or whose etcd calls failed is taken again after a backoff; its
 * watches have the source's silence deadline (watch_timeout, lock.c).
 *
 * A run waits before its first step, so a newer stack may come meanwhile
 * (revision B, then C, pushed while this instance waits for its slot).
 * When the gate opens, a run planned against the current stack is planned
 * again against the stack current then, and the queued runs of the same
 * event and app (those B and C queued) join it (active.c, active_replan):
 * one deploy, of C, keeping the place in line that the run waited for.
 * Never the old revision first, never the new one twice. The gate is the
 * same (deploy-<app>): held, it opens again at once. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fleet/etcd.h"
#include "fleet/lock.h"
#include "internal.h"
#include "log.h"
#include "source/source.h"
#include "util.h"

#define GATE_NO_LEASE_MS 250 /* how often to look for a lease while there is none */

struct engine_gate {
	struct engine *e;
	struct engine_gate *next;
	enum plan_gate_kind kind;
	char *name;
	unsigned slots;
	char *job;                 /* a singleton job, or NULL */
	bool keep_on_failure;
	enum event event;          /* of the run that took it: its success frees a kept gate */
	char *app;
	long run_id;               /* the run waiting for it or running with it; 0: kept, or going */
	bool opened;               /* that run was let go */
	bool going;                /* released: writing the job's key first */
	struct fleet_lock *lock;
	json_t *holders;           /* as the lock last said, or NULL */
	json_t *ignored;           /* the junk keys it ignores, or NULL */
	bool held;
	unsigned failures;
	uv_timer_t *timer;         /* owned until closed: retries */
	struct etcd_call *call;    /* the job's key, read or written */
};

static struct etcd *gate_etcd(struct engine *e)
{
	return e->source ? source_etcd(e->source) : NULL;
}

static void on_timer_closed(uv_handle_t *h)
{
	free(h);
}

static void gate_free(struct engine_gate *g)
{
	struct engine_gate **p;

	for (p = &g->e->gates; *p; p = &(*p)->next)
		if (*p == g) {
			*p = g->next;
			break;
		}
	if (g->lock)
		fleet_lock_release(g->lock);
	if (g->call)
		etcd_call_cancel(g->call);
	if (g->timer) {
		uv_timer_stop(g->timer);
		uv_close((uv_handle_t *)g->timer, on_timer_closed);
	}
	json_decref(g->holders);
	json_decref(g->ignored);
	free(g->name);
	free(g->job);
	free(g->app);
	free(g);
}

/* The active run, when it is the one waiting for g. */
static struct active *gate_waiter(struct engine_gate *g)
{
	struct active *a = g->e->active;

	return a && g->run_id && a->id == g->run_id && !g->opened ? a : NULL;
}

/* The run's waiting_for: {"lock" or "semaphore": name, "holders": [host,
 * ...] (when known: never empty), "ignored": [key, ...] (when any)}. */
static void gate_set_waiting(struct engine_gate *g)
{
	struct active *a = gate_waiter(g);
	json_t *w;

	if (!a)
		return;
	w = json_pack("{s:s}", g->kind == PLAN_GATE_MUTEX ? "lock" : "semaphore", g->name);
	if (json_array_size(g->holders) > 0)
		json_object_set_new(w, "holders", json_deep_copy(g->holders));
	if (json_array_size(g->ignored) > 0)
		json_object_set_new(w, "ignored", json_deep_copy(g->ignored));
	if (a->rec->waiting_for && json_equal(a->rec->waiting_for, w)) {
		json_decref(w);
		return;
	}
	json_decref(a->rec->waiting_for);
	a->rec->waiting_for = w;
	engine_notify_status(g->e);
	engine_emit(g->e, json_pack("{s:s, s:I, s:O}", "event", "run-waiting", "run", (json_int_t)a->id, "waiting_for",
				    w));
}

static void gate_contend(struct engine_gate *g);

static void on_retry(uv_timer_t *t)
{
	gate_contend(t->data);
}

static void gate_retry(struct engine_gate *g, uint64_t ms)
{
	if (!g->timer) {
		g->timer = xcalloc(1, sizeof(*g->timer));
		(void)uv_timer_init(g->e->loop, g->timer);
		g->timer->data = g;
	}
	(void)uv_timer_start(g->timer, on_retry, ms, 0);
}

/* ---- the job's key: PREFIX/jobs/<job> = {"hostname", "run", "finished"} */

static char *job_key(struct engine_gate *g)
{
	return xasprintf("%s/jobs/%s", etcd_prefix(gate_etcd(g->e)), g->job);
}

/* Read when the lock is ours: a job that finished after this run was
 * asked for is not run again (§9 Singletons). */
static void on_job_read(void *userdata, const struct etcd_result *r)
{
	struct engine_gate *g = userdata;
	struct active *a = gate_waiter(g);
	_cleanup_free_ char *note = NULL;
	json_t *v = NULL;

	g->call = NULL;
	if (!a)
		return;
	if (r->error)
		log_warn("Cannot read the last run of job %s (running it): %s", g->job, str_or_empty(r->message));
	else if (r->n_kvs == 1 && (v = json_loadb(r->kvs[0].value, r->kvs[0].value_len, 0, NULL))) {
		const char *host = json_string_value(json_object_get(v, "hostname"));
		const char *fin = json_string_value(json_object_get(v, "finished"));

		if (host && fin && a->rec->queued && strcmp(fin, a->rec->queued) > 0)
			note = xasprintf("done by %s at %s (run %" JSON_INTEGER_FORMAT ")", host, fin,
					 json_integer_value(json_object_get(v, "run")));
	}
	json_decref(v);
	g->opened = true;
	engine_active_gate_open(g->e, note);
}

static void on_job_written(void *userdata, const struct etcd_result *r)
{
	struct engine_gate *g = userdata;

	g->call = NULL;
	if (r->error)
		log_warn("Cannot record job %s as done in etcd (another instance may run it again): %s", g->job,
			 str_or_empty(r->message));
	gate_free(g);
}

/* ---- the lock */

static void gate_open(struct engine_gate *g)
{
	_cleanup_free_ char *key = NULL;
	struct etcd_range_options o = { 0 };

	if (!gate_waiter(g))
		return;
	if (g->job) {
		key = job_key(g);
		if (etcd_range(gate_etcd(g->e), key, &o, on_job_read, g, &g->call) == 0)
			return;
		g->call = NULL;
	}
	g->opened = true;
	engine_active_gate_open(g->e, NULL);
}

static void on_acquired(void *userdata)
{
	struct engine_gate *g = userdata;

	g->held = true;
	g->failures = 0;
	log_info("Holding %s %s", g->kind == PLAN_GATE_MUTEX ? "lock" : "a slot of semaphore", g->name);
	gate_open(g);
}

static void on_waiting(void *userdata, const json_t *holders, const json_t *ignored)
{
	struct engine_gate *g = userdata;

	/* An empty list (none holds, between two rankings) keeps the last. */
	if (json_array_size(holders) > 0) {
		json_decref(g->holders);
		g->holders = json_deep_copy(holders);
	}
	json_decref(g->ignored);
	g->ignored = ignored ? json_deep_copy(ignored) : NULL;
	gate_set_waiting(g);
}

static void on_error(void *userdata, const char *message)
{
	struct engine_gate *g = userdata;

	log_warn("%s %s: %s; taking it again", g->kind == PLAN_GATE_MUTEX ? "Lock" : "Semaphore", g->name, message);
	fleet_lock_release(g->lock);
	g->lock = NULL;
	g->held = false;
	gate_retry(g, etcd_backoff_ms(++g->failures));
}

static void gate_contend(struct engine_gate *g)
{
	static const struct fleet_lock_callbacks cbs = {
		.on_acquired = on_acquired,
		.on_waiting = on_waiting,
		.on_error = on_error,
	};
	struct etcd *c = gate_etcd(g->e);
	int64_t lease = c ? source_etcd_lease(g->e->source) : 0;
	const char *host = c ? source_etcd_hostname(g->e->source) : NULL;
	int r;

	if (!c)
		return;
	if (lease == 0 || !host)
		return gate_retry(g, GATE_NO_LEASE_MS); /* not registered (yet, or again) */
	r = fleet_lock_acquire(g->e->loop, c, g->kind == PLAN_GATE_MUTEX ? FLEET_LOCK_MUTEX : FLEET_LOCK_SEMAPHORE, g->name,
			       g->slots, lease, (uint64_t)g->e->config->watch_timeout * 1000, host, &cbs, g, &g->lock);
	if (r < 0) {
		g->lock = NULL;
		log_warn("Cannot contend for %s: %s", g->name, strerror(-r));
		gate_retry(g, etcd_backoff_ms(++g->failures));
	}
}

static struct engine_gate *gate_find(struct engine *e, const char *name)
{
	for (struct engine_gate *g = e->gates; g; g = g->next)
		if (!g->going && strcmp(g->name, name) == 0)
			return g;
	return NULL;
}

int engine_gate_take(struct engine *e, struct active *a)
{
	const struct plan_gate *pg = &a->plan.gate;
	struct engine_gate *g;

	if (pg->kind == PLAN_GATE_NONE || !pg->name || !gate_etcd(e))
		return 1; /* no gate, or no etcd: nothing to take (§9) */
	g = gate_find(e, pg->name);
	if (!g) {
		g = xcalloc(1, sizeof(*g));
		g->e = e;
		g->kind = pg->kind;
		g->name = xstrdup(pg->name);
		g->next = e->gates;
		e->gates = g;
	}
	/* A gate kept by a failed run of the same name is this run's now. */
	g->slots = pg->slots;
	g->keep_on_failure = pg->keep_on_failure;
	free(g->job);
	g->job = pg->job ? xstrdup(pg->job) : NULL;
	g->event = a->rec->req.event;
	free(g->app);
	g->app = a->rec->req.app ? xstrdup(a->rec->req.app) : NULL;
	g->run_id = a->id;
	if (g->held && !g->job) {
		/* Held already (kept by a failed run, or this run planned
		 * again after it waited): no wait. */
		g->opened = true;
		return 1;
	}
	g->opened = false;
	gate_set_waiting(g);
	if (g->held)
		gate_open(g);
	else if (!g->lock && !(g->timer && uv_is_active((uv_handle_t *)g->timer)))
		gate_contend(g);
	return 0;
}

void engine_gate_run_done(struct engine *e, const struct run *rec, bool ran_job)
{
	struct engine_gate *g, *next;
	bool success = rec->status == RUN_SUCCESS;

	for (g = e->gates; g; g = next) {
		next = g->next;
		if (g->going)
			continue;
		if (g->run_id == rec->id) {
			g->run_id = 0;
			g->opened = false;
			/* Kept by a failure of a step, not of planning: a run
			 * planned again that failed to plan ran nothing. */
			bool ran = json_array_size(rec->steps) > 0 || rec->steps_omitted > 0;

			if (!success && rec->status == RUN_FAILED && g->keep_on_failure && g->held && ran) {
				log_warn("Run %ld failed: keeping %s's slot until a run of it succeeds or clear-failed",
					 rec->id, g->name);
				continue;
			}
			if (success && ran_job && g->job && g->held) {
				_cleanup_free_ char *key = job_key(g), *d = NULL;
				json_t *v = json_pack("{s:s, s:I, s:s}", "hostname", source_etcd_hostname(e->source), "run",
						      (json_int_t)rec->id, "finished", str_or_empty(rec->finished));

				d = v ? json_dumps(v, JSON_COMPACT) : NULL;
				json_decref(v);

				/* The lock goes once the key is written: the next
				 * holder must see it. */
				g->going = true;
				if (d && etcd_put(gate_etcd(e), key, d, strlen(d), 0, on_job_written, g, &g->call) == 0)
					continue;
				g->call = NULL;
			}
			gate_free(g);
		} else if (success && g->run_id == 0 && g->event == rec->req.event && str_eq(g->app, rec->req.app)) {
			/* A success of what a failed run kept the gate for. */
			gate_free(g);
		}
	}
}

void engine_gates_clear_kept(struct engine *e)
{
	struct engine_gate *g, *next;

	for (g = e->gates; g; g = next) {
		next = g->next;
		if (g->run_id == 0 && !g->going) {
			log_info("clear-failed: giving back %s", g->name);
			gate_free(g);
		}
	}
}

void engine_gates_free(struct engine *e)
{
	while (e->gates)
		gate_free(e->gates);
}

bool engine_gate_held(struct engine *e, const char *name)
{
	if (!gate_etcd(e))
		return false;
	for (const struct engine_gate *g = e->gates; g; g = g->next)
		if (g->kind == PLAN_GATE_MUTEX && g->held && strcmp(g->name, name) == 0)
			return true;
	return false;
}

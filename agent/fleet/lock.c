/* SPDX-License-Identifier: BSD-2-Clause */
/* Mutexes and counting semaphores on etcd (lock.h), in the layout of
 * etcd's client/v3/concurrency (reference/protocols.md, "Election and
 * mutex" and "No counting semaphore"):
 *
 *   1. Txn If CreateRevision(k) == 0 Then Put(k, holder, lease) Else Get(k),
 *      k = PREFIX/<locks|semaphores>/<name>/<lease hex>;
 *   2. range the name's directory, ordered by create_revision: the `slots`
 *      lowest hold;
 *   3. a waiter at rank r (r >= slots) watches, from the range's revision
 *      + 1, only the `slots` keys ranked just ahead of it (ranks r - slots
 *      .. r - 1) for deletion, and its own key. Keys that arrive later rank
 *      behind it, and a key further ahead going does not change who is
 *      just ahead, so when the number ahead drops below `slots` one of the
 *      watched keys went: no wake-up is missed. For a mutex this is
 *      concurrency's waitDeletes (the one key just ahead). Each key is
 *      watched by at most `slots` waiters: no herd. (Watching one key
 *      alone, `slots` places ahead, misses a holder between that key and
 *      us finishing first: with A, B holding and C watching A, B's end
 *      would not wake C.)
 *   4. on a deletion: range again and decide again.
 *
 * A holder watches its own key: when it goes (its lease expired, or
 * someone deleted it) the lock is lost and on_error says so.
 *
 * Every watch has the silence deadline of the source's (silence_ms, the
 * config's watch_timeout): a stream on a half-open connection (a frozen or
 * unplugged etcd, etcd #8899) would otherwise wait for a deletion forever.
 * A watch that ends (silence, error, compaction) ranks again from a new
 * range and watches again from its revision + 1; a range that fails then
 * is tried again after etcd_backoff_ms(), keeping our key and so our place
 * (our lease, not the stream, decides whether we are still in line: a key
 * gone when etcd answers again is on_error). A failure of the first
 * txn or range is on_error at once, and the caller takes the lock again
 * after etcd_backoff_ms() (it has the loop and knows the live lease). */
#include "lock.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etcd.h"
#include "log.h"
#include "util.h"

struct lock_watch {
	struct fleet_lock *l;
	struct etcd_watch *w;    /* NULL once ended */
	bool own;                /* our own key */
};

struct fleet_lock {
	struct etcd *c;          /* borrowed */
	uv_timer_t *kick;        /* owned until closed: a range from the loop */
	enum fleet_lock_kind kind;
	char *dir;               /* "PREFIX/locks/<name>/" */
	char *key;               /* dir + lease hex */
	unsigned slots;
	int64_t lease;
	uint64_t silence_ms;     /* of each watch; 0: none */
	unsigned range_failures; /* in a row, after the first range: retried with backoff */
	bool ranked;             /* a range answered once: later failures are retried */
	char *holder;
	struct fleet_lock_callbacks cbs;
	void *userdata;

	struct etcd_call *call;  /* the txn or range in flight */
	struct lock_watch *watches; /* owned array */
	size_t n_watches;
	bool held;
	bool failed;             /* on_error was given: nothing more happens */
	json_t *holders;         /* as last given to on_waiting */
};

bool fleet_lock_held(const struct fleet_lock *l)
{
	return l && l->held;
}

static void watches_cancel(struct fleet_lock *l)
{
	for (size_t i = 0; i < l->n_watches; i++)
		if (l->watches[i].w)
			etcd_watch_cancel(l->watches[i].w);
	free(l->watches);
	l->watches = NULL;
	l->n_watches = 0;
}

static void lock_fail(struct fleet_lock *l, const char *fmt, ...) _printf_(2, 3);
static void lock_fail(struct fleet_lock *l, const char *fmt, ...)
{
	_cleanup_free_ char *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	if (l->call) {
		etcd_call_cancel(l->call);
		l->call = NULL;
	}
	watches_cancel(l);
	l->held = false;
	l->failed = true;
	if (l->cbs.on_error)
		l->cbs.on_error(l->userdata, msg ? msg : l->key);
}

static void lock_range(struct fleet_lock *l);

static void on_kick(uv_timer_t *t)
{
	struct fleet_lock *l = t->data;

	if (!l->call && !l->failed)
		lock_range(l);
}

/* A range after the first failed: again after a backoff, with the watches
 * (if any) still up, which may rank us sooner. */
static void lock_range_again(struct fleet_lock *l, const char *message)
{
	uint64_t ms = etcd_backoff_ms(++l->range_failures);

	if (l->range_failures == 1)
		log_warn("Lock %s: cannot rank (%s); trying again", l->key, message);
	else
		log_debug("Lock %s: cannot rank (%s); again in %" PRIu64 " ms", l->key, message, ms);
	(void)uv_timer_start(l->kick, on_kick, ms, 0);
}

/* Ranks again from the loop: a watch's callbacks run inside the HTTP
 * client's, where no new request can start. */
static void lock_rerank(struct fleet_lock *l)
{
	if (!l->failed)
		(void)uv_timer_start(l->kick, on_kick, 0, 0);
}

/* ---- watches */

static void on_watch_created(void *userdata, int64_t revision)
{
}

static void on_watch_events(void *userdata, int64_t revision, const struct etcd_event *ev, size_t n)
{
	struct lock_watch *lw = userdata;
	struct fleet_lock *l = lw->l;

	if (l->call || l->failed)
		return; /* a range is on its way: it decides */
	for (size_t i = 0; i < n; i++) {
		/* Our key or one ahead went: rank again (the range finds
		 * ours gone). The watches end when the range answers, not
		 * from inside their own callback. */
		if (ev[i].type == ETCD_EVENT_DELETE)
			return lock_rerank(l);
	}
}

/* The watch's handle is freed by the client after these return. */
static void on_watch_compacted(void *userdata, int64_t compact_revision)
{
	struct lock_watch *lw = userdata;

	lw->w = NULL;
	lock_rerank(lw->l);
}

static void on_watch_error(void *userdata, const char *message)
{
	struct lock_watch *lw = userdata;

	lw->w = NULL;
	/* A stream that ended (often its silence deadline: etcd's progress
	 * interval is longer) may have missed a deletion: look again. */
	log_debug("Lock %s: a watch ended (%s); ranking again", lw->l->key, message);
	if (!lw->l->call && !uv_is_active((uv_handle_t *)lw->l->kick))
		lock_rerank(lw->l);
}

static const struct etcd_watch_callbacks watch_cbs = {
	.on_created = on_watch_created,
	.on_events = on_watch_events,
	.on_compacted = on_watch_compacted,
	.on_error = on_watch_error,
};

static int watch_keys(struct fleet_lock *l, const struct etcd_kv **ahead, size_t n_ahead, int64_t revision)
{
	l->watches = xcalloc(n_ahead + 1, sizeof(*l->watches));
	l->n_watches = n_ahead + 1;
	for (size_t i = 0; i <= n_ahead; i++) {
		struct lock_watch *lw = &l->watches[i];
		const char *key = i < n_ahead ? ahead[i]->key : l->key;
		int r;

		lw->l = l;
		lw->own = i == n_ahead;
		r = etcd_watch_start(l->c, key, false, revision + 1, l->silence_ms, &watch_cbs, lw, &lw->w);
		if (r < 0) {
			lw->w = NULL;
			return r;
		}
	}
	return 0;
}

/* ---- ranking */

static int kv_cmp_create(const void *a, const void *b)
{
	const struct etcd_kv *x = *(const struct etcd_kv *const *)a, *y = *(const struct etcd_kv *const *)b;

	return x->create_revision < y->create_revision ? -1 : x->create_revision > y->create_revision;
}

static void report_waiting(struct fleet_lock *l, const struct etcd_kv *const *sorted, size_t n)
{
	json_t *holders = json_array();

	for (size_t i = 0; i < n && i < l->slots; i++)
		json_array_append_new(holders, json_stringn(sorted[i]->value, sorted[i]->value_len));
	if (l->holders && json_equal(l->holders, holders)) {
		json_decref(holders);
		return;
	}
	json_decref(l->holders);
	l->holders = holders;
	if (l->cbs.on_waiting)
		l->cbs.on_waiting(l->userdata, holders);
}

static void on_range(void *userdata, const struct etcd_result *r)
{
	struct fleet_lock *l = userdata;
	_cleanup_free_ const struct etcd_kv **sorted = NULL;
	size_t rank = SIZE_MAX, first;
	int rr;

	l->call = NULL;
	if (r->error && l->ranked)
		return lock_range_again(l, r->message ? r->message : strerror(-r->error));
	if (r->error)
		return lock_fail(l, "%s: %s", l->dir, r->message ? r->message : strerror(-r->error));
	l->ranked = true;
	l->range_failures = 0;
	watches_cancel(l);
	sorted = xcalloc(r->n_kvs + 1, sizeof(*sorted));
	for (size_t i = 0; i < r->n_kvs; i++)
		sorted[i] = &r->kvs[i];
	qsort(sorted, r->n_kvs, sizeof(*sorted), kv_cmp_create);
	for (size_t i = 0; i < r->n_kvs; i++)
		if (strcmp(sorted[i]->key, l->key) == 0)
			rank = i;
	if (rank == SIZE_MAX)
		return lock_fail(l, "%s: our key is gone (its lease expired)", l->key);
	if (rank < l->slots) {
		bool was = l->held;

		l->held = true;
		rr = watch_keys(l, NULL, 0, r->revision);
		if (rr < 0)
			return lock_fail(l, "%s: cannot watch it: %s", l->key, strerror(-rr));
		if (!was && l->cbs.on_acquired)
			l->cbs.on_acquired(l->userdata);
		return;
	}
	/* Waiting: the `slots` keys just ahead, and our own; then say so
	 * (last: the callback may release l). */
	first = rank - l->slots;
	rr = watch_keys(l, sorted + first, l->slots, r->revision);
	if (rr < 0)
		return lock_fail(l, "%s: cannot watch the keys ahead: %s", l->key, strerror(-rr));
	report_waiting(l, sorted, r->n_kvs);
}

static void lock_range(struct fleet_lock *l)
{
	struct etcd_range_options o = { .prefix = true };
	int r;

	r = etcd_range(l->c, l->dir, &o, on_range, l, &l->call);
	if (r < 0) {
		l->call = NULL;
		lock_fail(l, "%s: cannot range: %s", l->dir, strerror(-r));
	}
}

static void on_txn(void *userdata, const struct etcd_result *r)
{
	struct fleet_lock *l = userdata;

	l->call = NULL;
	if (r->error)
		return lock_fail(l, "%s: %s", l->key, r->message ? r->message : strerror(-r->error));
	if (!r->succeeded)
		log_debug("Lock key %s existed already (the same lease contends again)", l->key);
	lock_range(l);
}

static void on_kick_closed(uv_handle_t *h)
{
	free(h);
}

int fleet_lock_acquire(uv_loop_t *loop, struct etcd *c, enum fleet_lock_kind kind, const char *name, unsigned slots,
		       int64_t lease, uint64_t silence_ms, const char *holder, const struct fleet_lock_callbacks *cbs,
		       void *userdata, struct fleet_lock **ret)
{
	struct fleet_lock *l;
	int r;

	if (!loop || !c || !name || !name_is_valid(name) || !holder || lease == 0 || (kind == FLEET_LOCK_SEMAPHORE && slots < 1))
		return -EINVAL;
	l = xcalloc(1, sizeof(*l));
	l->c = c;
	l->kind = kind;
	l->slots = kind == FLEET_LOCK_MUTEX ? 1 : slots;
	l->lease = lease;
	l->silence_ms = silence_ms;
	l->holder = xstrdup(holder);
	l->cbs = *cbs;
	l->userdata = userdata;
	l->dir = xasprintf("%s/%s/%s/", etcd_prefix(c), kind == FLEET_LOCK_MUTEX ? "locks" : "semaphores", name);
	l->key = xasprintf("%s%" PRIx64, l->dir, (uint64_t)lease);
	l->kick = xcalloc(1, sizeof(*l->kick));
	(void)uv_timer_init(loop, l->kick);
	l->kick->data = l;

	struct etcd_compare cmp = { .target = ETCD_CMP_CREATE, .result = ETCD_CMP_EQUAL, .key = l->key, .number = 0 };
	struct etcd_op put = {
		.type = ETCD_OP_PUT, .key = l->key, .value = l->holder, .value_len = strlen(l->holder), .lease = lease,
	};
	struct etcd_op get = { .type = ETCD_OP_RANGE, .key = l->key };
	r = etcd_txn(c, &cmp, 1, &put, 1, &get, 1, on_txn, l, &l->call);
	if (r < 0) {
		uv_close((uv_handle_t *)l->kick, on_kick_closed);
		free(l->dir);
		free(l->key);
		free(l->holder);
		free(l);
		return r;
	}
	*ret = l;
	return 0;
}

/* No userdata: a client freed first (a stop) drops the call unanswered. */
static void on_deleted(void *userdata, const struct etcd_result *r)
{
	if (r->error)
		log_warn("Could not delete a lock key (it goes with its lease): %s",
			 r->message ? r->message : strerror(-r->error));
}

void fleet_lock_release(struct fleet_lock *l)
{
	int r;

	if (!l)
		return;
	if (l->call)
		etcd_call_cancel(l->call);
	watches_cancel(l);
	uv_timer_stop(l->kick);
	uv_close((uv_handle_t *)l->kick, on_kick_closed);
	/* Our key, whether it holds or waits: the next in line sees it go. */
	r = etcd_delete(l->c, l->key, false, on_deleted, NULL, NULL);
	if (r < 0)
		log_warn("Could not delete the lock key %s (it goes with its lease): %s", l->key, strerror(-r));
	json_decref(l->holders);
	free(l->dir);
	free(l->key);
	free(l->holder);
	free(l);
}

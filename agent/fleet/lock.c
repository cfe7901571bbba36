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
 * A waiter also watches the holders' keys that are not among those just
 * ahead, so that on_waiting names the holders of now, not of when it
 * began waiting (issue 12, B4). A holder's going is no reason to range
 * again (every waiter watches it: that would be a herd of ranges): the keys
 * ahead of us are all known from the last range (later keys rank behind)
 * and only go, so the new holders are the first `slots` of those left,
 * and a new holder's key is watched from the range's revision + 1 (a
 * deletion since then is not missed).
 *
 * Only keys PREFIX/<kind>/<name>/<lease hex> whose lease is that lease
 * count. A key whose last part is not a lease in hex, put without a lease,
 * or under another lease than its name says (junk an operator or a
 * foreign client left) would hold a slot forever, as no lease takes it
 * away: it is ignored for ranking, logged once (the key, escaped) and
 * given to on_waiting as ignored (issue 12, #6).
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

enum lock_watch_role { WATCH_OWN, WATCH_AHEAD, WATCH_HOLDER };

struct lock_watch {
	struct fleet_lock *l;
	struct etcd_watch *w;    /* NULL once ended */
	enum lock_watch_role role;
	char *key;
	bool gone;               /* a holder's key, deleted: the holders are given again */
};

/* A key ranked ahead of ours, from the last range. */
struct lock_key {
	char *key;
	char *value;
	size_t value_len;
};

#define LOCK_IGNORED_MAX 32 /* junk keys named in on_waiting (all are logged) */

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
	struct lock_watch **watches; /* owned array of owned watches */
	size_t n_watches;
	struct lock_key *ahead;  /* the valid keys ahead of ours, by create_revision */
	size_t n_ahead;
	int64_t revision;        /* of the last range */
	bool rerank;             /* the kick ranges again */
	bool refresh;            /* the kick gives the holders again (a holder went) */
	bool held;
	bool failed;             /* on_error was given: nothing more happens */
	json_t *holders;         /* as last given to on_waiting */
	json_t *ignored;         /* the junk keys (escaped) as last given to on_waiting */
	json_t *warned;          /* the junk keys logged already: key -> true */
	bool ignored_changed;    /* since on_waiting was last given */
};

bool fleet_lock_held(const struct fleet_lock *l)
{
	return l && l->held;
}

static void watch_free(struct lock_watch *lw)
{
	if (lw->w)
		etcd_watch_cancel(lw->w);
	free(lw->key);
	free(lw);
}

static void watches_cancel(struct fleet_lock *l)
{
	for (size_t i = 0; i < l->n_watches; i++)
		watch_free(l->watches[i]);
	free(l->watches);
	l->watches = NULL;
	l->n_watches = 0;
}

static void ahead_clear(struct fleet_lock *l)
{
	for (size_t i = 0; i < l->n_ahead; i++) {
		free(l->ahead[i].key);
		free(l->ahead[i].value);
	}
	free(l->ahead);
	l->ahead = NULL;
	l->n_ahead = 0;
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
static void refresh_holders(struct fleet_lock *l);

static void on_kick(uv_timer_t *t)
{
	struct fleet_lock *l = t->data;

	if (l->call || l->failed)
		return;
	if (l->rerank) {
		l->rerank = false;
		lock_range(l);
	} else if (l->refresh) {
		l->refresh = false;
		refresh_holders(l);
	}
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
	l->rerank = true;
	(void)uv_timer_start(l->kick, on_kick, ms, 0);
}

/* Ranks again from the loop: a watch's callbacks run inside the HTTP
 * client's, where no new request can start. */
static void lock_rerank(struct fleet_lock *l)
{
	if (l->failed)
		return;
	l->rerank = true;
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
		if (ev[i].type != ETCD_EVENT_DELETE)
			continue;
		/* A holder went (not one just ahead): the holders are given
		 * again from the loop, with no range. */
		if (lw->role == WATCH_HOLDER) {
			lw->gone = true;
			l->refresh = true;
			if (!uv_is_active((uv_handle_t *)l->kick))
				(void)uv_timer_start(l->kick, on_kick, 0, 0);
			return;
		}
		/* Our key or one ahead went: rank again (the range finds
		 * ours gone). The watches end when the range answers, not
		 * from inside their own callback. */
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

static bool watching(const struct fleet_lock *l, const char *key)
{
	for (size_t i = 0; i < l->n_watches; i++)
		if (!l->watches[i]->gone && strcmp(l->watches[i]->key, key) == 0)
			return true;
	return false;
}

/* Watches key from the last range's revision + 1. */
static int watch_key(struct fleet_lock *l, const char *key, enum lock_watch_role role)
{
	struct lock_watch *lw = xcalloc(1, sizeof(*lw));
	int r;

	lw->l = l;
	lw->role = role;
	lw->key = xstrdup(key);
	l->watches = xrealloc(l->watches, (l->n_watches + 1) * sizeof(*l->watches));
	l->watches[l->n_watches++] = lw;
	r = etcd_watch_start(l->c, key, false, l->revision + 1, l->silence_ms, &watch_cbs, lw, &lw->w);
	if (r < 0)
		lw->w = NULL;
	return r;
}

/* Our key; when waiting, the `slots` keys just ahead (ranks n_ahead -
 * slots ..) and the holders' (ranks 0 .. slots - 1) not among them. */
static int watch_keys(struct fleet_lock *l)
{
	size_t first = l->n_ahead - (l->n_ahead < l->slots ? l->n_ahead : l->slots);
	int r = 0;

	for (size_t i = first; r == 0 && i < l->n_ahead; i++)
		r = watch_key(l, l->ahead[i].key, WATCH_AHEAD);
	for (size_t i = 0; r == 0 && i < l->slots && i < first; i++)
		r = watch_key(l, l->ahead[i].key, WATCH_HOLDER);
	return r < 0 ? r : watch_key(l, l->key, WATCH_OWN);
}

/* ---- ranking */

static int kv_cmp_create(const void *a, const void *b)
{
	const struct etcd_kv *x = *(const struct etcd_kv *const *)a, *y = *(const struct etcd_kv *const *)b;

	return x->create_revision < y->create_revision ? -1 : x->create_revision > y->create_revision;
}

/* Gives the holders (the first `slots` keys ahead) and the junk keys to
 * on_waiting when either changed. Last: the callback may release l. */
static void report_waiting(struct fleet_lock *l)
{
	json_t *holders = json_array();

	for (size_t i = 0; i < l->n_ahead && i < l->slots; i++) {
		json_t *h = json_stringn(l->ahead[i].value, l->ahead[i].value_len);

		json_array_append_new(holders, h ? h : json_string("(not UTF-8)"));
	}
	if (l->holders && json_equal(l->holders, holders) && !l->ignored_changed) {
		json_decref(holders);
		return;
	}
	json_decref(l->holders);
	l->holders = holders;
	l->ignored_changed = false;
	if (l->cbs.on_waiting)
		l->cbs.on_waiting(l->userdata, holders, l->ignored);
}

/* A holder's key went (a watch said so): the holders are the first
 * `slots` of the keys ahead that are left; the new ones are watched. */
static void refresh_holders(struct fleet_lock *l)
{
	size_t n = 0;
	int r = 0;

	for (size_t i = 0; i < l->n_watches; i++) {
		struct lock_watch *lw = l->watches[i];

		if (!lw->gone) {
			l->watches[n++] = lw;
			continue;
		}
		for (size_t j = 0; j < l->n_ahead; j++)
			if (strcmp(l->ahead[j].key, lw->key) == 0) {
				free(l->ahead[j].key);
				free(l->ahead[j].value);
				memmove(l->ahead + j, l->ahead + j + 1, (l->n_ahead - j - 1) * sizeof(*l->ahead));
				l->n_ahead--;
				break;
			}
		watch_free(lw);
	}
	l->n_watches = n;
	for (size_t i = 0; r == 0 && i < l->slots && i < l->n_ahead; i++)
		if (!watching(l, l->ahead[i].key))
			r = watch_key(l, l->ahead[i].key, WATCH_HOLDER);
	if (r < 0)
		return lock_fail(l, "%s: cannot watch a holder's key: %s", l->key, strerror(-r));
	report_waiting(l);
}

/* Whether kv is a contender's key: PREFIX/<kind>/<name>/<lease hex>, under
 * that lease. Ours always is. */
static bool key_is_valid(const struct fleet_lock *l, const struct etcd_kv *kv)
{
	size_t dl = strlen(l->dir);
	const char *tail = kv->key + dl;
	char *end = NULL;
	unsigned long long v;

	if (strcmp(kv->key, l->key) == 0)
		return true;
	if (kv->key_len <= dl || kv->key_len - dl > 16 || strlen(kv->key) != kv->key_len)
		return false;
	for (const char *p = tail; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	errno = 0;
	v = strtoull(tail, &end, 16);
	return errno == 0 && end && *end == '\0' && v != 0 && kv->lease != 0 && (uint64_t)kv->lease == v;
}

/* A junk key: logged once, and named in on_waiting (a few). */
static void note_ignored(struct fleet_lock *l, json_t *ignored, const struct etcd_kv *kv)
{
	_cleanup_free_ char *esc = str_escape_ctl(kv->key);
	json_t *j = json_string(esc);

	if (!j)
		j = json_string("(not UTF-8)");
	if (!json_object_get(l->warned, json_string_value(j))) {
		log_warn("Lock %s: ignoring key %s (lease %" PRId64 "): not a contender's key (its last part must be "
			 "the hex id of the lease it is under); it holds nothing",
			 l->dir, esc, kv->lease);
		if (json_object_size(l->warned) < 1024)
			json_object_set_new(l->warned, json_string_value(j), json_true());
	}
	if (json_array_size(ignored) < LOCK_IGNORED_MAX)
		json_array_append(ignored, j);
	json_decref(j);
}

static void on_range(void *userdata, const struct etcd_result *r)
{
	struct fleet_lock *l = userdata;
	_cleanup_free_ const struct etcd_kv **sorted = NULL;
	size_t rank = SIZE_MAX, n = 0;
	json_t *ignored;
	int rr;

	l->call = NULL;
	if (r->error && l->ranked)
		return lock_range_again(l, r->message ? r->message : strerror(-r->error));
	if (r->error)
		return lock_fail(l, "%s: %s", l->dir, r->message ? r->message : strerror(-r->error));
	l->ranked = true;
	l->range_failures = 0;
	l->refresh = false;
	l->revision = r->revision;
	watches_cancel(l);
	ahead_clear(l);
	ignored = json_array();
	sorted = xcalloc(r->n_kvs + 1, sizeof(*sorted));
	for (size_t i = 0; i < r->n_kvs; i++) {
		if (key_is_valid(l, &r->kvs[i]))
			sorted[n++] = &r->kvs[i];
		else
			note_ignored(l, ignored, &r->kvs[i]);
	}
	if (!l->ignored || !json_equal(l->ignored, ignored))
		l->ignored_changed = true;
	json_decref(l->ignored);
	l->ignored = ignored;
	qsort(sorted, n, sizeof(*sorted), kv_cmp_create);
	for (size_t i = 0; i < n; i++)
		if (strcmp(sorted[i]->key, l->key) == 0)
			rank = i;
	if (rank == SIZE_MAX)
		return lock_fail(l, "%s: our key is gone (its lease expired)", l->key);
	l->ahead = xcalloc(rank + 1, sizeof(*l->ahead));
	for (size_t i = 0; i < rank; i++) {
		l->ahead[i].key = xstrdup(sorted[i]->key);
		l->ahead[i].value = xstrndup(sorted[i]->value, sorted[i]->value_len);
		l->ahead[i].value_len = sorted[i]->value_len;
	}
	l->n_ahead = rank;
	if (rank < l->slots) {
		bool was = l->held;

		l->held = true;
		rr = watch_keys(l);
		if (rr < 0)
			return lock_fail(l, "%s: cannot watch it: %s", l->key, strerror(-rr));
		if (!was && l->cbs.on_acquired)
			l->cbs.on_acquired(l->userdata);
		return;
	}
	/* Waiting: the `slots` keys just ahead, the holders and our own;
	 * then say so (last: the callback may release l). */
	rr = watch_keys(l);
	if (rr < 0)
		return lock_fail(l, "%s: cannot watch the keys ahead: %s", l->key, strerror(-rr));
	report_waiting(l);
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
	l->warned = json_object();

	struct etcd_compare cmp = { .target = ETCD_CMP_CREATE, .result = ETCD_CMP_EQUAL, .key = l->key, .number = 0 };
	struct etcd_op put = {
		.type = ETCD_OP_PUT, .key = l->key, .value = l->holder, .value_len = strlen(l->holder), .lease = lease,
	};
	struct etcd_op get = { .type = ETCD_OP_RANGE, .key = l->key };
	r = etcd_txn(c, &cmp, 1, &put, 1, &get, 1, on_txn, l, &l->call);
	if (r < 0) {
		uv_close((uv_handle_t *)l->kick, on_kick_closed);
		json_decref(l->warned);
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
	json_decref(l->ignored);
	json_decref(l->warned);
	ahead_clear(l);
	free(l->dir);
	free(l->key);
	free(l->holder);
	free(l);
}

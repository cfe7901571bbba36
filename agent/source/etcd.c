/* SPDX-License-Identifier: BSD-2-Clause */
/* etcd://HOST:PORT[,HOST:PORT...]/PREFIX and etcd+https://: the stack and
 * the live membership from etcd v3 (design.md §9).
 *
 * One range of "PREFIX/" at start, then one watch of the whole prefix from
 * the range's header.revision + 1 with progress_notify. What is kept:
 * PREFIX/stack (parsed, the last good one, and the key's mod_revision) and
 * every PREFIX/instances/<host> value; other keys under the prefix (locks/,
 * semaphores/, jobs/) only advance the revision. After the messages of one
 * loop iteration the effective stack (stack/effective.c) is built and
 * delivered as compact JSON with sorted keys, only when its text changed:
 * an agent's own state in its registration is no membership, so it causes
 * no run anywhere.
 *
 * Errors keep the last good stack in force and show in status:
 *   - PREFIX/stack missing, over 16 MiB or not JSON: named, nothing
 *     delivered until a good one comes (membership keeps flowing on the
 *     last good one);
 *   - a registration left out of the membership (over REG_VALUE_MAX, not
 *     a JSON object, an invalid hostname or field) or naming a layer the
 *     stack lacks: named by its key in status.source.warnings (one text
 *     each) and logged when the list changes; it is no error of the source;
 *   - etcd unreachable: the client's message, retried with capped,
 *     jittered backoff (etcd_backoff_ms). When it answers again the same
 *     document is the same text: the engine finds nothing new, so nothing
 *     runs twice.
 * A compacted start revision (on_compacted) re-ranges: the range is the
 * whole state, so nothing is missed. A stream silent for watch_timeout
 * seconds is dropped by the client (half-open connections hang, etcd
 * #8899) and re-opened from the last header.revision + 1; the first
 * re-open of a stream that was up is immediate and not an error for
 * status (an idle stream meets the deadline in normal operation when
 * etcd's progress interval is longer); a stream that fails again is.
 *
 * The registration (fleet/registration.c) is made after the first range,
 * so that the hostname and layers can come from the static members:
 * hostname = agentd.conf's instance, else gethostname(), or its first label
 * when only that is a static member (design.md §3 Identity). On stop the
 * lease is not revoked: a restart within lease_ttl changes nothing for the
 * other members. It has its own client (the same endpoints), whose calls
 * time out within lease_ttl/3 (at least 500 ms): a keepalive stuck on a
 * frozen etcd must fail in time for the next one to keep the lease.
 *
 * Keys, hostnames and messages from etcd are escaped (str_escape_ctl)
 * before they reach a log line or status text: a key with a newline must
 * not forge journal lines. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fleet/etcd.h"
#include "fleet/registration.h"
#include "log.h"
#include "proto.h"
#include "source.h"
#include "source/etcd_int.h"
#include "stack/effective.h"
#include "stack/stack.h"
#include "util.h"

static void es_range(struct etcd_source *es);
static void es_fail(struct etcd_source *es, const char *msg);
static const struct etcd_watch_callbacks watch_cbs;

/* --------------------------------------------------------- the values */

static bool es_key_is(const struct etcd_source *es, const char *key, const char *sub, size_t *ret_off)
{
	size_t n = strlen(es->dir), m = strlen(sub);

	if (strncmp(key, es->dir, n) != 0 || strncmp(key + n, sub, m) != 0)
		return false;
	*ret_off = n + m;
	return true;
}

static void es_set_stack(struct etcd_source *es, const struct etcd_kv *kv)
{
	json_error_t jerr;
	json_t *j;
	int r;

	es->stack_present = true;
	es->stack_mod_revision = kv->mod_revision;
	free(es->stack_error);
	es->stack_error = NULL;
	if (kv->value_len > STACK_MAX_BYTES) {
		es->stack_error = xasprintf("%s: a value of %zu bytes, over the %d bytes a stack may have; keeping the "
					    "last good stack",
					    es->stack_key, kv->value_len, STACK_MAX_BYTES);
		return;
	}
	r = json_bounds_check(kv->value, kv->value_len, STACK_MAX_ELEMENTS, STACK_MAX_DEPTH);
	if (r < 0) {
		es->stack_error = xasprintf("%s: %s; keeping the last good stack", es->stack_key,
					    r == -E2BIG ? "more JSON elements than a stack may have"
							: "JSON nested deeper than a stack may be");
		return;
	}
	j = json_loadb(kv->value, kv->value_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!j || !json_is_object(j)) {
		es->stack_error = j ? xasprintf("%s: not a JSON object; keeping the last good stack", es->stack_key)
				    : xasprintf("%s: not JSON (line %d, column %d: %s); keeping the last good stack",
						es->stack_key, jerr.line, jerr.column, jerr.text);
		json_decref(j);
		return;
	}
	json_decref(es->stack);
	es->stack = j;
}

/* A JSON string of what printf makes; keys are raw bytes from etcd, so
 * invalid UTF-8 becomes U+FFFD. */
static json_t *lossy_printf(const char *fmt, ...) _printf_(1, 2);
static json_t *lossy_printf(const char *fmt, ...)
{
	_cleanup_free_ char *t = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&t, fmt, ap) < 0)
		t = NULL;
	va_end(ap);
	return t ? proto_string_lossy(t, strlen(t)) : json_string("?");
}

/* Whether registrations a and b are equal but for their "agent" member:
 * an agent's state changing is no membership change (stack_effective
 * never copies it), so it need not rebuild anything. In a fleet every
 * agent sees every other's state updates: skipping them keeps the cost of
 * one update O(1) per watcher instead of a rebuild of the whole stack. */
static bool es_same_but_agent(const json_t *a, const json_t *b)
{
	const char *k;
	json_t *v;
	size_t na = json_object_size(a) - (json_object_get(a, "agent") ? 1 : 0);
	size_t nb = json_object_size(b) - (json_object_get(b, "agent") ? 1 : 0);

	if (na != nb)
		return false;
	json_object_foreach((json_t *)a, k, v) {
		if (strcmp(k, "agent") != 0 && !json_equal(v, json_object_get(b, k)))
			return false;
	}
	return true;
}

/* Returns whether the effective stack may have changed. */
static bool es_set_registration(struct etcd_source *es, const char *host, const struct etcd_kv *kv)
{
	json_t *j = NULL, *old;

	if (kv->value_len <= REG_VALUE_MAX)
		j = json_loadb(kv->value, kv->value_len, JSON_REJECT_DUPLICATES, NULL);
	if (!json_is_object(j)) {
		_cleanup_free_ char *ekey = str_escape_ctl(kv->key);
		json_object_set_new(
			es->bad_regs, host,
			kv->value_len > REG_VALUE_MAX
				? lossy_printf("%s: a value of %zu bytes, over %d: not a registration; left out",
							    ekey, kv->value_len, REG_VALUE_MAX)
				: lossy_printf("%s: not a JSON object; left out", ekey));
		json_object_del(es->regs, host);
		json_decref(j);
		return true;
	}
	old = json_object_get(es->regs, host);
	if (!json_object_get(es->bad_regs, host) &&
	    ((old && es_same_but_agent(old, j)) || stack_registration_same_effect(es->stack, host, old, j))) {
		json_object_set_new(es->regs, host, j);
		return false;
	}
	json_object_del(es->bad_regs, host);
	json_object_set_new(es->regs, host, j);
	return true;
}

/* A PUT (kv whole) or a DELETE (kv->key only). Returns whether the
 * effective stack may have changed. */
static bool es_apply(struct etcd_source *es, const struct etcd_kv *kv, bool deleted)
{
	size_t off;

	if (strncmp(kv->key, es->dir, strlen(es->dir)) != 0) {
		_cleanup_free_ char *ekey = str_escape_ctl(kv->key);
		log_warn("etcd %s: key \"%.200s\" is outside the prefix %s; ignored", etcd_endpoint(es->c), ekey,
			 es->dir);
		return false;
	}
	if (strcmp(kv->key, es->stack_key) == 0) {
		if (!deleted) {
			es_set_stack(es, kv);
			return true;
		}
		es->stack_present = false;
		es->stack_mod_revision = 0;
		free(es->stack_error);
		es->stack_error = NULL;
		return true;
	} else if (es_key_is(es, kv->key, "instances/", &off) && kv->key[off]) {
		/* Any name, "a/b" or "a#b" too: stack_effective leaves it out
		 * and status names it. */
		const char *host = kv->key + off;
		bool same;

		if (!deleted)
			return es_set_registration(es, host, kv);
		/* A static member's registration gone (its lease lost) leaves
		 * the member as the stack names it: often no change at all. */
		same = json_object_get(es->regs, host) && !json_object_get(es->bad_regs, host) &&
		       stack_registration_same_effect(es->stack, host, json_object_get(es->regs, host), NULL);
		json_object_del(es->regs, host);
		json_object_del(es->bad_regs, host);
		return !same;
	}
	/* Anything else under the prefix (locks/, semaphores/, jobs/) is
	 * another part of the fleet's business. */
	return false;
}

/* ------------------------------------------------------------- delivery */

/* The errors the engine should show, malloc'd, NULL when none. */
static char *es_errors(const struct etcd_source *es)
{
	struct buf b;

	buf_init(&b);
	if (!es->stack_present)
		buf_printf(&b, "%s: no such key%s", es->stack_key, es->stack ? "; keeping the last good stack" : "");
	else if (es->stack_error)
		buf_puts(&b, es->stack_error);
	if (!b.len) {
		buf_free(&b);
		return NULL;
	}
	return buf_steal(&b);
}

static void es_fail(struct etcd_source *es, const char *msg)
{
	if (!es->s)
		return;
	if (!es->failed || strcmp(es->failed, msg) != 0) {
		free(es->failed);
		es->failed = xstrdup(msg);
	}
	source_fail(es->s, "%s", msg);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The text naming one left-out registration, by its key (escaped). */
static void es_warn_add(json_t *list, size_t *n, const char *text)
{
	if ((*n)++ < REG_WARNINGS_SHOWN)
		json_array_append_new(list, proto_string_lossy(text, strlen(text)));
}

/* status.source.warnings: every registration left out of the membership,
 * or naming a layer the stack lacks, in hostname order; logged (one line
 * each) when the list changes. */
static void es_warnings(struct etcd_source *es)
{
	json_t *list = json_array(), *v;
	const char **hosts = xcalloc(json_object_size(es->regs) + json_object_size(es->bad_regs) + 1, sizeof(*hosts));
	const char *host;
	size_t n = 0, k = 0, i;

	json_object_foreach(es->bad_regs, host, v)
		hosts[k++] = host;
	json_object_foreach(es->regs, host, v)
		hosts[k++] = host;
	qsort(hosts, k, sizeof(*hosts), cmp_str);
	for (i = 0; i < k; i++) {
		const json_t *bad = json_object_get(es->bad_regs, hosts[i]);
		_cleanup_free_ char *why = NULL, *ekey = NULL, *text = NULL;
		bool left_out;

		if (bad) {
			es_warn_add(list, &n, json_string_value(bad));
			continue;
		}
		why = stack_registration_problem(es->stack, hosts[i], json_object_get(es->regs, hosts[i]), &left_out);
		if (!why)
			continue;
		ekey = xasprintf("%sinstances/%s", es->dir, hosts[i]);
		text = str_escape_ctl(ekey);
		free(ekey);
		ekey = xasprintf("%s: %s%s", text, why, left_out ? "; left out" : "");
		es_warn_add(list, &n, ekey);
	}
	free(hosts);
	if (n > REG_WARNINGS_SHOWN) {
		_cleanup_free_ char *more = xasprintf("and %zu more registrations left out or incomplete",
						      n - REG_WARNINGS_SHOWN);
		json_array_append_new(list, json_string(more));
	}
	if (es->warnings && json_equal(list, es->warnings)) {
		json_decref(list);
		return;
	}
	json_array_foreach(list, i, v) {
		bool known = false;
		for (size_t j = 0; !known && j < json_array_size(es->warnings); j++)
			known = json_equal(v, json_array_get(es->warnings, j));
		if (!known)
			log_warn("etcd %s: %s", es->dir, json_string_value(v));
	}
	json_decref(es->warnings);
	es->warnings = list;
}

static void es_build_now(struct etcd_source *es)
{
	_cleanup_free_ char *errors = es_errors(es), *text = NULL;
	json_t *eff;
	uint64_t h;
	size_t len;
	bool changed;

	es_register_update(es);
	if (!es->stack) {
		es_fail(es, errors ? errors : "no stack");
		return;
	}
	eff = stack_effective(es->stack, es->regs, NULL);
	es_warnings(es);
	text = json_dumps(eff, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(eff);
	if (!text)
		return;
	len = strlen(text);
	h = hash_fnv1a64(text, len, HASH_FNV_SEED);
	changed = !es->delivered || h != es->delivered_hash || len != es->delivered_len;
	if (changed || (es->failed && !errors && !source_unchanged(es->s))) {
		es->delivered = true;
		es->delivered_hash = h;
		es->delivered_len = len;
		free(es->failed);
		es->failed = NULL;
		source_deliver(es->s, text, len);
		if (!es->s)
			return;
	} else if (es->failed && !errors) {
		/* source_unchanged() cleared the engine's error. */
		free(es->failed);
		es->failed = NULL;
	}
	if (errors && (!es->failed || strcmp(errors, es->failed) != 0))
		es_fail(es, errors);
}

static void on_build(uv_timer_t *t)
{
	struct etcd_source *es = t->data;

	if (es->s)
		es_build_now(es);
}

static void es_build_soon(struct etcd_source *es)
{
	if (!uv_is_active((uv_handle_t *)&es->build))
		(void)uv_timer_start(&es->build, on_build, 0, 0);
}

/* ---------------------------------------------------------------- watch */

static void cb_watch_created(void *userdata, int64_t revision)
{
	struct etcd_source *es = userdata;

	es->watch_created = true;
	es->last_message_usec = time_monotonic_usec();
	es->failures = 0;
	if (revision > es->revision)
		es->revision = revision;
	/* Back after an error: the engine hears that the source answers. */
	if (es->failed)
		es_build_soon(es);
}

static void cb_watch_events(void *userdata, int64_t revision, const struct etcd_event *ev, size_t n)
{
	struct etcd_source *es = userdata;

	bool changed = false;

	es->last_message_usec = time_monotonic_usec();
	for (size_t i = 0; i < n; i++)
		changed |= es_apply(es, &ev[i].kv, ev[i].type == ETCD_EVENT_DELETE);
	if (revision > es->revision)
		es->revision = revision;
	if (changed)
		es_build_soon(es);
}

static void es_watch(struct etcd_source *es)
{
	uint64_t silence = (uint64_t)es->s->config->watch_timeout * 1000;
	int r;

	es->watch_created = false;
	r = etcd_watch_start(es->c, es->dir, true, es->revision + 1, silence, &watch_cbs, es, &es->watch);
	if (r < 0) {
		es->watch = NULL;
		es_fail(es, "cannot watch etcd");
	}
}

static void on_retry(uv_timer_t *t)
{
	struct etcd_source *es = t->data;

	if (!es->s)
		return;
	if (es->revision == 0)
		es_range(es);
	else
		es_watch(es);
}

static void es_backoff(struct etcd_source *es, const char *msg)
{
	es->failures++;
	es_fail(es, msg);
	if (es->s)
		(void)uv_timer_start(&es->retry, on_retry, etcd_backoff_ms(es->failures), 0);
}

static void cb_watch_compacted(void *userdata, int64_t compact_revision)
{
	struct etcd_source *es = userdata;

	es->watch = NULL;
	log_info("etcd %s: revision %lld was compacted (now %lld); reading the prefix again", es->dir,
		 (long long)es->revision + 1, (long long)compact_revision);
	es_range(es);
}

static void cb_watch_error(void *userdata, const char *message)
{
	struct etcd_source *es = userdata;
	int64_t quiet = time_monotonic_usec() - es->last_message_usec;
	int64_t deadline = (int64_t)es->s->config->watch_timeout * 1000000;
	bool was_up = es->watch_created;

	es->watch = NULL;
	es->watch_created = false;
	if (was_up && es->failures == 0) {
		/* A stream that was up ended. Most often it met its silence
		 * deadline: an idle prefix does that whenever etcd's progress
		 * interval (10 min by default) is longer. Open it again at once;
		 * only a failure of that is an error for status. An end before
		 * the deadline (garbage, an error message) is logged. */
		if (quiet < deadline / 2)
			log_warn("etcd %s: the watch ended: %s; re-opening from revision %lld", es->dir, message,
				 (long long)es->revision + 1);
		else
			log_debug("etcd %s: watch ended (%s); re-opening from revision %lld", es->dir, message,
				  (long long)es->revision + 1);
		es->failures = 1;
		es_watch(es);
		return;
	}
	es_backoff(es, message);
}

/* ---------------------------------------------------------------- range */

static void cb_range(void *userdata, const struct etcd_result *res)
{
	struct etcd_source *es = userdata;

	es->range = NULL;
	if (res->error < 0) {
		es_backoff(es, res->message ? res->message : "etcd range failed");
		return;
	}
	es->failures = 0;
	json_object_clear(es->regs);
	json_object_clear(es->bad_regs);
	es->stack_present = false;
	es->stack_mod_revision = 0;
	free(es->stack_error);
	es->stack_error = NULL;
	for (size_t i = 0; i < res->n_kvs; i++)
		es_apply(es, &res->kvs[i], false);
	es->revision = res->revision;
	es_register(es);
	es_watch(es);
	if (es->s)
		es_build_now(es);
}

static void es_range(struct etcd_source *es)
{
	struct etcd_range_options o = { .prefix = true };
	int r;

	if (es->watch)
		etcd_watch_cancel(es->watch);
	es->watch = NULL;
	if (es->range)
		etcd_call_cancel(es->range);
	es->range = NULL;
	(void)uv_timer_stop(&es->retry);
	r = etcd_range(es->c, es->dir, &o, cb_range, es, &es->range);
	if (r < 0) {
		es->range = NULL;
		es_backoff(es, "cannot read the prefix from etcd");
	}
}

/* ------------------------------------------------------------ source_ops */

static const struct etcd_watch_callbacks watch_cbs = {
	.on_created = cb_watch_created,
	.on_events = cb_watch_events,
	.on_compacted = cb_watch_compacted,
	.on_error = cb_watch_error,
};

static int etcd_source_start(struct source *s)
{
	struct etcd_source *es;
	_cleanup_free_ char *error = NULL;
	struct etcd *c = NULL;
	int r;

	r = etcd_new(s->loop, s->http, s->config, s->url, &c, &error);
	if (r < 0) {
		log_error("%s", error ? error : "invalid etcd source");
		return r;
	}
	es = xcalloc(1, sizeof(*es));
	es->s = s;
	es->c = c;
	es->dir = xasprintf("%s/", etcd_prefix(c));
	es->stack_key = xasprintf("%s/stack", etcd_prefix(c));
	es->regs = json_object();
	es->bad_regs = json_object();
	(void)uv_timer_init(s->loop, &es->retry);
	(void)uv_timer_init(s->loop, &es->build);
	(void)uv_timer_init(s->loop, &es->publish);
	es->retry.data = es->build.data = es->publish.data = es;
	s->data = es;
	es_range(es);
	return 0;
}

static void etcd_source_reload(struct source *s)
{
	struct etcd_source *es = s->data;

	if (es)
		es_range(es);
}

static void on_closed(uv_handle_t *h)
{
	struct etcd_source *es = h->data;

	if (--es->closing > 0)
		return;
	free(es->dir);
	free(es->stack_key);
	free(es->hostname);
	free(es->own_ip);
	json_decref(es->agent);
	json_decref(es->stack);
	free(es->stack_error);
	json_decref(es->regs);
	json_decref(es->bad_regs);
	free(es->failed);
	json_decref(es->warnings);
	free(es->reg_error);
	free(es);
}

static void etcd_source_stop(struct source *s)
{
	struct etcd_source *es = s->data;

	if (!es)
		return;
	s->data = NULL;
	es->s = NULL;
	if (es->watch)
		etcd_watch_cancel(es->watch);
	if (es->range)
		etcd_call_cancel(es->range);
	/* Not revoked: see the top of this file. */
	registration_free(es->reg, false);
	es->reg = NULL;
	etcd_free(es->reg_c);
	es->reg_c = NULL;
	etcd_free(es->c);
	es->c = NULL;
	es->closing = 3;
	uv_close((uv_handle_t *)&es->retry, on_closed);
	uv_close((uv_handle_t *)&es->build, on_closed);
	uv_close((uv_handle_t *)&es->publish, on_closed);
}

static void etcd_source_status(struct source *s, json_t *o)
{
	struct etcd_source *es = s->data;
	int64_t lease;

	if (!es)
		return;
	json_object_set_new(o, "stack_mod_revision", json_integer(es->stack_mod_revision));
	json_object_set_new(o, "revision", json_integer(es->revision));
	lease = registration_lease(es->reg);
	json_object_set_new(o, "registration",
			    json_pack("{s:o, s:o, s:o}", "hostname", es->hostname ? json_string(es->hostname) : json_null(),
				      "lease", lease ? json_sprintf("%llx", (unsigned long long)lease) : json_null(),
				      "error", es->reg_error ? proto_string_lossy(es->reg_error, strlen(es->reg_error))
							     : json_null()));
	json_object_set_new(o, "warnings", es->warnings ? json_incref(es->warnings) : json_array());
}

const struct source_ops source_etcd_ops = {
	.scheme = "etcd",
	.start = etcd_source_start,
	.reload = etcd_source_reload,
	.stop = etcd_source_stop,
	.free_data = NULL,
	.status = etcd_source_status,
	.set_agent = etcd_source_set_agent,
};

/* ------------------------------------------------ accessors (source.h) */

static struct etcd_source *es_of(struct source *s)
{
	return s && s->ops == &source_etcd_ops ? s->data : NULL;
}

struct etcd *source_etcd(struct source *s)
{
	struct etcd_source *es = es_of(s);
	return es ? es->c : NULL;
}

int64_t source_etcd_lease(struct source *s)
{
	struct etcd_source *es = es_of(s);
	return es ? registration_lease(es->reg) : 0;
}

int64_t source_etcd_stack_revision(struct source *s)
{
	struct etcd_source *es = es_of(s);
	return es ? es->stack_mod_revision : 0;
}

const char *source_etcd_hostname(struct source *s)
{
	struct etcd_source *es = es_of(s);
	return es ? es->hostname : NULL;
}

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
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "fleet/etcd.h"
#include "fleet/registration.h"
#include "log.h"
#include "proto.h"
#include "source.h"
#include "stack/effective.h"
#include "stack/stack.h"
#include "util.h"

#define REG_VALUE_MAX STACK_REGISTRATION_MAX
/* Left-out registrations named in status.source.warnings, the rest counted. */
#define REG_WARNINGS_SHOWN 20
/* The registration's calls end within lease_ttl/3, not under this. */
#define REG_CALL_TIMEOUT_MIN_MS 500

struct etcd_source {
	struct source *s;             /* borrowed; NULL once stopped */
	struct etcd *c;               /* owned */
	struct etcd *reg_c;           /* owned: the registration's client (shorter timeouts), NULL before it */
	char *dir;                    /* owned: "PREFIX/" */
	char *stack_key;              /* owned: "PREFIX/stack" */
	char *hostname;               /* owned: this instance's name in etcd */
	char *own_ip;                 /* owned: first non-loopback IPv4, or 127.0.0.1 */
	struct registration *reg;     /* owned, NULL before the first range */
	json_t *agent;                /* owned: the "agent" member of the registration, NULL: not set yet */

	/* What etcd holds, as last read. */
	json_t *stack;                /* owned: the last good PREFIX/stack, NULL: none yet */
	bool stack_present;           /* the key exists */
	int64_t stack_mod_revision;   /* of the key as last seen, 0: none */
	char *stack_error;            /* owned: why its value is not used, NULL: fine or missing */
	json_t *regs;                 /* owned: hostname -> registration object */
	json_t *bad_regs;             /* owned: hostname -> message (escaped): values that are no registration */
	int64_t revision;             /* the last header.revision seen (range, watch, progress) */

	/* What the engine got. */
	bool delivered;
	uint64_t delivered_hash;
	size_t delivered_len;
	char *failed;                 /* owned: the error the engine holds from us, NULL: none */
	json_t *warnings;             /* owned: array of texts, the left-out registrations (status.source.warnings) */
	char *reg_error;              /* owned: the registration's last error, logged when it changes */

	/* The connection. */
	struct etcd_call *range;      /* in flight */
	struct etcd_watch *watch;     /* open */
	bool watch_created;
	int64_t last_message_usec;    /* monotonic: the stream's last message */
	unsigned failures;            /* in a row, for the backoff */
	uv_timer_t retry;             /* the next range or watch after a failure */
	uv_timer_t build;             /* 0 ms: one build for the messages of a loop iteration */
	unsigned closing;
};

static void es_range(struct etcd_source *es);
static void es_fail(struct etcd_source *es, const char *msg);
static const struct etcd_watch_callbacks watch_cbs;

/* ------------------------------------------------------------ identity */

static char *es_own_ipv4(void)
{
	struct ifaddrs *ifa = NULL;
	char buf[INET_ADDRSTRLEN] = "127.0.0.1";

	if (getifaddrs(&ifa) == 0) {
		for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
			if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK) ||
			    !(i->ifa_flags & IFF_UP))
				continue;
			if (inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, buf, sizeof(buf)))
				break;
		}
		freeifaddrs(ifa);
	}
	return xstrdup(buf);
}

/* opsworks.layers.<l>.instances.<host> of the last good stack, in
 * document order: the first entry, and the layers (when ret_layers). */
static const json_t *es_static_member(const struct etcd_source *es, const char *host, json_t *ret_layers)
{
	const json_t *layers = json_object_get(json_object_get(es->stack, "opsworks"), "layers"), *l, *first = NULL;
	const char *name;

	json_object_foreach((json_t *)layers, name, l) {
		const json_t *m = json_object_get(json_object_get(l, "instances"), host);
		if (!json_is_object(m))
			continue;
		if (!first)
			first = m;
		if (ret_layers)
			json_array_append_new(ret_layers, json_string(name));
	}
	return first;
}

/* The configured name, else the system's; its first label when only that is
 * a static member (web1.eu-west-1.compute.internal -> web1). */
static char *es_pick_hostname(const struct etcd_source *es)
{
	const struct config *c = es->s->config;
	char host[256];
	const char *dot;

	if (c->instance)
		return xstrdup(c->instance);
	if (gethostname(host, sizeof(host)) < 0)
		return xstrdup("localhost");
	host[sizeof(host) - 1] = '\0';
	dot = strchr(host, '.');
	if (dot && dot > host && !es_static_member(es, host, NULL)) {
		_cleanup_free_ char *label = xstrndup(host, (size_t)(dot - host));
		if (es_static_member(es, label, NULL))
			return xstrdup(label);
	}
	return xstrdup(host);
}

/* design.md §9's registration value. */
static json_t *es_registration_value(struct etcd_source *es)
{
	static const char *const copied[] = { "private_ip", "private_dns_name", "public_dns_name", "ip",
					      "aws_instance_id", "availability_zone", "instance_type", "backends",
					      NULL };
	const struct config *c = es->s->config;
	json_t *v = json_object(), *layers = json_array();
	const json_t *m = es_static_member(es, es->hostname, c->layers ? NULL : layers);

	if (c->layers)
		for (char **l = c->layers; *l; l++)
			json_array_append_new(layers, json_string(*l));
	json_object_set_new(v, "layers", layers);
	for (size_t i = 0; m && copied[i]; i++) {
		json_t *f = json_object_get(m, copied[i]);
		if (f && !json_is_null(f))
			json_object_set(v, copied[i], f);
	}
	if (!json_object_get(v, "private_ip")) {
		if (!es->own_ip)
			es->own_ip = es_own_ipv4();
		json_object_set_new(v, "private_ip", json_string(es->own_ip));
	}
	json_object_set_new(v, "status", json_string("online"));
	if (es->agent)
		json_object_set(v, "agent", es->agent);
	return v;
}

static void es_register_update(struct etcd_source *es)
{
	if (es->reg)
		registration_set(es->reg, es_registration_value(es));
}

static void cb_reg_lease(void *userdata, int64_t lease)
{
	struct etcd_source *es = userdata;

	if (es->reg_error) {
		log_info("Registration of %s: lease %llx granted", es->hostname, (unsigned long long)lease);
		free(es->reg_error);
		es->reg_error = NULL;
	}
}

/* A keepalive or put worked after an error: etcd came back with the lease
 * (a restart on the same data), so no new grant clears the error. */
static void cb_reg_ok(void *userdata)
{
	struct etcd_source *es = userdata;

	if (!es->reg_error)
		return;
	log_info("Registration of %s works again (lease %llx)", es->hostname,
		 (unsigned long long)registration_lease(es->reg));
	free(es->reg_error);
	es->reg_error = NULL;
}

static void cb_reg_error(void *userdata, const char *message)
{
	struct etcd_source *es = userdata;
	_cleanup_free_ char *m = str_escape_ctl(message);

	if (es->reg_error && strcmp(es->reg_error, m) == 0)
		return;
	log_warn("%s (retrying)", m);
	free(es->reg_error);
	es->reg_error = m;
	m = NULL;
}

static void es_register(struct etcd_source *es)
{
	static const struct registration_callbacks cbs = {
		.on_lease = cb_reg_lease, .on_error = cb_reg_error, .on_ok = cb_reg_ok
	};
	const struct config *c = es->s->config;
	_cleanup_free_ char *error = NULL, *ehost = NULL;
	long timeout_ms;
	int r;

	if (es->reg || es->hostname)
		return;
	es->hostname = es_pick_hostname(es);
	if (!name_is_valid(es->hostname)) {
		ehost = str_escape_ctl(es->hostname);
		log_error("Not registering in etcd: hostname \"%s\" is not a name of [A-Za-z0-9_.-]", ehost);
		return;
	}
	/* A keepalive that waits longer than lease_ttl/3 on a frozen etcd
	 * leaves no time for the next one (issue 12 follow-up #11). */
	if (etcd_new(es->s->loop, es->s->http, c, es->s->url, &es->reg_c, &error) < 0) {
		log_error("Not registering in etcd: %s", error ? error : "invalid etcd source");
		es->reg_c = NULL;
		return;
	}
	timeout_ms = c->lease_ttl * 1000 / 3;
	if (timeout_ms < REG_CALL_TIMEOUT_MIN_MS)
		timeout_ms = REG_CALL_TIMEOUT_MIN_MS;
	/* Only ever shorter than the client's defaults (5 s, connect 2 s). */
	etcd_set_timeouts(es->reg_c, timeout_ms < 5000 ? timeout_ms : 0, timeout_ms < 2000 ? timeout_ms : 0);
	r = registration_new(es->s->loop, es->reg_c, es->hostname, c->lease_ttl, &cbs, es, &es->reg);
	if (r < 0) {
		es->reg = NULL;
		return;
	}
	es_register_update(es);
}

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

static void es_set_registration(struct etcd_source *es, const char *host, const struct etcd_kv *kv)
{
	json_t *j = NULL;

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
		return;
	}
	json_object_del(es->bad_regs, host);
	json_object_set_new(es->regs, host, j);
}

/* A PUT (kv whole) or a DELETE (kv->key only). */
static void es_apply(struct etcd_source *es, const struct etcd_kv *kv, bool deleted)
{
	size_t off;

	if (strncmp(kv->key, es->dir, strlen(es->dir)) != 0) {
		_cleanup_free_ char *ekey = str_escape_ctl(kv->key);
		log_warn("etcd %s: key \"%.200s\" is outside the prefix %s; ignored", etcd_endpoint(es->c), ekey,
			 es->dir);
		return;
	}
	if (strcmp(kv->key, es->stack_key) == 0) {
		if (!deleted) {
			es_set_stack(es, kv);
			return;
		}
		es->stack_present = false;
		es->stack_mod_revision = 0;
		free(es->stack_error);
		es->stack_error = NULL;
	} else if (es_key_is(es, kv->key, "instances/", &off) && kv->key[off]) {
		/* Any name, "a/b" or "a#b" too: stack_effective leaves it out
		 * and status names it. */
		const char *host = kv->key + off;
		if (deleted) {
			json_object_del(es->regs, host);
			json_object_del(es->bad_regs, host);
		} else
			es_set_registration(es, host, kv);
	}
	/* Anything else under the prefix (locks/, semaphores/, jobs/) is
	 * another part of the fleet's business. */
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

	es->last_message_usec = time_monotonic_usec();
	for (size_t i = 0; i < n; i++)
		es_apply(es, &ev[i].kv, ev[i].type == ETCD_EVENT_DELETE);
	if (revision > es->revision)
		es->revision = revision;
	if (n > 0)
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
	es->retry.data = es->build.data = es;
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
	es->closing = 2;
	uv_close((uv_handle_t *)&es->retry, on_closed);
	uv_close((uv_handle_t *)&es->build, on_closed);
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

static void etcd_source_set_agent(struct source *s, const json_t *agent)
{
	struct etcd_source *es = s->data;

	if (!es || !json_is_object(agent))
		return;
	if (es->agent && json_equal(es->agent, agent))
		return;
	json_decref(es->agent);
	es->agent = json_deep_copy(agent);
	es_register_update(es);
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

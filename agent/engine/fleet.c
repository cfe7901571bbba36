/* SPDX-License-Identifier: BSD-2-Clause */
/* The engine's side of the fleet (design.md §5, §9): `fleet` (who is
 * registered, with their state and the seconds left on their leases),
 * `stack-push` (validated as a delivered document is, then put with a
 * compare on the mod revision it was based on), and this agent's own
 * state published into its registration through the source. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "fleet/etcd.h"
#include "internal.h"
#include "log.h"
#include "proto.h"
#include "source/source.h"
#include "stack/effective.h"
#include "stack/stack.h"
#include "util.h"

/* --------------------------------------------------------- publishing */

/* Called where the state, the applied revision or the last run may have
 * changed (engine_notify_status, engine_apply_current): the registration
 * puts only what differs from what it put last (registration.c), so
 * calling often costs no etcd write. */
void engine_fleet_publish(struct engine *e)
{
	json_t *st, *last, *agent, *small = json_null();

	if (!e->source || !e->source->ops->set_agent)
		return;
	st = engine_status(e);
	last = json_object_get(st, "last_run");
	if (json_is_object(last))
		small = json_pack("{s:O, s:O, s:O, s:O}", "id", json_object_get(last, "id"), "event",
				  json_object_get(last, "event"), "status", json_object_get(last, "status"), "finished",
				  json_object_get(last, "finished"));
	agent = json_pack("{s:s, s:O, s:O, s:o}", "version", AGENTD_VERSION, "state", json_object_get(st, "state"),
			  "applied_revision", json_object_get(st, "applied_revision"), "last_run", small);
	source_set_agent(e->source, agent);
	json_decref(agent);
	json_decref(st);
}

/* ---------------------------------------------------------------- calls */

struct lease_query {
	struct engine_call *call;   /* borrowed */
	struct etcd_call *ec;       /* in flight, NULL when done */
	int64_t lease;
	json_t *entries;            /* owned: the instances under this lease */
};

struct engine_call {
	struct engine *e;
	engine_reply_cb cb;
	void *userdata;
	uv_timer_t timer;           /* answers of no I/O, from the loop */
	struct etcd_call *ec;       /* the range or txn in flight */
	struct lease_query *leases; /* owned */
	size_t n_leases, pending;
	json_t *result;             /* owned: the answer once known */
	char *error;                /* owned: or the error */
	int64_t base;               /* stack-push */
	char *stack_key;            /* owned: stack-push's PREFIX/stack */
};

static void on_call_closed(uv_handle_t *h)
{
	struct engine_call *call = h->data;

	for (size_t i = 0; i < call->n_leases; i++)
		json_decref(call->leases[i].entries);
	free(call->leases);
	json_decref(call->result);
	free(call->error);
	free(call->stack_key);
	free(call);
}

static struct engine_call *call_new(struct engine *e, engine_reply_cb cb, void *userdata)
{
	struct engine_call *call = xcalloc(1, sizeof(*call));

	call->e = e;
	call->cb = cb;
	call->userdata = userdata;
	(void)uv_timer_init(e->loop, &call->timer);
	call->timer.data = call;
	return call;
}

static void call_free(struct engine_call *call)
{
	uv_close((uv_handle_t *)&call->timer, on_call_closed);
}

/* Answers with call->result or call->error, then frees the call. */
static void call_answer(struct engine_call *call)
{
	json_t *result = call->result;

	call->result = NULL;
	call->cb(call->userdata, call->error ? NULL : result, call->error);
	if (call->error)
		json_decref(result);
	call_free(call);
}

static void on_answer(uv_timer_t *t)
{
	call_answer(t->data);
}

void engine_call_cancel(struct engine_call *call)
{
	if (!call)
		return;
	(void)uv_timer_stop(&call->timer);
	if (call->ec)
		etcd_call_cancel(call->ec);
	for (size_t i = 0; i < call->n_leases; i++)
		if (call->leases[i].ec)
			etcd_call_cancel(call->leases[i].ec);
	call_free(call);
}

/* ---------------------------------------------------------------- fleet */

static int cmp_hostname(const void *a, const void *b)
{
	const char *x = json_string_value(json_object_get(*(json_t *const *)a, "hostname"));
	const char *y = json_string_value(json_object_get(*(json_t *const *)b, "hostname"));

	return strcmp(x ? x : "", y ? y : "");
}

/* {"source": ..., "instances": entries sorted by hostname} (entries stolen). */
static json_t *fleet_result(const char *source, json_t *entries)
{
	size_t n = json_array_size(entries), i;
	json_t **v = xcalloc(n + 1, sizeof(*v)), *sorted = json_array(), *x;

	json_array_foreach(entries, i, x)
		v[i] = x;
	qsort(v, n, sizeof(*v), cmp_hostname);
	for (i = 0; i < n; i++)
		json_array_append(sorted, v[i]);
	free(v);
	json_decref(entries);
	return json_pack("{s:s, s:o}", "source", source, "instances", sorted);
}

/* The static members of the current stack: other sources know no more. */
static json_t *fleet_static(struct engine *e)
{
	json_t *by_host = json_object(), *entries = json_array(), *v;
	const struct stack *s = e->current;
	const char *host;

	for (size_t i = 0; s && i < s->n_layers; i++)
		for (size_t j = 0; j < s->layers[i].n_members; j++) {
			const struct stack_member *m = &s->layers[i].members[j];
			json_t *x = json_object_get(by_host, m->hostname);
			if (!x) {
				x = json_pack("{s:s, s:[], s:o, s:s, s:n, s:n, s:n}", "hostname", m->hostname, "layers",
					      "address", json_string_or_null(m->private_ip), "state", "unknown",
					      "applied_revision", "last_run", "lease_ttl");
				json_object_set_new(by_host, m->hostname, x);
			}
			json_array_append_new(json_object_get(x, "layers"), json_string(s->layers[i].shortname));
		}
	json_object_foreach(by_host, host, v)
		json_array_append(entries, v);
	json_decref(by_host);
	return fleet_result(e->source ? e->source->ops->scheme : "none", entries);
}

/* One registration as fleet shows it: hostname escaped (it is the raw end
 * of a key); one that the effective stack leaves out has state "invalid"
 * and an "error", one naming a layer the stack lacks an "error" too
 * (stack_registration_problem against the current stack). */
static json_t *fleet_entry(const struct engine *e, const char *host, const char *value, size_t len)
{
	_cleanup_free_ char *ehost = str_escape_ctl(host), *why = NULL;
	json_t *v = len <= STACK_REGISTRATION_MAX ? json_loadb(value, len, JSON_REJECT_DUPLICATES, NULL) : NULL;
	json_t *o = json_pack("{s:o}", "hostname", proto_string_lossy(ehost, strlen(ehost))), *agent;
	bool left_out = true;

	if (len > STACK_REGISTRATION_MAX)
		why = xasprintf("a value of %zu bytes, over %d: not a registration", len, STACK_REGISTRATION_MAX);
	else
		why = stack_registration_problem(e->current ? e->current->root : NULL, host, v, &left_out);
	if (!json_is_object(v)) {
		json_decref(v);
		v = json_object();
	}
	agent = json_object_get(v, "agent");
	json_object_set_new(o, "layers", json_is_array(json_object_get(v, "layers"))
						 ? json_incref(json_object_get(v, "layers"))
						 : json_array());
	json_object_set_new(o, "address", json_is_string(json_object_get(v, "private_ip"))
						  ? json_incref(json_object_get(v, "private_ip"))
						  : json_null());
	json_object_set_new(o, "state", json_is_string(json_object_get(agent, "state"))
						? json_incref(json_object_get(agent, "state"))
						: json_null());
	json_object_set_new(o, "applied_revision", json_is_string(json_object_get(agent, "applied_revision"))
							   ? json_incref(json_object_get(agent, "applied_revision"))
							   : json_null());
	json_object_set_new(o, "last_run", json_is_object(json_object_get(agent, "last_run"))
						   ? json_incref(json_object_get(agent, "last_run"))
						   : json_null());
	json_object_set_new(o, "lease_ttl", json_null());
	if (why) {
		if (left_out)
			json_object_set_new(o, "state", json_string("invalid"));
		json_object_set_new(o, "error", proto_string_lossy(why, strlen(why)));
	}
	json_decref(v);
	return o;
}

static void fleet_done(struct engine_call *call)
{
	json_t *entries = json_array(), *x;
	size_t j;

	for (size_t i = 0; i < call->n_leases; i++)
		json_array_foreach(call->leases[i].entries, j, x)
			json_array_append(entries, x);
	json_array_extend(entries, call->result); /* entries without a lease */
	json_decref(call->result);
	call->result = fleet_result("etcd", entries);
	call_answer(call);
}

static void cb_lease_ttl(void *userdata, const struct etcd_result *r)
{
	struct lease_query *q = userdata;
	size_t i;
	json_t *x;

	q->ec = NULL;
	/* A lease gone meanwhile (or an error) leaves lease_ttl null. */
	if (r->error == 0 && r->ttl >= 0)
		json_array_foreach(q->entries, i, x)
			json_object_set_new(x, "lease_ttl", json_integer(r->ttl));
	if (--q->call->pending == 0)
		fleet_done(q->call);
}

static struct lease_query *lease_slot(struct engine_call *call, int64_t lease)
{
	for (size_t i = 0; i < call->n_leases; i++)
		if (call->leases[i].lease == lease)
			return &call->leases[i];
	call->leases[call->n_leases] = (struct lease_query){ .call = call, .lease = lease, .entries = json_array() };
	return &call->leases[call->n_leases++];
}

static void cb_instances(void *userdata, const struct etcd_result *r)
{
	struct engine_call *call = userdata;
	struct etcd *c = call->e->source ? source_etcd(call->e->source) : NULL;
	size_t dir;

	call->ec = NULL;
	if (r->error < 0 || !c) {
		call->error = xstrdup(r->message ? r->message : "etcd is gone");
		call_answer(call);
		return;
	}
	dir = strlen(etcd_prefix(c)) + strlen("/instances/");
	call->result = json_array(); /* entries without a lease */
	call->leases = xcalloc(r->n_kvs + 1, sizeof(*call->leases));
	for (size_t i = 0; i < r->n_kvs; i++) {
		const struct etcd_kv *kv = &r->kvs[i];
		json_t *o;
		if (kv->key_len <= dir)
			continue;
		o = fleet_entry(call->e, kv->key + dir, kv->value, kv->value_len);
		if (kv->lease)
			json_array_append_new(lease_slot(call, kv->lease)->entries, o);
		else
			json_array_append_new(call->result, o);
	}
	/* Every lease at once: the answer takes one round trip, not N. */
	call->pending = 1;
	for (size_t i = 0; i < call->n_leases; i++) {
		struct lease_query *q = &call->leases[i];
		call->pending++;
		if (etcd_lease_ttl(c, q->lease, cb_lease_ttl, q, &q->ec) < 0) {
			q->ec = NULL;
			call->pending--;
		}
	}
	if (--call->pending == 0)
		fleet_done(call);
}

int engine_fleet(struct engine *e, engine_reply_cb cb, void *userdata, struct engine_call **ret, char **ret_error)
{
	struct etcd *c = e->source ? source_etcd(e->source) : NULL;
	struct etcd_range_options o = { .prefix = true };
	_cleanup_free_ char *key = NULL;
	struct engine_call *call = call_new(e, cb, userdata);
	int r;

	if (!c) {
		call->result = fleet_static(e);
		(void)uv_timer_start(&call->timer, on_answer, 0, 0);
		if (ret)
			*ret = call;
		return 0;
	}
	key = xasprintf("%s/instances/", etcd_prefix(c));
	r = etcd_range(c, key, &o, cb_instances, call, &call->ec);
	if (r < 0) {
		*ret_error = xasprintf("cannot read %s from etcd: %s", key, strerror(-r));
		call_free(call);
		return r;
	}
	if (ret)
		*ret = call;
	return 0;
}

/* ------------------------------------------------------------ stack push */

static void cb_push(void *userdata, const struct etcd_result *r)
{
	struct engine_call *call = userdata;

	call->ec = NULL;
	if (r->error < 0) {
		/* The txn may have reached etcd before the answer was lost (a
		 * timeout on a frozen etcd, a connection cut): it may still be
		 * applied, so this is no refusal (issue 12 follow-up B3). */
		call->error = xasprintf("pushing %s: %s; the outcome is unknown: the push may have been applied: "
					"check `agentctl stack --revision`",
					call->stack_key, r->message ? r->message : strerror(-r->error));
		log_warn("Stack push to %s (based on %lld): %s", call->stack_key, (long long)call->base, call->error);
	} else if (r->succeeded) {
		log_info("Stack pushed to %s: revision %lld (based on %lld)", call->stack_key, (long long)r->revision,
			 (long long)call->base);
		if (r->revision > call->e->stack_pushed)
			call->e->stack_pushed = r->revision;
		call->result = json_pack("{s:s, s:I, s:I}", "key", call->stack_key, "revision", (json_int_t)r->revision,
					 "base", (json_int_t)call->base);
	} else
		call->error = xasprintf("refused: stale base: %s is at revision %lld, this push was based on revision %lld",
					call->stack_key, (long long)(r->n_kvs ? r->kvs[0].mod_revision : 0),
					(long long)call->base);
	call_answer(call);
}

int engine_stack_push(struct engine *e, const char *doc, size_t len, int64_t base, engine_reply_cb cb,
		      void *userdata, struct engine_call **ret, char **ret_error)
{
	struct etcd *c = e->source ? source_etcd(e->source) : NULL;
	struct stack_error err = { 0 };
	struct stack *s = NULL;
	struct engine_call *call;
	int r;

	if (!c) {
		*ret_error = xstrdup("stack push needs an etcd source");
		return -ENOTSUP;
	}
	if (base < ENGINE_PUSH_BASE_READ) {
		*ret_error = xasprintf("invalid base revision %lld", (long long)base);
		return -EINVAL;
	}
	/* Exactly what a delivered document goes through (intake.c), with
	 * the same words. */
	r = engine_stack_load(e, doc, len, e->instance, (const char *const *)e->config->layers, &s, &err);
	stack_unref(s);
	if (r < 0) {
		if (r == -EFBIG)
			*ret_error = xasprintf("stack rejected: larger than %d bytes", STACK_MAX_BYTES);
		else
			*ret_error = xasprintf("stack rejected at %s: %s", err.path[0] ? err.path : "$", err.message);
		return -EINVAL;
	}
	call = call_new(e, cb, userdata);
	/* By default the newer of what the agent read and what its own last
	 * push wrote: the watch event of that push may not have come yet
	 * (issue 12 follow-up #7). 0: only when the key does not exist (a
	 * missing key's mod revision compares as 0). */
	call->base = base;
	if (base == ENGINE_PUSH_BASE_READ) {
		call->base = source_etcd_stack_revision(e->source);
		if (e->stack_pushed > call->base)
			call->base = e->stack_pushed;
	}
	call->stack_key = xasprintf("%s/stack", etcd_prefix(c));
	struct etcd_compare cmp = { .target = ETCD_CMP_MOD, .result = ETCD_CMP_EQUAL, .key = call->stack_key,
				    .number = call->base };
	struct etcd_op put = { .type = ETCD_OP_PUT, .key = call->stack_key, .value = doc, .value_len = len };
	struct etcd_op get = { .type = ETCD_OP_RANGE, .key = call->stack_key };
	r = etcd_txn(c, &cmp, 1, &put, 1, &get, 1, cb_push, call, &call->ec);
	if (r < 0) {
		*ret_error = r == -EFBIG ? xasprintf("the document is larger than etcd's client accepts (%d bytes)",
						     ETCD_VALUE_MAX)
					 : xasprintf("cannot push to %s: %s", call->stack_key, strerror(-r));
		call_free(call);
		return r;
	}
	if (ret)
		*ret = call;
	return 0;
}

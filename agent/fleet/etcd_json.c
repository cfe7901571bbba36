/* SPDX-License-Identifier: BSD-2-Clause */
/* The JSON gateway's encodings (reference/protocols.md, "etcd v3 JSON
 * gateway"): base64 bytes, int64 as strings (numbers accepted too), fields at
 * their proto3 default omitted; the replies of the unary calls and the
 * messages of a watch stream parsed into fleet/etcd.h's structs. Every count
 * and size is bounded: ETCD_ITEMS_MAX kvs or events, ETCD_VALUE_MAX bytes a
 * key or value. */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleet/etcd.h"
#include "util.h"

/* ---- base64 (RFC 4648 §4) ---- */

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *etcd_base64_encode(const void *data, size_t len)
{
	const unsigned char *p = data;
	char *out = xmalloc((len + 2) / 3 * 4 + 1), *o = out;
	size_t i;

	for (i = 0; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		*o++ = b64_alphabet[v >> 18];
		*o++ = b64_alphabet[(v >> 12) & 63];
		*o++ = b64_alphabet[(v >> 6) & 63];
		*o++ = b64_alphabet[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)p[i] << 16;
		*o++ = b64_alphabet[v >> 18];
		*o++ = b64_alphabet[(v >> 12) & 63];
		*o++ = '=';
		*o++ = '=';
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
		*o++ = b64_alphabet[v >> 18];
		*o++ = b64_alphabet[(v >> 12) & 63];
		*o++ = b64_alphabet[(v >> 6) & 63];
		*o++ = '=';
	}
	*o = '\0';
	return out;
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int etcd_base64_decode(const char *s, size_t len, char **ret, size_t *ret_len)
{
	_cleanup_free_ char *out = NULL;
	size_t n = 0;

	if (len % 4 != 0)
		return -EPROTO;
	out = xmalloc(len / 4 * 3 + 1);
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		bool last = i + 4 == len;
		size_t pad = 0;

		for (int j = 0; j < 4; j++) {
			v[j] = b64_value(s[i + j]);
			if (v[j] < 0) {
				/* "=" only as the last one or two characters. */
				if (!last || s[i + j] != '=' || j < 2)
					return -EPROTO;
				if (j == 2 && s[i + 3] != '=')
					return -EPROTO;
				v[j] = 0;
				pad++;
			}
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
		/* The bits that padding leaves unused must be zero: one
		 * canonical text per byte string. */
		if ((pad == 1 && (w & 0xff) != 0) || (pad == 2 && (w & 0xffff) != 0))
			return -EPROTO;
		out[n++] = (char)(w >> 16);
		if (pad < 2)
			out[n++] = (char)(w >> 8);
		if (pad < 1)
			out[n++] = (char)w;
	}
	out[n] = '\0';
	*ret = out;
	out = NULL;
	*ret_len = n;
	return 0;
}


/* ---- request bodies ---- */

static void set_bytes(json_t *o, const char *name, const char *data, size_t len)
{
	_cleanup_free_ char *b = etcd_base64_encode(data, len);
	json_object_set_new(o, name, json_string(b));
}

static void set_int64(json_t *o, const char *name, int64_t v)
{
	char s[24];
	snprintf(s, sizeof(s), "%" PRId64, v);
	json_object_set_new(o, name, json_string(s));
}

/* range_end of a prefix: key with its last byte below 0xff incremented and
 * what follows dropped; "\0" (every key from key on) when all are 0xff. */
static void set_key_range(json_t *o, const char *key, bool prefix)
{
	size_t n = strlen(key);

	set_bytes(o, "key", key, n);
	if (!prefix)
		return;
	_cleanup_free_ char *end = xstrdup(key);
	while (n > 0 && (unsigned char)end[n - 1] == 0xff)
		n--;
	if (n == 0) {
		set_bytes(o, "range_end", "", 1);
		return;
	}
	end[n - 1] = (char)((unsigned char)end[n - 1] + 1);
	set_bytes(o, "range_end", end, n);
}

static char *dump(json_t *o)
{
	char *s = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (!s)
		abort(); /* out of memory */
	return s;
}

static json_t *put_object(const char *key, const char *value, size_t value_len, int64_t lease)
{
	json_t *o = json_object();
	set_bytes(o, "key", key, strlen(key));
	set_bytes(o, "value", value ? value : "", value_len);
	if (lease)
		set_int64(o, "lease", lease);
	return o;
}

static json_t *compare_object(const struct etcd_compare *cmp)
{
	static const char *const targets[] = { "VERSION", "CREATE", "MOD", "VALUE", "LEASE" };
	static const char *const results[] = { "EQUAL", "GREATER", "LESS", "NOT_EQUAL" };
	static const char *const fields[] = { "version", "create_revision", "mod_revision", "value", "lease" };
	json_t *o = json_object();

	json_object_set_new(o, "target", json_string(targets[cmp->target]));
	json_object_set_new(o, "result", json_string(results[cmp->result]));
	set_bytes(o, "key", cmp->key, strlen(cmp->key));
	if (cmp->target == ETCD_CMP_VALUE)
		set_bytes(o, "value", cmp->value ? cmp->value : "", cmp->value_len);
	else
		set_int64(o, fields[cmp->target], cmp->number);
	return o;
}

static json_t *op_object(const struct etcd_op *op)
{
	json_t *o = json_object(), *inner;

	switch (op->type) {
	case ETCD_OP_RANGE:
		inner = json_object();
		set_key_range(inner, op->key, op->prefix);
		json_object_set_new(o, "request_range", inner);
		break;
	case ETCD_OP_PUT:
		json_object_set_new(o, "request_put", put_object(op->key, op->value, op->value_len, op->lease));
		break;
	case ETCD_OP_DELETE:
		inner = json_object();
		set_key_range(inner, op->key, op->prefix);
		json_object_set_new(o, "request_delete_range", inner);
		break;
	}
	return o;
}

char *etcd_json_range(const char *key, const struct etcd_range_options *o)
{
	json_t *b = json_object();

	set_key_range(b, key, o->prefix);
	if (o->limit)
		set_int64(b, "limit", o->limit);
	if (o->revision)
		set_int64(b, "revision", o->revision);
	if (o->min_mod_revision)
		set_int64(b, "min_mod_revision", o->min_mod_revision);
	if (o->count_only)
		json_object_set_new(b, "count_only", json_true());
	if (o->keys_only)
		json_object_set_new(b, "keys_only", json_true());
	return dump(b);
}

char *etcd_json_put(const char *key, const char *value, size_t value_len, int64_t lease)
{
	return dump(put_object(key, value, value_len, lease));
}

char *etcd_json_delete(const char *key, bool prefix)
{
	json_t *b = json_object();

	set_key_range(b, key, prefix);
	return dump(b);
}

char *etcd_json_txn(const struct etcd_compare *cmp, size_t n_cmp, const struct etcd_op *success, size_t n_success,
		    const struct etcd_op *failure, size_t n_failure)
{
	json_t *b = json_object(), *arr;

	arr = json_array();
	for (size_t i = 0; i < n_cmp; i++)
		json_array_append_new(arr, compare_object(&cmp[i]));
	json_object_set_new(b, "compare", arr);
	arr = json_array();
	for (size_t i = 0; i < n_success; i++)
		json_array_append_new(arr, op_object(&success[i]));
	json_object_set_new(b, "success", arr);
	arr = json_array();
	for (size_t i = 0; i < n_failure; i++)
		json_array_append_new(arr, op_object(&failure[i]));
	json_object_set_new(b, "failure", arr);
	return dump(b);
}

char *etcd_json_lease(int64_t lease, long ttl)
{
	json_t *b = json_object();

	if (ttl > 0)
		set_int64(b, "TTL", ttl);
	set_int64(b, "ID", lease);
	return dump(b);
}

char *etcd_json_watch(const char *key, bool prefix, int64_t start_revision)
{
	json_t *b = json_object(), *req = json_object();

	set_key_range(req, key, prefix);
	if (start_revision)
		set_int64(req, "start_revision", start_revision);
	json_object_set_new(req, "prev_kv", json_true());
	json_object_set_new(req, "progress_notify", json_true());
	json_object_set_new(b, "create_request", req);
	return dump(b);
}

/* ---- fields ---- */

/* An int64 field: a JSON string of decimal digits (the gateway's form) or a
 * JSON integer; missing or null: 0 (proto3 default). */
static int get_int64(json_t *o, const char *name, int64_t *ret)
{
	json_t *v = json_object_get(o, name);

	*ret = 0;
	if (!v || json_is_null(v))
		return 0;
	if (json_is_integer(v)) {
		*ret = (int64_t)json_integer_value(v);
		return 0;
	}
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		size_t n = json_string_length(v);
		char *end;

		if (n == 0 || n > 20 || strlen(s) != n || !(s[0] == '-' || (s[0] >= '0' && s[0] <= '9')))
			return -EPROTO;
		errno = 0;
		long long x = strtoll(s, &end, 10);
		if (errno != 0 || *end != '\0' || end == s || (s[0] == '-' && n == 1))
			return -EPROTO;
		*ret = (int64_t)x;
		return 0;
	}
	return -EPROTO;
}

static int get_bool(json_t *o, const char *name, bool *ret)
{
	json_t *v = json_object_get(o, name);

	*ret = false;
	if (!v || json_is_null(v))
		return 0;
	if (!json_is_boolean(v))
		return -EPROTO;
	*ret = json_is_true(v);
	return 0;
}

/* A bytes field (base64), missing or null: empty. NUL-terminated copy. */
static int get_bytes(json_t *o, const char *name, char **ret, size_t *ret_len)
{
	json_t *v = json_object_get(o, name);

	if (!v || json_is_null(v)) {
		*ret = xstrdup("");
		*ret_len = 0;
		return 0;
	}
	if (!json_is_string(v))
		return -EPROTO;
	if (json_string_length(v) > (ETCD_VALUE_MAX + 2) / 3 * 4)
		return -EFBIG;
	return etcd_base64_decode(json_string_value(v), json_string_length(v), ret, ret_len);
}

static void kv_clear(struct etcd_kv *kv)
{
	free(kv->key);
	free(kv->value);
	memset(kv, 0, sizeof(*kv));
}

/* Sets *why to the name of the field that failed. */
static int kv_parse(json_t *o, struct etcd_kv *kv, const char **why)
{
	int k;

	memset(kv, 0, sizeof(*kv));
	if (!json_is_object(o)) {
		*why = "";
		return -EPROTO;
	}
	*why = ".key";
	if ((k = get_bytes(o, "key", &kv->key, &kv->key_len)) < 0)
		goto fail;
	if (kv->key_len == 0) {
		k = -EPROTO;
		goto fail;
	}
	*why = ".value";
	if ((k = get_bytes(o, "value", &kv->value, &kv->value_len)) < 0)
		goto fail;
	*why = ".create_revision";
	if ((k = get_int64(o, "create_revision", &kv->create_revision)) < 0)
		goto fail;
	*why = ".mod_revision";
	if ((k = get_int64(o, "mod_revision", &kv->mod_revision)) < 0)
		goto fail;
	*why = ".version";
	if ((k = get_int64(o, "version", &kv->version)) < 0)
		goto fail;
	*why = ".lease";
	if ((k = get_int64(o, "lease", &kv->lease)) < 0)
		goto fail;
	return 0;
fail:
	kv_clear(kv);
	return k;
}

static char *cause(int k, const char *path)
{
	if (k == -EFBIG)
		return xasprintf("%s: larger than %d bytes", path, ETCD_VALUE_MAX);
	return xasprintf("%s: not the gateway's JSON", path);
}

/* kvs[] of a range reply at path (for messages). */
static int kvs_parse(json_t *o, const char *path, struct etcd_result *r, char **ret_error)
{
	json_t *arr = json_object_get(o, "kvs");
	struct etcd_kv *kvs;
	size_t n;

	if (!arr || json_is_null(arr))
		return 0;
	if (!json_is_array(arr)) {
		*ret_error = xasprintf("%s.kvs: not an array", path);
		return -EPROTO;
	}
	n = json_array_size(arr);
	if (n > ETCD_ITEMS_MAX) {
		*ret_error = xasprintf("%s.kvs: more than %d keys", path, ETCD_ITEMS_MAX);
		return -EPROTO;
	}
	if (n == 0)
		return 0;
	kvs = xcalloc(n, sizeof(*kvs));
	r->kvs = kvs;
	for (size_t i = 0; i < n; i++) {
		const char *why;
		int k = kv_parse(json_array_get(arr, i), &kvs[i], &why);
		if (k < 0) {
			_cleanup_free_ char *p = xasprintf("%s.kvs[%zu]%s", path, i, why);
			*ret_error = cause(k, p);
			return k;
		}
		r->n_kvs = i + 1;
	}
	return 0;
}

void etcd_result_clear(struct etcd_result *r)
{
	struct etcd_kv *kvs = (struct etcd_kv *)r->kvs;

	for (size_t i = 0; i < r->n_kvs; i++)
		kv_clear(&kvs[i]);
	free(kvs);
	free((char *)r->message);
	memset(r, 0, sizeof(*r));
}

static int header_revision(json_t *o, const char *path, int64_t *ret, char **ret_error)
{
	json_t *h = json_object_get(o, "header");

	*ret = 0;
	if (!json_is_object(h)) {
		*ret_error = xasprintf("%s.header: missing", path);
		return -EPROTO;
	}
	if (get_int64(h, "revision", ret) < 0) {
		*ret_error = xasprintf("%s.header.revision: not an int64", path);
		return -EPROTO;
	}
	return 0;
}

static int int64_field(json_t *o, const char *path, const char *name, int64_t *ret, char **ret_error)
{
	if (get_int64(o, name, ret) < 0) {
		*ret_error = xasprintf("%s.%s: not an int64", path, name);
		return -EPROTO;
	}
	return 0;
}

/* A txn's responses[]: the kvs of the first response_range. */
static int txn_parse(json_t *o, struct etcd_result *r, char **ret_error)
{
	json_t *arr = json_object_get(o, "responses"), *item;
	size_t i;

	if (get_bool(o, "succeeded", &r->succeeded) < 0) {
		*ret_error = xstrdup("$.succeeded: not a boolean");
		return -EPROTO;
	}
	if (!arr || json_is_null(arr))
		return 0;
	if (!json_is_array(arr) || json_array_size(arr) > ETCD_ITEMS_MAX) {
		*ret_error = xasprintf("$.responses: not an array of at most %d", ETCD_ITEMS_MAX);
		return -EPROTO;
	}
	json_array_foreach(arr, i, item) {
		json_t *range = json_object_get(item, "response_range");
		if (!json_is_object(item)) {
			*ret_error = xasprintf("$.responses[%zu]: not an object", i);
			return -EPROTO;
		}
		if (range && !r->kvs) {
			_cleanup_free_ char *p = xasprintf("$.responses[%zu].response_range", i);
			if (!json_is_object(range)) {
				*ret_error = xasprintf("%s: not an object", p);
				return -EPROTO;
			}
			int k = kvs_parse(range, p, r, ret_error);
			if (k < 0)
				return k;
			if ((k = int64_field(range, p, "count", &r->count, ret_error)) < 0)
				return k;
			if (!r->kvs) /* an empty range is still the first one */
				r->kvs = xcalloc(1, sizeof(struct etcd_kv));
		}
	}
	return 0;
}

static int reply_fill(enum etcd_reply_kind kind, json_t *root, struct etcd_result *r, char **ret_error)
{
	json_t *o = root;
	const char *path = "$";
	int k;

	if (kind == ETCD_REPLY_LEASE_KEEPALIVE) {
		json_t *err = json_object_get(root, "error");
		if (err) {
			json_t *msg = json_is_object(err) ? json_object_get(err, "message") : err;
			_cleanup_free_ char *t = json_is_string(msg) ? str_escape_ctl(json_string_value(msg)) : NULL;
			*ret_error = xasprintf("$.error: %s", t ? t : "(no message)");
			return t && strstr(t, "lease not found") ? -ENOENT : -EIO;
		}
		o = json_object_get(root, "result");
		path = "$.result";
		if (!json_is_object(o)) {
			*ret_error = xstrdup("$.result: missing");
			return -EPROTO;
		}
	}
	if ((k = header_revision(o, path, &r->revision, ret_error)) < 0)
		return k;
	switch (kind) {
	case ETCD_REPLY_RANGE:
		if ((k = kvs_parse(o, path, r, ret_error)) < 0)
			return k;
		return int64_field(o, path, "count", &r->count, ret_error);
	case ETCD_REPLY_PUT:
	case ETCD_REPLY_LEASE_REVOKE:
		return 0;
	case ETCD_REPLY_DELETE:
		return int64_field(o, path, "deleted", &r->deleted, ret_error);
	case ETCD_REPLY_TXN:
		return txn_parse(o, r, ret_error);
	case ETCD_REPLY_LEASE_GRANT:
	case ETCD_REPLY_LEASE_KEEPALIVE:
	case ETCD_REPLY_LEASE_TTL:
		if ((k = int64_field(o, path, "ID", &r->lease, ret_error)) < 0 ||
		    (k = int64_field(o, path, "TTL", &r->ttl, ret_error)) < 0)
			return k;
		if (kind == ETCD_REPLY_LEASE_GRANT) {
			json_t *e = json_object_get(o, "error");
			if (json_is_string(e) && json_string_length(e) > 0) {
				*ret_error = xasprintf("%s.error: %s", path, json_string_value(e));
				return -EIO;
			}
			if (r->lease == 0 || r->ttl <= 0) {
				*ret_error = xasprintf("%s: no lease granted", path);
				return -EPROTO;
			}
		} else if (r->ttl <= 0) {
			/* keepalive: TTL omitted (0) when the lease is gone;
			 * timetolive: -1. */
			*ret_error = xasprintf("%s.TTL: %s: the lease is gone", path,
					       kind == ETCD_REPLY_LEASE_TTL ? "-1" : "missing");
			return -ENOENT;
		}
		return 0;
	}
	return 0;
}

/* Every value and key of a document, before jansson builds a tree of it. */
#define ETCD_JSON_ELEMENTS_MAX (16 * (size_t)ETCD_ITEMS_MAX)
#define ETCD_JSON_DEPTH_MAX 32

static json_t *load(const char *body, size_t len, char **ret_error)
{
	json_error_t jerr;
	json_t *root;
	int k = json_bounds_check(body, len, ETCD_JSON_ELEMENTS_MAX, ETCD_JSON_DEPTH_MAX);

	if (k < 0) {
		*ret_error = xstrdup(k == -ELOOP ? "$: nested too deeply" : "$: too many elements");
		return NULL;
	}
	root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		*ret_error = xasprintf("not JSON: %s at byte %d", jerr.text, jerr.position);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		*ret_error = xstrdup("$: not an object");
		return NULL;
	}
	return root;
}

int etcd_reply_parse(enum etcd_reply_kind kind, const char *body, size_t len, struct etcd_result *r,
		     char **ret_error)
{
	json_t *root;
	int k;

	memset(r, 0, sizeof(*r));
	*ret_error = NULL;
	root = load(body, len, ret_error);
	if (!root)
		return -EPROTO;
	k = reply_fill(kind, root, r, ret_error);
	json_decref(root);
	if (k < 0)
		etcd_result_clear(r);
	return k;
}

char *etcd_error_body(const char *body, size_t len, int *ret_code)
{
	_cleanup_free_ char *why = NULL;
	json_t *root, *e, *msg, *code = NULL;
	char *m = NULL;

	if (ret_code)
		*ret_code = -1;
	if (!body || len == 0)
		return NULL;
	root = load(body, len, &why);
	if (!root)
		return NULL;
	e = json_object_get(root, "error");
	if (json_is_object(e)) {
		/* a stream's {"error":{"grpc_code":14,"http_code":503,"message":...}} */
		msg = json_object_get(e, "message");
		code = json_object_get(e, "grpc_code");
	} else {
		msg = json_object_get(root, "message");
		if (!json_is_string(msg))
			msg = e;
		code = json_object_get(root, "code");
	}
	if (json_is_string(msg))
		m = str_escape_ctl(json_string_value(msg));
	if (ret_code && json_is_integer(code))
		*ret_code = (int)json_integer_value(code);
	json_decref(root);
	return m;
}

/* ---- watch messages ---- */

static void events_free(struct etcd_event *ev, size_t n)
{
	for (size_t i = 0; i < n; i++)
		kv_clear(&ev[i].kv);
	free(ev);
}

void etcd_watch_message_clear(struct etcd_watch_message *m)
{
	events_free(m->events, m->n_events);
	free(m->error);
	memset(m, 0, sizeof(*m));
}

static int events_parse(json_t *arr, struct etcd_watch_message *m)
{
	size_t n;

	if (!arr || json_is_null(arr))
		return 0;
	if (!json_is_array(arr)) {
		m->error = xstrdup("$.result.events: not an array");
		return -EPROTO;
	}
	n = json_array_size(arr);
	if (n > ETCD_ITEMS_MAX) {
		m->error = xasprintf("$.result.events: more than %d events", ETCD_ITEMS_MAX);
		return -EPROTO;
	}
	if (n == 0)
		return 0;
	m->events = xcalloc(n, sizeof(*m->events));
	for (size_t i = 0; i < n; i++) {
		json_t *ev = json_array_get(arr, i), *type;
		struct etcd_event *e = &m->events[i];
		const char *why;
		int k;

		if (!json_is_object(ev)) {
			m->error = xasprintf("$.result.events[%zu]: not an object", i);
			return -EPROTO;
		}
		/* proto3 omits the default: no "type" is a PUT. */
		type = json_object_get(ev, "type");
		if (!type || json_is_null(type) || (json_is_string(type) && strcmp(json_string_value(type), "PUT") == 0))
			e->type = ETCD_EVENT_PUT;
		else if (json_is_string(type) && strcmp(json_string_value(type), "DELETE") == 0)
			e->type = ETCD_EVENT_DELETE;
		else if (json_is_integer(type) && json_integer_value(type) <= 1)
			e->type = json_integer_value(type) == 1 ? ETCD_EVENT_DELETE : ETCD_EVENT_PUT;
		else {
			m->error = xasprintf("$.result.events[%zu].type: neither PUT nor DELETE", i);
			return -EPROTO;
		}
		k = kv_parse(json_object_get(ev, "kv"), &e->kv, &why);
		if (k < 0) {
			_cleanup_free_ char *p = xasprintf("$.result.events[%zu].kv%s", i, why);
			m->error = cause(k, p);
			return k;
		}
		m->n_events = i + 1;
	}
	return 0;
}

static int result_parse(json_t *res, struct etcd_watch_message *m)
{
	json_t *h = json_object_get(res, "header");
	bool created, canceled;
	int k;

	if (h && !json_is_object(h)) {
		m->error = xstrdup("$.result.header: not an object");
		return -EPROTO;
	}
	if (get_int64(h, "revision", &m->revision) < 0) {
		m->error = xstrdup("$.result.header.revision: not an int64");
		return -EPROTO;
	}
	if (get_int64(res, "compact_revision", &m->compact_revision) < 0) {
		m->error = xstrdup("$.result.compact_revision: not an int64");
		return -EPROTO;
	}
	if (get_bool(res, "created", &created) < 0 || get_bool(res, "canceled", &canceled) < 0) {
		m->error = xstrdup("$.result.created/canceled: not a boolean");
		return -EPROTO;
	}
	/* Compaction first, whatever "canceled" says (etcd #8231). */
	if (m->compact_revision != 0) {
		m->kind = ETCD_WATCH_COMPACTED;
		return 0;
	}
	if (canceled) {
		json_t *reason = json_object_get(res, "cancel_reason");
		_cleanup_free_ char *r = json_is_string(reason) ? str_escape_ctl(json_string_value(reason)) : NULL;
		m->kind = ETCD_WATCH_FAILED;
		m->error = xasprintf("the watch was canceled%s%s", r && *r ? ": " : "", r && *r ? r : "");
		return 0;
	}
	if (!h) {
		m->error = xstrdup("$.result.header: missing");
		return -EPROTO;
	}
	if ((k = events_parse(json_object_get(res, "events"), m)) < 0)
		return k;
	if (created && m->n_events > 0) {
		m->error = xstrdup("$.result: created with events");
		return -EPROTO;
	}
	m->kind = created ? ETCD_WATCH_CREATED : ETCD_WATCH_EVENTS;
	return 0;
}

int etcd_watch_message_parse(const char *msg, size_t len, struct etcd_watch_message *m)
{
	json_t *root, *res, *err;
	int k;

	memset(m, 0, sizeof(*m));
	root = load(msg, len, &m->error);
	if (!root)
		return -EPROTO;
	res = json_object_get(root, "result");
	err = json_object_get(root, "error");
	if (err) {
		json_t *text = json_is_object(err) ? json_object_get(err, "message") : err;
		_cleanup_free_ char *t = json_is_string(text) ? str_escape_ctl(json_string_value(text)) : NULL;
		m->kind = ETCD_WATCH_FAILED;
		m->error = xasprintf("error in the stream: %s", t ? t : "(no message)");
		k = 0;
	} else if (json_is_object(res)) {
		k = result_parse(res, m);
	} else {
		m->error = xstrdup("$: neither result nor error");
		k = -EPROTO;
	}
	json_decref(root);
	if (k < 0) {
		char *e = m->error;
		m->error = NULL;
		etcd_watch_message_clear(m);
		m->error = e;
	}
	return k;
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* The etcd v3 JSON gateway client (fleet/etcd.h): endpoints and TLS files,
 * unary calls (one POST each, tried on each endpoint at most once), and the
 * watch stream read through etcd_stream.c and parsed by etcd_json.c.
 *
 * Callbacks into the user run from the loop only, never from inside libcurl
 * (whose callbacks may not start or cancel a transfer, CURLM_RECURSIVE_API_
 * CALL): a call's from its HTTP done callback; a watch's messages are queued
 * by the body callback and delivered by a 0 ms timer, its end by the done
 * callback or the silence timer, after what was queued before it. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "fleet/etcd.h"
#include "io/http.h"
#include "util.h"

#define ETCD_CALL_TIMEOUT_MS 5000L
#define ETCD_CONNECT_TIMEOUT_MS 2000L
/* A reply or a stream message: every value base64 (4/3) plus its prev_kv,
 * and a range of a whole prefix. */
#define ETCD_REPLY_MAX ((size_t)4 * ETCD_VALUE_MAX)
/* The body of an HTTP error answer kept for its message. */
#define ETCD_ERROR_BODY_MAX 4096
#define ETCD_BACKOFF_FIRST_MS 100
#define ETCD_BACKOFF_CAP_MS 5000

struct etcd {
	uv_loop_t *loop;         /* borrowed */
	struct http *http;       /* borrowed */
	char **endpoints;        /* owned, "http://h:p" */
	size_t n_endpoints;
	size_t current;          /* where the next call or watch goes */
	char *prefix;            /* owned, "/agentd/prod" */
	char *ca, *cert, *key;   /* owned, NULL: none (https only) */
	long call_timeout_ms, connect_timeout_ms;
	struct etcd_call *calls; /* in flight */
	struct etcd_watch *watches;
};

struct etcd_call {
	struct etcd *c;          /* borrowed */
	struct etcd_call *prev, *next;
	enum etcd_reply_kind kind;
	const char *path;        /* "/v3/kv/range" */
	char *body;              /* owned, the request's JSON */
	size_t endpoint;         /* the one tried now */
	size_t tries;
	struct buf failures;     /* "; "-joined causes of the endpoints tried */
	struct http_request *req;
	etcd_cb cb;
	void *userdata;
	bool in_cb;
};

enum watch_end { WATCH_GOING, WATCH_COMPACTED, WATCH_FAILED };

struct watch_msg;

struct etcd_watch {
	struct etcd *c;          /* borrowed, NULL once detached (cancelled, ended) */
	struct etcd_watch *prev, *next;
	struct etcd_watch_callbacks cbs;
	void *userdata;
	size_t endpoint;
	char *endpoint_url;      /* owned, for messages */
	struct http_request *req;
	uv_timer_t *timer;       /* owned (freed by its close callback), NULL: no silence deadline */
	uint64_t silence_ms;
	uv_timer_t *dispatch;    /* owned: 0 ms, delivers the queue from the loop */
	struct etcd_stream_reader *rd;
	struct watch_msg *queue; /* owned: complete messages not delivered yet, oldest first */
	struct watch_msg **queue_tail;
	struct buf error_body;   /* of a non-200 answer */
	long status;
	bool busy;               /* delivering: a cancel now only marks it */
	bool cancelled;
	bool ending;             /* inside on_compacted / on_error */
	enum watch_end end;
	bool end_from_message;
	int64_t compact_revision;
	char *end_message;       /* owned */
};

/* ---- endpoints, the client ---- */

/* "host:port" of an etcd URL: a DNS name or IPv4 address, or "[IPv6]". */
static bool endpoint_is_valid(const char *s, size_t n)
{
	size_t i = 0, colon;
	long port;

	if (n == 0 || n > 300)
		return false;
	if (s[0] == '[') {
		const char *close = memchr(s, ']', n);
		if (!close || close == s + 1)
			return false;
		for (const char *p = s + 1; p < close; p++)
			if (!strchr("0123456789abcdefABCDEF:.", *p))
				return false;
		i = (size_t)(close - s) + 1;
	} else {
		while (i < n && (strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-", s[i]) && s[i]))
			i++;
		if (i == 0)
			return false;
	}
	if (i >= n || s[i] != ':')
		return false;
	colon = i + 1;
	if (colon >= n || n - colon > 5)
		return false;
	_cleanup_free_ char *p = xstrndup(s + colon, n - colon);
	return parse_long(p, 1, 65535, &port) == 0;
}

static bool prefix_is_valid(const char *p)
{
	if (!*p)
		return false;
	for (;;) {
		size_t n = strcspn(p, "/");
		if (n == 0 || (n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		for (size_t i = 0; i < n; i++)
			if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-~@+=:", p[i]))
				return false;
		if (!p[n])
			return true;
		p += n + 1;
	}
}

static int tls_file(const char *what, const char *path, char **ret, char **ret_error)
{
	if (!path)
		return 0;
	if (access(path, R_OK) < 0) {
		*ret_error = xasprintf("%s %s: %s", what, path, strerror(errno));
		return -EINVAL;
	}
	*ret = xstrdup(path);
	return 0;
}

int etcd_new(uv_loop_t *loop, struct http *http, const struct config *config, const char *url, struct etcd **ret,
	     char **ret_error)
{
	_cleanup_free_ char *shown = url ? str_escape_ctl(url) : NULL;
	const char *rest, *slash;
	struct etcd *c;
	bool tls;

	*ret_error = NULL;
	if (!url) {
		*ret_error = xstrdup("etcd: no URL");
		return -EINVAL;
	}
	if (strncmp(url, "etcd://", 7) == 0) {
		tls = false;
		rest = url + 7;
	} else if (strncmp(url, "etcd+https://", 13) == 0) {
		tls = true;
		rest = url + 13;
	} else {
		*ret_error = xasprintf("%s: not etcd://HOST:PORT[,HOST:PORT...]/PREFIX or etcd+https://...", shown);
		return -EINVAL;
	}
	slash = strchr(rest, '/');
	if (!slash || slash == rest) {
		*ret_error = xasprintf("%s: no HOST:PORT before /PREFIX", shown);
		return -EINVAL;
	}
	if (!prefix_is_valid(slash + 1)) {
		*ret_error = xasprintf("%s: the PREFIX must be one or more path segments of [A-Za-z0-9._-~@+=:], "
				       "without \".\", \"..\", an empty segment or a trailing \"/\"", shown);
		return -EINVAL;
	}

	c = xcalloc(1, sizeof(*c));
	c->loop = loop;
	c->http = http;
	c->call_timeout_ms = ETCD_CALL_TIMEOUT_MS;
	c->connect_timeout_ms = ETCD_CONNECT_TIMEOUT_MS;
	c->prefix = xstrdup(slash);
	for (const char *p = rest;;) {
		size_t n = strcspn(p, ",/");
		if (!endpoint_is_valid(p, n)) {
			_cleanup_free_ char *e = xstrndup(p, n), *es = str_escape_ctl(e);
			*ret_error = xasprintf("%s: endpoint \"%s\" is not HOST:PORT", shown, es);
			etcd_free(c);
			return -EINVAL;
		}
		c->endpoints = xrealloc(c->endpoints, (c->n_endpoints + 1) * sizeof(char *));
		c->endpoints[c->n_endpoints++] = xasprintf("%s://%.*s", tls ? "https" : "http", (int)n, p);
		p += n;
		if (*p == '/')
			break;
		p++; /* ',' */
	}
	if (tls && config &&
	    (tls_file("etcd_ca", config->etcd_ca, &c->ca, ret_error) < 0 ||
	     tls_file("etcd_cert", config->etcd_cert, &c->cert, ret_error) < 0 ||
	     tls_file("etcd_key", config->etcd_key, &c->key, ret_error) < 0)) {
		char *why = *ret_error;
		*ret_error = xasprintf("%s: %s", shown, why);
		free(why);
		etcd_free(c);
		return -EINVAL;
	}
	*ret = c;
	return 0;
}

static void call_free(struct etcd_call *call);
static void call_unlink(struct etcd_call *call);
static void watch_detach(struct etcd_watch *w);
static void watch_destroy(struct etcd_watch *w);

void etcd_free(struct etcd *c)
{
	if (!c)
		return;
	while (c->calls) {
		struct etcd_call *call = c->calls;
		call_unlink(call);
		http_request_cancel(call->req);
		call_free(call);
	}
	while (c->watches)
		etcd_watch_cancel(c->watches);
	for (size_t i = 0; i < c->n_endpoints; i++)
		free(c->endpoints[i]);
	free(c->endpoints);
	free(c->prefix);
	free(c->ca);
	free(c->cert);
	free(c->key);
	free(c);
}

const char *etcd_prefix(const struct etcd *c)
{
	return c->prefix;
}

const char *etcd_endpoint(const struct etcd *c)
{
	return c->endpoints[c->current];
}

void etcd_set_timeouts(struct etcd *c, long call_timeout_ms, long connect_timeout_ms)
{
	if (call_timeout_ms > 0)
		c->call_timeout_ms = call_timeout_ms;
	if (connect_timeout_ms > 0)
		c->connect_timeout_ms = connect_timeout_ms;
}

uint64_t etcd_backoff_ms(unsigned n)
{
	static uint64_t state;
	uint64_t base = ETCD_BACKOFF_FIRST_MS;

	if (!state)
		state = ((uint64_t)time_monotonic_usec() ^ ((uint64_t)getpid() << 32)) | 1;
	/* xorshift64: jitter, not secrets. */
	state ^= state << 13;
	state ^= state >> 7;
	state ^= state << 17;
	for (unsigned i = 1; i < n && base < ETCD_BACKOFF_CAP_MS; i++)
		base *= 2;
	if (base > ETCD_BACKOFF_CAP_MS)
		base = ETCD_BACKOFF_CAP_MS;
	/* base ± 50% */
	return base / 2 + state % (base + 1);
}

/* Moves the client past endpoint i when it is still the current one. */
static void endpoint_failed(struct etcd *c, size_t i)
{
	if (c && c->current == i)
		c->current = (i + 1) % c->n_endpoints;
}

static void http_options_init(const struct etcd *c, struct http_options *o, const char *url, const char *body)
{
	static const char *const headers[] = { "Content-Type: application/json", NULL };

	memset(o, 0, sizeof(*o));
	o->method = "POST";
	o->url = url;
	o->headers = headers;
	o->body = body;
	o->body_len = strlen(body);
	o->connect_timeout_ms = c->connect_timeout_ms;
	/* etcd is reached directly: a proxy from the environment would only
	 * add a hop that can hold a watch open after etcd went away. */
	o->no_proxy = true;
	o->ca_file = c->ca;
	o->client_cert = c->cert;
	o->client_key = c->key;
}

static int key_check(const char *key)
{
	if (!key || !*key)
		return -EINVAL;
	return strlen(key) > ETCD_VALUE_MAX ? -EFBIG : 0;
}

/* ---- unary calls ---- */

static void call_unlink(struct etcd_call *call)
{
	struct etcd *c = call->c;
	if (call->prev)
		call->prev->next = call->next;
	else if (c && c->calls == call)
		c->calls = call->next;
	if (call->next)
		call->next->prev = call->prev;
	call->prev = call->next = NULL;
}

static void call_free(struct etcd_call *call)
{
	free(call->body);
	buf_free(&call->failures);
	free(call);
}

static void on_call_done(void *userdata, const struct http_response *resp);

static int call_send(struct etcd_call *call)
{
	struct etcd *c = call->c;
	struct http_options o;
	_cleanup_free_ char *url = xasprintf("%s%s", c->endpoints[call->endpoint], call->path);

	http_options_init(c, &o, url, call->body);
	o.timeout_ms = c->call_timeout_ms;
	o.max_body = ETCD_REPLY_MAX;
	return http_request_start(c->http, &o, on_call_done, call, &call->req);
}

static void call_finish(struct etcd_call *call, struct etcd_result *r)
{
	call_unlink(call);
	call->c = NULL;
	call->in_cb = true;
	call->cb(call->userdata, r);
	etcd_result_clear(r);
	call_free(call);
}

static void call_fail(struct etcd_call *call, int error, char *message)
{
	struct etcd_result r = { .error = error, .message = message };
	call_finish(call, &r);
}

/* Tries the next endpoint not tried yet, or fails with every cause. */
static void call_retry(struct etcd_call *call, char *cause)
{
	struct etcd *c = call->c;
	int k;

	if (call->failures.len)
		buf_puts(&call->failures, "; ");
	buf_puts(&call->failures, cause);
	free(cause);
	endpoint_failed(c, call->endpoint);
	while (++call->tries < c->n_endpoints) {
		call->endpoint = (call->endpoint + 1) % c->n_endpoints;
		if ((k = call_send(call)) == 0)
			return;
		buf_printf(&call->failures, "; %s%s: %s", c->endpoints[call->endpoint], call->path, strerror(-k));
	}
	call_fail(call, -EIO, xasprintf("etcd: %s", call->failures.data));
}

static void on_call_done(void *userdata, const struct http_response *resp)
{
	struct etcd_call *call = userdata;
	const char *ep = call->c->endpoints[call->endpoint];
	struct etcd_result r;
	char *why = NULL;
	int k, code;

	call->req = NULL;
	if (resp->curl_code != 0 && resp->truncated) {
		call_fail(call, -EFBIG, xasprintf("etcd %s", resp->error));
		return;
	}
	if (resp->curl_code != 0) {
		call_retry(call, xstrdup(resp->error));
		return;
	}
	if (resp->status < 200 || resp->status > 299) {
		_cleanup_free_ char *m = etcd_error_body(resp->body, resp->body_len, &code);
		char *cause = xasprintf("%s%s: HTTP %ld%s%s", ep, call->path, resp->status, m ? ": " : "", m ? m : "");
		if (resp->status >= 500) {
			call_retry(call, cause);
			return;
		}
		/* gRPC NotFound on a lease call or a put under a lease:
		 * "etcdserver: requested lease not found". */
		call_fail(call, code == 5 ? -ENOENT : -EIO, xasprintf("etcd %s", cause));
		free(cause);
		return;
	}
	k = etcd_reply_parse(call->kind, resp->body, resp->body_len, &r, &why);
	if (k < 0) {
		call_fail(call, k, xasprintf("etcd %s%s: %s", ep, call->path, why));
		free(why);
		return;
	}
	call_finish(call, &r);
}

static int call_start(struct etcd *c, enum etcd_reply_kind kind, const char *path, char *body, etcd_cb cb,
		      void *userdata, struct etcd_call **ret)
{
	struct etcd_call *call;
	int k;

	if (!cb) {
		free(body);
		return -EINVAL;
	}
	call = xcalloc(1, sizeof(*call));
	call->c = c;
	call->kind = kind;
	call->path = path;
	call->body = body;
	call->endpoint = c->current;
	call->cb = cb;
	call->userdata = userdata;
	buf_init(&call->failures);
	k = call_send(call);
	if (k < 0) {
		call_free(call);
		return k;
	}
	call->next = c->calls;
	if (c->calls)
		c->calls->prev = call;
	c->calls = call;
	if (ret)
		*ret = call;
	return 0;
}

void etcd_call_cancel(struct etcd_call *call)
{
	if (!call || call->in_cb)
		return;
	call_unlink(call);
	http_request_cancel(call->req);
	call_free(call);
}

int etcd_range(struct etcd *c, const char *key, const struct etcd_range_options *o, etcd_cb cb, void *userdata,
	       struct etcd_call **ret)
{
	static const struct etcd_range_options none;
	int k;

	if ((k = key_check(key)) < 0)
		return k;
	if (!o)
		o = &none;
	if (o->limit < 0 || o->revision < 0 || o->min_mod_revision < 0)
		return -EINVAL;
	return call_start(c, ETCD_REPLY_RANGE, "/v3/kv/range", etcd_json_range(key, o), cb, userdata, ret);
}

int etcd_put(struct etcd *c, const char *key, const char *value, size_t value_len, int64_t lease, etcd_cb cb,
	     void *userdata, struct etcd_call **ret)
{
	int k;

	if ((k = key_check(key)) < 0)
		return k;
	if ((!value && value_len) || lease < 0)
		return -EINVAL;
	if (value_len > ETCD_VALUE_MAX)
		return -EFBIG;
	return call_start(c, ETCD_REPLY_PUT, "/v3/kv/put", etcd_json_put(key, value, value_len, lease), cb,
			  userdata, ret);
}

int etcd_delete(struct etcd *c, const char *key, bool prefix, etcd_cb cb, void *userdata, struct etcd_call **ret)
{
	int k;

	if ((k = key_check(key)) < 0)
		return k;
	return call_start(c, ETCD_REPLY_DELETE, "/v3/kv/deleterange", etcd_json_delete(key, prefix), cb, userdata,
			  ret);
}

/* ---- txn ---- */

static int ops_check(const struct etcd_op *ops, size_t n, size_t *total)
{
	int k;

	if (n && !ops)
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if ((unsigned)ops[i].type > ETCD_OP_DELETE || (k = key_check(ops[i].key)) < 0)
			return (unsigned)ops[i].type > ETCD_OP_DELETE ? -EINVAL : k;
		if (ops[i].type == ETCD_OP_PUT) {
			if ((!ops[i].value && ops[i].value_len) || ops[i].lease < 0)
				return -EINVAL;
			if (ops[i].value_len > ETCD_VALUE_MAX - *total)
				return -EFBIG;
			*total += ops[i].value_len;
		}
	}
	return 0;
}

int etcd_txn(struct etcd *c, const struct etcd_compare *cmp, size_t n_cmp, const struct etcd_op *success,
	     size_t n_success, const struct etcd_op *failure, size_t n_failure, etcd_cb cb, void *userdata,
	     struct etcd_call **ret)
{
	size_t total = 0;
	int k;

	if (n_cmp && !cmp)
		return -EINVAL;
	for (size_t i = 0; i < n_cmp; i++) {
		if ((unsigned)cmp[i].target > ETCD_CMP_LEASE || (unsigned)cmp[i].result > ETCD_CMP_NOT_EQUAL)
			return -EINVAL;
		if ((k = key_check(cmp[i].key)) < 0)
			return k;
		if (cmp[i].target == ETCD_CMP_VALUE && !cmp[i].value && cmp[i].value_len)
			return -EINVAL;
		if (cmp[i].target == ETCD_CMP_VALUE && cmp[i].value_len > ETCD_VALUE_MAX)
			return -EFBIG;
	}
	if ((k = ops_check(success, n_success, &total)) < 0 || (k = ops_check(failure, n_failure, &total)) < 0)
		return k;

	return call_start(c, ETCD_REPLY_TXN, "/v3/kv/txn",
			  etcd_json_txn(cmp, n_cmp, success, n_success, failure, n_failure), cb, userdata, ret);
}

/* ---- leases ---- */

int etcd_lease_grant(struct etcd *c, long ttl, etcd_cb cb, void *userdata, struct etcd_call **ret)
{
	if (ttl <= 0)
		return -EINVAL;
	return call_start(c, ETCD_REPLY_LEASE_GRANT, "/v3/lease/grant", etcd_json_lease(0, ttl), cb, userdata, ret);
}

int etcd_lease_keepalive(struct etcd *c, int64_t lease, etcd_cb cb, void *userdata, struct etcd_call **ret)
{
	if (lease <= 0)
		return -EINVAL;
	return call_start(c, ETCD_REPLY_LEASE_KEEPALIVE, "/v3/lease/keepalive", etcd_json_lease(lease, 0), cb, userdata, ret);
}

int etcd_lease_revoke(struct etcd *c, int64_t lease, etcd_cb cb, void *userdata, struct etcd_call **ret)
{
	if (lease <= 0)
		return -EINVAL;
	return call_start(c, ETCD_REPLY_LEASE_REVOKE, "/v3/lease/revoke", etcd_json_lease(lease, 0), cb, userdata, ret);
}

int etcd_lease_ttl(struct etcd *c, int64_t lease, etcd_cb cb, void *userdata, struct etcd_call **ret)
{
	if (lease <= 0)
		return -EINVAL;
	return call_start(c, ETCD_REPLY_LEASE_TTL, "/v3/lease/timetolive", etcd_json_lease(lease, 0), cb, userdata, ret);
}

/* ---- watch ---- */

/* A complete message from the stream, waiting for the loop to deliver it. */
struct watch_msg {
	struct watch_msg *next;
	size_t len;
	char data[];
};

static void on_handle_free(uv_handle_t *h)
{
	free(h);
}

static void watch_detach(struct etcd_watch *w)
{
	struct etcd *c = w->c;

	if (!c)
		return;
	if (w->prev)
		w->prev->next = w->next;
	else if (c->watches == w)
		c->watches = w->next;
	if (w->next)
		w->next->prev = w->prev;
	w->prev = w->next = NULL;
	w->c = NULL;
}

static void watch_destroy(struct etcd_watch *w)
{
	watch_detach(w);
	http_request_cancel(w->req);
	if (w->timer)
		uv_close((uv_handle_t *)w->timer, on_handle_free);
	uv_close((uv_handle_t *)w->dispatch, on_handle_free);
	while (w->queue) {
		struct watch_msg *m = w->queue;
		w->queue = m->next;
		free(m);
	}
	etcd_stream_reader_free(w->rd);
	buf_free(&w->error_body);
	free(w->endpoint_url);
	free(w->end_message);
	free(w);
}

/* Records why the stream ends (the first reason wins, except that what a
 * message said beats what the transport said after it). */
static void watch_set_end(struct etcd_watch *w, enum watch_end end, bool from_message, char *message)
{
	if (w->end != WATCH_GOING && !(from_message && !w->end_from_message)) {
		free(message);
		return;
	}
	free(w->end_message);
	w->end = end;
	w->end_from_message = from_message;
	w->end_message = message;
}

/* Delivers one queued message; false when it ends the stream. */
static bool watch_deliver(struct etcd_watch *w, const struct watch_msg *msg)
{
	struct etcd_watch_message m;
	bool going = true;

	if (etcd_watch_message_parse(msg->data, msg->len, &m) < 0) {
		watch_set_end(w, WATCH_FAILED, true, xasprintf("etcd %s/v3/watch: %s", w->endpoint_url, m.error));
		going = false;
	} else if (m.kind == ETCD_WATCH_CREATED) {
		if (w->cbs.on_created)
			w->cbs.on_created(w->userdata, m.revision);
	} else if (m.kind == ETCD_WATCH_EVENTS) {
		if (w->cbs.on_events)
			w->cbs.on_events(w->userdata, m.revision, m.events, m.n_events);
	} else if (m.kind == ETCD_WATCH_COMPACTED) {
		w->compact_revision = m.compact_revision;
		watch_set_end(w, WATCH_COMPACTED, true, NULL);
		going = false;
	} else {
		watch_set_end(w, WATCH_FAILED, true, xasprintf("etcd %s/v3/watch: %s", w->endpoint_url, m.error));
		going = false;
	}
	etcd_watch_message_clear(&m);
	return going;
}

/* From the loop, never from inside libcurl (whose callbacks must not start
 * or cancel transfers, which a user's callback may well do): the queued
 * messages in order, then the end of the stream if it came. */
static void watch_dispatch(struct etcd_watch *w)
{
	w->busy = true;
	while (w->queue && !w->cancelled) {
		struct watch_msg *m = w->queue;
		w->queue = m->next;
		bool going = watch_deliver(w, m);
		free(m);
		if (!going)
			break;
	}
	w->busy = false;
	if (w->cancelled) {
		watch_destroy(w);
		return;
	}
	if (w->end == WATCH_GOING)
		return;
	http_request_cancel(w->req);
	w->req = NULL;
	if (w->end != WATCH_COMPACTED)
		endpoint_failed(w->c, w->endpoint);
	watch_detach(w);
	w->ending = true;
	if (w->end == WATCH_COMPACTED) {
		if (w->cbs.on_compacted)
			w->cbs.on_compacted(w->userdata, w->compact_revision);
	} else if (w->cbs.on_error)
		w->cbs.on_error(w->userdata, w->end_message);
	watch_destroy(w);
}

static void on_dispatch(uv_timer_t *t)
{
	watch_dispatch(t->data);
}

static void on_silence(uv_timer_t *t)
{
	struct etcd_watch *w = t->data;

	watch_set_end(w, WATCH_FAILED, false,
		      xasprintf("etcd %s/v3/watch: no message for %" PRIu64 " ms", w->endpoint_url, w->silence_ms));
	watch_dispatch(w);
}

static void watch_alive(struct etcd_watch *w)
{
	if (w->timer)
		(void)uv_timer_start(w->timer, on_silence, w->silence_ms, 0);
}

static int on_watch_message(void *userdata, const char *data, size_t len)
{
	struct etcd_watch *w = userdata;
	struct watch_msg *m = xmalloc(sizeof(*m) + len);

	m->next = NULL;
	m->len = len;
	memcpy(m->data, data, len);
	*w->queue_tail = m;
	w->queue_tail = &m->next;
	return 0;
}

/* Inside libcurl's write callback: queue, nothing else. */
static int on_watch_body(void *userdata, long status, const char *data, size_t len)
{
	struct etcd_watch *w = userdata;
	int k;

	if (w->end != WATCH_GOING)
		return -ECANCELED;
	watch_alive(w);
	w->status = status;
	if (status != 200) {
		size_t room = ETCD_ERROR_BODY_MAX - w->error_body.len;
		buf_append(&w->error_body, data, len < room ? len : room);
		return w->error_body.len >= ETCD_ERROR_BODY_MAX ? -EMSGSIZE : 0;
	}
	if (!w->queue)
		w->queue_tail = &w->queue;
	k = etcd_stream_reader_feed(w->rd, data, len, on_watch_message, w);
	if (w->queue)
		(void)uv_timer_start(w->dispatch, on_dispatch, 0, 0);
	if (k == -EBADMSG)
		watch_set_end(w, WATCH_FAILED, false,
			      xasprintf("etcd %s/v3/watch: the stream is not a sequence of JSON objects",
					w->endpoint_url));
	else if (k == -EFBIG)
		watch_set_end(w, WATCH_FAILED, false,
			      xasprintf("etcd %s/v3/watch: a message larger than %zu bytes", w->endpoint_url,
					ETCD_REPLY_MAX));
	return k < 0 ? k : 0;
}

static void on_watch_done(void *userdata, const struct http_response *resp)
{
	struct etcd_watch *w = userdata;

	w->req = NULL;
	if (w->status != 0 && w->status != 200) {
		_cleanup_free_ char *m = etcd_error_body(w->error_body.data, w->error_body.len, NULL);
		watch_set_end(w, WATCH_FAILED, false, xasprintf("etcd %s/v3/watch: HTTP %ld%s%s", w->endpoint_url,
								w->status, m ? ": " : "", m ? m : ""));
	} else if (resp->curl_code != 0)
		watch_set_end(w, WATCH_FAILED, false, xasprintf("etcd %s", resp->error));
	else if (resp->status != 200)
		watch_set_end(w, WATCH_FAILED, false,
			      xasprintf("etcd %s/v3/watch: HTTP %ld", w->endpoint_url, resp->status));
	else
		watch_set_end(w, WATCH_FAILED, false, xasprintf("etcd %s/v3/watch: the stream ended", w->endpoint_url));
	/* Outside libcurl's callbacks here: what is queued, then the end. */
	watch_dispatch(w);
}

int etcd_watch_start(struct etcd *c, const char *key, bool prefix, int64_t start_revision, uint64_t silence_ms,
		     const struct etcd_watch_callbacks *cbs, void *userdata, struct etcd_watch **ret)
{
	struct http_options o;
	struct etcd_watch *w;
	_cleanup_free_ char *body = NULL, *url = NULL;
	int k;

	if ((k = key_check(key)) < 0)
		return k;
	if (!cbs || start_revision < 0)
		return -EINVAL;
	body = etcd_json_watch(key, prefix, start_revision);

	w = xcalloc(1, sizeof(*w));
	w->cbs = *cbs;
	w->userdata = userdata;
	w->endpoint = c->current;
	w->endpoint_url = xstrdup(c->endpoints[w->endpoint]);
	w->silence_ms = silence_ms;
	w->rd = etcd_stream_reader_new(ETCD_REPLY_MAX);
	w->queue_tail = &w->queue;
	buf_init(&w->error_body);
	w->dispatch = xmalloc(sizeof(*w->dispatch));
	(void)uv_timer_init(c->loop, w->dispatch);
	w->dispatch->data = w;
	if (silence_ms) {
		w->timer = xmalloc(sizeof(*w->timer));
		(void)uv_timer_init(c->loop, w->timer);
		w->timer->data = w;
	}
	url = xasprintf("%s/v3/watch", w->endpoint_url);
	http_options_init(c, &o, url, body);
	o.timeout_ms = HTTP_NO_DEADLINE;
	o.on_body = on_watch_body;
	k = http_request_start(c->http, &o, on_watch_done, w, &w->req);
	if (k < 0) {
		watch_destroy(w);
		return k;
	}
	watch_alive(w);
	w->c = c;
	w->next = c->watches;
	if (c->watches)
		c->watches->prev = w;
	c->watches = w;
	if (ret)
		*ret = w;
	return 0;
}

void etcd_watch_cancel(struct etcd_watch *w)
{
	if (!w || w->cancelled || w->ending)
		return;
	watch_detach(w);
	if (w->busy) {
		/* Inside this watch's own callback: the dispatcher frees it
		 * when the callback returns. */
		w->cancelled = true;
		return;
	}
	watch_destroy(w);
}

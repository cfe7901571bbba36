/* SPDX-License-Identifier: BSD-2-Clause */
/* A small client of etcd v3's JSON gateway (etcd.io/docs/v3.4/dev-guide/
 * api_grpc_gateway/) on our io/http.c: kv range, put, delete and txn;
 * lease grant, keepalive and revoke; a watch stream read incrementally.
 * Nothing above fleet/ knows the gateway's JSON or base64: keys and values
 * here are plain bytes, revisions and lease ids int64.
 *
 * Facts it follows (reference/protocols.md, "etcd v3 JSON gateway"):
 * paths under /v3/; keys and values base64; int64 fields as JSON strings;
 * fields at their proto3 default omitted (no "kvs", no event "type" for a
 * PUT, no "TTL" for a lost lease); one POST per keepalive (etcd #8237);
 * a watch is cancelled by closing its connection (#12333); errors may come
 * inside a stream as {"error": {...}}; stream messages do not line up with
 * chunks or lines (#11372).
 *
 * Endpoints: a client has one or more (etcd://h1:p1,h2:p2/PREFIX). A call
 * goes to the current endpoint; on a transport failure or a 5xx it moves on
 * to the next one and tries again, each endpoint once per call, then fails.
 * Callers retry failed calls after etcd_backoff_ms(). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct config;
struct http;
struct etcd;        /* one client: endpoints, prefix, TLS files */
struct etcd_call;   /* one unary call in flight */
struct etcd_watch;  /* one watch stream */

/* Largest value the client accepts in a reply or sends, in bytes (etcd's
 * own default request cap is 1.5 MiB; a stack is at most 16 MiB, which
 * an operator must allow with --max-request-bytes). */
#define ETCD_VALUE_MAX (16 * 1024 * 1024 + 4096)

/* Parses "etcd://HOST:PORT[,HOST:PORT...]/PREFIX" or "etcd+https://...".
 * PREFIX is one or more path segments without "." or ".." and without a
 * trailing "/" (the client adds "/" between it and its keys: the stack is
 * "<PREFIX>/stack"). TLS files come from config (etcd_ca, etcd_cert,
 * etcd_key) and are required to be readable for etcd+https:// only when
 * named. Returns 0, or -EINVAL with a malloc'd message naming the URL. */
int etcd_new(uv_loop_t *loop, struct http *http, const struct config *config, const char *url, struct etcd **ret,
	     char **ret_error);
/* Cancels every call and watch (their callbacks are not called). */
void etcd_free(struct etcd *c);
/* "/agentd/prod" form, borrowed: the prefix with a leading "/" and no
 * trailing one, as keys start. */
const char *etcd_prefix(const struct etcd *c);
/* The endpoint calls go to now ("http://127.0.0.1:2379"), borrowed. */
const char *etcd_endpoint(const struct etcd *c);
/* Capped exponential backoff with jitter for the n-th failure in a row
 * (n >= 1): about 100 ms, 200 ms, ... capped at 5 s, each ±50%, so that a
 * fleet that lost etcd does not come back in lockstep (etcd #9246). */
uint64_t etcd_backoff_ms(unsigned n);
/* Deadlines of the HTTP requests, in ms (0: keep): a unary call's whole
 * request on one endpoint (default 5000) and every connect, watches
 * included (default 2000). A call that times out moves on to the next
 * endpoint like any transport failure. (An addition to the first header.) */
void etcd_set_timeouts(struct etcd *c, long call_timeout_ms, long connect_timeout_ms);

struct etcd_kv {
	char *key;              /* NUL-terminated (a key is never empty) */
	size_t key_len;
	char *value;            /* NUL-terminated copy, value_len bytes before the NUL */
	size_t value_len;
	int64_t create_revision;
	int64_t mod_revision;
	int64_t version;
	int64_t lease;          /* 0: none */
};

/* What a call returns; valid only during the callback. */
struct etcd_result {
	int error;              /* 0, or a negative errno: -EIO transport or HTTP error, -EPROTO a reply that
	                         * does not parse as the gateway's JSON, -ENOENT (lease calls, and a put under a
	                         * lease) lease not found: keepalive without TTL, timetolive -1, gRPC NotFound,
	                         * -EFBIG a value over ETCD_VALUE_MAX */
	const char *message;    /* when error: names the endpoint and the cause; else NULL */
	int64_t revision;       /* header.revision */
	/* range; txn: the kvs of the first range op of the branch taken */
	const struct etcd_kv *kvs;
	size_t n_kvs;
	int64_t count;          /* range: count (with count_only, or beyond limit) */
	bool succeeded;         /* txn: the compares held (the success branch ran) */
	int64_t lease;          /* lease calls: the lease id */
	int64_t ttl;            /* lease grant/keepalive: seconds granted or left; keepalive with no TTL (lease
	                         * gone) is error -ENOENT */
	int64_t deleted;        /* delete: number of keys deleted */
};

typedef void (*etcd_cb)(void *userdata, const struct etcd_result *r);

struct etcd_range_options {
	bool prefix;            /* every key that starts with key (range_end = key with its last byte + 1) */
	bool count_only;
	bool keys_only;
	int64_t limit;          /* 0: none */
	int64_t min_mod_revision; /* 0: none */
	int64_t revision;       /* 0: latest */
};

/* Every call returns 0 and calls cb later from the loop (never from inside),
 * or returns a negative errno (-EINVAL a bad argument, -EFBIG a value over
 * ETCD_VALUE_MAX) and never calls cb. ret may be NULL; a call's handle is
 * valid until its callback has run or it was cancelled. Keys are absolute
 * (callers join etcd_prefix() themselves). Any callback here, a watch's
 * included, may start and cancel calls and watches and may etcd_free the
 * client: none runs inside libcurl. */
int etcd_range(struct etcd *c, const char *key, const struct etcd_range_options *o, etcd_cb cb, void *userdata,
	       struct etcd_call **ret);
int etcd_put(struct etcd *c, const char *key, const char *value, size_t value_len, int64_t lease, etcd_cb cb,
	     void *userdata, struct etcd_call **ret);
int etcd_delete(struct etcd *c, const char *key, bool prefix, etcd_cb cb, void *userdata, struct etcd_call **ret);

/* Txn (etcd's Compare / RequestOp, rpc.proto). */
enum etcd_compare_target { ETCD_CMP_VERSION, ETCD_CMP_CREATE, ETCD_CMP_MOD, ETCD_CMP_VALUE, ETCD_CMP_LEASE };
enum etcd_compare_result { ETCD_CMP_EQUAL, ETCD_CMP_GREATER, ETCD_CMP_LESS, ETCD_CMP_NOT_EQUAL };
struct etcd_compare {
	enum etcd_compare_target target;
	enum etcd_compare_result result;
	const char *key;
	int64_t number;         /* version, create or mod revision, lease */
	const char *value;      /* ETCD_CMP_VALUE */
	size_t value_len;
};
enum etcd_op_type { ETCD_OP_RANGE, ETCD_OP_PUT, ETCD_OP_DELETE };
struct etcd_op {
	enum etcd_op_type type;
	const char *key;
	const char *value;      /* put */
	size_t value_len;
	int64_t lease;          /* put, 0: none */
	bool prefix;            /* range, delete */
};
int etcd_txn(struct etcd *c, const struct etcd_compare *cmp, size_t n_cmp, const struct etcd_op *success,
	     size_t n_success, const struct etcd_op *failure, size_t n_failure, etcd_cb cb, void *userdata,
	     struct etcd_call **ret);

/* Leases. ttl in seconds. keepalive is one POST (etcd #8237). */
int etcd_lease_grant(struct etcd *c, long ttl, etcd_cb cb, void *userdata, struct etcd_call **ret);
int etcd_lease_keepalive(struct etcd *c, int64_t lease, etcd_cb cb, void *userdata, struct etcd_call **ret);
int etcd_lease_revoke(struct etcd *c, int64_t lease, etcd_cb cb, void *userdata, struct etcd_call **ret);
/* Seconds left (r->ttl; -ENOENT when the lease is gone). */
int etcd_lease_ttl(struct etcd *c, int64_t lease, etcd_cb cb, void *userdata, struct etcd_call **ret);

/* The callback is not called. */
void etcd_call_cancel(struct etcd_call *call);

/* Watch. */
enum etcd_event_type { ETCD_EVENT_PUT, ETCD_EVENT_DELETE };
struct etcd_event {
	enum etcd_event_type type;
	struct etcd_kv kv;      /* DELETE: key and mod_revision only */
};
struct etcd_watch_callbacks {
	/* The stream is open (the first message, created:true). revision is
	 * its header.revision. */
	void (*on_created)(void *userdata, int64_t revision);
	/* Events of one or more revisions, in order, and the header.revision of
	 * the message: everything up to it has been seen, so it is a safe
	 * resume point. n == 0: a progress notification. */
	void (*on_events)(void *userdata, int64_t revision, const struct etcd_event *events, size_t n);
	/* The watch was cancelled because start_revision was compacted
	 * (compact_revision != 0, whatever "canceled" says, etcd #8231): re-range
	 * and watch again from the range's revision + 1. The stream is closed;
	 * the watch handle is freed after this returns. */
	void (*on_compacted)(void *userdata, int64_t compact_revision);
	/* The stream ended: transport error, HTTP error, end of stream, an
	 * {"error":...} message, a message that does not parse, one over
	 * ETCD_VALUE_MAX, or no message for silence_ms. message names the
	 * endpoint and the cause. The handle is freed after this returns; the
	 * caller re-opens with backoff (the client moved to the next endpoint).
	 * */
	void (*on_error)(void *userdata, const char *message);
};
/* Watches key (with prefix: every key under it) from start_revision
 * (0: now), with prev_kv and progress_notify. silence_ms: the stream is
 * dropped (on_error) when nothing, not even a progress notification,
 * arrived for that long; 0: no such deadline. */
int etcd_watch_start(struct etcd *c, const char *key, bool prefix, int64_t start_revision, uint64_t silence_ms,
		     const struct etcd_watch_callbacks *cbs, void *userdata, struct etcd_watch **ret);
/* Closes the stream; no callback runs after this. */
void etcd_watch_cancel(struct etcd_watch *w);

/* The incremental reader of a watch stream: bytes in, whole top-level
 * JSON values out, however the bytes were cut (a value across chunks,
 * several in one chunk, with or without newlines between them). Exposed
 * for the unit tests and the fuzz target. */
struct etcd_stream_reader;
struct etcd_stream_reader *etcd_stream_reader_new(size_t max_message);
void etcd_stream_reader_free(struct etcd_stream_reader *rd);
/* Feeds data[0..len); calls on_message(userdata, msg, msg_len) for every
 * complete top-level value (msg not NUL-terminated, valid during the call;
 * whitespace between values skipped). Returns 0, or when on_message
 * returned non-zero, that value; -EFBIG when a value grows past
 * max_message; -EBADMSG when a byte outside a value is not whitespace or a
 * value does not start with '{'. After an error the reader is unusable. */
int etcd_stream_reader_feed(struct etcd_stream_reader *rd, const char *data, size_t len,
			    int (*on_message)(void *userdata, const char *msg, size_t msg_len), void *userdata);

/* ---- The gateway's encodings, exposed for the unit tests and the fuzz
 * target (additions to the first header). ---- */

/* Standard base64 (RFC 4648 §4, with "=" padding), the encoding of the
 * gateway's bytes fields (Go's encoding/json for []byte). No linked library
 * exports one. Encode returns a malloc'd NUL-terminated string. Decode is
 * strict: length a multiple of 4, only the alphabet, padding only at the
 * end, unused bits zero; returns 0 with a malloc'd copy NUL-terminated
 * after *ret_len bytes, or -EPROTO. */
char *etcd_base64_encode(const void *data, size_t len);
int etcd_base64_decode(const char *s, size_t len, char **ret, size_t *ret_len);

/* The JSON body of each request, malloc'd (arguments already checked by the
 * calls above): keys and values base64, int64 as strings, a prefix as
 * range_end; a watch's create_request with prev_kv and progress_notify. A
 * grant has TTL (seconds) and ID 0; keepalive, revoke and timetolive only
 * the ID (ttl 0). */
char *etcd_json_range(const char *key, const struct etcd_range_options *o);
char *etcd_json_put(const char *key, const char *value, size_t value_len, int64_t lease);
char *etcd_json_delete(const char *key, bool prefix);
char *etcd_json_txn(const struct etcd_compare *cmp, size_t n_cmp, const struct etcd_op *success, size_t n_success,
		    const struct etcd_op *failure, size_t n_failure);
char *etcd_json_lease(int64_t lease, long ttl);
char *etcd_json_watch(const char *key, bool prefix, int64_t start_revision);

/* The reply of each unary call (the body of a 2xx answer). */
enum etcd_reply_kind {
	ETCD_REPLY_RANGE,
	ETCD_REPLY_PUT,
	ETCD_REPLY_DELETE,
	ETCD_REPLY_TXN,
	ETCD_REPLY_LEASE_GRANT,
	ETCD_REPLY_LEASE_KEEPALIVE, /* {"result":{...}} or {"error":{...}} (a stream of one message) */
	ETCD_REPLY_LEASE_REVOKE,
	ETCD_REPLY_LEASE_TTL,
};
/* Fills r (error 0) from body[0..len): revision, kvs (malloc'd), count,
 * succeeded, lease, ttl, deleted. Returns 0, or -EPROTO (not the
 * gateway's JSON: bad base64, an int64 that does not parse, a missing
 * header, more than ETCD_ITEMS_MAX kvs), -EFBIG (a key or value over
 * ETCD_VALUE_MAX), -ENOENT (keepalive without TTL, time-to-live -1: the
 * lease is gone), -EIO (an error the reply carries: a keepalive's
 * {"error":{...}}) with a malloc'd cause (a JSON path) in *ret_error and r
 * cleared. */
#define ETCD_ITEMS_MAX 100000
int etcd_reply_parse(enum etcd_reply_kind kind, const char *body, size_t len, struct etcd_result *r,
		     char **ret_error);
/* Frees what etcd_reply_parse allocated in r and zeroes it. */
void etcd_result_clear(struct etcd_result *r);
/* The HTTP error body of the gateway ({"error":"...","code":N,"message":
 * "..."}, or a stream's {"error":{"grpc_code":N,"message":"..."}}):
 * the malloc'd message (NULL when body is not such) and the gRPC code (-1
 * when none). */
char *etcd_error_body(const char *body, size_t len, int *ret_code);

/* One message of a watch stream. */
enum etcd_watch_message_kind {
	ETCD_WATCH_CREATED,    /* created:true; revision */
	ETCD_WATCH_EVENTS,     /* events (maybe none: a progress notification); revision */
	ETCD_WATCH_COMPACTED,  /* compact_revision != 0 (canceled or not, etcd #8231) */
	ETCD_WATCH_FAILED,     /* {"error":...}, or canceled without compaction: error says why */
};
struct etcd_watch_message {
	enum etcd_watch_message_kind kind;
	int64_t revision;          /* header.revision */
	int64_t compact_revision;
	struct etcd_event *events; /* malloc'd */
	size_t n_events;
	char *error;               /* malloc'd, FAILED or a parse error */
};
/* Returns 0, or -EPROTO / -EFBIG with m->error saying why (a JSON path). */
int etcd_watch_message_parse(const char *msg, size_t len, struct etcd_watch_message *m);
void etcd_watch_message_clear(struct etcd_watch_message *m);

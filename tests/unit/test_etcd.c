/* SPDX-License-Identifier: BSD-2-Clause */
/* agent/fleet/etcd*.c without etcd: strict base64, the incremental stream
 * reader (a message split at every byte, several per chunk, no newline
 * between them, garbage, oversize), the replies and watch messages of the
 * gateway (int64 strings or numbers, proto3 defaults omitted, bounds), the
 * request bodies, URL parsing and the backoff. test_etcd_live.c runs the
 * client against a real etcd. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <uv.h>

#include "config.h"
#include "fleet/etcd.h"
#include "io/http.h"
#include "util.h"

/* ---- base64 ---- */

static void check_b64(const char *plain, size_t len, const char *encoded)
{
	_cleanup_free_ char *e = etcd_base64_encode(plain, len);
	_cleanup_free_ char *d = NULL;
	size_t n;

	assert_string_equal(e, encoded);
	assert_int_equal(etcd_base64_decode(encoded, strlen(encoded), &d, &n), 0);
	assert_int_equal(n, len);
	assert_memory_equal(d, plain, len);
	assert_int_equal(d[n], '\0');
}

static void test_base64_vectors(void **state)
{
	/* RFC 4648 §10 */
	check_b64("", 0, "");
	check_b64("f", 1, "Zg==");
	check_b64("fo", 2, "Zm8=");
	check_b64("foo", 3, "Zm9v");
	check_b64("foob", 4, "Zm9vYg==");
	check_b64("fooba", 5, "Zm9vYmE=");
	check_b64("foobar", 6, "Zm9vYmFy");
	/* protocols.md: "foo" → "Zm9v", range_end "fop" → "Zm9w" */
	check_b64("fop", 3, "Zm9w");
	check_b64("\0\xff\xfe", 3, "AP/+");
	check_b64("/agentd/prod/stack", 18, "L2FnZW50ZC9wcm9kL3N0YWNr");

	/* Every byte value round-trips. */
	char all[256];
	for (int i = 0; i < 256; i++)
		all[i] = (char)i;
	_cleanup_free_ char *e = etcd_base64_encode(all, sizeof(all));
	_cleanup_free_ char *d = NULL;
	size_t n;
	assert_int_equal(etcd_base64_decode(e, strlen(e), &d, &n), 0);
	assert_int_equal(n, 256);
	assert_memory_equal(d, all, 256);
}

static void test_base64_strict(void **state)
{
	static const char *const bad[] = {
		"Zg",        /* no padding */
		"Zg=",       /* short */
		"Zm9vY",     /* not a multiple of 4 */
		"Zm9v\n",    /* whitespace */
		"Zm 9",      /* space */
		"Zh==",      /* unused bits set (canonical: Zg==) */
		"Zm9=",      /* unused bits set (canonical: Zm8=) */
		"Z===",      /* three pads */
		"====",      /* all pads */
		"Zg==Zm9v",  /* padding in the middle */
		"Z=g=",      /* pad then data */
		"Zm9-",      /* base64url alphabet */
		"Zm9_",
		"Zm\0v",     /* NUL */
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		char *d = (char *)1;
		size_t n = 99;
		size_t len = i == ELEMENTSOF(bad) - 1 ? 4 : strlen(bad[i]);
		assert_int_equal(etcd_base64_decode(bad[i], len, &d, &n), -EPROTO);
		assert_ptr_equal(d, (char *)1); /* untouched */
	}
}

/* ---- the stream reader ---- */

struct msgs {
	size_t n;
	char *m[16];
	int stop_at; /* on_message returns 7 at this message (1-based), 0: never */
};

static int on_msg(void *userdata, const char *msg, size_t len)
{
	struct msgs *s = userdata;

	assert_true(s->n < ELEMENTSOF(s->m));
	s->m[s->n++] = xstrndup(msg, len);
	return s->stop_at && (int)s->n == s->stop_at ? 7 : 0;
}

static void msgs_clear(struct msgs *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->m[i]);
	memset(s, 0, sizeof(*s));
}

static const char *const stream_msgs[] = {
	"{\"result\":{\"header\":{\"revision\":\"3\"},\"created\":true}}",
	"{\"result\":{\"events\":[{\"kv\":{\"key\":\"YQ==\",\"value\":\"e30=\"}}],\"s\":\"}{\\\"\\\\\"}}",
	"{\"a\":[1,{\"b\":\"]\"},[]],\"c\":\"\\u007b\"}",
};

/* Every way to cut the stream in two, with every separator between
 * messages: all three come out whole, in order. */
static void test_stream_split_everywhere(void **state)
{
	static const char *const seps[] = { "", "\n", "\r\n", " \n\t" };

	for (size_t s = 0; s < ELEMENTSOF(seps); s++) {
		struct buf all;
		buf_init(&all);
		for (size_t i = 0; i < ELEMENTSOF(stream_msgs); i++) {
			buf_puts(&all, stream_msgs[i]);
			buf_puts(&all, seps[s]);
		}
		for (size_t cut = 0; cut <= all.len; cut++) {
			struct etcd_stream_reader *rd = etcd_stream_reader_new(1024);
			struct msgs got = { 0 };
			assert_int_equal(etcd_stream_reader_feed(rd, all.data, cut, on_msg, &got), 0);
			assert_int_equal(etcd_stream_reader_feed(rd, all.data + cut, all.len - cut, on_msg, &got), 0);
			assert_int_equal(got.n, ELEMENTSOF(stream_msgs));
			for (size_t i = 0; i < got.n; i++)
				assert_string_equal(got.m[i], stream_msgs[i]);
			msgs_clear(&got);
			etcd_stream_reader_free(rd);
		}
		/* One byte at a time (a separator "\n" is a chunk of its own),
		 * with empty chunks between. */
		struct etcd_stream_reader *rd = etcd_stream_reader_new(1024);
		struct msgs got = { 0 };
		for (size_t i = 0; i < all.len; i++) {
			assert_int_equal(etcd_stream_reader_feed(rd, all.data + i, 1, on_msg, &got), 0);
			assert_int_equal(etcd_stream_reader_feed(rd, "", 0, on_msg, &got), 0);
		}
		assert_int_equal(got.n, ELEMENTSOF(stream_msgs));
		assert_string_equal(got.m[1], stream_msgs[1]);
		msgs_clear(&got);
		etcd_stream_reader_free(rd);
		buf_free(&all);
	}
}

static void test_stream_garbage(void **state)
{
	static const char *const bad[] = { "x", "[1]", "\"s\"", "{}x", "{}\n}", "1", "\0" };

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		struct etcd_stream_reader *rd = etcd_stream_reader_new(1024);
		struct msgs got = { 0 };
		size_t len = bad[i][0] ? strlen(bad[i]) : 1;
		assert_int_equal(etcd_stream_reader_feed(rd, bad[i], len, on_msg, &got), -EBADMSG);
		/* Unusable after an error. */
		assert_int_equal(etcd_stream_reader_feed(rd, "{}", 2, on_msg, &got), -EBADMSG);
		assert_true(got.n <= 1);
		msgs_clear(&got);
		etcd_stream_reader_free(rd);
	}
}

static void test_stream_oversize(void **state)
{
	struct etcd_stream_reader *rd = etcd_stream_reader_new(10);
	struct msgs got = { 0 };

	/* Exactly the cap passes, whole or in pieces. */
	assert_int_equal(etcd_stream_reader_feed(rd, "{\"a\":\"12\"}", 10, on_msg, &got), 0);
	assert_int_equal(etcd_stream_reader_feed(rd, "{\"a\":", 5, on_msg, &got), 0);
	assert_int_equal(etcd_stream_reader_feed(rd, "\"12\"}", 5, on_msg, &got), 0);
	assert_int_equal(got.n, 2);
	/* One more byte does not, even before it ends. */
	assert_int_equal(etcd_stream_reader_feed(rd, "{\"a\":\"12", 8, on_msg, &got), 0);
	assert_int_equal(etcd_stream_reader_feed(rd, "345", 3, on_msg, &got), -EFBIG);
	assert_int_equal(etcd_stream_reader_feed(rd, "{}", 2, on_msg, &got), -EFBIG);
	assert_int_equal(got.n, 2);
	msgs_clear(&got);
	etcd_stream_reader_free(rd);

	rd = etcd_stream_reader_new(10);
	assert_int_equal(etcd_stream_reader_feed(rd, "{\"a\":\"123\"}", 11, on_msg, &got), -EFBIG);
	assert_int_equal(got.n, 0);
	etcd_stream_reader_free(rd);
}

static void test_stream_stop(void **state)
{
	struct etcd_stream_reader *rd = etcd_stream_reader_new(100);
	struct msgs got = { .stop_at = 2 };

	assert_int_equal(etcd_stream_reader_feed(rd, "{}{\"b\":1}{}", 11, on_msg, &got), 7);
	assert_int_equal(got.n, 2);
	msgs_clear(&got);
	etcd_stream_reader_free(rd);
}

/* ---- replies ---- */

#define HDR "\"header\":{\"cluster_id\":\"1\",\"member_id\":\"2\",\"revision\":\"42\",\"raft_term\":\"2\"}"

static void test_reply_range(void **state)
{
	struct etcd_result r;
	char *why = NULL;
	const char *body = "{" HDR ",\"kvs\":[{\"key\":\"Zm9v\",\"create_revision\":\"2\",\"mod_revision\":\"5\","
			   "\"version\":\"3\",\"value\":\"YmFy\",\"lease\":\"7587862\"},{\"key\":\"Zm9w\","
			   "\"mod_revision\":6}],\"count\":\"2\"}";

	assert_int_equal(etcd_reply_parse(ETCD_REPLY_RANGE, body, strlen(body), &r, &why), 0);
	assert_null(why);
	assert_int_equal(r.revision, 42);
	assert_int_equal(r.n_kvs, 2);
	assert_int_equal(r.count, 2);
	assert_string_equal(r.kvs[0].key, "foo");
	assert_int_equal(r.kvs[0].key_len, 3);
	assert_string_equal(r.kvs[0].value, "bar");
	assert_int_equal(r.kvs[0].create_revision, 2);
	assert_int_equal(r.kvs[0].mod_revision, 5);
	assert_int_equal(r.kvs[0].version, 3);
	assert_int_equal(r.kvs[0].lease, 7587862);
	/* Omitted fields are their defaults; an int64 as a number is taken. */
	assert_string_equal(r.kvs[1].key, "fop");
	assert_string_equal(r.kvs[1].value, "");
	assert_int_equal(r.kvs[1].value_len, 0);
	assert_int_equal(r.kvs[1].mod_revision, 6);
	assert_int_equal(r.kvs[1].lease, 0);
	etcd_result_clear(&r);

	/* No kvs, no count: nothing there. */
	body = "{" HDR "}";
	assert_int_equal(etcd_reply_parse(ETCD_REPLY_RANGE, body, strlen(body), &r, &why), 0);
	assert_int_equal(r.n_kvs, 0);
	assert_null(r.kvs);
	assert_int_equal(r.count, 0);
	etcd_result_clear(&r);
}

static void expect_bad(enum etcd_reply_kind kind, const char *body, int error, const char *needle)
{
	struct etcd_result r;
	char *why = NULL;

	assert_int_equal(etcd_reply_parse(kind, body, strlen(body), &r, &why), error);
	assert_non_null(why);
	if (!strstr(why, needle))
		fail_msg("\"%s\" does not say \"%s\"", why, needle);
	assert_null(r.kvs);
	assert_int_equal(r.n_kvs, 0);
	free(why);
}

static void test_reply_bad(void **state)
{
	expect_bad(ETCD_REPLY_RANGE, "", -EPROTO, "not JSON");
	expect_bad(ETCD_REPLY_RANGE, "[]", -EPROTO, "$: not an object");
	expect_bad(ETCD_REPLY_RANGE, "{}", -EPROTO, "$.header: missing");
	expect_bad(ETCD_REPLY_RANGE, "{\"header\":{\"revision\":\"4x\"}}", -EPROTO, "$.header.revision");
	expect_bad(ETCD_REPLY_RANGE, "{\"header\":{\"revision\":\"99999999999999999999\"}}", -EPROTO,
		   "$.header.revision");
	expect_bad(ETCD_REPLY_RANGE, "{\"header\":{\"revision\":true}}", -EPROTO, "$.header.revision");
	expect_bad(ETCD_REPLY_RANGE, "{" HDR ",\"kvs\":{}}", -EPROTO, "$.kvs: not an array");
	expect_bad(ETCD_REPLY_RANGE, "{" HDR ",\"kvs\":[{\"key\":\"Zm9v\"},{\"key\":\"Zm9\"}]}", -EPROTO,
		   "$.kvs[1].key");
	expect_bad(ETCD_REPLY_RANGE, "{" HDR ",\"kvs\":[{\"key\":\"\"}]}", -EPROTO, "$.kvs[0].key");
	expect_bad(ETCD_REPLY_RANGE, "{" HDR ",\"kvs\":[{\"key\":\"Zm9v\",\"value\":\"!!!!\"}]}", -EPROTO,
		   "$.kvs[0].value");
	expect_bad(ETCD_REPLY_RANGE, "{" HDR ",\"kvs\":[{\"key\":\"Zm9v\",\"mod_revision\":\"1.5\"}]}", -EPROTO,
		   "$.kvs[0].mod_revision");
	expect_bad(ETCD_REPLY_RANGE, "{" HDR ",\"kvs\":[7]}", -EPROTO, "$.kvs[0]");
	expect_bad(ETCD_REPLY_RANGE, "{" HDR ",\"count\":\"x\"}", -EPROTO, "$.count");
	expect_bad(ETCD_REPLY_RANGE, "{" HDR ",\"header\":{}}", -EPROTO, "not JSON"); /* duplicate key */
	expect_bad(ETCD_REPLY_DELETE, "{" HDR ",\"deleted\":[]}", -EPROTO, "$.deleted");
	expect_bad(ETCD_REPLY_TXN, "{" HDR ",\"succeeded\":\"yes\"}", -EPROTO, "$.succeeded");
	expect_bad(ETCD_REPLY_TXN, "{" HDR ",\"responses\":[{\"response_range\":{\"kvs\":[{}]}}]}", -EPROTO,
		   "$.responses[0].response_range.kvs[0].key");
	expect_bad(ETCD_REPLY_LEASE_GRANT, "{" HDR ",\"TTL\":\"5\"}", -EPROTO, "no lease granted");
	expect_bad(ETCD_REPLY_LEASE_KEEPALIVE, "{" HDR "}", -EPROTO, "$.result: missing");
	/* Deeply nested: refused before jansson builds it. */
	struct buf deep;
	buf_init(&deep);
	for (int i = 0; i < 100; i++)
		buf_puts(&deep, "[");
	expect_bad(ETCD_REPLY_RANGE, deep.data, -EPROTO, "nested too deeply");
	buf_free(&deep);

	/* A value over ETCD_VALUE_MAX: -EFBIG, before decoding it. */
	size_t n = (ETCD_VALUE_MAX + 3) / 3 * 4 + 4;
	struct buf big;
	buf_init(&big);
	buf_puts(&big, "{" HDR ",\"kvs\":[{\"key\":\"Zm9v\",\"value\":\"");
	for (size_t i = 0; i < n / 4; i++)
		buf_puts(&big, "AAAA");
	buf_puts(&big, "\"}]}");
	expect_bad(ETCD_REPLY_RANGE, big.data, -EFBIG, "$.kvs[0].value: larger than");
	buf_free(&big);
}

static void test_reply_txn_delete(void **state)
{
	struct etcd_result r;
	char *why = NULL;
	const char *body = "{" HDR ",\"succeeded\":true,\"responses\":[{\"response_put\":{\"header\":{}}},"
			   "{\"response_range\":{\"header\":{\"revision\":\"2\"},\"kvs\":[{\"key\":\"Zm9v\","
			   "\"value\":\"YmFy\",\"mod_revision\":\"2\"}],\"count\":\"1\"}},{\"response_range\":{"
			   "\"kvs\":[{\"key\":\"eA==\"}]}}]}";

	assert_int_equal(etcd_reply_parse(ETCD_REPLY_TXN, body, strlen(body), &r, &why), 0);
	assert_true(r.succeeded);
	assert_int_equal(r.n_kvs, 1);           /* the first range's */
	assert_string_equal(r.kvs[0].value, "bar");
	assert_int_equal(r.count, 1);
	etcd_result_clear(&r);

	/* The failure branch (succeeded omitted: false), an empty range. */
	body = "{" HDR ",\"responses\":[{\"response_range\":{\"header\":{}}}]}";
	assert_int_equal(etcd_reply_parse(ETCD_REPLY_TXN, body, strlen(body), &r, &why), 0);
	assert_false(r.succeeded);
	assert_int_equal(r.n_kvs, 0);
	etcd_result_clear(&r);

	body = "{" HDR ",\"deleted\":\"3\"}";
	assert_int_equal(etcd_reply_parse(ETCD_REPLY_DELETE, body, strlen(body), &r, &why), 0);
	assert_int_equal(r.deleted, 3);
	etcd_result_clear(&r);
}

static void test_reply_leases(void **state)
{
	struct etcd_result r;
	char *why = NULL;
	const char *body = "{" HDR ",\"ID\":\"4111120352535361029\",\"TTL\":\"5\"}";

	assert_int_equal(etcd_reply_parse(ETCD_REPLY_LEASE_GRANT, body, strlen(body), &r, &why), 0);
	assert_int_equal(r.lease, 4111120352535361029LL);
	assert_int_equal(r.ttl, 5);
	etcd_result_clear(&r);

	body = "{\"result\":{" HDR ",\"ID\":\"7\",\"TTL\":\"30\"}}";
	assert_int_equal(etcd_reply_parse(ETCD_REPLY_LEASE_KEEPALIVE, body, strlen(body), &r, &why), 0);
	assert_int_equal(r.lease, 7);
	assert_int_equal(r.ttl, 30);
	etcd_result_clear(&r);

	/* Keepalive of a lease that is gone: no TTL (proto3 default 0). */
	expect_bad(ETCD_REPLY_LEASE_KEEPALIVE, "{\"result\":{" HDR ",\"ID\":\"7\"}}", -ENOENT, "$.result.TTL");
	expect_bad(ETCD_REPLY_LEASE_KEEPALIVE, "{\"result\":{" HDR ",\"ID\":\"7\",\"TTL\":\"0\"}}", -ENOENT,
		   "the lease is gone");
	expect_bad(ETCD_REPLY_LEASE_KEEPALIVE,
		   "{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\"}}", -EIO,
		   "no leader");
	/* timetolive: -1 */
	expect_bad(ETCD_REPLY_LEASE_TTL, "{" HDR ",\"ID\":\"7\",\"TTL\":\"-1\"}", -ENOENT, "gone");
	body = "{" HDR ",\"ID\":\"7\",\"TTL\":\"12\",\"grantedTTL\":\"30\"}";
	assert_int_equal(etcd_reply_parse(ETCD_REPLY_LEASE_TTL, body, strlen(body), &r, &why), 0);
	assert_int_equal(r.ttl, 12);
	etcd_result_clear(&r);

	body = "{" HDR "}";
	assert_int_equal(etcd_reply_parse(ETCD_REPLY_LEASE_REVOKE, body, strlen(body), &r, &why), 0);
	assert_int_equal(r.revision, 42);
	etcd_result_clear(&r);
}

static void test_error_body(void **state)
{
	int code;
	const char *b = "{\"error\":\"etcdserver: requested lease not found\",\"message\":\"etcdserver: requested "
			"lease not found\",\"code\":5}";
	_cleanup_free_ char *m = etcd_error_body(b, strlen(b), &code);
	assert_string_equal(m, "etcdserver: requested lease not found");
	assert_int_equal(code, 5);

	b = "{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"a\\nb\"}}";
	_cleanup_free_ char *m2 = etcd_error_body(b, strlen(b), &code);
	assert_non_null(m2);
	assert_null(strchr(m2, '\n')); /* control characters escaped */
	assert_int_equal(code, 14);

	assert_null(etcd_error_body("<html>", 6, &code));
	assert_int_equal(code, -1);
}

/* ---- watch messages ---- */

static void test_watch_messages(void **state)
{
	struct etcd_watch_message m;
	const char *s;

	s = "{\"result\":{" HDR ",\"created\":true}}";
	assert_int_equal(etcd_watch_message_parse(s, strlen(s), &m), 0);
	assert_int_equal(m.kind, ETCD_WATCH_CREATED);
	assert_int_equal(m.revision, 42);
	etcd_watch_message_clear(&m);

	/* A PUT has no "type"; a DELETE has only key and mod_revision. */
	s = "{\"result\":{" HDR ",\"events\":[{\"kv\":{\"key\":\"YQ==\",\"create_revision\":\"40\",\"mod_revision\":"
	    "\"41\",\"version\":\"2\",\"value\":\"MQ==\"},\"prev_kv\":{\"key\":\"YQ==\"}},{\"type\":\"DELETE\",\"kv\":"
	    "{\"key\":\"Yg==\",\"mod_revision\":\"42\"}}]}}";
	assert_int_equal(etcd_watch_message_parse(s, strlen(s), &m), 0);
	assert_int_equal(m.kind, ETCD_WATCH_EVENTS);
	assert_int_equal(m.n_events, 2);
	assert_int_equal(m.events[0].type, ETCD_EVENT_PUT);
	assert_string_equal(m.events[0].kv.key, "a");
	assert_string_equal(m.events[0].kv.value, "1");
	assert_int_equal(m.events[0].kv.mod_revision, 41);
	assert_int_equal(m.events[1].type, ETCD_EVENT_DELETE);
	assert_string_equal(m.events[1].kv.key, "b");
	assert_int_equal(m.events[1].kv.mod_revision, 42);
	etcd_watch_message_clear(&m);

	/* A progress notification: a header, no events. */
	s = "{\"result\":{" HDR "}}";
	assert_int_equal(etcd_watch_message_parse(s, strlen(s), &m), 0);
	assert_int_equal(m.kind, ETCD_WATCH_EVENTS);
	assert_int_equal(m.n_events, 0);
	assert_int_equal(m.revision, 42);
	etcd_watch_message_clear(&m);

	/* Compaction, as etcd 3.4 sends it (no header revision), and with
	 * canceled false (etcd #8231). */
	s = "{\"result\":{\"header\":{\"cluster_id\":\"1\"},\"canceled\":true,\"compact_revision\":\"3\"}}";
	assert_int_equal(etcd_watch_message_parse(s, strlen(s), &m), 0);
	assert_int_equal(m.kind, ETCD_WATCH_COMPACTED);
	assert_int_equal(m.compact_revision, 3);
	etcd_watch_message_clear(&m);
	s = "{\"result\":{" HDR ",\"compact_revision\":9}}";
	assert_int_equal(etcd_watch_message_parse(s, strlen(s), &m), 0);
	assert_int_equal(m.kind, ETCD_WATCH_COMPACTED);
	assert_int_equal(m.compact_revision, 9);
	etcd_watch_message_clear(&m);

	/* Canceled without compaction; an error inside the stream. */
	s = "{\"result\":{" HDR ",\"canceled\":true,\"cancel_reason\":\"mvcc: required revision is a future "
	    "revision\"}}";
	assert_int_equal(etcd_watch_message_parse(s, strlen(s), &m), 0);
	assert_int_equal(m.kind, ETCD_WATCH_FAILED);
	assert_non_null(strstr(m.error, "future revision"));
	etcd_watch_message_clear(&m);
	s = "{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"transport is closing\",\"http_status\":503}}";
	assert_int_equal(etcd_watch_message_parse(s, strlen(s), &m), 0);
	assert_int_equal(m.kind, ETCD_WATCH_FAILED);
	assert_non_null(strstr(m.error, "transport is closing"));
	etcd_watch_message_clear(&m);
}

static void expect_bad_message(const char *s, const char *needle)
{
	struct etcd_watch_message m;

	assert_int_equal(etcd_watch_message_parse(s, strlen(s), &m), -EPROTO);
	assert_non_null(m.error);
	if (!strstr(m.error, needle))
		fail_msg("\"%s\" does not say \"%s\"", m.error, needle);
	assert_null(m.events);
	etcd_watch_message_clear(&m);
}

static void test_watch_messages_bad(void **state)
{
	expect_bad_message("{}", "neither result nor error");
	expect_bad_message("{\"result\":[]}", "neither result nor error");
	expect_bad_message("{\"result\":{}}", "$.result.header: missing");
	expect_bad_message("{\"result\":{" HDR ",\"events\":{}}}", "$.result.events");
	expect_bad_message("{\"result\":{" HDR ",\"events\":[{\"kv\":{\"key\":\"YQ==\"}},{\"type\":\"PATCH\"}]}}",
			   "$.result.events[1].type");
	expect_bad_message("{\"result\":{" HDR ",\"events\":[{\"type\":\"DELETE\"}]}}", "$.result.events[0].kv");
	expect_bad_message("{\"result\":{" HDR ",\"events\":[{\"kv\":{\"key\":\"YQ=\"}}]}}", "$.result.events[0].kv.key");
	expect_bad_message("{\"result\":{" HDR ",\"created\":\"yes\"}}", "created");
	expect_bad_message("{\"result\":{\"header\":{\"revision\":\"-\"}}}", "$.result.header.revision");
	expect_bad_message("{\"result\":{" HDR ",\"compact_revision\":\"x\"}}", "compact_revision");
	expect_bad_message("{\"result\":{" HDR "}", "not JSON");
}

/* ---- request bodies ---- */

static void check_json(char *got, const char *want)
{
	json_t *a = json_loads(got, 0, NULL), *b = json_loads(want, 0, NULL);

	assert_non_null(a);
	assert_non_null(b);
	if (!json_equal(a, b))
		fail_msg("%s != %s", got, want);
	json_decref(a);
	json_decref(b);
	free(got);
}

static void test_request_bodies(void **state)
{
	struct etcd_range_options o = { .prefix = true, .limit = 5, .revision = 9 };

	check_json(etcd_json_range("foo", &o),
		   "{\"key\":\"Zm9v\",\"range_end\":\"Zm9w\",\"limit\":\"5\",\"revision\":\"9\"}");
	/* A last byte of 0xff is dropped and the one before incremented. */
	o = (struct etcd_range_options){ .prefix = true, .count_only = true };
	check_json(etcd_json_range("a\xff", &o), "{\"key\":\"Yf8=\",\"range_end\":\"Yg==\",\"count_only\":true}");
	check_json(etcd_json_range("\xff", &o), "{\"key\":\"/w==\",\"range_end\":\"AA==\",\"count_only\":true}");
	check_json(etcd_json_put("k", "v", 1, 12), "{\"key\":\"aw==\",\"value\":\"dg==\",\"lease\":\"12\"}");
	check_json(etcd_json_put("k", NULL, 0, 0), "{\"key\":\"aw==\",\"value\":\"\"}");
	check_json(etcd_json_delete("k", false), "{\"key\":\"aw==\"}");
	check_json(etcd_json_lease(0, 30), "{\"TTL\":\"30\",\"ID\":\"0\"}");
	check_json(etcd_json_lease(77, 0), "{\"ID\":\"77\"}");
	check_json(etcd_json_watch("/p/", true, 43),
		   "{\"create_request\":{\"key\":\"L3Av\",\"range_end\":\"L3Aw\",\"start_revision\":\"43\","
		   "\"prev_kv\":true,\"progress_notify\":true}}");

	struct etcd_compare cmp[] = {
		{ .target = ETCD_CMP_MOD, .result = ETCD_CMP_EQUAL, .key = "s", .number = 7 },
		{ .target = ETCD_CMP_VALUE, .result = ETCD_CMP_NOT_EQUAL, .key = "s", .value = "x", .value_len = 1 },
		{ .target = ETCD_CMP_CREATE, .result = ETCD_CMP_LESS, .key = "s", .number = 0 },
	};
	struct etcd_op ok[] = { { .type = ETCD_OP_PUT, .key = "s", .value = "v", .value_len = 1, .lease = 3 } };
	struct etcd_op ko[] = { { .type = ETCD_OP_RANGE, .key = "s" }, { .type = ETCD_OP_DELETE, .key = "s", .prefix = true } };
	check_json(etcd_json_txn(cmp, 3, ok, 1, ko, 2),
		   "{\"compare\":[{\"target\":\"MOD\",\"result\":\"EQUAL\",\"key\":\"cw==\",\"mod_revision\":\"7\"},"
		   "{\"target\":\"VALUE\",\"result\":\"NOT_EQUAL\",\"key\":\"cw==\",\"value\":\"eA==\"},"
		   "{\"target\":\"CREATE\",\"result\":\"LESS\",\"key\":\"cw==\",\"create_revision\":\"0\"}],"
		   "\"success\":[{\"request_put\":{\"key\":\"cw==\",\"value\":\"dg==\",\"lease\":\"3\"}}],"
		   "\"failure\":[{\"request_range\":{\"key\":\"cw==\"}},"
		   "{\"request_delete_range\":{\"key\":\"cw==\",\"range_end\":\"dA==\"}}]}");
}

/* ---- URLs, backoff ---- */

static void test_urls(void **state)
{
	uv_loop_t loop;
	struct http *http;
	struct etcd *c = NULL;
	char *error = NULL;
	static const char *const bad[] = {
		"etcd://",          "etcd://h:1",        "etcd://h:1/",      "etcd://h:1/p/",  "etcd://h:1//p",
		"etcd://h:1/p/../q", "etcd://h:1/./p",   "etcd://h/p",       "etcd://h:0/p",   "etcd://h:65536/p",
		"etcd://:1/p",      "etcd://h:1,/p",     "etcd://h_x:1/p",   "etcd://h:1/p q", "etcd://[]:1/p",
		"http://h:1/p",     "etcd://h:1/p?x=1",  "etcd://u@h:1/p",   "etcd:///p",      "etcd://h:1a/p",
	};

	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(http_new(&loop, &http), 0);

	assert_int_equal(etcd_new(&loop, http, NULL, "etcd://10.0.0.5:2379/agentd/prod", &c, &error), 0);
	assert_null(error);
	assert_string_equal(etcd_prefix(c), "/agentd/prod");
	assert_string_equal(etcd_endpoint(c), "http://10.0.0.5:2379");
	etcd_free(c);

	assert_int_equal(etcd_new(&loop, http, NULL, "etcd+https://a.example:1,[::1]:2,b:3/x", &c, &error), 0);
	assert_string_equal(etcd_prefix(c), "/x");
	assert_string_equal(etcd_endpoint(c), "https://a.example:1");
	etcd_free(c);

	/* TLS files are only checked for etcd+https://. */
	struct config cfg = { .etcd_ca = "/nonexistent/ca.pem" };
	assert_int_equal(etcd_new(&loop, http, &cfg, "etcd://h:1/p", &c, &error), 0);
	etcd_free(c);
	assert_int_equal(etcd_new(&loop, http, &cfg, "etcd+https://h:1/p", &c, &error), -EINVAL);
	assert_non_null(strstr(error, "etcd_ca /nonexistent/ca.pem"));
	free(error);

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		error = NULL;
		c = NULL;
		if (etcd_new(&loop, http, NULL, bad[i], &c, &error) != -EINVAL)
			fail_msg("%s accepted", bad[i]);
		assert_null(c);
		assert_non_null(error);
		free(error);
	}
	/* Control characters in the URL are not echoed. */
	assert_int_equal(etcd_new(&loop, http, NULL, "etcd://h:1/p\n", &c, &error), -EINVAL);
	assert_null(strchr(error, '\n'));
	free(error);

	http_free(http);
	while (uv_run(&loop, UV_RUN_NOWAIT) != 0)
		;
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_backoff(void **state)
{
	static const uint64_t base[] = { 100, 200, 400, 800, 1600, 3200, 5000, 5000 };
	bool varied = false;

	for (unsigned n = 1; n <= ELEMENTSOF(base); n++) {
		uint64_t first = etcd_backoff_ms(n);
		for (int i = 0; i < 200; i++) {
			uint64_t b = etcd_backoff_ms(n);
			assert_true(b >= base[n - 1] / 2);
			assert_true(b <= base[n - 1] + base[n - 1] / 2);
			if (b != first)
				varied = true;
		}
	}
	assert_true(varied);
	assert_true(etcd_backoff_ms(1000) <= 7500);
	assert_true(etcd_backoff_ms(0) <= 150);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64_vectors),
		cmocka_unit_test(test_base64_strict),
		cmocka_unit_test(test_stream_split_everywhere),
		cmocka_unit_test(test_stream_garbage),
		cmocka_unit_test(test_stream_oversize),
		cmocka_unit_test(test_stream_stop),
		cmocka_unit_test(test_reply_range),
		cmocka_unit_test(test_reply_bad),
		cmocka_unit_test(test_reply_txn_delete),
		cmocka_unit_test(test_reply_leases),
		cmocka_unit_test(test_error_body),
		cmocka_unit_test(test_watch_messages),
		cmocka_unit_test(test_watch_messages_bad),
		cmocka_unit_test(test_request_bodies),
		cmocka_unit_test(test_urls),
		cmocka_unit_test(test_backoff),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

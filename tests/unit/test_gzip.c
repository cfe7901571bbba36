/* SPDX-License-Identifier: BSD-2-Clause */
/* agent/io/gzip.c: whole gzip data decompressed under a cap, against data
 * made by zlib's own deflate (the gzip framing gzip(1) writes). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "io/gzip.h"
#include "util.h"

/* gzip data of in[0..len) (malloc'd), as gzip(1) would write it. */
static unsigned char *gz(const void *in, size_t len, size_t *ret_len)
{
	z_stream z = { 0 };
	size_t cap = len + len / 100 + 1024;
	unsigned char *out = xmalloc(cap);

	assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = (unsigned char *)in;
	z.avail_in = (uInt)len;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	*ret_len = cap - z.avail_out;
	deflateEnd(&z);
	return out;
}

static void test_gzip_roundtrip(void **state)
{
	const char *doc = "{\"opsworks\": {\"stack\": {\"name\": \"gz\"}}}";
	size_t n, len;
	_cleanup_free_ unsigned char *data = gz(doc, strlen(doc), &n);
	_cleanup_free_ char *out = NULL;

	assert_true(gzip_is(data, n));
	assert_false(gzip_is(doc, strlen(doc)));
	assert_false(gzip_is(data, 1));
	assert_int_equal(gzip_inflate(data, n, 1024, &out, &len, NULL), 0);
	assert_int_equal(len, strlen(doc));
	assert_string_equal(out, doc);
}

static void test_gzip_members_and_padding(void **state)
{
	size_t n1, n2, len;
	_cleanup_free_ unsigned char *a = gz("{\"a\":", 5, &n1), *b = gz(" 1}", 3, &n2);
	_cleanup_free_ unsigned char *both = xmalloc(n1 + n2 + 512);
	_cleanup_free_ char *out = NULL;
	char *again = NULL;
	const char *why = NULL;

	memcpy(both, a, n1);
	memcpy(both + n1, b, n2);
	assert_int_equal(gzip_inflate(both, n1 + n2, 1024, &out, &len, NULL), 0);
	assert_string_equal(out, "{\"a\": 1}");
	/* NUL padding after the last member is ignored, other bytes are not. */
	memset(both + n1 + n2, 0, 512);
	assert_int_equal(gzip_inflate(both, n1 + n2 + 512, 1024, &again, &len, NULL), 0);
	assert_string_equal(again, "{\"a\": 1}");
	free(again);
	both[n1 + n2 + 100] = 'x';
	assert_int_equal(gzip_inflate(both, n1 + n2 + 512, 1024, &again, &len, &why), -EBADMSG);
	assert_non_null(why);
}

static void test_gzip_bomb_stops_at_cap(void **state)
{
	size_t big = 20 * 1024 * 1024, n, len;
	_cleanup_free_ char *zeros = xcalloc(1, big);
	_cleanup_free_ unsigned char *data = gz(zeros, big, &n);
	char *out = NULL;

	assert_true(n < 64 * 1024);
	assert_int_equal(gzip_inflate(data, n, 16 * 1024 * 1024, &out, &len, NULL), -EFBIG);
	assert_null(out);
	/* Exactly at the cap is still good. */
	assert_int_equal(gzip_inflate(data, n, big, &out, &len, NULL), 0);
	assert_int_equal(len, big);
	free(out);
	out = NULL;
	assert_int_equal(gzip_inflate(data, n, big - 1, &out, &len, NULL), -EFBIG);
}

static void test_gzip_broken(void **state)
{
	const char *doc = "{\"x\": \"a stack of some length, to have a body to cut\"}";
	size_t n, len;
	_cleanup_free_ unsigned char *data = gz(doc, strlen(doc), &n);
	char *out = NULL;
	const char *why = NULL;

	/* Truncated anywhere. */
	for (size_t cut = 2; cut < n; cut++) {
		why = NULL;
		assert_int_equal(gzip_inflate(data, cut, 1024, &out, &len, &why), -EBADMSG);
		assert_non_null(why);
		assert_null(out);
	}
	/* A CRC mismatch. */
	data[n - 8] ^= 0xff;
	assert_int_equal(gzip_inflate(data, n, 1024, &out, &len, &why), -EBADMSG);
	assert_non_null(why);
	/* Not gzip at all. */
	assert_int_equal(gzip_inflate(doc, strlen(doc), 1024, &out, &len, &why), -EBADMSG);
	assert_int_equal(gzip_inflate("\x1f\x8b", 2, 1024, &out, &len, &why), -EBADMSG);
	assert_int_equal(gzip_inflate("\x1f\x8bgarbage that is no header", 27, 1024, &out, &len, &why), -EBADMSG);
}

static void test_gzip_empty_document(void **state)
{
	size_t n, len = 99;
	_cleanup_free_ unsigned char *data = gz("", 0, &n);
	_cleanup_free_ char *out = NULL;

	assert_int_equal(gzip_inflate(data, n, 1024, &out, &len, NULL), 0);
	assert_int_equal(len, 0);
	assert_string_equal(out, "");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_gzip_roundtrip),
		cmocka_unit_test(test_gzip_members_and_padding),
		cmocka_unit_test(test_gzip_bomb_stops_at_cap),
		cmocka_unit_test(test_gzip_broken),
		cmocka_unit_test(test_gzip_empty_document),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

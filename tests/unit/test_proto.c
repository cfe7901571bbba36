/* SPDX-License-Identifier: BSD-2-Clause */
/* lib/proto.c: framing, the method table, redaction, reply builders. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto.h"
#include "util.h"

static void expect_line(struct proto_reader *r, const char *want)
{
	char *line = NULL;
	assert_true(proto_reader_ready(r));
	assert_int_equal(proto_reader_next(r, &line), 1);
	assert_non_null(line);
	assert_string_equal(line, want);
	free(line);
}

static void expect_none(struct proto_reader *r)
{
	char *line = (char *)1;
	assert_false(proto_reader_ready(r));
	assert_int_equal(proto_reader_next(r, &line), 0);
	assert_null(line);
}

static void test_reader_partial(void **state)
{
	struct proto_reader r;

	proto_reader_init(&r, 0);
	assert_int_equal(r.max, PROTO_MAX_REQUEST);
	proto_reader_feed(&r, "{\"meth", 6);
	expect_none(&r);
	proto_reader_feed(&r, "od\":\"status\"}", 13);
	expect_none(&r);
	proto_reader_feed(&r, "\n", 1);
	expect_line(&r, "{\"method\":\"status\"}");
	expect_none(&r);
	assert_int_equal(proto_reader_pending(&r), 0);
	proto_reader_free(&r);
	proto_reader_free(&r); /* idempotent */
}

static void test_reader_multiple(void **state)
{
	struct proto_reader r;
	const char *in = "a\nbb\r\n\nccc\nddd";

	proto_reader_init(&r, 100);
	proto_reader_feed(&r, in, strlen(in));
	expect_line(&r, "a");
	expect_line(&r, "bb");
	expect_line(&r, "");
	expect_line(&r, "ccc");
	expect_none(&r);
	assert_int_equal(proto_reader_pending(&r), 3);
	proto_reader_feed(&r, "\n", 1);
	expect_line(&r, "ddd");
	expect_none(&r);
	proto_reader_free(&r);
}

static void test_reader_byte_by_byte(void **state)
{
	struct proto_reader r;
	const char *in = "one\ntwo\nthree\n";
	int got = 0;

	proto_reader_init(&r, 16);
	for (size_t i = 0; in[i]; i++) {
		char *line;
		proto_reader_feed(&r, in + i, 1);
		while (proto_reader_next(&r, &line) == 1) {
			got++;
			free(line);
		}
	}
	assert_int_equal(got, 3);
	proto_reader_free(&r);
}

static void test_reader_overlong_then_recovery(void **state)
{
	struct proto_reader r;
	char *big = xmalloc(PROTO_MAX_REQUEST * 3);
	char *line;

	memset(big, 'x', PROTO_MAX_REQUEST * 3);
	proto_reader_init(&r, 0);
	/* A good line, an overlong one and a good one, all in one feed: the
	 * error comes in order, between the two. */
	proto_reader_feed(&r, "first\n", 6);
	proto_reader_feed(&r, big, PROTO_MAX_REQUEST * 3);
	proto_reader_feed(&r, "\nsecond\n", 8);
	/* Memory stays bounded by the cap, not by what was sent. */
	assert_true(r.cap <= 4 * (size_t)PROTO_MAX_REQUEST);
	expect_line(&r, "first");
	assert_true(proto_reader_ready(&r));
	assert_int_equal(proto_reader_next(&r, &line), -EMSGSIZE);
	assert_null(line);
	expect_line(&r, "second");
	expect_none(&r);

	/* Overlong without its newline yet: reported at once, then the rest of
	 * it is dropped as it arrives, and the next line is fine. */
	proto_reader_feed(&r, big, PROTO_MAX_REQUEST + 10);
	assert_true(proto_reader_ready(&r));
	assert_int_equal(proto_reader_next(&r, &line), -EMSGSIZE);
	expect_none(&r);
	proto_reader_feed(&r, big, 1000);
	expect_none(&r);
	proto_reader_feed(&r, "xx\n{\"method\":\"version\"}\n", 24);
	expect_line(&r, "{\"method\":\"version\"}");
	expect_none(&r);
	proto_reader_free(&r);
	free(big);
}

static void test_reader_exact_limit(void **state)
{
	struct proto_reader r;
	char buf[12];
	char *line;

	proto_reader_init(&r, 10);
	/* 9 bytes + newline = 10: allowed. */
	memset(buf, 'a', 9);
	buf[9] = '\n';
	proto_reader_feed(&r, buf, 10);
	expect_line(&r, "aaaaaaaaa");
	/* 10 bytes + newline = 11: too long. */
	memset(buf, 'b', 10);
	buf[10] = '\n';
	proto_reader_feed(&r, buf, 11);
	assert_true(proto_reader_ready(&r));
	assert_int_equal(proto_reader_next(&r, &line), -EMSGSIZE);
	expect_none(&r);
	proto_reader_feed(&r, "ok\n", 3);
	expect_line(&r, "ok");
	proto_reader_free(&r);
}

static void test_reader_nul(void **state)
{
	struct proto_reader r;
	char *line;

	proto_reader_init(&r, 0);
	proto_reader_feed(&r, "{\"method\":\"status\"}\0junk\nok\n", 28);
	assert_true(proto_reader_ready(&r));
	assert_int_equal(proto_reader_next(&r, &line), -EBADMSG);
	expect_line(&r, "ok");
	proto_reader_free(&r);
}

static void test_methods(void **state)
{
	static const char *const names[] = { "version", "status", "stack", "runs", "run-info", "log", "plan",
					     "run", "reload", "pause", "resume", "clear-failed", "rollback",
					     "fleet", "stack-push", "schedule", "metrics" };

	assert_int_equal(ELEMENTSOF(names), _PROTO_METHOD_MAX);
	for (size_t i = 0; i < ELEMENTSOF(names); i++) {
		enum proto_method m = proto_method_from_string(names[i]);
		assert_int_not_equal(m, PROTO_METHOD_INVALID);
		assert_string_equal(proto_method_to_string(m), names[i]);
	}
	assert_true(proto_method_streams(PROTO_METHOD_LOG));
	assert_true(proto_method_streams(PROTO_METHOD_RUN));
	assert_false(proto_method_streams(PROTO_METHOD_STATUS));
	assert_int_equal(proto_method_from_string("Status"), PROTO_METHOD_INVALID);
	assert_int_equal(proto_method_from_string("shell"), PROTO_METHOD_INVALID);
	assert_int_equal(proto_method_from_string(""), PROTO_METHOD_INVALID);
	assert_int_equal(proto_method_from_string(NULL), PROTO_METHOD_INVALID);
	assert_null(proto_method_to_string(_PROTO_METHOD_MAX));
	assert_null(proto_method_to_string(PROTO_METHOD_INVALID));
}

static void test_redact_depth(void **state)
{
	json_error_t jerr;
	json_t *in = json_loads("{\"ebs_snapshots\":{\"aws_secret\":\"x\",\"aws_key\":\"y\",\"keep\":3},"
				"\"list\":[{\"password\":1},{\"deep\":{\"API_TOKEN\":{\"a\":1}}}],"
				"\"name\":\"plain\",\"n\":null}",
				0, &jerr);
	json_t *out;

	assert_non_null(in);
	out = proto_redact(in);
	assert_non_null(out);
	assert_string_equal(json_string_value(json_object_get(json_object_get(out, "ebs_snapshots"), "aws_secret")),
			    "***");
	assert_string_equal(json_string_value(json_object_get(json_object_get(out, "ebs_snapshots"), "aws_key")),
			    "***");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(out, "ebs_snapshots"), "keep")), 3);
	assert_string_equal(
		json_string_value(json_object_get(json_array_get(json_object_get(out, "list"), 0), "password")), "***");
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(json_array_get(json_object_get(out, "list"), 1), "deep"), "API_TOKEN")),
			    "***");
	assert_string_equal(json_string_value(json_object_get(out, "name")), "plain");
	assert_true(json_is_null(json_object_get(out, "n")));
	/* The input is untouched. */
	assert_string_equal(json_string_value(json_object_get(json_object_get(in, "ebs_snapshots"), "aws_secret")), "x");
	assert_null(proto_redact(NULL));
	json_decref(in);
	json_decref(out);
}

/* An object marked "secret": true (an agent.files entry) shows "***" for
 * its content, in both redactions; what describes it stays. The shared one
 * copies only the way to the secrets. */
static void test_redact_secret_objects(void **state)
{
	json_error_t jerr;
	json_t *in = json_loads("{\"agent\":{\"files\":{\"web\":[{\"path\":\"/etc/a\",\"content\":\"s3cr3t\","
				"\"mode\":\"0600\",\"owner\":\"app\",\"secret\":true,\"extra\":{\"x\":1}},"
				"{\"path\":\"/etc/b\",\"content\":\"plain\",\"secret\":false}]}},"
				"\"opsworks\":{\"stack\":{\"name\":\"s\"},\"big\":[1,2,3]},\"db\":{\"password\":\"pw\"}}",
				0, &jerr);
	json_t *outs[2];

	assert_non_null(in);
	outs[0] = proto_redact(in);
	outs[1] = proto_redact_shared(in);
	for (int i = 0; i < 2; i++) {
		json_t *list = json_object_get(json_object_get(json_object_get(outs[i], "agent"), "files"), "web");
		json_t *f0 = json_array_get(list, 0), *f1 = json_array_get(list, 1);
		char *dump = json_dumps(outs[i], 0);

		assert_non_null(dump);
		assert_null(strstr(dump, "s3cr3t"));
		free(dump);
		assert_string_equal(json_string_value(json_object_get(f0, "content")), "***");
		assert_string_equal(json_string_value(json_object_get(f0, "extra")), "***");
		assert_string_equal(json_string_value(json_object_get(f0, "path")), "/etc/a");
		assert_string_equal(json_string_value(json_object_get(f0, "mode")), "0600");
		assert_string_equal(json_string_value(json_object_get(f0, "owner")), "app");
		assert_true(json_is_true(json_object_get(f0, "secret")));
		assert_string_equal(json_string_value(json_object_get(f1, "content")), "plain");
		assert_string_equal(json_string_value(json_object_get(json_object_get(outs[i], "db"), "password")),
				    "***");
		assert_string_equal(
			json_string_value(json_object_get(json_object_get(json_object_get(outs[i], "opsworks"), "stack"),
							  "name")),
			"s");
	}
	/* Shared: what holds no secret is the input's own, the rest is new. */
	assert_ptr_equal(json_object_get(outs[1], "opsworks"), json_object_get(in, "opsworks"));
	assert_ptr_not_equal(json_object_get(outs[1], "agent"), json_object_get(in, "agent"));
	assert_ptr_equal(json_array_get(json_object_get(json_object_get(json_object_get(outs[1], "agent"), "files"), "web"), 1),
			 json_array_get(json_object_get(json_object_get(json_object_get(in, "agent"), "files"), "web"), 1));
	/* The input is untouched. */
	assert_string_equal(json_string_value(json_object_get(json_object_get(in, "db"), "password")), "pw");
	json_decref(outs[0]);
	json_decref(outs[1]);
	/* Nothing secret: the document itself. */
	json_object_del(in, "agent");
	json_object_del(in, "db");
	outs[1] = proto_redact_shared(in);
	assert_ptr_equal(outs[1], in);
	json_decref(outs[1]);
	assert_null(proto_redact_shared(NULL));
	json_decref(in);
}

static void collect_string(const char *s, size_t len, void *userdata)
{
	struct buf *b = userdata;

	buf_append(b, s, len);
	buf_puts(b, "|");
}

/* The strings and numbers a secret mark or a secret key hides, to look for
 * in free text. Only an agent.files entry keeps its path visible. */
static void test_secret_strings(void **state)
{
	json_t *in = json_loads("{\"agent\":{\"files\":{\"web\":[{\"path\":\"/a\",\"content\":\"c1\",\"secret\":true,"
				"\"more\":[\"c2\",{\"x\":\"c3\"}],\"n\":12345},"
				"{\"path\":\"/b\",\"content\":\"open\"}]}},"
				"\"custom\":{\"secret\":true,\"path\":\"/p\",\"v\":\"c4\",\"pin\":2.5},"
				"\"password\":\"pw-5\"}",
				0, NULL);
	struct buf b;

	assert_non_null(in);
	buf_init(&b);
	proto_secret_strings(in, collect_string, &b);
	assert_string_equal(b.data, "c1|c2|c3|12345|/p|c4|2.5|pw-5|");
	buf_free(&b);
	json_decref(in);
}

/* Outside agent.files, an object marked secret hides every member: what
 * else in Custom JSON is a value cannot be told. */
static void test_redact_secret_custom(void **state)
{
	json_t *in = json_loads("{\"app\":{\"secret\":true,\"path\":\"/p\",\"name\":\"n1\",\"layer\":\"l1\","
				"\"mode\":\"m1\",\"owner\":\"o1\",\"group\":\"g1\"},"
				"\"agent\":{\"other\":[{\"secret\":true,\"path\":\"/q\"}]}}",
				0, NULL);
	json_t *outs[2];

	assert_non_null(in);
	outs[0] = proto_redact(in);
	outs[1] = proto_redact_shared(in);
	for (int i = 0; i < 2; i++) {
		char *dump = json_dumps(outs[i], JSON_SORT_KEYS);

		assert_non_null(dump);
		assert_string_equal(dump, "{\"agent\": {\"other\": [{\"path\": \"***\", \"secret\": true}]}, \"app\": "
					  "{\"group\": \"***\", \"layer\": \"***\", \"mode\": \"***\", \"name\": \"***\", "
					  "\"owner\": \"***\", \"path\": \"***\", \"secret\": true}}");
		free(dump);
		json_decref(outs[i]);
	}
	json_decref(in);
}

static void test_redact_text(void **state)
{
	static const struct {
		const char *in, *want;
	} cases[] = {
		{ "password=hunter2 next", "password=***" },
		{ "DB_PASSWORD: s3cret\nok\n", "DB_PASSWORD: ***\nok\n" },
		{ "aws_secret_access_key = AKIA/xyz end", "aws_secret_access_key = ***" },
		{ "{\"token\": \"abc def\"}", "{\"token\": ***" },
		{ "a\ntoken=x y\nb", "a\ntoken=***\nb" },
		{ "nothing to see", "nothing to see" },
		{ "key:", "key:" },
		{ "key:\nnext", "key:\nnext" },
		{ "the key is here", "the key is here" },
		{ "", "" },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char *out = proto_redact_text(cases[i].in);
		assert_string_equal(out, cases[i].want);
		free(out);
	}
}

/* The security tester's forms (break3 cases.txt): whatever follows a
 * secret name and its separator is hidden to the end of its line. */
static void test_redact_text_forms(void **state)
{
	static const char *const cases[] = {
		"password=hunter2",
		"{\"password\": \"hun\\\"ter2 tail\"}",
		"{\"api_keys\": [\"k1-SECRET\", \"k2-SECRET\"]}",
		"{\"secret\": {\"value\": \"OBJ-SECRET\"}}",
		"'password' => 'PHP-SECRET'",
		":password => \"RUBY-SECRET\"",
		"password := GO-SECRET",
		"password[0]=ARR-SECRET",
		"password[prod]=ARR-SECRET",
		"password: my pass phrase SECRET",
		"password='a b SECRET",
		"AWS_SECRET_ACCESS_KEY=AKIA-SECRET",
		"export DB_PASSWORD=\"quoted SECRET\"",
		"--password SPACE-SECRET",
		"password\\t= TAB-SECRET",
		"Password: Upper-SECRET",
		"x_key_y=XKEY-SECRET",
		"token=a;rest-SECRET",
		"password=\"\"SECRET",
		"password == EQ-SECRET",
		"secret-> ARROW-SECRET",
		"\"password\" : \"SPACED-SECRET\"",
		"password\t= TAB-SECRET",
		"{\\\"password\\\": \\\"ESCAPED-SECRET\\\"}",
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char *out = proto_redact_text(cases[i]);
		/* each value ends in SECRET (or is hunter2), the names do not */
		if (strstr(out, "-SECRET") || strstr(out, " SECRET") || strstr(out, "\"SECRET") ||
		    strstr(out, "ARROW") || strstr(out, "ter2"))
			fail_msg("leak: %s -> %s", cases[i], out);
		/* on its own line, among others: the other lines stay */
		free(out);
		{
			char *in = NULL, *out2;
			size_t n = strlen(cases[i]) + 16;
			in = malloc(n);
			assert_non_null(in);
			snprintf(in, n, "a1\n%s\nb2", cases[i]);
			out2 = proto_redact_text(in);
			assert_non_null(strstr(out2, "a1\n"));
			assert_non_null(strstr(out2, "\nb2"));
			assert_null(strstr(out2, "-SECRET"));
			assert_null(strstr(out2, " SECRET"));
			free(out2);
			free(in);
		}
	}
}

static void test_replies(void **state)
{
	json_t *v;
	char *line;
	size_t n;

	v = proto_reply_ok(NULL);
	line = proto_encode_line(v, &n);
	assert_string_equal(line, "{\"ok\":true,\"result\":{}}\n");
	assert_int_equal(n, strlen(line));
	free(line);
	json_decref(v);

	v = proto_reply_ok(json_pack("{s:i}", "id", 7));
	line = proto_encode_line(v, NULL);
	assert_string_equal(line, "{\"ok\":true,\"result\":{\"id\":7}}\n");
	free(line);
	json_decref(v);

	v = proto_reply_error(PROTO_E_BAD_REQUEST, "request longer than %d bytes", PROTO_MAX_REQUEST);
	line = proto_encode_line(v, NULL);
	assert_string_equal(line, "{\"ok\":false,\"error\":{\"code\":\"bad-request\",\"message\":\"request longer than "
				  "65536 bytes\"}}\n");
	free(line);
	json_decref(v);

	/* A message with a newline still encodes to one line. */
	v = proto_reply_error(PROTO_E_FAILED, "a\nb");
	line = proto_encode_line(v, &n);
	assert_null(memchr(line, '\n', n - 1));
	free(line);
	json_decref(v);

	assert_string_equal(proto_error_code_from_errno(-ENOENT), "not-found");
	assert_string_equal(proto_error_code_from_errno(-EBUSY), "busy");
	assert_string_equal(proto_error_code_from_errno(-EINVAL), "invalid-params");
	assert_string_equal(proto_error_code_from_errno(-EPERM), "permission-denied");
	assert_string_equal(proto_error_code_from_errno(-EACCES), "permission-denied");
	assert_string_equal(proto_error_code_from_errno(-EIO), "failed");
}

static void test_string_lossy(void **state)
{
	json_t *v;

	v = proto_string_lossy("h\xc3\xa9llo", 6);
	assert_string_equal(json_string_value(v), "h\xc3\xa9llo");
	json_decref(v);
	v = proto_string_lossy("a\xff" "b\0c\xed\xa0\x80", 8);
	assert_non_null(v);
	assert_string_equal(json_string_value(v), "a\xEF\xBF\xBD" "b\xEF\xBF\xBD" "c\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
	json_decref(v);
	v = proto_string_lossy("\xe2\x82", 2); /* truncated sequence */
	assert_string_equal(json_string_value(v), "\xEF\xBF\xBD\xEF\xBF\xBD");
	json_decref(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reader_partial),
		cmocka_unit_test(test_reader_multiple),
		cmocka_unit_test(test_reader_byte_by_byte),
		cmocka_unit_test(test_reader_overlong_then_recovery),
		cmocka_unit_test(test_reader_exact_limit),
		cmocka_unit_test(test_reader_nul),
		cmocka_unit_test(test_methods),
		cmocka_unit_test(test_redact_depth),
		cmocka_unit_test(test_redact_secret_objects),
		cmocka_unit_test(test_secret_strings),
		cmocka_unit_test(test_redact_text),
		cmocka_unit_test(test_redact_text_forms),
		cmocka_unit_test(test_redact_secret_custom),
		cmocka_unit_test(test_replies),
		cmocka_unit_test(test_string_lossy),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

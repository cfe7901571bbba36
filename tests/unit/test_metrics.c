/* SPDX-License-Identifier: BSD-2-Clause */
/* lib/metrics.c: the `metrics` result as Prometheus text exposition format
 * 0.0.4 (prometheus.io/docs/instrumenting/exposition_formats): HELP and
 * TYPE lines, label values escaped (backslash, double quote, newline), help
 * texts escaped (backslash, newline), numbers that read back exactly. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"
#include "util.h"

static char *render(const char *json)
{
	json_error_t jerr;
	json_t *v = json_loads(json, 0, &jerr);
	struct buf b;

	if (!v)
		fail_msg("bad test JSON: %s", jerr.text);
	buf_init(&b);
	metrics_text(v, &b);
	json_decref(v);
	return buf_steal(&b);
}

static void test_families_and_labels(void **state)
{
	(void)state;
	char *t = render("{\"metrics\": [{\"name\": \"agentd_runs_total\", \"type\": \"counter\", \"help\": \"Runs.\","
			 " \"samples\": [{\"name\": \"agentd_runs_total\", \"labels\": {\"event\": \"setup\", \"status\":"
			 " \"success\"}, \"value\": 3}]}, {\"name\": \"agentd_source_errors_total\", \"type\": \"counter\","
			 " \"help\": \"E.\", \"samples\": [{\"name\": \"agentd_source_errors_total\", \"labels\": {},"
			 " \"value\": 0}]}], \"file\": null}");

	assert_string_equal(t, "# HELP agentd_runs_total Runs.\n"
			       "# TYPE agentd_runs_total counter\n"
			       "agentd_runs_total{event=\"setup\",status=\"success\"} 3\n"
			       "# HELP agentd_source_errors_total E.\n"
			       "# TYPE agentd_source_errors_total counter\n"
			       "agentd_source_errors_total 0\n");
	free(t);
}

/* A label value with every character the format escapes, and a help text
 * with a backslash and a newline: one line per sample, whatever the name. */
static void test_hostile_label_and_help(void **state)
{
	(void)state;
	char *t = render("{\"metrics\": [{\"name\": \"m\", \"type\": \"gauge\", \"help\": \"a\\\\b\\nc \\\"q\\\"\","
			 " \"samples\": [{\"name\": \"m\", \"labels\": {\"job\": \"x\\\"} 1\\nevil{a=\\\"\\\\\"},"
			 " \"value\": 1}]}]}");

	assert_string_equal(t, "# HELP m a\\\\b\\nc \"q\"\n"
			       "# TYPE m gauge\n"
			       "m{job=\"x\\\"} 1\\nevil{a=\\\"\\\\\"} 1\n");
	free(t);
}

static void test_numbers(void **state)
{
	(void)state;
	char out[40];
	json_t *v;

	v = json_real(1712345678.123);
	metrics_format_value(v, out, sizeof(out));
	assert_string_equal(out, "1712345678.123");
	json_decref(v);
	v = json_real(0.1 + 0.2); /* needs 17 digits to read back */
	metrics_format_value(v, out, sizeof(out));
	assert_true(strtod(out, NULL) == 0.1 + 0.2);
	json_decref(v);
	v = json_integer(INT64_C(9007199254740993));
	metrics_format_value(v, out, sizeof(out));
	assert_string_equal(out, "9007199254740993");
	json_decref(v);
	/* jansson refuses infinities in json_real: the caller's sample of
	 * +Inf is a label ("le"), never a value. An integer 0 stays "0". */
	v = json_integer(0);
	metrics_format_value(v, out, sizeof(out));
	assert_string_equal(out, "0");
	json_decref(v);
}

/* Members of the wrong type are skipped whole: a sample without a number,
 * a family without a type, a label that is not a string. */
static void test_malformed_members_skipped(void **state)
{
	(void)state;
	char *t = render("{\"metrics\": [{\"name\": \"a\", \"help\": \"no type\", \"samples\": []},"
			 " {\"name\": \"b\", \"type\": \"gauge\", \"samples\": [{\"name\": \"b\", \"value\": \"1\"},"
			 " {\"name\": \"b\", \"labels\": {\"k\": 1, \"ok\": \"v\"}, \"value\": 2.5}]}]}");

	assert_string_equal(t, "# HELP b \n# TYPE b gauge\nb{ok=\"v\"} 2.5\n");
	free(t);
	t = render("{\"metrics\": 3}");
	assert_string_equal(t, "");
	free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_families_and_labels),
		cmocka_unit_test(test_hostile_label_and_help),
		cmocka_unit_test(test_numbers),
		cmocka_unit_test(test_malformed_members_skipped),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

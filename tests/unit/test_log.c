/* SPDX-License-Identifier: BSD-2-Clause */
/* lib/log.c: a run's context (RUN_ID, EVENT, STEP) is on the lines logged
 * while it is in effect, and on no other line. stderr is captured in a
 * temporary file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"

/* Runs fn with stderr going to a file; returns what it wrote (malloc'd). */
static char *capture(void (*fn)(void))
{
	FILE *f = tmpfile();
	int saved = dup(STDERR_FILENO);
	char *out;
	long n;

	assert_non_null(f);
	assert_true(saved >= 0);
	fflush(stderr);
	assert_int_equal(dup2(fileno(f), STDERR_FILENO), STDERR_FILENO);
	fn();
	fflush(stderr);
	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	n = ftell(f);
	assert_true(n >= 0);
	out = calloc(1, (size_t)n + 1);
	rewind(f);
	assert_int_equal(fread(out, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return out;
}

static struct log_context run_ctx;

static void log_during_run(void)
{
	const struct log_context *prev;

	log_context_set(&run_ctx, 42, "deploy", "web", "/srv/www/shop");
	/* The run's own callback. */
	prev = log_context_use(&run_ctx);
	log_info("inside the run");
	log_context_use(prev);
	/* Something else while the run is still going: a control client. */
	log_info("control: run denied to uid 65534 pid 1");
	/* The run's next callback. */
	prev = log_context_use(&run_ctx);
	log_warn("inside again");
	log_context_use(prev);
}

static void test_context_only_inside_the_run(void **state)
{
	char *out = capture(log_during_run);
	char *denied = strstr(out, "control: run denied");

	assert_non_null(strstr(out, "agentd: info: [run 42 deploy /srv/www/shop] inside the run\n"));
	assert_non_null(strstr(out, "agentd: warning: [run 42 deploy /srv/www/shop] inside again\n"));
	assert_non_null(denied);
	/* The line of the other thing carries no run. */
	assert_non_null(strstr(out, "agentd: info: control: run denied to uid 65534 pid 1\n"));
	free(out);
}

static void log_nested(void)
{
	struct log_context other;
	const struct log_context *outer, *inner;

	log_context_set(&run_ctx, 7, "setup", NULL, NULL);
	log_context_set(&other, 8, "configure", NULL, "x");
	outer = log_context_use(&run_ctx);
	inner = log_context_use(&other);
	log_info("second");
	log_context_use(inner);
	log_info("first");
	log_context_use(outer);
	log_info("none");
}

static void test_context_nests(void **state)
{
	char *out = capture(log_nested);

	assert_non_null(strstr(out, "[run 8 configure x] second\n"));
	assert_non_null(strstr(out, "[run 7 setup] first\n"));
	assert_non_null(strstr(out, "agentd: info: none\n"));
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_context_only_inside_the_run),
		cmocka_unit_test(test_context_nests),
	};

	log_open("agentd", false);
	log_force_stderr();
	return cmocka_run_group_tests(tests, NULL, NULL);
}

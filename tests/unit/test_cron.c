/* SPDX-License-Identifier: BSD-2-Clause */
/* lib/cron.c: crontab(5) expressions in UTC, checked against the seeds'
 * lines (plone-cookbook-behavior.md §9) and, over whole years, against a
 * minute-by-minute reference matcher built on libc's gmtime_r (another
 * implementation of the calendar). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "cron.h"
#include "util.h"

/* Seconds since the epoch of a UTC date and time (libc's timegm). */
static int64_t utc(int y, int mo, int d, int h, int mi)
{
	struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi };
	return (int64_t)timegm(&tm);
}

static struct cron parse_ok(const char *expr)
{
	struct cron c;
	char *err = NULL;

	if (cron_parse(expr, &c, &err) != 0)
		fail_msg("%s: %s", expr, err);
	return c;
}

/* crontab(5) read literally, one minute at a time: the reference. */
static bool ref_match(const char *expr, const struct cron *c, int64_t t)
{
	time_t tt = (time_t)t;
	struct tm tm;
	bool md, wd;

	(void)expr;
	gmtime_r(&tt, &tm);
	if (!(c->minutes >> tm.tm_min & 1) || !(c->hours >> tm.tm_hour & 1) || !(c->months >> (tm.tm_mon + 1) & 1))
		return false;
	md = c->mdays >> tm.tm_mday & 1;
	wd = c->wdays >> tm.tm_wday & 1;
	return c->mday_star || c->wday_star ? md && wd : md || wd;
}

/* The matches of expr in [from, to): counted by cron_next, each checked
 * against the reference, and cron_prev walked back over the same ones. */
static long walk(const char *expr, int64_t from, int64_t to)
{
	struct cron c = parse_ok(expr);
	int64_t t = from - 1, prev = -1;
	long n = 0;

	for (int64_t m = from; m < to; m += 60) {
		if (!ref_match(expr, &c, m))
			continue;
		t = cron_next(&c, t);
		if (t != m)
			fail_msg("%s: next after %lld is %lld, the reference says %lld", expr, (long long)prev, (long long)t,
				 (long long)m);
		assert_int_equal(cron_prev(&c, t), t);
		if (prev >= 0)
			assert_int_equal(cron_prev(&c, t - 1), prev);
		prev = t;
		n++;
	}
	/* Nothing more before `to`. */
	assert_true(cron_next(&c, prev >= 0 ? prev : from - 1) >= to || cron_next(&c, prev) == -1);
	return n;
}

/* The seeds' lines (reference §9 table and ebs_snapshots' "0 8 * * *"). */
static void test_cron_seed_lines(void **state)
{
	struct cron c;

	(void)state;
	c = parse_ok("0 8 * * *");
	assert_int_equal(cron_next(&c, utc(2027, 3, 10, 7, 59)), utc(2027, 3, 10, 8, 0));
	assert_int_equal(cron_next(&c, utc(2027, 3, 10, 7, 59) + 59), utc(2027, 3, 10, 8, 0));
	assert_int_equal(cron_next(&c, utc(2027, 3, 10, 8, 0)), utc(2027, 3, 11, 8, 0)); /* strictly after */
	assert_int_equal(cron_prev(&c, utc(2027, 3, 10, 8, 0)), utc(2027, 3, 10, 8, 0)); /* at or before */
	assert_int_equal(cron_prev(&c, utc(2027, 3, 10, 7, 59)), utc(2027, 3, 9, 8, 0));
	assert_int_equal(cron_next(&c, utc(2027, 12, 31, 9, 0)), utc(2028, 1, 1, 8, 0));
	/* ebs_snapshots in the cookbook: "weekday 0-6", the same days. */
	assert_int_equal(walk("0 8 * * 0-6", utc(2027, 1, 1, 0, 0), utc(2028, 1, 1, 0, 0)), 365);

	/* packcronjob: Sundays 01:00. 2027-01-01 is a Friday. */
	c = parse_ok("0 1 * * 7");
	assert_int_equal(cron_next(&c, utc(2027, 1, 1, 0, 0)), utc(2027, 1, 3, 1, 0));
	/* backupcronjob, zodbpack-prepack (Saturday), zodbpack-pack (Sunday). */
	c = parse_ok("0 21 * * *");
	assert_int_equal(cron_next(&c, utc(2027, 1, 1, 21, 0)), utc(2027, 1, 2, 21, 0));
	c = parse_ok("0 23 * * 6");
	assert_int_equal(cron_next(&c, utc(2027, 1, 1, 0, 0)), utc(2027, 1, 2, 23, 0));
	c = parse_ok("0 23 * * 7");
	assert_int_equal(cron_next(&c, utc(2027, 1, 2, 23, 0)), utc(2027, 1, 3, 23, 0));
	assert_int_equal(cron_prev(&c, utc(2027, 1, 3, 22, 59)), utc(2026, 12, 27, 23, 0));
}

/* zodb-clear-refs ran "0 9 * * 3" plus a shell test of the day, "days 1-7
 * only": the first Wednesday of the month. crontab(5) ORs two restricted
 * day fields, so "0 9 1-7 * 3" is NOT that job: it runs on days 1-7 and on
 * every Wednesday. The first Wednesday is "0 9 1-7 * *" with the weekday
 * test kept in the job; its Wednesdays are exactly one a month. */
static void test_cron_day_1_to_7(void **state)
{
	struct cron c;
	int64_t t;
	int wednesdays = 0;

	(void)state;
	/* January 2027: days 1-7, then the Wednesdays 13, 20, 27. */
	assert_int_equal(walk("0 9 1-7 * 3", utc(2027, 1, 1, 0, 0), utc(2027, 2, 1, 0, 0)), 10);
	c = parse_ok("0 9 1-7 * 3");
	assert_int_equal(cron_next(&c, utc(2027, 1, 7, 9, 0)), utc(2027, 1, 13, 9, 0));

	c = parse_ok("0 9 1-7 * *");
	assert_int_equal(walk("0 9 1-7 * *", utc(2027, 1, 1, 0, 0), utc(2028, 1, 1, 0, 0)), 84);
	for (t = cron_next(&c, utc(2027, 1, 1, 0, 0) - 1); t < utc(2028, 1, 1, 0, 0); t = cron_next(&c, t)) {
		time_t tt = (time_t)t;
		struct tm tm;
		gmtime_r(&tt, &tm);
		if (tm.tm_wday == 3)
			wednesdays++;
	}
	assert_int_equal(wednesdays, 12);
	/* 2027-01-06 is January's first Wednesday. */
	c = parse_ok("0 9 * * 3");
	assert_int_equal(cron_next(&c, utc(2027, 1, 1, 0, 0)), utc(2027, 1, 6, 9, 0));
	/* "*" first in a day field (a step too, as in Vixie cron) means AND. */
	c = parse_ok("0 9 */7 * 3");
	assert_true(c.mday_star);
	assert_int_equal(walk("0 9 */7 * 3", utc(2027, 1, 1, 0, 0), utc(2028, 1, 1, 0, 0)), 10);
}

/* A DST-free UTC walk over whole years against the reference. */
static void test_cron_year_walk(void **state)
{
	int64_t y27 = utc(2027, 1, 1, 0, 0), y28 = utc(2028, 1, 1, 0, 0), y29 = utc(2029, 1, 1, 0, 0);

	(void)state;
	assert_int_equal(walk("0 1 * * 7", y27, y28), 52);
	assert_int_equal(walk("0 21 * * *", y27, y28), 365);
	assert_int_equal(walk("0 21 * * *", y28, y29), 366); /* leap year */
	assert_int_equal(walk("*/15 * * * *", y27, y28), 365 * 24 * 4);
	assert_int_equal(walk("30 2 1,15 * 5", y27, y28), 73); /* 24 days and 52 Fridays, 3 of them the 1st or 15th */
	assert_int_equal(walk("5 4 * jan-mar mon-fri", y27, y28), 64);
	assert_int_equal(walk("0 0 29 2 *", y27, y29), 1);
	assert_int_equal(walk("59 23 31 * *", y27, y28), 7);
	assert_int_equal(walk("0 12 * * sun,7,0", y27, y28), 52);
}

static void test_cron_impossible(void **state)
{
	struct cron c;

	(void)state;
	c = parse_ok("0 0 31 2 *");
	assert_int_equal(cron_next(&c, utc(2027, 1, 1, 0, 0)), -1);
	assert_int_equal(cron_prev(&c, utc(2027, 1, 1, 0, 0)), -1);
	c = parse_ok("0 0 31 4,6,9,11 *");
	assert_int_equal(cron_next(&c, utc(2027, 1, 1, 0, 0)), -1);
	/* Feb 29 is found across the years between leap days. */
	c = parse_ok("0 0 29 2 *");
	assert_int_equal(cron_next(&c, utc(2028, 2, 29, 0, 0)), utc(2032, 2, 29, 0, 0));
	assert_int_equal(cron_prev(&c, utc(2028, 2, 28, 0, 0)), utc(2024, 2, 29, 0, 0));
	/* Restricted both ways: the 31st of February is impossible, Sundays
	 * are not. */
	c = parse_ok("0 0 31 2 0");
	assert_int_equal(cron_next(&c, utc(2027, 1, 1, 0, 0)), utc(2027, 2, 7, 0, 0));
}

static void parse_fails(const char *expr, const char *needle)
{
	struct cron c;
	char *err = NULL;

	if (cron_parse(expr, &c, &err) != -EINVAL)
		fail_msg("\"%s\" was accepted", expr);
	if (!err || !strstr(err, needle))
		fail_msg("\"%s\": error \"%s\" does not name \"%s\"", expr, err ? err : "(none)", needle);
	free(err);
	assert_int_equal(cron_parse(expr, &c, NULL), -EINVAL);
}

static void test_cron_errors_name_the_field(void **state)
{
	(void)state;
	parse_fails("61 * * * *", "minute field \"61\": 61 is out of range 0-59");
	parse_fails("* 24 * * *", "hour field");
	parse_fails("* * 0 * *", "day-of-month field");
	parse_fails("* * 32 * *", "day-of-month field");
	parse_fails("* * * 13 *", "month field");
	parse_fails("* * * foo *", "month field \"foo\": unknown name");
	parse_fails("* * * * 8", "day-of-week field");
	parse_fails("* * * * mo", "day-of-week field");
	parse_fails("* * * *", "5 fields");
	parse_fails("* * * * * /bin/true", "not 6");
	parse_fails("", "not 0");
	parse_fails("5/2 * * * *", "a step follows");
	parse_fails("*/0 * * * *", "the step must be from 1 to 60");
	parse_fails("5-1 * * * *", "from low to high");
	parse_fails("1,,2 * * * *", "empty item");
	parse_fails("1, * * * *", "empty item");
	parse_fails("1x * * * *", "unexpected \"x\"");
	parse_fails("-1 * * * *", "expected a number");
	parse_fails("99999999999999999999 * * * *", "out of range");
}

/* The expression comes from the stack and its message reaches logs and
 * `agentctl status`: control characters are quoted as the stack's other
 * validators quote them (\u00XX), never written raw. */
static void test_cron_errors_escape_controls(void **state)
{
	static const char *const bad[] = {
		"0 0 * * \033]0;PWNED\007\033[2J", /* a terminal title and a clear */
		"0 0 * * 1\n",                        /* a newline in the last field */
		"0 0 * * \177",                        /* DEL */
		"0 0 * * 1x\033",                     /* the unexpected character itself */
		"\033 0 0 * * *",                      /* too many fields: the whole expression */
		"0 0 * * 1,\r",
	};
	struct cron c;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *err = NULL;
		assert_int_equal(cron_parse(bad[i], &c, &err), -EINVAL);
		assert_non_null(err);
		for (const char *p = err; *p; p++)
			if ((unsigned char)*p < 0x20 || *p == 0x7f)
				fail_msg("expression %zu: a raw control character 0x%02x in \"%s\"", i, *p, err);
		free(err);
	}
	parse_fails("0 0 * * \033]0;PWNED\007", "day-of-week field \"\\u001b]0;PWNED\\u0007\": expected a number or a name");
	parse_fails("0 0 * * 1x\033", "unexpected \"x\"");
	parse_fails("0 0 * * 1\177", "unexpected \"\\u007f\"");
	parse_fails("0 0 * * \"", "day-of-week field \"\\\"\"");
}

static void test_cron_names_and_sunday(void **state)
{
	struct cron a, b;

	(void)state;
	a = parse_ok("0 0 * * 7");
	b = parse_ok("0 0 * * 0");
	assert_int_equal(a.wdays, b.wdays);
	a = parse_ok("0 0 * * 5-7");
	assert_int_equal(a.wdays, (1 << 5) | (1 << 6) | 1);
	a = parse_ok("0 0 * JAN,jul SUN-tue");
	assert_int_equal(a.months, (1 << 1) | (1 << 7));
	assert_int_equal(a.wdays, 0x7);
	a = parse_ok("\t0  0\t* *   *  ");
	assert_true(a.mday_star && a.wday_star);
	a = parse_ok("1-10/3,50 */6 * * *");
	assert_int_equal(a.minutes, (UINT64_C(1) << 1) | (1 << 4) | (1 << 7) | (1 << 10) | (UINT64_C(1) << 50));
	assert_int_equal(a.hours, (1 << 0) | (1 << 6) | (1 << 12) | (1 << 18));
}

/* Field by field: an impossible expression gives up after five years in
 * a few thousand steps, not 2.6 million minutes. */
static void test_cron_fast(void **state)
{
	struct cron c = parse_ok("0 0 31 2 *");
	int64_t t0 = time_monotonic_usec();

	(void)state;
	for (int i = 0; i < 1000; i++)
		assert_int_equal(cron_next(&c, utc(2027, 1, 1, 0, 0) + i * 60), -1);
	/* ~2 ms each at the most on a slow machine. */
	assert_true(time_monotonic_usec() - t0 < 2 * 1000000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cron_seed_lines),
		cmocka_unit_test(test_cron_day_1_to_7),
		cmocka_unit_test(test_cron_year_walk),
		cmocka_unit_test(test_cron_impossible),
		cmocka_unit_test(test_cron_errors_name_the_field),
		cmocka_unit_test(test_cron_errors_escape_controls),
		cmocka_unit_test(test_cron_names_and_sunday),
		cmocka_unit_test(test_cron_fast),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

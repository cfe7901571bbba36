/* SPDX-License-Identifier: BSD-2-Clause */
/* agent/engine/schedule.c with an injected clock and a fake engine (ops):
 * the splay is stable for a host, a job never seen waits, downtime across
 * two due times gives one run, a pending job is not queued twice, two jobs
 * due at once are two requests, and one timer is armed for the next due
 * time only. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "engine/schedule.h"
#include "log.h"
#include "recipes/recipe.h"
#include "util.h"

struct fake {
	int64_t now;          /* seconds */
	char requested[16][32];
	int n_requested;
	bool pending;         /* every job has a run pending */
};

static int64_t fake_now(void *u)
{
	return ((struct fake *)u)->now * 1000000;
}

static bool fake_pending(void *u, const char *job)
{
	(void)job;
	return ((struct fake *)u)->pending;
}

static int fake_request(void *u, const char *job)
{
	struct fake *f = u;
	snprintf(f->requested[f->n_requested++], sizeof(f->requested[0]), "%s", job);
	return 0;
}

static const struct schedule_ops ops = { fake_now, fake_pending, fake_request };

static int64_t utc(int y, int mo, int d, int h, int mi)
{
	struct tm tm = { .tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h, .tm_min = mi };
	return (int64_t)timegm(&tm);
}

static char *tmp_state(void)
{
	char dir[] = "/tmp/test-schedule-XXXXXX";
	assert_non_null(mkdtemp(dir));
	return xasprintf("%s/schedule.json", dir);
}

static void drop_state(char *path)
{
	char *slash = strrchr(path, '/');
	(void)unlink(path);
	*slash = '\0';
	(void)rmdir(path);
	free(path);
}

static struct schedule *sched(uv_loop_t *loop, const char *path, struct fake *f, const struct recipe_jobs *jobs)
{
	struct schedule *s;

	assert_int_equal(schedule_new(loop, path, &ops, f, &s), 0);
	schedule_set_jobs(s, "db1", jobs);
	return s;
}

static void sched_free(uv_loop_t *loop, struct schedule *s)
{
	schedule_free(s);
	assert_int_equal(uv_run(loop, UV_RUN_NOWAIT), 0);
}

static void test_splay_stable(void **state)
{
	long a = schedule_offset("db1", "zeopack", 900);

	(void)state;
	/* The same at every call (and start, and machine): a hash, not rand. */
	for (int i = 0; i < 10; i++)
		assert_int_equal(schedule_offset("db1", "zeopack", 900), a);
	assert_true(a >= 0 && a <= 900);
	assert_int_equal(schedule_offset("db1", "zeopack", 0), 0);
	/* FNV-1a of "db1\0" then "zeopack", mod 901: pinned, so that a change
	 * of the hash (which would move every host's jobs) is seen. */
	assert_int_equal(a, (long)(hash_fnv1a64("zeopack", 7, hash_fnv1a64("db1", 4, HASH_FNV_SEED)) % 901));
	/* Hosts spread over the window: 100 hosts, many distinct offsets. */
	int distinct = 0;
	long seen[100];
	for (int i = 0; i < 100; i++) {
		char host[16];
		bool dup = false;
		snprintf(host, sizeof(host), "web%d", i);
		seen[i] = schedule_offset(host, "ebs_snapshots", 900);
		for (int k = 0; k < i; k++)
			dup |= seen[k] == seen[i];
		distinct += !dup;
	}
	assert_true(distinct > 80);
}

static void test_catch_up_once(void **state)
{
	uv_loop_t loop;
	struct fake f = { .now = utc(2027, 1, 4, 12, 0) };
	struct recipe_jobs jobs = { 0 };
	char *path = tmp_state();
	struct schedule *s;

	(void)state;
	uv_loop_init(&loop);
	recipe_jobs_add(&jobs, "zeopack", "0 1 * * 7", 0, NULL, "plone_zeoserver.pack");
	/* A job never seen: baseline now, no run, the timer for next Sunday. */
	s = sched(&loop, path, &f, &jobs);
	assert_int_equal(f.n_requested, 0);
	assert_int_equal(schedule_next_due(s), utc(2027, 1, 10, 1, 0));
	sched_free(&loop, s);

	/* Down from Monday to the Monday after next: two Sundays missed. One
	 * run at start, none more at a second check. */
	f.now = utc(2027, 1, 18, 9, 0);
	s = sched(&loop, path, &f, &jobs);
	assert_int_equal(f.n_requested, 1);
	assert_string_equal(f.requested[0], "zeopack");
	schedule_check(s);
	assert_int_equal(f.n_requested, 1);
	assert_int_equal(schedule_next_due(s), utc(2027, 1, 24, 1, 0));
	/* It failed (no success recorded): a restart does not ask again for
	 * the same due time; the engine's retries handle a failure. */
	sched_free(&loop, s);
	s = sched(&loop, path, &f, &jobs);
	assert_int_equal(f.n_requested, 1);
	/* The next Sunday is due: one more. */
	f.now = utc(2027, 1, 24, 1, 0);
	schedule_check(s);
	assert_int_equal(f.n_requested, 2);
	schedule_success(s, "zeopack", 7, f.now * 1000000 + 5000000);
	json_t *j = schedule_json(s);
	json_t *z = json_array_get(json_object_get(j, "jobs"), 0);
	assert_string_equal(json_string_value(json_object_get(z, "last_success")), "2027-01-24T01:00:05.000Z");
	assert_string_equal(json_string_value(json_object_get(z, "next_run")), "2027-01-31T01:00:00.000Z");
	assert_int_equal(json_integer_value(json_object_get(z, "last_success_run")), 7);
	json_decref(j);
	sched_free(&loop, s);

	/* Another schedule for the job is a new job: it waits. */
	recipe_jobs_free(&jobs);
	recipe_jobs_add(&jobs, "zeopack", "0 2 * * 7", 0, NULL, NULL);
	f.now = utc(2027, 2, 10, 0, 0);
	s = sched(&loop, path, &f, &jobs);
	assert_int_equal(f.n_requested, 2);
	sched_free(&loop, s);
	recipe_jobs_free(&jobs);
	drop_state(path);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_no_duplicate_and_two_jobs(void **state)
{
	uv_loop_t loop;
	struct fake f = { .now = utc(2027, 1, 1, 0, 0) };
	struct recipe_jobs jobs = { 0 };
	char *path = tmp_state();
	struct schedule *s;

	(void)state;
	uv_loop_init(&loop);
	recipe_jobs_add(&jobs, "backup", "0 21 * * *", 0, NULL, NULL);
	recipe_jobs_add(&jobs, "zeopack", "0 21 * * *", 0, NULL, NULL);
	s = sched(&loop, path, &f, &jobs);
	assert_int_equal(schedule_next_due(s), utc(2027, 1, 1, 21, 0));
	/* Both due at once: two requests (two runs, which the engine runs one
	 * after the other), never one for both. */
	f.now = utc(2027, 1, 1, 21, 0);
	schedule_check(s);
	assert_int_equal(f.n_requested, 2);
	assert_string_equal(f.requested[0], "backup");
	assert_string_equal(f.requested[1], "zeopack");
	/* Next day, both still pending (a long run): not queued twice. */
	f.now = utc(2027, 1, 2, 21, 0);
	f.pending = true;
	schedule_check(s);
	assert_int_equal(f.n_requested, 2);
	/* Done meanwhile: that due time was covered by the pending run. */
	f.pending = false;
	f.now = utc(2027, 1, 2, 22, 0);
	schedule_check(s);
	assert_int_equal(f.n_requested, 2);
	/* The timer is armed for the next due time, and only one. */
	assert_int_equal(schedule_next_due(s), utc(2027, 1, 3, 21, 0));
	sched_free(&loop, s);
	recipe_jobs_free(&jobs);
	drop_state(path);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_splay_delays_due(void **state)
{
	uv_loop_t loop;
	struct fake f = { .now = utc(2027, 1, 1, 0, 0) };
	struct recipe_jobs jobs = { 0 };
	char *path = tmp_state();
	struct schedule *s;
	long off = schedule_offset("db1", "ebs_snapshots", 900);

	(void)state;
	uv_loop_init(&loop);
	recipe_jobs_add(&jobs, "ebs_snapshots", "0 8 * * *", 900, NULL, "ebs_snapshots");
	s = sched(&loop, path, &f, &jobs);
	assert_int_equal(schedule_next_due(s), utc(2027, 1, 1, 8, 0) + off);
	/* At 08:00 it is not due yet on this host (unless its offset is 0). */
	f.now = utc(2027, 1, 1, 8, 0);
	schedule_check(s);
	assert_int_equal(f.n_requested, off == 0 ? 1 : 0);
	f.now = utc(2027, 1, 1, 8, 0) + off;
	schedule_check(s);
	assert_int_equal(f.n_requested, 1);
	sched_free(&loop, s);
	recipe_jobs_free(&jobs);
	drop_state(path);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* A state file that is not ours is taken as none: every job waits. */
static void test_bad_state_file(void **state)
{
	uv_loop_t loop;
	struct fake f = { .now = utc(2027, 1, 18, 9, 0) };
	struct recipe_jobs jobs = { 0 };
	char *path = tmp_state();
	struct schedule *s;

	(void)state;
	uv_loop_init(&loop);
	assert_int_equal(file_write_atomic(path, "{\"jobs\": [[[[[[1]]]]]]}", 23, 0600, (uid_t)-1, (gid_t)-1), 0);
	recipe_jobs_add(&jobs, "zeopack", "0 1 * * 7", 0, NULL, NULL);
	s = sched(&loop, path, &f, &jobs);
	assert_int_equal(f.n_requested, 0);
	sched_free(&loop, s);
	recipe_jobs_free(&jobs);
	drop_state(path);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void write_state(const char *path, const char *json)
{
	assert_int_equal(file_write_atomic(path, json, strlen(json), 0600, (uid_t)-1, (gid_t)-1), 0);
}

/* F3: stamps in the future (written while the clock was ahead) are not
 * trusted, as systemd does with a stamp file in the future: dropped at
 * load and when checking, a future baseline becomes now. */
static void test_future_stamps_dropped(void **state)
{
	uv_loop_t loop;
	struct fake f = { .now = utc(2027, 1, 18, 9, 0) };
	struct recipe_jobs jobs = { 0 };
	char *path = tmp_state();
	struct schedule *s;
	char buf[512];

	(void)state;
	uv_loop_init(&loop);
	recipe_jobs_add(&jobs, "zeopack", "0 1 * * 7", 0, NULL, NULL);
	/* Seen since Jan 4; asked for in 2100, succeeded a week from now:
	 * down across two Sundays, one catch-up run all the same. */
	snprintf(buf, sizeof(buf),
		 "{\"version\":1,\"jobs\":{\"zeopack\":{\"schedule\":\"0 1 * * 7\",\"splay\":0,\"baseline\":%lld,"
		 "\"requested\":4102444800,\"last_success\":%lld,\"last_run\":7}}}",
		 (long long)utc(2027, 1, 4, 12, 0), (long long)utc(2027, 1, 25, 1, 0));
	write_state(path, buf);
	s = sched(&loop, path, &f, &jobs);
	assert_int_equal(f.n_requested, 1);
	json_t *j = schedule_json(s);
	assert_true(json_is_null(json_object_get(json_array_get(json_object_get(j, "jobs"), 0), "last_success")));
	json_decref(j);
	sched_free(&loop, s);
	/* Not kept across a restart either: the file holds the due time of the
	 * catch-up now, not 2100. */
	f.now = utc(2027, 1, 24, 1, 0);
	s = sched(&loop, path, &f, &jobs);
	assert_int_equal(f.n_requested, 2);
	sched_free(&loop, s);

	/* A baseline in the future becomes now: the job runs at its next due
	 * time, not in 2100. */
	write_state(path, "{\"version\":1,\"jobs\":{\"zeopack\":{\"schedule\":\"0 1 * * 7\",\"splay\":0,"
			  "\"baseline\":4102444800}}}");
	f.now = utc(2027, 2, 1, 9, 0);
	s = sched(&loop, path, &f, &jobs);
	assert_int_equal(f.n_requested, 2);
	assert_int_equal(schedule_next_due(s), utc(2027, 2, 7, 1, 0));
	f.now = utc(2027, 2, 7, 1, 0);
	schedule_check(s);
	assert_int_equal(f.n_requested, 3);

	/* The clock runs a year ahead (a run, a success), then is set back:
	 * the stamps of 2028 are dropped (what they covered is not known, so
	 * the latest due time, today 01:00, is caught up once, as systemd
	 * does), and the next due time runs the job again instead of waiting
	 * for 2028. */
	f.now = utc(2028, 2, 7, 1, 0);
	schedule_check(s);
	assert_int_equal(f.n_requested, 4);
	schedule_success(s, "zeopack", 9, f.now * 1000000);
	f.now = utc(2027, 2, 7, 2, 0);
	schedule_check(s); /* the clock was set */
	assert_int_equal(f.n_requested, 5);
	schedule_check(s);
	assert_int_equal(f.n_requested, 5);
	assert_int_equal(schedule_next_due(s), utc(2027, 2, 14, 1, 0));
	f.now = utc(2027, 2, 14, 1, 0);
	schedule_check(s);
	assert_int_equal(f.n_requested, 6);
	sched_free(&loop, s);
	recipe_jobs_free(&jobs);
	drop_state(path);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* F13: a missed due time's run waits for the job's offset from the moment
 * the miss is seen (systemd: Persistent=true is still delayed by
 * RandomizedDelaySec), so a fleet back from an outage spreads its
 * catch-ups over the splay; still exactly one run. */
static void test_catch_up_waits_for_offset(void **state)
{
	uv_loop_t loop;
	struct fake f = { .now = utc(2027, 1, 1, 12, 0) };
	struct recipe_jobs jobs = { 0 };
	char *path = tmp_state();
	struct schedule *s;
	const char *name = "ebs_snapshots";
	long x = schedule_offset("db1", name, 3600);
	int64_t start = utc(2027, 1, 4, 12, 0);
	char want[40];

	(void)state;
	assert_true(x > 0); /* pinned by the hash; a 0 would test nothing */
	uv_loop_init(&loop);
	recipe_jobs_add(&jobs, name, "0 2 * * *", 3600, NULL, NULL);
	s = sched(&loop, path, &f, &jobs);
	sched_free(&loop, s);
	/* Down across three due times: nothing at start; next_run says when. */
	f.now = start;
	s = sched(&loop, path, &f, &jobs);
	assert_int_equal(f.n_requested, 0);
	assert_int_equal(schedule_next_due(s), start + x);
	json_t *j = schedule_json(s);
	time_format_rfc3339((start + x) * 1000000, want, sizeof(want));
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(j, "jobs"), 0), "next_run")),
			    want);
	json_decref(j);
	/* A new stack meanwhile does not move it. */
	f.now = start + x / 2;
	schedule_set_jobs(s, "db1", &jobs);
	assert_int_equal(schedule_next_due(s), start + x);
	f.now = start + x - 1;
	schedule_check(s);
	assert_int_equal(f.n_requested, 0);
	f.now = start + x;
	schedule_check(s);
	assert_int_equal(f.n_requested, 1);
	schedule_check(s);
	assert_int_equal(f.n_requested, 1);
	/* Then on time again: the next 02:00 + offset. */
	assert_int_equal(schedule_next_due(s), utc(2027, 1, 5, 2, 0) + x);
	f.now = utc(2027, 1, 5, 2, 0) + x;
	schedule_check(s);
	assert_int_equal(f.n_requested, 2);
	sched_free(&loop, s);
	recipe_jobs_free(&jobs);
	drop_state(path);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* F9: a hostile state file is reported (a warning naming the file and the
 * fault), then taken as none. */
static void test_hostile_state_warns(void **state)
{
	static const struct {
		const char *json, *fault;
	} cases[] = {
		{ "{\"version\":1,\"jobs\":[1,2]}", "\"jobs\" is not an object" },
		{ "{\"version\":99,\"jobs\":{}}", "another \"version\"" },
		{ "{\"jobs\":{}}", "no integer \"version\"" },
		{ "{\"version\":1,\"jobs\":{\"zeopack\":{\"schedule\":1,\"baseline\":5}}}",
		  "job \"zeopack\" key schedule: not a string" },
		{ "{\"version\":1,\"jobs\":{\"zeopack\":{\"schedule\":\"0 1 * * 7\",\"baseline\":-5}}}",
		  "job \"zeopack\" key baseline: out of range" },
		{ "{\"version\":1,\"jobs\":{\"zeopack\":{\"schedule\":\"0 1 * * 7\",\"baseline\":5,\"requested\":-1}}}",
		  "job \"zeopack\" key requested: out of range" },
		{ "{\"version\":1,\"jobs\":{\"a\\u001bb\":7}}", "job \"a\\eb\": not an object" },
	};
	struct fake f = { .now = utc(2027, 1, 18, 9, 0) };
	char *path = tmp_state();
	uv_loop_t loop;

	(void)state;
	log_force_stderr();
	uv_loop_init(&loop);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		FILE *out = tmpfile();
		int saved = dup(STDERR_FILENO);
		struct schedule *s;
		char text[2048];
		size_t n;

		write_state(path, cases[i].json);
		fflush(stderr);
		assert_int_equal(dup2(fileno(out), STDERR_FILENO), STDERR_FILENO);
		assert_int_equal(schedule_new(&loop, path, &ops, &f, &s), 0);
		fflush(stderr);
		assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
		close(saved);
		rewind(out);
		n = fread(text, 1, sizeof(text) - 1, out);
		text[n] = '\0';
		fclose(out);
		if (!strstr(text, path) || !strstr(text, cases[i].fault))
			fail_msg("case %zu: the log \"%s\" does not name %s and \"%s\"", i, text, path, cases[i].fault);
		sched_free(&loop, s);
	}
	drop_state(path);
	assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_splay_stable),
		cmocka_unit_test(test_catch_up_once),
		cmocka_unit_test(test_no_duplicate_and_two_jobs),
		cmocka_unit_test(test_splay_delays_due),
		cmocka_unit_test(test_bad_state_file),
		cmocka_unit_test(test_future_stamps_dropped),
		cmocka_unit_test(test_catch_up_waits_for_offset),
		cmocka_unit_test(test_hostile_state_warns),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_splay_stable),
		cmocka_unit_test(test_catch_up_once),
		cmocka_unit_test(test_no_duplicate_and_two_jobs),
		cmocka_unit_test(test_splay_delays_due),
		cmocka_unit_test(test_bad_state_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

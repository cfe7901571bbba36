/* SPDX-License-Identifier: BSD-2-Clause */
/* The engine's queue and coalescing (engine/queue.c), without a loop or a
 * disk: what joins what, what runs next, the cap, requeue after an
 * interruption; and typed run records through their JSON (engine/record.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "engine/internal.h"
#include "engine/run.h"

#define REV_A "0123456789abcdef"
#define REV_B "fedcba9876543210"

static struct run_request req(enum event ev, const char *layer, const char *app, enum trigger_kind trig)
{
	return (struct run_request){ .event = ev, .layer = (char *)layer, .app = (char *)app, .trigger = trig };
}

static struct run *add(struct run_list *l, long *next_id, struct run_request rq, const char *stack)
{
	int r = 1;
	struct run *run = queue_add(l, next_id, &rq, stack, false, "2026-01-01T00:00:00Z", &r);

	assert_int_equal(r, 0);
	assert_non_null(run);
	return run;
}

/* A stack change while a run is active: the running run is not joined;
 * a second trigger of the same change joins the queued one. */
static void test_stack_change_while_running(void **state)
{
	struct run_list l = { 0 };
	long next = 1;
	struct run *running = add(&l, &next, req(EVENT_CONFIGURE, NULL, NULL, TRIGGER_STACK_CHANGE), NULL);

	running->status = RUN_RUNNING;
	struct run *q1 = add(&l, &next, req(EVENT_CONFIGURE, NULL, NULL, TRIGGER_STACK_CHANGE), NULL);
	assert_ptr_not_equal(q1, running);
	assert_int_equal(q1->id, 2);
	struct run *q2 = add(&l, &next, req(EVENT_CONFIGURE, NULL, NULL, TRIGGER_STACK_CHANGE), NULL);
	assert_ptr_equal(q2, q1);
	/* A retry joins a stack change of the same event (neither is an operator's). */
	assert_ptr_equal(add(&l, &next, req(EVENT_CONFIGURE, NULL, NULL, TRIGGER_RETRY), NULL), q1);
	/* Tied to another stack: a run of its own. */
	struct run *old = add(&l, &next, req(EVENT_CONFIGURE, NULL, NULL, TRIGGER_STACK_CHANGE), REV_A);
	assert_ptr_not_equal(old, q1);
	assert_ptr_equal(add(&l, &next, req(EVENT_CONFIGURE, NULL, NULL, TRIGGER_STACK_CHANGE), REV_A), old);
	assert_int_equal(queue_count(&l), 2);
	assert_int_equal(l.n, 3);
	/* The running run is not next; the oldest queued one is. */
	assert_ptr_equal(queue_next(&l, false, NULL, false), q1);
	run_list_clear(&l);
}

/* Several operator runs of the same event, layer and app give one run; an
 * operator's run does not join a stack change's, nor the other way round. */
static void test_ctl_runs_coalesce(void **state)
{
	struct run_list l = { 0 };
	long next = 1;
	struct run *a = add(&l, &next, req(EVENT_DEPLOY, "web", "shop", TRIGGER_CTL), NULL);

	for (int i = 0; i < 5; i++)
		assert_ptr_equal(add(&l, &next, req(EVENT_DEPLOY, "web", "shop", TRIGGER_CTL), NULL), a);
	struct run *sc = add(&l, &next, req(EVENT_DEPLOY, "web", "shop", TRIGGER_STACK_CHANGE), NULL);
	assert_ptr_not_equal(sc, a);
	assert_ptr_equal(add(&l, &next, req(EVENT_DEPLOY, "web", "shop", TRIGGER_BOOT), NULL), sc);
	/* Another app, another event: their own runs. */
	assert_ptr_not_equal(add(&l, &next, req(EVENT_DEPLOY, "web", "blog", TRIGGER_CTL), NULL), a);
	assert_ptr_not_equal(add(&l, &next, req(EVENT_UNDEPLOY, "web", "shop", TRIGGER_CTL), NULL), a);
	assert_int_equal(queue_count(&l), 4);
	run_list_clear(&l);
}

/* A queued run for every layer covers a request for one layer; a run for
 * one layer does not cover every layer, nor another layer. */
static void test_layer_coverage(void **state)
{
	struct run_list l = { 0 };
	long next = 1;
	struct run *all = add(&l, &next, req(EVENT_CONFIGURE, NULL, NULL, TRIGGER_STACK_CHANGE), NULL);

	assert_ptr_equal(add(&l, &next, req(EVENT_CONFIGURE, "web", NULL, TRIGGER_STACK_CHANGE), NULL), all);
	run_list_clear(&l);
	next = 1;
	struct run *web = add(&l, &next, req(EVENT_CONFIGURE, "web", NULL, TRIGGER_STACK_CHANGE), NULL);
	assert_ptr_not_equal(add(&l, &next, req(EVENT_CONFIGURE, NULL, NULL, TRIGGER_STACK_CHANGE), NULL), web);
	assert_ptr_not_equal(add(&l, &next, req(EVENT_CONFIGURE, "db", NULL, TRIGGER_STACK_CHANGE), NULL), web);
	run_list_clear(&l);
}

/* The public view of a record (new reference kept in a static to free at
 * the next call: keeps the assertions one line). */
static json_t *run_to_json_public_check(const struct run *r)
{
	static json_t *last;

	json_decref(last);
	last = run_to_json(r, RUN_VIEW_PUBLIC);
	return last;
}

/* A rollback next to deploys of the same app: it joins none, none joins
 * it, and a second rollback is a second run (each goes back one release). */
static void test_rollback_next_to_deploys(void **state)
{
	struct run_list l = { 0 };
	long next = 1;
	struct run_request rb = req(EVENT_DEPLOY, NULL, "shop", TRIGGER_CTL);
	struct run *deploy = add(&l, &next, req(EVENT_DEPLOY, NULL, "shop", TRIGGER_CTL), NULL);
	int r;

	rb.recipe = (char *)RUN_RECIPE_ROLLBACK;
	struct run *r1 = queue_add(&l, &next, &rb, NULL, false, NULL, &r);
	assert_non_null(r1);
	assert_ptr_not_equal(r1, deploy);
	assert_string_equal(r1->req.recipe, "rollback");
	struct run *r2 = queue_add(&l, &next, &rb, NULL, false, NULL, &r);
	assert_ptr_not_equal(r2, r1);
	assert_null(queue_join(&l, &rb, NULL));
	/* A deploy asked for now joins the first deploy, not a rollback. */
	assert_ptr_equal(add(&l, &next, req(EVENT_DEPLOY, NULL, "shop", TRIGGER_CTL), NULL), deploy);
	assert_int_equal(queue_count(&l), 3);
	run_list_clear(&l);
}

/* The queue holds at most RUN_QUEUE_MAX runs; coalescing still answers
 * when it is full; ids never wrap. */
static void test_queue_cap_and_ids(void **state)
{
	struct run_list l = { 0 };
	long next = 1;
	char app[32];
	int r;

	for (int i = 0; i < RUN_QUEUE_MAX; i++) {
		snprintf(app, sizeof(app), "app%d", i);
		add(&l, &next, req(EVENT_DEPLOY, NULL, app, TRIGGER_CTL), NULL);
	}
	assert_int_equal(queue_count(&l), RUN_QUEUE_MAX);
	struct run_request over = req(EVENT_DEPLOY, NULL, "one-more", TRIGGER_CTL);
	assert_null(queue_add(&l, &next, &over, NULL, false, NULL, &r));
	assert_int_equal(r, -ENOSPC);
	struct run_request again = req(EVENT_DEPLOY, NULL, "app7", TRIGGER_CTL);
	assert_non_null(queue_add(&l, &next, &again, NULL, false, NULL, &r));
	assert_int_equal(r, 0);
	/* A finished run leaves room. */
	l.v[0]->status = RUN_SUCCESS;
	assert_non_null(queue_add(&l, &next, &over, NULL, false, NULL, &r));
	run_list_clear(&l);

	next = RUN_ID_MAX;
	assert_int_equal(add(&l, &next, req(EVENT_SETUP, NULL, NULL, TRIGGER_BOOT), NULL)->id, RUN_ID_MAX);
	over = req(EVENT_CONFIGURE, NULL, NULL, TRIGGER_BOOT);
	assert_null(queue_add(&l, &next, &over, NULL, false, NULL, &r));
	assert_int_equal(r, -ERANGE);
	assert_int_equal(next, RUN_ID_MAX + 1);
	run_list_clear(&l);
}

/* An interrupted run is queued again ahead of the others as a retry, and
 * may join a queued retry; a rollback stays one, or becomes a restart once
 * its link step is done. */
static void test_requeue_after_interruption(void **state)
{
	struct run_list l = { 0 };
	long next = 1;
	int r;
	struct run *setup = add(&l, &next, req(EVENT_SETUP, NULL, NULL, TRIGGER_BOOT), NULL);
	struct run *conf = add(&l, &next, req(EVENT_CONFIGURE, NULL, NULL, TRIGGER_BOOT), NULL);

	setup->status = RUN_INTERRUPTED;
	struct run *again = queue_requeue(&l, &next, setup, NULL, &r);
	assert_non_null(again);
	assert_ptr_not_equal(again, setup);
	assert_int_equal(again->req.trigger, TRIGGER_RETRY);
	assert_true(again->front);
	/* Before the older configure: setup first. */
	assert_ptr_equal(queue_next(&l, false, NULL, false), again);
	/* While paused only operators' runs start. */
	assert_null(queue_next(&l, true, NULL, false));
	(void)conf;

	/* A second interruption of the same event joins the queued retry. */
	struct run_request boot = req(EVENT_SETUP, NULL, NULL, TRIGGER_BOOT);
	struct run *setup2 = run_new(100, &boot, NULL);
	setup2->status = RUN_INTERRUPTED;
	assert_ptr_equal(queue_requeue(&l, &next, setup2, NULL, &r), again);
	run_free(setup2);

	/* A rollback interrupted before its link step: a rollback again, of
	 * its own, trigger ctl. */
	struct run_request rb = req(EVENT_DEPLOY, NULL, "shop", TRIGGER_CTL);
	rb.recipe = (char *)RUN_RECIPE_ROLLBACK;
	struct run *roll = queue_add(&l, &next, &rb, REV_B, false, NULL, &r);
	roll->status = RUN_INTERRUPTED;
	roll->steps = json_pack("[{s:s, s:s}]", "kind", "rollback", "status", "pending");
	struct run *roll2 = queue_requeue(&l, &next, roll, NULL, &r);
	assert_ptr_not_equal(roll2, roll);
	assert_string_equal(roll2->req.recipe, "rollback");
	assert_int_equal(roll2->req.trigger, TRIGGER_CTL);
	assert_string_equal(roll2->stack, REV_B);
	assert_true(roll2->front);
	assert_ptr_equal(queue_next(&l, true, NULL, false), roll2);
	/* After it: a restart, never a second rollback. */
	json_decref(roll->steps);
	roll->steps = json_pack("[{s:s, s:s}]", "kind", "rollback", "status", "changed");
	struct run *restart = queue_requeue(&l, &next, roll, NULL, &r);
	assert_string_equal(restart->req.recipe, RUN_RECIPE_RESTART);
	assert_ptr_not_equal(restart, roll2);
	/* Killed (-9) after the link step: its steps were never saved, only
	 * the record, which says the link moved. A restart, not a second
	 * rollback (found by a tester: the app went back two releases). */
	struct run *roll3 = queue_add(&l, &next, &rb, REV_B, false, NULL, &r);
	roll3->status = RUN_INTERRUPTED;
	roll3->switched = true;
	json_t *st3 = run_to_json(roll3, RUN_VIEW_STATE);
	struct run *back3 = run_from_json(st3);
	assert_non_null(back3);
	assert_null(back3->steps);
	assert_true(back3->switched);
	assert_null(json_object_get(run_to_json_public_check(roll3), "_switched"));
	struct run *restart3 = queue_requeue(&l, &next, back3, NULL, &r);
	assert_string_equal(restart3->req.recipe, RUN_RECIPE_RESTART);
	json_decref(st3);
	run_free(back3);
	run_list_clear(&l);
}

/* A record through state.json's JSON and back, and an older agentd's
 * rollback restart ("_rollback_restart") read as a restart. */
static void test_record_json(void **state)
{
	struct run_list l = { 0 };
	long next = 7;
	struct run *run = add(&l, &next, req(EVENT_DEPLOY, "web", "shop", TRIGGER_CTL), REV_A);
	json_t *pub, *st, *parsed = NULL, *runs;
	char *err = NULL, *doc;
	struct run *back;

	run->status = RUN_RUNNING;
	run->has_pgid = true;
	run->pgid = 1234;
	run->pgid_start = 99;
	pub = run_to_json(run, RUN_VIEW_PUBLIC);
	assert_null(json_object_get(pub, "_pgid"));
	assert_null(json_object_get(pub, "_stack"));
	assert_null(json_object_get(pub, "steps"));
	assert_int_equal(json_object_size(pub), 10);
	st = run_to_json(run, RUN_VIEW_STATE);
	assert_int_equal(json_integer_value(json_object_get(st, "_pgid")), 1234);
	runs = json_pack("[O, {s:I, s:s, s:n, s:s, s:s, s:s, s:b}]", st, "id", (json_int_t)3, "event", "deploy",
			 "layer", "app", "shop", "trigger", "ctl", "status", "queued", "_rollback_restart", 1);
	json_t *top = json_pack("{s:i, s:o}", "version", 1, "runs", runs);
	doc = json_dumps(top, 0);
	json_decref(top);
	assert_int_equal(engine_state_parse(doc, strlen(doc), 50, &parsed, &err), 0);
	back = run_from_json(json_array_get(json_object_get(parsed, "runs"), 0));
	assert_non_null(back);
	assert_int_equal(back->id, 7);
	assert_string_equal(back->stack, REV_A);
	assert_true(back->has_pgid && back->pgid == 1234 && back->pgid_start == 99);
	json_t *again = run_to_json(back, RUN_VIEW_STATE);
	assert_true(json_equal(again, st));
	json_decref(again);
	run_free(back);
	back = run_from_json(json_array_get(json_object_get(parsed, "runs"), 1));
	assert_string_equal(back->req.recipe, RUN_RECIPE_RESTART);
	run_free(back);
	free(doc);
	json_decref(parsed);
	json_decref(pub);
	json_decref(st);
	run_list_clear(&l);
}


#define MS INT64_C(1000)
#define SETTLE (200 * MS)
#define SETTLE_MAX (5000 * MS)

/* Settling (design.md §3): a lone change is applied at once; a burst of ten
 * edits 20 ms apart gives the leading edge and one trailing edge. */
static void test_settle_burst(void **state)
{
	struct settle s = { 0 };
	int64_t t0 = 1000000 * MS, at = 0, applies = 0;

	/* The first change ever, and one after a quiet period: at once. */
	assert_int_equal(settle_change(&s, t0, SETTLE, SETTLE_MAX), 0);
	settle_applied(&s, t0);
	applies++;
	assert_int_equal(settle_change(&s, t0 + 10000 * MS, SETTLE, SETTLE_MAX), 0);
	settle_applied(&s, t0 + 10000 * MS);
	t0 += 10000 * MS;
	/* Nine more edits 20 ms apart: each pushes the trailing edge to 200 ms
	 * after it, none is applied on its own. */
	for (int i = 1; i < 10; i++) {
		at = settle_change(&s, t0 + i * 20 * MS, SETTLE, SETTLE_MAX);
		assert_true(at > 0);
		assert_int_equal(at, t0 + i * 20 * MS + SETTLE);
	}
	/* The timer fires at the last edge: one apply for the nine. */
	settle_applied(&s, at);
	applies++;
	assert_int_equal(applies, 2);
	assert_int_equal(s.first, 0);
	/* Quiet for settle since then: the next lone change is at once again. */
	assert_int_equal(settle_change(&s, at + SETTLE, SETTLE, SETTLE_MAX), 0);
}

/* A member flapping every 100 ms (never quiet for settle = 200 ms) is
 * applied at most once per settle_max, counted over 20 s of flapping. */
static void test_settle_flapping(void **state)
{
	struct settle s = { 0 };
	int64_t t0 = 5000 * MS, due = 0;
	int applies = 0;

	for (int64_t t = t0; t < t0 + 20000 * MS; t += 100 * MS) {
		if (due && t >= due) {
			settle_applied(&s, due);
			applies++;
			due = 0;
		}
		int64_t at = settle_change(&s, t, SETTLE, SETTLE_MAX);
		if (at == 0) {
			settle_applied(&s, t);
			applies++;
		} else
			due = at;
		/* Never later than settle_max after the first change waiting. */
		assert_true(!due || due <= s.first + SETTLE_MAX);
	}
	/* 1 leading edge + one per 5 s: 5, not 200. */
	assert_true(applies >= 4 && applies <= 5);
}

/* settle 0 turns settling off; a settle_max below settle caps the wait. */
static void test_settle_off_and_cap(void **state)
{
	struct settle s = { 0 };

	settle_applied(&s, 1000 * MS);
	assert_int_equal(settle_change(&s, 1001 * MS, 0, SETTLE_MAX), 0);
	assert_int_equal(settle_change(&s, 1002 * MS, SETTLE, 50 * MS), 1002 * MS + 50 * MS);
	assert_int_equal(settle_change(&s, 1040 * MS, SETTLE, 50 * MS), 1002 * MS + 50 * MS);
	/* A stack-change run that starts counts like an apply. */
	settle_applied(&s, 2000 * MS);
	assert_true(settle_change(&s, 2100 * MS, SETTLE, SETTLE_MAX) > 0);
	s = (struct settle){ 0 };
	settle_applied(&s, 2000 * MS);
	assert_int_equal(settle_change(&s, 2000 * MS + SETTLE, SETTLE, SETTLE_MAX), 0);
}

static json_t *setup_failure(const char *layer)
{
	json_t *f = json_object(), *o = json_object();

	json_object_set_new(o, "event", json_string("setup"));
	json_object_set_new(o, "layer", layer ? json_string(layer) : json_null());
	json_object_set_new(o, "app", json_null());
	json_object_set_new(f, layer ? layer : "setup//", o);
	return f;
}

/* First start (design.md §3): while the boot's setup fails, its configure
 * and deploy do not start; the retry of setup does, and once the failure
 * is gone they follow. Operators' runs never wait. */
static void test_failed_setup_holds_the_boot(void **state)
{
	struct run_list l = { 0 };
	long next = 1;
	struct run *setup = add(&l, &next, req(EVENT_SETUP, NULL, NULL, TRIGGER_BOOT), NULL);
	struct run *conf = add(&l, &next, req(EVENT_CONFIGURE, NULL, NULL, TRIGGER_BOOT), NULL);
	struct run *dep = add(&l, &next, req(EVENT_DEPLOY, NULL, "shop", TRIGGER_BOOT), NULL);
	json_t *failed = setup_failure(NULL);

	setup->status = RUN_FAILED;
	assert_true(queue_held_by_setup(conf, failed));
	assert_true(queue_held_by_setup(dep, failed));
	assert_null(queue_next(&l, false, failed, false));
	/* The retry of setup runs; the boot's runs still wait. */
	struct run *retry = add(&l, &next, req(EVENT_SETUP, NULL, NULL, TRIGGER_RETRY), NULL);
	assert_ptr_equal(queue_next(&l, false, failed, false), retry);
	retry->status = RUN_FAILED;
	assert_null(queue_next(&l, false, failed, false));
	/* An operator's run is not held. */
	struct run *ctl = add(&l, &next, req(EVENT_CONFIGURE, NULL, NULL, TRIGGER_CTL), NULL);
	assert_ptr_equal(queue_next(&l, false, failed, false), ctl);
	ctl->status = RUN_SUCCESS;
	/* A stack change's configure of every layer joins the boot's. */
	assert_ptr_equal(add(&l, &next, req(EVENT_CONFIGURE, NULL, NULL, TRIGGER_STACK_CHANGE), NULL), conf);
	/* setup succeeded: the failure is gone, configure then deploy. */
	json_object_clear(failed);
	assert_ptr_equal(queue_next(&l, false, failed, false), conf);
	conf->status = RUN_SUCCESS;
	assert_ptr_equal(queue_next(&l, false, failed, false), dep);
	json_decref(failed);
	run_list_clear(&l);
}

/* A layer the instance joined: its configure and deploy wait for its own
 * setup; other layers' runs and a configure of every layer do not. */
static void test_failed_setup_holds_its_layer(void **state)
{
	struct run_list l = { 0 };
	long next = 1;
	struct run *conf_db = add(&l, &next, req(EVENT_CONFIGURE, "db", NULL, TRIGGER_STACK_CHANGE), NULL);
	struct run *dep_db = add(&l, &next, req(EVENT_DEPLOY, "db", NULL, TRIGGER_STACK_CHANGE), NULL);
	struct run *conf_web = add(&l, &next, req(EVENT_CONFIGURE, "web", NULL, TRIGGER_STACK_CHANGE), NULL);
	struct run *conf_all = add(&l, &next, req(EVENT_CONFIGURE, NULL, NULL, TRIGGER_STACK_CHANGE), NULL);
	struct run *undeploy = add(&l, &next, req(EVENT_UNDEPLOY, "db", NULL, TRIGGER_STACK_CHANGE), NULL);
	json_t *failed = setup_failure("db");

	assert_true(queue_held_by_setup(conf_db, failed));
	assert_true(queue_held_by_setup(dep_db, failed));
	assert_false(queue_held_by_setup(conf_web, failed));
	assert_false(queue_held_by_setup(conf_all, failed));
	assert_false(queue_held_by_setup(undeploy, failed));
	assert_ptr_equal(queue_next(&l, false, failed, false), conf_web);
	assert_ptr_equal(queue_next(&l, false, NULL, false), conf_db);
	json_decref(failed);
	/* A failed setup of every layer (an operator's) does not hold a
	 * joined layer's runs: its own setup's success would not clear it. */
	failed = setup_failure(NULL);
	assert_false(queue_held_by_setup(conf_db, failed));
	json_decref(failed);
	run_list_clear(&l);
}


/* While a burst settles, runs of stack changes wait in the queue (where
 * status shows them and later changes join them); others start. */
static void test_settling_holds_stack_changes(void **state)
{
	struct run_list l = { 0 };
	long next = 1;
	struct run *conf = add(&l, &next, req(EVENT_CONFIGURE, NULL, NULL, TRIGGER_STACK_CHANGE), NULL);
	struct run *ctl = add(&l, &next, req(EVENT_DEPLOY, NULL, "shop", TRIGGER_CTL), NULL);

	assert_ptr_equal(queue_next(&l, false, NULL, true), ctl);
	ctl->status = RUN_SUCCESS;
	assert_null(queue_next(&l, false, NULL, true));
	/* Nine more changes of the burst join the one queued configure. */
	for (int i = 0; i < 9; i++)
		assert_ptr_equal(add(&l, &next, req(EVENT_CONFIGURE, NULL, NULL, TRIGGER_STACK_CHANGE), NULL), conf);
	assert_ptr_equal(queue_next(&l, false, NULL, false), conf);
	run_list_clear(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stack_change_while_running),
		cmocka_unit_test(test_ctl_runs_coalesce),
		cmocka_unit_test(test_layer_coverage),
		cmocka_unit_test(test_rollback_next_to_deploys),
		cmocka_unit_test(test_queue_cap_and_ids),
		cmocka_unit_test(test_requeue_after_interruption),
		cmocka_unit_test(test_record_json),
		cmocka_unit_test(test_settle_burst),
		cmocka_unit_test(test_settle_flapping),
		cmocka_unit_test(test_settle_off_and_cap),
		cmocka_unit_test(test_failed_setup_holds_the_boot),
		cmocka_unit_test(test_failed_setup_holds_its_layer),
		cmocka_unit_test(test_settling_holds_stack_changes),
	};

	log_set_level(LOG_LEVEL_ERROR - 1);
	return cmocka_run_group_tests(tests, NULL, NULL);
}

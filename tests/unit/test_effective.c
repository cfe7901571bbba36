/* SPDX-License-Identifier: BSD-2-Clause */
/* stack_effective (design.md §9): PREFIX/stack plus registrations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "stack/effective.h"
#include "stack/stack.h"
#include "util.h"

static const char *STACK = "{\"opsworks\":{\"stack\":{\"name\":\"t\"},\"layers\":{"
			   "\"lb\":{\"name\":\"LB\",\"instances\":{\"lb1\":{\"private_ip\":\"10.0.0.1\","
			   "\"status\":\"online\"}}},"
			   "\"plone_instances\":{\"name\":\"P\",\"instances\":{\"app1\":{\"private_ip\":"
			   "\"10.0.0.2\"}}},"
			   "\"db\":{\"name\":\"DB\"}}},"
			   "\"deploy\":{},\"big\":{\"x\":[1,2,3]}}";

static json_t *parse(const char *s)
{
	json_error_t e;
	json_t *j = json_loads(s, 0, &e);

	if (!j)
		fail_msg("bad test JSON: %s: %s", e.text, s);
	return j;
}

static json_t *inst(const json_t *doc, const char *layer)
{
	return json_object_get(
		json_object_get(json_object_get(json_object_get(doc, "opsworks"), "layers"), layer), "instances");
}

static void test_no_registrations(void **state)
{
	json_t *s = parse(STACK), *regs = json_object();
	char *w = (char *)1;
	json_t *out = stack_effective(s, regs, &w);

	assert_non_null(out);
	assert_null(w);
	assert_true(json_equal(out, s));
	json_decref(out);
	out = stack_effective(s, NULL, &w);
	assert_true(json_equal(out, s));
	json_decref(out);
	json_decref(regs);
	json_decref(s);
}

static void test_not_object(void **state)
{
	json_t *a = parse("[1]"), *regs = json_object();
	char *w = NULL;

	assert_null(stack_effective(a, regs, &w));
	assert_null(w);
	json_decref(a);
	json_decref(regs);
}

static void test_registration_adds_member(void **state)
{
	json_t *s = parse(STACK);
	json_t *regs = parse("{\"app2\":{\"layers\":[\"plone_instances\"],\"private_ip\":\"10.0.0.3\","
			     "\"status\":\"online\",\"backends\":2,\"instance_type\":\"t3.small\","
			     "\"agent\":{\"state\":\"running\",\"applied_revision\":\"abc\"},\"extra\":1}}");
	json_t *before = json_deep_copy(s);
	char *w = NULL;
	json_t *out = stack_effective(s, regs, &w);
	json_t *m = json_object_get(inst(out, "plone_instances"), "app2");

	assert_null(w);
	assert_non_null(m);
	assert_string_equal(json_string_value(json_object_get(m, "private_ip")), "10.0.0.3");
	assert_string_equal(json_string_value(json_object_get(m, "status")), "online");
	assert_int_equal(json_integer_value(json_object_get(m, "backends")), 2);
	assert_string_equal(json_string_value(json_object_get(m, "instance_type")), "t3.small");
	/* Never the agent's own state, nor anything else. */
	assert_null(json_object_get(m, "agent"));
	assert_null(json_object_get(m, "extra"));
	assert_null(json_object_get(m, "layers"));
	/* The static member stays, other layers untouched, the input too. */
	assert_non_null(json_object_get(inst(out, "plone_instances"), "app1"));
	assert_int_equal(json_object_size(inst(out, "lb")), 1);
	assert_true(json_equal(s, before));
	assert_true(json_equal(json_object_get(out, "big"), json_object_get(s, "big")));
	json_decref(out);
	json_decref(before);
	json_decref(regs);
	json_decref(s);
}

/* The agent member changing is no change of the effective stack. */
static void test_agent_state_is_not_membership(void **state)
{
	json_t *s = parse(STACK);
	json_t *r1 = parse("{\"app2\":{\"layers\":[\"plone_instances\"],\"private_ip\":\"10.0.0.3\","
			   "\"status\":\"online\",\"agent\":{\"state\":\"idle\"}}}");
	json_t *r2 = parse("{\"app2\":{\"layers\":[\"plone_instances\"],\"private_ip\":\"10.0.0.3\","
			   "\"status\":\"online\",\"agent\":{\"state\":\"running\",\"last_run\":{\"id\":4}}}}");
	json_t *a = stack_effective(s, r1, NULL), *b = stack_effective(s, r2, NULL);
	char *da = json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS), *db = json_dumps(b, JSON_COMPACT | JSON_SORT_KEYS);

	assert_string_equal(da, db);
	free(da);
	free(db);
	json_decref(a);
	json_decref(b);
	json_decref(r1);
	json_decref(r2);
	json_decref(s);
}

/* A registration wins over the static member of the same hostname, in
 * every layer: the static entry goes from layers it no longer names. */
static void test_registration_wins(void **state)
{
	json_t *s = parse(STACK);
	json_t *regs = parse("{\"app1\":{\"layers\":[\"plone_instances\",\"db\"],\"private_ip\":\"10.9.9.9\","
			     "\"status\":\"online\"},"
			     "\"lb1\":{\"layers\":[\"plone_instances\"],\"private_ip\":\"10.0.0.1\"}}");
	char *w = NULL;
	json_t *out = stack_effective(s, regs, &w);
	json_t *m = json_object_get(inst(out, "plone_instances"), "app1");

	assert_null(w);
	assert_string_equal(json_string_value(json_object_get(m, "private_ip")), "10.9.9.9");
	assert_string_equal(json_string_value(json_object_get(m, "status")), "online");
	/* db had no instances at all: created. */
	assert_non_null(json_object_get(inst(out, "db"), "app1"));
	/* lb1 registered in plone_instances only: it left lb. */
	assert_null(json_object_get(inst(out, "lb"), "lb1"));
	assert_non_null(json_object_get(inst(out, "plone_instances"), "lb1"));
	/* The input still has its static members. */
	assert_non_null(json_object_get(inst(s, "lb"), "lb1"));
	assert_null(json_object_get(json_object_get(inst(s, "plone_instances"), "app1"), "status"));
	json_decref(out);
	json_decref(regs);
	json_decref(s);
}

static void test_bad_registrations(void **state)
{
	json_t *s = parse(STACK);
	json_t *regs = parse("{\"a-bad\":[1],"
			     "\"b\":{\"layers\":\"plone_instances\"},"
			     "\"c\":{\"layers\":[\"plone_instances\"],\"private_ip\":\"1.2.3.4; rm -rf\"},"
			     "\"d\":{\"layers\":[\"plone_instances\"],\"backends\":-1},"
			     "\"e\":{\"layers\":[\"nosuch\",\"lb\"],\"private_ip\":\"10.0.0.5\"},"
			     "\"..\":{\"layers\":[\"lb\"]},"
			     "\"f\":{\"layers\":[\"lb\"],\"status\":\"on\\nline\"},"
			     "\"app1\":{\"layers\":[\"lb\"],\"private_ip\":7}}");
	char *w = NULL;
	json_t *out = stack_effective(s, regs, &w);

	assert_non_null(out);
	assert_non_null(w);
	assert_non_null(strstr(w, "registration \"a-bad\" left out: not a JSON object"));
	assert_non_null(strstr(w, "registration \"b\" left out: \"layers\" must be an array of layer names"));
	assert_non_null(strstr(w, "registration \"c\" left out: \"private_ip\" must be a host name or an IP address"));
	assert_non_null(strstr(w, "registration \"d\" left out: \"backends\" must be an integer of at least 0"));
	assert_non_null(strstr(w, "registration \"e\": the stack has no layer \"nosuch\""));
	assert_non_null(strstr(w, "registration \"..\" left out: its hostname is not a name"));
	assert_non_null(strstr(w, "registration \"f\" left out: \"status\" must be a string without control"));
	assert_non_null(strstr(w, "registration \"app1\" left out: \"private_ip\""));
	/* Warnings in hostname order. */
	assert_true(strstr(w, "\"..\"") < strstr(w, "\"a-bad\""));
	assert_true(strstr(w, "\"a-bad\"") < strstr(w, "\"b\""));
	/* e joined the layer that exists; the others are not members; app1's
	 * bad registration leaves its static entry in place. */
	assert_non_null(json_object_get(inst(out, "lb"), "e"));
	assert_null(json_object_get(inst(out, "plone_instances"), "c"));
	assert_null(json_object_get(inst(out, "plone_instances"), "d"));
	assert_null(json_object_get(inst(out, "lb"), "f"));
	assert_non_null(json_object_get(inst(out, "plone_instances"), "app1"));
	assert_null(json_object_get(inst(out, "lb"), "app1"));
	free(w);
	json_decref(out);
	json_decref(regs);
	json_decref(s);
}

/* stack_registration_problem: what fleet and status say of one
 * registration, as stack_effective judges it (issue 12 follow-up #9). */
static void check_problem(const json_t *s, const char *host, const char *reg, const char *want, bool left_out)
{
	json_t *r = reg ? parse(reg) : NULL;
	bool lo = !left_out;
	char *why = stack_registration_problem(s, host, r, &lo);

	if (!want)
		assert_null(why);
	else {
		assert_non_null(why);
		if (!strstr(why, want))
			fail_msg("%s: \"%s\" lacks \"%s\"", host, why, want);
	}
	assert_int_equal(lo, left_out);
	free(why);
	json_decref(r);
}

static void test_registration_problem(void **state)
{
	json_t *s = parse(STACK);

	check_problem(s, "ok", "{\"layers\":[\"lb\"],\"private_ip\":\"10.0.0.5\"}", NULL, false);
	check_problem(s, "a#b", "{\"layers\":[\"lb\"]}", "its hostname is not a name", true);
	check_problem(s, "../../etc", "{\"layers\":[\"lb\"]}", "its hostname is not a name", true);
	check_problem(s, "ev\nil", "{\"layers\":[\"lb\"]}", "its hostname is not a name", true);
	check_problem(s, "x", "[1]", "not a JSON object", true);
	check_problem(s, "x", NULL, "not a JSON object", true);
	check_problem(s, "x", "{\"layers\":[\"lb\"],\"private_ip\":\"1.2.3.4;x\"}", "\"private_ip\" must be", true);
	check_problem(s, "x", "{\"layers\":[\"lb\"],\"backends\":\"2\"}", "\"backends\" must be", true);
	check_problem(s, "x", "{\"layers\":[\"nosuch\",\"lb\"]}", "the stack has no layer \"nosuch\" (in the others)",
		      false);
	check_problem(s, "x", "{\"layers\":[\"nosuch\",\"other\"]}", "no layer \"nosuch\", \"other\"", true);
	/* Without a stack the layers are not judged. */
	check_problem(NULL, "x", "{\"layers\":[\"nosuch\"]}", NULL, false);
	json_decref(s);
}

/* The result passes the stack's own parse, with the member as a peer. */
static void test_parses(void **state)
{
	json_t *s = parse(STACK);
	json_t *regs = parse("{\"app2\":{\"layers\":[\"plone_instances\"],\"private_ip\":\"10.0.0.3\","
			     "\"status\":\"online\",\"agent\":{\"x\":1}}}");
	json_t *out = stack_effective(s, regs, NULL);
	char *text = json_dumps(out, JSON_COMPACT | JSON_SORT_KEYS);
	struct stack_error err = { 0 };
	struct stack *st = NULL;
	const struct stack_layer *l;

	assert_int_equal(stack_parse(text, strlen(text), "lb1", &st, &err), 0);
	l = stack_layer_find(st, "plone_instances");
	assert_non_null(l);
	assert_int_equal(l->n_members, 2);
	assert_string_equal(l->members[1].hostname, "app2");
	assert_true(l->members[1].online);
	stack_unref(st);
	free(text);
	json_decref(out);
	json_decref(regs);
	json_decref(s);
}

/* A stack without opsworks.layers: every registration is named. */
static void test_no_layers(void **state)
{
	json_t *s = parse("{\"deploy\":{}}");
	json_t *regs = parse("{\"x\":{\"layers\":[\"web\"]}}");
	char *w = NULL;
	json_t *out = stack_effective(s, regs, &w);

	assert_true(json_equal(out, s));
	assert_non_null(w);
	assert_non_null(strstr(w, "registration \"x\": the stack has no layer \"web\""));
	free(w);
	json_decref(out);
	json_decref(regs);
	json_decref(s);
}

/* stack_registration_same_effect never says "same" when the effective
 * stacks differ: every pair of a pool of registrations of host lb1 (none,
 * the static entry's own fields, another address, other layers, agent
 * state only, invalid ones), beside another host's registration, compared
 * with the documents stack_effective builds. It also says "same" where it
 * should (the skips it exists for). */
static void test_same_effect(void **state)
{
	static const char *const pool[] = {
		NULL,
		"{\"layers\":[\"lb\"],\"private_ip\":\"10.0.0.1\",\"status\":\"online\"}",
		"{\"layers\":[\"lb\"],\"private_ip\":\"10.0.0.1\",\"status\":\"online\",\"agent\":{\"state\":\"idle\"}}",
		"{\"layers\":[\"lb\"],\"private_ip\":\"10.0.0.1\",\"status\":\"online\",\"agent\":{\"state\":\"running\"}}",
		"{\"layers\":[\"lb\"],\"private_ip\":\"10.0.0.9\",\"status\":\"online\"}",
		"{\"layers\":[\"lb\"],\"private_ip\":\"10.0.0.1\"}",
		"{\"layers\":[\"lb\",\"db\"],\"private_ip\":\"10.0.0.1\",\"status\":\"online\"}",
		"{\"layers\":[\"db\"],\"private_ip\":\"10.0.0.1\",\"status\":\"online\"}",
		"{\"layers\":[],\"private_ip\":\"10.0.0.1\",\"status\":\"online\"}",
		"{\"layers\":[\"nope\"],\"private_ip\":\"10.0.0.1\"}",
		"{\"layers\":\"lb\",\"private_ip\":\"10.0.0.1\"}",
		"{\"layers\":[\"lb\"],\"private_ip\":\"a b\"}",
		"{\"layers\":[\"lb\"],\"private_ip\":\"10.0.0.1\",\"status\":\"online\",\"backends\":3}",
	};
	static const char *const stacks[] = {
		NULL, /* STACK */
		"{\"opsworks\":{\"layers\":{\"lb\":{\"name\":\"LB\"},\"db\":{\"instances\":null}}}}",
		"{\"opsworks\":{\"layers\":{\"lb\":{\"instances\":[1]},\"db\":{}}}}",
		"{\"opsworks\":{}}",
	};
	size_t n = sizeof(pool) / sizeof(pool[0]), same_count = 0;

	for (size_t k = 0; k < sizeof(stacks) / sizeof(stacks[0]); k++) {
		json_t *s = parse(stacks[k] ? stacks[k] : STACK);
		for (size_t i = 0; i < n; i++)
			for (size_t j = 0; j < n; j++) {
				json_t *a = pool[i] ? parse(pool[i]) : NULL, *b = pool[j] ? parse(pool[j]) : NULL;
				json_t *ra = parse("{\"app1\":{\"layers\":[\"db\"],\"private_ip\":\"10.0.0.2\"}}");
				json_t *rb = json_deep_copy(ra), *ea, *eb;
				char *da, *db;

				if (a)
					json_object_set(ra, "lb1", a);
				if (b)
					json_object_set(rb, "lb1", b);
				ea = stack_effective(s, ra, NULL);
				eb = stack_effective(s, rb, NULL);
				da = json_dumps(ea, JSON_COMPACT | JSON_SORT_KEYS);
				db = json_dumps(eb, JSON_COMPACT | JSON_SORT_KEYS);
				if (stack_registration_same_effect(s, "lb1", a, b)) {
					if (strcmp(da, db) != 0)
						fail_msg("stack %zu, registrations %zu and %zu: said same, but\n%s\n%s", k, i,
							 j, da, db);
					same_count++;
				}
				free(da);
				free(db);
				json_decref(ea);
				json_decref(eb);
				json_decref(ra);
				json_decref(rb);
				json_decref(a);
				json_decref(b);
			}
		json_decref(s);
	}
	/* On STACK: the static entry's own fields (1) and agent state only
	 * (2, 3) are no change against none (0), nor between themselves. */
	{
		json_t *s = parse(STACK), *r1 = parse(pool[1]), *r3 = parse(pool[3]), *r4 = parse(pool[4]);
		assert_true(stack_registration_same_effect(s, "lb1", NULL, r1));
		assert_true(stack_registration_same_effect(s, "lb1", r1, r3));
		assert_true(stack_registration_same_effect(s, "lb1", r3, NULL));
		assert_false(stack_registration_same_effect(s, "lb1", r1, r4));
		assert_false(stack_registration_same_effect(NULL, "lb1", r1, r1));
		json_decref(s);
		json_decref(r1);
		json_decref(r3);
		json_decref(r4);
	}
	assert_true(same_count > n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_registrations),
		cmocka_unit_test(test_not_object),
		cmocka_unit_test(test_registration_adds_member),
		cmocka_unit_test(test_agent_state_is_not_membership),
		cmocka_unit_test(test_registration_wins),
		cmocka_unit_test(test_bad_registrations),
		cmocka_unit_test(test_registration_problem),
		cmocka_unit_test(test_parses),
		cmocka_unit_test(test_no_layers),
		cmocka_unit_test(test_same_effect),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

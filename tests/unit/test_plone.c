/* SPDX-License-Identifier: BSD-2-Clause */
/* Unit tests of agent/recipes/plone.c: the one client count (reference §5,
 * without its bugs), discovery of the first online-or-self member, and the
 * address chosen for a member. JSON is written with single quotes. */
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "recipes/plone.h"
#include "stack/stack.h"
#include "util.h"

static struct stack *parse(const char *doc, const char *instance)
{
	char *d = xstrdup(doc);
	struct stack_error err;
	struct stack *s = NULL;
	int r;

	for (char *p = d; *p; p++)
		if (*p == '\'')
			*p = '"';
	r = stack_parse(d, strlen(d), instance, &s, &err);
	free(d);
	if (r < 0)
		fail_msg("parse failed: %d at %s: %s", r, err.path, err.message);
	return s;
}

/* A stack with app members a1 (self, given extra JSON), a2 (backends 3),
 * a3 (no backends, cpus 3) and a4 (stopped); custom is the plone_instances
 * section. */
static struct stack *app_stack(const char *self_extra, const char *custom)
{
	char doc[2048];

	snprintf(doc, sizeof(doc),
		 "{'opsworks': {'layers': {'plone_instances': {'instances': {"
		 " 'a1': {'private_ip': '10.0.0.1', 'status': 'online'%s},"
		 " 'a2': {'private_ip': '10.0.0.2', 'status': 'online', 'backends': 3},"
		 " 'a3': {'private_dns_name': 'a3.internal', 'status': 'online', 'cpus': 3},"
		 " 'a4': {'public_dns_name': 'ec2-4', 'status': 'stopped'}}},"
		 " 'zeoserver': {'instances': {"
		 "  'z0': {'private_ip': '10.0.9.0', 'status': 'stopped'},"
		 "  'z1': {'private_ip': '10.0.9.1', 'status': 'online'}}}}},"
		 " 'plone_instances': %s}",
		 self_extra, custom);
	return parse(doc, "a1");
}

static const struct stack_member *member(const struct stack *s, const char *name)
{
	const struct stack_layer *l = stack_layer_find(s, "plone_instances");

	for (size_t i = 0; i < l->n_members; i++)
		if (strcmp(l->members[i].hostname, name) == 0)
			return &l->members[i];
	fail_msg("no member %s", name);
	return NULL;
}

static void test_instance_count_wins(void **state)
{
	struct stack *s = app_stack(", 'backends': 40", "{'instance_count': 3, 'per_cpu': 4}");

	/* instance_count, which the original never read, is honoured for every member. */
	assert_int_equal(plone_client_count(s, NULL), 3);
	assert_int_equal(plone_client_count(s, member(s, "a1")), 3);
	assert_int_equal(plone_client_count(s, member(s, "a2")), 3);
	assert_int_equal(plone_client_count(s, member(s, "a3")), 3);
	stack_unref(s);
}

static void test_backends(void **state)
{
	struct stack *s = app_stack(", 'backends': 9", "{}");

	/* ceil(9 × 2 ÷ 8) = 3; ceil(3 × 2 ÷ 8) = 1. */
	assert_int_equal(plone_client_count(s, NULL), 3);
	assert_int_equal(plone_client_count(s, member(s, "a1")), 3);
	assert_int_equal(plone_client_count(s, member(s, "a2")), 1);
	stack_unref(s);

	s = app_stack(", 'backends': 8", "{'per_cpu': 0.5}");
	/* ceil(8 × 0.5 ÷ 8) = 0.5 → 1; exact products are not rounded up. */
	assert_int_equal(plone_client_count(s, NULL), 1);
	stack_unref(s);

	s = app_stack(", 'backends': 16", "{'per_cpu': 1}");
	assert_int_equal(plone_client_count(s, NULL), 2);
	stack_unref(s);
}

static void test_backends_from_opsworks_instance(void **state)
{
	const char *doc = "{'opsworks': {'instance': {'hostname': 'a1', 'layers': ['plone_instances'], 'backends': 12},"
			  " 'layers': {'plone_instances': {'instances': {'a1': {'status': 'online'}}}}}}";
	struct stack *s = parse(doc, "a1");

	/* ceil(12 × 2 ÷ 8) = 3, the same whether asked for "self" or for the member. */
	assert_int_equal(plone_client_count(s, NULL), 3);
	assert_int_equal(plone_client_count(s, plone_self_member(s, "plone_instances")), 3);
	stack_unref(s);
}

static void test_cpus(void **state)
{
	struct stack *s = app_stack("", "{'per_cpu': 1.5}");
	long cpus = plone_cpu_count();

	assert_true(cpus >= 1);
	/* This instance: its own CPUs (what sched_getaffinity allows). */
	assert_int_equal(plone_client_count(s, NULL), (long)((cpus * 3 + 1) / 2));
	/* Another member with "cpus": ceil(3 × 1.5) = 5. */
	assert_int_equal(plone_client_count(s, member(s, "a3")), 5);
	/* Another member without: this machine's CPUs stand in. */
	assert_int_equal(plone_client_count(s, member(s, "a4")), (long)((cpus * 3 + 1) / 2));
	stack_unref(s);
}

static void test_cpus_follow_affinity(void **state)
{
	cpu_set_t old, one;
	struct stack *s = app_stack("", "{}");

	assert_int_equal(sched_getaffinity(0, sizeof(old), &old), 0);
	CPU_ZERO(&one);
	for (int i = 0; i < CPU_SETSIZE; i++)
		if (CPU_ISSET(i, &old)) {
			CPU_SET(i, &one);
			break;
		}
	assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
	assert_int_equal(plone_cpu_count(), 1);
	assert_int_equal(plone_client_count(s, NULL), 2); /* 1 CPU × per_cpu 2 */
	assert_int_equal(sched_setaffinity(0, sizeof(old), &old), 0);
	stack_unref(s);
}

static void test_bounds_and_bad_types(void **state)
{
	struct stack *s = app_stack("", "{'instance_count': 1000}");

	assert_int_equal(plone_client_count(s, NULL), PLONE_CLIENTS_MAX);
	stack_unref(s);
	/* Wrong types and non-positive values fall back as if absent (validation
	 * of the apps family reports them; the count never drops below 1). */
	s = app_stack(", 'backends': 0", "{'instance_count': 0, 'per_cpu': -3}");
	assert_true(plone_client_count(s, NULL) >= 1);
	assert_int_equal(plone_client_count(s, NULL), plone_cpu_count() * 2 > PLONE_CLIENTS_MAX
								? PLONE_CLIENTS_MAX
								: plone_cpu_count() * 2);
	stack_unref(s);
}

static void test_discovery_and_address(void **state)
{
	struct stack *s = app_stack("", "{}");
	const struct stack_member *m;

	/* The first online member in document order; z0 is stopped. */
	m = plone_first_online_or_self(s, "zeoserver");
	assert_non_null(m);
	assert_string_equal(m->hostname, "z1");
	assert_string_equal(plone_member_address(m), "10.0.9.1");
	assert_null(plone_first_online_or_self(s, "no_such_layer"));
	/* Private addresses first, then DNS names, then the hostname. */
	assert_string_equal(plone_member_address(member(s, "a3")), "a3.internal");
	assert_string_equal(plone_member_address(member(s, "a4")), "ec2-4");
	assert_string_equal(plone_self_member(s, "plone_instances")->hostname, "a1");
	assert_null(plone_self_member(s, "zeoserver"));
	stack_unref(s);

	/* This instance counts even when it is not online yet. */
	s = parse("{'opsworks': {'layers': {'zeoserver': {'instances': {"
		  " 'z0': {'private_ip': '10.0.9.0', 'status': 'booting'},"
		  " 'z1': {'private_ip': '10.0.9.1', 'status': 'online'}}}}}}",
		  "z0");
	assert_string_equal(plone_first_online_or_self(s, "zeoserver")->hostname, "z0");
	stack_unref(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_instance_count_wins),
		cmocka_unit_test(test_backends),
		cmocka_unit_test(test_backends_from_opsworks_instance),
		cmocka_unit_test(test_cpus),
		cmocka_unit_test(test_cpus_follow_affinity),
		cmocka_unit_test(test_bounds_and_bad_types),
		cmocka_unit_test(test_discovery_and_address),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

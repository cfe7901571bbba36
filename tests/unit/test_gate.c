/* SPDX-License-Identifier: BSD-2-Clause */
/* Unit tests of the fleet gates of plans (design.md §9): agent.rolling and
 * a custom recipe's "singleton" validated with their JSON paths,
 * maintenance kept out of agent.layers, and recipes/build.c's gates: a
 * rolling deploy's semaphore and health step, a singleton job's lock. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "recipes/recipe.h"
#include "stack/stack.h"
#include "steps/plan.h"
#include "util.h"

/* Single quotes to double quotes. */
static char *sq(const char *s)
{
	char *d = xstrdup(s);

	for (char *p = d; *p; p++)
		if (*p == '\'')
			*p = '"';
	return d;
}

/* A stack with one layer "web" of instance h, app "site" deployed by the
 * custom recipe "rel", and agent's extra members. */
static char *doc(const char *agent_extra, const char *recipe_extra)
{
	_cleanup_free_ char *t = xasprintf(
		"{'opsworks': {'stack': {'name': 's'}, 'layers': {'web': {'name': 'Web', 'instances': {"
		"   'h': {'private_ip': '10.0.0.1', 'status': 'online'}}}}},"
		" 'deploy': {'site': {}},"
		" 'agent': {'layers': {'web': {'deploy': ['rel']}},"
		"   'recipes': {'rel': {'command': ['/bin/true']}, 'job': {'command': ['/bin/true']%s}}%s}}",
		recipe_extra, agent_extra);
	return sq(t);
}

static int load(const char *agent_extra, const char *recipe_extra, struct stack **s, struct stack_error *err)
{
	_cleanup_free_ char *d = doc(agent_extra, recipe_extra);

	return recipes_stack_load(d, strlen(d), "h", s, err);
}

static void refused(const char *agent_extra, const char *recipe_extra, const char *path, const char *words)
{
	struct stack_error err = { 0 };
	struct stack *s = NULL;

	assert_int_equal(load(agent_extra, recipe_extra, &s, &err), -EINVAL);
	assert_null(s);
	if (strcmp(err.path, path) != 0 || !strstr(err.message, words))
		fail_msg("got %s: %s; wanted %s: ...%s...", err.path, err.message, path, words);
}

static void test_rolling_validation(void **state)
{
	struct stack_error err = { 0 };
	struct stack *s = NULL;

	assert_int_equal(load(", 'rolling': {'site': {'max_parallel': 2, 'health': {'command': ['/bin/true'], "
			      "'timeout': 5}}}", "", &s, &err), 0);
	stack_unref(s);
	refused(", 'rolling': []", "", "$.agent.rolling", "must be an object");
	refused(", 'rolling': {'site': {}}", "", "$.agent.rolling.site.max_parallel", "is required");
	refused(", 'rolling': {'site': {'max_parallel': 0}}", "", "$.agent.rolling.site.max_parallel",
		"from 1 to 1000");
	refused(", 'rolling': {'site': {'max_parallel': 1, 'speed': 3}}", "", "$.agent.rolling.site", "unknown key");
	refused(", 'rolling': {'site': {'max_parallel': 1, 'health': {}}}", "", "$.agent.rolling.site.health",
		"needs \"path\"");
	refused(", 'rolling': {'site': {'max_parallel': 1, 'health': {'path': 'x y'}}}", "",
		"$.agent.rolling.site.health.path", "starts with \"/\"");
	refused(", 'rolling': {'site': {'max_parallel': 1, 'health': {'command': []}}}", "",
		"$.agent.rolling.site.health.command", "must not be empty");
	refused(", 'rolling': {'site': {'max_parallel': 1, 'health': {'path': '/', 'timeout': 0}}}", "",
		"$.agent.rolling.site.health.timeout", "from 1 to 86400");
}

static void test_singleton_and_layers(void **state)
{
	refused("", ", 'singleton': 'yes'", "$.agent.recipes.job.singleton", "true or false");
	_cleanup_free_ char *d = sq("{'opsworks': {'layers': {'web': {'name': 'Web', 'instances': {'h': {}}}}},"
				    " 'agent': {'layers': {'web': {'maintenance': ['job']}},"
				    "   'recipes': {'job': {'command': ['/bin/true']}}}}");
	struct stack_error err = { 0 };
	struct stack *s = NULL;

	/* A job runs alone, never as a layer's event. */
	assert_int_equal(recipes_stack_load(d, strlen(d), "h", &s, &err), -EINVAL);
	assert_string_equal(err.path, "$.agent.layers.web");
	assert_non_null(strstr(err.message, "unknown event \"maintenance\""));
}

static int plan_of(struct stack *s, enum event ev, const char *app, const char *recipe, struct plan *p,
		   char **error)
{
	static struct config c;
	struct recipe_ctx ctx = { .stack = s, .config = &c, .event = ev, .app = app, .run_id = 1 };

	config_defaults(&c);
	return recipes_build_plan(&ctx, recipe, p, error);
}

static void test_rolling_plan(void **state)
{
	struct stack_error err = { 0 };
	struct stack *s = NULL;
	struct plan p;
	char *error = NULL;

	assert_int_equal(load(", 'rolling': {'site': {'max_parallel': 2, 'health': {'command': ['/bin/true']}}}", "",
			      &s, &err),
			 0);
	assert_int_equal(plan_of(s, EVENT_DEPLOY, "site", NULL, &p, &error), 0);
	assert_int_equal(p.gate.kind, PLAN_GATE_SEMAPHORE);
	assert_string_equal(p.gate.name, "deploy-site");
	assert_int_equal(p.gate.slots, 2);
	assert_true(p.gate.keep_on_failure);
	assert_null(p.gate.job);
	assert_int_equal(p.n_steps, 2);
	assert_string_equal(p.steps[0]->ops->kind, "exec");
	assert_string_equal(p.steps[1]->ops->kind, "health");
	plan_free(&p);
	/* A configure takes no slot. */
	assert_int_equal(plan_of(s, EVENT_CONFIGURE, NULL, NULL, &p, &error), 0);
	assert_int_equal(p.gate.kind, PLAN_GATE_NONE);
	plan_free(&p);
	stack_unref(s);

	/* Without agent.rolling: no gate, no health step. */
	assert_int_equal(load("", "", &s, &err), 0);
	assert_int_equal(plan_of(s, EVENT_DEPLOY, "site", NULL, &p, &error), 0);
	assert_int_equal(p.gate.kind, PLAN_GATE_NONE);
	assert_int_equal(p.n_steps, 1);
	plan_free(&p);
	stack_unref(s);
}

static void test_maintenance_plan(void **state)
{
	struct stack_error err = { 0 };
	struct stack *s = NULL;
	struct plan p;
	char *error = NULL;
	json_t *g;

	assert_int_equal(load("", ", 'singleton': true", &s, &err), 0);
	assert_int_equal(plan_of(s, EVENT_MAINTENANCE, NULL, "job", &p, &error), 0);
	assert_int_equal(p.n_steps, 1);
	assert_string_equal(p.steps[0]->ops->kind, "exec");
	assert_string_equal(p.steps[0]->recipe, "job");
	assert_int_equal(p.gate.kind, PLAN_GATE_MUTEX);
	assert_string_equal(p.gate.name, "job");
	assert_string_equal(p.gate.job, "job");
	g = plan_gate_json(&p.gate);
	assert_string_equal(json_string_value(json_object_get(g, "lock")), "job");
	json_decref(g);
	plan_free(&p);

	assert_int_equal(plan_of(s, EVENT_MAINTENANCE, NULL, NULL, &p, &error), -EINVAL);
	assert_non_null(strstr(error, "--recipe"));
	free(error);
	plan_free(&p);
	assert_int_equal(plan_of(s, EVENT_MAINTENANCE, NULL, "nope", &p, &error), -ENOENT);
	assert_non_null(strstr(error, "\"nope\""));
	free(error);
	plan_free(&p);
	stack_unref(s);

	/* Not a singleton: no lock. */
	assert_int_equal(load("", "", &s, &err), 0);
	assert_int_equal(plan_of(s, EVENT_MAINTENANCE, NULL, "job", &p, &error), 0);
	assert_int_equal(p.gate.kind, PLAN_GATE_NONE);
	plan_free(&p);
	stack_unref(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rolling_validation),
		cmocka_unit_test(test_singleton_and_layers),
		cmocka_unit_test(test_rolling_plan),
		cmocka_unit_test(test_maintenance_plan),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

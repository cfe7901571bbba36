/* SPDX-License-Identifier: BSD-2-Clause */
/* The system family (recipes/system.c, design.md §8.1): the logrotate and
 * apt files it plans (their content, read from the plan's diffs against an
 * empty root), the validation of apt.unattended_upgrades with JSON paths,
 * and the reboot job with and without an etcd source. The files against
 * the real logrotate and apt-config: tests/integration/test_system_files.py. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "recipes/recipe.h"
#include "stack/check.h"
#include "stack/stack.h"
#include "steps/plan.h"
#include "util.h"

#define ETCD "etcd://127.0.0.1:2379/agentd/x"

/* A stack with an instances layer (app "site" as plone_instances.app_name)
 * and an lb layer for h, plus apt (a JSON object text, or NULL). */
static char *doc(const char *apt, const char *deploy_to)
{
	return xasprintf(
		"{\"opsworks\": {\"stack\": {\"name\": \"s\"}, \"layers\": {"
		"\"plone_instances\": {\"name\": \"P\", \"instances\": {\"h\": {\"private_ip\": \"10.0.0.1\"}}},"
		"\"lb\": {\"name\": \"L\", \"instances\": {\"h\": {\"private_ip\": \"10.0.0.1\"}}}}},"
		"\"plone_instances\": {\"app_name\": \"site\"},"
		"\"deploy\": {\"site\": {\"deploy_to\": \"%s\", \"user\": \"plone\", \"group\": \"plone\"}}%s%s}",
		deploy_to, apt ? ", \"apt\": " : "", apt ? apt : "");
}

static int load(const char *apt, struct stack **s, struct stack_error *err)
{
	_cleanup_free_ char *d = doc(apt, "/srv/www/site");

	return recipes_stack_load(d, strlen(d), "h", s, err);
}

static void conf(struct config *c, const char *source, const char *root)
{
	config_defaults(c);
	free(c->source);
	c->source = xstrdup(source);
	free(c->root);
	c->root = xstrdup(root);
}

/* The steps plan_before plans for ev: {target: diff or action} in *ret. */
static json_t *plan_before_app(const struct stack *s, const struct config *c, enum event ev, const char *app)
{
	struct recipe_ctx ctx = { .stack = s, .config = c, .event = ev, .app = app };
	struct plan p;
	_cleanup_free_ char *err = NULL;
	json_t *d, *out = json_object(), *st;
	size_t i;

	plan_init(&p, c->root);
	assert_int_equal(family_system.plan_before(&ctx, &p, &err), 0);
	d = plan_describe(&p, NULL);
	json_array_foreach(json_object_get(d, "steps"), i, st) {
		const json_t *diff = json_object_get(st, "diff");
		json_object_set(out, json_string_value(json_object_get(st, "target")),
				diff ? (json_t *)diff : json_object_get(st, "action"));
	}
	json_decref(d);
	plan_free(&p);
	return out;
}

static json_t *plan_before(const struct stack *s, const struct config *c, enum event ev)
{
	return plan_before_app(s, c, ev, NULL);
}

static const char *get(const json_t *o, const char *k)
{
	const char *v = json_string_value(json_object_get(o, k));

	if (!v)
		fail_msg("no step %s", k);
	return v;
}

static char root_dir[64];

static int setup(void **state)
{
	snprintf(root_dir, sizeof(root_dir), "/tmp/test_system.XXXXXX");
	assert_non_null(mkdtemp(root_dir));
	return 0;
}

static int teardown(void **state)
{
	return rmdir(root_dir);
}

static void test_logrotate_files(void **state)
{
	struct stack *s;
	struct stack_error err;
	struct config c;
	json_t *o;
	const char *sup, *apps;
	_cleanup_free_ char *dt = xasprintf("+%s/srv/www/site/shared/log/*.log {", root_dir);
	_cleanup_free_ char *log = xasprintf("+%s/var/log/supervisor/site-client1-stdout.log", root_dir);

	assert_int_equal(load(NULL, &s, &err), 0);
	conf(&c, "file:///x", root_dir);
	o = plan_before(s, &c, EVENT_SETUP);
	sup = get(o, "/etc/logrotate.d/agentd-supervisor");
	apps = get(o, "/etc/logrotate.d/agentd-apps");
	assert_non_null(strstr(sup, log));
	assert_non_null(strstr(sup, "+\trotate 7\n"));
	assert_non_null(strstr(sup, "+\tcopytruncate\n"));
	assert_non_null(strstr(sup, "+\tdateext\n"));
	assert_non_null(strstr(apps, dt));
	assert_non_null(strstr(apps, "+\tsu plone plone\n"));
	assert_non_null(strstr(apps, "+\trotate 30\n"));
	/* The packages' logs are theirs: never named twice. */
	assert_null(strstr(sup, "haproxy"));
	assert_null(strstr(apps, "nginx"));
	/* No apt at all: the two removals (none on a converged host). */
	assert_int_equal(json_object_size(o), 4);
	assert_non_null(json_object_get(o, "/etc/apt/apt.conf.d/52agentd-unattended-upgrades"));
	json_decref(o);
	/* At the deploy of an app of theirs: logrotate only; of another app
	 * or of none: nothing (such a deploy takes no rolling slot). */
	o = plan_before_app(s, &c, EVENT_DEPLOY, "site");
	assert_int_equal(json_object_size(o), 2);
	json_decref(o);
	o = plan_before_app(s, &c, EVENT_DEPLOY, "other");
	assert_int_equal(json_object_size(o), 0);
	json_decref(o);
	o = plan_before(s, &c, EVENT_DEPLOY);
	assert_int_equal(json_object_size(o), 0);
	json_decref(o);
	/* Not at shutdown or undeploy. */
	o = plan_before(s, &c, EVENT_SHUTDOWN);
	assert_int_equal(json_object_size(o), 0);
	json_decref(o);
	/* A root logrotate cannot read back fails the plan. */
	{
		struct recipe_ctx ctx = { .stack = s, .config = &c, .event = EVENT_CONFIGURE };
		struct plan p;
		_cleanup_free_ char *e = NULL;

		free(c.root);
		c.root = xstrdup("/tmp/a b");
		plan_init(&p, c.root);
		assert_int_equal(family_system.plan_before(&ctx, &p, &e), -EINVAL);
		assert_non_null(strstr(e, "logrotate"));
		plan_free(&p);
	}
	config_free(&c);
	stack_unref(s);
}

/* An instance that serves no app, in a stack without apt: nothing at
 * all (its runs stay as they were). An undeploy as the stack that stays
 * places the apps: none left, both files go. "apt" without the key:
 * agentd's apt files go (20auto-upgrades only while agentd's is there). */
static void test_quiet_and_removals(void **state)
{
	struct stack *s, *other;
	struct stack_error err;
	struct config c;
	json_t *o;
	struct recipe_ctx ctx = { .event = EVENT_UNDEPLOY };
	struct plan p;
	_cleanup_free_ char *e = NULL;
	_cleanup_free_ char *d = xasprintf(
		"{\"opsworks\": {\"stack\": {\"name\": \"s\"}, \"layers\": {\"web\": {\"name\": \"W\", "
		"\"instances\": {\"h\": {\"private_ip\": \"10.0.0.1\"}}}}}, \"deploy\": {\"site\": {}}, "
		"\"agent\": {\"recipes\": {\"t\": {\"command\": [\"/bin/true\"]}}, \"layers\": {\"web\": "
		"{\"setup\": [\"t\"], \"configure\": [\"t\"], \"deploy\": [\"t\"]}}}%s}",
		"");
	_cleanup_free_ char *d2 = xasprintf("%.*s, \"apt\": {\"unattended_upgrades\": null}}", (int)strlen(d) - 1, d);

	conf(&c, "file:///x", root_dir);
	assert_int_equal(recipes_stack_load(d, strlen(d), "h", &other, &err), 0);
	for (int ev = 0; ev < _EVENT_MAX; ev++) {
		o = plan_before_app(other, &c, (enum event)ev, "site");
		/* Setup and configure remove agentd's apt files if there are
		 * any (a planner cannot know); nothing else. */
		assert_int_equal(json_object_size(o), ev == EVENT_SETUP || ev == EVENT_CONFIGURE ? 2 : 0);
		json_decref(o);
	}
	assert_int_equal(load(NULL, &s, &err), 0);
	ctx.stack = s;
	ctx.config = &c;
	ctx.other_stack = other;
	plan_init(&p, c.root);
	assert_int_equal(family_system.plan_before(&ctx, &p, &e), 0);
	assert_int_equal(p.n_steps, 2);
	for (size_t i = 0; i < p.n_steps; i++)
		assert_string_equal(p.steps[i]->ops->kind, "absent");
	plan_free(&p);
	/* Undeploy of an instance that served nothing: nothing. */
	ctx.stack = other;
	plan_init(&p, c.root);
	assert_int_equal(family_system.plan_before(&ctx, &p, &e), 0);
	assert_int_equal(p.n_steps, 0);
	plan_free(&p);
	stack_unref(other);
	stack_unref(s);

	assert_int_equal(recipes_stack_load(d2, strlen(d2), "h", &s, &err), 0);
	ctx = (struct recipe_ctx){ .stack = s, .config = &c, .event = EVENT_CONFIGURE };
	plan_init(&p, c.root);
	assert_int_equal(family_system.plan_before(&ctx, &p, &e), 0);
	assert_int_equal(p.n_steps, 2);
	assert_string_equal(p.steps[0]->target, "/etc/apt/apt.conf.d/20auto-upgrades");
	assert_string_equal(p.steps[0]->ops->kind, "absent");
	assert_string_equal(p.steps[0]->only_if_exists, "/etc/apt/apt.conf.d/52agentd-unattended-upgrades");
	assert_string_equal(p.steps[1]->target, "/etc/apt/apt.conf.d/52agentd-unattended-upgrades");
	assert_null(p.steps[1]->only_if_exists);
	plan_free(&p);
	stack_unref(s);
	config_free(&c);
}

static void test_apt_files(void **state)
{
	struct stack *s;
	struct stack_error err;
	struct config c;
	json_t *o;
	const char *uu;

	assert_int_equal(load("{\"unattended_upgrades\": {\"enable\": true, \"mail\": \"ops@example.com\", "
			      "\"package_blacklist\": [\"linux-.*\", \"a;b\"], \"auto_fix_interrupted_dpkg\": true, "
			      "\"automatic_reboot\": true}}",
			      &s, &err),
			 0);
	conf(&c, "file:///x", root_dir);
	o = plan_before(s, &c, EVENT_CONFIGURE);
	assert_non_null(strstr(get(o, "/etc/apt/apt.conf.d/20auto-upgrades"),
			       "+APT::Periodic::Update-Package-Lists \"1\";\n+APT::Periodic::Unattended-Upgrade \"1\";\n"));
	uu = get(o, "/etc/apt/apt.conf.d/52agentd-unattended-upgrades");
	assert_non_null(strstr(uu, "+#clear Unattended-Upgrade::Package-Blacklist;\n"
				   "+Unattended-Upgrade::Package-Blacklist {\n+\t\"linux-.*\";\n+\t\"a;b\";\n+};\n"));
	assert_non_null(strstr(uu, "+Unattended-Upgrade::Mail \"ops@example.com\";\n"));
	assert_non_null(strstr(uu, "+Unattended-Upgrade::AutoFixInterruptedDpkg \"true\";\n"));
	/* Without etcd, unattended-upgrades reboots by itself, at the default time. */
	assert_non_null(strstr(uu, "+Unattended-Upgrade::Automatic-Reboot \"true\";\n"));
	assert_non_null(strstr(uu, "+Unattended-Upgrade::Automatic-Reboot-Time \"02:00\";\n"));
	json_decref(o);
	/* With etcd, agentd's job does. */
	free(c.source);
	c.source = xstrdup(ETCD);
	o = plan_before(s, &c, EVENT_SETUP);
	assert_non_null(strstr(get(o, "/etc/apt/apt.conf.d/52agentd-unattended-upgrades"),
			       "+Unattended-Upgrade::Automatic-Reboot \"false\";\n"));
	json_decref(o);
	config_free(&c);
	stack_unref(s);
}

static void refused(const char *apt, const char *path, const char *words)
{
	struct stack *s = NULL;
	struct stack_error err = { 0 };

	assert_int_equal(load(apt, &s, &err), -EINVAL);
	assert_null(s);
	if (strcmp(err.path, path) != 0 || !strstr(err.message, words))
		fail_msg("%s: got %s: %s", apt, err.path, err.message);
}

static void test_validation(void **state)
{
	struct stack *s;
	struct stack_error err;
	const char *u = "$.apt.unattended_upgrades";

	refused("[]", "$.apt", "must be an object");
	refused("{\"unattended_upgrades\": true}", u, "must be an object");
	refused("{\"unattended_upgrades\": {\"reboot\": true}}", u, "unknown key");
	refused("{\"unattended_upgrades\": {\"enable\": \"yes\"}}", "$.apt.unattended_upgrades.enable", "boolean");
	refused("{\"unattended_upgrades\": {\"mail\": \"a\\\"b\"}}", "$.apt.unattended_upgrades.mail", "'\"'");
	refused("{\"unattended_upgrades\": {\"mail\": \"a\\nb\"}}", "$.apt.unattended_upgrades.mail", "control");
	refused("{\"unattended_upgrades\": {\"mail\": 3}}", "$.apt.unattended_upgrades.mail", "string");
	refused("{\"unattended_upgrades\": {\"package_blacklist\": \"x\"}}",
		"$.apt.unattended_upgrades.package_blacklist", "array");
	refused("{\"unattended_upgrades\": {\"package_blacklist\": [\"ok\", \"a%20b\"]}}",
		"$.apt.unattended_upgrades.package_blacklist[1]", "'%'");
	refused("{\"unattended_upgrades\": {\"package_blacklist\": [\"ok\", \"\\\"\"]}}",
		"$.apt.unattended_upgrades.package_blacklist[1]", "'\"'");
	for (const char *const *t = (const char *const[]){ "24:00", "2:00", "02:60", "now", "02:00 ", "+1:00", NULL };
	     *t; t++) {
		_cleanup_free_ char *a = xasprintf("{\"unattended_upgrades\": {\"automatic_reboot_time\": \"%s\"}}", *t);
		refused(a, "$.apt.unattended_upgrades.automatic_reboot_time", "HH:MM");
	}
	/* The apt cookbook's other keys are ignored; null counts as absent. */
	if (load("{\"periodic_update_min_delay\": 60, \"unattended_upgrades\": {\"mail\": null, "
		 "\"automatic_reboot_time\": \"23:59\", \"package_blacklist\": []}}",
		 &s, &err) < 0)
		fail_msg("%s: %s", err.path, err.message);
	stack_unref(s);
	/* deploy_to, written into agentd-apps, is refused by the stack itself. */
	{
		_cleanup_free_ char *d = doc(NULL, "/srv/www/a b");

		s = NULL;
		assert_int_equal(recipes_stack_load(d, strlen(d), "h", &s, &err), -EINVAL);
		assert_string_equal(err.path, "$.deploy.site.deploy_to");
	}
}

static void test_reboot_job(void **state)
{
	struct stack *s;
	struct stack_error err;
	struct config c;
	struct recipe_jobs jobs;
	struct plan p;
	char *e = NULL;
	struct recipe_ctx ctx = { .event = EVENT_MAINTENANCE };

	assert_int_equal(load("{\"unattended_upgrades\": {\"automatic_reboot\": true, \"automatic_reboot_time\": "
			      "\"04:05\"}}",
			      &s, &err),
			 0);
	/* Without etcd: no job, and no maintenance run of it. */
	conf(&c, "file:///x", root_dir);
	recipes_jobs(s, &c, &jobs);
	for (size_t i = 0; i < jobs.n; i++)
		assert_string_not_equal(jobs.v[i].name, "reboot");
	recipe_jobs_free(&jobs);
	ctx.stack = s;
	ctx.config = &c;
	assert_int_equal(recipes_build_plan(&ctx, "reboot", &p, &e), -ENOENT);
	plan_free(&p);
	free(e);
	e = NULL;

	/* With etcd: a daily job at the time given, in cron's order. */
	free(c.source);
	c.source = xstrdup("etcd+https://10.0.0.5:2379/agentd/prod");
	recipes_jobs(s, &c, &jobs);
	assert_int_equal(jobs.n, 1);
	assert_string_equal(jobs.v[0].name, "reboot");
	assert_string_equal(jobs.v[0].schedule, "5 4 * * *");
	assert_int_equal(jobs.v[0].splay, 0);
	assert_null(jobs.v[0].lock);
	recipe_jobs_free(&jobs);

	/* Its plan: one slot of the semaphore reboot, then the note, the
	 * command and the wait, both guarded by reboot-required; the wait ends
	 * when agentd stops. */
	assert_int_equal(recipes_build_plan(&ctx, "reboot", &p, &e), 0);
	assert_int_equal(p.gate.kind, PLAN_GATE_SEMAPHORE);
	assert_string_equal(p.gate.name, "reboot");
	assert_int_equal(p.gate.slots, 1);
	assert_false(p.gate.keep_on_failure);
	assert_int_equal(p.n_steps, 3);
	assert_string_equal(p.steps[0]->ops->kind, "note");
	assert_string_equal(p.steps[1]->ops->kind, "exec");
	assert_string_equal(p.steps[1]->only_if_exists, "/var/run/reboot-required");
	assert_string_equal(p.steps[2]->only_if_exists, "/var/run/reboot-required");
	assert_false(p.steps[1]->stop_cancels);
	assert_true(p.steps[2]->stop_cancels);
	plan_free(&p);

	/* Default time 02:00; automatic_reboot false: no job. */
	stack_unref(s);
	assert_int_equal(load("{\"unattended_upgrades\": {\"automatic_reboot\": true}}", &s, &err), 0);
	recipes_jobs(s, &c, &jobs);
	assert_int_equal(jobs.n, 1);
	assert_string_equal(jobs.v[0].schedule, "0 2 * * *");
	recipe_jobs_free(&jobs);
	stack_unref(s);
	assert_int_equal(load("{\"unattended_upgrades\": {\"automatic_reboot\": false}}", &s, &err), 0);
	recipes_jobs(s, &c, &jobs);
	assert_int_equal(jobs.n, 0);
	recipe_jobs_free(&jobs);
	config_free(&c);
	stack_unref(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_logrotate_files),
		cmocka_unit_test(test_quiet_and_removals),
		cmocka_unit_test(test_apt_files),
		cmocka_unit_test(test_validation),
		cmocka_unit_test(test_reboot_job),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}

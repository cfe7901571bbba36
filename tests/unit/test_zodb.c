/* SPDX-License-Identifier: BSD-2-Clause */
/* Unit tests of the ZODB maintenance jobs (agent/recipes/zodb.c, design.md
 * §8.1): which jobs an instance declares (zeoserver, RelStorage with and
 * without etcd), their validation with JSON paths, deploy.cfg without the
 * buildout cron parts, and the job plans executed for real under a
 * temporary root: stand-in scripts record their argv, uid and working
 * directory; the backup after a pack is full; a missing script fails
 * naming its path. */
#include <errno.h>
#include <ftw.h>
#include <grp.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "config.h"
#include "recipes/apps.h"
#include "recipes/recipe.h"
#include "stack/stack.h"
#include "steps/plan.h"
#include "util.h"

/* Single quotes to double quotes. */

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

/* rm -rf of a test's temporary root, without a shell. */
static void rm_tree(const char *dir)
{
	(void)nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static char *sq(const char *s)
{
	char *d = xstrdup(s);

	for (char *p = d; *p; p++)
		if (*p == '\'')
			*p = '"';
	return d;
}

static const char *me(void)
{
	return getpwuid(getuid())->pw_name;
}

static const char *my_group(void)
{
	return getgrgid(getgid())->gr_name;
}

/* A stack: layers zeoserver (zeo1), plone_instances (app1, app2) and
 * db_packing (app2); apps zeoserver and plone_instances run by this user;
 * top holds the Plone sections ("'plone_zeoserver': {...}, "). */
static int load_as(const char *instance, const char *top, struct stack **s, struct stack_error *err)
{
	_cleanup_free_ char *t = xasprintf(
		"{%s'opsworks': {'stack': {'name': 's'}, 'layers': {"
		"  'zeoserver': {'instances': {'zeo1': {'private_ip': '10.0.0.9', 'status': 'online'}}},"
		"  'plone_instances': {'instances': {'app1': {'private_ip': '10.0.0.1', 'status': 'online'},"
		"                                    'app2': {'private_ip': '10.0.0.2', 'status': 'online'}}},"
		"  'db_packing': {'instances': {'app2': {'private_ip': '10.0.0.2', 'status': 'online'}}}}},"
		" 'deploy': {'zeoserver': {'user': '%s', 'group': '%s'},"
		"            'plone_instances': {'user': '%s', 'group': '%s'}}}",
		top, me(), my_group(), me(), my_group());
	_cleanup_free_ char *d = sq(t);

	return recipes_stack_load(d, strlen(d), instance, s, err);
}

static struct stack *load_ok(const char *instance, const char *top)
{
	struct stack_error err = { 0 };
	struct stack *s = NULL;

	if (load_as(instance, top, &s, &err) < 0)
		fail_msg("%s: %s", err.path, err.message);
	return s;
}

static void refused(const char *top, const char *path, const char *words)
{
	struct stack_error err = { 0 };
	struct stack *s = NULL;

	assert_int_equal(load_as("zeo1", top, &s, &err), -EINVAL);
	assert_null(s);
	if (strcmp(err.path, path) != 0 || !strstr(err.message, words))
		fail_msg("got %s: %s; wanted %s: ...%s...", err.path, err.message, path, words);
}

/* "name schedule lock|-" of each job, one per line. */
static char *jobs_of(struct stack *s, const char *source)
{
	struct config c;
	struct recipe_jobs j;
	struct buf b;

	config_defaults(&c);
	if (source) {
		free(c.source);
		c.source = xstrdup(source);
	}
	recipes_jobs(s, &c, &j);
	buf_init(&b);
	for (size_t i = 0; i < j.n; i++)
		buf_printf(&b, "%s %s %s %ld %s\n", j.v[i].name, j.v[i].schedule, j.v[i].lock ? j.v[i].lock : "-",
			   j.v[i].splay, j.v[i].source ? j.v[i].source : "-");
	recipe_jobs_free(&j);
	config_free(&c);
	return b.data ? buf_steal(&b) : xstrdup("");
}

static void jobs_are(const char *instance, const char *top, const char *source, const char *want)
{
	struct stack *s = load_ok(instance, top);
	_cleanup_free_ char *got = jobs_of(s, source);

	if (strcmp(got, want) != 0)
		fail_msg("%s with %s: got\n%s\nwanted\n%s", instance, top, got, want);
	stack_unref(s);
}

#define ETCD "etcd://127.0.0.1:2379/agentd/s"

static void test_zeoserver_jobs(void **state)
{
	/* Defaults: the pack (enable_pack defaults to true), no backup. */
	jobs_are("zeo1", "", NULL, "zeopack 0 1 * * 7 - 0 plone_zeoserver.pack\n");
	jobs_are("zeo1", "'plone_zeoserver': {'enable_backup': true, 'pack': {'schedule': '30 2 * * 0', 'days': 3, "
			 "'splay': 60}, 'backup': {'splay': 5}}, ",
		 NULL,
		 "zeopack 30 2 * * 0 - 60 plone_zeoserver.pack\nbackup 0 21 * * * - 5 plone_zeoserver.backup\n");
	jobs_are("zeo1", "'plone_zeoserver': {'enable_pack': false, 'enable_backup': true}, ", ETCD,
		 "backup 0 21 * * * - 0 plone_zeoserver.backup\n");
	/* Only on an instance that runs the zeoserver recipes. */
	jobs_are("app1", "'plone_zeoserver': {'enable_backup': true}, ", NULL, "");
	/* ...also through agent.layers, and with another app name. */
	jobs_are("app1",
		 "'plone_zeoserver': {'app_name': 'plone_instances'}, "
		 "'agent': {'layers': {'plone_instances': {'undeploy': ['plone_buildout::zeoserver-undeploy']}}}, ",
		 NULL, "zeopack 0 1 * * 7 - 0 plone_zeoserver.pack\n");
	/* No app, no job. */
	jobs_are("zeo1", "'plone_zeoserver': {'app_name': 'zeo'}, ", NULL, "");
}

static void test_relstorage_jobs(void **state)
{
	static const char rs[] = "'plone_instances': {'enable_relstorage': true, 'relstorage': {%s}}, ";
	_cleanup_free_ char *plain = xasprintf(rs, "'pack_days': 3");
	_cleanup_free_ char *two = xasprintf(rs, "'two_stage_pack': true, 'pack': {'days': 2}");
	_cleanup_free_ char *custom = xasprintf(rs, "'pack': {'two_stage': true, 'schedule': '0 4 * * 1', "
						    "'prepack_schedule': '0 3 * * 1', 'splay': 30}");
	struct stack *s;
	struct config c;
	struct recipe_ctx ctx;
	struct plan p;
	char *error = NULL;

	/* Without etcd: the db_packing member alone. */
	jobs_are("app1", plain, NULL, "");
	jobs_are("app2", plain, NULL, "zodbpack 0 23 * * 7 - 0 plone_instances.relstorage.pack\n");
	/* With etcd: every instance of the app, under the lock pack-<app>. */
	jobs_are("app1", plain, ETCD, "zodbpack 0 23 * * 7 pack-plone_instances 0 plone_instances.relstorage.pack\n");
	jobs_are("app2", plain, "etcd+https://e:2379/p",
		 "zodbpack 0 23 * * 7 pack-plone_instances 0 plone_instances.relstorage.pack\n");
	jobs_are("zeo1", plain, ETCD, "zeopack 0 1 * * 7 - 0 plone_zeoserver.pack\n");
	/* Two stages: prepack Saturday, pack Sunday (reference §9). */
	jobs_are("app2", two, NULL,
		 "zodbpack-prepack 0 23 * * 6 - 0 plone_instances.relstorage.pack\n"
		 "zodbpack-pack 0 23 * * 7 - 0 plone_instances.relstorage.pack\n");
	jobs_are("app1", custom, ETCD,
		 "zodbpack-prepack 0 3 * * 1 pack-plone_instances 30 plone_instances.relstorage.pack\n"
		 "zodbpack-pack 0 4 * * 1 pack-plone_instances 30 plone_instances.relstorage.pack\n");
	/* Packing off: no RelStorage, or no db_packing layer nor enable_pack. */
	jobs_are("app2", "'plone_instances': {'relstorage': {'enable_pack': true}}, ", ETCD, "");
	jobs_are("app1",
		 "'plone_instances': {'enable_relstorage': true}, 'agent': {'layers': {'db_packing': {'setup': []}}}, ",
		 ETCD, "");
	jobs_are("app1", "'plone_instances': {'enable_relstorage': true, 'relstorage': {'enable_pack': true}}, "
			 "'agent': {'layers': {'db_packing': {'setup': []}}}, ",
		 ETCD, "zodbpack 0 23 * * 7 pack-plone_instances 0 plone_instances.relstorage.pack\n");

	/* The plan's gate is the job's lock, and its job for PREFIX/jobs/<job>. */
	s = load_ok("app1", plain);
	config_defaults(&c);
	free(c.source);
	c.source = xstrdup(ETCD);
	ctx = (struct recipe_ctx){ .stack = s, .config = &c, .event = EVENT_MAINTENANCE, .run_id = 1 };
	assert_int_equal(recipes_build_plan(&ctx, "zodbpack", &p, &error), 0);
	assert_int_equal(p.gate.kind, PLAN_GATE_MUTEX);
	assert_string_equal(p.gate.name, "pack-plone_instances");
	assert_string_equal(p.gate.job, "zodbpack");
	assert_false(p.gate.keep_on_failure);
	plan_free(&p);
	/* A job this instance does not have is refused, naming its jobs. */
	assert_int_equal(recipes_build_plan(&ctx, "zeopack", &p, &error), -ENOENT);
	assert_non_null(strstr(error, "(zodbpack)"));
	free(error);
	plan_free(&p);
	config_free(&c);
	stack_unref(s);
}

static void test_validation(void **state)
{
	refused("'plone_zeoserver': {'enable_pack': 'yes'}, ", "$.plone_zeoserver.enable_pack", "must be a boolean");
	refused("'plone_zeoserver': {'enable_backup': 1}, ", "$.plone_zeoserver.enable_backup", "must be a boolean");
	refused("'plone_zeoserver': {'pack': 7}, ", "$.plone_zeoserver.pack", "must be an object");
	refused("'plone_zeoserver': {'pack': {'schedule': '0 1 * *'}}, ", "$.plone_zeoserver.pack.schedule",
		"5-field cron");
	refused("'plone_zeoserver': {'pack': {'days': -1}}, ", "$.plone_zeoserver.pack.days", "between 0 and 36500");
	refused("'plone_zeoserver': {'pack': {'days': 1.5}}, ", "$.plone_zeoserver.pack.days", "integer");
	refused("'plone_zeoserver': {'pack': {'dayz': 1}}, ", "$.plone_zeoserver.pack", "unknown key \"dayz\"");
	refused("'plone_zeoserver': {'backup': {'days': 1}}, ", "$.plone_zeoserver.backup", "unknown key \"days\"");
	refused("'plone_zeoserver': {'backup': {'schedule': 5}}, ", "$.plone_zeoserver.backup.schedule",
		"must be a string");
	refused("'plone_zeoserver': {'backup': {'splay': 86401}}, ", "$.plone_zeoserver.backup.splay", "between 0");
	refused("'plone_instances': {'relstorage': {'enable_pack': 'true'}}, ",
		"$.plone_instances.relstorage.enable_pack", "must be a boolean");
	refused("'plone_instances': {'relstorage': {'two_stage_pack': 1}}, ",
		"$.plone_instances.relstorage.two_stage_pack", "must be a boolean");
	refused("'plone_instances': {'relstorage': {'pack': {'two_stage': 'no'}}}, ",
		"$.plone_instances.relstorage.pack.two_stage", "must be a boolean");
	refused("'plone_instances': {'relstorage': {'pack': {'prepack_schedule': 'weekly'}}}, ",
		"$.plone_instances.relstorage.pack.prepack_schedule", "5-field cron");
	refused("'plone_instances': {'relstorage': {'pack': {'days': 100000}}}, ",
		"$.plone_instances.relstorage.pack.days", "between 0 and 36500");
	refused("'plone_instances': {'relstorage': {'pack': {'when': 1}}}, ", "$.plone_instances.relstorage.pack",
		"unknown key \"when\"");
	/* What is accepted. */
	stack_unref(load_ok("zeo1", "'plone_zeoserver': {'enable_pack': true, 'enable_backup': false, 'pack': "
				    "{'schedule': '0 1 * * 7', 'days': 0, 'splay': 0}, 'backup': {'schedule': "
				    "'0 21 * * *'}}, 'plone_instances': {'relstorage': {'pack': {'schedule': "
				    "'0 23 * * 7', 'prepack_schedule': '0 23 * * 6', 'days': 7, 'two_stage': true, "
				    "'splay': 10}, 'enable_pack': null}}, "));
}

static void test_deploy_cfg(void **state)
{
	struct stack *s = load_ok("zeo1", "'plone_zeoserver': {'enable_backup': true, 'enable_pack': true}, ");
	char *cfg = apps_render_deploy_cfg(s, APP_ZEOSERVER, stack_app_find(s, "zeoserver"), "/srv/www/zeoserver");

	/* bin/backup is still made; the cron parts are agentd's jobs now. */
	assert_non_null(strstr(cfg, "parts +=\n    zeoserver\n    backup\n\n"));
	assert_null(strstr(cfg, "cronjob"));
	free(cfg);
	stack_unref(s);

	/* RelStorage packed through db_packing: pack-config writes
	 * parts/zodbpack.cfg, the zodbpack* cron parts are left out. */
	s = load_ok("app2", "'plone_instances': {'enable_relstorage': true, 'instance_count': 1, 'relstorage': "
			    "{'two_stage_pack': true, 'pack_days': 4}}, ");
	cfg = apps_render_deploy_cfg(s, APP_INSTANCES, stack_app_find(s, "plone_instances"), "/srv/www/p");
	if (!strstr(cfg, "parts +=\n    client1\n    pack-config\neggs"))
		fail_msg("%s", cfg);
	assert_null(strstr(cfg, "    zodbpack"));
	free(cfg);
	stack_unref(s);
}

/* --- the plans, executed --- */

struct run {
	char root[64];
	uv_loop_t loop;
	struct plan_exec *x;
	bool failed;
};

static void cb_done(void *userdata, bool failed)
{
	((struct run *)userdata)->failed = failed;
}

static const struct plan_exec_cbs cbs = { .on_done = cb_done };

/* Plans job on instance for stack s under root, executes it; returns
 * whether it failed, *ret_plan the executed plan (plan_free it). */
static bool run_job(struct run *r, struct stack *s, const char *job, struct plan *ret_plan)
{
	struct config c;
	struct recipe_ctx ctx;
	struct step_env env = { .root = r->root, .run_id = 7, .output_max = 4096 };
	char *error = NULL;

	config_defaults(&c);
	free(c.root);
	c.root = xstrdup(r->root);
	ctx = (struct recipe_ctx){ .stack = s, .config = &c, .event = EVENT_MAINTENANCE, .run_id = 7 };
	if (recipes_build_plan(&ctx, job, ret_plan, &error) < 0)
		fail_msg("%s: %s", job, error);
	ret_plan->root = r->root;
	config_free(&c);
	assert_int_equal(uv_loop_init(&r->loop), 0);
	env.loop = &r->loop;
	r->failed = false;
	assert_int_equal(plan_execute(&r->loop, ret_plan, &env, &cbs, r, &r->x), 0);
	assert_int_equal(uv_run(&r->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&r->loop), 0);
	return r->failed;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(path, mode), 0);
}

static char *path_of(const struct run *r, const char *rel)
{
	return xasprintf("%s/%s", r->root, rel);
}

/* The release of app under root: releases/r1 with the stand-in scripts
 * (each appends "<name> <args> | <uid> <cwd>" to <deploy_to>/calls), current
 * -> releases/r1, shared/. */
static void release(struct run *r, const char *app, const char *const *scripts)
{
	_cleanup_free_ char *base = xasprintf("%s/srv/www/%s", r->root, app);
	_cleanup_free_ char *bin = xasprintf("%s/releases/r1/bin", base), *parts = xasprintf("%s/releases/r1/parts", base);
	_cleanup_free_ char *shared = xasprintf("%s/shared", base);
	_cleanup_free_ char *cur = xasprintf("%s/current", base);

	assert_int_equal(mkdir_p(bin, 0755), 0);
	assert_int_equal(mkdir_p(parts, 0755), 0);
	assert_int_equal(mkdir_p(shared, 0755), 0);
	for (; *scripts; scripts++) {
		_cleanup_free_ char *p = xasprintf("%s/releases/r1/%s", base, *scripts);
		_cleanup_free_ char *t = xasprintf("#!/bin/sh\necho \"%s $* | $(id -u) $(pwd -P)\" >> %s/calls\n",
						   *scripts, base);
		write_file(p, t, 0755);
	}
	(void)symlink("releases/r1", cur);
}

/* The calls recorded for app since the last look, then forgotten. */
static char *calls(const struct run *r, const char *app)
{
	_cleanup_free_ char *p = xasprintf("%s/srv/www/%s/calls", r->root, app);
	char *data = NULL;

	if (file_read_regular(AT_FDCWD, p, 0, 65536, &data, NULL) < 0)
		return xstrdup("");
	(void)unlink(p);
	return data;
}

static void calls_are(const struct run *r, const char *app, const char *want_fmt)
{
	_cleanup_free_ char *got = calls(r, app);
	_cleanup_free_ char *want = NULL;
	_cleanup_free_ char *cur = xasprintf("%s/srv/www/%s/releases/r1", r->root, app);
	struct buf w;

	/* want_fmt: lines of "<call>", each completed with " | <uid> <cwd>". */
	buf_init(&w);
	for (const char *line = want_fmt, *nl; *line; line = nl + 1) {
		nl = strchr(line, '\n');
		buf_printf(&w, "%.*s | %u %s\n", (int)(nl - line), line, (unsigned)getuid(), cur);
	}
	want = w.data ? buf_steal(&w) : xstrdup("");
	if (strcmp(got, want) != 0)
		fail_msg("got\n%s\nwanted\n%s", got, want);
}

static bool exists(const struct run *r, const char *rel)
{
	_cleanup_free_ char *p = path_of(r, rel);
	struct stat st;

	return lstat(p, &st) == 0;
}

static void run_ok(struct run *r, struct stack *s, const char *job)
{
	struct plan p;

	if (run_job(r, s, job, &p)) {
		for (size_t i = 0; i < p.n_steps; i++)
			if (p.steps[i]->error)
				fail_msg("%s: step %s: %s", job, p.steps[i]->target, p.steps[i]->error);
		fail_msg("%s failed", job);
	}
	plan_free(&p);
}

static void test_zeopack_then_full_backup(void **state)
{
	struct run r = { 0 };
	struct stack *s = load_ok("zeo1", "'plone_zeoserver': {'enable_backup': true, 'pack': {'days': 3}}, ");
	const char *marker = "srv/www/zeoserver/shared/agentd-packed";
	_cleanup_free_ char *full = NULL;
	struct plan p;

	snprintf(r.root, sizeof(r.root), "%s", "/tmp/agentd-zodb-XXXXXX");
	assert_non_null(mkdtemp(r.root));
	release(&r, "zeoserver", (const char *const[]){ "bin/zeopack", "bin/backup", NULL });

	/* A backup with no pack before it is incremental. */
	run_ok(&r, s, "backup");
	calls_are(&r, "zeoserver", "bin/backup \n");
	/* The pack, as the app user in current; then the marker. */
	run_ok(&r, s, "zeopack");
	calls_are(&r, "zeoserver", "bin/zeopack -d 3\n");
	assert_true(exists(&r, marker));
	/* The next backup is full (no bin/fullbackup: bin/backup -F), the one after not. */
	run_ok(&r, s, "backup");
	calls_are(&r, "zeoserver", "bin/backup -F\n");
	assert_false(exists(&r, marker));
	run_ok(&r, s, "backup");
	calls_are(&r, "zeoserver", "bin/backup \n");

	/* With bin/fullbackup (collective.recipe.backup), that one. */
	full = path_of(&r, "srv/www/zeoserver/releases/r1/bin/fullbackup");
	write_file(full, "#!/bin/sh\necho \"bin/fullbackup $* | $(id -u) $(pwd -P)\" >> ../../calls\n", 0755);
	run_ok(&r, s, "zeopack");
	run_ok(&r, s, "backup");
	calls_are(&r, "zeoserver", "bin/zeopack -d 3\nbin/fullbackup \n");
	run_ok(&r, s, "backup");
	calls_are(&r, "zeoserver", "bin/backup \n");

	/* A failed full backup keeps the marker: the next one is full again. */
	run_ok(&r, s, "zeopack");
	write_file(full, "#!/bin/sh\necho \"bin/fullbackup $* | $(id -u) $(pwd -P)\" >> ../../calls\nexit 3\n", 0755);
	assert_true(run_job(&r, s, "backup", &p));
	plan_free(&p);
	assert_true(exists(&r, marker));
	(void)unlink(full);
	run_ok(&r, s, "backup");
	calls_are(&r, "zeoserver", "bin/zeopack -d 3\nbin/fullbackup \nbin/backup -F\n");

	rm_tree(r.root);
	stack_unref(s);
}

static void test_zodbpack_argv_and_missing_script(void **state)
{
	struct run r = { 0 };
	struct stack *s = load_ok("app2", "'plone_instances': {'enable_relstorage': true, 'relstorage': "
					  "{'pack': {'days': 5}}}, ");
	struct stack *two = load_ok("app2", "'plone_instances': {'enable_relstorage': true, 'relstorage': "
					    "{'two_stage_pack': true, 'pack_days': 2}}, ");
	_cleanup_free_ char *cfg = NULL;
	struct plan p;
	bool named = false;

	snprintf(r.root, sizeof(r.root), "%s", "/tmp/agentd-zodb-XXXXXX");
	assert_non_null(mkdtemp(r.root));
	/* Before the app is deployed: the run fails naming the script. */
	assert_true(run_job(&r, s, "zodbpack", &p));
	for (size_t i = 0; i < p.n_steps; i++)
		if (p.steps[i]->error &&
		    strstr(p.steps[i]->error, "/srv/www/plone_instances/current/bin/zodbpack does not exist"))
			named = true;
	assert_true(named);
	{
		/* A dry run says so too: action "fail" with the same words. */
		struct step_env env = { .root = r.root };
		json_t *d = plan_describe(&p, &env), *st = json_array_get(json_object_get(d, "steps"), 0);

		assert_string_equal(json_string_value(json_object_get(st, "kind")), "require");
		assert_string_equal(json_string_value(json_object_get(st, "action")), "fail");
		assert_non_null(strstr(json_string_value(json_object_get(st, "error")), "current/bin/zodbpack does not exist"));
		json_decref(d);
	}
	plan_free(&p);

	release(&r, "plone_instances", (const char *const[]){ "bin/zodbpack", NULL });
	cfg = path_of(&r, "srv/www/plone_instances/releases/r1/parts/zodbpack.cfg");
	write_file(cfg, "<relstorage>\n</relstorage>\n", 0644);
	run_ok(&r, s, "zodbpack");
	calls_are(&r, "plone_instances", "bin/zodbpack -d 5 parts/zodbpack.cfg\n");
	run_ok(&r, two, "zodbpack-prepack");
	run_ok(&r, two, "zodbpack-pack");
	calls_are(&r, "plone_instances", "bin/zodbpack -d 2 --prepack parts/zodbpack.cfg\n"
					 "bin/zodbpack -d 2 --use-prepack-state parts/zodbpack.cfg\n");
	rm_tree(r.root);
	stack_unref(s);
	stack_unref(two);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_zeoserver_jobs),
		cmocka_unit_test(test_relstorage_jobs),
		cmocka_unit_test(test_validation),
		cmocka_unit_test(test_deploy_cfg),
		cmocka_unit_test(test_zeopack_then_full_backup),
		cmocka_unit_test(test_zodbpack_argv_and_missing_script),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

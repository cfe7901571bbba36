/* SPDX-License-Identifier: BSD-2-Clause */
/* The rollback step (steps/step_rollback.c) and the apps family's rollback
 * plan (recipes/apps_rollback.c) against a temporary root: the switch, the
 * refusals with nothing changed, the dry run, and the plan's steps. The
 * deploy_to is given to an unprivileged uid, as the app user's is in
 * production, so that the rootfs rules treat it as shared. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "recipes/apps.h"
#include "stack/stack.h"
#include "steps/plan.h"
#include "steps/step_rollback.h"
#include "util.h"

#define APP_UID 65534
#define DEPLOY_TO "/srv/www/shop"

struct ctx {
	char root[64];
	char *dt; /* owned: DEPLOY_TO under root */
	uv_loop_t loop;
	int n_done;
	bool failed;
};

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

static int setup(void **state)
{
	struct ctx *c = xcalloc(1, sizeof(*c));

	snprintf(c->root, sizeof(c->root), "/tmp/test_rollback.XXXXXX");
	assert_non_null(mkdtemp(c->root));
	c->dt = xasprintf("%s%s", c->root, DEPLOY_TO);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	(void)nftw(c->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(c->dt);
	free(c);
	return 0;
}

/* A path below deploy_to; "" is deploy_to itself. */
static char *D(struct ctx *c, const char *rel)
{
	return xasprintf("%s%s%s", c->dt, *rel ? "/" : "", rel);
}

static void chown_app(struct ctx *c, const char *rel)
{
	_cleanup_free_ char *p = D(c, rel);

	assert_int_equal(lchown(p, APP_UID, APP_UID), 0);
}

/* deploy_to with releases/<names...> (NULL-terminated) and current ->
 * link (none when NULL), all the app user's. */
static void make_releases(struct ctx *c, const char *link, ...)
{
	_cleanup_free_ char *rels = D(c, "releases"), *cur = D(c, "current");
	const char *name;
	va_list ap;

	assert_int_equal(mkdir_p(rels, 0755), 0);
	chown_app(c, "");
	chown_app(c, "releases");
	va_start(ap, link);
	while ((name = va_arg(ap, const char *))) {
		_cleanup_free_ char *p = xasprintf("%s/%s", rels, name);
		_cleanup_free_ char *rel = xasprintf("releases/%s", name);

		assert_int_equal(mkdir(p, 0755), 0);
		chown_app(c, rel);
	}
	va_end(ap);
	if (link) {
		assert_int_equal(symlink(link, cur), 0);
		chown_app(c, "current");
	}
}

/* current's text, or "" when it is not a link. */
static char *current(struct ctx *c)
{
	_cleanup_free_ char *cur = D(c, "current");
	char buf[4096];
	ssize_t n = readlink(cur, buf, sizeof(buf) - 1);

	return xstrdup(n < 0 ? "" : (buf[n] = '\0', buf));
}

static void assert_current(struct ctx *c, const char *want)
{
	_cleanup_free_ char *got = current(c);

	assert_string_equal(got, want);
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The entries of deploy_to, sorted, each followed by a space: what a
 * refused or dry-run rollback must leave as it was (no temporary link
 * left behind either). */
static char *listing(struct ctx *c)
{
	DIR *d = opendir(c->dt);
	char **names = NULL;
	size_t n = 0;
	struct dirent *de;
	struct buf b;

	assert_non_null(d);
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
			names = xrealloc(names, (n + 1) * sizeof(char *));
			names[n++] = xstrdup(de->d_name);
		}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(char *), name_cmp);
	buf_init(&b);
	for (size_t i = 0; i < n; i++) {
		buf_printf(&b, "%s ", names[i]);
		free(names[i]);
	}
	free(names);
	return buf_steal(&b);
}

static void cb_done(void *userdata, bool failed)
{
	struct ctx *c = userdata;

	c->n_done++;
	c->failed = failed;
}

static const struct plan_exec_cbs cbs = { .on_done = cb_done };

static void run_plan(struct ctx *c, struct plan *p)
{
	struct step_env env = { .root = c->root, .run_id = 1, .output_max = 4096 };

	c->n_done = 0;
	c->failed = false;
	assert_int_equal(uv_loop_init(&c->loop), 0);
	env.loop = &c->loop;
	struct plan_exec *x;
	assert_int_equal(plan_execute(&c->loop, p, &env, &cbs, c, &x), 0);
	assert_int_equal(uv_run(&c->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(c->n_done, 1);
	assert_int_equal(uv_loop_close(&c->loop), 0);
}

/* One rollback step on its own: its status, and its error (or NULL). */
static enum step_status rollback_once(struct ctx *c, char **ret_error)
{
	struct plan p;
	char *err = NULL;
	enum step_status st;

	plan_init(&p, c->root);
	assert_non_null(plan_add_rollback(&p, "shop", DEPLOY_TO, &err));
	run_plan(c, &p);
	st = p.steps[0]->status;
	*ret_error = p.steps[0]->error ? xstrdup(p.steps[0]->error) : NULL;
	plan_free(&p);
	return st;
}

/* rollback_preview must fail with r and a message containing each of the
 * NULL-terminated words; the step must fail with the same message and
 * leave deploy_to as it was. */
static void assert_refused(struct ctx *c, int r, ...)
{
	_cleanup_free_ char *from = NULL, *to = NULL, *err = NULL, *serr = NULL;
	_cleanup_free_ char *before = listing(c), *cur = current(c), *after = NULL;
	const char *w;
	va_list ap;

	assert_int_equal(rollback_preview_app(c->root, "shop", DEPLOY_TO, &from, &to, &err), r);
	assert_non_null(err);
	assert_null(from);
	assert_null(to);
	va_start(ap, r);
	while ((w = va_arg(ap, const char *)))
		if (!strstr(err, w))
			fail_msg("\"%s\" not in \"%s\"", w, err);
	va_end(ap);
	assert_int_equal(rollback_once(c, &serr), STEP_FAILED);
	assert_true(c->failed);
	assert_string_equal(serr, err);
	after = listing(c);
	assert_string_equal(after, before);
	assert_current(c, cur);
}

static void test_switch(void **state)
{
	struct ctx *c = *state;
	_cleanup_free_ char *from = NULL, *to = NULL, *err = NULL, *err2 = NULL, *err3 = NULL;
	struct plan p;

	make_releases(c, "releases/20261103000000", "20261101000000", "20261102000000", "20261103000000", NULL);
	assert_int_equal(rollback_preview(c->root, DEPLOY_TO, &from, &to, &err), 0);
	assert_null(err);
	assert_string_equal(from, "20261103000000");
	assert_string_equal(to, "20261102000000");
	assert_current(c, "releases/20261103000000");

	plan_init(&p, c->root);
	struct step *s = plan_add_rollback(&p, "shop", DEPLOY_TO, &err);
	assert_non_null(s);
	assert_string_equal(s->ops->kind, "rollback");
	assert_string_equal(s->target, DEPLOY_TO "/current");
	run_plan(c, &p);
	assert_false(c->failed);
	assert_int_equal(s->status, STEP_CHANGED);
	assert_current(c, "releases/20261102000000");
	/* The link is made under a temporary name: none is left. */
	_cleanup_free_ char *ls = listing(c);
	assert_string_equal(ls, "current releases ");
	/* The same step again does not go back further: it has done its work. */
	run_plan(c, &p);
	assert_false(c->failed);
	assert_int_equal(s->status, STEP_UNCHANGED);
	assert_current(c, "releases/20261102000000");
	plan_free(&p);

	/* A new rollback goes back one more, as a second `agentctl rollback` does. */
	assert_int_equal(rollback_once(c, &err2), STEP_CHANGED);
	assert_null(err2);
	assert_current(c, "releases/20261101000000");
	assert_int_equal(rollback_once(c, &err3), STEP_FAILED);
	assert_string_equal(err3, "shop has no release before 20261101000000");
	assert_current(c, "releases/20261101000000");
}

static void test_stale_temporary_names(void **state)
{
	struct ctx *c = *state;
	_cleanup_free_ char *err = NULL, *planted = D(c, ".current.rollback.1");

	/* Temporary names the user planted (a directory, a link) neither
	 * steer nor block the switch. */
	make_releases(c, "releases/2", "1", "2", NULL);
	assert_int_equal(mkdir(planted, 0755), 0);
	assert_int_equal(rollback_once(c, &err), STEP_CHANGED);
	assert_current(c, "releases/1");
}

static void test_no_previous_release(void **state)
{
	struct ctx *c = *state;

	make_releases(c, "releases/20261101000000", "20261101000000", "20261102000000", NULL);
	assert_refused(c, -ENOENT, "shop has no release before 20261101000000", NULL);
	/* current names a release that is not there: nothing sorts before it
	 * either, by the listing. */
	_cleanup_free_ char *cur = D(c, "current");
	assert_int_equal(unlink(cur), 0);
	assert_int_equal(symlink("releases/20261109000000", cur), 0);
	assert_refused(c, -ENOENT, "shop has no release before 20261109000000", NULL);
	/* No release at all. */
	_cleanup_free_ char *r1 = D(c, "releases/20261101000000"), *r2 = D(c, "releases/20261102000000");
	assert_int_equal(rmdir(r1), 0);
	assert_int_equal(rmdir(r2), 0);
	assert_refused(c, -ENOENT, "shop has no release before 20261109000000", NULL);
}

static void test_no_releases_directory(void **state)
{
	struct ctx *c = *state;

	assert_int_equal(mkdir_p(c->dt, 0755), 0);
	assert_refused(c, -ENOENT, "shop has no releases directory under " DEPLOY_TO, NULL);
	/* No deploy_to at all. */
	assert_int_equal(rmdir(c->dt), 0);
	_cleanup_free_ char *from = NULL, *to = NULL, *err = NULL;
	assert_int_equal(rollback_preview_app(c->root, "shop", DEPLOY_TO, &from, &to, &err), -ENOENT);
	assert_string_equal(err, "shop has no releases directory under " DEPLOY_TO);
}

static void test_current_not_a_link(void **state)
{
	struct ctx *c = *state;
	_cleanup_free_ char *cur = D(c, "current");

	make_releases(c, NULL, "1", "2", NULL);
	assert_refused(c, -ENOENT, "shop has no current release (" DEPLOY_TO "/current is not a symlink)", NULL);
	assert_int_equal(mkdir(cur, 0755), 0);
	assert_refused(c, -ENOENT, "shop has no current release (" DEPLOY_TO "/current is not a symlink)", NULL);
	assert_int_equal(rmdir(cur), 0);
	assert_int_equal(close(open(cur, O_CREAT | O_WRONLY | O_CLOEXEC, 0644)), 0);
	assert_refused(c, -ENOENT, "is not a symlink", NULL);
}

static void test_current_outside_releases(void **state)
{
	struct ctx *c = *state;
	static const char *const targets[] = {
		"/etc/sudoers.d", "releases/../../../etc", "releases/2/..", "releases/", "releases/.", "releases/..",
		"other/2", "2", "./releases/2",
	};
	_cleanup_free_ char *cur = D(c, "current");

	make_releases(c, "releases/2", "1", "2", NULL);
	for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
		_cleanup_free_ char *want = xasprintf("refusing to roll back shop: " DEPLOY_TO "/current points to "
						      "\"%s\", not to releases/<name>",
						      targets[i]);

		assert_int_equal(unlink(cur), 0);
		assert_int_equal(symlink(targets[i], cur), 0);
		assert_refused(c, -EINVAL, want, NULL);
	}
}

static void test_previous_is_a_symlink(void **state)
{
	struct ctx *c = *state;
	_cleanup_free_ char *prev = D(c, "releases/1");

	/* The user plants a link under the previous release's name. */
	make_releases(c, "releases/2", "2", NULL);
	assert_int_equal(symlink("/etc", prev), 0);
	chown_app(c, "releases/1");
	assert_refused(c, -ELOOP, "refusing to roll back shop to 1: ", "symlink", NULL);
	/* A file is not a release either. */
	assert_int_equal(unlink(prev), 0);
	assert_int_equal(close(open(prev, O_CREAT | O_WRONLY | O_CLOEXEC, 0644)), 0);
	assert_refused(c, -ENOENT, "refusing to roll back shop to 1: ", NULL);
}

static void test_names_are_escaped(void **state)
{
	struct ctx *c = *state;
	_cleanup_free_ char *from = NULL, *to = NULL, *err = NULL, *cur = D(c, "current");

	make_releases(c, "releases/2\nforged\x1b", "1\tx", "2\nforged\x1b", NULL);
	assert_int_equal(rollback_preview_app(c->root, "shop", DEPLOY_TO, &from, &to, &err), 0);
	assert_string_equal(from, "2\\nforged\\e");
	assert_string_equal(to, "1\\tx");
	assert_int_equal(unlink(cur), 0);
	assert_int_equal(symlink("/x\n", cur), 0);
	assert_refused(c, -EINVAL, "points to \"/x\\n\"", NULL);
}

static void test_describe_changes_nothing(void **state)
{
	struct ctx *c = *state;
	struct step_env env = { .root = c->root };
	_cleanup_free_ char *err = NULL, *before = NULL, *after = NULL;
	struct plan p;

	make_releases(c, "releases/3", "1", "2", "3", NULL);
	before = listing(c);
	plan_init(&p, c->root);
	assert_non_null(plan_add_rollback(&p, "shop", DEPLOY_TO, &err));
	json_t *o = plan_describe(&p, &env);
	json_t *st = json_array_get(json_object_get(o, "steps"), 0);
	assert_string_equal(json_string_value(json_object_get(st, "kind")), "rollback");
	assert_string_equal(json_string_value(json_object_get(st, "target")), DEPLOY_TO "/current");
	assert_string_equal(json_string_value(json_object_get(st, "action")), "update");
	const char *diff = json_string_value(json_object_get(st, "diff"));
	assert_non_null(diff);
	assert_non_null(strstr(diff, "\n-releases/3\n+releases/2\n"));
	assert_null(json_object_get(st, "error"));
	json_decref(o);
	after = listing(c);
	assert_string_equal(after, before);
	assert_current(c, "releases/3");

	/* A rollback that would fail shows the error. */
	_cleanup_free_ char *curp = D(c, "current");
	assert_int_equal(unlink(curp), 0);
	assert_int_equal(symlink("releases/1", curp), 0);
	o = plan_describe(&p, &env);
	st = json_array_get(json_object_get(o, "steps"), 0);
	assert_string_equal(json_string_value(json_object_get(st, "action")), "fail");
	assert_string_equal(json_string_value(json_object_get(st, "error")), "shop has no release before 1");
	json_decref(o);
	assert_current(c, "releases/1");
	plan_free(&p);
}

static void test_bad_arguments(void **state)
{
	struct ctx *c = *state;
	char *err = NULL;
	struct plan p;

	plan_init(&p, c->root);
	assert_null(plan_add_rollback(&p, "shop", "srv/www/shop", &err));
	assert_non_null(err);
	free(err);
	err = NULL;
	assert_null(plan_add_rollback(&p, "shop", "/srv/../etc", &err));
	assert_non_null(err);
	free(err);
	assert_int_equal(p.n_steps, 0);
	plan_free(&p);
}

/* ---- the apps family's plan ---- */

static const char stack_doc[] =
	"{\"opsworks\":{\"layers\":{"
	"\"plone_instances\":{\"instances\":{\"app1\":{\"private_ip\":\"10.0.0.1\",\"status\":\"online\"}}}}},"
	"\"deploy\":{\"plone_instances\":{\"scm\":{\"scm_type\":\"git\",\"repository\":\"/r\"}},"
	"\"shop\":{}},"
	"\"plone_instances\":{\"instance_count\":2}}";

static struct stack *parse_stack(void)
{
	struct stack *s = NULL;
	struct stack_error err;

	if (stack_parse(stack_doc, strlen(stack_doc), "app1", &s, &err) < 0)
		fail_msg("stack_parse: %s: %s", err.path, err.message);
	return s;
}

static void test_apps_plan(void **state)
{
	struct ctx *c = *state;
	struct stack *s = parse_stack();
	struct config cf;
	struct plan p, restart;
	char *err = NULL;

	config_defaults(&cf);
	free(cf.root);
	cf.root = xstrdup(c->root);

	/* A Plone app: the rollback step, then the restarts of its services. */
	plan_init(&p, c->root);
	plan_init(&restart, c->root);
	assert_int_equal(apps_plan_rollback(s, &cf, "plone_instances", &p, &err), 0);
	assert_null(err);
	assert_int_equal(apps_plan_restart(s, &cf, "plone_instances", &restart, &err), 0);
	assert_true(restart.n_steps > 0);
	assert_int_equal(p.n_steps, restart.n_steps + 1);
	assert_string_equal(p.steps[0]->ops->kind, "rollback");
	assert_string_equal(p.steps[0]->target, "/srv/www/plone_instances/current");
	for (size_t i = 0; i < restart.n_steps; i++) {
		assert_ptr_equal(p.steps[i + 1]->ops, restart.steps[i]->ops);
		assert_string_equal(p.steps[i + 1]->target, restart.steps[i]->target);
		assert_string_equal(p.steps[i + 1]->recipe, restart.steps[i]->recipe);
	}
	plan_free(&p);
	plan_free(&restart);

	/* Another family's app: its link is switched, nothing restarts. */
	plan_init(&p, c->root);
	assert_int_equal(apps_plan_rollback(s, &cf, "shop", &p, &err), 0);
	assert_int_equal(p.n_steps, 1);
	assert_string_equal(p.steps[0]->ops->kind, "rollback");
	assert_string_equal(p.steps[0]->target, DEPLOY_TO "/current");
	plan_free(&p);

	/* Not in the stack. */
	plan_init(&p, c->root);
	assert_int_equal(apps_plan_rollback(s, &cf, "nosuchapp", &p, &err), -ENOENT);
	assert_string_equal(err, "app \"nosuchapp\" is not in the stack's deploy section");
	assert_int_equal(p.n_steps, 0);
	free(err);
	plan_free(&p);
	config_free(&cf);
	stack_unref(s);
}

/* The plan runs: the switch, then (for "shop") nothing else. */
static void test_apps_plan_runs(void **state)
{
	struct ctx *c = *state;
	struct stack *s = parse_stack();
	struct config cf;
	struct plan p;
	char *err = NULL;

	config_defaults(&cf);
	make_releases(c, "releases/2", "1", "2", NULL);
	plan_init(&p, c->root);
	assert_int_equal(apps_plan_rollback(s, &cf, "shop", &p, &err), 0);
	run_plan(c, &p);
	assert_false(c->failed);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	assert_current(c, "releases/1");
	plan_free(&p);
	config_free(&cf);
	stack_unref(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_switch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_temporary_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_previous_release, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_releases_directory, setup, teardown),
		cmocka_unit_test_setup_teardown(test_current_not_a_link, setup, teardown),
		cmocka_unit_test_setup_teardown(test_current_outside_releases, setup, teardown),
		cmocka_unit_test_setup_teardown(test_previous_is_a_symlink, setup, teardown),
		cmocka_unit_test_setup_teardown(test_names_are_escaped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_describe_changes_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_apps_plan, setup, teardown),
		cmocka_unit_test_setup_teardown(test_apps_plan_runs, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

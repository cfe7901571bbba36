/* SPDX-License-Identifier: BSD-2-Clause */
/* plan.c: the built-in step kinds against a temporary root, the executor on
 * a private loop (every test ends with the loop closing cleanly), guards,
 * cancel, and the dry run. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "control/control.h"
#include "io/diff.h"
#include "io/http.h"
#include "steps/plan.h"
#include "steps/step_packages.h"
#include "steps/step_service.h"
#include "steps/step_user.h"
#include "recipes/recipe.h"
#include "stack/stack.h"
#include "rootfs.h"
#include "util.h"

struct ctx {
	char root[64];
	uv_loop_t loop;
	struct plan_exec *x;

	/* What the callbacks saw. */
	int n_start, n_done_steps, n_done;
	bool failed;
	struct buf output;
	int n_changed;

	/* Input hashes, one key. */
	char *hash_key;
	uint64_t hash;
	bool has_hash;
	int n_set_hash;
	/* Owed work of guarded steps, one key. */
	char *owed_key;

	/* Cancel from a timer. */
	uv_timer_t cancel_timer;
	bool cancel_hard;
};

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

static int setup(void **state)
{
	struct ctx *c = xcalloc(1, sizeof(*c));

	snprintf(c->root, sizeof(c->root), "/tmp/test_plan.XXXXXX");
	assert_non_null(mkdtemp(c->root));
	buf_init(&c->output);
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	(void)nftw(c->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	buf_free(&c->output);
	free(c->hash_key);
	free(c->owed_key);
	free(c);
	return 0;
}

/* A plan as a caller that is not privileged sees it: plan_describe() says
 * which diffs are secret or private, the control server hides them. */
static json_t *describe_unprivileged(struct plan *p)
{
	json_t *j = plan_describe(p, NULL);

	control_plan_view(j, false);
	return j;
}

static char *P(struct ctx *c, const char *path)
{
	return xasprintf("%s%s", c->root, path);
}

static void cb_step_start(void *userdata, struct step *s, size_t index)
{
	struct ctx *c = userdata;

	assert_int_equal(s->status, STEP_PENDING);
	assert_non_null(s->env);
	c->n_start++;
}

static void cb_output(void *userdata, struct step *s, const char *data, size_t len)
{
	struct ctx *c = userdata;

	buf_append(&c->output, data, len);
}

static void cb_step_done(void *userdata, struct step *s, size_t index)
{
	struct ctx *c = userdata;

	assert_int_not_equal(s->status, STEP_PENDING);
	if (s->status == STEP_CHANGED)
		c->n_changed++;
	c->n_done_steps++;
}

static void cb_done(void *userdata, bool failed)
{
	struct ctx *c = userdata;

	c->n_done++;
	c->failed = failed;
}

static bool cb_get_hash(void *userdata, const char *key, uint64_t *ret)
{
	struct ctx *c = userdata;

	if (!c->has_hash || !c->hash_key || strcmp(key, c->hash_key) != 0)
		return false;
	*ret = c->hash;
	return true;
}

static void cb_set_hash(void *userdata, const char *key, uint64_t hash)
{
	struct ctx *c = userdata;

	free(c->hash_key);
	c->hash_key = xstrdup(key);
	c->hash = hash;
	c->has_hash = true;
	c->n_set_hash++;
}

static bool cb_owed_get(void *userdata, const char *key)
{
	struct ctx *c = userdata;

	return c->owed_key && strcmp(c->owed_key, key) == 0;
}

static void cb_owed_set(void *userdata, const char *key, bool owed)
{
	struct ctx *c = userdata;

	free(c->owed_key);
	c->owed_key = owed ? xstrdup(key) : NULL;
}

static const struct plan_exec_cbs cbs = {
	.on_step_start = cb_step_start,
	.on_output = cb_output,
	.on_step_done = cb_step_done,
	.on_done = cb_done,
};

static void on_cancel_timer(uv_timer_t *t)
{
	struct ctx *c = t->data;

	plan_execute_cancel(c->x, c->cancel_hard);
	uv_close((uv_handle_t *)t, NULL);
}

/* Executes p; cancel_after_ms >= 0 cancels after that long. */
static void run_plan_full(struct ctx *c, struct plan *p, size_t output_max, long cancel_after_ms)
{
	struct step_memory memory = { cb_get_hash, cb_set_hash, cb_owed_get, cb_owed_set, c };
	struct step_env env = { .root = c->root, .run_id = 1, .output_max = output_max, .memory = &memory };

	c->n_start = c->n_done_steps = c->n_done = c->n_changed = 0;
	c->failed = false;
	buf_reset(&c->output);
	assert_int_equal(uv_loop_init(&c->loop), 0);
	env.loop = &c->loop;
	/* The loop's one HTTP client, as the engine lends it to steps. */
	assert_int_equal(http_new(&c->loop, &env.http), 0);
	assert_int_equal(plan_execute(&c->loop, p, &env, &cbs, c, &c->x), 0);
	/* on_done is never called from inside plan_execute(). */
	assert_int_equal(c->n_done, 0);
	assert_int_equal(c->n_start, 0);
	if (cancel_after_ms >= 0) {
		uv_timer_init(&c->loop, &c->cancel_timer);
		c->cancel_timer.data = c;
		uv_timer_start(&c->cancel_timer, on_cancel_timer, (uint64_t)cancel_after_ms, 0);
	}
	assert_int_equal(uv_run(&c->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(c->n_done, 1);
	assert_int_equal(c->n_done_steps, (int)p->n_steps);
	http_free(env.http);
	assert_int_equal(uv_run(&c->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&c->loop), 0);
}

static void run_plan(struct ctx *c, struct plan *p)
{
	run_plan_full(c, p, 0, -1);
}

static char *read_file(const char *path)
{
	char *d = NULL;

	if (file_read_all(path, 1 << 20, &d, NULL) < 0)
		return NULL;
	return d ? d : xstrdup("");
}

static void write_file(const char *path, const char *s)
{
	assert_int_equal(file_write_atomic(path, s, strlen(s), 0644, (uid_t)-1, (gid_t)-1), 0);
}

/* The same, and mkdir_p and symlink, with a path under the test root. */
static void write_under(struct ctx *c, const char *path, const char *s)
{
	char *p = P(c, path);
	write_file(p, s);
	free(p);
}

static void mkdir_under(struct ctx *c, const char *path)
{
	char *p = P(c, path);
	assert_int_equal(mkdir_p(p, 0755), 0);
	free(p);
}

static bool exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

static mode_t mode_of(const char *path)
{
	struct stat st;

	assert_int_equal(lstat(path, &st), 0);
	return st.st_mode & 07777;
}

/* One file step, executed on its own. */
static enum step_status run_one_file(struct ctx *c, const char *path, const char *content, mode_t mode)
{
	struct plan p;
	char *err = NULL;
	enum step_status st;

	plan_init(&p, c->root);
	assert_non_null(plan_add_file(&p, path, content, strlen(content), mode, NULL, NULL, &err));
	run_plan(c, &p);
	st = p.steps[0]->status;
	plan_free(&p);
	return st;
}

static void test_file_create_and_converge(void **state)
{
	struct ctx *c = *state;
	char *path = P(c, "/etc/app/app.conf"), *got;

	assert_int_equal(run_one_file(c, "/etc/app/app.conf", "a = 1\n", 0640), STEP_CHANGED);
	assert_int_equal(c->n_changed, 1);
	assert_false(c->failed);
	got = read_file(path);
	assert_string_equal(got, "a = 1\n");
	free(got);
	assert_int_equal(mode_of(path), 0640);

	/* Second run: nothing to do. */
	assert_int_equal(run_one_file(c, "/etc/app/app.conf", "a = 1\n", 0640), STEP_UNCHANGED);
	assert_int_equal(c->n_changed, 0);

	/* Mode only. */
	assert_int_equal(run_one_file(c, "/etc/app/app.conf", "a = 1\n", 0600), STEP_CHANGED);
	assert_int_equal(mode_of(path), 0600);
	got = read_file(path);
	assert_string_equal(got, "a = 1\n");
	free(got);

	/* Content changed; mode (-1) kept from the existing file. */
	assert_int_equal(run_one_file(c, "/etc/app/app.conf", "a = 2\n", (mode_t)-1), STEP_CHANGED);
	assert_int_equal(mode_of(path), 0600);
	got = read_file(path);
	assert_string_equal(got, "a = 2\n");
	free(got);

	/* Empty content is content too. */
	assert_int_equal(run_one_file(c, "/etc/app/empty", "", 0644), STEP_CHANGED);
	assert_int_equal(run_one_file(c, "/etc/app/empty", "", 0644), STEP_UNCHANGED);
	free(path);
}

/* The action a one-step plan describes; *ret_error gets its error, if any. */
static char *describe_one(struct plan *p, char **ret_error)
{
	json_t *j = plan_describe(p, NULL);
	json_t *s0 = json_array_get(json_object_get(j, "steps"), 0);
	char *action = xstrdup(json_string_value(json_object_get(s0, "action")));
	const char *err = json_string_value(json_object_get(s0, "error"));

	if (ret_error)
		*ret_error = err ? xstrdup(err) : NULL;
	json_decref(j);
	return action;
}

/* design.md §5: a converged instance plans "none" where its run would be
 * unchanged. With the default query, the packages step reads dpkg's
 * answer from its status file (coreutils is Essential: always installed). */
static void test_packages_describe(void **state)
{
	struct ctx *c = *state;
	const char *query[] = { "dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", NULL };
	const char *other[] = { "/bin/true", NULL };
	const char *install[] = { "/bin/false", NULL };
	const char *there[] = { "coreutils", NULL }, *missing[] = { "coreutils", "agentd-test-no-such-package", NULL };
	const struct {
		const char *const *names, *const *query;
		const char *action;
	} cases[] = {
		{ there, query, "none" },
		{ missing, query, "install" },
		{ there, other, "check" }, /* another command is not second-guessed */
	};

	if (access("/var/lib/dpkg/status", R_OK) != 0)
		skip();
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct packages_step_opts o = { .names = cases[i].names, .query_argv = cases[i].query,
						.install_argv = install, .timeout_sec = 10 };
		struct plan p;
		char *err = NULL, *action;

		plan_init(&p, c->root);
		assert_non_null(plan_add_packages(&p, &o, &err));
		action = describe_one(&p, NULL);
		assert_string_equal(action, cases[i].action);
		free(action);
		plan_free(&p);
	}
}

/* The service update's describe says "update" without asking supervisord
 * when a program file would change or a stale one go, and otherwise asks
 * as the run would: supervisord not there is the run's failure, said. */
static void test_service_describe(void **state)
{
	struct ctx *c = *state;
	char *sock = P(c, "/supervisor.sock"), *conf = P(c, "/etc/supervisor/conf.d/app-client1.conf");
	const char *programs[] = { "app-client1", NULL };
	struct service_conf confs[] = { { "/etc/supervisor/conf.d/app-client1.conf", "; agentd app=app\n[program:x]\n" } };
	struct service_step_opts o = { .action = SERVICE_UPDATE, .socket = sock, .timeout_ms = 1000,
				       .programs = programs, .app = "app", .conf_dir = "/etc/supervisor/conf.d",
				       .confs = confs, .n_confs = 1 };
	struct service_step_opts start = { .action = SERVICE_START, .socket = sock, .timeout_ms = 1000,
					   .name = "app-client1" };
	struct plan p;
	char *err = NULL, *action, *stale;

	/* The program file is missing: it will be written, supervisord will see it. */
	plan_init(&p, c->root);
	assert_non_null(plan_add_service(&p, &o, &err));
	action = describe_one(&p, &err);
	assert_string_equal(action, "update");
	assert_null(err);
	free(action);

	/* The file as the plan writes it, and no supervisord: the run would fail. */
	mkdir_under(c, "/etc/supervisor/conf.d");
	write_file(conf, confs[0].content);
	action = describe_one(&p, &err);
	assert_string_equal(action, "fail");
	assert_non_null(err);
	assert_non_null(strstr(err, "cannot ask supervisord at"));
	free(err);
	free(action);

	/* A stale program file of the app: the update removes it. */
	stale = P(c, "/etc/supervisor/conf.d/app-client2.conf");
	write_file(stale, "; agentd app=app\n[program:app-client2]\n");
	free(stale);
	action = describe_one(&p, &err);
	assert_string_equal(action, "update");
	assert_null(err);
	free(action);
	plan_free(&p);

	plan_init(&p, c->root);
	assert_non_null(plan_add_service(&p, &start, &err));
	action = describe_one(&p, &err);
	assert_string_equal(action, "fail");
	assert_non_null(strstr(err, "cannot ask supervisord at"));
	free(err);
	free(action);

	/* A supervisord that takes the connection and never answers: the
	 * describe gives up after timeout_ms (the loop is held no longer), and
	 * the next one does not wait again. */
	{
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		assert_true(fd >= 0 && strlen(sock) < sizeof(sa.sun_path));
		memcpy(sa.sun_path, sock, strlen(sock) + 1);
		assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		assert_int_equal(listen(fd, 4), 0);
		start.timeout_ms = 200;
		plan_free(&p);
		plan_init(&p, c->root);
		assert_non_null(plan_add_service(&p, &start, &err));
		action = describe_one(&p, &err);
		assert_string_equal(action, "fail");
		assert_non_null(strstr(err, "cannot ask supervisord at"));
		free(err);
		free(action);
		action = describe_one(&p, &err);
		assert_string_equal(action, "fail");
		assert_non_null(strstr(err, "did not answer within 200 ms a moment ago"));
		free(err);
		free(action);
		close(fd);
	}
	plan_free(&p);
	free(sock);
	free(conf);
}

static void test_file_describe_diff(void **state)
{
	struct ctx *c = *state;
	char *path = P(c, "/etc/motd"), *err = NULL;
	struct plan p;
	json_t *j, *s0;

	mkdir_under(c, "/etc");
	write_file(path, "hello\nold line\nbye\n");
	plan_init(&p, c->root);
	assert_non_null(plan_add_file(&p, "/etc/motd", "hello\nnew line\nbye\n", 19, 0644, NULL, NULL, &err));
	p.steps[0]->recipe = xstrdup("motd");
	p.steps[0]->layer = xstrdup("app");

	j = plan_describe(&p, NULL);
	s0 = json_array_get(json_object_get(j, "steps"), 0);
	assert_string_equal(json_string_value(json_object_get(s0, "kind")), "file");
	assert_string_equal(json_string_value(json_object_get(s0, "target")), "/etc/motd");
	assert_string_equal(json_string_value(json_object_get(s0, "recipe")), "motd");
	assert_string_equal(json_string_value(json_object_get(s0, "layer")), "app");
	assert_string_equal(json_string_value(json_object_get(s0, "action")), "update");
	assert_string_equal(json_string_value(json_object_get(s0, "diff")),
			    "--- /etc/motd\n+++ /etc/motd\n@@ -1,3 +1,3 @@\n hello\n-old line\n+new line\n bye\n");
	json_decref(j);

	/* Redacted for a secret step. */
	p.steps[0]->secret = true;
	j = describe_unprivileged(&p);
	s0 = json_array_get(json_object_get(j, "steps"), 0);
	assert_string_equal(json_string_value(json_object_get(s0, "diff")), "(diff hidden: contains secrets)");
	json_decref(j);

	/* The dry run changed nothing. */
	char *got = read_file(path);
	assert_string_equal(got, "hello\nold line\nbye\n");
	free(got);

	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	j = plan_describe(&p, NULL);
	s0 = json_array_get(json_object_get(j, "steps"), 0);
	assert_string_equal(json_string_value(json_object_get(s0, "action")), "none");
	assert_null(json_object_get(s0, "diff"));
	json_decref(j);

	/* Mode only: chmod. */
	chmod(path, 0600);
	j = plan_describe(&p, NULL);
	s0 = json_array_get(json_object_get(j, "steps"), 0);
	assert_string_equal(json_string_value(json_object_get(s0, "action")), "chmod");
	json_decref(j);

	/* Missing: create, with the whole content as the diff. */
	unlink(path);
	j = plan_describe(&p, NULL);
	s0 = json_array_get(json_object_get(j, "steps"), 0);
	assert_string_equal(json_string_value(json_object_get(s0, "action")), "create");
	assert_non_null(strstr(json_string_value(json_object_get(s0, "diff")), "@@ -0,0 +1,3 @@\n+hello\n"));
	json_decref(j);
	plan_free(&p);
	free(path);
}

/* break3 finding 4: a file marked secret without a mode is written 0600,
 * not 0644 (world-readable); an explicit mode is the operator's; others
 * keep 0644. An existing secret file with a wider mode is narrowed. */
static void test_files_recipe_secret_mode(void **state)
{
	struct ctx *c = *state;
	const char *doc = "{\"opsworks\": {\"layers\": {\"web\": {\"instances\": {\"app1\": {}}}}},"
			  " \"agent\": {\"files\": {\"web\": ["
			  "{\"path\": \"/etc/app/secret\", \"content\": \"S1\\n\", \"secret\": true},"
			  "{\"path\": \"/etc/app/shared-secret\", \"content\": \"S2\\n\", \"secret\": true, \"mode\": \"0640\"},"
			  "{\"path\": \"/etc/app/not-secret\", \"content\": \"P\\n\", \"secret\": false},"
			  "{\"path\": \"/etc/app/plain\", \"content\": \"P\\n\"},"
			  "{\"path\": \"/etc/app/old-secret\", \"content\": \"S3\\n\", \"secret\": true}]}}}";
	static const struct {
		const char *path;
		mode_t mode;
	} want[] = {
		{ "/etc/app/secret", 0600 },	 { "/etc/app/shared-secret", 0640 }, { "/etc/app/not-secret", 0644 },
		{ "/etc/app/plain", 0644 },	 { "/etc/app/old-secret", 0600 },
	};
	struct stack *s = NULL;
	struct stack_error serr;
	struct config cfg;
	struct recipe_ctx rc = { .config = &cfg, .event = EVENT_CONFIGURE, .layer = "web", .name = "files" };
	struct plan p;
	char *err = NULL;
	json_t *j, *st;
	size_t k;

	config_defaults(&cfg);
	mkdir_under(c, "/etc/app");
	/* Written 0644 by an agentd before this fix, same content. */
	write_under(c, "/etc/app/old-secret", "S3\n");
	if (stack_parse(doc, strlen(doc), "app1", &s, &serr) < 0)
		fail_msg("stack_parse: %s: %s", serr.path, serr.message);
	rc.stack = s;
	plan_init(&p, c->root);
	assert_int_equal(recipe_plan(&rc, &p, &err), 0);
	assert_int_equal(p.n_steps, ELEMENTSOF(want));
	/* The plan says so: the old secret file is narrowed, and nobody sees
	 * a diff of a secret file. */
	j = describe_unprivileged(&p);
	json_array_foreach(json_object_get(j, "steps"), k, st) {
		if (strcmp(json_string_value(json_object_get(st, "target")), "/etc/app/old-secret") == 0)
			assert_string_equal(json_string_value(json_object_get(st, "action")), "chmod");
		else
			assert_string_equal(json_string_value(json_object_get(st, "action")), "create");
	}
	json_decref(j);
	run_plan(c, &p);
	assert_false(c->failed);
	for (k = 0; k < ELEMENTSOF(want); k++) {
		char *path = P(c, want[k].path);
		struct stat sb;

		assert_int_equal(stat(path, &sb), 0);
		if ((sb.st_mode & 07777) != want[k].mode)
			fail_msg("%s is %04o, want %04o", want[k].path, sb.st_mode & 07777, want[k].mode);
		free(path);
	}
	plan_free(&p);
	stack_unref(s);
	config_free(&cfg);
}

/* What one diff and all the diffs of a plan may cost (break3 finding 5): a
 * file too large for a diff on disk is not read, and shows the summary; a new
 * one too large likewise; past PLAN_DIFFS_MAX (4 MiB) of diffs in one plan,
 * the others are notes. */
static void test_describe_large_files(void **state)
{
	struct ctx *c = *state;
	struct buf big;
	char *err = NULL, *path = P(c, "/etc/big-old"), *want;
	struct plan p;
	json_t *j, *steps;
	size_t n = 8386560, total = 0, k;
	char *nl = xmalloc(n);
	const char *d;

	/* 3 MiB on disk in 30000 lines (the old caps, 4 MiB and 50000 lines,
	 * made a 3 MiB diff of it), replaced by one line. */
	buf_init(&big);
	for (int i = 0; i < 30000; i++)
		buf_printf(&big, "%0104d\n", i);
	mkdir_under(c, "/etc");
	assert_int_equal(file_write_atomic(path, big.data, big.len, 0644, (uid_t)-1, (gid_t)-1), 0);
	memset(nl, '\n', n);
	plan_init(&p, c->root);
	assert_non_null(plan_add_file(&p, "/etc/big-old", "small\n", 6, 0644, NULL, NULL, &err));
	assert_non_null(plan_add_file(&p, "/etc/big-new", nl, n, 0644, NULL, NULL, &err));
	assert_int_equal(plan_content_bytes(&p), 6 + n);
	j = plan_describe(&p, NULL);
	steps = json_object_get(j, "steps");
	assert_string_equal(json_string_value(json_object_get(json_array_get(steps, 0), "action")), "update");
	want = diff_summary("/etc/big-old", big.len, 6);
	assert_string_equal(json_string_value(json_object_get(json_array_get(steps, 0), "diff")), want);
	free(want);
	assert_string_equal(json_string_value(json_object_get(json_array_get(steps, 1), "action")), "create");
	want = diff_summary("/etc/big-new", 0, n);
	assert_string_equal(json_string_value(json_object_get(json_array_get(steps, 1), "diff")), want);
	free(want);
	json_decref(j);
	plan_free(&p);
	free(nl);
	free(path);

	/* Six new files of 0.9 MiB (under the caps): four diffs fit in 4 MiB,
	 * the others are notes. */
	buf_reset(&big);
	for (int i = 0; i < 9000; i++)
		buf_printf(&big, "%0104d\n", i);
	plan_init(&p, c->root);
	for (int i = 0; i < 6; i++) {
		char name[32];

		snprintf(name, sizeof(name), "/etc/f%d", i);
		assert_non_null(plan_add_file(&p, name, big.data, big.len, 0644, NULL, NULL, &err));
	}
	j = plan_describe(&p, NULL);
	steps = json_object_get(j, "steps");
	assert_int_equal(json_array_size(steps), 6);
	for (k = 0; k < 6; k++) {
		d = json_string_value(json_object_get(json_array_get(steps, k), "diff"));
		assert_non_null(d);
		total += strlen(d);
		if (k < 4)
			assert_non_null(strstr(d, "@@ -0,0 +1,9000 @@\n"));
		else
			assert_string_equal(d, "(diff not shown: the diffs of this plan would pass 4 MiB)");
	}
	assert_true(total <= (4u << 20));
	json_decref(j);
	/* A hidden diff costs only its note: all six fit when redacted. */
	for (k = 0; k < 6; k++)
		p.steps[k]->secret = true;
	j = describe_unprivileged(&p);
	json_array_foreach(json_object_get(j, "steps"), k, steps)
		assert_string_equal(json_string_value(json_object_get(steps, "diff")), "(diff hidden: contains secrets)");
	json_decref(j);
	plan_free(&p);
	buf_free(&big);
}

/* Unprivileged callers (redact) never see content of files they could not
 * read: the file on disk or the step's mode not world-readable. */
static void test_describe_redacts_private(void **state)
{
	struct ctx *c = *state;
	static const char *hidden = "(diff hidden: the file is not world-readable)";
	char *path = P(c, "/etc/shadowish"), *err = NULL;
	struct plan p;
	json_t *j;
	const char *d;

	mkdir_under(c, "/etc");
	write_file(path, "root:secret-hash\n");
	assert_int_equal(chmod(path, 0600), 0);

	/* On disk 0600, step keeps the mode. */
	plan_init(&p, c->root);
	assert_non_null(plan_add_file(&p, "/etc/shadowish", "root:new\n", 9, (mode_t)-1, NULL, NULL, &err));
	j = describe_unprivileged(&p);
	d = json_string_value(json_object_get(json_array_get(json_object_get(j, "steps"), 0), "diff"));
	assert_string_equal(d, hidden);
	json_decref(j);
	/* Privileged: the diff. */
	j = plan_describe(&p, NULL);
	d = json_string_value(json_object_get(json_array_get(json_object_get(j, "steps"), 0), "diff"));
	assert_non_null(strstr(d, "-root:secret-hash"));
	json_decref(j);
	plan_free(&p);

	/* On disk 0600, the step would make it 0644: still hidden (the old content). */
	plan_init(&p, c->root);
	assert_non_null(plan_add_file(&p, "/etc/shadowish", "root:new\n", 9, 0644, NULL, NULL, &err));
	j = describe_unprivileged(&p);
	d = json_string_value(json_object_get(json_array_get(json_object_get(j, "steps"), 0), "diff"));
	assert_string_equal(d, hidden);
	json_decref(j);
	plan_free(&p);

	/* On disk 0644, the step's mode is 0640: hidden (the new content). */
	assert_int_equal(chmod(path, 0644), 0);
	plan_init(&p, c->root);
	assert_non_null(plan_add_file(&p, "/etc/shadowish", "root:new\n", 9, 0640, NULL, NULL, &err));
	j = describe_unprivileged(&p);
	d = json_string_value(json_object_get(json_array_get(json_object_get(j, "steps"), 0), "diff"));
	assert_string_equal(d, hidden);
	json_decref(j);
	plan_free(&p);

	/* Both world-readable: shown. */
	plan_init(&p, c->root);
	assert_non_null(plan_add_file(&p, "/etc/shadowish", "root:new\n", 9, 0644, NULL, NULL, &err));
	assert_non_null(plan_add_file(&p, "/etc/shadowish", "root:new\n", 9, (mode_t)-1, NULL, NULL, &err));
	j = describe_unprivileged(&p);
	for (size_t i = 0; i < 2; i++) {
		d = json_string_value(json_object_get(json_array_get(json_object_get(j, "steps"), i), "diff"));
		assert_non_null(strstr(d, "-root:secret-hash"));
	}
	json_decref(j);
	plan_free(&p);

	/* New files: hidden when created private, shown otherwise; a secret
	 * step says so first. */
	plan_init(&p, c->root);
	assert_non_null(plan_add_file(&p, "/etc/new-private", "k\n", 2, 0600, NULL, NULL, &err));
	assert_non_null(plan_add_file(&p, "/etc/new-public", "k\n", 2, (mode_t)-1, NULL, NULL, &err));
	struct step *sec = plan_add_file(&p, "/etc/new-secret", "k\n", 2, 0600, NULL, NULL, &err);
	sec->secret = true;
	j = describe_unprivileged(&p);
	json_t *steps = json_object_get(j, "steps");
	assert_string_equal(json_string_value(json_object_get(json_array_get(steps, 0), "diff")), hidden);
	assert_non_null(strstr(json_string_value(json_object_get(json_array_get(steps, 1), "diff")), "+k"));
	assert_string_equal(json_string_value(json_object_get(json_array_get(steps, 2), "diff")),
			    "(diff hidden: contains secrets)");
	json_decref(j);
	j = plan_describe(&p, NULL);
	steps = json_object_get(j, "steps");
	assert_non_null(strstr(json_string_value(json_object_get(json_array_get(steps, 0), "diff")), "+k"));
	json_decref(j);
	plan_free(&p);
	free(path);
}

static void test_file_over_symlink(void **state)
{
	struct ctx *c = *state;
	char *path = P(c, "/etc/f"), *victim = P(c, "/victim"), *got;

	mkdir_under(c, "/etc");
	write_file(victim, "keep\n");
	assert_int_equal(symlink(victim, path), 0);
	assert_int_equal(run_one_file(c, "/etc/f", "new\n", 0644), STEP_CHANGED);
	got = read_file(victim);
	assert_string_equal(got, "keep\n");
	free(got);
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	free(path);
	free(victim);
}

static void test_file_owner(void **state)
{
	struct ctx *c = *state;
	struct plan p;
	char *err = NULL, *path = P(c, "/srv/owned");
	struct passwd *pw = getpwnam("nobody");
	struct stat st;

	plan_init(&p, c->root);
	assert_non_null(plan_add_file(&p, "/srv/owned", "x\n", 2, 0644, "no-such-user-xyz", NULL, &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_FAILED);
	assert_string_equal(p.steps[0]->error, "unknown user no-such-user-xyz");
	assert_true(c->failed);
	plan_free(&p);

	if (getuid() != 0 || !pw) {
		free(path);
		return;
	}
	plan_init(&p, c->root);
	assert_non_null(plan_add_file(&p, "/srv/owned", "x\n", 2, 0644, "nobody", NULL, &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	assert_int_equal(lstat(path, &st), 0);
	assert_int_equal(st.st_uid, pw->pw_uid);
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_UNCHANGED);
	/* Ownership drifted: fixed, reported as a change. */
	assert_int_equal(chown(path, 0, 0), 0);
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	assert_int_equal(lstat(path, &st), 0);
	assert_int_equal(st.st_uid, pw->pw_uid);
	plan_free(&p);
	free(path);
}

static void test_dir(void **state)
{
	struct ctx *c = *state;
	struct plan p;
	char *err = NULL, *path = P(c, "/srv/www/app");

	plan_init(&p, c->root);
	assert_non_null(plan_add_dir(&p, "/srv/www/app", 0750, NULL, NULL, &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	assert_int_equal(mode_of(path), 0750);
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_UNCHANGED);
	chmod(path, 0700);
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	assert_int_equal(mode_of(path), 0750);
	plan_free(&p);

	/* A file in the way. */
	write_under(c, "/srv/file", "x");
	plan_init(&p, c->root);
	assert_non_null(plan_add_dir(&p, "/srv/file", 0755, NULL, NULL, &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_FAILED);
	assert_non_null(strstr(p.steps[0]->error, "not a directory"));
	plan_free(&p);
	free(path);
}

static void test_link(void **state)
{
	struct ctx *c = *state;
	struct plan p;
	char *err = NULL, *path = P(c, "/srv/www/app/current"), *want = P(c, "/srv/www/app/releases/1");
	char buf[4096];
	ssize_t n;

	plan_init(&p, c->root);
	assert_non_null(plan_add_link(&p, "/srv/www/app/current", "/srv/www/app/releases/1", &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	n = readlink(path, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	/* Absolute targets are stored relative to the link's directory, so
	 * they point at the same place on the host and under a test root. */
	assert_string_equal(buf, "releases/1");
	{
		struct stat a, b;
		mkdir_p(want, 0755);
		assert_int_equal(stat(path, &a), 0);
		assert_int_equal(stat(want, &b), 0);
		assert_true(a.st_ino == b.st_ino);
		assert_int_equal(rmdir(want), 0);
	}
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_UNCHANGED);
	plan_free(&p);

	plan_init(&p, c->root);
	assert_non_null(plan_add_link(&p, "/srv/www/app/shared/log", "/var/log/app", &err));
	run_plan(c, &p);
	{
		char *lp = P(c, "/srv/www/app/shared/log");
		n = readlink(lp, buf, sizeof(buf) - 1);
		free(lp);
	}
	buf[n] = '\0';
	assert_string_equal(buf, "../../../../var/log/app");
	plan_free(&p);

	/* Pointing elsewhere: replaced. Relative targets are kept as given. */
	plan_init(&p, c->root);
	assert_non_null(plan_add_link(&p, "/srv/www/app/current", "releases/2", &err));
	json_t *j = plan_describe(&p, NULL);
	assert_string_equal(
		json_string_value(json_object_get(json_array_get(json_object_get(j, "steps"), 0), "action")),
		"update");
	json_decref(j);
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	n = readlink(path, buf, sizeof(buf) - 1);
	buf[n] = '\0';
	assert_string_equal(buf, "releases/2");
	plan_free(&p);

	/* A regular file in the way is replaced; a directory is an error. */
	write_under(c, "/srv/lnk", "x");
	mkdir_p(want, 0755);
	plan_init(&p, c->root);
	assert_non_null(plan_add_link(&p, "/srv/lnk", "/x", &err));
	assert_non_null(plan_add_link(&p, "/srv/www/app/releases/1", "/x", &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	assert_int_equal(p.steps[1]->status, STEP_FAILED);
	assert_non_null(strstr(p.steps[1]->error, "is a directory"));
	plan_free(&p);
	free(path);
	free(want);
}

static void test_absent(void **state)
{
	struct ctx *c = *state;
	struct plan p;
	char *err = NULL, *f = P(c, "/tmp/old.conf"), *tree = P(c, "/srv/tree"), *outside = P(c, "/outside");
	char *inner, *keep;

	mkdir_under(c, "/tmp");
	write_file(f, "x");
	plan_init(&p, c->root);
	assert_non_null(plan_add_absent(&p, "/tmp/old.conf", false, &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	assert_false(exists(f));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_UNCHANGED);
	plan_free(&p);

	/* A tree with a symlink to something outside it: the link goes, what
	 * it points at stays. */
	inner = P(c, "/srv/tree/a/b");
	mkdir_p(inner, 0755);
	write_under(c, "/srv/tree/a/b/file", "x");
	mkdir_p(outside, 0755);
	keep = P(c, "/outside/keep");
	write_file(keep, "keep");
	char *link = P(c, "/srv/tree/a/link");
	assert_int_equal(symlink(outside, link), 0);
	free(link);

	plan_init(&p, c->root);
	assert_non_null(plan_add_absent(&p, "/srv/tree", false, &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_FAILED);
	assert_true(exists(tree));
	plan_free(&p);

	plan_init(&p, c->root);
	assert_non_null(plan_add_absent(&p, "/srv/tree", true, &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	assert_false(exists(tree));
	assert_true(exists(keep));
	plan_free(&p);
	free(f);
	free(tree);
	free(outside);
	free(inner);
	free(keep);
}

/* A chain deeper than the descriptors we may open (issue 9: one fd per
 * level gave EMFILE forever): the removal still goes through, and the
 * symlink at the bottom is removed, not followed. */
static void test_absent_deep_tree_low_fd_limit(void **state)
{
	struct ctx *c = *state;
	struct plan p;
	char *err = NULL, *tree = P(c, "/srv/deep"), *outside = P(c, "/outside2"), *keep = P(c, "/outside2/keep");
	struct rlimit old, low;
	int dfd, cur;

	mkdir_p(tree, 0755);
	mkdir_p(outside, 0755);
	write_file(keep, "keep");
	dfd = open(tree, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dfd >= 0);
	for (int i = 0; i < 600; i++) {
		assert_int_equal(mkdirat(dfd, "d", 0755), 0);
		cur = openat(dfd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		assert_true(cur >= 0);
		(void)close(dfd);
		dfd = cur;
	}
	assert_int_equal(symlinkat(outside, dfd, "link"), 0);
	(void)close(dfd);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
	/* The soft limit only: raising it back needs no privilege. */
	low = (struct rlimit){ 128, old.rlim_max };
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	plan_init(&p, c->root);
	assert_non_null(plan_add_absent(&p, "/srv/deep", true, &err));
	run_plan(c, &p);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	assert_false(exists(tree));
	assert_true(exists(keep));
	plan_free(&p);
	free(tree);
	free(outside);
	free(keep);
}

static void test_bad_paths(void **state)
{
	struct ctx *c = *state;
	struct plan p;
	char *err = NULL;

	plan_init(&p, c->root);
	assert_null(plan_add_file(&p, "/etc/../../escape", "x", 1, 0644, NULL, NULL, &err));
	assert_non_null(err);
	assert_non_null(strstr(err, ".."));
	free(err);
	err = NULL;
	assert_null(plan_add_file(&p, "relative", "x", 1, 0644, NULL, NULL, &err));
	assert_non_null(err);
	free(err);
	err = NULL;
	assert_null(plan_add_dir(&p, "/a/..", 0755, NULL, NULL, &err));
	free(err);
	err = NULL;
	assert_null(plan_add_link(&p, "/a", "/../etc/shadow", &err));
	free(err);
	err = NULL;
	assert_null(plan_add_absent(&p, "/", true, &err));
	free(err);
	err = NULL;
	char *argv[] = { "/bin/true", NULL };
	struct exec_step_opts o = { .argv = argv, .cwd = "/srv/../.." };
	assert_null(plan_add_exec(&p, "true", &o, &err));
	free(err);
	assert_int_equal(p.n_steps, 0);
	plan_free(&p);
}

static struct step *add_sh(struct plan *p, const char *script, const char *key, uint64_t hash)
{
	char *argv[] = { "/bin/sh", "-c", (char *)script, NULL };
	struct exec_step_opts o = { .argv = argv, .input_key = key, .input_hash = hash };
	char *err = NULL;
	struct step *s = plan_add_exec(p, script, &o, &err);

	assert_non_null(s);
	return s;
}

static void test_exec_changed_and_hash(void **state)
{
	struct ctx *c = *state;
	struct plan p;

	plan_init(&p, c->root);
	add_sh(&p, "echo building; echo done", "buildout", 42);
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	assert_string_equal(c->output.data, "building\ndone\n");
	assert_int_equal(c->n_set_hash, 1);
	assert_string_equal(c->hash_key, "buildout");
	assert_true(c->hash == 42);

	/* Same input: ran, but unchanged. */
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_UNCHANGED);
	plan_free(&p);

	/* Other input: changed. */
	plan_init(&p, c->root);
	add_sh(&p, "true", "buildout", 43);
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	plan_free(&p);

	/* A failure records no hash. */
	c->n_set_hash = 0;
	plan_init(&p, c->root);
	add_sh(&p, "exit 3", "buildout", 44);
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_FAILED);
	assert_string_equal(p.steps[0]->error, "exited with status 3");
	assert_int_equal(c->n_set_hash, 0);
	assert_true(c->hash == 43);
	plan_free(&p);
}

static void test_exec_changed_override(void **state)
{
	struct ctx *c = *state;
	struct plan p;

	plan_init(&p, c->root);
	add_sh(&p, "echo checking; echo changed=no", NULL, 0);
	add_sh(&p, "echo changed=no; echo more", NULL, 0);
	add_sh(&p, "printf 'x\\nchanged=yes'", "k", 7);
	add_sh(&p, "echo changed=no >&2", NULL, 0);
	c->has_hash = true;
	c->hash_key = xstrdup("k");
	c->hash = 7;
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_UNCHANGED);
	assert_int_equal(p.steps[1]->status, STEP_CHANGED);
	assert_int_equal(p.steps[2]->status, STEP_CHANGED);
	assert_int_equal(p.steps[3]->status, STEP_UNCHANGED);
	plan_free(&p);
}

static void test_exec_env_cwd_user(void **state)
{
	struct ctx *c = *state;
	struct plan p;
	char *err = NULL, *expect;
	char *argv[] = { "/bin/sh", "-c", "pwd; echo $AGENT_EVENT", NULL };
	char *env[] = { "AGENT_EVENT=deploy", NULL };
	struct exec_step_opts o = { .argv = argv, .env = env };

	plan_init(&p, c->root);
	assert_non_null(plan_add_exec(&p, "pwd", &o, &err));
	mkdir_under(c, "/srv/app");
	o.cwd = "/srv/app";
	assert_non_null(plan_add_exec(&p, "pwd", &o, &err));
	run_plan(c, &p);
	expect = xasprintf("%s\ndeploy\n%s/srv/app\ndeploy\n", c->root, c->root);
	assert_string_equal(c->output.data, expect);
	free(expect);
	plan_free(&p);

	/* cwd and a user switch together (the child enters the directory
	 * through /proc/self/fd before it drops privileges). */
	struct passwd *pw = getpwnam("nobody");
	if (getuid() == 0 && pw) {
		char *id[] = { "/bin/sh", "-c", "pwd; id -u", NULL };
		struct exec_step_opts ou = { .argv = id, .cwd = "/srv/app", .user = "nobody" };
		char *d = P(c, "/srv/app");

		assert_int_equal(chmod(c->root, 0755), 0);
		plan_init(&p, c->root);
		assert_non_null(plan_add_exec(&p, "id", &ou, &err));
		run_plan(c, &p);
		assert_int_equal(p.steps[0]->status, STEP_CHANGED);
		expect = xasprintf("%s\n%u\n", d, (unsigned)pw->pw_uid);
		assert_string_equal(c->output.data, expect);
		free(expect);
		free(d);
		plan_free(&p);
	}

	/* Unknown user: a clear error. */
	plan_init(&p, c->root);
	o.user = "no-such-user-xyz";
	assert_non_null(plan_add_exec(&p, "x", &o, &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_FAILED);
	assert_string_equal(p.steps[0]->error, "could not start: unknown user no-such-user-xyz");
	plan_free(&p);

	/* Stdin data reaches the child. */
	char *cat[] = { "/bin/cat", NULL };
	struct exec_step_opts o2 = { .argv = cat, .stdin_data = "{\"stack\":1}", .stdin_len = 11 };
	plan_init(&p, c->root);
	assert_non_null(plan_add_exec(&p, "cat", &o2, &err));
	run_plan(c, &p);
	assert_string_equal(c->output.data, "{\"stack\":1}");
	plan_free(&p);

	/* A missing program. */
	char *missing[] = { "/nonexistent/recipe", NULL };
	struct exec_step_opts o3 = { .argv = missing };
	plan_init(&p, c->root);
	assert_non_null(plan_add_exec(&p, "missing", &o3, &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_FAILED);
	assert_string_equal(p.steps[0]->error, "could not start /nonexistent/recipe: No such file or directory");
	plan_free(&p);
}

static void test_exec_output_cap(void **state)
{
	struct ctx *c = *state;
	struct plan p;

	plan_init(&p, c->root);
	add_sh(&p, "i=0; while [ $i -lt 1000 ]; do echo 0123456789; i=$((i+1)); done; echo changed=no", NULL, 0);
	run_plan_full(c, &p, 25, -1);
	assert_string_equal(c->output.data, "0123456789\n0123456789\n012\n[output truncated after 25 bytes]\n");
	/* The last line still counts, although it was not kept. */
	assert_int_equal(p.steps[0]->status, STEP_UNCHANGED);
	plan_free(&p);
}

static void test_guard_only_if_changed(void **state)
{
	struct ctx *c = *state;
	char *marker = P(c, "/reloaded");
	struct plan p;
	char *err = NULL, *script;

	script = xasprintf("touch %s", marker);
	for (int round = 0; round < 2; round++) {
		plan_init(&p, c->root);
		struct step *f = plan_add_file(&p, "/etc/haproxy.cfg", "listen\n", 7, 0644, NULL, NULL, &err);
		f->id = xstrdup("haproxy-cfg");
		struct step *e = add_sh(&p, script, NULL, 0);
		step_only_if_changed(e, "other");
		step_only_if_changed(e, "haproxy-cfg");

		json_t *j = plan_describe(&p, NULL);
		json_t *s1 = json_array_get(json_object_get(j, "steps"), 1);
		assert_string_equal(json_string_value(json_object_get(s1, "action")), round == 0 ? "run" : "none");
		json_decref(j);

		run_plan(c, &p);
		if (round == 0) {
			assert_int_equal(f->status, STEP_CHANGED);
			assert_int_equal(e->status, STEP_CHANGED);
			assert_true(exists(marker));
			unlink(marker);
		} else {
			assert_int_equal(f->status, STEP_UNCHANGED);
			assert_int_equal(e->status, STEP_SKIPPED);
			assert_false(exists(marker));
			assert_int_equal(c->n_changed, 0);
		}
		plan_free(&p);
	}
	free(script);
	free(marker);
}

static void test_guard_owed_after_failure(void **state)
{
	/* The config changed but its reload failed: the next execution reloads
	 * although the config no longer changes; after a success it is quiet. */
	struct ctx *c = *state;
	char *ok = P(c, "/reload-works"), *marker = P(c, "/reloaded");
	char *script = xasprintf("test -e %s && touch %s", ok, marker);
	struct plan p;
	char *err = NULL;

	for (int round = 0; round < 3; round++) {
		plan_init(&p, c->root);
		struct step *f = plan_add_file(&p, "/etc/haproxy.cfg", "listen\n", 7, 0644, NULL, NULL, &err);
		f->id = xstrdup("haproxy-cfg");
		f->recipe = xstrdup("haproxy");
		struct step *e = add_sh(&p, script, NULL, 0);
		e->recipe = xstrdup("haproxy");
		step_only_if_changed(e, "haproxy-cfg");
		run_plan(c, &p);
		if (round == 0) {
			assert_int_equal(f->status, STEP_CHANGED);
			assert_int_equal(e->status, STEP_FAILED);
			assert_non_null(c->owed_key);
			write_file(ok, "");
		} else if (round == 1) {
			assert_int_equal(f->status, STEP_UNCHANGED);
			assert_int_equal(e->status, STEP_CHANGED);
			assert_true(exists(marker));
			assert_null(c->owed_key);
			unlink(marker);
		} else {
			assert_int_equal(e->status, STEP_SKIPPED);
			assert_false(exists(marker));
		}
		plan_free(&p);
	}
	free(script);
	free(ok);
	free(marker);
}

static void test_guard_unless_exists(void **state)
{
	struct ctx *c = *state;
	char *marker = P(c, "/var/lib/app/.installed"), *script;
	struct plan p;

	script = xasprintf("mkdir -p %s/var/lib/app && touch %s && echo ran", c->root, marker);
	for (int round = 0; round < 2; round++) {
		plan_init(&p, c->root);
		struct step *e = add_sh(&p, script, NULL, 0);
		e->unless_exists = xstrdup("/var/lib/app/.installed");
		json_t *j = plan_describe(&p, NULL);
		assert_string_equal(
			json_string_value(json_object_get(json_array_get(json_object_get(j, "steps"), 0), "action")),
			round == 0 ? "run" : "none");
		json_decref(j);
		run_plan(c, &p);
		assert_int_equal(e->status, round == 0 ? STEP_CHANGED : STEP_UNCHANGED);
		assert_string_equal(c->output.data ? c->output.data : "", round == 0 ? "ran\n" : "");
		plan_free(&p);
	}
	free(script);
	free(marker);
}

/* A planner that must not read the disk says "nothing to do until PATH
 * exists" with a conditional note and only_if_exists guards: the path is
 * looked at when the plan is described or run. */
static void test_guard_only_if_exists(void **state)
{
	struct ctx *c = *state;
	char *x = P(c, "/app/x");
	char *err = NULL;

	for (int round = 0; round < 2; round++) {
		struct plan p;
		struct step *note, *f;
		json_t *j, *steps;

		plan_init(&p, c->root);
		note = plan_add_note_unless_exists(&p, "app", "not deployed yet", "/app/current");
		f = plan_add_file(&p, "/app/x", "x\n", 2, 0644, NULL, NULL, &err);
		assert_non_null(f);
		step_only_if_exists(f, "/app/current");
		j = plan_describe(&p, NULL);
		steps = json_object_get(j, "steps");
		assert_string_equal(json_string_value(json_object_get(json_array_get(steps, 0), "action")), "none");
		if (round == 0)
			assert_string_equal(json_string_value(json_object_get(json_array_get(steps, 0), "message")),
					    "not deployed yet");
		else
			assert_null(json_object_get(json_array_get(steps, 0), "message"));
		assert_string_equal(json_string_value(json_object_get(json_array_get(steps, 1), "action")),
				    round == 0 ? "none" : "create");
		json_decref(j);
		run_plan(c, &p);
		assert_int_equal(note->status, round == 0 ? STEP_SKIPPED : STEP_UNCHANGED);
		assert_int_equal(f->status, round == 0 ? STEP_SKIPPED : STEP_CHANGED);
		assert_false(c->failed);
		assert_true(exists(x) == (round == 1));
		plan_free(&p);
		mkdir_under(c, "/app/current");
	}
	free(x);
}

static void test_failure_stops_plan(void **state)
{
	struct ctx *c = *state;
	char *after = P(c, "/after");
	struct plan p;
	char *err = NULL;

	plan_init(&p, c->root);
	assert_non_null(plan_add_file(&p, "/before", "x", 1, 0644, NULL, NULL, &err));
	add_sh(&p, "echo oops >&2; exit 2", NULL, 0);
	assert_non_null(plan_add_file(&p, "/after", "x", 1, 0644, NULL, NULL, &err));
	add_sh(&p, "true", NULL, 0);
	run_plan(c, &p);
	assert_true(c->failed);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	assert_int_equal(p.steps[1]->status, STEP_FAILED);
	assert_string_equal(p.steps[1]->error, "exited with status 2");
	assert_string_equal(c->output.data, "oops\n");
	assert_int_equal(p.steps[2]->status, STEP_SKIPPED);
	assert_int_equal(p.steps[3]->status, STEP_SKIPPED);
	assert_int_equal(c->n_start, 2);
	assert_false(exists(after));
	plan_free(&p);
	free(after);
}

static void test_cancel(void **state)
{
	struct ctx *c = *state;
	struct plan p;
	char *err = NULL;
	int64_t start;

	/* Soft: the running step finishes, the rest is skipped. */
	plan_init(&p, c->root);
	add_sh(&p, "sleep 0.3; echo finished", NULL, 0);
	assert_non_null(plan_add_file(&p, "/after", "x", 1, 0644, NULL, NULL, &err));
	c->cancel_hard = false;
	run_plan_full(c, &p, 0, 50);
	assert_true(c->failed);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	assert_string_equal(c->output.data, "finished\n");
	assert_int_equal(p.steps[1]->status, STEP_SKIPPED);
	plan_free(&p);

	/* Hard: the child gets SIGTERM. */
	plan_init(&p, c->root);
	add_sh(&p, "sleep 100", NULL, 0);
	assert_non_null(plan_add_file(&p, "/after", "x", 1, 0644, NULL, NULL, &err));
	c->cancel_hard = true;
	start = time_monotonic_usec();
	run_plan_full(c, &p, 0, 50);
	assert_true(time_monotonic_usec() - start < 2000000);
	assert_true(c->failed);
	assert_int_equal(p.steps[0]->status, STEP_FAILED);
	assert_string_equal(p.steps[0]->error, "killed by signal 15 (SIGTERM)");
	assert_int_equal(p.steps[1]->status, STEP_SKIPPED);
	plan_free(&p);
}

/* A soft cancel is only a failure when it made a step be left out. */
static void test_cancel_last_step(void **state)
{
	struct ctx *c = *state;
	struct plan p;
	char *err = NULL, *after = P(c, "/after2");

	/* During the last (here: only) step: everything ran, not failed. */
	plan_init(&p, c->root);
	assert_non_null(plan_add_file(&p, "/before", "x", 1, 0644, NULL, NULL, &err));
	add_sh(&p, "sleep 0.3; echo finished", NULL, 0);
	c->cancel_hard = false;
	run_plan_full(c, &p, 0, 50);
	assert_false(c->failed);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	assert_int_equal(p.steps[1]->status, STEP_CHANGED);
	assert_string_equal(c->output.data, "finished\n");
	plan_free(&p);

	/* During step 1 of 2: step 2 is skipped, the run is failed. */
	plan_init(&p, c->root);
	add_sh(&p, "sleep 0.3", NULL, 0);
	assert_non_null(plan_add_file(&p, "/after2", "x", 1, 0644, NULL, NULL, &err));
	run_plan_full(c, &p, 0, 50);
	assert_true(c->failed);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	assert_int_equal(p.steps[1]->status, STEP_SKIPPED);
	assert_int_equal(c->n_start, 1);
	assert_false(exists(after));
	plan_free(&p);

	/* The last step is a note after the cancelled one: still skipped by the cancel. */
	plan_init(&p, c->root);
	add_sh(&p, "sleep 0.3", NULL, 0);
	plan_add_note(&p, "n", "nothing");
	run_plan_full(c, &p, 0, 50);
	assert_true(c->failed);
	plan_free(&p);
	free(after);
}

/* --- escapes through symlinks (every operation resolves inside root) --- */

struct outside {
	char dir[64];
};

static void outside_init(struct outside *o)
{
	char *p;
	int fd;

	snprintf(o->dir, sizeof(o->dir), "/tmp/test_plan_out.XXXXXX");
	assert_non_null(mkdtemp(o->dir));
	assert_int_equal(chmod(o->dir, 0755), 0);
	p = xasprintf("%s/keep", o->dir);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "keep\n", 5), 5);
	close(fd);
	assert_int_equal(chmod(p, 0644), 0);
	free(p);
	p = xasprintf("%s/dir", o->dir);
	assert_int_equal(mkdir(p, 0755), 0);
	assert_int_equal(chmod(p, 0755), 0);
	free(p);
	p = xasprintf("%s/dir/inner", o->dir);
	fd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	assert_true(fd >= 0);
	close(fd);
	free(p);
}

/* Nothing in the outside directory was created, removed, written or chmod'ed. */
static void outside_check(struct outside *o)
{
	struct stat st;
	char *p, *got;
	int n = 0;
	DIR *d = opendir(o->dir);
	struct dirent *de;

	assert_non_null(d);
	while ((de = readdir(d)))
		n++;
	closedir(d);
	assert_int_equal(n, 4); /* ., .., keep, dir */
	assert_int_equal(stat(o->dir, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	p = xasprintf("%s/keep", o->dir);
	got = read_file(p);
	assert_non_null(got);
	assert_string_equal(got, "keep\n");
	free(got);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(st.st_uid, getuid());
	free(p);
	p = xasprintf("%s/dir", o->dir);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	assert_int_equal(st.st_uid, getuid());
	free(p);
	p = xasprintf("%s/dir/inner", o->dir);
	assert_true(exists(p));
	free(p);
}

static void outside_free(struct outside *o)
{
	(void)nftw(o->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void plant_link(struct ctx *c, const char *target, const char *path)
{
	char *p = P(c, path);

	assert_int_equal(symlink(target, p), 0);
	free(p);
}

static void check_no_escape(struct ctx *c)
{
	struct outside o;
	struct plan p;
	char *err = NULL, *rel, *q;
	json_t *j;

	outside_init(&o);
	mkdir_under(c, "/srv");
	mkdir_under(c, "/var/lib");
	/* Absolute, relative (climbing far above root), and a chain. */
	plant_link(c, o.dir, "/srv/abs");
	rel = xasprintf("../../../../../../../../..%s", o.dir);
	plant_link(c, rel, "/srv/rel");
	plant_link(c, "/srv/abs", "/srv/chain");
	plant_link(c, "loop2", "/srv/loop1");
	plant_link(c, "loop1", "/srv/loop2");
	/* Final components that are links to outside things. */
	q = xasprintf("%s/keep", o.dir);
	plant_link(c, q, "/srv/keeplink");
	free(q);
	q = xasprintf("%s/dir", o.dir);
	plant_link(c, q, "/srv/dirlink");
	free(q);

	const char *parents[] = { "/srv/abs", "/srv/rel", "/srv/chain" };
	for (size_t i = 0; i < ELEMENTSOF(parents); i++) {
		char path[256], path2[256];

		/* The dry run reads nothing outside: the files are "missing". */
		plan_init(&p, c->root);
		snprintf(path, sizeof(path), "%s/keep", parents[i]);
		assert_non_null(plan_add_file(&p, path, "new\n", 4, 0600, NULL, NULL, &err));
		snprintf(path2, sizeof(path2), "%s/conf/x.cfg", parents[i]);
		assert_non_null(plan_add_file(&p, path2, "x\n", 2, 0600, NULL, NULL, &err));
		j = plan_describe(&p, NULL);
		json_t *s0 = json_array_get(json_object_get(j, "steps"), 0);
		assert_string_equal(json_string_value(json_object_get(s0, "action")), "create");
		assert_null(strstr(json_string_value(json_object_get(s0, "diff")), "\n-keep"));
		json_decref(j);
		/* Written, but inside root: the links dangle there, so the
		 * parents cannot be made; nothing happens outside either way. */
		run_plan(c, &p);
		assert_int_equal(p.steps[0]->status, STEP_FAILED);
		outside_check(&o);
		plan_free(&p);

		plan_init(&p, c->root);
		snprintf(path, sizeof(path), "%s/dir", parents[i]);
		assert_non_null(plan_add_dir(&p, path, 0700, NULL, NULL, &err));
		snprintf(path, sizeof(path), "%s/dir/inner", parents[i]);
		assert_non_null(plan_add_absent(&p, path, false, &err));
		snprintf(path, sizeof(path), "%s/dir", parents[i]);
		assert_non_null(plan_add_absent(&p, path, true, &err));
		snprintf(path, sizeof(path), "%s/keep", parents[i]);
		assert_non_null(plan_add_absent(&p, path, false, &err));
		snprintf(path, sizeof(path), "%s/l", parents[i]);
		assert_non_null(plan_add_link(&p, path, "/x", &err));
		j = plan_describe(&p, NULL);
		json_decref(j);
		for (size_t k = 0; k < p.n_steps; k++) {
			struct plan one = { .steps = &p.steps[k], .n_steps = 1, .root = c->root };
			run_plan(c, &one);
			outside_check(&o);
		}
		plan_free(&p);
	}

	/* Now what the absolute link names exists inside root: the same
	 * steps work, inside root. */
	q = P(c, o.dir);
	assert_int_equal(mkdir_p(q, 0755), 0);
	plan_init(&p, c->root);
	assert_non_null(plan_add_file(&p, "/srv/abs/conf/x.cfg", "x\n", 2, 0600, NULL, NULL, &err));
	assert_non_null(plan_add_file(&p, "/srv/chain/keep", "new\n", 4, 0600, NULL, NULL, &err));
	assert_non_null(plan_add_dir(&p, "/srv/abs/dir", 0700, NULL, NULL, &err));
	assert_non_null(plan_add_link(&p, "/srv/chain/l", "target", &err));
	run_plan(c, &p);
	for (size_t k = 0; k < p.n_steps; k++)
		assert_int_equal(p.steps[k]->status, STEP_CHANGED);
	plan_free(&p);
	outside_check(&o);
	char *in = xasprintf("%s/conf/x.cfg", q), *got = read_file(in);
	assert_non_null(got);
	assert_string_equal(got, "x\n");
	free(got);
	free(in);
	in = xasprintf("%s/keep", q);
	got = read_file(in);
	assert_string_equal(got, "new\n");
	free(got);
	free(in);
	/* And removed there. */
	plan_init(&p, c->root);
	assert_non_null(plan_add_absent(&p, "/srv/rel/keep", false, &err));
	assert_non_null(plan_add_absent(&p, "/srv/abs/dir", true, &err));
	run_plan(c, &p);
	plan_free(&p);
	outside_check(&o);
	free(q);

	/* Final components that are links: replaced (file, link), removed
	 * (absent), refused (dir): never followed. */
	plan_init(&p, c->root);
	assert_non_null(plan_add_dir(&p, "/srv/dirlink", 0700, NULL, NULL, &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_FAILED);
	assert_non_null(strstr(p.steps[0]->error, "is a symlink, not a directory"));
	plan_free(&p);
	outside_check(&o);
	/* Without a mode to enforce, a link that leads nowhere inside root is still refused. */
	plan_init(&p, c->root);
	assert_non_null(plan_add_dir(&p, "/srv/dirlink", (mode_t)-1, NULL, NULL, &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_FAILED);
	assert_non_null(strstr(p.steps[0]->error, "is a symlink, not a directory"));
	plan_free(&p);
	plan_init(&p, c->root);
	assert_non_null(plan_add_file(&p, "/srv/keeplink", "new\n", 4, 0600, NULL, NULL, &err));
	assert_non_null(plan_add_absent(&p, "/srv/dirlink", true, &err));
	assert_non_null(plan_add_link(&p, "/srv/loop1", "x", &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	assert_int_equal(p.steps[1]->status, STEP_CHANGED);
	assert_int_equal(p.steps[2]->status, STEP_CHANGED);
	plan_free(&p);
	outside_check(&o);
	q = P(c, "/srv/dirlink");
	assert_false(exists(q));
	free(q);

	/* A loop in a parent: a clear failure. */
	plant_link(c, "loopB", "/srv/loopA");
	plant_link(c, "/srv/loopA", "/srv/loopB");
	plan_init(&p, c->root);
	assert_non_null(plan_add_file(&p, "/srv/loopB/x", "x", 1, 0644, NULL, NULL, &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_FAILED);
	assert_non_null(strstr(p.steps[0]->error, "Too many levels of symbolic links"));
	plan_free(&p);

	/* exec: cwd and unless_exists resolve inside root too. */
	char *argv[] = { "/bin/sh", "-c", "pwd", NULL };
	struct exec_step_opts eo = { .argv = argv, .cwd = "/srv/abs" };
	plan_init(&p, c->root);
	struct step *e = plan_add_exec(&p, "pwd", &eo, &err);
	assert_non_null(e);
	run_plan(c, &p);
	assert_int_equal(e->status, STEP_CHANGED);
	q = xasprintf("%s%s\n", c->root, o.dir);
	assert_string_equal(c->output.data, q);
	free(q);
	plan_free(&p);
	eo.cwd = "/srv/rel/dir";
	plan_init(&p, c->root);
	e = plan_add_exec(&p, "pwd", &eo, &err);
	run_plan(c, &p);
	assert_int_equal(e->status, STEP_FAILED);
	assert_non_null(strstr(e->error, "could not start: cannot enter the working directory /srv/rel/dir"));
	plan_free(&p);
	plan_init(&p, c->root);
	e = add_sh(&p, "echo ran", NULL, 0);
	e->unless_exists = xstrdup("/srv/rel/dir/inner");
	j = plan_describe(&p, NULL);
	assert_string_equal(
		json_string_value(json_object_get(json_array_get(json_object_get(j, "steps"), 0), "action")), "run");
	json_decref(j);
	run_plan(c, &p);
	assert_int_equal(e->status, STEP_CHANGED);
	plan_free(&p);
	outside_check(&o);

	free(rel);
	outside_free(&o);
}

static void test_no_escape(void **state)
{
	rootfs_force_fallback(false);
	check_no_escape(*state);
}

static void test_no_escape_fallback(void **state)
{
	rootfs_force_fallback(true);
	check_no_escape(*state);
	rootfs_force_fallback(false);
}

/* A dir step on a symlink to a directory inside root: accepted when it has
 * nothing to enforce, refused with a mode or an owner. */
static void test_dir_symlink(void **state)
{
	struct ctx *c = *state;
	struct plan p;
	char *err = NULL, *real = P(c, "/srv/www");
	json_t *j;

	mkdir_under(c, "/srv/www");
	assert_int_equal(chmod(real, 0755), 0);
	plant_link(c, "/srv/www", "/var-www");
	plan_init(&p, c->root);
	assert_non_null(plan_add_dir(&p, "/var-www", (mode_t)-1, NULL, NULL, &err));
	j = plan_describe(&p, NULL);
	assert_string_equal(
		json_string_value(json_object_get(json_array_get(json_object_get(j, "steps"), 0), "action")), "none");
	json_decref(j);
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_UNCHANGED);
	plan_free(&p);

	plan_init(&p, c->root);
	assert_non_null(plan_add_dir(&p, "/var-www", 0700, NULL, NULL, &err));
	j = plan_describe(&p, NULL);
	json_t *s0 = json_array_get(json_object_get(j, "steps"), 0);
	assert_string_equal(json_string_value(json_object_get(s0, "action")), "fail");
	assert_non_null(strstr(json_string_value(json_object_get(s0, "error")), "is a symlink, not a directory"));
	json_decref(j);
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_FAILED);
	assert_int_equal(mode_of(real), 0755);
	plan_free(&p);
	free(real);
}

/* absent never crosses a mount point, also a bind mount of the same file
 * system (same st_dev); skipped without the privilege to mount. */
static void test_absent_mount_point(void **state)
{
	struct ctx *c = *state;
	char *src = P(c, "/data"), *mnt = P(c, "/srv/tree/sub/m"), *keep = P(c, "/data/keep");
	struct plan p;
	char *err = NULL;

	mkdir_under(c, "/data");
	mkdir_under(c, "/srv/tree/sub/m");
	write_file(keep, "keep");
	if (mount(src, mnt, "none", MS_BIND, NULL) < 0) {
		free(src);
		free(mnt);
		free(keep);
		skip();
	}
	plan_init(&p, c->root);
	assert_non_null(plan_add_absent(&p, "/srv/tree", true, &err));
	assert_non_null(plan_add_absent(&p, "/srv/tree/sub/m", true, &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_FAILED);
	assert_non_null(strstr(p.steps[0]->error, "contains a mount point"));
	plan_free(&p);
	plan_init(&p, c->root);
	assert_non_null(plan_add_absent(&p, "/srv/tree/sub/m", true, &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_FAILED);
	assert_non_null(strstr(p.steps[0]->error, "is a mount point"));
	plan_free(&p);
	assert_int_equal(umount2(mnt, MNT_DETACH), 0);
	assert_true(exists(keep));
	free(src);
	free(mnt);
	free(keep);
}


/* Issue 9 kind 2: an absent step does not remove a tree that holds another
 * app's tree (however spelled, or reached through a symlink), and stops
 * before removing anything when a mount lies in it. */
static void test_absent_protected(void **state)
{
	struct ctx *c = *state;
	char *data = P(c, "/srv/www/a/b/var/Data.fs"), *tree = P(c, "/srv/www/a"), *link = P(c, "/srv/www/c");
	char *target = P(c, "/srv/www/a/x");
	struct plan p;
	struct step *st;
	char *err = NULL;

	mkdir_under(c, "/srv/www/a/b/var");
	mkdir_under(c, "/srv/www/a/x");
	write_file(data, "zodb");

	/* Another spelling of a directory inside it. */
	plan_init(&p, c->root);
	assert_non_null(st = plan_add_absent(&p, "/srv/www/a", true, &err));
	plan_absent_protect(st, "/srv/www//a/b/", "the deploy_to of app b");
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_FAILED);
	assert_non_null(strstr(p.steps[0]->error, "refusing to remove /srv/www/a"));
	assert_non_null(strstr(p.steps[0]->error, "the deploy_to of app b"));
	assert_true(exists(data));
	/* The plan says so too. */
	json_t *j = plan_describe(&p, NULL);
	assert_non_null(strstr(json_string_value(json_object_get(json_array_get(json_object_get(j, "steps"), 0),
								 "error")),
			       "the deploy_to of app b"));
	json_decref(j);
	plan_free(&p);

	/* The same directory, spelled with a trailing slash. */
	plan_init(&p, c->root);
	assert_non_null(st = plan_add_absent(&p, "/srv/www/a", true, &err));
	plan_absent_protect(st, "/srv/www/a/", "the deploy_to of app a2");
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_FAILED);
	assert_true(exists(data));
	plan_free(&p);

	/* Reached through a symlink: where it really is counts. */
	assert_int_equal(symlink("a/x", link), 0);
	plan_init(&p, c->root);
	assert_non_null(st = plan_add_absent(&p, "/srv/www/a", true, &err));
	plan_absent_protect(st, "/srv/www/c", "the deploy_to of app c");
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_FAILED);
	assert_non_null(strstr(p.steps[0]->error, "app c"));
	assert_true(exists(data));
	plan_free(&p);
	assert_int_equal(unlink(link), 0);

	/* A prefix that is not a whole component protects nothing here. */
	plan_init(&p, c->root);
	assert_non_null(st = plan_add_absent(&p, "/srv/www/a", true, &err));
	plan_absent_protect(st, "/srv/www/ab", "the deploy_to of app ab");
	plan_absent_protect(st, "/srv/www", "not inside");
	plan_absent_protect(st, "relative", "ignored");
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_CHANGED);
	assert_false(exists(tree));
	plan_free(&p);
	free(data);
	free(tree);
	free(link);
	free(target);
}

/* The undeploy of an app that left the stack (planned against the old one)
 * is given what the current stack places in its tree: another app's
 * deploy_to, this instance's declared mount points, the data directories. */
static void test_undeploy_protects_what_the_stacks_place(void **state)
{
	struct ctx *c = *state;
	const char *old_doc = "{\"opsworks\": {\"layers\": {\"zeoserver\": {\"instances\": {\"app1\": {}}}}},"
			      " \"deploy\": {\"zeoserver\": {\"deploy_to\": \"/srv/www/a\"}}}";
	const char *cur_docs[][2] = {
		{ "{\"deploy\": {\"plone_instances\": {\"deploy_to\": \"/srv/www//a/b/\"}}}",
		  "the deploy_to of app plone_instances" },
		{ "{\"agent\": {\"volumes\": {\"app1\": [{\"device\": \"/dev/xvdf\", \"mount_point\": \"/srv/www/a/v\"}]}}}",
		  "a mount point of agent.volumes" },
		{ "{\"ebs\": {\"devices\": {\"/dev/sdf\": {\"mount_point\": \"/srv/www/a/e\"}}}}",
		  "a mount point of ebs.devices" },
		{ "{\"plone_zeoserver\": {\"filestorage_dir\": \"/srv/www/a/var/filestorage\"}}",
		  "plone_zeoserver.filestorage_dir" },
		{ "{\"deploy\": {\"zeoserver\": {\"deploy_to\": \"/srv/www/a\"}}}", NULL },
		{ "{\"agent\": {\"volumes\": {\"other\": [{\"device\": \"/dev/xvdf\", \"mount_point\": \"/srv/www/a/v\"}]}},"
		  " \"deploy\": {\"ab\": {\"deploy_to\": \"/srv/www/ab\"}}}",
		  NULL },
	};
	struct stack *old = NULL;
	struct config cfg;
	struct stack_error serr;

	config_defaults(&cfg);
	mkdir_under(c, "/srv/www/a/b");
	assert_int_equal(stack_parse(old_doc, strlen(old_doc), "app1", &old, &serr), 0);
	for (size_t i = 0; i < ELEMENTSOF(cur_docs); i++) {
		struct stack *cur = NULL;
		struct recipe_ctx rc = { .stack = old, .config = &cfg, .event = EVENT_UNDEPLOY, .layer = "zeoserver",
					 .app = "zeoserver", .name = "zeoserver-undeploy" };
		struct plan p;
		char *err = NULL;
		json_t *j, *st, *absent = NULL;
		size_t k;

		assert_int_equal(stack_parse(cur_docs[i][0], strlen(cur_docs[i][0]), "app1", &cur, &serr), 0);
		rc.other_stack = cur;
		plan_init(&p, c->root);
		assert_int_equal(recipe_plan(&rc, &p, &err), 0);
		j = plan_describe(&p, NULL);
		json_array_foreach(json_object_get(j, "steps"), k, st)
			if (strcmp(json_string_value(json_object_get(st, "kind")), "absent") == 0)
				absent = st;
		assert_non_null(absent);
		if (cur_docs[i][1]) {
			const char *e = json_string_value(json_object_get(absent, "error"));
			if (!e || !strstr(e, cur_docs[i][1]))
				fail_msg("case %zu: error %s lacks %s", i, e ? e : "(none)", cur_docs[i][1]);
		} else
			assert_string_equal(json_string_value(json_object_get(absent, "action")), "remove");
		json_decref(j);
		plan_free(&p);
		stack_unref(cur);
	}
	stack_unref(old);
	config_free(&cfg);
}

/* Issue 9 kind 2 (break1): an undeploy does not remove a data directory left
 * at its default (<eph>/shared/zodb/filestorage, <eph>/shared/blobs,
 * /srv/exports, <eph>/shared/solr, <eph>/gluster-exports) that lies in its tree.
 * Before: only the directories the stack names were protected. */
static void test_undeploy_protects_default_data_dirs(void **state)
{
	struct ctx *c = *state;
	static const char layers[] = "{\"opsworks\": {\"layers\": {\"zeoserver\": {\"instances\": {\"app1\": {}}}";
	const char *cases[][4] = {
		/* eph, deploy_to, the rest of the document, what the error names */
		{ NULL, "/mnt/shared", "}}", "the file storage (plone_zeoserver.filestorage_dir, default)" },
		{ "/data/eph", "/data/eph", "}}", "the file storage (plone_zeoserver.filestorage_dir, default)" },
		{ NULL, "/mnt/shared/zodb", "}}", "/mnt/shared/zodb/filestorage" },
		{ NULL, "/srv/exports", ", \"shared_blobs\": {\"instances\": {\"app9\": {}}}}}",
		  "the NFS export of the shared blobs" },
		{ NULL, "/mnt/shared/blobs", "}}, \"plone_instances\": {\"nfs_blobs\": true}",
		  "the shared blobs' mount point" },
		{ NULL, "/mnt/shared/solr", ", \"solr\": {\"instances\": {\"app9\": {}}}}}", "Solr's index" },
		{ NULL, "/mnt/gluster-exports",
		  "}}, \"agent\": {\"layers\": {\"shared_blobs\": {\"setup\": [\"gluster\"]}}}",
		  "the GlusterFS brick" },
		{ NULL, "/var/lib/agentd", "}}", "agentd's state_dir" },
		{ NULL, "/var/log/agentd", "}}", "agentd's log_dir" },
		{ NULL, "/mnt/other", "}}", NULL },
	};

	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		struct config cfg;
		struct stack *s = NULL;
		struct stack_error serr;
		struct plan p;
		char *err = NULL, *doc;
		json_t *j, *st, *absent = NULL;
		size_t k;

		config_defaults(&cfg);
		if (cases[i][0])
			json_object_set_new(cfg.extra, "ephemeral_mount_point", json_string(cases[i][0]));
		doc = xasprintf("%s%s, \"deploy\": {\"zeoserver\": {\"deploy_to\": \"%s\"}}}", layers, cases[i][2],
				cases[i][1]);
		if (stack_parse(doc, strlen(doc), "app1", &s, &serr) != 0)
			fail_msg("case %zu: %s: %s", i, serr.path, serr.message);
		mkdir_under(c, cases[i][1]);
		{
			struct recipe_ctx rc = { .stack = s, .config = &cfg, .event = EVENT_UNDEPLOY, .layer = "zeoserver",
						 .app = "zeoserver", .name = "zeoserver-undeploy" };
			plan_init(&p, c->root);
			assert_int_equal(recipe_plan(&rc, &p, &err), 0);
		}
		j = plan_describe(&p, NULL);
		json_array_foreach(json_object_get(j, "steps"), k, st)
			if (strcmp(json_string_value(json_object_get(st, "kind")), "absent") == 0)
				absent = st;
		assert_non_null(absent);
		if (cases[i][3]) {
			const char *e = json_string_value(json_object_get(absent, "error"));
			if (!e || !strstr(e, cases[i][3]))
				fail_msg("case %zu: error %s lacks %s", i, e ? e : "(none)", cases[i][3]);
		} else
			assert_string_equal(json_string_value(json_object_get(absent, "action")), "remove");
		json_decref(j);
		plan_free(&p);
		stack_unref(s);
		free(doc);
		config_free(&cfg);
	}
}

/* A mount below the tree: refused before anything is removed (rm_children
 * alone stops at the mount, after removing what it met first). */
static void test_absent_mount_below_removes_nothing(void **state)
{
	struct ctx *c = *state;
	char *src = P(c, "/data"), *mnt = P(c, "/srv/tree/m/n"), *keep[3];
	const char *names[3] = { "/srv/tree/a", "/srv/tree/z/Data.fs", "/srv/tree/m/k" };
	struct plan p;
	char *err = NULL;

	mkdir_under(c, "/data");
	mkdir_under(c, "/srv/tree/m/n");
	mkdir_under(c, "/srv/tree/z");
	for (size_t i = 0; i < 3; i++) {
		keep[i] = P(c, names[i]);
		write_file(keep[i], "keep");
	}
	if (mount(src, mnt, "none", MS_BIND, NULL) < 0) {
		for (size_t i = 0; i < 3; i++)
			free(keep[i]);
		free(src);
		free(mnt);
		skip();
	}
	plan_init(&p, c->root);
	assert_non_null(plan_add_absent(&p, "/srv/tree", true, &err));
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_FAILED);
	assert_non_null(strstr(p.steps[0]->error, "contains a mount point"));
	assert_non_null(strstr(p.steps[0]->error, mnt));
	for (size_t i = 0; i < 3; i++)
		assert_true(exists(keep[i]));
	plan_free(&p);
	assert_int_equal(umount2(mnt, MNT_DETACH), 0);
	for (size_t i = 0; i < 3; i++)
		free(keep[i]);
	free(src);
	free(mnt);
}

/* The user kind reads the user database when it is described or run.
 * Under a test root it creates nothing: a missing user is a note. */
static void test_user_step(void **state)
{
	struct ctx *c = *state;
	struct user_step_opts there = { .user = "root", .group = "root", .home = "/root" };
	struct user_step_opts missing = { .user = "no-such-user-xyz", .group = "no-such-group-xyz", .home = "/srv/x" };
	char *err = NULL;
	struct plan p;
	json_t *j, *steps;

	plan_init(&p, c->root);
	assert_non_null(plan_add_user(&p, &there, &err));
	assert_non_null(plan_add_user(&p, &missing, &err));
	j = plan_describe(&p, NULL);
	steps = json_object_get(j, "steps");
	assert_string_equal(json_string_value(json_object_get(json_array_get(steps, 0), "kind")), "user");
	assert_string_equal(json_string_value(json_object_get(json_array_get(steps, 0), "action")), "none");
	assert_null(json_object_get(json_array_get(steps, 0), "message"));
	assert_string_equal(json_string_value(json_object_get(json_array_get(steps, 1), "action")), "none");
	assert_non_null(strstr(json_string_value(json_object_get(json_array_get(steps, 1), "message")),
			       "is missing; not created under root"));
	json_decref(j);
	run_plan(c, &p);
	assert_int_equal(p.steps[0]->status, STEP_UNCHANGED);
	assert_int_equal(p.steps[1]->status, STEP_SKIPPED);
	assert_false(c->failed);
	plan_free(&p);

	/* On the real root a missing user would be created: described only. */
	plan_init(&p, "/");
	assert_non_null(plan_add_user(&p, &missing, &err));
	j = plan_describe(&p, NULL);
	assert_string_equal(
		json_string_value(json_object_get(json_array_get(json_object_get(j, "steps"), 0), "action")), "create");
	json_decref(j);
	plan_free(&p);
}

static void test_note_and_empty(void **state)
{
	struct ctx *c = *state;
	struct plan p;
	json_t *j, *s0;

	plan_init(&p, c->root);
	run_plan(c, &p);
	assert_false(c->failed);
	plan_free(&p);

	plan_init(&p, c->root);
	plan_add_note(&p, "plone_buildout::solr", "not this instance's app");
	run_plan(c, &p);
	assert_false(c->failed);
	assert_int_equal(p.steps[0]->status, STEP_SKIPPED);
	j = plan_describe(&p, NULL);
	s0 = json_array_get(json_object_get(j, "steps"), 0);
	assert_string_equal(json_string_value(json_object_get(s0, "kind")), "note");
	assert_string_equal(json_string_value(json_object_get(s0, "action")), "none");
	assert_string_equal(json_string_value(json_object_get(s0, "message")), "not this instance's app");
	assert_true(json_is_null(json_object_get(s0, "recipe")));
	json_decref(j);
	plan_free(&p);
}

static void test_describe_json(void **state)
{
	struct ctx *c = *state;
	struct plan p;
	char *err = NULL;
	json_t *j, *steps;

	write_under(c, "/d", "x");
	plan_init(&p, c->root);
	assert_non_null(plan_add_dir(&p, "/srv", 0755, NULL, NULL, &err));
	assert_non_null(plan_add_file(&p, "/srv/a", "a\n", 2, 0644, NULL, NULL, &err));
	assert_non_null(plan_add_absent(&p, "/missing", false, &err));
	assert_non_null(plan_add_absent(&p, "/d", false, &err));
	assert_non_null(plan_add_file(&p, "/x", "x", 1, 0644, "no-such-user-xyz", NULL, &err));
	assert_non_null(plan_add_link(&p, "/l", "target", &err));
	add_sh(&p, "true", NULL, 0);

	j = plan_describe(&p, NULL);
	steps = json_object_get(j, "steps");
	assert_int_equal(json_array_size(steps), 7);
	const char *want[][2] = { { "dir", "create" },	 { "file", "create" }, { "absent", "none" },
				  { "absent", "remove" }, { "file", "fail" },   { "link", "create" },
				  { "exec", "run" } };
	for (size_t i = 0; i < 7; i++) {
		json_t *s = json_array_get(steps, i);
		assert_string_equal(json_string_value(json_object_get(s, "kind")), want[i][0]);
		assert_string_equal(json_string_value(json_object_get(s, "action")), want[i][1]);
	}
	assert_string_equal(json_string_value(json_object_get(json_array_get(steps, 4), "error")),
			    "unknown user no-such-user-xyz");
	assert_string_equal(json_string_value(json_object_get(json_array_get(steps, 6), "target")), "true");
	json_decref(j);
	/* Nothing was touched. */
	char *srv = P(c, "/srv");
	assert_false(exists(srv));
	free(srv);
	plan_free(&p);
}

static void test_noop_speed(void **state)
{
	struct ctx *c = *state;
	struct plan p;
	char *err = NULL;
	char content[2048];
	int64_t start, t;

	memset(content, 'x', sizeof(content));
	for (size_t i = 63; i < sizeof(content); i += 64)
		content[i] = '\n';
	plan_init(&p, c->root);
	for (int i = 0; i < 20; i++) {
		char path[64];
		snprintf(path, sizeof(path), "/etc/app/conf%d", i);
		assert_non_null(plan_add_file(&p, path, content, sizeof(content), 0644, NULL, NULL, &err));
	}
	run_plan(c, &p);
	assert_int_equal(c->n_changed, 20);
	start = time_monotonic_usec();
	run_plan(c, &p);
	t = time_monotonic_usec() - start;
	assert_int_equal(c->n_changed, 0);
	/* The design's target for a no-op run of 20 files is 20 ms; this is
	 * about 0.3 ms here, loop set-up included. */
	assert_true(t < 20000);
	plan_free(&p);

	/* Many synchronous steps: a loop, not a recursion. */
	plan_init(&p, c->root);
	for (int i = 0; i < 100000; i++)
		plan_add_note(&p, "n", NULL);
	run_plan(c, &p);
	assert_int_equal(p.steps[99999]->status, STEP_SKIPPED);
	plan_free(&p);
}

static void test_status_strings(void **state)
{
	assert_string_equal(step_status_to_string(STEP_UNCHANGED), "unchanged");
	assert_string_equal(step_status_to_string(STEP_CHANGED), "changed");
	assert_string_equal(step_status_to_string(STEP_FAILED), "failed");
	assert_string_equal(step_status_to_string(STEP_SKIPPED), "skipped");
	assert_string_equal(step_status_to_string(STEP_PENDING), "pending");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_file_create_and_converge, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_describe_diff, setup, teardown),
		cmocka_unit_test_setup_teardown(test_packages_describe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_service_describe, setup, teardown),
		cmocka_unit_test_setup_teardown(test_describe_redacts_private, setup, teardown),
		cmocka_unit_test_setup_teardown(test_describe_large_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_files_recipe_secret_mode, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_over_symlink, setup, teardown),
		cmocka_unit_test_setup_teardown(test_file_owner, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_link, setup, teardown),
		cmocka_unit_test_setup_teardown(test_absent, setup, teardown),

		cmocka_unit_test_setup_teardown(test_absent_deep_tree_low_fd_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_paths, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exec_changed_and_hash, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exec_changed_override, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exec_env_cwd_user, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exec_output_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_guard_only_if_changed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_guard_owed_after_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_guard_unless_exists, setup, teardown),
		cmocka_unit_test_setup_teardown(test_guard_only_if_exists, setup, teardown),
		cmocka_unit_test_setup_teardown(test_user_step, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failure_stops_plan, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_last_step, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_escape, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_escape_fallback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dir_symlink, setup, teardown),
		cmocka_unit_test_setup_teardown(test_absent_mount_point, setup, teardown),
		cmocka_unit_test_setup_teardown(test_absent_protected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_undeploy_protects_default_data_dirs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_undeploy_protects_what_the_stacks_place, setup, teardown),
		cmocka_unit_test_setup_teardown(test_absent_mount_below_removes_nothing, setup, teardown),
		cmocka_unit_test_setup_teardown(test_note_and_empty, setup, teardown),
		cmocka_unit_test_setup_teardown(test_describe_json, setup, teardown),
		cmocka_unit_test_setup_teardown(test_noop_speed, setup, teardown),
		cmocka_unit_test(test_status_strings),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

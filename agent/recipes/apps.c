/* SPDX-License-Identifier: BSD-2-Clause */
/* Plone apps (issue 3): instances-*, zeoserver-*, solr-*. Each recipe plans
 * steps for its own app only (plone_instances.app_name, ...): directories,
 * the code release, deploy.cfg, buildout when deploy.cfg changed (or when
 * forced), one supervisor program per service, and rolling restarts after a
 * build. See doc/apps.md. */
#include <errno.h>
#include <string.h>

#include "apps.h"
#include "plone.h"
#include "recipe.h"
#include "storage.h"
#include "config.h"
#include "steps/plan.h"
#include "stack/stack.h"
#include "steps/step_release.h"
#include "steps/step_fetch.h"
#include "steps/step_packages.h"
#include "steps/step_service.h"
#include "steps/step_user.h"
#include "strv.h"

static const char *const shared_dirs[] = { "eggs", "downloads", "extends", "var", "parts", "log", NULL };
#define SUPERVISOR_LOG_DIR "/var/log/supervisor"

enum app_op { OP_SETUP, OP_CONFIGURE, OP_DEPLOY, OP_UNDEPLOY, OP_STOP, OP_START, OP_RESTART, OP_REBUILD };

struct app_plan {
	const struct recipe_ctx *ctx;
	struct plan *plan;
	enum app_kind kind;
	const struct stack_app *app;
	const char *root;
	char *host_deploy_to; /* owned: deploy_to as the host sees it (under root) for supervisord and env */
	char *host_log_dir;   /* owned: SUPERVISOR_LOG_DIR as the host sees it */
	struct app_services sv;
	char **ret_error;
};

static int add_dir(struct app_plan *a, const char *path, mode_t mode, bool owned)
{
	return plan_add_dir(a->plan, path, mode, owned ? a->app->user : NULL, owned ? a->app->group : NULL,
			    a->ret_error)
		       ? 0
		       : -EINVAL;
}

static int add_link(struct app_plan *a, const char *path, const char *target)
{
	return plan_add_link(a->plan, path, target, a->ret_error) ? 0 : -EINVAL;
}

/* deploy_to, shared/<dirs>, releases, and the blob and filestorage dirs. */
static int plan_dirs(struct app_plan *a)
{
	const char *d = a->app->deploy_to;
	const json_t *sec = plone_section(a->ctx->stack, apps_section_name(a->kind));
	int r;

	if ((r = add_dir(a, d, 0755, true)) < 0)
		return r;
	{
		_cleanup_free_ char *p = xasprintf("%s/shared", d);
		if ((r = add_dir(a, p, 0770, true)) < 0)
			return r;
	}
	{
		_cleanup_free_ char *p = xasprintf("%s/releases", d);
		if ((r = add_dir(a, p, 0755, true)) < 0)
			return r;
	}
	for (const char *const *s = shared_dirs; *s; s++) {
		_cleanup_free_ char *p = xasprintf("%s/shared/%s", d, *s);
		if (strcmp(*s, "log") == 0 || (a->kind == APP_SOLR && strcmp(*s, "var") == 0))
			continue; /* links, below */
		if ((r = add_dir(a, p, 0750, true)) < 0)
			return r;
	}
	if (a->kind == APP_SOLR) {
		/* Solr keeps its index in data_dir (reference §7), its logs in its part. */
		const json_t *dd = json_object_get(sec, "data_dir");
		_cleanup_free_ char *def = xasprintf("%s/shared/solr", config_string(a->ctx->config, "ephemeral_mount_point"));
		_cleanup_free_ char *var = xasprintf("%s/shared/var", d), *log = xasprintf("%s/shared/log", d);
		const char *data = json_is_string(dd) ? json_string_value(dd) : def;
		if ((r = add_dir(a, data, 0750, true)) < 0 || (r = add_link(a, var, data)) < 0)
			return r;
		return add_link(a, log, "parts/solr-instance/logs");
	}
	{
		/* shared/log -> shared/var/log, so that one rotation covers Zope's logs (reference §3). */
		_cleanup_free_ char *vl = xasprintf("%s/shared/var/log", d), *log = xasprintf("%s/shared/log", d);
		if ((r = add_dir(a, vl, 0750, true)) < 0 || (r = add_link(a, log, "var/log")) < 0)
			return r;
	}
	if (json_is_true(json_object_get(json_object_get(a->ctx->stack->root, "tmpdir"), "global_tmp"))) {
		_cleanup_free_ char *t = xasprintf("%s/shared/var/tmp", d);
		if ((r = add_link(a, t, "/tmp")) < 0)
			return r;
	}
	if (json_is_true(json_object_get(sec, "nfs_blobs")) || json_is_true(json_object_get(sec, "gluster_blobs"))) {
		if ((r = storage_plan_blob_mounts(a->ctx, a->app, sec, a->plan, a->ret_error)) < 0)
			return r;
	} else {
		const char *blob_dir = json_string_value(json_object_get(plone_section(a->ctx->stack, "plone_blobs"),
									 "blob_dir"));
		if (blob_dir) {
			_cleanup_free_ char *p = xasprintf("%s/shared/var/blobstorage", d);
			if ((r = add_dir(a, blob_dir, 0700, true)) < 0 || (r = add_link(a, p, blob_dir)) < 0)
				return r;
		}
	}
	{
		/* Filestorage: the zeoserver, or a single box whose parts include
		 * zeoserver; also when the blobs are shared (the file storage never is). */
		const json_t *parts = json_object_get(a->app->json, "buildout_parts_to_include");
		bool zeo_part = false;
		size_t i;
		json_t *v;

		json_array_foreach((json_t *)parts, i, v)
			zeo_part |= json_is_string(v) && strcmp(json_string_value(v), "zeoserver") == 0;
		if (a->kind == APP_ZEOSERVER || zeo_part) {
			r = storage_plan_filestorage(a->ctx, a->app, plone_section(a->ctx->stack, "plone_zeoserver"),
						     a->plan, a->ret_error);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/* os_packages (reference §4.2 instances-setup step 3, §7): the kind's
 * build dependencies, then the stack's; installed only when missing. */
static int plan_packages(struct app_plan *a)
{
	static const char *const dev[] = { "libjpeg-dev", "libpng-dev", "libxml2-dev", "libxslt1-dev", NULL };
	const json_t *pi = plone_section(a->ctx->stack, "plone_instances");
	const json_t *rs = json_object_get(pi, "relstorage");
	const json_t *extra = json_object_get(a->app->json, "os_packages");
	_cleanup_free_ const char **query = config_argv(a->ctx->config, "package_query_command");
	_cleanup_free_ const char **install = config_argv(a->ctx->config, "package_install_command");
	const char *names[64];
	size_t n = 0, i;
	json_t *v;

	if (a->kind == APP_SOLR)
		names[n++] = "default-jre-headless"; /* the cookbook's openjdk-7 is long gone */
	else
		for (i = 0; dev[i]; i++)
			names[n++] = dev[i];
	if (a->kind == APP_INSTANCES && json_is_true(json_object_get(pi, "enable_relstorage")) &&
	    !json_is_false(json_object_get(rs, "enable_cache"))) {
		const char *adapter = json_string_value(json_object_get(json_object_get(rs, "db"), "adapter"));
		names[n++] = "libmemcached-dev";
		names[n++] = adapter && strcmp(adapter, "mysql") == 0 ? "libmysqlclient-dev" : "libpq-dev";
	}
	json_array_foreach((json_t *)extra, i, v)
		if (n < ELEMENTSOF(names) - 1)
			names[n++] = json_string_value(v);
	names[n] = NULL;
	{
		struct packages_step_opts o = { .names = names, .query_argv = query, .install_argv = install,
						.timeout_sec = config_int(a->ctx->config, "buildout_timeout") };
		return plan_add_packages(a->plan, &o, a->ret_error) ? 0 : -EINVAL;
	}
}

/* The deploy user and group (reference §3 buildout_setup step 3), created
 * when missing. The step reads the user database when it runs, not the
 * planner; under a test root it creates nothing and says so (step_user.h). */
static int plan_user(struct app_plan *a)
{
	struct user_step_opts o = { .user = a->app->user, .group = a->app->group, .home = a->app->deploy_to };

	return plan_add_user(a->plan, &o, a->ret_error) ? 0 : -EINVAL;
}

/* buildout_cache_archives: each {url, path, user, password, purge} unpacked
 * once into deploy_to/<path> (reference §3 buildout_setup step 6). */
static int plan_cache_archives(struct app_plan *a)
{
	const json_t *list = json_object_get(a->app->json, "buildout_cache_archives");
	size_t i;
	json_t *v;

	json_array_foreach((json_t *)list, i, v) {
		const char *u = json_string_value(json_object_get(v, "user"));
		const char *pw = json_string_value(json_object_get(v, "password"));
		_cleanup_free_ char *dir = xasprintf("%s/%s", a->app->deploy_to,
						     json_string_value(json_object_get(v, "path")));
		_cleanup_free_ char *userpwd = u && pw ? xasprintf("%s:%s", u, pw) : NULL;
		struct fetch_step_opts o = {
			.url = json_string_value(json_object_get(v, "url")),
			.dir = dir,
			.userpwd = userpwd,
			.user = a->app->user,
			.purge = json_is_true(json_object_get(v, "purge")),
			.timeout_sec = config_int(a->ctx->config, "buildout_timeout"),
		};
		struct step *s;

		if (add_dir(a, dir, 0750, true) < 0)
			return -EINVAL;
		s = plan_add_fetch(a->plan, &o, a->ret_error);
		if (!s)
			return -EINVAL;
		s->secret = userpwd != NULL;
	}
	return 0;
}

static char **env_strv(const json_t *env)
{
	size_t n = json_object_size(env), i = 0;
	char **v = xcalloc(n + 3, sizeof(char *));
	const char *k;
	json_t *val;

	json_object_foreach((json_t *)env, k, val)
		v[i++] = xasprintf("%s=%s", k, json_string_value(val));
	if (!json_object_get(env, "PATH"))
		v[i++] = xstrdup("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
	return v;
}

/* The buildout command: buildout_command from agentd.conf when set (e.g. a
 * wrapper around Debian's zc.buildout), else the release's own bin/buildout.
 * Both get "-c deploy.cfg". */
static char **build_argv(const struct config *c)
{
	_cleanup_free_ const char **cmd = config_argv(c, "buildout_command");
	size_t n = 0;
	char **v;

	while (cmd && cmd[n])
		n++;
	v = xcalloc(n + 4, sizeof(char *));
	if (!cmd)
		v[n++] = xstrdup("bin/buildout");
	else
		for (size_t i = 0; i < n; i++)
			v[i] = xstrdup(cmd[i]);
	v[n++] = xstrdup("-c");
	v[n++] = xstrdup("deploy.cfg");
	return v;
}

static bool has_buildout_command(const struct config *c)
{
	_cleanup_free_ const char **cmd = config_argv(c, "buildout_command");
	return cmd != NULL;
}

/* The buffer's text with every % doubled (supervisord expands %(name)s
 * everywhere in a program section); frees b. */
static char *pct_escape(struct buf *b)
{
	struct buf o;

	buf_init(&o);
	for (const char *c = b->data; c && *c; c++)
		buf_puts(&o, *c == '%' ? "%%" : (char[]){ *c, '\0' });
	buf_free(b);
	return buf_steal(&o);
}

static char *program_conf(struct app_plan *a, const struct app_service *s, const json_t *env)
{
	struct buf b;
	const char *logdir = a->host_log_dir;
	const char *k;
	json_t *v;
	bool first = true;

	buf_init(&b);
	/* The first line names the app: the service update treats as the app's
	 * only the files (and groups) that say so (step_service.c). */
	buf_printf(&b, "; agentd app=%s\n; Written by agentd: changes here are overwritten.\n[program:%s]\n",
		   a->app->name, s->name);
	buf_printf(&b, "command = %s/current/%s\n", a->host_deploy_to, s->command);
	buf_printf(&b, "directory = %s/current\n", a->host_deploy_to);
	buf_printf(&b, "user = %s\n", a->app->user);
	buf_puts(&b, "autostart = true\nautorestart = unexpected\nstartsecs = 1\nstopasgroup = true\nkillasgroup = true\n");
	buf_printf(&b, "stdout_logfile = %s/%s-stdout.log\n", logdir, s->name);
	buf_printf(&b, "stderr_logfile = %s/%s-stderr.log\n", logdir, s->name);
	buf_puts(&b, "stdout_logfile_maxbytes = 50MB\nstdout_logfile_backups = 10\n");
	buf_puts(&b, "stderr_logfile_maxbytes = 50MB\nstderr_logfile_backups = 10\n");
	buf_puts(&b, "environment = ");
	json_object_foreach((json_t *)env, k, v) {
		/* apps_validate.c refused every value that would not read back here. */
		buf_printf(&b, "%s%s=\"%s\"", first ? "" : ",", k, json_string_value(v));
		first = false;
	}
	buf_puts(&b, "\n");
	return pct_escape(&b);
}

static const char **service_names(const struct app_services *sv)
{
	const char **v = xcalloc(sv->n + 1, sizeof(char *));
	for (size_t i = 0; i < sv->n; i++)
		v[i] = sv->v[i].name;
	return v;
}

static long rpc_timeout_ms(const struct app_plan *a)
{
	return config_int(a->ctx->config, "supervisor_timeout") * 1000;
}

/* deploy.cfg, buildout when it changed (or forced), the programs, the
 * update, and a rolling restart of every service after a build or a new
 * release. */
static int plan_configure(struct app_plan *a, bool force_build, bool new_release)
{
	const struct config *c = a->ctx->config;
	json_auto_t *env = apps_environment(a->app, a->host_deploy_to);
	_cleanup_free_ char *cfg = apps_render_deploy_cfg(a->ctx->stack, a->kind, a->app, a->host_deploy_to);
	_cleanup_free_ char *cur = xasprintf("%s/current", a->app->deploy_to);
	_cleanup_free_ char *cfg_path = xasprintf("%s/deploy.cfg", cur);
	_cleanup_free_ char *cfg_id = xasprintf("cfg:%s", a->app->name);
	_cleanup_free_ char *build_id = xasprintf("build:%s", a->app->name);
	_cleanup_free_ char *rel_id = xasprintf("release:%s", a->app->name);
	_cleanup_free_ const char **names = NULL;
	char **envv = env_strv(env), **argv = build_argv(c);
	struct service_conf *confs = NULL;
	struct step *s, *update;
	int r = -EINVAL;

	s = plan_add_file(a->plan, cfg_path, cfg, strlen(cfg), 0600, a->app->user, a->app->group, a->ret_error);
	if (!s)
		goto out;
	s->id = xstrdup(cfg_id);
	s->secret = true; /* RelStorage passwords */
	if (!has_buildout_command(c)) {
		char *boot[] = { "python3", "bootstrap.py", "-c", "deploy.cfg", NULL };
		_cleanup_free_ char *bb = xasprintf("%s/bin/buildout", cur);
		struct exec_step_opts o = { .argv = boot, .env = envv, .user = a->app->user, .cwd = cur,
					    .timeout_sec = config_int(c, "buildout_timeout") };
		s = plan_add_exec(a->plan, "bootstrap", &o, a->ret_error);
		if (!s)
			goto out;
		s->unless_exists = xstrdup(bb);
		if (!force_build)
			step_only_if_changed(s, cfg_id);
	}
	{
		struct exec_step_opts o = { .argv = argv, .env = envv, .user = a->app->user, .cwd = cur,
					    .timeout_sec = config_int(c, "buildout_timeout") };
		s = plan_add_exec(a->plan, "buildout", &o, a->ret_error);
		if (!s)
			goto out;
		s->id = xstrdup(build_id);
		if (!force_build)
			step_only_if_changed(s, cfg_id);
	}
	if (add_dir(a, SUPERVISOR_LOG_DIR, 0755, false) < 0 || add_dir(a, c->supervisor_conf_dir, 0755, false) < 0)
		goto out;
	confs = xcalloc(a->sv.n + 1, sizeof(*confs));
	for (size_t i = 0; i < a->sv.n; i++) {
		char *conf = program_conf(a, &a->sv.v[i], env);
		char *path = xasprintf("%s/%s.conf", c->supervisor_conf_dir, a->sv.v[i].name);

		confs[i] = (struct service_conf){ .path = path, .content = conf };
		/* The whole app environment is in it: root's only, and never in a diff. */
		s = plan_add_file(a->plan, path, conf, strlen(conf), 0600, NULL, NULL, a->ret_error);
		if (!s)
			goto out;
		s->secret = true;
	}
	names = service_names(&a->sv);
	{
		/* The update compares the program files in a plan (its run's reloadConfig sees them). */
		struct service_step_opts o = { .action = SERVICE_UPDATE, .socket = c->supervisor_socket,
					       .timeout_ms = rpc_timeout_ms(a), .start_timeout_ms = rpc_timeout_ms(a),
					       .programs = names, .app = a->app->name,
					       .conf_dir = c->supervisor_conf_dir, .confs = confs, .n_confs = a->sv.n };
		update = plan_add_service(a->plan, &o, a->ret_error);
		if (!update)
			goto out;
	}
	for (size_t i = 0; i < a->sv.n; i++) {
		struct service_step_opts o = { .action = SERVICE_RESTART, .socket = c->supervisor_socket,
					       .timeout_ms = rpc_timeout_ms(a), .start_timeout_ms = rpc_timeout_ms(a),
					       .name = a->sv.v[i].name,
					       .delay_sec = a->sv.v[i].delay, .update = update };
		s = plan_add_service(a->plan, &o, a->ret_error);
		if (!s)
			goto out;
		step_only_if_changed(s, build_id);
		if (new_release)
			step_only_if_changed(s, rel_id);
	}
	r = 0;
out:
	for (size_t i = 0; confs && i < a->sv.n; i++) {
		free((char *)confs[i].path);
		free((char *)confs[i].content);
	}
	free(confs);
	strv_free(envv);
	strv_free(argv);
	return r;
}

/* Configure and rebuild act only on a deployed app (reference §4.2): one
 * whose current link exists. The steps find out when they run (a guard on
 * each), not the planner; until then the plan says why it does nothing. */
static int plan_configure_deployed(struct app_plan *a, const char *canonical, bool rebuild)
{
	_cleanup_free_ char *cur = xasprintf("%s/current", a->app->deploy_to);
	size_t first = a->plan->n_steps;
	int r;

	plan_add_note_unless_exists(a->plan, canonical, "not deployed yet: nothing to configure", cur);
	r = plan_dirs(a);
	if (r >= 0)
		r = plan_cache_archives(a);
	if (r >= 0)
		r = plan_configure(a, rebuild, false);
	for (size_t i = first + 1; i < a->plan->n_steps; i++)
		step_only_if_exists(a->plan->steps[i], cur);
	return r;
}

static int plan_release(struct app_plan *a)
{
	const struct config *c = a->ctx->config;
	const json_t *scm = json_object_get(a->app->json, "scm");
	const char *type = json_string_value(json_object_get(scm, "scm_type"));
	json_auto_t *env = apps_environment(a->app, a->host_deploy_to);
	_cleanup_free_ char *cfg = apps_render_deploy_cfg(a->ctx->stack, a->kind, a->app, a->host_deploy_to);
	json_auto_t *scm_public = json_deep_copy(scm);
	_cleanup_free_ char *key = NULL;
	char **envv, **argv;
	const char *boot[] = { "python3", "bootstrap.py", "-c", "deploy.cfg", NULL };
	/* What identifies the source, recorded in the release: without secrets. */
	json_object_del(scm_public, "password");
	json_object_del(scm_public, "ssh_key");
	key = json_dumps(scm_public, JSON_SORT_KEYS | JSON_COMPACT);
	envv = env_strv(env);
	argv = build_argv(c);
	struct release_step_opts o = {
		.deploy_to = a->app->deploy_to,
		.scm = !type || strcmp(type, "git") == 0 ? RELEASE_GIT
		       : strcmp(type, "local") == 0	 ? RELEASE_LOCAL
							 : RELEASE_ARCHIVE,
		.repository = json_string_value(json_object_get(scm, "repository")),
		.revision = json_string_value(json_object_get(scm, "revision")),
		.source_key = key,
		.user = a->app->user,
		.group = a->app->group,
		.shared = shared_dirs,
		.deploy_cfg = cfg,
		.bootstrap_argv = has_buildout_command(c) ? NULL : boot,
		.build_argv = (const char *const *)argv,
		.env = (const char *const *)envv,
		.keep = a->app->keep_releases,
		.timeout_sec = config_int(c, "buildout_timeout"),
	};
	struct step *s;
	int r = 0;

	_cleanup_free_ char *userpwd = NULL;
	const char *u = json_string_value(json_object_get(scm, "user"));
	const char *pw = json_string_value(json_object_get(scm, "password"));

	if (o.scm == RELEASE_ARCHIVE && u && pw)
		o.userpwd = userpwd = xasprintf("%s:%s", u, pw);
	s = plan_add_release(a->plan, &o, a->ret_error);
	if (s) {
		s->id = xasprintf("release:%s", a->app->name);
		s->secret = true; /* the repository URL may carry credentials */
	} else
		r = -EINVAL;
	strv_free(envv);
	strv_free(argv);
	return r;
}

static int plan_action_all(struct app_plan *a, enum service_action act)
{
	for (size_t i = 0; i < a->sv.n; i++) {
		/* A restart is rolling, as after a deploy: each running service waits its delay. */
		struct service_step_opts o = { .action = act, .socket = a->ctx->config->supervisor_socket,
					       .timeout_ms = rpc_timeout_ms(a), .start_timeout_ms = rpc_timeout_ms(a),
					       .name = a->sv.v[i].name,
					       .delay_sec = act == SERVICE_RESTART ? a->sv.v[i].delay : 0 };
		if (!plan_add_service(a->plan, &o, a->ret_error))
			return -EINVAL;
	}
	return 0;
}

/* What an undeploy's absent step must not take with it, from one stack:
 * the other apps' trees and the stack's effective data directories on this
 * instance, defaults and mount points included (storage_data_dirs, the list
 * validation checks deploy_to against). */
static void protect_from(struct step *st, const struct stack_app *app, const struct stack *s,
			 const struct config *c)
{
	_cleanup_(storage_dirs_free) struct storage_dirs d = { 0 };

	if (!s)
		return;
	for (size_t i = 0; i < s->n_apps; i++) {
		_cleanup_free_ char *what = xasprintf("the deploy_to of app %s", s->apps[i].name);
		if (strcmp(s->apps[i].name, app->name) != 0 || strcmp(s->apps[i].deploy_to, app->deploy_to) != 0)
			plan_absent_protect(st, s->apps[i].deploy_to, what);
	}
	storage_data_dirs(s, c, &d);
	for (size_t i = 0; i < d.n; i++)
		plan_absent_protect(st, d.v[i].path, d.v[i].what);
}

static int plan_undeploy(struct app_plan *a)
{
	const struct config *c = a->ctx->config;
	const char *none[] = { NULL };
	struct service_step_opts o = { .action = SERVICE_UPDATE, .socket = c->supervisor_socket,
				       .timeout_ms = rpc_timeout_ms(a), .programs = none, .app = a->app->name,
				       .conf_dir = c->supervisor_conf_dir };

	/* Only this app: the update removes the program files that name it
	 * (wanting none), then stops and removes their groups; then its deploy_to. */
	if (!plan_add_service(a->plan, &o, a->ret_error))
		return -EINVAL;
	struct step *st = plan_add_absent(a->plan, a->app->deploy_to, true, a->ret_error);
	if (!st)
		return -EINVAL;
	/* Two spellings of one tree, or a tree placed inside this one by the
	 * current stack: the step fails rather than delete another's data. */
	protect_from(st, a->app, a->ctx->stack, c);
	protect_from(st, a->app, a->ctx->other_stack, c);
	return 0;
}

static enum app_op op_of(const char *name)
{
	static const struct {
		const char *suffix;
		enum app_op op;
	} ops[] = { { "-setup", OP_SETUP },	{ "-configure", OP_CONFIGURE }, { "-deploy", OP_DEPLOY },
		    { "-undeploy", OP_UNDEPLOY }, { "-stop", OP_STOP },	    { "-start", OP_START },
		    { "-restart", OP_RESTART }, { "-rebuild", OP_REBUILD } };
	const char *dash = strchr(name, '-');

	for (size_t i = 0; dash && i < ELEMENTSOF(ops); i++)
		if (strcmp(dash, ops[i].suffix) == 0)
			return ops[i].op;
	return OP_CONFIGURE;
}

static int apps_plan(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	const char *canonical = recipe_canonical_name(ctx->name);
	enum app_kind kind = strncmp(canonical, "instances", 9) == 0	 ? APP_INSTANCES
			     : strncmp(canonical, "zeoserver", 9) == 0 ? APP_ZEOSERVER
								       : APP_SOLR;
	enum app_op op = op_of(canonical);
	const char *name = apps_app_name(ctx->stack, kind);
	struct app_plan a = { .ctx = ctx, .plan = plan, .kind = kind, .root = plan->root, .ret_error = ret_error };
	int r = 0;

	if (ctx->app && strcmp(ctx->app, name) != 0 && (op == OP_DEPLOY || op == OP_UNDEPLOY)) {
		_cleanup_free_ char *msg = xasprintf("this recipe deploys the app %s, not %s", name, ctx->app);
		plan_add_note(plan, canonical, msg);
		return 0;
	}
	a.app = stack_app_find(ctx->stack, name);
	if (!a.app) {
		_cleanup_free_ char *msg = xasprintf("no deploy.%s in the stack", name);
		plan_add_note(plan, canonical, msg);
		return 0;
	}
	/* Paths on the managed system as processes on this host see them: under
	 * root. deploy_to was validated (absolute, normal form, no ".."). */
	if (path_join_under(plan->root, a.app->deploy_to, &a.host_deploy_to) < 0 ||
	    path_join_under(plan->root, SUPERVISOR_LOG_DIR, &a.host_log_dir) < 0) {
		*ret_error = xasprintf("cannot name %s under root %s", a.app->deploy_to, plan->root);
		free(a.host_deploy_to);
	free(a.host_log_dir);
		return -EINVAL;
	}
	apps_services(ctx->stack, kind, a.app, &a.sv);
	switch (op) {
	case OP_SETUP:
		r = plan_packages(&a);
		if (r >= 0 && kind == APP_INSTANCES) {
			/* The file older agentds wrote here: the system family's
			 * agentd-supervisor names these logs now, and logrotate
			 * refuses a log named twice (recipes/system.c). */
			if (!plan_add_absent(plan, "/etc/logrotate.d/supervisor", false, ret_error))
				r = -EINVAL;
		}
		if (r >= 0)
			r = plan_user(&a);
		if (r >= 0)
			r = plan_dirs(&a);
		if (r >= 0)
			r = plan_cache_archives(&a);
		break;
	case OP_CONFIGURE:
	case OP_REBUILD:
		r = plan_configure_deployed(&a, canonical, op == OP_REBUILD);
		break;
	case OP_DEPLOY:
		if (!json_object_get(a.app->json, "scm")) {
			plan_add_note(plan, canonical, "the app has no scm: nothing to deploy");
			break;
		}
		r = plan_dirs(&a);
		if (r >= 0)
			r = plan_cache_archives(&a);
		if (r >= 0)
			r = plan_release(&a);
		if (r >= 0)
			r = plan_configure(&a, json_is_true(json_object_get(a.app->json, "always_build_on_deploy")), true);
		break;
	case OP_UNDEPLOY:
		r = plan_undeploy(&a);
		break;
	case OP_STOP:
		r = plan_action_all(&a, SERVICE_STOP);
		break;
	case OP_START:
		r = plan_action_all(&a, SERVICE_START);
		break;
	case OP_RESTART:
		r = plan_action_all(&a, SERVICE_RESTART);
		break;
	}
	apps_services_free(&a.sv);
	free(a.host_deploy_to);
	free(a.host_log_dir);
	return r;
}

#define R(n) { n, apps_plan, apps_owns }
static const struct recipe recipes_apps[] = {
	R("instances-setup"), R("instances-configure"), R("instances-deploy"), R("instances-undeploy"), R("instances-stop"),
	R("instances-start"), R("instances-restart"), R("instances-rebuild"),
	R("zeoserver-setup"), R("zeoserver-configure"), R("zeoserver-deploy"), R("zeoserver-undeploy"),
	R("zeoserver-stop"), R("zeoserver-start"), R("zeoserver-restart"),
	R("solr-setup"), R("solr-configure"), R("solr-deploy"), R("solr-undeploy"), R("solr-stop"), R("solr-start"),
	R("solr-restart"),
	{ NULL, NULL, NULL },
};
#undef R

const struct recipe_family family_apps = { .name = "apps", .recipes = recipes_apps, .validate = apps_validate };

bool apps_is_family_app(const struct stack *s, const char *app)
{
	static const enum app_kind kinds[] = { APP_INSTANCES, APP_ZEOSERVER, APP_SOLR };

	for (size_t i = 0; i < ELEMENTSOF(kinds); i++)
		if (strcmp(apps_app_name(s, kinds[i]), app) == 0 && stack_app_find(s, app))
			return true;
	return false;
}

int apps_plan_restart(const struct stack *s, const struct config *c, const char *app, struct plan *plan,
		      char **ret_error)
{
	static const enum app_kind kinds[] = { APP_INSTANCES, APP_ZEOSERVER, APP_SOLR };
	static const char *const names[] = { "instances-restart", "zeoserver-restart", "solr-restart" };
	int r = 0;

	for (size_t i = 0; i < ELEMENTSOF(kinds) && r >= 0; i++) {
		struct recipe_ctx ctx = { .stack = s, .config = c, .event = EVENT_DEPLOY, .app = app, .name = names[i] };
		size_t first = plan->n_steps;

		if (strcmp(apps_app_name(s, kinds[i]), app) != 0)
			continue;
		r = apps_plan(&ctx, plan, ret_error);
		for (size_t j = first; j < plan->n_steps; j++)
			if (!plan->steps[j]->recipe)
				plan->steps[j]->recipe = xstrdup(names[i]);
	}
	return r;
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* ZODB pack and backup jobs of the zeoserver and RelStorage apps
 * (design.md §8.1; reference §7 and §9 "Cron schedules"): the buildout
 * scripts the seeds ran from cron parts, run as maintenance jobs, as the
 * app user in <deploy_to>/current, argv never through a shell.
 *
 *  - zeopack (zeoserver app, plone_zeoserver.enable_pack, default true):
 *    bin/zeopack -d DAYS, then the marker <deploy_to>/shared/agentd-packed;
 *  - backup (zeoserver app, plone_zeoserver.enable_backup, default false):
 *    bin/backup, or a full backup while the marker is there (the next
 *    backup after a pack is full: bin/fullbackup of collective.recipe.backup
 *    when the release has it, else bin/backup -F), and the marker removed;
 *  - zodbpack, or zodbpack-prepack + zodbpack-pack with two_stage
 *    (RelStorage): bin/zodbpack -d DAYS [--prepack|--use-prepack-state]
 *    parts/zodbpack.cfg, once per stack: with an etcd source every instance
 *    of the app declares it with the lock pack-<app>; without one only the
 *    instances that run the enable_pack recipe (layer db_packing).
 *
 * The planners do no I/O: whether a pack happened since the last backup,
 * and whether bin/fullbackup exists, are decided by the steps' guards when
 * they run. */
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "apps.h"
#include "config.h"
#include "cron.h"
#include "plone.h"
#include "recipe.h"
#include "stack/check.h"
#include "stack/stack.h"
#include "steps/plan.h"
#include "steps/step_require.h"
#include "strv.h"
#include "util.h"

#define ZEOPACK_SCHEDULE "0 1 * * 7"
#define BACKUP_SCHEDULE "0 21 * * *"
#define ZODBPACK_SCHEDULE "0 23 * * 7"
#define PREPACK_SCHEDULE "0 23 * * 6"
#define PACK_DAYS 7
#define DAYS_MAX 36500
#define SPLAY_MAX 86400
#define PACKED_MARKER "shared/agentd-packed"
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* One job's settings, defaults applied. */
struct zjob_conf {
	const char *schedule;
	const char *prepack_schedule; /* RelStorage two_stage only */
	long days;
	long splay;
	bool two_stage;
};

static const json_t *zeo_section(const struct stack *s)
{
	return plone_section(s, "plone_zeoserver");
}

static const json_t *relstorage(const struct stack *s)
{
	return json_object_get(plone_section(s, "plone_instances"), "relstorage");
}

static const char *obj_string(const json_t *o, const char *key, const char *def)
{
	const json_t *v = json_object_get(o, key);
	return json_is_string(v) ? json_string_value(v) : def;
}

static long obj_int(const json_t *o, const char *key, long def)
{
	const json_t *v = json_object_get(o, key);
	return json_is_integer(v) ? (long)json_integer_value(v) : def;
}

static bool obj_bool(const json_t *o, const char *key, bool def)
{
	const json_t *v = json_object_get(o, key);
	return json_is_boolean(v) ? json_is_true(v) : def;
}

/* plone_zeoserver.pack or .backup. */
static void zeo_conf(const struct stack *s, const char *key, struct zjob_conf *ret)
{
	const json_t *o = json_object_get(zeo_section(s), key);
	bool pack = strcmp(key, "pack") == 0;

	*ret = (struct zjob_conf){
		.schedule = obj_string(o, "schedule", pack ? ZEOPACK_SCHEDULE : BACKUP_SCHEDULE),
		.days = obj_int(o, "days", PACK_DAYS),
		.splay = obj_int(o, "splay", 0),
	};
}

/* plone_instances.relstorage.pack; days and two_stage default to the
 * older keys pack_days and two_stage_pack (reference §4.1). */
static void relstorage_conf(const struct stack *s, struct zjob_conf *ret)
{
	const json_t *rs = relstorage(s), *o = json_object_get(rs, "pack");

	*ret = (struct zjob_conf){
		.schedule = obj_string(o, "schedule", ZODBPACK_SCHEDULE),
		.prepack_schedule = obj_string(o, "prepack_schedule", PREPACK_SCHEDULE),
		.days = obj_int(o, "days", obj_int(rs, "pack_days", PACK_DAYS)),
		.splay = obj_int(o, "splay", 0),
		.two_stage = obj_bool(o, "two_stage", obj_bool(rs, "two_stage_pack", false)),
	};
}

static bool source_is_etcd(const struct config *c)
{
	const char *src = c ? c->source : NULL;
	return src && (strncmp(src, "etcd://", 7) == 0 || strncmp(src, "etcd+https://", 13) == 0);
}

/* --- planners --- */

/* What a job's steps share: its app, where it runs, as whom. */
struct zjob {
	const struct recipe_ctx *ctx;
	struct plan *plan;
	const struct stack_app *app;
	char *cur;        /* owned: <deploy_to>/current */
	char **env;       /* owned: the app's environment (apps_environment) and PATH */
	char **ret_error;
};

static void zjob_free(struct zjob *j)
{
	free(j->cur);
	strv_free(j->env);
}

/* Finds the app of kind k. Returns 1 when found (j filled), 0 when a note
 * was planned instead, or a negative errno. */
static int zjob_init(struct zjob *j, const struct recipe_ctx *ctx, struct plan *plan, enum app_kind k,
		     char **ret_error)
{
	const char *name = apps_app_name(ctx->stack, k);
	_cleanup_free_ char *host = NULL;
	json_t *env;
	const char *key;
	json_t *v;
	size_t n = 0;

	*j = (struct zjob){ .ctx = ctx, .plan = plan, .ret_error = ret_error };
	if (ctx->event != EVENT_MAINTENANCE) {
		plan_add_note(plan, ctx->name, "a maintenance job: it runs on its schedule (agentctl schedule) or with "
					       "agentctl run maintenance --recipe JOB");
		return 0;
	}
	j->app = stack_app_find(ctx->stack, name);
	if (!j->app) {
		_cleanup_free_ char *msg = xasprintf("no deploy.%s in the stack", name);
		plan_add_note(plan, ctx->name, msg);
		return 0;
	}
	if (path_join_under(plan->root, j->app->deploy_to, &host) < 0) {
		*ret_error = xasprintf("cannot name %s under root %s", j->app->deploy_to, plan->root);
		return -EINVAL;
	}
	j->cur = xasprintf("%s/current", j->app->deploy_to);
	env = apps_environment(j->app, host);
	j->env = xcalloc(json_object_size(env) + 2, sizeof(char *));
	json_object_foreach(env, key, v)
		j->env[n++] = xasprintf("%s=%s", key, json_string_value(v));
	if (!json_object_get(env, "PATH"))
		j->env[n++] = xstrdup("PATH=" DEFAULT_PATH);
	json_decref(env);
	return 1;
}

/* <current>/<rel> must exist when the job runs: else the run fails naming it. */
static int zjob_require(struct zjob *j, const char *rel)
{
	_cleanup_free_ char *path = xasprintf("%s/%s", j->cur, rel);
	_cleanup_free_ char *why = xasprintf("the job %s runs it from the release of app %s (deploy the app, with "
					     "the buildout part that makes it)",
					     j->ctx->name, j->app->name);
	return plan_add_require(j->plan, path, why, j->ret_error) ? 0 : -EINVAL;
}

/* An exec step of argv (relative to current) as the app user in current. */
static struct step *zjob_exec(struct zjob *j, const char *target, char *const *argv)
{
	struct exec_step_opts o = {
		.argv = argv,
		.env = j->env,
		.user = j->app->user,
		.cwd = j->cur,
		.timeout_sec = j->ctx->config->run_timeout,
	};
	return plan_add_exec(j->plan, target, &o, j->ret_error);
}

static char *marker_path(const struct zjob *j)
{
	return xasprintf("%s/" PACKED_MARKER, j->app->deploy_to);
}

/* zeopack: bin/zeopack -d DAYS, then the marker that makes the next
 * backup a full one (written only when the pack succeeded: a failed step
 * skips the rest). */
static int plan_zeopack(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	struct zjob j;
	struct zjob_conf c;
	char days[32];
	int r = zjob_init(&j, ctx, plan, APP_ZEOSERVER, ret_error);

	if (r <= 0)
		return r;
	zeo_conf(ctx->stack, "pack", &c);
	(void)snprintf(days, sizeof(days), "%ld", c.days);
	r = zjob_require(&j, "bin/zeopack");
	if (r >= 0 && !zjob_exec(&j, "bin/zeopack", (char *const[]){ "bin/zeopack", "-d", days, NULL }))
		r = -EINVAL;
	if (r >= 0) {
		_cleanup_free_ char *m = marker_path(&j);
		_cleanup_free_ char *text = xasprintf("# Written by agentd: the database of app %s was packed (run %ld); "
						      "the next backup is a full one.\n",
						      j.app->name, ctx->run_id);
		if (!plan_add_file(plan, m, text, strlen(text), 0644, j.app->user, j.app->group, ret_error))
			r = -EINVAL;
	}
	zjob_free(&j);
	return r;
}

/* backup: with M the marker and F bin/fullbackup, as found when each step
 * runs:
 *   1. bin/backup           unless M            (incremental)
 *   2. bin/backup -F        only if M, unless F  (full, older recipes)
 *   3. absent M             unless F            (so that 4 runs only with F)
 *   4. bin/fullbackup       only if M            (full)
 *   5. absent M
 * A failed full backup keeps M: the next backup is full again. */
static int plan_backup(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	struct zjob j;
	_cleanup_free_ char *m = NULL, *full = NULL;
	struct step *s = NULL;
	int r = zjob_init(&j, ctx, plan, APP_ZEOSERVER, ret_error);

	if (r <= 0)
		return r;
	m = marker_path(&j);
	full = xasprintf("%s/bin/fullbackup", j.cur);
	r = zjob_require(&j, "bin/backup");
	if (r >= 0 && (s = zjob_exec(&j, "bin/backup", (char *const[]){ "bin/backup", NULL })))
		s->unless_exists = xstrdup(m);
	if (r >= 0 && s && (s = zjob_exec(&j, "bin/backup -F", (char *const[]){ "bin/backup", "-F", NULL }))) {
		step_only_if_exists(s, m);
		s->unless_exists = xstrdup(full);
	}
	if (r >= 0 && s && (s = plan_add_absent(plan, m, false, ret_error)))
		s->unless_exists = xstrdup(full);
	if (r >= 0 && s && (s = zjob_exec(&j, "bin/fullbackup", (char *const[]){ "bin/fullbackup", NULL })))
		step_only_if_exists(s, m);
	if (r >= 0 && s)
		s = plan_add_absent(plan, m, false, ret_error);
	if (r >= 0 && !s)
		r = -EINVAL;
	zjob_free(&j);
	return r;
}

/* zodbpack, zodbpack-prepack, zodbpack-pack (reference §9). */
static int plan_zodbpack(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	const char *canonical = recipe_canonical_name(ctx->name);
	const char *stage = strcmp(canonical, "zodbpack-prepack") == 0 ? "--prepack"
			    : strcmp(canonical, "zodbpack-pack") == 0	 ? "--use-prepack-state"
									 : NULL;
	struct zjob j;
	struct zjob_conf c;
	char days[32];
	int r = zjob_init(&j, ctx, plan, APP_INSTANCES, ret_error);

	if (r <= 0)
		return r;
	relstorage_conf(ctx->stack, &c);
	(void)snprintf(days, sizeof(days), "%ld", c.days);
	r = zjob_require(&j, "bin/zodbpack");
	if (r >= 0)
		r = zjob_require(&j, "parts/zodbpack.cfg");
	if (r >= 0) {
		char *argv[] = { "bin/zodbpack", "-d", days, (char *)stage, "parts/zodbpack.cfg", NULL };
		if (!stage) {
			argv[3] = argv[4];
			argv[4] = NULL;
		}
		if (!zjob_exec(&j, "bin/zodbpack", argv))
			r = -EINVAL;
	}
	zjob_free(&j);
	return r;
}

/* enable_pack (layer db_packing): in the seeds it turned
 * relstorage.enable_pack on for the instances recipe; here packing is the
 * zodbpack job, which this recipe makes this instance declare. */
static int plan_enable_pack(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	plan_add_note(plan, ctx->name, "RelStorage packing is agentd's maintenance job zodbpack (agentctl schedule)");
	return 0;
}

static const struct recipe recipes_zodb[] = {
	{ "zeopack", plan_zeopack, NULL },
	{ "backup", plan_backup, NULL },
	{ "zodbpack", plan_zodbpack, NULL },
	{ "zodbpack-prepack", plan_zodbpack, NULL },
	{ "zodbpack-pack", plan_zodbpack, NULL },
	{ "enable_pack", plan_enable_pack, NULL },
	{ NULL, NULL, NULL },
};

/* --- jobs --- */

static void zodb_jobs(const struct stack *s, const struct config *c, struct recipe_jobs *ret)
{
	const char *zeo = apps_app_name(s, APP_ZEOSERVER), *inst = apps_app_name(s, APP_INSTANCES);
	struct zjob_conf z;

	if (stack_app_find(s, zeo) && plone_self_runs(s, "zeoserver-", false)) {
		if (obj_bool(zeo_section(s), "enable_pack", true)) {
			zeo_conf(s, "pack", &z);
			recipe_jobs_add(ret, "zeopack", z.schedule, z.splay, NULL, "plone_zeoserver.pack");
		}
		if (obj_bool(zeo_section(s), "enable_backup", false)) {
			zeo_conf(s, "backup", &z);
			recipe_jobs_add(ret, "backup", z.schedule, z.splay, NULL, "plone_zeoserver.backup");
		}
	}
	if (stack_app_find(s, inst) && plone_relstorage_packs(s)) {
		bool etcd = source_is_etcd(c);
		_cleanup_free_ char *lock = etcd ? xasprintf("pack-%s", inst) : NULL;
		const char *src = "plone_instances.relstorage.pack";

		/* One packer per stack: the lock with etcd, else db_packing. */
		if (etcd ? !plone_self_runs(s, "instances-", false) : !plone_self_runs(s, "enable_pack", true))
			return;
		relstorage_conf(s, &z);
		if (z.two_stage) {
			recipe_jobs_add(ret, "zodbpack-prepack", z.prepack_schedule, z.splay, lock, src);
			recipe_jobs_add(ret, "zodbpack-pack", z.schedule, z.splay, lock, src);
		} else
			recipe_jobs_add(ret, "zodbpack", z.schedule, z.splay, lock, src);
	}
}

/* --- validation --- */

static int check_schedule(struct stack_error *err, const char *parent, const json_t *o, const char *key)
{
	const char *v = NULL;
	_cleanup_free_ char *why = NULL;
	char path[CHECK_PATH_SIZE];
	struct cron cron;
	int r = check_string(err, parent, o, key, &v);

	if (r < 0 || !v)
		return r;
	if (cron_parse(v, &cron, &why) == 0)
		return 0;
	stack_path_key(path, sizeof(path), parent, key);
	return stack_error_set(err, path, "must be a 5-field cron expression in UTC: %s", why ? why : "invalid");
}

/* A job object: its known keys, then each one's type and range. */
static int check_job(struct stack_error *err, const char *parent, const json_t *sec, const char *key,
		     const char *const *keys)
{
	char path[CHECK_PATH_SIZE];
	json_t *o = NULL;
	int r = check_object(err, parent, sec, key, &o);

	if (r < 0 || !o)
		return r;
	stack_path_key(path, sizeof(path), parent, key);
	if ((r = check_known_keys(err, path, o, keys)) < 0 || (r = check_schedule(err, path, o, "schedule")) < 0 ||
	    (r = check_schedule(err, path, o, "prepack_schedule")) < 0 ||
	    (r = check_int(err, path, o, "days", 0, DAYS_MAX, NULL)) < 0 ||
	    (r = check_int(err, path, o, "splay", 0, SPLAY_MAX, NULL)) < 0 ||
	    (r = check_bool(err, path, o, "two_stage")) < 0)
		return r;
	return 0;
}

static int zodb_validate(const struct stack *s, struct stack_error *err)
{
	static const char *const zeopack_keys[] = { "schedule", "days", "splay", NULL };
	static const char *const backup_keys[] = { "schedule", "splay", NULL };
	static const char *const rs_keys[] = { "schedule", "prepack_schedule", "days", "two_stage", "splay", NULL };
	const json_t *zeo = zeo_section(s), *rs = relstorage(s);
	int r;

	if ((r = check_bool(err, "$.plone_zeoserver", zeo, "enable_pack")) < 0 ||
	    (r = check_bool(err, "$.plone_zeoserver", zeo, "enable_backup")) < 0 ||
	    (r = check_job(err, "$.plone_zeoserver", zeo, "pack", zeopack_keys)) < 0 ||
	    (r = check_job(err, "$.plone_zeoserver", zeo, "backup", backup_keys)) < 0)
		return r;
	if (!json_is_object(rs))
		return 0;
	for (const char *const *k = (const char *const[]){ "enable_pack", "two_stage_pack", NULL }; *k; k++)
		if ((r = check_bool(err, "$.plone_instances.relstorage", rs, *k)) < 0)
			return r;
	return check_job(err, "$.plone_instances.relstorage", rs, "pack", rs_keys);
}

const struct recipe_family family_zodb = {
	.name = "zodb",
	.recipes = recipes_zodb,
	.validate = zodb_validate,
	.jobs = zodb_jobs,
};

/* SPDX-License-Identifier: BSD-2-Clause */
/* What every instance gets (design.md §8.1): logrotate files for the logs
 * agentd's recipes make, unattended-upgrades from the Custom JSON's
 * apt.unattended_upgrades, and, with an etcd source, the maintenance job
 * `reboot` that reboots one instance of the stack at a time.
 *
 * logrotate (logrotate(8), reference §9 "Log rotation"): two files of fixed
 * names under logrotate_dir (when planned: system_plan_before):
 *  - agentd-supervisor: the supervisor program logs of the apps of this
 *    instance (apps.c writes them to /var/log/supervisor/<program>-std*.log),
 *    daily, 7, copytruncate, dateext (supervisord's own size rotation names
 *    its backups <log>.1..10: logrotate's must not take those names);
 *  - agentd-apps: <deploy_to>/shared/log/<name>.log of those apps, daily, 30,
 *    copytruncate, as the app user (`su`: root never works in a directory
 *    the app user can write).
 * A file with nothing to name is removed, so an undeploy (a layer the
 * instance left, an app gone) takes its stanzas along. Not written, on purpose: the haproxy and nginx
 * logs (/var/log/haproxy.log, /var/log/nginx/<name>.log) are named by their
 * Debian packages' own logrotate files, and logrotate refuses a log named
 * twice ("duplicate log entry"); agentd's run logs, which agentd prunes
 * itself to `history` (engine/state.c), and which renaming would hide from
 * `agentctl log`. Paths are the host's (under root), as logrotate sees them.
 *
 * unattended-upgrades (apt.conf(5), unattended-upgrades(8)): 20auto-upgrades
 * (APT::Periodic, from enable) and 52agentd-unattended-upgrades (after
 * Debian's 50unattended-upgrades, whose blacklist it clears), 0644 root. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "apps.h"
#include "config.h"
#include "recipe.h"
#include "stack/check.h"
#include "stack/stack.h"
#include "steps/plan.h"
#include "util.h"

#define SYSTEM_SUPERVISOR_LOG_DIR "/var/log/supervisor" /* where apps.c's program files send their logs */
#define LOGROTATE_SUPERVISOR "agentd-supervisor"
#define LOGROTATE_APPS "agentd-apps"
#define APT_PERIODIC "20auto-upgrades"
#define APT_UNATTENDED "52agentd-unattended-upgrades"
#define REBOOT_REQUIRED "/var/run/reboot-required" /* written by the packages' postinst (update-notifier-common) */
#define REBOOT_TIME_DEFAULT "02:00"
/* How long the reboot run holds its slot after the reboot command, waiting
 * for the machine to go down (agentd is stopped then): past it the reboot
 * did not happen, the run fails and the slot goes to the next instance. */
#define REBOOT_HOLD_SEC 600
#define UU_LIST_MAX 1000

static const json_t *unattended(const struct stack *s)
{
	return check_get(check_get(s->root, "apt"), "unattended_upgrades");
}

static bool source_is_etcd(const struct config *c)
{
	return c->source &&
	       (strncmp(c->source, "etcd://", 7) == 0 || strncmp(c->source, "etcd+https://", 13) == 0);
}

/* Whether agentd's job reboots this instance instead of unattended-upgrades
 * itself: automatic_reboot with an etcd source (the semaphore needs it). */
static bool reboot_by_job(const struct stack *s, const struct config *c)
{
	return json_is_true(json_object_get(unattended(s), "automatic_reboot")) && source_is_etcd(c);
}

/* ---- logrotate ---- */

/* The apps of the apps family that this instance's layers serve (a recipe
 * of that kind for any event: a layer that only stops them still has their
 * logs), each once, in kind order. */
static size_t self_apps(const struct stack *s, const struct stack_app **ret, size_t max)
{
	static const struct {
		const char *prefix;
		enum app_kind kind;
	} kinds[] = { { "instances-", APP_INSTANCES }, { "zeoserver-", APP_ZEOSERVER }, { "solr-", APP_SOLR } };
	bool on[ELEMENTSOF(kinds)] = { false };
	size_t n = 0;

	for (size_t l = 0; l < s->n_self_layers; l++)
		for (int e = 0; e < _EVENT_MAX; e++) {
			size_t nn = 0;
			_cleanup_free_ const char **names = recipes_layer_recipes(s, s->self_layers[l], (enum event)e, &nn);

			for (size_t i = 0; i < nn; i++) {
				const char *c = recipe_canonical_name(names[i]);

				for (size_t k = 0; c && k < ELEMENTSOF(kinds); k++)
					if (strncmp(c, kinds[k].prefix, strlen(kinds[k].prefix)) == 0)
						on[k] = true;
			}
		}
	for (size_t k = 0; k < ELEMENTSOF(kinds); k++) {
		const struct stack_app *a = on[k] ? stack_app_find(s, apps_app_name(s, kinds[k].kind)) : NULL;
		bool dup = false;

		for (size_t i = 0; a && i < n; i++)
			dup = dup || ret[i] == a;
		if (a && !dup && n < max)
			ret[n++] = a;
	}
	return n;
}

/* A path as the host's logrotate reads it: path under root, refused unless
 * it holds only [A-Za-z0-9_./-] (logrotate splits names on whitespace, reads
 * quotes, braces and '#', and globs '*?['). Stack paths passed this at
 * validation (deploy_to: stack.c); root comes from the configuration. */
static int host_path(const char *root, const char *path, char **ret, char **ret_error)
{
	if (path_join_under(root, path, ret) < 0 || !path_is_plain(*ret)) {
		*ret_error = xasprintf("cannot name %s under root %s in a logrotate file: only [A-Za-z0-9_./-] "
				       "read back through logrotate's parser",
				       path, root);
		free(*ret);
		*ret = NULL;
		return -EINVAL;
	}
	return 0;
}

static const char logrotate_common[] = "\tmissingok\n\tnotifempty\n\tcompress\n\tdelaycompress\n";

static int render_supervisor(const struct stack *s, const char *root, const struct stack_app *const *apps,
			     size_t n_apps, struct buf *b, char **ret_error)
{
	static const enum app_kind kinds[] = { APP_INSTANCES, APP_ZEOSERVER, APP_SOLR };
	_cleanup_free_ char *dir = NULL;
	size_t lines = 0;

	if (host_path(root, SYSTEM_SUPERVISOR_LOG_DIR, &dir, ret_error) < 0)
		return -EINVAL;
	buf_puts(b, "# Written by agentd: the supervisor program logs of this instance's apps (design.md §8.1).\n"
		    "# Changes here are overwritten.\n");
	for (size_t i = 0; i < n_apps; i++)
		for (size_t k = 0; k < ELEMENTSOF(kinds); k++) {
			struct app_services sv;

			if (strcmp(apps_app_name(s, kinds[k]), apps[i]->name) != 0)
				continue;
			apps_services(s, kinds[k], apps[i], &sv);
			for (size_t j = 0; j < sv.n; j++, lines++)
				buf_printf(b, "%s/%s-stdout.log\n%s/%s-stderr.log\n", dir, sv.v[j].name, dir,
					   sv.v[j].name);
			apps_services_free(&sv);
			break;
		}
	if (!lines)
		return 0;
	buf_printf(b, "{\n\tdaily\n\trotate 7\n\tcopytruncate\n\tdateext\n%s}\n", logrotate_common);
	return 1;
}

static int render_apps(const char *root, const struct stack_app *const *apps, size_t n_apps, struct buf *b,
		       char **ret_error)
{
	buf_puts(b, "# Written by agentd: the logs of this instance's apps, in <deploy_to>/shared/log "
		    "(design.md §8.1).\n# Changes here are overwritten.\n");
	for (size_t i = 0; i < n_apps; i++) {
		_cleanup_free_ char *dt = NULL;

		if (host_path(root, apps[i]->deploy_to, &dt, ret_error) < 0)
			return -EINVAL;
		/* user and group are names ([A-Za-z0-9_.-]): stack.c. */
		buf_printf(b, "%s/shared/log/*.log {\n\tsu %s %s\n\tdaily\n\trotate 30\n\tcopytruncate\n%s}\n", dt,
			   apps[i]->user, apps[i]->group, logrotate_common);
	}
	return n_apps > 0;
}

/* One logrotate file: written when it has content (r > 0), else removed. */
static int plan_one(struct plan *plan, const char *dir, const char *name, int r, struct buf *b, char **ret_error)
{
	_cleanup_free_ char *path = xasprintf("%s/%s", dir, name);
	struct step *st;

	if (r < 0)
		return r;
	if (r > 0)
		st = plan_add_file(plan, path, b->data, b->len, 0644, "root", NULL, ret_error);
	else
		st = plan_add_absent(plan, path, false, ret_error);
	if (!st)
		return -EINVAL;
	st->recipe = xstrdup("logrotate");
	return 0;
}

/* Both files as stack s places them on this instance. */
static int plan_logrotate(const struct recipe_ctx *ctx, const struct stack *s, struct plan *plan, char **ret_error)
{
	const char *dir = config_string(ctx->config, "logrotate_dir");
	const struct stack_app *apps[8];
	size_t n = self_apps(s, apps, ELEMENTSOF(apps));
	struct buf b;
	int r;

	buf_init(&b);
	r = render_supervisor(s, plan->root, apps, n, &b, ret_error);
	r = plan_one(plan, dir, LOGROTATE_SUPERVISOR, r, &b, ret_error);
	buf_free(&b);
	if (r < 0)
		return r;
	buf_init(&b);
	r = render_apps(plan->root, apps, n, &b, ret_error);
	r = plan_one(plan, dir, LOGROTATE_APPS, r, &b, ret_error);
	buf_free(&b);
	return r;
}

/* ---- unattended-upgrades ---- */

static char *render_periodic(const json_t *uu)
{
	int on = json_is_true(json_object_get(uu, "enable"));

	return xasprintf("// Written by agentd from apt.unattended_upgrades.enable (design.md §8.1).\n"
			 "APT::Periodic::Update-Package-Lists \"%d\";\nAPT::Periodic::Unattended-Upgrade \"%d\";\n",
			 on, on);
}

static const char *bool_str(const json_t *v, bool dflt)
{
	return (v ? json_is_true(v) : dflt) ? "true" : "false";
}

static char *render_unattended(const json_t *uu, bool by_job)
{
	const json_t *list = json_object_get(uu, "package_blacklist"), *mail = check_get(uu, "mail");
	const json_t *t = check_get(uu, "automatic_reboot_time");
	struct buf b;
	size_t i;
	json_t *v;

	buf_init(&b);
	buf_puts(&b, "// Written by agentd from apt.unattended_upgrades (design.md §8.1): changes here are "
		     "overwritten.\n");
	/* Lists add up across apt.conf.d; the stack's is the whole list. */
	buf_puts(&b, "#clear Unattended-Upgrade::Package-Blacklist;\nUnattended-Upgrade::Package-Blacklist {\n");
	json_array_foreach(list, i, v)
		buf_printf(&b, "\t\"%s\";\n", json_string_value(v));
	buf_puts(&b, "};\n");
	if (mail)
		buf_printf(&b, "Unattended-Upgrade::Mail \"%s\";\n", json_string_value(mail));
	/* Unset: unattended-upgrades' own default (true), not ours. */
	if (check_get(uu, "auto_fix_interrupted_dpkg"))
		buf_printf(&b, "Unattended-Upgrade::AutoFixInterruptedDpkg \"%s\";\n",
			   bool_str(check_get(uu, "auto_fix_interrupted_dpkg"), false));
	if (by_job)
		buf_puts(&b, "// agentd's job \"reboot\" reboots this instance, one instance of the stack at a time.\n");
	buf_printf(&b, "Unattended-Upgrade::Automatic-Reboot \"%s\";\n",
		   by_job ? "false" : bool_str(check_get(uu, "automatic_reboot"), false));
	buf_printf(&b, "Unattended-Upgrade::Automatic-Reboot-Time \"%s\";\n",
		   t ? json_string_value(t) : REBOOT_TIME_DEFAULT);
	return buf_steal(&b);
}

/* One apt.conf.d file: written with content (taken over), else removed
 * when remove is true, else left alone. */
static int plan_apt_file(struct plan *plan, const char *dir, const char *name, char *content, bool remove,
			 char **ret_error)
{
	_cleanup_free_ char *path = xasprintf("%s/%s", dir, name);
	struct step *st = NULL;
	bool planned = content || remove;

	if (content)
		st = plan_add_file(plan, path, content, strlen(content), 0644, "root", NULL, ret_error);
	else if (remove)
		st = plan_add_absent(plan, path, false, ret_error);
	free(content);
	if (!st)
		return planned ? -EINVAL : 0;
	st->recipe = xstrdup("unattended-upgrades");
	return 0;
}

/* With the key: both files. Without it, agentd's files are removed, on
 * every instance at setup and configure (a planner cannot see what an
 * earlier stack held, and the seeds' "apt" holds nothing else: the change
 * that drops it must remove the files); "none" in a converged plan.
 * 20auto-upgrades is also the name Debian's package writes
 * (debconf): it is removed only while agentd's 52agentd-unattended-upgrades
 * is there (read as the step runs: "skipped" otherwise), and before it, so
 * that an interrupted run leaves the guard for the next one. */
static int plan_unattended(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	const char *dir = config_string(ctx->config, "apt_conf_dir");
	const json_t *uu = unattended(ctx->stack);
	_cleanup_free_ char *ours = xasprintf("%s/%s", dir, APT_UNATTENDED);
	size_t first = plan->n_steps;
	int r;

	r = plan_apt_file(plan, dir, APT_PERIODIC, uu ? render_periodic(uu) : NULL, true, ret_error);
	if (r == 0 && !uu) {
		step_only_if_exists(plan->steps[first], ours);
		plan->steps[first]->guard_converged = true;
	}
	if (r == 0)
		r = plan_apt_file(plan, dir, APT_UNATTENDED,
				  uu ? render_unattended(uu, reboot_by_job(ctx->stack, ctx->config)) : NULL, true,
				  ret_error);
	return r;
}

static size_t n_self_apps(const struct stack *s)
{
	const struct stack_app *apps[8];

	return self_apps(s, apps, ELEMENTSOF(apps));
}

/* Whether the run is the deploy of an app whose logs agentd-* names: an
 * app new to the stack arrives with a deploy alone. Any other deploy plans
 * nothing here (a deploy of an app that does nothing on this instance must
 * stay empty: it takes no rolling slot, build.c). */
static bool deploys_own_app(const struct recipe_ctx *ctx)
{
	const struct stack_app *apps[8];
	size_t n = ctx->app ? self_apps(ctx->stack, apps, ELEMENTSOF(apps)) : 0;

	for (size_t i = 0; i < n; i++)
		if (strcmp(apps[i]->name, ctx->app) == 0)
			return true;
	return false;
}

/* logrotate: at setup and configure of an instance that serves an app, at
 * the deploy of one of its apps, and at an undeploy of an instance that
 * served one (a layer left, an app gone), as the stack that stays places
 * them (ctx->other_stack): the files shrink or go. An instance that never
 * served an app plans nothing. unattended-upgrades: at setup and
 * configure (plan_unattended). */
static int system_plan_before(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	int r = 0;

	/* An instance in no layer is unassigned: it plans nothing (§3). */
	if (!ctx->stack->n_self_layers)
		return 0;
	switch (ctx->event) {
	case EVENT_DEPLOY:
		return deploys_own_app(ctx) ? plan_logrotate(ctx, ctx->stack, plan, ret_error) : 0;
	case EVENT_UNDEPLOY:
		if (!n_self_apps(ctx->stack))
			return 0;
		return plan_logrotate(ctx, ctx->other_stack ? ctx->other_stack : ctx->stack, plan, ret_error);
	case EVENT_SETUP:
	case EVENT_CONFIGURE:
		if (n_self_apps(ctx->stack))
			r = plan_logrotate(ctx, ctx->stack, plan, ret_error);
		return r < 0 ? r : plan_unattended(ctx, plan, ret_error);
	default:
		return 0;
	}
}

/* ---- the reboot job ---- */

/* "HH:MM" (validated) as a daily cron line "MM HH * * *". */
static char *reboot_schedule(const json_t *uu)
{
	const json_t *t = check_get(uu, "automatic_reboot_time");
	const char *hm = t ? json_string_value(t) : REBOOT_TIME_DEFAULT;
	unsigned h = 0, m = 0;

	(void)sscanf(hm, "%u:%u", &h, &m);
	return xasprintf("%u %u * * *", m, h);
}

static void system_jobs(const struct stack *s, const struct config *c, struct recipe_jobs *ret)
{
	_cleanup_free_ char *sched = NULL;

	if (!reboot_by_job(s, c))
		return;
	sched = reboot_schedule(unattended(s));
	/* No splay: the semaphore orders the instances anyway. */
	recipe_jobs_add(ret, "reboot", sched, 0, NULL, "apt.unattended_upgrades.automatic_reboot");
}

/* The job's run: one slot of the semaphore "reboot" (taken with an etcd
 * source only, before the first step), then, when REBOOT_REQUIRED exists,
 * reboot_command and a wait for the machine to go down that holds the slot:
 * agentd is stopped as the machine goes down, which ends the wait and gives
 * the slot back (its key is deleted; if agentd dies instead, the key goes
 * with its lease, lease_ttl). Without the file both are skipped and the
 * slot goes back at once. */
static int reboot_plan(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	_cleanup_free_ const char **cmd = config_argv(ctx->config, "reboot_command");
	_cleanup_free_ char *hold_arg = xasprintf("%d", REBOOT_HOLD_SEC + 60);
	char *hold[] = { "sleep", hold_arg, NULL };
	struct exec_step_opts eo = { 0 };
	struct step *st;

	if (ctx->event != EVENT_MAINTENANCE) {
		plan_add_note(plan, "reboot", "the reboot job runs as a maintenance run (agentctl run maintenance "
					      "--recipe reboot)");
		return 0;
	}
	if (!cmd || !cmd[0]) {
		*ret_error = xstrdup("no reboot command (reboot_command)");
		return -EINVAL;
	}
	plan_set_gate(plan, PLAN_GATE_SEMAPHORE, "reboot", 1, false, NULL);
	plan_add_note_unless_exists(plan, "reboot", "no reboot required (" REBOOT_REQUIRED " does not exist)",
				    REBOOT_REQUIRED);
	eo.argv = (char *const *)cmd;
	st = plan_add_exec(plan, "reboot", &eo, ret_error);
	if (!st)
		return -EINVAL;
	step_only_if_exists(st, REBOOT_REQUIRED);
	eo = (struct exec_step_opts){ .argv = hold, .timeout_sec = REBOOT_HOLD_SEC };
	st = plan_add_exec(plan, "wait for the machine to go down (holding the reboot slot)", &eo, ret_error);
	if (!st)
		return -EINVAL;
	step_only_if_exists(st, REBOOT_REQUIRED);
	st->stop_cancels = true;
	return 0;
}

/* ---- validation ---- */

/* What apt's configuration parser (apt.conf(5)) reads back exactly inside
 * "...": no '"' and no control character; in a list, no '%' either (list
 * items are %-decoded, scalars are not: checked with apt-config dump). */
static const char *apt_value_problem(const char *s, bool in_list)
{
	if (check_has_control(s, strlen(s)))
		return "must not contain control characters (apt.conf cannot carry them)";
	if (strchr(s, '"'))
		return "must not contain '\"' (apt.conf has no escape for it)";
	if (in_list && strchr(s, '%'))
		return "must not contain '%' (apt.conf decodes %XX in list items)";
	return NULL;
}

static const char *apt_scalar_problem(const char *s)
{
	return apt_value_problem(s, false);
}

static const char *reboot_time_problem(const char *s)
{
	unsigned h, m;
	int n = -1;

	if (strlen(s) != 5 || sscanf(s, "%2u:%2u%n", &h, &m, &n) != 2 || n != 5 || h > 23 || m > 59 || s[0] == '+' ||
	    s[3] == '+')
		return "must be a time \"HH:MM\" (00:00 to 23:59, UTC)";
	return NULL;
}

/* key absent or null (OpsWorks prints null for unset fields), or a string
 * problem() accepts. */
static int check_apt_string(struct stack_error *err, const char *base, const json_t *uu, const char *key,
			    const char *(*problem)(const char *))
{
	char path[CHECK_PATH_SIZE], got[128];
	const char *v = NULL, *why;
	int r = check_string(err, base, uu, key, &v);

	if (r < 0 || !v || !(why = problem(v)))
		return r;
	stack_path_key(path, sizeof(path), base, key);
	return stack_error_set(err, path, "%s%s", why, check_got(got, sizeof(got), key, v));
}

static int validate_unattended(const json_t *uu, struct stack_error *err)
{
	static const char *const keys[] = { "enable", "package_blacklist", "mail", "auto_fix_interrupted_dpkg",
					    "automatic_reboot", "automatic_reboot_time", NULL };
	static const char base[] = "$.apt.unattended_upgrades";
	const json_t *list;
	char path[CHECK_PATH_SIZE], lp[CHECK_PATH_SIZE];
	const char *why;
	size_t i;
	json_t *v;
	int r;

	if (!json_is_object(uu))
		return check_type_error(err, base, "an object", uu);
	if ((r = check_known_keys(err, base, uu, keys)) < 0 || (r = check_bool(err, base, uu, "enable")) < 0 ||
	    (r = check_bool(err, base, uu, "auto_fix_interrupted_dpkg")) < 0 ||
	    (r = check_bool(err, base, uu, "automatic_reboot")) < 0 ||
	    (r = check_array_of(err, base, uu, "package_blacklist", JSON_STRING)) < 0 ||
	    (r = check_apt_string(err, base, uu, "mail", apt_scalar_problem)) < 0 ||
	    (r = check_apt_string(err, base, uu, "automatic_reboot_time", reboot_time_problem)) < 0)
		return r;
	list = check_get(uu, "package_blacklist");
	stack_path_key(lp, sizeof(lp), base, "package_blacklist");
	if (json_array_size(list) > UU_LIST_MAX)
		return stack_error_set(err, lp, "at most %d entries", UU_LIST_MAX);
	json_array_foreach(list, i, v) {
		/* unattended-upgrades reads each item as a Python regular
		 * expression searched in the package name: "" matches every
		 * package, and nothing would ever be upgraded. */
		why = json_string_length(v) == 0
			      ? "must not be empty (a pattern that matches every package: nothing would be upgraded)"
			      : apt_value_problem(json_string_value(v), true);
		if (why) {
			stack_path_index(path, sizeof(path), lp, i);
			return stack_error_set(err, path, "%s", why);
		}
	}
	return 0;
}

/* apt.unattended_upgrades (other keys of apt are the apt cookbook's and
 * ignored), and what the logrotate files name: deploy_to is checked by
 * stack.c (path_is_plain), user and group are names. */
static int system_validate(const struct stack *s, struct stack_error *err)
{
	const json_t *apt = check_get(s->root, "apt");
	const json_t *uu;

	if (!apt)
		return 0;
	if (!json_is_object(apt))
		return check_type_error(err, "$.apt", "an object", apt);
	uu = check_get(apt, "unattended_upgrades");
	return uu ? validate_unattended(uu, err) : 0;
}

static const struct recipe recipes_system[] = {
	{ "reboot", reboot_plan, NULL },
	{ NULL, NULL, NULL },
};

const struct recipe_family family_system = {
	.name = "system",
	.recipes = recipes_system,
	.plan_before = system_plan_before,
	.validate = system_validate,
	.jobs = system_jobs,
};

/* SPDX-License-Identifier: BSD-2-Clause */
/* The plan of a run: from what a run asks for (event, layer, app, or a named
 * plan such as a rollback) to the steps, through the families' hooks and
 * the layers' recipes. The engine knows no family: what a named plan holds
 * is decided here. */
#include <errno.h>
#include <string.h>

#include "apps.h"
#include "config.h"
#include "plone.h"
#include "recipe.h"
#include "stack/stack.h"
#include "steps/plan.h"
#include "steps/step_health.h"
#include "steps/step_rollback.h"
#include "strv.h"
#include "util.h"

#define ROLLING_HEALTH_TIMEOUT 120

int recipes_job_check(const struct stack *s, const struct config *c, const char *job, struct recipe_jobs *ret_job,
		      char **ret_error)
{
	struct recipe_jobs all;
	struct buf names;
	int r = -ENOENT;

	if (ret_job)
		*ret_job = (struct recipe_jobs){ 0 };
	if (stack_custom_recipe(s, job))
		return 0;
	recipes_jobs(s, c, &all);
	buf_init(&names);
	for (size_t i = 0; i < all.n; i++) {
		if (strcmp(all.v[i].name, job) == 0) {
			if (ret_job)
				recipe_jobs_add(ret_job, all.v[i].name, all.v[i].schedule, all.v[i].splay, all.v[i].lock,
						all.v[i].source);
			r = 0;
			break;
		}
		buf_printf(&names, "%s%s", names.len ? ", " : "", all.v[i].name);
	}
	if (r < 0)
		*ret_error = xasprintf("no maintenance job \"%s\" on this instance: it must be one of its jobs (%s) or a "
				       "recipe of agent.recipes",
				       job, names.len ? names.data : "it has none");
	buf_free(&names);
	recipe_jobs_free(&all);
	return r;
}

/* A maintenance run (design.md §8.1): the job named by recipe alone, a
 * custom recipe of agent.recipes run as one exec step like the others, or
 * a built-in job of this instance (recipes_jobs) planned by its recipe for
 * EVENT_MAINTENANCE. A "singleton": true custom job takes the stack's lock
 * <job> first, a built-in job its own lock when it has one (§9). */
static int build_maintenance(const struct recipe_ctx *req, const char *job, struct plan *plan, char **ret_error)
{
	struct recipe_ctx ctx = *req;
	struct recipe_jobs builtin = { 0 };
	const json_t *def;
	int r;

	if (!job) {
		*ret_error = xstrdup("a maintenance run is one job: name it (agentctl run maintenance --recipe JOB)");
		return -EINVAL;
	}
	if (req->layer || req->app) {
		*ret_error = xasprintf("maintenance job %s runs for the instance, not for a layer or an app", job);
		return -EINVAL;
	}
	r = recipes_job_check(req->stack, req->config, job, &builtin, ret_error);
	if (r < 0)
		return r;
	def = stack_custom_recipe(req->stack, job);
	ctx.name = job;
	r = recipe_plan(&ctx, plan, ret_error);
	for (size_t i = 0; r == 0 && i < plan->n_steps; i++)
		if (!plan->steps[i]->recipe)
			plan->steps[i]->recipe = xstrdup(job);
	if (r == 0 && def && json_is_true(json_object_get(def, "singleton")))
		plan_set_gate(plan, PLAN_GATE_MUTEX, job, 1, false, job);
	else if (r == 0 && builtin.n && builtin.v[0].lock)
		plan_set_gate(plan, PLAN_GATE_MUTEX, builtin.v[0].lock, 1, false, job);
	recipe_jobs_free(&builtin);
	return r;
}

/* The URLs of this instance's Zope clients of app when the instances
 * kind serves it (127.0.0.1:8081...), NULL otherwise. */
static char **instances_health_urls(const struct stack *s, const char *app, const char *path)
{
	long n;
	char **v;

	if (strcmp(app, apps_app_name(s, APP_INSTANCES)) != 0)
		return NULL;
	n = plone_client_count(s, NULL);
	v = xcalloc((size_t)n + 1, sizeof(char *));
	for (long i = 0; i < n; i++)
		v[i] = xasprintf("http://127.0.0.1:%ld%s", PLONE_CLIENT_PORT_BASE + 1 + i, path);
	return v;
}

/* The health step of a rolling deploy: every client of a built-in app
 * answers path, or (custom recipes) the command exits 0. */
static int build_health(const struct recipe_ctx *ctx, const json_t *health, struct plan *plan, char **ret_error)
{
	const char *path = json_string_value(json_object_get(health, "path"));
	const json_t *cmd = json_object_get(health, "command"), *t = json_object_get(health, "timeout");
	struct health_step_opts o = { .timeout_sec = t ? (long)json_integer_value(t) : ROLLING_HEALTH_TIMEOUT };
	char **urls = NULL, **argv = NULL, **env = NULL;
	struct recipe_ctx ectx = *ctx;
	struct step *st;
	size_t i;
	json_t *v;

	if (path && apps_is_family_app(ctx->stack, ctx->app))
		urls = instances_health_urls(ctx->stack, ctx->app, path);
	if (!urls && json_is_array(cmd)) {
		argv = xcalloc(json_array_size(cmd) + 1, sizeof(char *));
		json_array_foreach(cmd, i, v)
			argv[i] = xstrdup(json_string_value(v));
		ectx.name = "health";
		env = recipes_custom_env(&ectx, NULL);
	}
	if (!urls && !argv) {
		st = plan_add_note(plan, ctx->app, "no health check applies to this app here (\"path\" is for the "
						  "clients of a built-in app, \"command\" for the others)");
	} else {
		o.urls = urls;
		o.argv = argv;
		o.env = env;
		st = plan_add_health(plan, ctx->app, &o, ret_error);
	}
	strv_free(urls);
	strv_free(argv);
	strv_free(env);
	if (!st)
		return -EINVAL;
	st->recipe = xstrdup("rolling");
	return 0;
}

/* A deploy of an app of agent.rolling (design.md §9) that does something
 * here: one slot of the semaphore deploy-<app> (max_parallel), kept by a
 * failed run, and the health check last. */
static int build_rolling(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	const json_t *roll = json_object_get(json_object_get(json_object_get(ctx->stack->root, "agent"), "rolling"),
					     ctx->app);
	const json_t *health = json_object_get(roll, "health");
	_cleanup_free_ char *name = NULL;
	bool acts = false;

	if (!roll)
		return 0;
	for (size_t i = 0; i < plan->n_steps; i++)
		if (strcmp(plan->steps[i]->ops->kind, "note") != 0)
			acts = true;
	if (!acts)
		return 0; /* nothing of this app runs here: no slot to take */
	name = xasprintf("deploy-%s", ctx->app);
	plan_set_gate(plan, PLAN_GATE_SEMAPHORE, name, (unsigned)json_integer_value(json_object_get(roll, "max_parallel")),
		      true, NULL);
	return health ? build_health(ctx, health, plan, ret_error) : 0;
}

/* A named plan: "rollback" (the link back one release, then the app's
 * restarts when the apps family serves it) or "restart" (the restarts only:
 * a run queued by an older agentd, which switched the link itself). */
static int build_named(const struct recipe_ctx *ctx, const char *recipe, struct plan *plan, char **ret_error)
{
	const struct stack_app *a = ctx->app ? stack_app_find(ctx->stack, ctx->app) : NULL;
	int r;

	/* Both are a deploy of one app, whatever layers serve it. */
	if (ctx->event != EVENT_DEPLOY || ctx->layer || !ctx->app) {
		*ret_error = xasprintf("the %s plan is the deploy of one app: event deploy, an app, no layer", recipe);
		return -EINVAL;
	}
	if (!a) {
		*ret_error = xasprintf("app \"%s\" is not in the stack's deploy section", ctx->app ? ctx->app : "");
		return -ENOENT;
	}
	if (strcmp(recipe, "restart") == 0)
		return apps_plan_restart(ctx->stack, ctx->config, ctx->app, plan, ret_error);
	if (strcmp(recipe, "rollback") != 0) {
		*ret_error = xasprintf("no plan is called \"%s\"", recipe);
		return -ENOENT;
	}
	if (apps_is_family_app(ctx->stack, ctx->app))
		r = apps_plan_rollback(ctx->stack, ctx->config, ctx->app, plan, ret_error);
	else /* An app no family serves has no services to restart. */
		r = plan_add_rollback(plan, ctx->app, a->deploy_to, ret_error) ? 0 : -EINVAL;
	/* Its steps say which plan they belong to, in runs and logs. */
	for (size_t i = 0; r == 0 && i < plan->n_steps; i++)
		if (!plan->steps[i]->recipe)
			plan->steps[i]->recipe = xstrdup(recipe);
	return r;
}

/* The layers a run covers: one, or every layer of this instance. */
static int build_layers(const struct stack *s, const char *layer, const char *const **ret, size_t *ret_n,
			char **ret_error)
{
	if (!layer) {
		*ret = (const char *const *)s->self_layers;
		*ret_n = s->n_self_layers;
		return 0;
	}
	if (!stack_has_self_layer(s, layer) && !stack_layer_find(s, layer)) {
		*ret_error = xasprintf("layer \"%s\" is not in the stack", layer);
		return -ENOENT;
	}
	if (!stack_has_self_layer(s, layer)) {
		*ret_error = xasprintf("instance \"%s\" is not a member of layer \"%s\"", s->instance, layer);
		return -ENOENT;
	}
	*ret_n = 1;
	return 1;
}

/* One layer: its recipes for the event, then the families' hooks after
 * them (unmounts at shutdown). */
static int build_layer(const struct recipe_ctx *base, const char *layer, struct plan *plan, char **ret_error)
{
	struct recipe_ctx ctx = *base;
	size_t n_names = 0;
	_cleanup_free_ const char **names = recipes_layer_recipes(base->stack, layer, base->event, &n_names);
	_cleanup_free_ char *err = NULL;
	int r;

	ctx.layer = layer;
	for (size_t j = 0; j < n_names; j++) {
		ctx.name = names[j];
		r = recipe_plan(&ctx, plan, &err);
		if (r < 0) {
			*ret_error = xasprintf("planning recipe %s for layer %s: %s", names[j], layer,
					       err ? err : strerror(-r));
			return r;
		}
	}
	ctx.name = NULL;
	r = recipes_plan_after_layer(&ctx, plan, &err);
	if (r < 0) {
		*ret_error = xasprintf("planning layer %s: %s", layer, err ? err : strerror(-r));
		return r;
	}
	return 0;
}

int recipes_build_plan(const struct recipe_ctx *req, const char *recipe, struct plan *plan, char **ret_error)
{
	const struct stack *s = req->stack;
	const char *const *layers;
	size_t n_layers;
	struct recipe_ctx ctx = *req;
	_cleanup_free_ char *err = NULL;
	int r;

	plan_init(plan, req->config->root);
	if (req->event == EVENT_MAINTENANCE)
		return build_maintenance(req, recipe, plan, ret_error);
	if (recipe)
		return build_named(req, recipe, plan, ret_error);
	r = build_layers(s, req->layer, &layers, &n_layers, ret_error);
	if (r < 0)
		return r;
	if (r == 1)
		layers = &req->layer;
	if (req->app && !stack_app_find(s, req->app)) {
		*ret_error = xasprintf("app \"%s\" is not in the stack's deploy section", req->app);
		return -ENOENT;
	}
	/* Family hooks before the layers (EBS volumes at setup and configure). */
	ctx.layer = NULL;
	ctx.name = NULL;
	r = recipes_plan_before(&ctx, plan, &err);
	if (r < 0) {
		*ret_error = xasprintf("planning %s: %s", event_to_string(req->event), err ? err : strerror(-r));
		return r;
	}
	for (size_t i = 0; i < n_layers; i++) {
		r = build_layer(req, layers[i], plan, ret_error);
		if (r < 0)
			return r;
	}
	if (req->event == EVENT_DEPLOY && req->app)
		return build_rolling(req, plan, ret_error);
	return 0;
}

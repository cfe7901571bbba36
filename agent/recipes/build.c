/* SPDX-License-Identifier: BSD-2-Clause */
/* The plan of a run: from what a run asks for (event, layer, app, or a named
 * plan such as a rollback) to the steps, through the families' hooks and
 * the layers' recipes. The engine knows no family: what a named plan holds
 * is decided here. */
#include <errno.h>
#include <string.h>

#include "apps.h"
#include "config.h"
#include "recipe.h"
#include "stack/stack.h"
#include "steps/plan.h"
#include "steps/step_rollback.h"
#include "util.h"

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
	return 0;
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* Which planner a recipe name means. A family is one table in its own file;
 * adding a family is adding its table to `families` below. */
#include <errno.h>
#include <string.h>

#include "recipe.h"
#include "config.h"
#include "steps/plan.h"
#include "stack/stack.h"
#include "util.h"

static const struct recipe_family *const families[] = {
	&family_files,
	&family_apps,
	&family_storage,
	&family_front,
};

static int pending_plan(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	struct step *s = plan_add_note(plan, ctx->name, "this recipe is not built into this version of agentd yet");
	s->recipe = xstrdup(ctx->name);
	return 0;
}

/* Names that are known (names.c) but have no planner yet. */
static const struct recipe pending_recipe = { "pending", pending_plan, NULL };

const struct recipe *recipe_find(const struct stack *stack, const char *name)
{
	const char *canonical;

	if (stack && stack_custom_recipe(stack, name))
		return &recipes_custom[0];
	canonical = recipe_canonical_name(name);
	if (!canonical)
		return NULL;
	for (size_t f = 0; f < ELEMENTSOF(families); f++)
		for (const struct recipe *r = families[f]->recipes; r && r->name; r++)
			if (strcmp(r->name, canonical) == 0)
				return r;
	return &pending_recipe;
}

/* Sets recipe and layer on the steps planned since first. */
static void label_steps(struct plan *plan, size_t first, const char *recipe, const char *layer)
{
	for (size_t i = first; i < plan->n_steps; i++) {
		struct step *s = plan->steps[i];
		if (!s->recipe && recipe)
			s->recipe = xstrdup(recipe);
		if (!s->layer && layer)
			s->layer = xstrdup(layer);
	}
}

static int run_hooks(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error, bool after_layer)
{
	for (size_t f = 0; f < ELEMENTSOF(families); f++) {
		int (*hook)(const struct recipe_ctx *, struct plan *, char **) =
			after_layer ? families[f]->plan_after_layer : families[f]->plan_before;
		struct recipe_ctx c = *ctx;
		size_t first = plan->n_steps;
		int r;

		if (!hook)
			continue;
		c.name = families[f]->name;
		r = hook(&c, plan, ret_error);
		label_steps(plan, first, c.name, ctx->layer);
		if (r < 0)
			return r;
	}
	return 0;
}

int recipes_plan_before(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	return run_hooks(ctx, plan, ret_error, false);
}

int recipes_plan_after_layer(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	return run_hooks(ctx, plan, ret_error, true);
}

int recipe_plan(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	const struct recipe *r = recipe_find(ctx->stack, ctx->name);
	size_t first = plan->n_steps;
	int ret;

	if (!r) {
		*ret_error = xasprintf("unknown recipe \"%s\"", ctx->name);
		return -ENOENT;
	}
	ret = r->plan(ctx, plan, ret_error);
	/* Every step says which recipe and layer planned it. */
	label_steps(plan, first, ctx->name, ctx->layer);
	return ret;
}

void recipe_paths_add(struct recipe_paths *p, const char *path, bool tree, char *what)
{
	_cleanup_free_ char *n = NULL;

	if (!path || path_normalize(path, &n) < 0) {
		free(what);
		return;
	}
	p->v = xrealloc(p->v, (p->n + 1) * sizeof(*p->v));
	p->v[p->n++] = (struct recipe_path){ .path = n, .what = what, .tree = tree };
	n = NULL;
}

void recipe_paths_free(struct recipe_paths *p)
{
	for (size_t i = 0; p && i < p->n; i++) {
		free(p->v[i].path);
		free(p->v[i].what);
	}
	if (p) {
		free(p->v);
		*p = (struct recipe_paths){ 0 };
	}
}

void recipes_owned_paths(const struct stack *stack, const struct config *c, const char *layer,
			 struct recipe_paths *ret)
{
	/* A recipe named at several events adds its paths again: harmless. */
	for (int ev = 0; ev < _EVENT_MAX; ev++) {
		size_t n = 0;
		_cleanup_free_ const char **names = stack_layer_recipes(stack, layer, (enum event)ev, &n);

		for (size_t i = 0; i < n; i++) {
			const struct recipe *r = names[i] ? recipe_find(stack, names[i]) : NULL;

			if (r && r->owns)
				r->owns(stack, c, layer, r->name, ret);
		}
	}
}

static const struct config *validate_config;

void recipes_set_config(const struct config *c)
{
	validate_config = c;
}

const struct config *recipes_config(void)
{
	static struct config defaults; /* filled once, kept until exit */
	static bool have_defaults;

	if (validate_config)
		return validate_config;
	if (!have_defaults) {
		config_defaults(&defaults);
		have_defaults = true;
	}
	return &defaults;
}

int recipes_validate(const struct stack *stack, struct stack_error *err)
{
	/* Each family validates the keys it reads once per document, whether or
	 * not this instance's layers use it: a bad value is an error for the
	 * whole stack, found before anything runs. */
	for (size_t f = 0; f < ELEMENTSOF(families); f++)
		for (const struct recipe *r = families[f]->recipes; r && r->name; r++)
			if (r->validate) {
				int ret = r->validate(stack, err);
				if (ret < 0)
					return ret;
			}
	return 0;
}

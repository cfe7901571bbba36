/* SPDX-License-Identifier: BSD-2-Clause */
/* Which planner a recipe name means. A family is one table in its own file;
 * adding a family is adding its table to `families` below. */
#include <errno.h>
#include <string.h>

#include "recipe.h"
#include "../plan.h"
#include "../stack.h"
#include "util.h"

extern const struct recipe recipes_files[];

static const struct recipe *const families[] = {
	recipes_files,
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
		for (const struct recipe *r = families[f]; r->name; r++)
			if (strcmp(r->name, canonical) == 0)
				return r;
	return &pending_recipe;
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
	for (size_t i = first; i < plan->n_steps; i++) {
		struct step *s = plan->steps[i];
		if (!s->recipe)
			s->recipe = xstrdup(ctx->name);
		if (!s->layer && ctx->layer)
			s->layer = xstrdup(ctx->layer);
	}
	return ret;
}

int recipes_validate(const struct stack *stack, struct stack_error *err)
{
	/* Each family validates the keys it reads once per document, whether or
	 * not this instance's layers use it: a bad value is an error for the
	 * whole stack, found before anything runs. */
	for (size_t f = 0; f < ELEMENTSOF(families); f++)
		for (const struct recipe *r = families[f]; r->name; r++)
			if (r->validate) {
				int ret = r->validate(stack, err);
				if (ret < 0)
					return ret;
			}
	return 0;
}

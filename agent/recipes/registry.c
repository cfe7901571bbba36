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
	&family_maintenance,
	&family_zodb,
	&family_system,
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
		_cleanup_free_ const char **names = recipes_layer_recipes(stack, layer, (enum event)ev, &n);

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

/* agent.layers: every recipe name is one this document knows (built in, or
 * in agent.recipes). */
static int validate_agent_layers(const json_t *root, const json_t *layers, struct stack_error *err)
{
	char lpath[CHECK_PATH_SIZE], epath[CHECK_PATH_SIZE], rpath[CHECK_PATH_SIZE], q[256];
	const char *shortname, *evname;
	json_t *l, *list, *e;
	size_t i;
	int r;

	if (!json_is_object(layers))
		return check_type_error(err, "$.agent.layers", "an object", layers);
	json_object_foreach((json_t *)layers, shortname, l) {
		if ((r = check_key_name(err, "$.agent.layers", "layer shortname", shortname)) < 0)
			return r;
		stack_path_key(lpath, sizeof(lpath), "$.agent.layers", shortname);
		if (!json_is_object(l))
			return check_type_error(err, lpath, "an object", l);
		json_object_foreach(l, evname, list) {
			/* maintenance is one job's run, never a layer's event (§8.1). */
			if (event_from_string(evname) == EVENT_INVALID || event_from_string(evname) == EVENT_MAINTENANCE)
				return stack_error_set(err, lpath,
						       "unknown event %s, expected setup, configure, deploy, undeploy or shutdown",
						       stack_quote(q, sizeof(q), evname));
			stack_path_key(epath, sizeof(epath), lpath, evname);
			if (json_is_null(list))
				continue;
			if (!json_is_array(list))
				return check_type_error(err, epath, "an array of recipe names", list);
			json_array_foreach(list, i, e) {
				stack_path_index(rpath, sizeof(rpath), epath, i);
				if (!json_is_string(e))
					return check_type_error(err, rpath, "a recipe name", e);
				if (!recipe_name_known(root, json_string_value(e)))
					return stack_error_set(err, rpath, "unknown recipe %s",
							       stack_quote(q, sizeof(q), json_string_value(e)));
			}
		}
	}
	return 0;
}

/* agent.recipes: names that do not shadow a built-in recipe, and each
 * definition valid (custom_validate.c). */
static int validate_agent_recipes(const json_t *recipes, struct stack_error *err)
{
	char q[256];
	const char *name;
	json_t *def;
	int r;

	if (!json_is_object(recipes))
		return check_type_error(err, "$.agent.recipes", "an object", recipes);
	json_object_foreach((json_t *)recipes, name, def) {
		if ((r = check_key_name(err, "$.agent.recipes", "recipe name", name)) < 0)
			return r;
		if (recipe_canonical_name(name))
			return stack_error_set(err, "$.agent.recipes", "custom recipe %s shadows a built-in recipe",
					       stack_quote(q, sizeof(q), name));
		r = recipe_custom_validate(def, name, err);
		if (r < 0)
			return r;
	}
	return 0;
}

int recipes_validate_agent(const struct stack *s, struct stack_error *err)
{
	static const char *const keys[] = { "layers", "recipes", "volumes", "files", "rolling", NULL };
	json_t *agent, *v;
	int r;

	r = check_object(err, "$", s->root, "agent", &agent);
	if (r < 0 || !agent)
		return r;
	r = check_known_keys(err, "$.agent", agent, keys);
	if (r < 0)
		return r;
	if ((v = check_get(agent, "recipes")) && (r = validate_agent_recipes(v, err)) < 0)
		return r;
	if ((v = check_get(agent, "layers")) && (r = validate_agent_layers(s->root, v, err)) < 0)
		return r;
	if ((v = check_get(agent, "rolling")) && (r = recipe_rolling_validate(v, err)) < 0)
		return r;
	return 0;
}

int recipes_validate_families(const struct recipe_family *const *v, size_t n, const struct stack *stack,
			      struct stack_error *err)
{
	/* Each family validates the keys it reads once per document, whether or
	 * not this instance's layers use it: a bad value is an error for the
	 * whole stack, found before anything runs. */
	for (size_t f = 0; f < n; f++)
		if (v[f]->validate) {
			int r = v[f]->validate(stack, err);
			if (r < 0)
				return r;
		}
	return 0;
}

int recipes_validate(const struct stack *stack, struct stack_error *err)
{
	int r = recipes_validate_agent(stack, err);

	if (r < 0)
		return r;
	return recipes_validate_families(families, ELEMENTSOF(families), stack, err);
}

int recipes_stack_load(const char *data, size_t len, const char *instance, struct stack **ret,
		       struct stack_error *err)
{
	struct stack_error dummy;
	struct stack *s = NULL;
	int r;

	if (!err)
		err = &dummy;
	*ret = NULL;
	r = stack_parse(data, len, instance, &s, err);
	if (r < 0)
		return r;
	r = recipes_validate(s, err);
	if (r < 0) {
		stack_unref(s);
		return r;
	}
	*ret = s;
	return 0;
}

void recipe_jobs_add(struct recipe_jobs *j, const char *name, const char *schedule, long splay, const char *lock,
		     const char *source)
{
	for (size_t i = 0; i < j->n; i++)
		if (strcmp(j->v[i].name, name) == 0)
			return;
	j->v = xrealloc(j->v, (j->n + 1) * sizeof(*j->v));
	j->v[j->n++] = (struct recipe_job){ .name = xstrdup(name),
					    .schedule = xstrdup(schedule),
					    .splay = splay,
					    .lock = lock ? xstrdup(lock) : NULL,
					    .source = source ? xstrdup(source) : NULL };
}

void recipe_jobs_free(struct recipe_jobs *j)
{
	for (size_t i = 0; j && i < j->n; i++) {
		free(j->v[i].name);
		free(j->v[i].schedule);
		free(j->v[i].lock);
		free(j->v[i].source);
	}
	if (j) {
		free(j->v);
		*j = (struct recipe_jobs){ 0 };
	}
}

void recipes_jobs(const struct stack *s, const struct config *c, struct recipe_jobs *ret)
{
	*ret = (struct recipe_jobs){ 0 };
	if (!s)
		return;
	for (size_t f = 0; f < ELEMENTSOF(families); f++)
		if (families[f]->jobs)
			families[f]->jobs(s, c, ret);
	recipes_custom_jobs(s, ret);
}

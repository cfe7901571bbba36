/* SPDX-License-Identifier: BSD-2-Clause */
/* Custom recipes (agent.recipes.<name>): one exec step running the
 * recipe's argv directly, never through a shell, with the stack JSON on
 * stdin and AGENT_* variables in its environment.
 *
 * Change reporting: the step is "changed" when it ran with inputs (the
 * stack revision, the recipe definition, event, layer and app) different from
 * its last successful run, "unchanged" when they were the same; a recipe that
 * knows better prints "changed=yes" or "changed=no" as its last line. */
#include <errno.h>
#include <string.h>

#include "recipe.h"
#include "config.h"
#include "steps/plan.h"
#include "stack/stack.h"
#include "util.h"
#include "strv.h"

#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

static void env_add(char ***env, size_t *n, char *entry)
{
	*env = xrealloc(*env, (*n + 2) * sizeof(char *));
	(*env)[(*n)++] = entry;
	(*env)[*n] = NULL;
}

char **recipes_custom_env(const struct recipe_ctx *ctx, const json_t *environment)
{
	char **env = NULL;
	size_t n_env = 0;
	const char *k;
	json_t *v;

	/* The recipe's own variables first: AGENT_* and PATH are ours. */
	env_add(&env, &n_env, xasprintf("PATH=%s", DEFAULT_PATH));
	json_object_foreach((json_t *)environment, k, v)
		if (strcmp(k, "PATH") != 0 && strncmp(k, "AGENT_", 6) != 0)
			env_add(&env, &n_env, xasprintf("%s=%s", k, json_string_value(v)));
	if (json_object_get(environment, "PATH"))
		env[0] = (free(env[0]), xasprintf("PATH=%s", json_string_value(json_object_get(environment, "PATH"))));
	env_add(&env, &n_env, xasprintf("AGENT_EVENT=%s", event_to_string(ctx->event)));
	env_add(&env, &n_env, xasprintf("AGENT_LAYER=%s", ctx->layer ? ctx->layer : ""));
	env_add(&env, &n_env, xasprintf("AGENT_APP=%s", ctx->app ? ctx->app : ""));
	env_add(&env, &n_env, xasprintf("AGENT_RUN_ID=%ld", ctx->run_id));
	env_add(&env, &n_env, xasprintf("AGENT_INSTANCE=%s", ctx->stack->instance));
	env_add(&env, &n_env, xasprintf("AGENT_ROOT=%s", ctx->config->root));
	env_add(&env, &n_env, xasprintf("AGENT_RECIPE=%s", ctx->name ? ctx->name : ""));
	return env;
}

static int custom_plan(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	const json_t *def = stack_custom_recipe(ctx->stack, ctx->name);
	const json_t *cmd = json_object_get(def, "command");
	const json_t *timeout = json_object_get(def, "timeout");
	const json_t *creates = json_object_get(def, "creates");
	_cleanup_free_ char *stdin_data = NULL, *def_dump = NULL, *key = NULL;
	char **argv = NULL, **env = NULL;
	size_t stdin_len = 0, i;
	json_t *v;
	uint64_t h;
	struct step *s;

	argv = xcalloc(json_array_size(cmd) + 1, sizeof(char *));
	json_array_foreach(cmd, i, v)
		argv[i] = xstrdup(json_string_value(v));
	env = recipes_custom_env(ctx, json_object_get(def, "environment"));

	stdin_data = stack_dump(ctx->stack, &stdin_len);
	def_dump = json_dumps(def, JSON_COMPACT | JSON_SORT_KEYS);
	h = hash_fnv1a64(ctx->stack->revision, strlen(ctx->stack->revision), HASH_FNV_SEED);
	h = hash_fnv1a64(def_dump, strlen(def_dump), h);
	key = xasprintf("custom/%s/%s/%s/%s", ctx->name, event_to_string(ctx->event), ctx->layer ? ctx->layer : "",
			ctx->app ? ctx->app : "");

	struct exec_step_opts o = {
		.argv = argv,
		.env = env,
		.user = json_string_value(json_object_get(def, "user")),
		.cwd = json_string_value(json_object_get(def, "cwd")),
		.timeout_sec = timeout ? (long)json_integer_value(timeout) : ctx->config->run_timeout,
		.stdin_data = stdin_data,
		.stdin_len = stdin_len,
		.input_key = key,
		.input_hash = h,
	};
	s = plan_add_exec(plan, ctx->name, &o, ret_error);
	strv_free(argv);
	strv_free(env);
	if (!s)
		return -EINVAL;
	if (creates)
		s->unless_exists = xstrdup(json_string_value(creates));
	return 0;
}

const struct recipe recipes_custom[] = {
	{ "custom", custom_plan, NULL },
	{ NULL, NULL, NULL },
};

/* A custom recipe with a "schedule" is a job of every instance of its
 * "layers" (default: every instance of the stack in a layer); a
 * "singleton" one takes the stack's lock of its name (build.c). */
void recipes_custom_jobs(const struct stack *s, struct recipe_jobs *ret)
{
	const json_t *all = json_object_get(json_object_get(s->root, "agent"), "recipes");
	const char *name;
	json_t *def;

	if (s->n_self_layers == 0)
		return;
	json_object_foreach((json_t *)all, name, def) {
		const json_t *sched = json_object_get(def, "schedule"), *layers = json_object_get(def, "layers"), *l;
		bool mine = !layers;
		size_t i;

		if (!json_is_string(sched))
			continue;
		json_array_foreach(layers, i, l)
			mine |= json_is_string(l) && stack_has_self_layer(s, json_string_value(l));
		if (!mine)
			continue;
		_cleanup_free_ char *source = xasprintf("agent.recipes.%s", name);
		recipe_jobs_add(ret, name, json_string_value(sched), (long)json_integer_value(json_object_get(def, "splay")),
				json_is_true(json_object_get(def, "singleton")) ? name : NULL, source);
	}
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* The recipe registry. A recipe is a planner: from (stack, this instance,
 * event, layer, app) to steps appended to a plan. It does no I/O of its own.
 * A family of recipes is one file under agent/recipes/ exporting a
 * NULL-terminated table, listed once in registry.c. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "event.h"

struct config;
struct plan;
struct recipe_family;
struct stack;
struct stack_error;

struct recipe_ctx {
	const struct stack *stack;
	const struct config *config;
	enum event event;
	const char *layer;       /* the layer this recipe runs for */
	const char *app;         /* AGENT_APP, NULL for none */
	long run_id;
	const char *name;        /* the recipe name as written in the stack */
	/* The engine's other stack, may be NULL or stack itself: its current one
	 * when the plan is made against an older stack (an undeploy after an app
	 * or layer left it), else the one applied before. An undeploy must not
	 * remove what either of them still places on this instance. */
	const struct stack *other_stack;
};

/* Paths a recipe writes or manages as a whole (recipe.owns). */
struct recipe_path {
	char *path;  /* owned, normal form */
	char *what;  /* owned: what it is, for messages */
	bool tree;   /* a directory agentd manages with all it holds, not one file */
};
struct recipe_paths {
	struct recipe_path *v; /* owned */
	size_t n;
};
/* Appends path (any spelling; ignored when it has no normal form) and what
 * it is (malloc'd, taken over). */
void recipe_paths_add(struct recipe_paths *p, const char *path, bool tree, char *what);
void recipe_paths_free(struct recipe_paths *p);

/* A scheduled maintenance job of one instance (design.md §8.1). Its runs
 * are event maintenance with recipe = name: the job's plan is the plan of
 * the recipe `name` (built-in or custom) for EVENT_MAINTENANCE. */
struct recipe_job {
	char *name;      /* owned: the job, also the run's recipe (agentctl run maintenance --recipe NAME) */
	char *schedule;  /* owned: 5-field cron expression, evaluated in UTC */
	long splay;      /* seconds: the per-host offset is a fixed value in [0, splay] */
	char *lock;      /* owned: the stack-wide lock it takes with an etcd source (design.md §9), or NULL */
	char *source;    /* owned: where it comes from, for `agentctl schedule` (e.g. "ebs_snapshots", "plone_zeoserver.pack") */
};
struct recipe_jobs {
	struct recipe_job *v; /* owned */
	size_t n;
};
/* Appends a job (strings copied; lock and source may be NULL). A second
 * job of the same name is ignored: the first one added wins. */
void recipe_jobs_add(struct recipe_jobs *j, const char *name, const char *schedule, long splay, const char *lock,
		     const char *source);
void recipe_jobs_free(struct recipe_jobs *j);
/* The maintenance jobs of the stack's own instance: every family's jobs
 * hook in the family table's order, then custom recipes with a "schedule".
 * ret is filled (recipe_jobs_free it); empty when the instance has none. */
void recipes_jobs(const struct stack *s, const struct config *c, struct recipe_jobs *ret);
/* Whether job can run on the stack's own instance as a maintenance run: a
 * custom recipe of agent.recipes (scheduled or not), or one of
 * recipes_jobs(). Returns 0 (and *ret_job, when non-NULL, a copy of the
 * built-in job, recipe_jobs_free'd by the caller with n 1; zeroed for a
 * custom recipe), or -ENOENT with *ret_error naming this instance's jobs.
 * recipes/build.c. */
int recipes_job_check(const struct stack *s, const struct config *c, const char *job, struct recipe_jobs *ret_job,
		      char **ret_error);

struct recipe {
	const char *name;        /* full name, e.g. "plone_buildout::haproxy" or "custom" */
	/* Appends steps. Returns 0, or a negative errno with *ret_error (malloc'd):
	 * the run fails at planning with that message. */
	int (*plan)(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error);
	/* Optional: appends the files this recipe writes, and the trees it
	 * manages, on an instance of layer for stack (c: recipes_config();
	 * name: this recipe's built-in name).
	 * Validation refuses an agent.files entry among them for a layer that
	 * meets this one: two writers of one file flip its content every run. */
	void (*owns)(const struct stack *stack, const struct config *c, const char *layer, const char *name,
		     struct recipe_paths *ret);
};

/* Finds a recipe by name, with or without the "plone_buildout::" prefix.
 * Custom recipes (agent.recipes.<name>) are looked up in the stack first. */
const struct recipe *recipe_find(const struct stack *stack, const char *name);
/* Whether name is a known recipe for this document: agent.recipes of the
 * given root JSON, or the built-in table. Used by validation. */
bool recipe_name_known(const json_t *root, const char *name);

/* The built-in name without the "plone_buildout::" prefix (a static string),
 * or NULL when name is not built in. */
const char *recipe_canonical_name(const char *name);
/* Default recipes of a well-known layer shortname for ev (NULL-terminated,
 * static), or NULL when the shortname has no default. */
const char *const *recipe_default_mapping(const char *layer, enum event ev);
/* The recipe names for (layer, event): agent.layers.<layer>.<event> when the
 * layer has an entry, else the built-in default mapping for well-known
 * shortnames (reference §1), else none. Returns a malloc'd array of borrowed
 * strings (free only the array) and its length. */
const char **recipes_layer_recipes(const struct stack *s, const char *layer, enum event ev, size_t *ret_n);

/* Plans one recipe for ctx into plan. */
int recipe_plan(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error);

/* The configuration validate hooks read (where the data directories
 * default to, which files the front end writes): set once by the daemon
 * after loading it; until then, and in tests, the defaults (config.c). The
 * pointer is borrowed and must outlive every validation. */
void recipes_set_config(const struct config *c);
const struct config *recipes_config(void);

/* What the built-in recipes that layer runs (any event) write or manage:
 * the union of their owns hooks. */
void recipes_owned_paths(const struct stack *stack, const struct config *c, const char *layer,
			 struct recipe_paths *ret);

/* Validates what the recipes read of a parsed stack (stack_parse() checked
 * the document's own shape): the agent section's keys, agent.recipes (names
 * and definitions), agent.layers (every recipe name known), then every
 * family's validate hook, once each, in the order of the family table.
 * Returns 0, or -EINVAL with err (when non-NULL) naming the JSON path. */
int recipes_validate(const struct stack *stack, struct stack_error *err);
/* The registry's own part of recipes_validate(): the agent section's keys,
 * agent.recipes and agent.layers (agent.volumes and agent.files are their
 * families': storage, files). */
int recipes_validate_agent(const struct stack *stack, struct stack_error *err);
/* The families' part of recipes_validate() over a table of n families (the
 * registry's own, or a test's). */
int recipes_validate_families(const struct recipe_family *const *v, size_t n, const struct stack *stack,
			      struct stack_error *err);
/* Loads a stack document the way every caller must: stack_parse() and then
 * recipes_validate(). Returns 0 and a model with refcount 1, or stack_parse()'s
 * errors (-EINVAL, -EFBIG, -E2BIG, -ENOMEM) or -EINVAL, with err (when
 * non-NULL) filled and *ret NULL. */
int recipes_stack_load(const char *data, size_t len, const char *instance, struct stack **ret,
		       struct stack_error *err);

/* A family: its recipes (a NULL-terminated table) and optional hooks the
 * engine calls around the layers' recipes. Families are listed once in
 * registry.c. */
struct recipe_family {
	const char *name;
	const struct recipe *recipes;
	/* Steps planned once per run before any layer's recipes; ctx->layer is
	 * NULL and ctx->name is the family name (e.g. EBS volumes at setup and
	 * configure). */
	int (*plan_before)(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error);
	/* Steps planned after all recipes of one layer (ctx->layer), e.g.
	 * unmounting what the layer mounted once its services stopped at
	 * shutdown. ctx->name is the family name. */
	int (*plan_after_layer)(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error);
	/* Optional: checks the stack keys the family's recipes read, once per
	 * stack version whether or not this instance uses them (typed checks:
	 * stack/check.h). Returns 0 or -EINVAL with err. */
	int (*validate)(const struct stack *stack, struct stack_error *err);
	/* Optional: appends the maintenance jobs (design.md §8.1) this family
	 * schedules on the stack's own instance (stack_self(), its layers and
	 * the recipes they run), with recipe_jobs_add(). c: recipes_config(). */
	void (*jobs)(const struct stack *stack, const struct config *c, struct recipe_jobs *ret);
};

/* The plan of a run into plan (plan_init'd here): with recipe NULL, the
 * families' plan_before hooks, then for ctx->layer (NULL: every layer of
 * this instance) its recipes for ctx->event and the plan_after_layer hooks;
 * else the named plan ("rollback", "restart") for ctx->app. ctx->name and
 * ctx->layer-as-current-layer are set here. Returns 0, or a negative errno
 * with *ret_error: -ENOENT when the layer, app or named plan is not there
 * (retrying cannot help). recipes/build.c. */
int recipes_build_plan(const struct recipe_ctx *ctx, const char *recipe, struct plan *plan, char **ret_error);

/* Runs every family's plan_before / plan_after_layer hook. */
int recipes_plan_before(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error);
int recipes_plan_after_layer(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error);

/* Families. */
extern const struct recipe_family family_files, family_apps, family_storage, family_front;
/* Maintenance (design.md §8.1): EBS snapshots (maintenance.c), ZODB pack
 * and backup (zodb.c), logrotate and unattended-upgrades (system.c). */
extern const struct recipe_family family_maintenance, family_zodb, family_system;
/* The jobs of custom recipes that carry a "schedule" (custom.c). */
void recipes_custom_jobs(const struct stack *s, struct recipe_jobs *ret);
extern const struct recipe recipes_custom[];
/* A custom recipe's environment (NULL-terminated "K=V", strv_free): PATH,
 * the recipe's own variables (environment, may be NULL), then AGENT_EVENT,
 * AGENT_LAYER, AGENT_APP, AGENT_RUN_ID, AGENT_INSTANCE, AGENT_ROOT and
 * AGENT_RECIPE of ctx. */
char **recipes_custom_env(const struct recipe_ctx *ctx, const json_t *environment);
extern const struct recipe recipes_pending[];
/* Validates agent.recipes.<name> (called by recipes_validate() for each entry). */
int recipe_custom_validate(const json_t *def, const char *name, struct stack_error *err);
/* Validates agent.rolling (design.md §9): {"<app>": {"max_parallel": 1..1000,
 * "health": {"path": "/...", "command": [argv], "timeout": 1..86400}}}. */
int recipe_rolling_validate(const json_t *rolling, struct stack_error *err);

/* SPDX-License-Identifier: BSD-2-Clause */
/* Internals of the apps family (instances-*, zeoserver-*, solr-*): which
 * app a recipe serves, deploy.cfg rendering, services, validation. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

#include "util.h"

struct stack_error;

struct stack;
struct stack_app;

enum app_kind { APP_INSTANCES, APP_ZEOSERVER, APP_SOLR };

/* One supervisor program. */
struct app_service {
	char *name;     /* owned: "<app>" or "<app>-<cmd name>" */
	char *command;  /* owned: "<cmd> <args>", relative to the release */
	long delay;     /* rolling-restart delay, seconds */
};

struct app_services {
	struct app_service *v; /* owned */
	size_t n;
};

/* The Custom JSON section of a kind ("plone_instances", ...). */
const char *apps_section_name(enum app_kind k);
/* The app name a kind serves: <section>.app_name, default the kind's own. */
const char *apps_app_name(const struct stack *s, enum app_kind k);

/* deploy.cfg for app (malloc'd). */
char *apps_render_deploy_cfg(const struct stack *s, enum app_kind k, const struct stack_app *app,
			     const char *host_deploy_to);
/* The app's services, in order: buildout_init_commands, then the kind's own. */
void apps_services(const struct stack *s, enum app_kind k, const struct stack_app *app, struct app_services *ret);
void apps_services_free(struct app_services *sv);
/* The environment: the app's, without RUBY*, RAILS*, RACK* keys, sorted,
 * plus PYTHON_EGG_CACHE (a host path). A JSON object (new reference). */
json_t *apps_environment(const struct stack_app *app, const char *host_deploy_to);

struct config;
struct recipe_paths;
/* The recipe owns hook of the family (recipe.h): the app's deploy_to, its
 * supervisor program files, the logrotate file of the instances, /etc/fstab
 * when the recipe mounts the shared blobs. */
void apps_owns(const struct stack *s, const struct config *c, const char *layer, const char *name,
	       struct recipe_paths *ret);
/* The stack validation of everything this family reads. */
int apps_validate(const struct stack *s, struct stack_error *err);

struct config;
struct plan;

/* Whether app is served by one of this family's kinds (instances, zeoserver, solr). */
bool apps_is_family_app(const struct stack *s, const char *app);
/* The restart steps of every service of app (rolling, with their delays),
 * used after `agentctl rollback APP`. Returns 0 or a negative errno with
 * *ret_error. */
int apps_plan_restart(const struct stack *s, const struct config *c, const char *app, struct plan *plan,
		      char **ret_error);
/* The plan of `agentctl rollback APP`: the rollback step of app's
 * deploy_to/current (steps/step_rollback.h), then, for an app of this
 * family, the restart steps of apps_plan_restart (another app's plan is the
 * rollback step alone). -ENOENT with *ret_error when app is not in the stack. */
int apps_plan_rollback(const struct stack *s, const struct config *c, const char *app, struct plan *plan,
		       char **ret_error);

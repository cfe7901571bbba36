/* SPDX-License-Identifier: BSD-2-Clause */
/* Plone apps: scm deploy, buildout, supervisord (instances-*, zeoserver-*, solr-*). Issue 3. */
#include "recipe.h"

static const struct recipe recipes_apps[] = {
	{ NULL, NULL, NULL },
};

const struct recipe_family family_apps = { .name = "apps", .recipes = recipes_apps };

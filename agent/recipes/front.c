/* SPDX-License-Identifier: BSD-2-Clause */
/* Front end: haproxy, varnish, nginx. Issue 5. */
#include "recipe.h"

static const struct recipe recipes_front[] = {
	{ NULL, NULL, NULL },
};

const struct recipe_family family_front = { .name = "front", .recipes = recipes_front };

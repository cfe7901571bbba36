/* SPDX-License-Identifier: BSD-2-Clause */
/* ZODB pack and backup jobs of the zeoserver and RelStorage apps (design.md §8.1). */
#include "recipe.h"

const struct recipe_family family_zodb = { .name = "zodb" };

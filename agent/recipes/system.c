/* SPDX-License-Identifier: BSD-2-Clause */
/* What every instance gets: logrotate files and unattended-upgrades (design.md §8.1). */
#include "recipe.h"

const struct recipe_family family_system = { .name = "system" };

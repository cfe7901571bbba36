/* SPDX-License-Identifier: BSD-2-Clause */
/* EBS snapshots through EC2's Query API (design.md §8.1): the ebs_snapshots job. */
#include "recipe.h"

const struct recipe_family family_maintenance = { .name = "maintenance" };

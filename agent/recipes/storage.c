/* SPDX-License-Identifier: BSD-2-Clause */
/* Storage: EBS volumes, NFS and GlusterFS shared blobs. Issue 4. */
#include "recipe.h"

static const struct recipe recipes_storage[] = {
	{ NULL, NULL, NULL },
};

const struct recipe_family family_storage = { .name = "storage", .recipes = recipes_storage };

#include "storage.h"

int storage_plan_blob_mounts(const struct recipe_ctx *ctx, const struct stack_app *app, const json_t *section,
			     struct plan *plan, char **ret_error)
{
	return 0;
}

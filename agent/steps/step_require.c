/* SPDX-License-Identifier: BSD-2-Clause */
/* The require step kind (step_require.h). */
#include "step_require.h"

#include <errno.h>

#include "rootfs.h"
#include "step_util.h"
#include "util.h"

struct require_data {
	char *root;  /* owned: a copy of the plan's root */
	char *why;   /* owned */
};

static void require_data_free(void *p)
{
	struct require_data *d = p;

	if (!d)
		return;
	free(d->root);
	free(d->why);
	free(d);
}

static char *require_missing(const struct step *s)
{
	const struct require_data *d = s->data;

	if (rootfs_exists(d->root, s->target))
		return NULL;
	return xasprintf("%s does not exist: %s", s->target, d->why);
}

static int require_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			    char **ret_error)
{
	char *missing = require_missing(s);

	if (!missing) {
		*ret_action = "none";
		return 0;
	}
	*ret_error = missing; /* the plan shows action "fail" */
	return -ENOENT;
}

static void require_apply(struct step *s, struct plan_exec *x)
{
	_cleanup_free_ char *missing = require_missing(s);

	if (missing)
		return plan_step_done(x, STEP_FAILED, "%s", missing);
	plan_step_done(x, STEP_UNCHANGED, NULL);
}

static const struct step_ops require_ops = {
	.kind = "require",
	.describe = require_describe,
	.apply = require_apply,
	.free_data = require_data_free,
};

struct step *plan_add_require(struct plan *p, const char *path, const char *why, char **ret_error)
{
	struct require_data *d;

	if (plan_check_path(p, path, ret_error) < 0)
		return NULL;
	d = xcalloc(1, sizeof(*d));
	d->root = plan_root(p);
	d->why = xstrdup(why ? why : "");
	return plan_add(p, &require_ops, path, d);
}

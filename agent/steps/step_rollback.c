/* SPDX-License-Identifier: BSD-2-Clause */
/* Stub: the rollback step kind is being written (issue 10). */
#include <errno.h>

#include "step_rollback.h"
#include "util.h"

int rollback_preview(const char *root, const char *deploy_to, char **ret_from, char **ret_to, char **ret_error)
{
	*ret_error = xstrdup("rollback_preview: not written yet");
	return -ENOSYS;
}

struct step *plan_add_rollback(struct plan *p, const char *app, const char *deploy_to, char **ret_error)
{
	*ret_error = xstrdup("plan_add_rollback: not written yet");
	return NULL;
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* Stub: the apps family's rollback plan is being written (issue 10). */
#include <errno.h>

#include "apps.h"
#include "util.h"

int apps_plan_rollback(const struct stack *s, const struct config *c, const char *app, struct plan *plan,
		       char **ret_error)
{
	*ret_error = xstrdup("apps_plan_rollback: not written yet");
	return -ENOSYS;
}

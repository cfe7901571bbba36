/* SPDX-License-Identifier: BSD-2-Clause */
/* `agentctl rollback APP` as a plan of the apps family (apps.h): current
 * goes back one release (steps/step_rollback.h), then the app's services
 * restart, rolling, as after a deploy (apps_plan_restart), since they run
 * the code of current. */
#include <errno.h>

#include "apps.h"
#include "stack/stack.h"
#include "steps/plan.h"
#include "steps/step_rollback.h"
#include "util.h"

int apps_plan_rollback(const struct stack *s, const struct config *c, const char *app, struct plan *plan,
		       char **ret_error)
{
	const struct stack_app *a = stack_app_find(s, app);

	if (!a) {
		*ret_error = xasprintf("app \"%s\" is not in the stack's deploy section", app);
		return -ENOENT;
	}
	if (!plan_add_rollback(plan, app, a->deploy_to, ret_error))
		return -EINVAL;
	/* An app no family of ours runs (a "deploy" entry only) has its link
	 * switched, as `agentctl rollback` always did, and nothing to restart. */
	if (!apps_is_family_app(s, app))
		return 0;
	return apps_plan_restart(s, c, app, plan, ret_error);
}

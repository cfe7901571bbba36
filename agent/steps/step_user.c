/* SPDX-License-Identifier: BSD-2-Clause */
/* The "user" step kind (step_user.h): a system group and user, created by
 * groupadd and useradd in children, one after the other, when the user
 * database lacks them at the time the step runs. */
#include "step_user.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "io/exec.h"
#include "plan.h"
#include "util.h"

#define USER_TIMEOUT_MS 60000L

struct user_data {
	char *user, *group, *home;
	char *root; /* copy of the plan's root */

	/* While running. */
	struct plan_exec *x; /* borrowed */
	struct exec *proc;   /* borrowed: freed by exec.c after done */
};

static void user_free(void *data)
{
	struct user_data *d = data;

	if (!d)
		return;
	free(d->user);
	free(d->group);
	free(d->home);
	free(d->root);
	free(d);
}

/* What is missing now: bit 1 the group, bit 2 the user. */
static int user_missing(const struct user_data *d)
{
	return (group_lookup(d->group, NULL) != 0 ? 1 : 0) | (user_lookup(d->user, NULL, NULL) != 0 ? 2 : 0);
}

/* Under a test root nothing is created: the step says so in its message. */
static bool user_note_missing(struct step *s, const struct user_data *d)
{
	if (strcmp(d->root, "/") == 0)
		return false;
	free(s->message);
	s->message = xasprintf("user %s or group %s is missing; not created under root %s", d->user, d->group,
			       d->root);
	return true;
}

static int user_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			 char **ret_error)
{
	struct user_data *d = s->data;

	if (user_missing(d) == 0 || user_note_missing(s, d))
		*ret_action = "none";
	else
		*ret_action = "create";
	return 0;
}

static void user_next(struct user_data *d);

static void cb_user_output(void *userdata, const char *data, size_t len)
{
	struct user_data *d = userdata;

	plan_step_output(d->x, data, len);
}

static void cb_user_done(void *userdata, const struct exec_result *r)
{
	struct user_data *d = userdata;

	d->proc = NULL;
	if (r->spawn_error || r->timed_out || r->term_signal || r->exit_status != 0) {
		_cleanup_free_ char *why = exec_result_describe(r, USER_TIMEOUT_MS);
		struct plan_exec *x = d->x;

		d->x = NULL;
		return plan_step_done(x, STEP_FAILED, "%s", why);
	}
	user_next(d);
}

/* Runs what is still missing, the group first (useradd names it). */
static void user_next(struct user_data *d)
{
	char *groupadd[] = { "groupadd", "--system", d->group, NULL };
	char *useradd[] = { "useradd", "--system", "--gid", d->group, "--home-dir", d->home, "--no-create-home",
			    "--shell", "/usr/sbin/nologin", d->user, NULL };
	int missing = user_missing(d);
	struct exec_opts o = { .cwd = d->root, .timeout_ms = USER_TIMEOUT_MS };
	struct plan_exec *x = d->x;
	int r;

	if (missing == 0) {
		d->x = NULL;
		return plan_step_done(x, STEP_CHANGED, NULL);
	}
	o.argv = missing & 1 ? groupadd : useradd;
	r = exec_start(plan_exec_env(x)->loop, &o, cb_user_output, cb_user_done, d, &d->proc);
	if (r < 0) {
		d->x = NULL;
		d->proc = NULL;
		return plan_step_done(x, STEP_FAILED, "could not start %s: %s", o.argv[0], strerror(-r));
	}
	plan_step_spawned(x, d->proc);
}

static void user_apply(struct step *s, struct plan_exec *x)
{
	struct user_data *d = s->data;

	if (user_missing(d) == 0)
		return plan_step_done(x, STEP_UNCHANGED, NULL);
	if (user_note_missing(s, d))
		return plan_step_done(x, STEP_SKIPPED, NULL);
	d->x = x;
	user_next(d);
}

static void user_cancel(struct step *s)
{
	struct user_data *d = s->data;

	if (d->proc)
		exec_terminate(d->proc);
}

static const struct step_ops user_ops = {
	.kind = "user",
	.describe = user_describe,
	.apply = user_apply,
	.cancel = user_cancel,
	.free_data = user_free,
};

struct step *plan_add_user(struct plan *p, const struct user_step_opts *o, char **ret_error)
{
	struct user_data *d;

	if (!o->user || !o->group || !o->home) {
		*ret_error = xstrdup("a user step needs a user, a group and a home");
		return NULL;
	}
	d = xcalloc(1, sizeof(*d));
	d->user = xstrdup(o->user);
	d->group = xstrdup(o->group);
	d->home = xstrdup(o->home);
	d->root = xstrdup(p->root ? p->root : "/");
	return plan_add(p, &user_ops, o->user, d);
}

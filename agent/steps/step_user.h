/* SPDX-License-Identifier: BSD-2-Clause */
/* The "user" step kind: a system group and a system user of it, created
 * when missing (groupadd --system, then useradd --system with the given home
 * and no login shell; 60 s each). The user database is read when the step is
 * described or applied, never when it is planned, so that a planner does no
 * I/O (design.md §6): "none" / "unchanged" when both exist.
 *
 * Under a root other than "/" nothing is created (the host's database is not
 * the managed system's): a missing user or group gives action "none" and a
 * message in a plan, "skipped" with that message in a run, as a note would. */
#pragma once

struct plan;
struct step;

struct user_step_opts {
	const char *user;  /* required */
	const char *group; /* required: the user's primary group */
	const char *home;  /* required: the user's home directory, on the managed system (not created) */
};
/* The step's target is the user name. NULL with *ret_error when a field is
 * missing. */
struct step *plan_add_user(struct plan *p, const struct user_step_opts *o, char **ret_error);

/* SPDX-License-Identifier: BSD-2-Clause */
/* The rollback step kind: points an app's deploy_to/current at the release
 * before the one it names (release names sort by time), with the rootfs
 * rules of lib/rootfs.h (design.md §5 `rollback`). */
#pragma once

struct plan;
struct step;

/* Resolves, inside root, what a rollback of deploy_to would do: *ret_from
 * and *ret_to are the release names (malloc'd, escaped for messages).
 * Returns 0, or a negative errno with a malloc'd *ret_error naming the
 * cause: -ENOENT (no releases directory, no current, no earlier release),
 * -EINVAL (current is not releases/<name>), -ELOOP (the earlier release is
 * a symlink). Reads the file system; for the engine's synchronous answer
 * and for the step itself. */
int rollback_preview(const char *root, const char *deploy_to, char **ret_from, char **ret_to, char **ret_error);
/* The same, with app named in the messages as today's `agentctl rollback`
 * names it ("shop has no release before 20261101000000"). */
int rollback_preview_app(const char *root, const char *app, const char *deploy_to, char **ret_from, char **ret_to,
			 char **ret_error);

/* Adds the step (kind "rollback", target deploy_to/current). app names the
 * app in messages. NULL with *ret_error on a bad argument. */
struct step *plan_add_rollback(struct plan *p, const char *app, const char *deploy_to, char **ret_error);

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
 * cause: -ENOENT (no releases directory, no current, no earlier release, or
 * the earlier one is not a directory), -EINVAL (current is not
 * releases/<name>), -ELOOP (the earlier release is a symlink the rootfs rule
 * refuses). Reads the file system, changes nothing; for the engine's
 * synchronous answer. Its messages name the app "the app": callers that
 * know the app use rollback_preview_app(). */
int rollback_preview(const char *root, const char *deploy_to, char **ret_from, char **ret_to, char **ret_error);
/* The same, with app named in the messages as `agentctl rollback` has
 * always named it ("shop has no release before 20261101000000"); the step's
 * own errors are these. app NULL: "the app". */
int rollback_preview_app(const char *root, const char *app, const char *deploy_to, char **ret_from, char **ret_to,
			 char **ret_error);

/* Adds the step (kind "rollback", target deploy_to/current). app names the
 * app in messages and the log. It resolves everything again when it runs
 * (the checks of rollback_preview_app), switches current atomically and is
 * "changed"; the same step applied again finds current where it put it and
 * is "unchanged" rather than go back a second release. Its describe says
 * "update" with current's change as a diff, or the error. NULL with
 * *ret_error when deploy_to is not a safe absolute path. */
struct step *plan_add_rollback(struct plan *p, const char *app, const char *deploy_to, char **ret_error);

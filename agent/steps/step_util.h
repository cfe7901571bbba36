/* SPDX-License-Identifier: BSD-2-Clause */
/* For the built-in step kinds (step_file.c, step_link.c, step_exec.c): what
 * they share. Not for recipes. */
#pragma once

#include <stdbool.h>
#include <sys/stat.h>
#include <sys/types.h>

struct plan;

/* A copy of s, or NULL for NULL. */
char *xstrdup_or_null(const char *s);
/* Checks that path is an absolute path of the managed system without "..";
 * the step keeps it as given, with a copy of the root (plan_root()), and
 * resolves it inside the root (rootfs.h) each time it runs. 0, or -EINVAL
 * (or another negative errno) with *ret_error set. */
int plan_check_path(const struct plan *p, const char *path, char **ret_error);
/* A malloc'd copy of the plan's root ("/" when unset). */
char *plan_root(const struct plan *p);
/* Whether path names the root itself: only "/" and "." components. */
bool path_is_root(const char *path);
/* Resolves owner and group names (or numbers) to ids when a step is
 * described or applied, never when it is planned: the user may be created
 * by an earlier step. NULL gives -1. 0, or a negative errno with *ret_error
 * ("unknown user NAME", "unknown group NAME", ...). */
int resolve_owner(const char *owner, const char *group, uid_t *ret_uid, gid_t *ret_gid, char **ret_error);
/* Whether st's permission bits differ from mode ((mode_t)-1: never). */
bool meta_mode_differs(const struct stat *st, mode_t mode);
/* Whether st's owner differs from uid or gid (-1: not compared). */
bool meta_owner_differs(const struct stat *st, uid_t uid, gid_t gid);
/* The parent directory of path inside root, as an O_PATH fd, and the final
 * component (malloc'd); with create, missing parents are made (0755).
 * 0 or a negative errno (rootfs_strerror() says which). */
int open_parent(const char *root, const char *path, bool create, int *ret_dirfd, char **ret_name);

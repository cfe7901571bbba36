/* SPDX-License-Identifier: BSD-2-Clause */
/* Paths resolved inside a root directory, as if it were "/".
 *
 * Joining "/srv/app/x" under root as a string is not enough: the kernel
 * follows symlinks in the parent directories, so root/srv/app -> /outside
 * would make a write land in /outside. These helpers resolve every
 * component relative to a directory fd of the root: openat2(2) with
 * RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS, where every symlink (absolute or
 * relative, with any number of "..") is resolved as if root were "/" and so
 * cannot leave it. Where openat2 is not available (ENOSYS: kernels before
 * 5.6, seccomp filters, valgrind before 3.22) the same resolution is done in
 * user space, one component at a time with O_PATH|O_NOFOLLOW, with the same
 * semantics.
 *
 * The callers then act on the final component only, relative to the
 * parent's fd, with *at() calls that do not follow it (AT_SYMLINK_NOFOLLOW,
 * O_NOFOLLOW, unlinkat, renameat, symlinkat...). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Opens root (a trusted path, followed normally) as an O_PATH directory fd.
 * Returns the fd or a negative errno. */
int rootfs_open(const char *root);

/* Resolves path (absolute or relative: both start at the root) inside
 * rootfd, following every symlink inside the root, and returns an O_PATH fd
 * of the result (with want_dir, -ENOTDIR unless it is a directory). Returns
 * the fd or a negative errno (-ENOENT, -ENOTDIR, -ELOOP, ...). */
int rootfs_resolve(int rootfd, const char *path, bool want_dir);

/* Resolves the parent directory of path inside rootfd (as rootfs_resolve)
 * and returns it as an O_PATH directory fd in *ret_dirfd, with the final
 * component, which is not resolved, in *ret_name (malloc'd). With
 * create_parents, missing directories are created one component at a time
 * with mkdirat() relative to the already resolved parent, with mode (less
 * the umask). path must have no ".." component (-EINVAL); "/" gives the
 * root itself with name ".". Returns 0 or a negative errno. */
int rootfs_open_parent(int rootfd, const char *path, bool create_parents, mode_t mode, int *ret_dirfd,
		       char **ret_name);

/* The same, but starting from a root path (opened and closed here). */
int rootfs_open_parent_path(const char *root, const char *path, bool create_parents, mode_t mode, int *ret_dirfd,
			    char **ret_name);

/* Whether path exists inside root without following its final component
 * (lstat semantics: a dangling symlink exists). Errors count as missing. */
bool rootfs_exists(const char *root, const char *path);

/* The id of the mount that name in dirfd (not followed) is on, from statx's
 * STATX_MNT_ID; name "" means dirfd itself. -EOPNOTSUPP when the kernel does
 * not report it. */
int rootfs_mount_id(int dirfd, const char *name, uint64_t *ret);

/* For tests: force the user-space resolution (true) or go back to openat2
 * when the kernel has it (false). */
void rootfs_force_fallback(bool on);

/* SPDX-License-Identifier: BSD-2-Clause */
/* Paths resolved inside a root directory, as if it were "/", without
 * following a symlink that a user other than root could have put there.
 *
 * Joining "/srv/app/x" under root as a string is not enough: the kernel
 * follows symlinks in the parent directories, so root/srv/app -> /outside
 * would make a write land in /outside. And in production root is "/", so
 * keeping links inside it protects nothing: the app user owns deploy_to and
 * shared/, and a link planted there (deploy_to/current -> /etc/sudoers.d,
 * shared -> /, swapped in with renameat2 while agentd works) would steer
 * root's writes, chowns and mounts anywhere.
 *
 * The rule. Every path is resolved one component at a time, each opened
 * relative to the directory fd before it without following it (openat2
 * with RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH; where openat2 is missing
 * (ENOSYS: kernels before 5.6, seccomp filters, valgrind before 3.22),
 * openat with O_PATH|O_NOFOLLOW, which is the same for one component):
 *  - A directory is shared when a user other than root (and other than
 *    agentd's own euid) can change its entries: it is not owned by root, or
 *    it is group- or world-writable without the sticky bit.
 *  - A symlink met in a directory that is shared, or below one the walk went
 *    through, is not followed: the resolution fails with -ELOOP, and
 *    rootfs_strerror() names the link, the path and the directory's owner.
 *    From the first shared directory on, nothing is followed.
 *  - One exception, the link agentd itself manages: a symlink named
 *    "current" whose text is exactly "releases/<name>" (a plain name) is
 *    followed there; "releases" and "<name>" are then walked like every
 *    other component, so both must be real directories below the same
 *    directory (a planted "current" pointing anywhere else is refused).
 *  - In a sticky directory that others can write (/tmp), a symlink is
 *    followed only when root, agentd or the directory's owner owns it (the
 *    kernel's protected_symlinks rule).
 *  - A symlink in a directory that only root can change, and that was
 *    reached through such directories only, is followed as before: its text
 *    (absolute or relative, with any number of "..") is resolved as if root
 *    were "/", so it cannot leave the root (/var/www -> /srv/www works).
 *  - ".." pops a level of the directories walked, never above the root.
 *
 * The callers then act on the final component only, relative to the
 * parent's fd, with *at() calls that do not follow it (AT_SYMLINK_NOFOLLOW,
 * O_NOFOLLOW, unlinkat, renameat, symlinkat...), and change metadata
 * through an fd of the object they opened (fchown, fchmod), never through a
 * path resolved again later. A file they would adopt in a shared directory
 * (same content, other owner, or other names through hard links) is written
 * anew instead (rootfs_dir_shared()). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Opens root (a trusted path, followed normally) as an O_PATH directory fd.
 * Returns the fd or a negative errno. */
int rootfs_open(const char *root);

/* The link agentd manages in a deploy_to, and the directory it names a
 * release in (see the rule above). */
#define ROOTFS_MANAGED_LINK "current"
#define ROOTFS_MANAGED_LINK_DIR "releases"

/* Resolves path (absolute or relative: both start at the root) inside
 * rootfd by the rule above, and returns an O_PATH fd
 * of the result (with want_dir, -ENOTDIR unless it is a directory). Returns
 * the fd or a negative errno (-ENOENT, -ENOTDIR, -ELOOP, ...). */
int rootfs_resolve(int rootfd, const char *path, bool want_dir);

/* The same, for a caller that must then use the path as a string (mount(2)
 * and umount(2) through libmount and its helpers take a path): fails with
 * -EPERM (rootfs_strerror() says why) when any name of it is looked up in a
 * shared directory, where another user could swap it between this
 * resolution and that use. The final directory itself may be anyone's. */
int rootfs_resolve_private(int rootfd, const char *path, bool want_dir);

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

/* Creates name in dirfd as a new regular file: whatever is there and is
 * not a directory (a file, a symlink planted by another user) is removed,
 * not followed, and the file is made with O_CREAT|O_EXCL|O_NOFOLLOW, so the
 * fd returned is a file this call made. Write the content through that fd
 * (or /proc/self/fd/N), never the name. Returns a writable fd or a negative
 * errno (-EEXIST when something raced in between, -EISDIR for a
 * directory... as openat). */
int rootfs_create_file_at(int dirfd, const char *name, mode_t mode);

/* The id of the mount that name in dirfd (not followed) is on, from statx's
 * STATX_MNT_ID; name "" means dirfd itself. -EOPNOTSUPP when the kernel does
 * not report it. */
int rootfs_mount_id(int dirfd, const char *name, uint64_t *ret);

/* strerror(-r), except for the -ELOOP of a refused symlink (the rule
 * above) or the -EPERM of rootfs_resolve_private(): then a sentence naming
 * the link or name, the path and the shared directory's owner and mode.
 * Valid until the next resolution. */
const char *rootfs_strerror(int r);

/* Whether a user other than root (or agentd) can change the entries of the
 * directory dirfd (an fd, any kind): it is not owned by root, or is group-
 * or world-writable without the sticky bit. An fstat error counts as
 * shared. */
bool rootfs_dir_shared(int dirfd);

/* For tests: force the openat(O_NOFOLLOW) resolution (true) or go back to
 * openat2 when the kernel has it (false). */
void rootfs_force_fallback(bool on);

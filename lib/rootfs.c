/* SPDX-License-Identifier: BSD-2-Clause */
/* Paths resolved inside a root directory (see rootfs.h). */
#include "rootfs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util.h"

/* Like the kernel's MAXSYMLINKS. */
#define ROOTFS_MAX_SYMLINKS 40
/* Directories the user-space resolution keeps open at once (one per level). */
#define ROOTFS_MAX_DEPTH 256

/* 0: not tried yet, 1: openat2 works, -1: use the user-space resolution. */
static int have_openat2;
static bool force_fallback;

void rootfs_force_fallback(bool on)
{
	force_fallback = on;
}

int rootfs_open(const char *root)
{
	int fd;

	if (!root || !*root)
		return -EINVAL;
	fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static int fd_dup(int fd)
{
	int r = fcntl(fd, F_DUPFD_CLOEXEC, 3);

	return r < 0 ? -errno : r;
}

/* openat2 with RESOLVE_IN_ROOT; -ENOSYS when the kernel lacks it. */
static int resolve_openat2(int rootfd, const char *rel, bool want_dir)
{
	struct open_how how = {
		.flags = O_PATH | O_CLOEXEC | (want_dir ? O_DIRECTORY : 0),
		.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
	};

	for (int attempt = 0;; attempt++) {
		long fd = syscall(SYS_openat2, rootfd, rel, &how, sizeof(how));

		if (fd >= 0)
			return (int)fd;
		/* EAGAIN: a rename raced with a ".." lookup; try again. */
		if ((errno == EAGAIN || errno == EINTR) && attempt < 64)
			continue;
		return -errno;
	}
}

/* The same resolution in user space: every component opened with
 * O_PATH|O_NOFOLLOW relative to the directory before it; a symlink's text is
 * put in front of the rest of the path, an absolute one restarting from the
 * root; ".." pops a level of the stack of directories walked, never above
 * the root. No lookup ever goes through the kernel's own "..", symlink or
 * magic-link following, so nothing can leave rootfd. (A /proc magic link
 * inside the root is read as text and resolved inside the root, where
 * openat2 would fail with ELOOP.) */
static int resolve_user(int rootfd, const char *path, bool want_dir)
{
	int stack[ROOTFS_MAX_DEPTH];
	size_t n = 0;
	char *todo = xstrdup(path);
	const char *p = todo;
	int links = 0, fd = -1, r;

	for (;;) {
		char name[NAME_MAX + 1];
		const char *e;
		size_t len;
		struct stat st;
		int cur = n ? stack[n - 1] : rootfd;

		while (*p == '/')
			p++;
		if (!*p)
			break;
		e = strchrnul(p, '/');
		len = (size_t)(e - p);
		if (len > NAME_MAX) {
			r = -ENAMETOOLONG;
			goto fail;
		}
		memcpy(name, p, len);
		name[len] = '\0';
		p = e;
		if (strcmp(name, ".") == 0)
			continue;
		if (strcmp(name, "..") == 0) {
			if (n > 0)
				(void)close(stack[--n]);
			continue;
		}
		fd = openat(cur, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			r = -errno;
			goto fail;
		}
		if (fstat(fd, &st) < 0) {
			r = -errno;
			goto fail;
		}
		if (S_ISLNK(st.st_mode)) {
			char target[PATH_MAX];
			ssize_t tl;
			char *next;

			if (++links > ROOTFS_MAX_SYMLINKS) {
				r = -ELOOP;
				goto fail;
			}
			tl = readlinkat(fd, "", target, sizeof(target) - 1);
			if (tl < 0) {
				r = -errno;
				goto fail;
			}
			target[tl] = '\0';
			(void)close(fd);
			fd = -1;
			if (tl == 0) {
				r = -ENOENT;
				goto fail;
			}
			if (target[0] == '/')
				while (n > 0)
					(void)close(stack[--n]);
			next = xasprintf("%s/%s", target, p);
			free(todo);
			todo = next;
			p = todo;
			continue;
		}
		if (!S_ISDIR(st.st_mode) && *p) {
			/* Something follows a file: "file/x" or "file/". */
			r = -ENOTDIR;
			goto fail;
		}
		if (n == ROOTFS_MAX_DEPTH) {
			r = -ENAMETOOLONG;
			goto fail;
		}
		stack[n++] = fd;
		fd = -1;
	}
	free(todo);
	todo = NULL;
	if (n > 0) {
		fd = stack[--n];
	} else {
		fd = fd_dup(rootfd);
		if (fd < 0) {
			r = fd;
			fd = -1;
			goto fail;
		}
	}
	while (n > 0)
		(void)close(stack[--n]);
	if (want_dir) {
		struct stat st;

		if (fstat(fd, &st) < 0 || !S_ISDIR(st.st_mode)) {
			(void)close(fd);
			return -ENOTDIR;
		}
	}
	return fd;
fail:
	if (fd >= 0)
		(void)close(fd);
	while (n > 0)
		(void)close(stack[--n]);
	free(todo);
	return r;
}

int rootfs_resolve(int rootfd, const char *path, bool want_dir)
{
	const char *rel;
	int r;

	if (rootfd < 0 || !path)
		return -EINVAL;
	if (strlen(path) >= PATH_MAX)
		return -ENAMETOOLONG;
	rel = path + strspn(path, "/");
	if (!*rel)
		rel = ".";
	if (!force_fallback && have_openat2 >= 0) {
		r = resolve_openat2(rootfd, rel, want_dir);
		if (r != -ENOSYS) {
			have_openat2 = 1;
			return r;
		}
		have_openat2 = -1;
	}
	return resolve_user(rootfd, rel, want_dir);
}

/* Splits path into its components (no empty ones, no "."); -EINVAL for "..". */
static int split_path(const char *path, char ***ret, size_t *ret_n)
{
	char **v = NULL;
	size_t n = 0;
	const char *p = path;

	while (*p) {
		const char *e;
		size_t len;

		while (*p == '/')
			p++;
		if (!*p)
			break;
		e = strchrnul(p, '/');
		len = (size_t)(e - p);
		if (len == 2 && p[0] == '.' && p[1] == '.') {
			for (size_t i = 0; i < n; i++)
				free(v[i]);
			free(v);
			return -EINVAL;
		}
		if (!(len == 1 && p[0] == '.')) {
			v = xrealloc(v, (n + 1) * sizeof(char *));
			v[n++] = xstrndup(p, len);
		}
		p = e;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

static char *join_components(char **v, size_t n)
{
	struct buf b;

	buf_init(&b);
	for (size_t i = 0; i < n; i++) {
		if (i)
			buf_puts(&b, "/");
		buf_puts(&b, v[i]);
	}
	if (n == 0)
		buf_puts(&b, ".");
	return buf_steal(&b);
}

/* Creates the missing directories of v[0..n) one at a time: each is made
 * with mkdirat() in the resolved directory before it, then resolved again
 * from the root (so a symlink raced in its place still resolves inside). */
static int create_parents(int rootfd, char **v, size_t n, mode_t mode)
{
	int cur = fd_dup(rootfd);

	if (cur < 0)
		return cur;
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *prefix = join_components(v, i + 1);
		int fd = rootfs_resolve(rootfd, prefix, true);

		if (fd == -ENOENT) {
			if (mkdirat(cur, v[i], mode) < 0 && errno != EEXIST) {
				fd = -errno;
				(void)close(cur);
				return fd;
			}
			fd = rootfs_resolve(rootfd, prefix, true);
		}
		(void)close(cur);
		if (fd < 0)
			return fd;
		cur = fd;
	}
	return cur;
}

int rootfs_open_parent(int rootfd, const char *path, bool create, mode_t mode, int *ret_dirfd, char **ret_name)
{
	char **v = NULL;
	size_t n = 0;
	int r, fd;

	if (rootfd < 0 || !path || !ret_dirfd || !ret_name)
		return -EINVAL;
	if (strlen(path) >= PATH_MAX)
		return -ENAMETOOLONG;
	r = split_path(path, &v, &n);
	if (r < 0)
		return r;
	if (n == 0) {
		fd = fd_dup(rootfd);
		if (fd < 0) {
			free(v);
			return fd;
		}
		*ret_dirfd = fd;
		*ret_name = xstrdup(".");
		free(v);
		return 0;
	}
	{
		_cleanup_free_ char *parent = join_components(v, n - 1);

		fd = rootfs_resolve(rootfd, parent, true);
	}
	if (fd == -ENOENT && create)
		fd = create_parents(rootfd, v, n - 1, mode);
	if (fd >= 0) {
		*ret_dirfd = fd;
		*ret_name = v[n - 1];
		v[n - 1] = NULL;
	}
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
	return fd < 0 ? fd : 0;
}

int rootfs_open_parent_path(const char *root, const char *path, bool create, mode_t mode, int *ret_dirfd,
			    char **ret_name)
{
	_cleanup_close_ int rootfd = rootfs_open(root);

	if (rootfd < 0)
		return rootfd;
	return rootfs_open_parent(rootfd, path, create, mode, ret_dirfd, ret_name);
}

bool rootfs_exists(const char *root, const char *path)
{
	_cleanup_close_ int dfd = -1;
	_cleanup_free_ char *name = NULL;
	struct stat st;

	if (rootfs_open_parent_path(root, path, false, 0, &dfd, &name) < 0)
		return false;
	return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

int rootfs_mount_id(int dirfd, const char *name, uint64_t *ret)
{
	struct statx stx;

	if (statx(dirfd, name, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | (*name ? 0 : AT_EMPTY_PATH), STATX_MNT_ID,
		  &stx) < 0)
		return -errno;
	if (!(stx.stx_mask & STATX_MNT_ID))
		return -EOPNOTSUPP;
	*ret = stx.stx_mnt_id;
	return 0;
}

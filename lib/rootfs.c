/* SPDX-License-Identifier: BSD-2-Clause */
/* Paths resolved inside a root directory (see rootfs.h). */
#include "rootfs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

/* Like the kernel's MAXSYMLINKS. */
#define ROOTFS_MAX_SYMLINKS 40
/* Directories the resolution keeps open at once (one per level). */
#define ROOTFS_MAX_DEPTH 256

/* 0: not tried yet, 1: openat2 works, -1: use openat(O_NOFOLLOW). */
static int have_openat2;
static bool force_fallback;
/* Why the last resolution refused a symlink; "" when it did not. */
static char refusal[PATH_MAX + 256];

void rootfs_force_fallback(bool on)
{
	force_fallback = on;
}

const char *rootfs_strerror(int r)
{
	if ((r == -ELOOP || r == -EPERM) && refusal[0])
		return refusal;
	return strerror(r < 0 ? -r : r);
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

/* An owner whose directories we may follow links in: root, or ourselves
 * (agentd is root in production; tests and tools may run as themselves). */
static bool uid_trusted(uid_t uid)
{
	return uid == 0 || uid == geteuid();
}

/* Whether a user other than root can change the entries of a directory:
 * it is theirs, or group- or world-writable without the sticky bit (with
 * it, as in /tmp, others can add entries but not replace root's). */
static bool stat_dir_shared(const struct stat *st)
{
	if (!uid_trusted(st->st_uid))
		return true;
	if (st->st_mode & S_ISVTX)
		return false;
	return (st->st_mode & (S_IWGRP | S_IWOTH)) != 0;
}

bool rootfs_dir_shared(int dirfd)
{
	struct stat st;

	return fstat(dirfd, &st) < 0 || stat_dir_shared(&st);
}

/* One component, never followed: an O_PATH fd of name in dirfd, of the
 * symlink itself when it is one. openat2 with RESOLVE_NO_SYMLINKS (the
 * kernel refuses any link on the way, magic ones included) and
 * RESOLVE_BENEATH; where the kernel lacks it, openat with O_NOFOLLOW,
 * which is the same for a single component. */
static int open_component(int dirfd, const char *name)
{
	if (!force_fallback && have_openat2 >= 0) {
		struct open_how how = {
			.flags = O_PATH | O_NOFOLLOW | O_CLOEXEC,
			.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH,
		};

		for (int attempt = 0;; attempt++) {
			long fd = syscall(SYS_openat2, dirfd, name, &how, sizeof(how));

			if (fd >= 0) {
				have_openat2 = 1;
				return (int)fd;
			}
			if ((errno == EAGAIN || errno == EINTR) && attempt < 64)
				continue;
			if (errno != ENOSYS)
				return -errno;
			have_openat2 = -1;
			break;
		}
	}
	{
		int fd = openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);

		return fd < 0 ? -errno : fd;
	}
}

/* Whether a link's text is what agentd writes for "current":
 * "releases/<name>", name a plain file name. */
static bool managed_link_text(const char *t)
{
	const char *name;

	if (strncmp(t, ROOTFS_MANAGED_LINK_DIR "/", strlen(ROOTFS_MANAGED_LINK_DIR) + 1) != 0)
		return false;
	name = t + strlen(ROOTFS_MANAGED_LINK_DIR) + 1;
	return *name && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

/* A directory walked: its fd and what decides whether links in it are
 * followed. */
struct level {
	int fd;
	bool shared;  /* this directory or one above it (walked through) is shared */
	bool sticky;  /* writable by others, but sticky */
	uid_t uid;    /* its owner */
	/* The first shared directory of the walk, for messages. */
	uid_t shared_uid;
	mode_t shared_mode;
};

static void level_set(struct level *l, int fd, const struct stat *st, const struct level *parent)
{
	l->fd = fd;
	l->shared = (parent && parent->shared) || stat_dir_shared(st);
	l->sticky = (st->st_mode & S_ISVTX) && (st->st_mode & (S_IWGRP | S_IWOTH));
	l->uid = st->st_uid;
	l->shared_uid = parent && parent->shared ? parent->shared_uid : st->st_uid;
	l->shared_mode = parent && parent->shared ? parent->shared_mode : st->st_mode & 07777;
}

/* The names and paths in these messages come from another user's tree:
 * escaped (str_escape_ctl), so a newline in a link's name cannot forge log
 * lines. */
static int refuse(const char *path, const char *name, const struct level *l, const struct stat *link)
{
	const char *slash = path[0] == '/' ? "" : "/";
	_cleanup_free_ char *ename = str_escape_ctl(name), *epath = str_escape_ctl(path);

	if (l->shared)
		(void)snprintf(refusal, sizeof(refusal),
			       "refusing to follow the symlink \"%s\" on the way to %s%s: it is in a directory that a "
			       "user other than root can write, or below one (owner uid %u, mode %04o)",
			       ename, slash, epath, (unsigned)l->shared_uid, (unsigned)l->shared_mode);
	else
		(void)snprintf(refusal, sizeof(refusal),
			       "refusing to follow the symlink \"%s\" on the way to %s%s: uid %u put it in a sticky "
			       "directory that others can write (owner uid %u)",
			       ename, slash, epath, (unsigned)link->st_uid, (unsigned)l->uid);
	log_warn("rootfs: %s", refusal);
	return -ELOOP;
}

/* The resolution (rootfs.h): every component opened with open_component()
 * relative to the directory before it. A symlink is followed only in a
 * directory that no other user can write, nor any directory walked to reach
 * it; its text is put in front of the rest of the path, an absolute one
 * restarting from the root; ".." pops a level of the stack of directories
 * walked, never above the root. No lookup ever goes through the kernel's
 * own "..", symlink or magic-link following, so nothing leaves rootfd, and
 * no link that another user could have planted or swapped in is followed. */
static int resolve_walk(int rootfd, const char *path, bool want_dir, bool private)
{
	struct level stack[ROOTFS_MAX_DEPTH];
	struct level top;
	struct stat st;
	size_t n = 0;
	char *todo = xstrdup(path);
	const char *p = todo;
	int links = 0, fd = -1, r;

	if (fstat(rootfd, &st) < 0) {
		free(todo);
		return -errno;
	}
	level_set(&top, rootfd, &st, NULL);
	for (;;) {
		char name[NAME_MAX + 1];
		const char *e;
		size_t len;
		const struct level *cur = n ? &stack[n - 1] : &top;

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
				(void)close(stack[--n].fd);
			continue;
		}
		if (private && cur->shared) {
			/* The caller will use the path as a string (mount(2)):
			 * a name in a shared directory could be swapped under it. */
			_cleanup_free_ char *ename = str_escape_ctl(name), *epath = str_escape_ctl(path);

			(void)snprintf(refusal, sizeof(refusal),
				       "refusing %s%s: \"%s\" is looked up in a directory that a user other than root "
				       "can write, or below one (owner uid %u, mode %04o)",
				       path[0] == '/' ? "" : "/", epath, ename, (unsigned)cur->shared_uid,
				       (unsigned)cur->shared_mode);
			log_warn("rootfs: %s", refusal);
			r = -EPERM;
			goto fail;
		}
		fd = open_component(cur->fd, name);
		if (fd < 0) {
			r = fd;
			fd = -1;
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
			if (cur->shared) {
				/* Another user could have planted or swapped
				 * it in. Only the link agentd manages there,
				 * naming a release below the same directory,
				 * is followed; what it names is then walked
				 * without following anything. */
				if (strcmp(name, ROOTFS_MANAGED_LINK) != 0 || !managed_link_text(target)) {
					r = refuse(path, name, cur, &st);
					goto fail;
				}
			} else if (cur->sticky && !uid_trusted(st.st_uid) && st.st_uid != cur->uid) {
				/* /tmp: a link someone else put there (the
				 * kernel's protected_symlinks rule). */
				r = refuse(path, name, cur, &st);
				goto fail;
			}
			if (target[0] == '/')
				while (n > 0)
					(void)close(stack[--n].fd);
			/* "link" at the end stays at the end: no "/" after the
			 * target, which would ask for a directory. */
			next = *p ? xasprintf("%s%s", target, p) : xstrdup(target);
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
		level_set(&stack[n], fd, &st, cur);
		n++;
		fd = -1;
	}
	free(todo);
	todo = NULL;
	if (n > 0) {
		fd = stack[--n].fd;
	} else {
		fd = fd_dup(rootfd);
		if (fd < 0) {
			r = fd;
			fd = -1;
			goto fail;
		}
	}
	while (n > 0)
		(void)close(stack[--n].fd);
	if (want_dir) {
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
		(void)close(stack[--n].fd);
	free(todo);
	return r;
}

static int resolve(int rootfd, const char *path, bool want_dir, bool private)
{
	const char *rel;

	refusal[0] = '\0';
	if (rootfd < 0 || !path)
		return -EINVAL;
	if (strlen(path) >= PATH_MAX)
		return -ENAMETOOLONG;
	rel = path + strspn(path, "/");
	if (!*rel)
		rel = ".";
	return resolve_walk(rootfd, rel, want_dir, private);
}

int rootfs_resolve(int rootfd, const char *path, bool want_dir)
{
	return resolve(rootfd, path, want_dir, false);
}

int rootfs_resolve_private(int rootfd, const char *path, bool want_dir)
{
	return resolve(rootfd, path, want_dir, true);
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

int rootfs_create_file_at(int dirfd, const char *name, mode_t mode)
{
	struct stat st;
	int fd;

	if (!name || !*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return -EINVAL;
	if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && !S_ISDIR(st.st_mode) &&
	    unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
		return -errno;
	fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 07777);
	return fd < 0 ? -errno : fd;
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

/* SPDX-License-Identifier: BSD-2-Clause */
/* Steps and their executor (plan.h, design.md §6).
 *
 * The executor walks the steps in order. A step's apply may finish at once
 * (file, dir, link, absent, note) or later (exec): in both cases it calls
 * plan_step_done() exactly once. Synchronous steps are run back to back in
 * a loop within one loop iteration, without recursion; an asynchronous step
 * resumes the loop from its completion callback. */
#include "plan.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "exec.h"
#include "log.h"
#include "util.h"

/* Existing files larger than this are not read for a diff (they are
 * compared for the update, though: see file_compare). */
#define PLAN_DIFF_READ_MAX (16u << 20)

struct plan_exec {
	uv_loop_t *loop;           /* borrowed */
	struct plan *p;            /* borrowed */
	struct step_env env;       /* copy; root borrowed */
	struct plan_exec_cbs cbs;
	void *userdata;
	uv_timer_t timer;          /* starts the run, and defers on_done */

	size_t cur;                /* index of the current step */
	int64_t step_start;
	size_t out_len;            /* output bytes of the current step passed on */
	bool out_truncated;
	bool out_last_nl;          /* the last byte passed on was '\n' */

	bool in_apply;             /* inside ops->apply() */
	bool done_sync;            /* plan_step_done() was called inside apply */
	bool waiting;              /* an asynchronous step is in flight */
	bool cancelled;
	bool skipped_by_cancel;    /* a step did not run because of the cancel */
	bool failed;
	bool finishing;            /* on_done is scheduled */
};

const char *step_status_to_string(enum step_status s)
{
	switch (s) {
	case STEP_PENDING:
		return "pending";
	case STEP_UNCHANGED:
		return "unchanged";
	case STEP_CHANGED:
		return "changed";
	case STEP_FAILED:
		return "failed";
	case STEP_SKIPPED:
		return "skipped";
	}
	return "unknown";
}

/* --- small helpers --- */

static char **strv_dup(char *const *v)
{
	size_t n = 0;
	char **r;

	if (!v)
		return NULL;
	while (v[n])
		n++;
	r = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		r[i] = xstrdup(v[i]);
	return r;
}

static void strv_free(char **v)
{
	if (!v)
		return;
	for (size_t i = 0; v[i]; i++)
		free(v[i]);
	free(v);
}

static char *xstrdup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

/* Joins an absolute path of the managed system under root. */
static int plan_join(const struct plan *p, const char *path, char **ret, char **ret_error)
{
	int r;

	if (!path || path[0] != '/') {
		if (ret_error)
			*ret_error = xasprintf("path is not absolute: %s", path ? path : "(null)");
		return -EINVAL;
	}
	r = path_join_under(p->root ? p->root : "/", path, ret);
	if (r < 0 && ret_error)
		*ret_error = r == -EINVAL ? xasprintf("refusing path with \"..\": %s", path)
					  : xasprintf("bad path %s: %s", path, strerror(-r));
	return r;
}

static bool name_is_number(const char *s, unsigned long *ret)
{
	long v;

	if (!s || !*s || parse_long(s, 0, INT_MAX, &v) < 0)
		return false;
	*ret = (unsigned long)v;
	return true;
}

/* Resolves owner and group names (or numbers) to ids; NULL gives -1. */
static int resolve_owner(const char *owner, const char *group, uid_t *ret_uid, gid_t *ret_gid, char **ret_error)
{
	unsigned long num;
	int r;

	*ret_uid = (uid_t)-1;
	*ret_gid = (gid_t)-1;
	if (owner) {
		if (name_is_number(owner, &num)) {
			*ret_uid = (uid_t)num;
		} else if ((r = user_lookup(owner, ret_uid, NULL)) < 0) {
			*ret_error = r == -ENOENT ? xasprintf("unknown user %s", owner)
						  : xasprintf("cannot look up user %s: %s", owner, strerror(-r));
			return r;
		}
	}
	if (group) {
		if (name_is_number(group, &num)) {
			*ret_gid = (gid_t)num;
		} else if ((r = group_lookup(group, ret_gid)) < 0) {
			*ret_error = r == -ENOENT ? xasprintf("unknown group %s", group)
						  : xasprintf("cannot look up group %s: %s", group, strerror(-r));
			return r;
		}
	}
	return 0;
}

static bool meta_mode_differs(const struct stat *st, mode_t mode)
{
	return mode != (mode_t)-1 && (st->st_mode & 07777) != (mode & 07777);
}

static bool meta_owner_differs(const struct stat *st, uid_t uid, gid_t gid)
{
	return (uid != (uid_t)-1 && st->st_uid != uid) || (gid != (gid_t)-1 && st->st_gid != gid);
}

static int mkdir_parent(const char *path)
{
	_cleanup_free_ char *dir = xstrdup(path);
	char *slash = strrchr(dir, '/');

	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	return mkdir_p(dir, 0755);
}

/* --- file --- */

struct file_data {
	char *path;    /* joined under root */
	char *content;
	size_t len;
	mode_t mode;
	char *owner, *group;
};

static void file_free(void *data)
{
	struct file_data *d = data;

	if (!d)
		return;
	free(d->path);
	free(d->content);
	free(d->owner);
	free(d->group);
	free(d);
}

/* Opens the existing regular file at path without following a symlink at
 * the last component. Returns the fd, -ENOENT when missing, -ELOOP when
 * something other than a regular file is there (with st filled). */
static int file_open_existing(const char *path, struct stat *st)
{
	int fd;

	if (lstat(path, st) < 0)
		return -errno;
	if (S_ISDIR(st->st_mode))
		return -EISDIR;
	if (!S_ISREG(st->st_mode))
		return -ELOOP;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return errno == ENXIO ? -ELOOP : -errno;
	if (fstat(fd, st) < 0 || !S_ISREG(st->st_mode)) {
		(void)close(fd);
		return -ELOOP;
	}
	return fd;
}

/* Whether the open file's content equals want; reads at most len + 1 bytes. */
static int file_content_equal(int fd, const struct stat *st, const char *want, size_t len)
{
	char chunk[65536];
	size_t off = 0;

	if ((uint64_t)st->st_size != (uint64_t)len)
		return 0;
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return off == len;
		if (off + (size_t)n > len || memcmp(chunk, want + off, (size_t)n) != 0)
			return 0;
		off += (size_t)n;
	}
}

static int file_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			 char **ret_error)
{
	struct file_data *d = s->data;
	_cleanup_close_ int fd = -1;
	struct stat st;
	uid_t uid;
	gid_t gid;
	int r;

	r = resolve_owner(d->owner, d->group, &uid, &gid, ret_error);
	if (r < 0)
		return r;
	fd = file_open_existing(d->path, &st);
	if (fd == -ENOENT) {
		*ret_action = "create";
		*ret_diff = diff_unified(s->target, "", 0, d->content, d->len);
		return 0;
	}
	if (fd == -EISDIR) {
		*ret_error = xasprintf("%s is a directory", s->target);
		return -EISDIR;
	}
	if (fd == -ELOOP) {
		/* A symlink or special file: the write replaces it. */
		*ret_action = "replace";
		return 0;
	}
	if (fd < 0) {
		*ret_error = xasprintf("cannot open %s: %s", s->target, strerror(-fd));
		return fd;
	}
	if ((uint64_t)st.st_size != (uint64_t)d->len || file_content_equal(fd, &st, d->content, d->len) != 1) {
		_cleanup_free_ char *old = NULL;
		size_t old_len = 0;

		*ret_action = "update";
		if (lseek(fd, 0, SEEK_SET) == 0 && fd_read_all(fd, PLAN_DIFF_READ_MAX, &old, &old_len) == 0)
			*ret_diff = diff_unified(s->target, old, old_len, d->content, d->len);
		return 0;
	}
	if (meta_owner_differs(&st, uid, gid))
		*ret_action = "chown";
	else if (meta_mode_differs(&st, d->mode))
		*ret_action = "chmod";
	else
		*ret_action = "none";
	return 0;
}

static void file_apply(struct step *s, struct plan_exec *x)
{
	struct file_data *d = s->data;
	_cleanup_free_ char *err = NULL;
	_cleanup_close_ int fd = -1;
	mode_t mode = d->mode;
	struct stat st;
	uid_t uid;
	gid_t gid;
	int r;

	if (resolve_owner(d->owner, d->group, &uid, &gid, &err) < 0)
		return plan_step_done(x, STEP_FAILED, "%s", err);

	fd = file_open_existing(d->path, &st);
	if (fd == -EISDIR)
		return plan_step_done(x, STEP_FAILED, "%s is a directory", s->target);
	if (fd < 0 && fd != -ENOENT && fd != -ELOOP)
		return plan_step_done(x, STEP_FAILED, "cannot open %s: %s", s->target, strerror(-fd));
	if (fd >= 0) {
		r = file_content_equal(fd, &st, d->content, d->len);
		if (r < 0)
			return plan_step_done(x, STEP_FAILED, "cannot read %s: %s", s->target, strerror(-r));
		if (r == 1) {
			bool changed = false;

			/* Same content: only the metadata may need fixing, on
			 * the file we opened (never through a symlink). */
			if (meta_mode_differs(&st, mode)) {
				if (fchmod(fd, mode & 07777) < 0)
					return plan_step_done(x, STEP_FAILED, "cannot chmod %s: %m", s->target);
				changed = true;
			}
			if (meta_owner_differs(&st, uid, gid)) {
				if (fchown(fd, uid, gid) < 0)
					return plan_step_done(x, STEP_FAILED, "cannot chown %s: %m", s->target);
				changed = true;
			}
			return plan_step_done(x, changed ? STEP_CHANGED : STEP_UNCHANGED, NULL);
		}
		/* Keep what the step does not manage: the old mode and owner. */
		if (mode == (mode_t)-1)
			mode = st.st_mode & 07777;
		if (uid == (uid_t)-1 && st.st_uid != geteuid())
			uid = st.st_uid;
		if (gid == (gid_t)-1 && st.st_gid != getegid())
			gid = st.st_gid;
	} else if (fd == -ENOENT) {
		r = mkdir_parent(d->path);
		if (r < 0)
			return plan_step_done(x, STEP_FAILED, "cannot create the directory of %s: %s", s->target,
					      strerror(-r));
	}
	if (mode == (mode_t)-1)
		mode = 0644;
	r = file_write_atomic(d->path, d->content, d->len, mode, uid, gid);
	if (r < 0)
		return plan_step_done(x, STEP_FAILED, "cannot write %s: %s", s->target, strerror(-r));
	plan_step_done(x, STEP_CHANGED, NULL);
}

static const struct step_ops file_ops = {
	.kind = "file",
	.describe = file_describe,
	.apply = file_apply,
	.free_data = file_free,
};

struct step *plan_add_file(struct plan *p, const char *path, const void *content, size_t len, mode_t mode,
			   const char *owner, const char *group, char **ret_error)
{
	struct file_data *d;
	char *joined;

	if (plan_join(p, path, &joined, ret_error) < 0)
		return NULL;
	d = xcalloc(1, sizeof(*d));
	d->path = joined;
	d->content = xmalloc(len + 1);
	if (len)
		memcpy(d->content, content, len);
	d->content[len] = '\0';
	d->len = len;
	d->mode = mode;
	d->owner = xstrdup_or_null(owner);
	d->group = xstrdup_or_null(group);
	return plan_add(p, &file_ops, path, d);
}

/* --- dir --- */

struct dir_data {
	char *path;
	mode_t mode;
	char *owner, *group;
};

static void dir_free(void *data)
{
	struct dir_data *d = data;

	if (!d)
		return;
	free(d->path);
	free(d->owner);
	free(d->group);
	free(d);
}

/* 1: a directory, 2: a symlink to a directory (left alone), 0: missing, <0 error. */
static int dir_state(const char *path, struct stat *st)
{
	if (lstat(path, st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (S_ISDIR(st->st_mode))
		return 1;
	if (S_ISLNK(st->st_mode) && stat(path, st) == 0 && S_ISDIR(st->st_mode))
		return 2;
	return -ENOTDIR;
}

static int dir_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			char **ret_error)
{
	struct dir_data *d = s->data;
	struct stat st;
	uid_t uid;
	gid_t gid;
	int r;

	r = resolve_owner(d->owner, d->group, &uid, &gid, ret_error);
	if (r < 0)
		return r;
	r = dir_state(d->path, &st);
	if (r < 0) {
		*ret_error = r == -ENOTDIR ? xasprintf("%s exists and is not a directory", s->target)
					   : xasprintf("cannot stat %s: %s", s->target, strerror(-r));
		return r;
	}
	if (r == 0)
		*ret_action = "create";
	else if (r == 1 && meta_owner_differs(&st, uid, gid))
		*ret_action = "chown";
	else if (r == 1 && meta_mode_differs(&st, d->mode))
		*ret_action = "chmod";
	else
		*ret_action = "none";
	return 0;
}

static void dir_apply(struct step *s, struct plan_exec *x)
{
	struct dir_data *d = s->data;
	_cleanup_free_ char *err = NULL;
	mode_t mode = d->mode == (mode_t)-1 ? 0755 : d->mode & 07777;
	bool changed = false;
	struct stat st;
	uid_t uid;
	gid_t gid;
	int r;

	if (resolve_owner(d->owner, d->group, &uid, &gid, &err) < 0)
		return plan_step_done(x, STEP_FAILED, "%s", err);
	r = dir_state(d->path, &st);
	if (r == -ENOTDIR)
		return plan_step_done(x, STEP_FAILED, "%s exists and is not a directory", s->target);
	if (r < 0)
		return plan_step_done(x, STEP_FAILED, "cannot stat %s: %s", s->target, strerror(-r));
	if (r == 2)
		return plan_step_done(x, STEP_UNCHANGED, NULL);
	if (r == 0) {
		r = mkdir_parent(d->path);
		if (r < 0)
			return plan_step_done(x, STEP_FAILED, "cannot create the parents of %s: %s", s->target,
					      strerror(-r));
		if (mkdir(d->path, mode) < 0)
			return plan_step_done(x, STEP_FAILED, "cannot create %s: %m", s->target);
		changed = true;
		if (lstat(d->path, &st) < 0)
			return plan_step_done(x, STEP_FAILED, "cannot stat %s: %m", s->target);
		/* mkdir() honours the umask; an explicit mode is meant exactly. */
		if (d->mode == (mode_t)-1)
			mode = (mode_t)-1;
	} else if (d->mode == (mode_t)-1) {
		mode = (mode_t)-1;
	}
	if (meta_mode_differs(&st, mode)) {
		if (chmod(d->path, mode) < 0)
			return plan_step_done(x, STEP_FAILED, "cannot chmod %s: %m", s->target);
		changed = true;
	}
	if (meta_owner_differs(&st, uid, gid)) {
		if (lchown(d->path, uid, gid) < 0)
			return plan_step_done(x, STEP_FAILED, "cannot chown %s: %m", s->target);
		changed = true;
	}
	plan_step_done(x, changed ? STEP_CHANGED : STEP_UNCHANGED, NULL);
}

static const struct step_ops dir_ops = {
	.kind = "dir",
	.describe = dir_describe,
	.apply = dir_apply,
	.free_data = dir_free,
};

struct step *plan_add_dir(struct plan *p, const char *path, mode_t mode, const char *owner, const char *group,
			  char **ret_error)
{
	struct dir_data *d;
	char *joined;

	if (plan_join(p, path, &joined, ret_error) < 0)
		return NULL;
	d = xcalloc(1, sizeof(*d));
	d->path = joined;
	d->mode = mode;
	d->owner = xstrdup_or_null(owner);
	d->group = xstrdup_or_null(group);
	return plan_add(p, &dir_ops, path, d);
}

/* --- link --- */

struct link_data {
	char *path;   /* joined under root */
	char *target; /* the link's content */
};

static void link_free(void *data)
{
	struct link_data *d = data;

	if (!d)
		return;
	free(d->path);
	free(d->target);
	free(d);
}

/* 0: missing, 1: the right link, 2: another link or a file (replaced), <0 error. */
static int link_state(const struct link_data *d)
{
	struct stat st;
	char buf[PATH_MAX + 1];
	ssize_t n;

	if (lstat(d->path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (!S_ISLNK(st.st_mode))
		return 2;
	n = readlink(d->path, buf, sizeof(buf) - 1);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return strcmp(buf, d->target) == 0 ? 1 : 2;
}

static int link_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			 char **ret_error)
{
	int r = link_state(s->data);

	if (r < 0) {
		*ret_error = r == -EISDIR ? xasprintf("%s is a directory", s->target)
					  : xasprintf("cannot stat %s: %s", s->target, strerror(-r));
		return r;
	}
	*ret_action = r == 0 ? "create" : r == 1 ? "none" : "update";
	return 0;
}

static void link_apply(struct step *s, struct plan_exec *x)
{
	struct link_data *d = s->data;
	_cleanup_free_ char *tmp = NULL;
	int r = link_state(d);

	if (r == -EISDIR)
		return plan_step_done(x, STEP_FAILED, "%s is a directory", s->target);
	if (r < 0)
		return plan_step_done(x, STEP_FAILED, "cannot stat %s: %s", s->target, strerror(-r));
	if (r == 1)
		return plan_step_done(x, STEP_UNCHANGED, NULL);
	if (r == 0) {
		r = mkdir_parent(d->path);
		if (r < 0)
			return plan_step_done(x, STEP_FAILED, "cannot create the directory of %s: %s", s->target,
					      strerror(-r));
		if (symlink(d->target, d->path) < 0)
			return plan_step_done(x, STEP_FAILED, "cannot create link %s: %m", s->target);
		return plan_step_done(x, STEP_CHANGED, NULL);
	}
	/* Replace atomically: readers see the old link or the new one. */
	const char *slash = strrchr(d->path, '/');
	tmp = xasprintf("%.*s/.#%s.%ld.lnk", (int)(slash - d->path), d->path, slash + 1, (long)getpid());
	(void)unlink(tmp);
	if (symlink(d->target, tmp) < 0)
		return plan_step_done(x, STEP_FAILED, "cannot create link %s: %m", s->target);
	if (rename(tmp, d->path) < 0) {
		int e = errno;
		(void)unlink(tmp);
		return plan_step_done(x, STEP_FAILED, "cannot replace %s: %s", s->target, strerror(e));
	}
	plan_step_done(x, STEP_CHANGED, NULL);
}

static const struct step_ops link_ops = {
	.kind = "link",
	.describe = link_describe,
	.apply = link_apply,
	.free_data = link_free,
};

struct step *plan_add_link(struct plan *p, const char *path, const char *link_target, char **ret_error)
{
	struct link_data *d;
	char *joined, *target;

	if (!link_target || !*link_target) {
		if (ret_error)
			*ret_error = xasprintf("empty link target for %s", path ? path : "(null)");
		return NULL;
	}
	if (plan_join(p, path, &joined, ret_error) < 0)
		return NULL;
	if (link_target[0] == '/') {
		if (plan_join(p, link_target, &target, ret_error) < 0) {
			free(joined);
			return NULL;
		}
	} else {
		target = xstrdup(link_target);
	}
	d = xcalloc(1, sizeof(*d));
	d->path = joined;
	d->target = target;
	return plan_add(p, &link_ops, path, d);
}

/* --- absent --- */

struct absent_data {
	char *path;
	bool recursive;
};

static void absent_free(void *data)
{
	struct absent_data *d = data;

	if (!d)
		return;
	free(d->path);
	free(d);
}

/* Removes everything inside the directory dfd (which it closes), never
 * following symlinks and never crossing into another file system. */
static int rm_children(int dfd, dev_t dev)
{
	DIR *dir = fdopendir(dfd);
	struct dirent *de;
	int r = 0;

	if (!dir) {
		r = -errno;
		(void)close(dfd);
		return r;
	}
	while ((errno = 0, de = readdir(dir))) {
		struct stat st;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;
			r = -errno;
			break;
		}
		if (S_ISDIR(st.st_mode)) {
			int cfd;

			if (st.st_dev != dev) {
				r = -EXDEV;
				break;
			}
			cfd = openat(dirfd(dir), de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (cfd < 0) {
				r = -errno;
				break;
			}
			r = rm_children(cfd, dev);
			if (r < 0)
				break;
			if (unlinkat(dirfd(dir), de->d_name, AT_REMOVEDIR) < 0 && errno != ENOENT) {
				r = -errno;
				break;
			}
		} else if (unlinkat(dirfd(dir), de->d_name, 0) < 0 && errno != ENOENT) {
			r = -errno;
			break;
		}
	}
	if (r == 0 && errno != 0)
		r = -errno;
	closedir(dir);
	return r;
}

static int absent_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			   char **ret_error)
{
	struct absent_data *d = s->data;
	struct stat st;

	if (lstat(d->path, &st) < 0) {
		int r = -errno;

		if (r == -ENOENT) {
			*ret_action = "none";
			return 0;
		}
		*ret_error = xasprintf("cannot stat %s: %s", s->target, strerror(-r));
		return r;
	}
	if (S_ISDIR(st.st_mode) && !d->recursive) {
		*ret_error = xasprintf("%s is a directory (not removed without recursive)", s->target);
		return -EISDIR;
	}
	*ret_action = "remove";
	return 0;
}

static void absent_apply(struct step *s, struct plan_exec *x)
{
	struct absent_data *d = s->data;
	struct stat st;
	int fd, r;

	if (lstat(d->path, &st) < 0) {
		if (errno == ENOENT)
			return plan_step_done(x, STEP_UNCHANGED, NULL);
		return plan_step_done(x, STEP_FAILED, "cannot stat %s: %m", s->target);
	}
	if (!S_ISDIR(st.st_mode)) {
		if (unlink(d->path) < 0)
			return plan_step_done(x, STEP_FAILED, "cannot remove %s: %m", s->target);
		return plan_step_done(x, STEP_CHANGED, NULL);
	}
	if (!d->recursive)
		return plan_step_done(x, STEP_FAILED, "%s is a directory (not removed without recursive)", s->target);
	fd = open(d->path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return plan_step_done(x, STEP_FAILED, "cannot open %s: %m", s->target);
	r = rm_children(fd, st.st_dev);
	if (r < 0)
		return plan_step_done(x, STEP_FAILED, "cannot remove %s: %s", s->target,
				      r == -EXDEV ? "it contains a mount point" : strerror(-r));
	if (rmdir(d->path) < 0)
		return plan_step_done(x, STEP_FAILED, "cannot remove %s: %m", s->target);
	plan_step_done(x, STEP_CHANGED, NULL);
}

static const struct step_ops absent_ops = {
	.kind = "absent",
	.describe = absent_describe,
	.apply = absent_apply,
	.free_data = absent_free,
};

struct step *plan_add_absent(struct plan *p, const char *path, bool recursive, char **ret_error)
{
	struct absent_data *d;
	char *joined;

	if (plan_join(p, path, &joined, ret_error) < 0)
		return NULL;
	/* Removing root itself is never what a recipe meant. */
	if (strcmp(path + strspn(path, "/"), "") == 0) {
		if (ret_error)
			*ret_error = xasprintf("refusing to remove the root directory");
		free(joined);
		return NULL;
	}
	d = xcalloc(1, sizeof(*d));
	d->path = joined;
	d->recursive = recursive;
	return plan_add(p, &absent_ops, path, d);
}

/* --- exec --- */

/* Enough for "changed=yes" and "changed=no"; longer lines never match. */
#define LAST_LINE_MAX 16

struct exec_data {
	char **argv;
	char **env;
	char *user;
	char *cwd;           /* joined under root, or NULL for root itself */
	long timeout_sec;
	char *stdin_data;
	size_t stdin_len;
	char *input_key;
	uint64_t input_hash;

	/* While running. */
	struct exec *proc;   /* borrowed: freed by exec.c after done */
	struct plan_exec *x; /* borrowed */
	char cur[LAST_LINE_MAX];
	size_t cur_len;      /* may exceed LAST_LINE_MAX: then it is just "long" */
	char last[LAST_LINE_MAX];
	size_t last_len;
};

static void exec_data_free(void *data)
{
	struct exec_data *d = data;

	if (!d)
		return;
	strv_free(d->argv);
	strv_free(d->env);
	free(d->user);
	free(d->cwd);
	free(d->stdin_data);
	free(d->input_key);
	free(d);
}

static void exec_track_lines(struct exec_data *d, const char *data, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (data[i] == '\n') {
			memcpy(d->last, d->cur, sizeof(d->cur));
			d->last_len = d->cur_len;
			d->cur_len = 0;
			continue;
		}
		if (d->cur_len < LAST_LINE_MAX)
			d->cur[d->cur_len] = data[i];
		if (d->cur_len <= LAST_LINE_MAX)
			d->cur_len++;
	}
}

/* The last line of the output: "changed=no" → 0, "changed=yes" → 1, else -1. */
static int exec_changed_override(const struct exec_data *d)
{
	const char *l = d->cur_len ? d->cur : d->last;
	size_t n = d->cur_len ? d->cur_len : d->last_len;

	if (n == 10 && memcmp(l, "changed=no", 10) == 0)
		return 0;
	if (n == 11 && memcmp(l, "changed=yes", 11) == 0)
		return 1;
	return -1;
}

static void cb_exec_output(void *userdata, const char *data, size_t len)
{
	struct exec_data *d = userdata;

	exec_track_lines(d, data, len);
	plan_step_output(d->x, data, len);
}

static void cb_exec_done(void *userdata, const struct exec_result *r)
{
	struct exec_data *d = userdata;
	struct plan_exec *x = d->x;
	enum step_status status = STEP_CHANGED;
	uint64_t old;
	int o;

	d->proc = NULL;
	d->x = NULL;
	if (r->spawn_error || r->timed_out || r->term_signal || r->exit_status != 0) {
		_cleanup_free_ char *why = exec_result_describe(r, d->timeout_sec * 1000);
		return plan_step_done(x, STEP_FAILED, "%s", why);
	}
	if (d->input_key && x->cbs.get_input_hash && x->cbs.get_input_hash(x->userdata, d->input_key, &old) &&
	    old == d->input_hash)
		status = STEP_UNCHANGED;
	o = exec_changed_override(d);
	if (o >= 0)
		status = o ? STEP_CHANGED : STEP_UNCHANGED;
	if (d->input_key && x->cbs.set_input_hash)
		x->cbs.set_input_hash(x->userdata, d->input_key, d->input_hash);
	plan_step_done(x, status, NULL);
}

static int exec_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			 char **ret_error)
{
	*ret_action = "run";
	return 0;
}

static void exec_apply(struct step *s, struct plan_exec *x)
{
	struct exec_data *d = s->data;
	_cleanup_free_ char *err = NULL;
	struct exec_opts o = {
		.argv = d->argv,
		.env = d->env,
		.cwd = d->cwd ? d->cwd : x->env.root,
		.user = d->user,
		.timeout_ms = d->timeout_sec * 1000,
		.stdin_data = d->stdin_data,
		.stdin_len = d->stdin_len,
	};
	uid_t uid;
	gid_t gid;
	int r;

	/* exec.c can only say ENOENT for an unknown user; say it clearly. */
	if (d->user && resolve_owner(d->user, NULL, &uid, &gid, &err) < 0)
		return plan_step_done(x, STEP_FAILED, "could not start: %s", err);

	d->cur_len = d->last_len = 0;
	d->x = x;
	r = exec_start(x->loop, &o, cb_exec_output, cb_exec_done, d, &d->proc);
	if (r < 0) {
		d->x = NULL;
		d->proc = NULL;
		return plan_step_done(x, STEP_FAILED, "could not start: %s", strerror(-r));
	}
}

static void exec_cancel(struct step *s)
{
	struct exec_data *d = s->data;

	if (d->proc)
		exec_terminate(d->proc);
}

static const struct step_ops exec_ops = {
	.kind = "exec",
	.describe = exec_describe,
	.apply = exec_apply,
	.cancel = exec_cancel,
	.free_data = exec_data_free,
};

struct step *plan_add_exec(struct plan *p, const char *target, const struct exec_step_opts *o, char **ret_error)
{
	struct exec_data *d;
	char *cwd = NULL;

	if (!o || !o->argv || !o->argv[0]) {
		if (ret_error)
			*ret_error = xasprintf("no command for %s", target ? target : "exec step");
		return NULL;
	}
	if (o->cwd && plan_join(p, o->cwd, &cwd, ret_error) < 0)
		return NULL;
	d = xcalloc(1, sizeof(*d));
	d->argv = strv_dup(o->argv);
	d->env = strv_dup(o->env);
	d->user = xstrdup_or_null(o->user);
	d->cwd = cwd;
	d->timeout_sec = o->timeout_sec;
	if (o->stdin_data) {
		d->stdin_data = xmalloc(o->stdin_len + 1);
		memcpy(d->stdin_data, o->stdin_data, o->stdin_len);
		d->stdin_data[o->stdin_len] = '\0';
		d->stdin_len = o->stdin_len;
	}
	d->input_key = xstrdup_or_null(o->input_key);
	d->input_hash = o->input_hash;
	return plan_add(p, &exec_ops, target ? target : o->argv[0], d);
}

/* --- note --- */

static int note_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			 char **ret_error)
{
	*ret_action = "none";
	return 0;
}

static void note_apply(struct step *s, struct plan_exec *x)
{
	plan_step_done(x, STEP_SKIPPED, NULL);
}

static const struct step_ops note_ops = {
	.kind = "note",
	.describe = note_describe,
	.apply = note_apply,
};

struct step *plan_add_note(struct plan *p, const char *target, const char *message)
{
	struct step *s = plan_add(p, &note_ops, target, NULL);

	s->message = xstrdup_or_null(message);
	return s;
}

/* --- plan --- */

void plan_init(struct plan *p, const char *root)
{
	*p = (struct plan){ .root = root };
}

static void step_free(struct step *s)
{
	if (!s)
		return;
	free(s->target);
	free(s->recipe);
	free(s->layer);
	free(s->id);
	strv_free(s->only_if_changed);
	free(s->unless_exists);
	free(s->error);
	free(s->message);
	if (s->ops && s->ops->free_data)
		s->ops->free_data(s->data);
	free(s);
}

void plan_free(struct plan *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_steps; i++)
		step_free(p->steps[i]);
	free(p->steps);
	p->steps = NULL;
	p->n_steps = 0;
}

struct step *plan_add(struct plan *p, const struct step_ops *ops, const char *target, void *data)
{
	struct step *s = xcalloc(1, sizeof(*s));

	s->ops = ops;
	s->target = xstrdup(target ? target : "");
	s->data = data;
	s->status = STEP_PENDING;
	/* The array grows in powers of two: capacity is implied by n_steps. */
	if ((p->n_steps & (p->n_steps - 1)) == 0)
		p->steps = xrealloc(p->steps, (p->n_steps ? p->n_steps * 2 : 1) * sizeof(*p->steps));
	p->steps[p->n_steps++] = s;
	return s;
}

void step_only_if_changed(struct step *s, const char *id)
{
	size_t n = 0;

	while (s->only_if_changed && s->only_if_changed[n])
		n++;
	s->only_if_changed = xrealloc(s->only_if_changed, (n + 2) * sizeof(char *));
	s->only_if_changed[n] = xstrdup(id);
	s->only_if_changed[n + 1] = NULL;
}

static bool path_exists_under(const char *root, const char *path)
{
	_cleanup_free_ char *joined = NULL;
	struct stat st;

	if (path_join_under(root ? root : "/", path, &joined) < 0)
		return false;
	return lstat(joined, &st) == 0;
}

/* --- executor --- */

static void on_done_timer_closed(uv_handle_t *h)
{
	free(h->data);
}

static void on_finish(uv_timer_t *t)
{
	struct plan_exec *x = t->data;

	for (size_t i = 0; i < x->p->n_steps; i++)
		x->p->steps[i]->env = NULL;
	if (x->cbs.on_done)
		x->cbs.on_done(x->userdata, x->failed || x->skipped_by_cancel);
	uv_close((uv_handle_t *)&x->timer, on_done_timer_closed);
}

static void step_finish(struct plan_exec *x)
{
	struct step *s = x->p->steps[x->cur];

	s->duration_us = time_monotonic_usec() - x->step_start;
	if (s->status == STEP_FAILED)
		x->failed = true;
	if (x->cbs.on_step_done)
		x->cbs.on_step_done(x->userdata, s, x->cur);
	x->cur++;
}

static bool guard_only_if_changed(struct plan_exec *x, const struct step *s)
{
	for (size_t i = 0; s->only_if_changed[i]; i++)
		if (plan_exec_step_changed(x, s->only_if_changed[i]))
			return true;
	return false;
}

/* Runs steps until one goes asynchronous or the plan ends. Never recursive:
 * a synchronous plan_step_done() only sets a flag for this loop. */
static void plan_run(struct plan_exec *x)
{
	while (x->cur < x->p->n_steps) {
		struct step *s = x->p->steps[x->cur];

		x->step_start = time_monotonic_usec();
		if (x->failed || x->cancelled) {
			/* After a failure the run failed anyway; after a cancel,
			 * the run is incomplete only if a step is left out. */
			if (!x->failed)
				x->skipped_by_cancel = true;
			s->status = STEP_SKIPPED;
			step_finish(x);
			continue;
		}
		s->env = &x->env;
		x->out_len = 0;
		x->out_truncated = false;
		x->out_last_nl = true;
		if (x->cbs.on_step_start)
			x->cbs.on_step_start(x->userdata, s, x->cur);
		if (s->unless_exists && path_exists_under(x->env.root, s->unless_exists)) {
			s->status = STEP_UNCHANGED;
			step_finish(x);
			continue;
		}
		if (s->only_if_changed && s->only_if_changed[0] && !guard_only_if_changed(x, s)) {
			s->status = STEP_SKIPPED;
			step_finish(x);
			continue;
		}
		x->in_apply = true;
		x->done_sync = false;
		s->ops->apply(s, x);
		x->in_apply = false;
		if (!x->done_sync) {
			x->waiting = true;
			return;
		}
		step_finish(x);
	}
	x->finishing = true;
	(void)uv_timer_start(&x->timer, on_finish, 0, 0);
}

static void on_start(uv_timer_t *t)
{
	plan_run(t->data);
}

int plan_execute(uv_loop_t *loop, struct plan *p, const struct step_env *env, const struct plan_exec_cbs *cbs,
		 void *userdata, struct plan_exec **ret)
{
	struct plan_exec *x;

	if (!loop || !p)
		return -EINVAL;
	for (size_t i = 0; i < p->n_steps; i++) {
		struct step *s = p->steps[i];

		if (!s->ops || !s->ops->apply)
			return -EINVAL;
		s->status = STEP_PENDING;
		free(s->error);
		s->error = NULL;
		s->duration_us = 0;
	}
	x = xcalloc(1, sizeof(*x));
	x->loop = loop;
	x->p = p;
	if (env)
		x->env = *env;
	if (!x->env.loop)
		x->env.loop = loop;
	if (!x->env.root)
		x->env.root = p->root ? p->root : "/";
	if (cbs)
		x->cbs = *cbs;
	x->userdata = userdata;
	(void)uv_timer_init(loop, &x->timer);
	x->timer.data = x;
	(void)uv_timer_start(&x->timer, on_start, 0, 0);
	if (ret)
		*ret = x;
	return 0;
}

void plan_execute_cancel(struct plan_exec *x, bool hard)
{
	if (!x || x->finishing)
		return;
	x->cancelled = true;
	if (hard && x->waiting && x->cur < x->p->n_steps) {
		struct step *s = x->p->steps[x->cur];

		if (s->ops->cancel)
			s->ops->cancel(s);
	}
}

void plan_step_output(struct plan_exec *x, const char *data, size_t len)
{
	size_t max = x->env.output_max;

	if (len == 0 || x->out_truncated)
		return;
	if (max > 0 && x->out_len + len > max) {
		size_t keep = max - x->out_len;
		char note[96];
		int n;

		if (keep > 0 && x->cbs.on_output)
			x->cbs.on_output(x->userdata, x->p->steps[x->cur], data, keep);
		if (keep > 0)
			x->out_last_nl = data[keep - 1] == '\n';
		x->out_len = max;
		x->out_truncated = true;
		n = snprintf(note, sizeof(note), "%s[output truncated after %zu bytes]\n", x->out_last_nl ? "" : "\n",
			     max);
		if (x->cbs.on_output)
			x->cbs.on_output(x->userdata, x->p->steps[x->cur], note, (size_t)n);
		return;
	}
	x->out_len += len;
	x->out_last_nl = data[len - 1] == '\n';
	if (x->cbs.on_output)
		x->cbs.on_output(x->userdata, x->p->steps[x->cur], data, len);
}

void plan_step_done(struct plan_exec *x, enum step_status status, const char *error_fmt, ...)
{
	struct step *s;

	if (!x || x->cur >= x->p->n_steps || (!x->in_apply && !x->waiting) || (x->in_apply && x->done_sync)) {
		log_error("plan_step_done() called twice or outside a step; ignored");
		return;
	}
	s = x->p->steps[x->cur];
	s->status = status;
	free(s->error);
	s->error = NULL;
	if (error_fmt) {
		va_list ap;

		va_start(ap, error_fmt);
		if (vasprintf(&s->error, error_fmt, ap) < 0)
			s->error = NULL;
		va_end(ap);
	}
	if (status == STEP_FAILED && !s->error)
		s->error = xstrdup("failed");
	if (x->in_apply) {
		x->done_sync = true;
		return;
	}
	x->waiting = false;
	step_finish(x);
	plan_run(x);
}

const struct step_env *plan_exec_env(struct plan_exec *x)
{
	return &x->env;
}

struct step *plan_exec_current(struct plan_exec *x)
{
	return x->cur < x->p->n_steps ? x->p->steps[x->cur] : NULL;
}

bool plan_exec_step_changed(struct plan_exec *x, const char *id)
{
	if (!id)
		return false;
	for (size_t i = 0; i < x->cur && i < x->p->n_steps; i++) {
		const struct step *s = x->p->steps[i];

		if (s->id && strcmp(s->id, id) == 0 && s->status == STEP_CHANGED)
			return true;
	}
	return false;
}

/* --- dry run --- */

/* Diffs of files in other encodings are not valid UTF-8, which JSON
 * strings must be: such bytes are shown as '?'. */
static json_t *json_string_lossy(const char *s)
{
	json_t *j = json_string(s);
	char *c;

	if (j)
		return j;
	c = xstrdup(s);
	for (char *q = c; *q; q++)
		if ((unsigned char)*q >= 0x80)
			*q = '?';
	j = json_string(c);
	free(c);
	return j;
}

json_t *plan_describe(struct plan *p, const struct step_env *env, bool redact)
{
	json_t *steps = json_array();
	bool *will_change = xcalloc(p->n_steps + 1, sizeof(bool));
	struct step_env e = { 0 };
	const char *root;

	if (env)
		e = *env;
	if (!e.root)
		e.root = p->root ? p->root : "/";
	root = e.root;

	for (size_t i = 0; i < p->n_steps; i++) {
		struct step *s = p->steps[i];
		const char *action = NULL;
		_cleanup_free_ char *diff = NULL, *error = NULL;
		bool guarded = false;
		json_t *o;
		int r = 0;

		if (s->unless_exists && path_exists_under(root, s->unless_exists))
			guarded = true;
		if (!guarded && s->only_if_changed && s->only_if_changed[0]) {
			bool any = false;

			for (size_t k = 0; s->only_if_changed[k] && !any; k++)
				for (size_t j = 0; j < i && !any; j++)
					any = will_change[j] && p->steps[j]->id &&
					      strcmp(p->steps[j]->id, s->only_if_changed[k]) == 0;
			guarded = !any;
		}
		if (guarded)
			action = "none";
		else if (s->ops->describe)
			r = s->ops->describe(s, &e, &action, &diff, &error);
		else
			action = "run";
		if (r < 0 && !action)
			action = "fail";
		if (!action)
			action = "none";
		will_change[i] = r >= 0 && strcmp(action, "none") != 0;

		o = json_pack("{s:s, s:s, s:o, s:o, s:s}", "kind", s->ops->kind, "target", s->target, "recipe",
			      s->recipe ? json_string(s->recipe) : json_null(), "layer",
			      s->layer ? json_string(s->layer) : json_null(), "action", action);
		if (!o)
			continue;
		if (diff)
			json_object_set_new(o, "diff",
					    json_string_lossy(redact && s->secret ? "(diff hidden: contains secrets)" : diff));
		if (r < 0)
			json_object_set_new(o, "error", json_string_lossy(error ? error : strerror(-r)));
		if (s->message)
			json_object_set_new(o, "message", json_string_lossy(s->message));
		json_array_append_new(steps, o);
	}
	free(will_change);
	return json_pack("{s:o}", "steps", steps);
}

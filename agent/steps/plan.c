/* SPDX-License-Identifier: BSD-2-Clause */
/* Steps and their executor (plan.h, design.md §6).
 *
 * The executor walks the steps in order. A step's apply may finish at once
 * (file, dir, link, absent, note) or later (exec): in both cases it calls
 * plan_step_done() exactly once. Synchronous steps are run back to back in
 * a loop within one loop iteration, without recursion; an asynchronous step
 * resumes the loop from its completion callback.
 *
 * Paths: file, dir, link and absent steps (and exec's cwd and unless_exists)
 * never use a path joined under root as a string. They open the parent of
 * their path inside root (rootfs_open_parent: a symlink resolved as if root
 * were "/", and none followed in or below a directory another user can
 * write, see rootfs.h) and act relative to that fd on the final component
 * only, with calls that do not follow it; metadata is changed through an fd
 * of the object itself, never by path, and in a directory another user can
 * write a file is never adopted as it is: it is written anew. */
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

#include "io/exec.h"
#include "log.h"
#include "rootfs.h"
#include "util.h"
#include "strv.h"

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

/* Checks that path is an absolute path of the managed system without "..";
 * the step keeps it as given, with a copy of the root, and resolves it
 * inside the root (rootfs.h) each time it runs. */
static int plan_check_path(const struct plan *p, const char *path, char **ret_error)
{
	_cleanup_free_ char *joined = NULL;

	return plan_join(p, path, &joined, ret_error);
}

/* Whether path names the root itself: only "/" and "." components. */
static bool path_is_root(const char *path)
{
	for (const char *c = path; *c;) {
		size_t n;

		c += strspn(c, "/");
		n = strcspn(c, "/");
		if (n > 1 || (n == 1 && c[0] != '.'))
			return false;
		c += n;
	}
	return true;
}

static char *plan_root(const struct plan *p)
{
	return xstrdup(p->root ? p->root : "/");
}

/* The parent directory of path inside root, as an O_PATH fd, and the final
 * component; with create, missing parents are made (0755). */
static int open_parent(const char *root, const char *path, bool create, int *ret_dirfd, char **ret_name)
{
	*ret_dirfd = -1;
	*ret_name = NULL;
	return rootfs_open_parent_path(root, path, create, 0755, ret_dirfd, ret_name);
}

/* --- file --- */

struct file_data {
	char *root;
	char *path;    /* on the managed system, resolved inside root */
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
	free(d->root);
	free(d->path);
	free(d->content);
	free(d->owner);
	free(d->group);
	free(d);
}

/* Opens the existing regular file name in dirfd without following a symlink
 * there. Returns the fd, -ENOENT when missing, -EISDIR for a directory,
 * -ELOOP when something other than a regular file is there (with st
 * filled). */
static int file_open_existing_at(int dirfd, const char *name, struct stat *st)
{
	int fd;

	if (fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (S_ISDIR(st->st_mode))
		return -EISDIR;
	if (!S_ISREG(st->st_mode))
		return -ELOOP;
	/* O_NONBLOCK: a FIFO swapped in meanwhile must not block us. */
	fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
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
	_cleanup_close_ int fd = -1, dfd = -1;
	_cleanup_free_ char *name = NULL;
	struct stat st;
	uid_t uid;
	gid_t gid;
	int r;

	r = resolve_owner(d->owner, d->group, &uid, &gid, ret_error);
	if (r < 0)
		return r;
	r = open_parent(d->root, d->path, false, &dfd, &name);
	if (r < 0 && r != -ENOENT) {
		*ret_error = xasprintf("cannot open the directory of %s: %s", s->target, rootfs_strerror(r));
		return r;
	}
	fd = r < 0 ? r : file_open_existing_at(dfd, name, &st);
	if (fd == -ENOENT) {
		*ret_action = "create";
		*ret_diff = diff_unified(s->target, "", 0, d->content, d->len);
		s->diff_private = !((d->mode == (mode_t)-1 ? 0644 : d->mode) & S_IROTH);
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
		/* The old content is on disk, the new one will be with the
		 * step's mode (or the old mode, when the step keeps it). */
		s->diff_private = !(st.st_mode & S_IROTH) || (d->mode != (mode_t)-1 && !(d->mode & S_IROTH));
		/* A file too large for a diff is not read (it was compared
		 * above a chunk at a time). */
		if ((uint64_t)st.st_size > DIFF_MAX_BYTES || d->len > DIFF_MAX_BYTES) {
			*ret_diff = diff_summary(s->target, (size_t)st.st_size, d->len);
			return 0;
		}
		r = lseek(fd, 0, SEEK_SET) == 0 ? fd_read_all(fd, DIFF_MAX_BYTES, &old, &old_len) : -errno;
		if (r == 0)
			*ret_diff = diff_unified(s->target, old, old_len, d->content, d->len);
		else if (r == -EFBIG) /* it grew meanwhile */
			*ret_diff = diff_summary(s->target, (size_t)st.st_size, d->len);
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
	_cleanup_free_ char *err = NULL, *name = NULL;
	_cleanup_close_ int fd = -1, dfd = -1;
	mode_t mode = d->mode;
	struct stat st;
	bool shared;
	uid_t uid;
	gid_t gid;
	int r;

	if (resolve_owner(d->owner, d->group, &uid, &gid, &err) < 0)
		return plan_step_done(x, STEP_FAILED, "%s", err);

	/* When a parent is missing, so is the file: it is written below. */
	r = open_parent(d->root, d->path, true, &dfd, &name);
	if (r < 0)
		return plan_step_done(x, STEP_FAILED, "cannot create the directory of %s: %s", s->target,
				      rootfs_strerror(r));
	shared = rootfs_dir_shared(dfd);
	fd = file_open_existing_at(dfd, name, &st);
	if (fd == -EISDIR)
		return plan_step_done(x, STEP_FAILED, "%s is a directory", s->target);
	if (fd < 0 && fd != -ENOENT && fd != -ELOOP)
		return plan_step_done(x, STEP_FAILED, "cannot open %s: %s", s->target, strerror(-fd));
	if (fd >= 0) {
		r = file_content_equal(fd, &st, d->content, d->len);
		if (r < 0)
			return plan_step_done(x, STEP_FAILED, "cannot read %s: %s", s->target, strerror(-r));
		/* In a directory another user can write, a file with our
		 * content is not adopted by changing its owner or mode in
		 * place: they may hold it open for writing, or it may be
		 * another file's second name (a hard link). It is written
		 * anew, under a name created exclusively, and renamed over. */
		if (r == 1 && shared) {
			uid_t want_uid = uid == (uid_t)-1 ? geteuid() : uid;
			gid_t want_gid = gid == (gid_t)-1 ? getegid() : gid;

			if (meta_owner_differs(&st, want_uid, want_gid) ||
			    meta_mode_differs(&st, mode == (mode_t)-1 ? 0644 : mode) || st.st_nlink > 1)
				r = 0;
		}
		if (r == 1) {
			bool changed = false;

			/* Same content: only the metadata may need fixing, on
			 * the file we opened (never through a symlink). The
			 * owner first: a chown clears set-id bits. */
			if (meta_owner_differs(&st, uid, gid)) {
				if (fchown(fd, uid, gid) < 0 || fstat(fd, &st) < 0)
					return plan_step_done(x, STEP_FAILED, "cannot chown %s: %m", s->target);
				changed = true;
			}
			if (meta_mode_differs(&st, mode)) {
				if (fchmod(fd, mode & 07777) < 0)
					return plan_step_done(x, STEP_FAILED, "cannot chmod %s: %m", s->target);
				changed = true;
			}
			return plan_step_done(x, changed ? STEP_CHANGED : STEP_UNCHANGED, NULL);
		}
		/* Keep what the step does not manage: the old mode and owner;
		 * not where another user could have planted the old file. */
		if (!shared && mode == (mode_t)-1)
			mode = st.st_mode & 07777;
		if (!shared && uid == (uid_t)-1 && st.st_uid != geteuid())
			uid = st.st_uid;
		if (!shared && gid == (gid_t)-1 && st.st_gid != getegid())
			gid = st.st_gid;
	}
	if (mode == (mode_t)-1)
		mode = 0644;
	r = file_write_atomic_at(dfd, name, d->content, d->len, mode, uid, gid);
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

	if (plan_check_path(p, path, ret_error) < 0)
		return NULL;
	d = xcalloc(1, sizeof(*d));
	d->root = plan_root(p);
	d->path = xstrdup(path);
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
	char *root;
	char *path;
	mode_t mode;
	char *owner, *group;
};

static void dir_free(void *data)
{
	struct dir_data *d = data;

	if (!d)
		return;
	free(d->root);
	free(d->path);
	free(d->owner);
	free(d->group);
	free(d);
}

enum dir_state {
	DIR_MISSING,
	DIR_PRESENT,
	DIR_LINK_OK,     /* a symlink resolving (inside root) to a directory, and nothing to enforce */
};

/* What is at the final component: a directory, nothing, or a symlink. A
 * symlink is accepted (left alone, unchanged) only when it resolves inside
 * the root to a directory and the step has no mode or owner to enforce on
 * it: enforcing them would mean following the link, and a dir step must not
 * chmod or chown whatever a link points at. Otherwise, as for anything else
 * that is not a directory, *ret_error says why. */
static int dir_state_at(const struct dir_data *d, const char *target, int dfd, const char *name, struct stat *st,
			char **ret_error)
{
	if (fstatat(dfd, name, st, AT_SYMLINK_NOFOLLOW) < 0) {
		int r = -errno;

		if (r == -ENOENT)
			return DIR_MISSING;
		*ret_error = xasprintf("cannot stat %s: %s", target, strerror(-r));
		return r;
	}
	if (S_ISDIR(st->st_mode))
		return DIR_PRESENT;
	if (S_ISLNK(st->st_mode)) {
		_cleanup_close_ int rootfd = -1, fd = -1;

		if (d->mode != (mode_t)-1 || d->owner || d->group) {
			*ret_error = xasprintf("%s is a symlink, not a directory (its mode and owner are not "
					       "enforced through a link)",
					       target);
			return -ENOTDIR;
		}
		rootfd = rootfs_open(d->root);
		fd = rootfd < 0 ? rootfd : rootfs_resolve(rootfd, d->path, true);
		if (fd < 0) {
			*ret_error = fd == -ELOOP ? xasprintf("%s is a symlink, not a directory: %s", target,
							      rootfs_strerror(fd))
						  : xasprintf("%s is a symlink, not a directory", target);
			return -ENOTDIR;
		}
		return DIR_LINK_OK;
	}
	*ret_error = xasprintf("%s exists and is not a directory", target);
	return -ENOTDIR;
}

static int dir_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			char **ret_error)
{
	struct dir_data *d = s->data;
	_cleanup_close_ int dfd = -1;
	_cleanup_free_ char *name = NULL;
	struct stat st;
	uid_t uid;
	gid_t gid;
	int r;

	r = resolve_owner(d->owner, d->group, &uid, &gid, ret_error);
	if (r < 0)
		return r;
	r = open_parent(d->root, d->path, false, &dfd, &name);
	if (r == -ENOENT) {
		*ret_action = "create";
		return 0;
	}
	if (r < 0) {
		*ret_error = xasprintf("cannot open the parent of %s: %s", s->target, rootfs_strerror(r));
		return r;
	}
	r = dir_state_at(d, s->target, dfd, name, &st, ret_error);
	if (r < 0)
		return r;
	if (r == DIR_MISSING)
		*ret_action = "create";
	else if (r == DIR_PRESENT && meta_owner_differs(&st, uid, gid))
		*ret_action = "chown";
	else if (r == DIR_PRESENT && meta_mode_differs(&st, d->mode))
		*ret_action = "chmod";
	else
		*ret_action = "none";
	return 0;
}

static void dir_apply(struct step *s, struct plan_exec *x)
{
	struct dir_data *d = s->data;
	_cleanup_free_ char *err = NULL, *name = NULL;
	_cleanup_close_ int dfd = -1, fd = -1;
	mode_t mode = d->mode == (mode_t)-1 ? 0755 : d->mode & 07777;
	bool changed = false;
	struct stat st;
	uid_t uid;
	gid_t gid;
	int r;

	if (resolve_owner(d->owner, d->group, &uid, &gid, &err) < 0)
		return plan_step_done(x, STEP_FAILED, "%s", err);
	r = open_parent(d->root, d->path, true, &dfd, &name);
	if (r < 0)
		return plan_step_done(x, STEP_FAILED, "cannot create the parents of %s: %s", s->target,
				      rootfs_strerror(r));
	r = dir_state_at(d, s->target, dfd, name, &st, &err);
	if (r < 0)
		return plan_step_done(x, STEP_FAILED, "%s", err);
	if (r == DIR_LINK_OK)
		return plan_step_done(x, STEP_UNCHANGED, NULL);
	if (r == DIR_MISSING) {
		if (mkdirat(dfd, name, mode) < 0)
			return plan_step_done(x, STEP_FAILED, "cannot create %s: %m", s->target);
		changed = true;
	}
	/* mkdir() honours the umask; an explicit mode is meant exactly. */
	if (d->mode == (mode_t)-1)
		mode = (mode_t)-1;
	/* Metadata through an fd of the directory itself, never a path. */
	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;

		/* Swapped for something else since we looked: a symlink in a
		 * directory another user can write, typically. */
		if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
			return plan_step_done(x, STEP_FAILED, "cannot open %s: it is a symlink now (not followed)",
					      s->target);
		return plan_step_done(x, STEP_FAILED, "cannot open %s: %s", s->target,
				      e == ELOOP || e == ENOTDIR ? "not a directory" : strerror(e));
	}
	if (fstat(fd, &st) < 0)
		return plan_step_done(x, STEP_FAILED, "cannot stat %s: %m", s->target);
	if (meta_owner_differs(&st, uid, gid)) {
		if (fchown(fd, uid, gid) < 0 || fstat(fd, &st) < 0)
			return plan_step_done(x, STEP_FAILED, "cannot chown %s: %m", s->target);
		changed = true;
	}
	if (meta_mode_differs(&st, mode)) {
		if (fchmod(fd, mode) < 0)
			return plan_step_done(x, STEP_FAILED, "cannot chmod %s: %m", s->target);
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

	if (plan_check_path(p, path, ret_error) < 0)
		return NULL;
	d = xcalloc(1, sizeof(*d));
	d->root = plan_root(p);
	d->path = xstrdup(path);
	d->mode = mode;
	d->owner = xstrdup_or_null(owner);
	d->group = xstrdup_or_null(group);
	return plan_add(p, &dir_ops, path, d);
}

/* --- link --- */

struct link_data {
	char *root;
	char *path;
	char *target; /* the link's content */
};

static void link_free(void *data)
{
	struct link_data *d = data;

	if (!d)
		return;
	free(d->root);
	free(d->path);
	free(d->target);
	free(d);
}

/* 0: missing, 1: the right link, 2: another link or a file (replaced), <0 error. */
static int link_state_at(const struct link_data *d, int dfd, const char *name)
{
	struct stat st;
	char buf[PATH_MAX + 1];
	ssize_t n;

	if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (!S_ISLNK(st.st_mode))
		return 2;
	n = readlinkat(dfd, name, buf, sizeof(buf) - 1);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return strcmp(buf, d->target) == 0 ? 1 : 2;
}

static int link_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			 char **ret_error)
{
	struct link_data *d = s->data;
	_cleanup_close_ int dfd = -1;
	_cleanup_free_ char *name = NULL;
	int r;

	r = open_parent(d->root, d->path, false, &dfd, &name);
	if (r >= 0)
		r = link_state_at(d, dfd, name);
	else if (r == -ENOENT)
		r = 0;
	if (r < 0) {
		*ret_error = r == -EISDIR ? xasprintf("%s is a directory", s->target)
					  : xasprintf("cannot stat %s: %s", s->target, rootfs_strerror(r));
		return r;
	}
	*ret_action = r == 0 ? "create" : r == 1 ? "none" : "update";
	return 0;
}

static void link_apply(struct step *s, struct plan_exec *x)
{
	struct link_data *d = s->data;
	_cleanup_close_ int dfd = -1;
	_cleanup_free_ char *name = NULL;
	char tmp[NAME_MAX + 1];
	int r;

	r = open_parent(d->root, d->path, true, &dfd, &name);
	if (r < 0)
		return plan_step_done(x, STEP_FAILED, "cannot create the directory of %s: %s", s->target,
				      rootfs_strerror(r));
	r = link_state_at(d, dfd, name);
	if (r == -EISDIR)
		return plan_step_done(x, STEP_FAILED, "%s is a directory", s->target);
	if (r < 0)
		return plan_step_done(x, STEP_FAILED, "cannot stat %s: %s", s->target, strerror(-r));
	if (r == 1)
		return plan_step_done(x, STEP_UNCHANGED, NULL);
	if (r == 0) {
		if (symlinkat(d->target, dfd, name) < 0)
			return plan_step_done(x, STEP_FAILED, "cannot create link %s: %m", s->target);
		return plan_step_done(x, STEP_CHANGED, NULL);
	}
	/* Replace atomically: readers see the old link or the new one. The
	 * new link gets a fresh random name, created exclusively. */
	for (int attempt = 0;; attempt++) {
		tmp_name_random(name, tmp, sizeof(tmp));
		if (symlinkat(d->target, dfd, tmp) == 0)
			break;
		if (errno != EEXIST || attempt >= 16)
			return plan_step_done(x, STEP_FAILED, "cannot create link %s: %m", s->target);
	}
	if (renameat(dfd, tmp, dfd, name) < 0) {
		int e = errno;
		(void)unlinkat(dfd, tmp, 0);
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

/* Splits an absolute path into its components (no empty ones). */
static size_t path_split(const char *p, char ***ret)
{
	size_t n = 0;
	char **v = NULL;

	for (const char *c = p; *c;) {
		size_t len;
		while (*c == '/')
			c++;
		if (!*c)
			break;
		len = strcspn(c, "/");
		if (!(len == 1 && c[0] == '.')) {
			v = xrealloc(v, (n + 1) * sizeof(char *));
			v[n++] = xstrndup(c, len);
		}
		c += len;
	}
	*ret = v;
	return n;
}

/* The path from the directory holding link to target, both absolute and
 * free of "..": "/a/b/link", "/a/c/d" gives "../c/d". */
static char *path_relative(const char *link, const char *target)
{
	char **l, **t;
	size_t nl = path_split(link, &l), nt = path_split(target, &t), common = 0;
	struct buf b;

	/* The link's own name is not a directory to leave. */
	size_t ndir = nl > 0 ? nl - 1 : 0;
	while (common < ndir && common < nt && strcmp(l[common], t[common]) == 0)
		common++;
	buf_init(&b);
	for (size_t i = common; i < ndir; i++)
		buf_puts(&b, "../");
	for (size_t i = common; i < nt; i++) {
		buf_puts(&b, t[i]);
		if (i + 1 < nt)
			buf_puts(&b, "/");
	}
	if (b.len == 0)
		buf_puts(&b, ".");
	else if (b.data[b.len - 1] == '/')
		b.data[--b.len] = '\0';
	for (size_t i = 0; i < nl; i++)
		free(l[i]);
	for (size_t i = 0; i < nt; i++)
		free(t[i]);
	free(l);
	free(t);
	return buf_steal(&b);
}

struct step *plan_add_link(struct plan *p, const char *path, const char *link_target, char **ret_error)
{
	struct link_data *d;
	char *target;

	if (!link_target || !*link_target) {
		if (ret_error)
			*ret_error = xasprintf("empty link target for %s", path ? path : "(null)");
		return NULL;
	}
	if (plan_check_path(p, path, ret_error) < 0)
		return NULL;
	if (link_target[0] == '/') {
		/* An absolute target is stored relative to the link's directory
		 * ("/srv/a/current" -> "/srv/a/releases/1" becomes "releases/1"):
		 * the link then means the same thing whether it is followed on the
		 * host, under a test root, or by our own in-root resolution. */
		if (!path_is_safe_absolute(link_target)) {
			if (ret_error)
				*ret_error = xasprintf("link target %s must be an absolute path without \"..\"", link_target);
			return NULL;
		}
		target = path_relative(path, link_target);
	} else {
		target = xstrdup(link_target);
	}
	d = xcalloc(1, sizeof(*d));
	d->root = plan_root(p);
	d->path = xstrdup(path);
	d->target = target;
	return plan_add(p, &link_ops, path, d);
}

/* --- absent --- */

struct absent_data {
	char *root;
	char *path;
	bool recursive;
	char **protect;      /* owned: paths that must outlive the removal (plan_absent_protect) */
	char **protect_what; /* owned: what each one is, for the message */
	size_t n_protect;

	/* While rm runs. */
	struct exec *proc;   /* borrowed: freed by exec.c after done */
	struct plan_exec *x; /* borrowed */
	char *target;        /* borrowed from the step, for messages */
};

static void absent_free(void *data)
{
	struct absent_data *d = data;

	if (!d)
		return;
	for (size_t i = 0; i < d->n_protect; i++) {
		free(d->protect[i]);
		free(d->protect_what[i]);
	}
	free(d->protect);
	free(d->protect_what);
	free(d->root);
	free(d->path);
	free(d);
}

/* Where fd (any kind, O_PATH too) is in this process's tree, from
 * /proc/self/fd: whatever symlinks led to it. Returns 0 or a negative errno. */
static int fd_real_path(int fd, char **ret)
{
	char link[64], buf[PATH_MAX + 1];
	ssize_t n;

	(void)snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, buf, sizeof(buf) - 1);
	if (n < 0)
		return -errno;
	if ((size_t)n >= sizeof(buf) - 1 || buf[0] != '/')
		return -ENAMETOOLONG;
	buf[n] = '\0';
	*ret = xstrdup(buf);
	return 0;
}

/* Undoes mountinfo's octal escapes (\040 for a space, \011, \012, \134) in place. */
static void mountinfo_unescape(char *s)
{
	char *w = s;

	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' &&
		    r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 3;
		} else
			*w++ = *r;
	}
	*w = '\0';
}

/* A mount point strictly below the directory whose real path is real, from
 * /proc/self/mountinfo (malloc'd), or NULL when there is none or the table
 * cannot be read (rm --one-file-system still refuses to cross into
 * another file system). The
 * directory itself being a mount point is absent_apply's own check. */
static char *mount_below(const char *real)
{
	_cleanup_free_ char *data = NULL;
	char *line, *next;

	if (file_read_all("/proc/self/mountinfo", 64u << 20, &data, NULL) < 0)
		return NULL;
	for (line = data; line && *line; line = next) {
		char *f = line, *mp;

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		/* id parent major:minor root mount-point ... */
		for (int i = 0; i < 4 && f; i++) {
			f = strchr(f, ' ');
			if (f)
				f++;
		}
		if (!f)
			continue;
		mp = f;
		f = strchr(mp, ' ');
		if (f)
			*f = '\0';
		mountinfo_unescape(mp);
		if (strcmp(mp, real) != 0 && path_is_under(mp, real))
			return xstrdup(mp);
	}
	return NULL;
}

/* Refuses to remove the directory d->path (opened as fd) when something that
 * must outlive it lies in it: a protected path (another app's deploy_to, a
 * mount point of the stack), compared as written (normal forms) and, when
 * it exists, by where it really is; or a mount point in the mount table.
 * Returns 0, or -EBUSY with *ret_error. */
static int absent_check_protected(const struct absent_data *d, const char *target, int fd, char **ret_error)
{
	_cleanup_free_ char *real = NULL, *mp = NULL;
	_cleanup_close_ int rootfd = -1;

	for (size_t i = 0; i < d->n_protect; i++)
		if (path_is_under(d->protect[i], d->path)) {
			*ret_error = xasprintf("refusing to remove %s: %s (%s) lies in it", target, d->protect[i],
					       d->protect_what[i]);
			return -EBUSY;
		}
	if (fd_real_path(fd, &real) < 0)
		return 0;
	rootfd = d->n_protect > 0 ? rootfs_open(d->root ? d->root : "/") : -1;
	for (size_t i = 0; rootfd >= 0 && i < d->n_protect; i++) {
		_cleanup_close_ int pfd = rootfs_resolve(rootfd, d->protect[i], false);
		_cleanup_free_ char *preal = NULL;

		if (pfd >= 0 && fd_real_path(pfd, &preal) == 0 && path_is_under(preal, real)) {
			/* Where it really is: names of another user's. */
			_cleanup_free_ char *epreal = str_escape_ctl(preal);

			*ret_error = xasprintf("refusing to remove %s: %s (%s) lies in it, at %s", target,
					       d->protect[i], d->protect_what[i], epreal);
			return -EBUSY;
		}
	}
	mp = mount_below(real);
	if (mp) {
		_cleanup_free_ char *emp = str_escape_ctl(mp);

		*ret_error = xasprintf("cannot remove %s: it contains a mount point (%s); nothing was removed", target,
				       emp);
		return -EBUSY;
	}
	return 0;
}

static int absent_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			   char **ret_error)
{
	struct absent_data *d = s->data;
	_cleanup_close_ int dfd = -1;
	_cleanup_free_ char *name = NULL;
	struct stat st;
	int r;

	r = open_parent(d->root, d->path, false, &dfd, &name);
	if (r >= 0 && fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		r = -errno;
	if (r == -ENOENT) {
		*ret_action = "none";
		return 0;
	}
	if (r < 0) {
		*ret_error = xasprintf("cannot stat %s: %s", s->target, strerror(-r));
		return r;
	}
	if (S_ISDIR(st.st_mode) && !d->recursive) {
		*ret_error = xasprintf("%s is a directory (not removed without recursive)", s->target);
		return -EISDIR;
	}
	if (S_ISDIR(st.st_mode)) {
		_cleanup_close_ int fd = openat(dfd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);

		if (fd >= 0 && (r = absent_check_protected(d, s->target, fd, ret_error)) < 0)
			return r;
	}
	*ret_action = "remove";
	return 0;
}

static void cb_absent_output(void *userdata, const char *data, size_t len)
{
	struct absent_data *d = userdata;

	plan_step_output(d->x, data, len);
}

static void cb_absent_done(void *userdata, const struct exec_result *r)
{
	struct absent_data *d = userdata;
	struct plan_exec *x = d->x;

	d->proc = NULL;
	d->x = NULL;
	if (r->spawn_error || r->timed_out || r->term_signal || r->exit_status != 0) {
		_cleanup_free_ char *why = exec_result_describe(r, 0);
		return plan_step_done(x, STEP_FAILED, "cannot remove %s: rm %s", d->target, why);
	}
	plan_step_done(x, STEP_CHANGED, NULL);
}

/* Removes the tree name in the directory dfd with a child, GNU
 * `rm -rf --one-file-system -- name` run in dfd (entered through
 * /proc/self/fd/N, see exec_open_cwd), so no path string with a name of
 * another user's is handed over. rm walks any depth with a bounded number of
 * descriptors, never follows a symlink, verifies each directory it enters
 * (device and inode) against a swap, and stays on the file system of name;
 * it runs beside the loop, which keeps answering while a tree of a million
 * files goes. Calls plan_step_done() from the child's completion. */
static void absent_spawn_rm(struct absent_data *d, const char *target, struct plan_exec *x, int dfd, const char *name)
{
	static char *const plain_env[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
					   "LC_ALL=C", NULL };
	char *argv[] = { "rm", "-rf", "--one-file-system", "--", (char *)name, NULL };
	_cleanup_close_ int cwdfd = fcntl(dfd, F_DUPFD_CLOEXEC, 3);
	char cwd[64];
	struct exec_opts o = { .argv = argv, .env = plain_env, .cwd = cwd };
	int r;

	if (cwdfd < 0)
		return plan_step_done(x, STEP_FAILED, "cannot remove %s: %m", target);
	(void)snprintf(cwd, sizeof(cwd), "/proc/self/fd/%d", cwdfd);
	d->x = x;
	d->target = (char *)target;
	/* The spawn itself is synchronous: cwdfd may close after this. */
	r = exec_start(x->loop, &o, cb_absent_output, cb_absent_done, d, &d->proc);
	if (r < 0) {
		d->x = NULL;
		d->proc = NULL;
		return plan_step_done(x, STEP_FAILED, "cannot remove %s: could not start rm: %s", target, strerror(-r));
	}
	plan_step_spawned(x, d->proc);
}

static void absent_apply(struct step *s, struct plan_exec *x)
{
	struct absent_data *d = s->data;
	_cleanup_close_ int dfd = -1;
	_cleanup_free_ char *name = NULL;
	uint64_t mnt = 0, parent_mnt = 0;
	bool have_mnt;
	struct stat st, parent_st;
	int fd, r;

	r = open_parent(d->root, d->path, false, &dfd, &name);
	if (r >= 0 && fstat(dfd, &parent_st) < 0)
		r = -errno;
	if (r >= 0 && fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		r = -errno;
	if (r == -ENOENT)
		return plan_step_done(x, STEP_UNCHANGED, NULL);
	if (r < 0)
		return plan_step_done(x, STEP_FAILED, "cannot stat %s: %s", s->target, strerror(-r));
	if (strcmp(name, ".") == 0)
		return plan_step_done(x, STEP_FAILED, "refusing to remove the root directory");
	if (!S_ISDIR(st.st_mode)) {
		if (unlinkat(dfd, name, 0) < 0)
			return plan_step_done(x, STEP_FAILED, "cannot remove %s: %m", s->target);
		return plan_step_done(x, STEP_CHANGED, NULL);
	}
	if (!d->recursive)
		return plan_step_done(x, STEP_FAILED, "%s is a directory (not removed without recursive)", s->target);
	fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return plan_step_done(x, STEP_FAILED, "cannot open %s: %m", s->target);
	/* The directory itself must not be a mount point either: its
	 * content would be another file system's. */
	have_mnt = rootfs_mount_id(fd, "", &mnt) == 0 && rootfs_mount_id(dfd, "", &parent_mnt) == 0;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		(void)close(fd);
		return plan_step_done(x, STEP_FAILED, "cannot stat %s: %s", s->target, strerror(e));
	}
	if ((have_mnt && mnt != parent_mnt) || st.st_dev != parent_st.st_dev) {
		(void)close(fd);
		return plan_step_done(x, STEP_FAILED, "cannot remove %s: it is a mount point", s->target);
	}
	{
		/* Before the first unlink: rm stops at another file system,
		 * but only after removing what it met before it. */
		_cleanup_free_ char *why = NULL;

		r = absent_check_protected(d, s->target, fd, &why);
		(void)close(fd);
		if (r < 0)
			return plan_step_done(x, STEP_FAILED, "%s", why);
	}
	absent_spawn_rm(d, s->target, x, dfd, name);
}

static void absent_cancel(struct step *s)
{
	struct absent_data *d = s->data;

	if (d->proc)
		exec_terminate(d->proc);
}

static const struct step_ops absent_ops = {
	.kind = "absent",
	.describe = absent_describe,
	.apply = absent_apply,
	.cancel = absent_cancel,
	.free_data = absent_free,
};

struct step *plan_add_absent(struct plan *p, const char *path, bool recursive, char **ret_error)
{
	struct absent_data *d;

	if (plan_check_path(p, path, ret_error) < 0)
		return NULL;
	/* Removing root itself is never what a recipe meant ("/", "/.", "//./"). */
	if (path_is_root(path)) {
		if (ret_error)
			*ret_error = xasprintf("refusing to remove the root directory");
		return NULL;
	}
	d = xcalloc(1, sizeof(*d));
	d->root = plan_root(p);
	d->path = xstrdup(path);
	d->recursive = recursive;
	return plan_add(p, &absent_ops, path, d);
}

void plan_absent_protect(struct step *s, const char *path, const char *what)
{
	struct absent_data *d;
	_cleanup_free_ char *n = NULL;

	if (!s || s->ops != &absent_ops || !path || path_normalize(path, &n) < 0)
		return;
	d = s->data;
	d->protect = xrealloc(d->protect, (d->n_protect + 1) * sizeof(char *));
	d->protect_what = xrealloc(d->protect_what, (d->n_protect + 1) * sizeof(char *));
	d->protect[d->n_protect] = n;
	d->protect_what[d->n_protect] = xstrdup(what ? what : "protected");
	d->n_protect++;
	n = NULL;
}

/* --- exec --- */

/* Enough for "changed=yes" and "changed=no"; longer lines never match. */
#define LAST_LINE_MAX 16

struct exec_data {
	char **argv;
	char **env;
	char *user;
	char *root;
	char *cwd;           /* a path of the managed system, resolved inside root when it runs; NULL: root itself */
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
	free(d->root);
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
	if (d->input_key && x->env.memory && x->env.memory->input_hash_get(x->env.memory->userdata, d->input_key, &old) &&
	    old == d->input_hash)
		status = STEP_UNCHANGED;
	o = exec_changed_override(d);
	if (o >= 0)
		status = o ? STEP_CHANGED : STEP_UNCHANGED;
	if (d->input_key && x->env.memory)
		x->env.memory->input_hash_set(x->env.memory->userdata, d->input_key, d->input_hash);
	plan_step_done(x, status, NULL);
}

static int exec_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			 char **ret_error)
{
	*ret_action = "run";
	return 0;
}

/* Resolves the working directory inside root to an O_PATH fd (>= 3, so the
 * child's stdio set-up cannot replace it) and names it for uv_spawn as
 * /proc/self/fd/N: libuv's child does chdir() before it switches user and
 * before exec, while it still has the fd (O_CLOEXEC only closes it at the
 * exec), so it enters exactly the directory resolved here, with no window
 * for a symlink swapped into the path between resolution and chdir(). */
static int exec_open_cwd(const struct exec_data *d, int *ret_fd, char *buf, size_t n, char **ret_error)
{
	_cleanup_close_ int rootfd = rootfs_open(d->root);
	int fd;

	fd = rootfd < 0 ? rootfd : rootfs_resolve(rootfd, d->cwd, true);
	if (fd < 0) {
		*ret_error = xasprintf("cannot enter the working directory %s: %s", d->cwd, rootfs_strerror(fd));
		return fd;
	}
	if (fd < 3) {
		int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3), e = errno;

		(void)close(fd);
		if (moved < 0) {
			*ret_error = xasprintf("cannot enter the working directory %s: %s", d->cwd, strerror(e));
			return -e;
		}
		fd = moved;
	}
	*ret_fd = fd;
	(void)snprintf(buf, n, "/proc/self/fd/%d", fd);
	if (access(buf, F_OK) < 0) {
		int r = -errno;

		*ret_error = xasprintf("cannot enter the working directory %s: %s is not available: %s", d->cwd, buf,
				       strerror(-r));
		return r;
	}
	return 0;
}

static void exec_apply(struct step *s, struct plan_exec *x)
{
	struct exec_data *d = s->data;
	_cleanup_free_ char *err = NULL;
	_cleanup_close_ int cwdfd = -1;
	char cwd[64];
	struct exec_opts o = {
		.argv = d->argv,
		.env = d->env,
		.cwd = d->root,
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
	if (d->cwd) {
		if (exec_open_cwd(d, &cwdfd, cwd, sizeof(cwd), &err) < 0)
			return plan_step_done(x, STEP_FAILED, "could not start: %s", err);
		o.cwd = cwd;
	}

	d->cur_len = d->last_len = 0;
	d->x = x;
	/* The spawn itself is synchronous: cwdfd may close after this. */
	r = exec_start(x->loop, &o, cb_exec_output, cb_exec_done, d, &d->proc);
	if (r < 0) {
		d->x = NULL;
		d->proc = NULL;
		return plan_step_done(x, STEP_FAILED, "could not start: %s", strerror(-r));
	}
	if (x->cbs.on_spawn && exec_pgid(d->proc) > 0)
		x->cbs.on_spawn(x->userdata, s, exec_pgid(d->proc));
}

void plan_step_spawned(struct plan_exec *x, const struct exec *proc)
{
	struct step *s = plan_exec_current(x);

	if (s && proc && x->cbs.on_spawn && exec_pgid(proc) > 0)
		x->cbs.on_spawn(x->userdata, s, exec_pgid(proc));
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
	if (o->cwd) {
		if (plan_check_path(p, o->cwd, ret_error) < 0)
			return NULL;
		cwd = xstrdup(o->cwd);
	}
	d = xcalloc(1, sizeof(*d));
	d->argv = strv_dup((const char *const *)o->argv);
	d->env = strv_dup((const char *const *)o->env);
	d->user = xstrdup_or_null(o->user);
	d->root = plan_root(p);
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

/* The step memory's key for a guarded step's owed work (see step_finish). */
static char *owed_key(const struct step *s)
{
	return xasprintf("%s/%s/%s/%s", s->layer ? s->layer : "", s->recipe ? s->recipe : "", s->ops->kind,
			 s->target ? s->target : "");
}

static bool pending_get(struct plan_exec *x, const struct step *s)
{
	_cleanup_free_ char *key = NULL;

	if (!x->env.memory)
		return false;
	key = owed_key(s);
	return x->env.memory->owed_get(x->env.memory->userdata, key);
}

static void pending_set(struct plan_exec *x, const struct step *s, bool on)
{
	_cleanup_free_ char *key = NULL;

	if (!x->env.memory || (!on && !pending_get(x, s)))
		return;
	key = owed_key(s);
	x->env.memory->owed_set(x->env.memory->userdata, key, on);
}

static void step_finish(struct plan_exec *x)
{
	struct step *s = x->p->steps[x->cur];

	s->duration_us = time_monotonic_usec() - x->step_start;
	if (s->status == STEP_FAILED)
		x->failed = true;
	/* A change owes the steps guarded on it their work (a reload after a
	 * config was replaced) until they succeed: remembered outside this
	 * execution, so that a reload that failed, or never ran because the
	 * run failed or agentd was killed, runs at the next execution even
	 * though the config no longer changes then. */
	if (s->status == STEP_CHANGED && s->id)
		for (size_t i = x->cur + 1; i < x->p->n_steps; i++) {
			const struct step *t = x->p->steps[i];
			for (size_t k = 0; t->only_if_changed && t->only_if_changed[k]; k++)
				if (strcmp(t->only_if_changed[k], s->id) == 0) {
					pending_set(x, t, true);
					break;
				}
		}
	if ((s->status == STEP_CHANGED || s->status == STEP_UNCHANGED) && s->only_if_changed && s->only_if_changed[0])
		pending_set(x, s, false);
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
		if (s->unless_exists && rootfs_exists(x->env.root, s->unless_exists)) {
			s->status = STEP_UNCHANGED;
			step_finish(x);
			continue;
		}
		if (s->only_if_changed && s->only_if_changed[0] && !guard_only_if_changed(x, s) && !pending_get(x, s)) {
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

/* Bytes s takes as a JSON string's content, at most: escapes counted, and
 * bytes past ASCII as \uXXXX would make them (3 bytes each at most). */
static size_t json_text_cost(const char *s)
{
	size_t n = 0;

	for (const unsigned char *q = (const unsigned char *)s; *q; q++)
		if (*q == '"' || *q == '\\' || *q == '\n' || *q == '\t' || *q == '\r' || *q == '\b' || *q == '\f')
			n += 2;
		else if (*q < 0x20)
			n += 6;
		else if (*q >= 0x80)
			n += 3;
		else
			n++;
	return n;
}

size_t plan_content_bytes(const struct plan *p)
{
	size_t n = 0;

	for (size_t i = 0; i < p->n_steps; i++)
		if (p->steps[i]->ops == &file_ops)
			n += ((const struct file_data *)p->steps[i]->data)->len;
	return n;
}

json_t *plan_describe(struct plan *p, const struct step_env *env)
{
	json_t *steps = json_array();
	bool *will_change = xcalloc(p->n_steps + 1, sizeof(bool));
	struct step_env e = { 0 };
	size_t diffs_cost = 0, open_cost = 0;
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

		if (s->unless_exists && rootfs_exists(root, s->unless_exists))
			guarded = true;
		if (!guarded && s->only_if_changed && s->only_if_changed[0]) {
			bool any = false;

			for (size_t k = 0; s->only_if_changed[k] && !any; k++)
				for (size_t j = 0; j < i && !any; j++)
					any = will_change[j] && p->steps[j]->id &&
					      strcmp(p->steps[j]->id, s->only_if_changed[k]) == 0;
			guarded = !any;
		}
		s->diff_private = false;
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
		if (diff) {
			/* Who sees which diff, and the cap on what each sees,
			 * are control's (control_plan_view()). Kept here is
			 * every diff that fits the cap for a privileged caller
			 * (every diff counts) or for the others (only diffs of
			 * steps neither secret nor private count: the others
			 * see a short note for those), so that a plan holds at
			 * most twice PLAN_DIFFS_MAX of diffs. */
			_cleanup_free_ char *note = xasprintf(PLAN_DIFFS_NOTE, PLAN_DIFFS_MAX >> 20);
			bool hidden = s->secret || s->diff_private;
			size_t cost = json_text_cost(diff);
			bool all_fit = cost <= PLAN_DIFFS_MAX - diffs_cost;
			bool open_fit = !hidden && cost <= PLAN_DIFFS_MAX - open_cost;
			size_t add = all_fit ? cost : strlen(note);

			diffs_cost += add < PLAN_DIFFS_MAX - diffs_cost ? add : PLAN_DIFFS_MAX - diffs_cost;
			add = open_fit ? cost : hidden ? 0 : strlen(note);
			open_cost += add < PLAN_DIFFS_MAX - open_cost ? add : PLAN_DIFFS_MAX - open_cost;
			if (!all_fit && !open_fit) {
				free(diff);
				diff = note;
				note = NULL;
			}
			json_object_set_new(o, "diff", json_string_lossy(diff));
			json_object_set_new(o, "diff_cost", json_integer((json_int_t)cost));
			if (s->secret)
				json_object_set_new(o, "diff_secret", json_true());
			if (s->diff_private)
				json_object_set_new(o, "diff_private", json_true());
		}
		if (r < 0)
			json_object_set_new(o, "error", json_string_lossy(error ? error : strerror(-r)));
		if (s->message)
			json_object_set_new(o, "message", json_string_lossy(s->message));
		json_array_append_new(steps, o);
	}
	free(will_change);
	return json_pack("{s:o}", "steps", steps);
}

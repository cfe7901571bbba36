/* SPDX-License-Identifier: BSD-2-Clause */
/* The file and dir step kinds (plan.h): a file written atomically when its
 * content or metadata differs, a directory with its mode and owner. Both act
 * through an fd of the parent opened inside root (plan.c's header). */
#include "plan.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/diff.h"
#include "log.h"
#include "rootfs.h"
#include "step_util.h"
#include "util.h"

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

/* What the file step would do to the content and metadata on disk, for
 * owner uid and group gid (-1: not managed). */
static int file_describe_content(struct step *s, uid_t uid, gid_t gid, const char **ret_action, char **ret_diff,
				 char **ret_error)
{
	struct file_data *d = s->data;
	_cleanup_close_ int fd = -1, dfd = -1;
	_cleanup_free_ char *name = NULL;
	struct stat st;
	int r;

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

/* The owner is looked up now, not when the step was planned: an earlier
 * step (the user kind) may create it. When it does not exist yet, the step
 * would fail as things stand (action "fail" with the error), and the plan
 * still shows the content diff, the part a reader checks (design.md §5). */
static int file_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			 char **ret_error)
{
	const struct file_data *d = s->data;
	_cleanup_free_ char *owner_error = NULL;
	uid_t uid;
	gid_t gid;
	int r, owner_r;

	owner_r = resolve_owner(d->owner, d->group, &uid, &gid, &owner_error);
	r = file_describe_content(s, uid, gid, ret_action, ret_diff, ret_error);
	if (r < 0 || owner_r >= 0)
		return r;
	*ret_action = NULL;
	*ret_error = owner_error;
	owner_error = NULL;
	return owner_r;
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

size_t plan_content_bytes(const struct plan *p)
{
	size_t n = 0;

	for (size_t i = 0; i < p->n_steps; i++)
		if (p->steps[i]->ops == &file_ops)
			n += ((const struct file_data *)p->steps[i]->data)->len;
	return n;
}

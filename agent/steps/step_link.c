/* SPDX-License-Identifier: BSD-2-Clause */
/* The link and absent step kinds (plan.h): a symlink replaced atomically,
 * and a path removed (a tree by rm in a child, never across a mount). */
#include "plan.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/exec.h"
#include "log.h"
#include "rootfs.h"
#include "step_util.h"
#include "util.h"

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
	r = exec_start(plan_exec_env(x)->loop, &o, cb_absent_output, cb_absent_done, d, &d->proc);
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


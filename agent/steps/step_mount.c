/* SPDX-License-Identifier: BSD-2-Clause */
/* Steps "mount" and "unmount" with libmount; see step_mount.h. */
#include "step_mount.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libmount.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "io/fstab.h"
#include "plan.h"
#include "rootfs.h"
#include "util.h"

/* Resolves target inside root to a directory; returns its O_PATH fd and the
 * path the kernel knows it by (for libmount) in *ret_path. */
static int target_resolve(const char *root, const char *target, char **ret_path)
{
	_cleanup_close_ int rootfd = -1;
	char proc[64], buf[PATH_MAX];
	ssize_t n;
	int fd;

	rootfd = rootfs_open(root);
	if (rootfd < 0)
		return rootfd;
	/* libmount and mount helpers take the path as a string: no name of
	 * it may be in a directory another user can write (rootfs.h). */
	fd = rootfs_resolve_private(rootfd, target, true);
	if (fd < 0)
		return fd;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, buf, sizeof(buf) - 1);
	if (n < 0) {
		int r = -errno;

		close(fd);
		return r;
	}
	buf[n] = '\0';
	*ret_path = xstrdup(buf);
	return fd;
}

/* The mount on path (the last one, which is what is visible), or 0. */
static int mountinfo_find(const char *path, char **ret_source, dev_t *ret_devno)
{
	struct libmnt_table *tb = mnt_new_table_from_file("/proc/self/mountinfo");
	struct libmnt_fs *fs;
	int found = 0;

	if (!tb)
		return -errno ? -errno : -EIO;
	fs = mnt_table_find_target(tb, path, MNT_ITER_BACKWARD);
	if (fs && mnt_fs_get_target(fs) && strcmp(mnt_fs_get_target(fs), path) == 0) {
		found = 1;
		if (ret_source)
			*ret_source = mnt_fs_get_source(fs) ? xstrdup(mnt_fs_get_source(fs)) : NULL;
		if (ret_devno)
			*ret_devno = mnt_fs_get_devno(fs);
	}
	mnt_unref_table(tb);
	return found;
}

int mount_lookup(const char *root, const char *target, char **ret_source)
{
	_cleanup_free_ char *path = NULL;
	int fd, r;

	fd = target_resolve(root, target, &path);
	if (fd == -ENOENT)
		return 0;
	if (fd < 0)
		return fd;
	close(fd);
	r = mountinfo_find(path, ret_source, NULL);
	return r;
}

static int dir_is_empty(int pathfd)
{
	char proc[64];
	struct dirent *de;
	DIR *d;
	int fd, r = 1;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pathfd);
	fd = open(proc, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		r = -errno;
		close(fd);
		return r;
	}
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
			r = 0;
			break;
		}
	closedir(d);
	return r;
}

/* Reads root/etc/fstab; a missing file is empty. Returns the directory fd
 * of /etc (created when missing) in *ret_dirfd. */
static int fstab_read(const char *root, int *ret_dirfd, char **ret_name, char **ret_text, size_t *ret_len)
{
	_cleanup_close_ int rootfd = -1;
	int fd, r;

	rootfd = rootfs_open(root);
	if (rootfd < 0)
		return rootfd;
	r = rootfs_open_parent(rootfd, "/etc/fstab", true, 0755, ret_dirfd, ret_name);
	if (r < 0)
		return r;
	fd = openat(*ret_dirfd, *ret_name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ENOENT) {
			r = -errno;
			goto fail;
		}
		*ret_text = xstrdup("");
		*ret_len = 0;
		return 0;
	}
	r = fd_read_all(fd, FSTAB_MAX, ret_text, ret_len);
	close(fd);
	if (r >= 0)
		return 0;
fail:
	close(*ret_dirfd);
	free(*ret_name);
	return r;
}

static int fstab_keep(const char *root, const struct mount_spec *spec, bool *ret_changed, char **ret_error)
{
	_cleanup_free_ char *name = NULL, *text = NULL, *src = NULL, *tgt = NULL, *line = NULL, *out = NULL;
	_cleanup_close_ int dirfd = -1;
	const char *opts = spec->fstab_options ? spec->fstab_options : spec->options ? spec->options : "defaults";
	bool changed = false;
	size_t len;
	int r;

	r = fstab_read(root, &dirfd, &name, &text, &len);
	if (r < 0) {
		*ret_error = xasprintf("cannot read /etc/fstab: %s", strerror(-r));
		return r;
	}
	src = fstab_escape(spec->fstab_source ? spec->fstab_source : spec->source);
	tgt = fstab_escape(spec->target);
	line = xasprintf("%s %s %s %s%s%s 0 %d", src, tgt, spec->fstype, opts,
			 fstab_has_option(opts, FSTAB_OWNER_OPTION) ? "" : ",",
			 fstab_has_option(opts, FSTAB_OWNER_OPTION) ? "" : FSTAB_OWNER_OPTION, spec->fstab_pass);
	out = fstab_set(text, len, spec->target, line, spec->force, &changed);
	if (!changed)
		return 0;
	r = file_write_atomic_at(dirfd, name, out, strlen(out), 0644, (uid_t)-1, (gid_t)-1);
	if (r < 0) {
		*ret_error = xasprintf("cannot write /etc/fstab: %s", strerror(-r));
		return r;
	}
	*ret_changed = true;
	return 0;
}

/* Runs a libmount context's mount or umount and turns its result, and the
 * helper's exit status, into 0 or an error message. libmount reports
 * success when it ran a helper, whatever the helper's status: check it. */
static int context_result(struct libmnt_context *cxt, int rc, const char *what, char **ret_error)
{
	char msg[512] = "";

	if (mnt_context_helper_executed(cxt)) {
		int st = mnt_context_get_helper_status(cxt);

		if (st != 0) {
			*ret_error = xasprintf("%s: mount helper exited with status %d", what, st);
			return -EIO;
		}
		return 0;
	}
	if (rc == 0)
		return 0;
	(void)mnt_context_get_excode(cxt, rc, msg, sizeof(msg));
	*ret_error = xasprintf("%s: %s", what, msg[0] ? msg : "failed");
	return -EIO;
}

int mount_ensure(const char *root, const struct mount_spec *spec, bool *ret_changed, char **ret_error)
{
	_cleanup_free_ char *path = NULL, *cur_source = NULL;
	_cleanup_close_ int fd = -1;
	struct libmnt_context *cxt;
	dev_t cur_dev = 0;
	int r;

	fd = target_resolve(root, spec->target, &path);
	if (fd < 0) {
		*ret_error = xasprintf("cannot open the mount point %s: %s", spec->target, rootfs_strerror(fd));
		return fd;
	}
	/* Someone else's fstab line for this mount point: not ours to replace
	 * (nor to mount over what it describes) unless forced. */
	if (!spec->force) {
		_cleanup_free_ char *name = NULL, *text = NULL, *other = NULL;
		_cleanup_close_ int dirfd = -1;
		size_t len;

		r = fstab_read(root, &dirfd, &name, &text, &len);
		if (r < 0) {
			*ret_error = xasprintf("cannot read /etc/fstab: %s", strerror(-r));
			return r;
		}
		if (fstab_find_foreign(text, len, spec->target, &other) > 0) {
			*ret_error = xasprintf("fstab line for %s is not agentd's (source %s, no %s option): "
					       "refusing to replace it (\"force\": true allows it)",
					       spec->target, other, FSTAB_OWNER_OPTION);
			return -EEXIST;
		}
	}
	r = mountinfo_find(path, &cur_source, &cur_dev);
	if (r < 0) {
		*ret_error = xasprintf("cannot read /proc/self/mountinfo: %s", strerror(-r));
		return r;
	}
	if (r > 0) {
		bool same = spec->devno ? cur_dev == spec->devno
					: cur_source && strcmp(cur_source, spec->source) == 0;

		if (!same) {
			*ret_error = xasprintf("%s is already a mount point, of %s, not %s", spec->target,
					       cur_source ? cur_source : "?", spec->source);
			return -EBUSY;
		}
	} else {
		if (!spec->force) {
			r = dir_is_empty(fd);
			if (r < 0) {
				*ret_error = xasprintf("cannot read %s: %s", spec->target, strerror(-r));
				return r;
			}
			if (r == 0) {
				*ret_error = xasprintf("refusing to mount %s over the non-empty directory %s "
						       "(\"force\": true allows it)",
						       spec->source, spec->target);
				return -ENOTEMPTY;
			}
		}
		cxt = mnt_new_context();
		if (!cxt)
			abort();
		/* Only what we say: no lookups in the host's fstab, no utab. */
		(void)mnt_context_disable_mtab(cxt, 1);
		(void)mnt_context_set_source(cxt, spec->source);
		(void)mnt_context_set_target(cxt, path);
		(void)mnt_context_set_fstype(cxt, spec->fstype);
		if (spec->options)
			(void)mnt_context_set_options(cxt, spec->options);
		r = mnt_context_mount(cxt);
		r = context_result(cxt, r, spec->target, ret_error);
		mnt_free_context(cxt);
		if (r < 0)
			return r;
		*ret_changed = true;
	}
	return fstab_keep(root, spec, ret_changed, ret_error);
}

static int unmount_do(const char *root, const char *target, bool drop_fstab, bool *ret_changed, char **ret_message,
		      char **ret_error)
{
	_cleanup_free_ char *path = NULL, *name = NULL, *text = NULL;
	_cleanup_close_ int fd = -1, dirfd = -1;
	struct fstab_entry e = { 0 };
	struct libmnt_context *cxt;
	size_t len;
	bool ours;
	int r;

	r = fstab_read(root, &dirfd, &name, &text, &len);
	if (r < 0) {
		*ret_error = xasprintf("cannot read /etc/fstab: %s", strerror(-r));
		return r;
	}
	ours = fstab_find(text, len, target, &e) > 0 && fstab_has_option(e.options, FSTAB_OWNER_OPTION);
	fstab_entry_done(&e);
	if (!ours) {
		*ret_message = xasprintf("%s has no fstab line of agentd's: left alone", target);
		return 0;
	}
	fd = target_resolve(root, target, &path);
	if (fd == -ENOENT || fd == -ENOTDIR)
		r = 0;
	else if (fd < 0) {
		*ret_error = xasprintf("cannot open the mount point %s: %s", target, rootfs_strerror(fd));
		return fd;
	} else {
		/* An fd of the mount point would keep it busy. */
		close(fd);
		fd = -1;
		r = mountinfo_find(path, NULL, NULL);
	}
	if (r < 0) {
		*ret_error = xasprintf("cannot read /proc/self/mountinfo: %s", strerror(-r));
		return r;
	}
	if (r > 0) {
		cxt = mnt_new_context();
		if (!cxt)
			abort();
		(void)mnt_context_disable_mtab(cxt, 1);
		(void)mnt_context_set_target(cxt, path);
		r = mnt_context_umount(cxt);
		r = context_result(cxt, r, target, ret_error);
		mnt_free_context(cxt);
		if (r < 0)
			return r;
		*ret_changed = true;
	}
	if (drop_fstab) {
		bool changed = false;
		_cleanup_free_ char *out = fstab_set(text, len, target, "", false, &changed);
		struct buf b;
		size_t i = 0;

		/* fstab_set left an empty line where ours was: drop it. */
		buf_init(&b);
		while (out[i]) {
			char *nl = strchr(out + i, '\n');
			size_t n = nl ? (size_t)(nl - (out + i)) + 1 : strlen(out + i);

			if (!(n == 1 && out[i] == '\n'))
				buf_append(&b, out + i, n);
			i += n;
		}
		buf_append(&b, "", 1);
		r = file_write_atomic_at(dirfd, name, b.data, strlen(b.data), 0644, (uid_t)-1, (gid_t)-1);
		buf_free(&b);
		if (r < 0) {
			*ret_error = xasprintf("cannot write /etc/fstab: %s", strerror(-r));
			return r;
		}
		*ret_changed = true;
	}
	return 0;
}

/* The steps. */

struct mount_step {
	struct mount_spec spec; /* strings below, owned */
	char *strs[6];
	bool unmount;
	bool drop_fstab;
	/* While applying. */
	uv_work_t work;
	struct plan_exec *x;   /* borrowed */
	char *root;            /* owned copy */
	int r;
	bool changed;
	char *error, *message; /* owned */
};

static void mount_step_free(void *data)
{
	struct mount_step *m = data;

	if (!m)
		return;
	for (size_t i = 0; i < ELEMENTSOF(m->strs); i++)
		free(m->strs[i]);
	free(m->root);
	free(m->error);
	free(m->message);
	free(m);
}

static void on_mount_work(uv_work_t *w)
{
	struct mount_step *m = w->data;

	if (m->unmount)
		m->r = unmount_do(m->root, m->spec.target, m->drop_fstab, &m->changed, &m->message, &m->error);
	else
		m->r = mount_ensure(m->root, &m->spec, &m->changed, &m->error);
}

static void on_mount_work_done(uv_work_t *w, int status)
{
	struct mount_step *m = w->data;
	struct step *s = plan_exec_current(m->x);

	(void)status;
	if (m->message && s && !s->message) {
		s->message = m->message;
		m->message = NULL;
	}
	if (m->r < 0)
		return plan_step_done(m->x, STEP_FAILED, "%s", m->error ? m->error : strerror(-m->r));
	plan_step_done(m->x, m->changed ? STEP_CHANGED : STEP_UNCHANGED, NULL);
}

static void mount_step_apply(struct step *s, struct plan_exec *x)
{
	struct mount_step *m = s->data;
	int r;

	free(m->root);
	free(m->error);
	m->root = xstrdup(plan_exec_env(x)->root);
	m->error = NULL;
	m->changed = false;
	m->r = 0;
	m->x = x;
	m->work.data = m;
	r = uv_queue_work(plan_exec_env(x)->loop, &m->work, on_mount_work, on_mount_work_done);
	if (r < 0)
		plan_step_done(x, STEP_FAILED, "cannot queue the mount: %s", uv_strerror(r));
}

static int mount_step_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			       char **ret_error)
{
	struct mount_step *m = s->data;
	int r;

	(void)ret_diff;
	(void)ret_error;
	r = mount_lookup(env->root, m->spec.target, NULL);
	if (m->unmount)
		*ret_action = r > 0 ? "unmount" : "none";
	else
		*ret_action = r > 0 ? "none" : "mount";
	return 0;
}

static const struct step_ops mount_ops = {
	.kind = "mount",
	.describe = mount_step_describe,
	.apply = mount_step_apply,
	.free_data = mount_step_free,
};

static const struct step_ops unmount_ops = {
	.kind = "unmount",
	.describe = mount_step_describe,
	.apply = mount_step_apply,
	.free_data = mount_step_free,
};

static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

struct step *plan_add_mount(struct plan *p, const struct mount_spec *spec, char **ret_error)
{
	struct mount_step *m;

	if (!spec->target || !path_is_safe_absolute(spec->target)) {
		*ret_error = xasprintf("mount point %s is not a safe absolute path", spec->target ? spec->target : "(null)");
		return NULL;
	}
	m = xcalloc(1, sizeof(*m));
	m->spec = *spec;
	m->spec.source = m->strs[0] = xstrdup(spec->source);
	m->spec.target = m->strs[1] = xstrdup(spec->target);
	m->spec.fstype = m->strs[2] = xstrdup(spec->fstype);
	m->spec.options = m->strs[3] = dup_or_null(spec->options);
	m->spec.fstab_source = m->strs[4] = dup_or_null(spec->fstab_source);
	m->spec.fstab_options = m->strs[5] = dup_or_null(spec->fstab_options);
	return plan_add(p, &mount_ops, spec->target, m);
}

struct step *plan_add_unmount(struct plan *p, const char *target, bool drop_fstab, char **ret_error)
{
	struct mount_step *m;

	if (!target || !path_is_safe_absolute(target)) {
		*ret_error = xasprintf("mount point %s is not a safe absolute path", target ? target : "(null)");
		return NULL;
	}
	m = xcalloc(1, sizeof(*m));
	m->spec.target = m->strs[1] = xstrdup(target);
	m->unmount = true;
	m->drop_fstab = drop_fstab;
	return plan_add(p, &unmount_ops, target, m);
}

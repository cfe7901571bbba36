/* SPDX-License-Identifier: BSD-2-Clause */
/* The checked-file step kind (step_checked_file.h): a config file that
 * replaces the live one only after the real binary accepted it. */
#include "step_checked_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/diff.h"
#include "io/exec.h"
#include "plan.h"
#include "rootfs.h"
#include "strv.h"
#include "util.h"

#define FRONT_FILE_MAX (4 * 1024 * 1024)
#define CHECK_OUTPUT_MAX 4096

/* Checkers and varnishadm run with a known PATH and nothing else from our
 * environment. */
static char *const front_env[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL };

/* s with every "{}" replaced by with. */
static char *subst(const char *s, const char *with)
{
	struct buf b;
	const char *p;

	buf_init(&b);
	while ((p = strstr(s, "{}"))) {
		buf_append(&b, s, (size_t)(p - s));
		buf_puts(&b, with);
		s = p + 2;
	}
	buf_puts(&b, s);
	return buf_steal(&b);
}

/* The file name in the directory of path, both on the managed system:
 * dirname(path) + "/" + name. */
static char *sibling_path(const char *path, const char *name)
{
	const char *slash = strrchr(path, '/');

	return xasprintf("%.*s/%s", slash ? (int)(slash - path) : 0, path, name);
}

/* Reads name in dirfd (not following it). Returns 0, -ENOENT, or another
 * negative errno. */
static int read_at(int dirfd, const char *name, char **ret_data, size_t *ret_len, mode_t *ret_mode)
{
	_cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	struct stat st;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EISDIR;
	if (ret_mode)
		*ret_mode = st.st_mode & 07777;
	return fd_read_all(fd, FRONT_FILE_MAX, ret_data, ret_len);
}

/* Creates a new file with a random name next to name and writes data. */
static int write_tmp_at(int dirfd, const char *name, const char *data, size_t len, mode_t mode, char *ret_tmp,
			size_t n)
{
	_cleanup_close_ int fd = -1;

	for (int tries = 0; tries < 16; tries++) {
		tmp_name_random(name, ret_tmp, n);
		fd = openat(dirfd, ret_tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0 || errno != EEXIST)
			break;
	}
	if (fd < 0)
		return -errno;
	while (len > 0) {
		ssize_t w = write(fd, data, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			int r = -errno;
			(void)unlinkat(dirfd, ret_tmp, 0);
			return r;
		}
		data += w;
		len -= (size_t)w;
	}
	if (fchmod(fd, mode) < 0 || fsync(fd) < 0) {
		int r = -errno;
		(void)unlinkat(dirfd, ret_tmp, 0);
		return r;
	}
	return 0;
}

static void fsync_dir(int dirfd)
{
	_cleanup_close_ int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0)
		(void)fsync(fd);
}

struct cf_data {
	char *root;            /* owned copy of the plan's root */
	char *path;
	char *content;
	size_t len;
	mode_t mode;
	char **check_argv;     /* owned */
	char *wrapper;         /* owned, may be NULL */
	long timeout_sec;
	char **fallback_argv;  /* owned, may be NULL */
	int fallback_status;

	/* While running. */
	struct plan_exec *x;   /* borrowed */
	struct exec *proc;     /* borrowed: freed by exec.c */
	int dirfd;
	char *name;
	char tmp[NAME_MAX + 1];
	char wtmp[NAME_MAX + 1];
	char *check_path;      /* host path "{}" stands for */
	bool in_fallback;
	char **argv_run;
	struct buf out;
};

static void cf_cleanup_run(struct cf_data *d)
{
	if (d->dirfd >= 0) {
		if (d->tmp[0])
			(void)unlinkat(d->dirfd, d->tmp, 0);
		if (d->wtmp[0])
			(void)unlinkat(d->dirfd, d->wtmp, 0);
		(void)close(d->dirfd);
	}
	d->dirfd = -1;
	d->tmp[0] = d->wtmp[0] = '\0';
	free(d->name);
	d->name = NULL;
	free(d->check_path);
	d->check_path = NULL;
	d->in_fallback = false;
	strv_free(d->argv_run);
	d->argv_run = NULL;
	buf_free(&d->out);
}

static void cf_free(void *data)
{
	struct cf_data *d = data;

	if (!d)
		return;
	cf_cleanup_run(d);
	free(d->root);
	free(d->path);
	free(d->content);
	strv_free(d->check_argv);
	strv_free(d->fallback_argv);
	free(d->wrapper);
	free(d);
}

static int cf_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
		       char **ret_error)
{
	struct cf_data *d = s->data;
	_cleanup_close_ int dirfd = -1;
	_cleanup_free_ char *name = NULL, *old = NULL;
	size_t old_len = 0;
	mode_t mode = 0;
	int r;

	r = rootfs_open_parent_path(d->root, d->path, false, 0755, &dirfd, &name);
	if (r == 0)
		r = read_at(dirfd, name, &old, &old_len, &mode);
	if (r == -ENOENT) {
		*ret_action = "create";
		*ret_diff = diff_unified(d->path, "", 0, d->content, d->len);
		return 0;
	}
	if (r < 0) {
		*ret_error = xasprintf("cannot read %s: %s", d->path, strerror(-r));
		return r;
	}
	if (old_len == d->len && memcmp(old, d->content, d->len) == 0 && mode == d->mode) {
		*ret_action = "none";
		return 0;
	}
	*ret_action = "update";
	*ret_diff = diff_unified(d->path, old, old_len, d->content, d->len);
	if (!(mode & 0004) || !(d->mode & 0004))
		s->diff_private = true;
	return 0;
}

static void cb_cf_output(void *userdata, const char *data, size_t len)
{
	struct cf_data *d = userdata;

	/* varnishd -C prints the whole generated C program: keep the start,
	 * where the error is. */
	if (d->out.len < CHECK_OUTPUT_MAX)
		buf_append(&d->out, data, len < CHECK_OUTPUT_MAX - d->out.len ? len : CHECK_OUTPUT_MAX - d->out.len);
}

static void cf_start_check(struct cf_data *d, struct plan_exec *x, char **tmpl);

/* The checker could not check (the loader found no service to load into):
 * notes why in the run's output and starts the fallback checker. */
static void cf_fallback(struct cf_data *d, struct plan_exec *x, const struct exec_result *r)
{
	_cleanup_free_ char *why = exec_result_describe(r, d->timeout_sec * 1000);
	_cleanup_free_ char *out = xstrndup(d->out.data ? d->out.data : "", d->out.len);
	_cleanup_free_ char *note = xasprintf("%s could not check the new %s (%s): %s%schecking with %s instead\n",
					       d->check_argv[0], d->path, why, out,
					       out[0] && out[strlen(out) - 1] != '\n' ? "\n" : "", d->fallback_argv[0]);

	plan_step_output(x, note, strlen(note));
	buf_reset(&d->out);
	d->in_fallback = true;
	cf_start_check(d, x, d->fallback_argv);
}

static void cb_cf_done(void *userdata, const struct exec_result *r)
{
	struct cf_data *d = userdata;
	struct plan_exec *x = d->x;

	d->proc = NULL;
	d->x = NULL;
	if (!d->in_fallback && d->fallback_argv && !r->spawn_error && !r->timed_out && !r->term_signal &&
	    r->exit_status == d->fallback_status)
		return cf_fallback(d, x, r);
	if (r->spawn_error || r->timed_out || r->term_signal || r->exit_status != 0) {
		_cleanup_free_ char *why = exec_result_describe(r, d->timeout_sec * 1000);
		_cleanup_free_ char *out = xstrndup(d->out.data ? d->out.data : "", d->out.len);
		char *argv0 = d->in_fallback ? d->fallback_argv[0] : d->check_argv[0];

		/* The output goes to the run log too, where an operator looks. */
		plan_step_output(x, out, strlen(out));
		cf_cleanup_run(d);
		return plan_step_done(x, STEP_FAILED, "%s rejected the new %s (%s), the old one is kept: %s", argv0,
				      d->path, why, out);
	}
	if (renameat(d->dirfd, d->tmp, d->dirfd, d->name) < 0) {
		int e = errno;
		cf_cleanup_run(d);
		return plan_step_done(x, STEP_FAILED, "cannot replace %s: %s", d->path, strerror(e));
	}
	d->tmp[0] = '\0';
	fsync_dir(d->dirfd);
	cf_cleanup_run(d);
	plan_step_done(x, STEP_CHANGED, NULL);
}

static void cf_apply(struct step *s, struct plan_exec *x)
{
	struct cf_data *d = s->data;
	_cleanup_free_ char *old = NULL, *cand = NULL, *wpath = NULL, *wcontent = NULL, *sib = NULL;
	size_t old_len = 0;
	mode_t mode = 0;
	int r;

	cf_cleanup_run(d);
	buf_init(&d->out);
	r = rootfs_open_parent_path(d->root, d->path, true, 0755, &d->dirfd, &d->name);
	if (r < 0) {
		d->dirfd = -1;
		return plan_step_done(x, STEP_FAILED, "cannot open the directory of %s: %s", d->path, strerror(-r));
	}
	r = read_at(d->dirfd, d->name, &old, &old_len, &mode);
	if (r < 0 && r != -ENOENT) {
		cf_cleanup_run(d);
		return plan_step_done(x, STEP_FAILED, "cannot read %s: %s", d->path, strerror(-r));
	}
	if (r == 0 && old_len == d->len && memcmp(old, d->content, d->len) == 0 && mode == d->mode) {
		cf_cleanup_run(d);
		return plan_step_done(x, STEP_UNCHANGED, NULL);
	}
	r = write_tmp_at(d->dirfd, d->name, d->content, d->len, d->mode, d->tmp, sizeof(d->tmp));
	if (r < 0) {
		d->tmp[0] = '\0';
		cf_cleanup_run(d);
		return plan_step_done(x, STEP_FAILED, "cannot write a new %s: %s", d->path, strerror(-r));
	}
	/* The checker is another program and needs a path on the host: root +
	 * the candidate's path (root is trusted configuration). */
	sib = sibling_path(d->path, d->tmp);
	if (path_join_under(d->root, sib, &cand) < 0) {
		cf_cleanup_run(d);
		return plan_step_done(x, STEP_FAILED, "cannot name %s under root", d->path);
	}
	if (d->wrapper) {
		wcontent = subst(d->wrapper, cand);
		r = write_tmp_at(d->dirfd, d->name, wcontent, strlen(wcontent), 0600, d->wtmp, sizeof(d->wtmp));
		if (r < 0) {
			d->wtmp[0] = '\0';
			cf_cleanup_run(d);
			return plan_step_done(x, STEP_FAILED, "cannot write the check wrapper of %s: %s", d->path,
					      strerror(-r));
		}
		free(sib);
		sib = sibling_path(d->path, d->wtmp);
		if (path_join_under(d->root, sib, &wpath) < 0) {
			cf_cleanup_run(d);
			return plan_step_done(x, STEP_FAILED, "cannot name %s under root", d->path);
		}
	}
	d->check_path = xstrdup(wpath ? wpath : cand);
	cf_start_check(d, x, d->check_argv);
}

/* Runs the checker tmpl ("{}" replaced by d->check_path); it ends in
 * cb_cf_done, or here with the step failed. */
static void cf_start_check(struct cf_data *d, struct plan_exec *x, char **tmpl)
{
	size_t n = strv_length((const char *const *)tmpl);
	int r;

	strv_free(d->argv_run);
	d->argv_run = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		d->argv_run[i] = subst(tmpl[i], d->check_path);

	struct exec_opts o = {
		.argv = d->argv_run,
		.env = front_env,
		.timeout_ms = d->timeout_sec * 1000,
	};
	d->x = x;
	r = exec_start(plan_exec_env(x)->loop, &o, cb_cf_output, cb_cf_done, d, &d->proc);
	if (r < 0) {
		d->x = NULL;
		d->proc = NULL;
		cf_cleanup_run(d);
		return plan_step_done(x, STEP_FAILED, "could not start %s: %s", tmpl[0], strerror(-r));
	}
	plan_step_spawned(x, d->proc);
}

static void cf_cancel(struct step *s)
{
	struct cf_data *d = s->data;

	if (d->proc)
		exec_terminate(d->proc);
}

static const struct step_ops checked_file_ops = {
	.kind = "checked-file",
	.describe = cf_describe,
	.apply = cf_apply,
	.cancel = cf_cancel,
	.free_data = cf_free,
};

struct step *front_add_checked_file(struct plan *p, const struct front_file_opts *o, char **ret_error)
{
	struct cf_data *d;

	if (!o->path || !path_is_safe_absolute(o->path) || strcmp(o->path, "/") == 0) {
		*ret_error = xasprintf("not a safe absolute file path: %s", o->path ? o->path : "(null)");
		return NULL;
	}
	if (!o->check_argv || !o->check_argv[0]) {
		*ret_error = xasprintf("no check command for %s", o->path);
		return NULL;
	}
	d = xcalloc(1, sizeof(*d));
	d->root = xstrdup(p->root ? p->root : "/");
	d->path = xstrdup(o->path);
	d->content = xmalloc(o->len + 1);
	memcpy(d->content, o->content, o->len);
	d->content[o->len] = '\0';
	d->len = o->len;
	d->mode = o->mode;
	d->check_argv = strv_dup((const char *const *)o->check_argv);
	d->wrapper = o->wrapper ? xstrdup(o->wrapper) : NULL;
	d->timeout_sec = o->timeout_sec;
	if (o->fallback_argv && o->fallback_argv[0] && o->fallback_status > 0) {
		d->fallback_argv = strv_dup((const char *const *)o->fallback_argv);
		d->fallback_status = o->fallback_status;
	}
	d->dirfd = -1;
	buf_init(&d->out);
	return plan_add(p, &checked_file_ops, o->path, d);
}

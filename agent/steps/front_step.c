/* SPDX-License-Identifier: BSD-2-Clause */
/* The front end's step kinds: "checked-file" and "varnish-vcl" (see
 * front_step.h). Both run their commands through exec.c (uv_spawn, argv,
 * never a shell) and never block the loop. */
#include "front_step.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/exec.h"
#include "plan.h"
#include "rootfs.h"
#include "util.h"

#define FRONT_FILE_MAX (4 * 1024 * 1024)
#define CHECK_OUTPUT_MAX 4096
#define VCL_DISCARD_MAX 64

/* Checkers and varnishadm run with a known PATH and nothing else from our
 * environment. */
static char *const front_env[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL };

void front_strv_free(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static size_t strv_len(char *const *v)
{
	size_t n = 0;

	while (v && v[n])
		n++;
	return n;
}

static char **strv_copy(char *const *v)
{
	size_t n = strv_len(v);
	char **r = xcalloc(n + 1, sizeof(char *));

	for (size_t i = 0; i < n; i++)
		r[i] = xstrdup(v[i]);
	return r;
}

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

/* The host path of file name in the directory of path (on the managed
 * system): root + dirname(path) + "/" + name. The checker is another
 * program and needs a path; root is trusted configuration. */
static char *host_path_in_dir(const char *root, const char *path, const char *name)
{
	const char *slash = strrchr(path, '/');
	_cleanup_free_ char *dir = xstrndup(path, slash ? (size_t)(slash - path) : 0);
	_cleanup_free_ char *rel = xasprintf("%s/%s", dir, name);
	char *ret = NULL;

	if (path_join_under(root, rel, &ret) < 0)
		return NULL;
	return ret;
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

/* --- checked-file --- */

struct cf_data {
	char *root;            /* owned copy of the plan's root */
	char *path;
	char *content;
	size_t len;
	mode_t mode;
	char **check_argv;     /* owned */
	char *wrapper;         /* owned, may be NULL */
	long timeout_sec;

	/* While running. */
	struct plan_exec *x;   /* borrowed */
	struct exec *proc;     /* borrowed: freed by exec.c */
	int dirfd;
	char *name;
	char tmp[NAME_MAX + 1];
	char wtmp[NAME_MAX + 1];
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
	front_strv_free(d->argv_run);
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
	front_strv_free(d->check_argv);
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

static void cb_cf_done(void *userdata, const struct exec_result *r)
{
	struct cf_data *d = userdata;
	struct plan_exec *x = d->x;

	d->proc = NULL;
	d->x = NULL;
	if (r->spawn_error || r->timed_out || r->term_signal || r->exit_status != 0) {
		_cleanup_free_ char *why = exec_result_describe(r, d->timeout_sec * 1000);
		_cleanup_free_ char *out = xstrndup(d->out.data ? d->out.data : "", d->out.len);
		char *argv0 = d->check_argv[0];

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
	_cleanup_free_ char *old = NULL, *cand = NULL, *wpath = NULL, *wcontent = NULL;
	const struct step_env *env = plan_exec_env(x);
	size_t old_len = 0, n;
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
	cand = host_path_in_dir(d->root, d->path, d->tmp);
	if (!cand) {
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
		wpath = host_path_in_dir(d->root, d->path, d->wtmp);
		if (!wpath) {
			cf_cleanup_run(d);
			return plan_step_done(x, STEP_FAILED, "cannot name %s under root", d->path);
		}
	}
	n = strv_len(d->check_argv);
	d->argv_run = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		d->argv_run[i] = subst(d->check_argv[i], wpath ? wpath : cand);

	struct exec_opts o = {
		.argv = d->argv_run,
		.env = front_env,
		.timeout_ms = d->timeout_sec * 1000,
	};
	(void)env;
	d->x = x;
	r = exec_start(env->loop, &o, cb_cf_output, cb_cf_done, d, &d->proc);
	if (r < 0) {
		d->x = NULL;
		d->proc = NULL;
		cf_cleanup_run(d);
		return plan_step_done(x, STEP_FAILED, "could not start %s: %s", d->check_argv[0], strerror(-r));
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
	d->check_argv = strv_copy(o->check_argv);
	d->wrapper = o->wrapper ? xstrdup(o->wrapper) : NULL;
	d->timeout_sec = o->timeout_sec;
	d->dirfd = -1;
	buf_init(&d->out);
	return plan_add(p, &checked_file_ops, o->path, d);
}

/* --- varnish-vcl --- */

enum vcl_stage { VCL_LOAD, VCL_USE, VCL_LIST, VCL_DISCARD, VCL_DONE };

struct vcl_data {
	char **adm;            /* owned: the varnishadm argv prefix */
	char *root;
	char *vcl_path;
	char *name;
	char *prefix;
	long timeout_sec;

	/* While running. */
	enum vcl_stage stage;
	struct plan_exec *x;   /* borrowed */
	struct exec *proc;     /* borrowed */
	char **argv_run;
	struct buf out;
};

static void vcl_free(void *data)
{
	struct vcl_data *d = data;

	if (!d)
		return;
	front_strv_free(d->adm);
	free(d->root);
	free(d->vcl_path);
	free(d->name);
	free(d->prefix);
	front_strv_free(d->argv_run);
	buf_free(&d->out);
	free(d);
}

static int vcl_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			char **ret_error)
{
	*ret_action = "run";
	return 0;
}

size_t front_vcl_list_parse(const char *out, size_t len, const char *prefix, const char *keep, char ***ret_names)
{
	size_t n = 0, plen = strlen(prefix);
	char **names = xcalloc(VCL_DISCARD_MAX + 1, sizeof(char *));
	const char *p = out, *end = out + len;

	while (p < end && n < VCL_DISCARD_MAX) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *le = eol ? eol : end;
		const char *tok[6];
		size_t tlen[6], nt = 0;
		const char *q = p;

		while (q < le && nt < 6) {
			while (q < le && (*q == ' ' || *q == '\t' || *q == '\r'))
				q++;
			if (q >= le)
				break;
			tok[nt] = q;
			while (q < le && *q != ' ' && *q != '\t' && *q != '\r')
				q++;
			tlen[nt] = (size_t)(q - tok[nt]);
			nt++;
		}
		/* "status state temperature busy name [...]". Only "available"
		 * ones: "active" is in use, and "discarded" ones (still busy)
		 * are on their way out; naming them would fail the whole
		 * vcl.discard command. */
		if (nt >= 5 && tlen[0] == 9 && memcmp(tok[0], "available", 9) == 0 && tlen[4] >= plen &&
		    memcmp(tok[4], prefix, plen) == 0 && !(strlen(keep) == tlen[4] && memcmp(tok[4], keep, tlen[4]) == 0) &&
		    memchr(tok[4], '\0', tlen[4]) == NULL)
			names[n++] = xstrndup(tok[4], tlen[4]);
		p = le + (eol ? 1 : 0);
	}
	*ret_names = names;
	return n;
}

static void vcl_next(struct vcl_data *d);

static void cb_vcl_output(void *userdata, const char *data, size_t len)
{
	struct vcl_data *d = userdata;

	if (d->out.len < 65536)
		buf_append(&d->out, data, len);
	if (d->stage != VCL_LIST)
		plan_step_output(d->x, data, len);
}

static void cb_vcl_done(void *userdata, const struct exec_result *r)
{
	struct vcl_data *d = userdata;
	bool ok = !(r->spawn_error || r->timed_out || r->term_signal || r->exit_status != 0);

	d->proc = NULL;
	if (!ok && (d->stage == VCL_LOAD || d->stage == VCL_USE)) {
		_cleanup_free_ char *why = exec_result_describe(r, d->timeout_sec * 1000);
		_cleanup_free_ char *out = xstrndup(d->out.data ? d->out.data : "", d->out.len > 2048 ? 2048 : d->out.len);
		struct plan_exec *x = d->x;

		d->x = NULL;
		return plan_step_done(x, STEP_FAILED, "varnishadm %s %s: %s: %s",
				      d->stage == VCL_LOAD ? "vcl.load" : "vcl.use", d->name, why, out);
	}
	if (!ok) {
		/* Old VCLs left loaded cost memory, not service: say so and go on. */
		static const char msg[] = "note: could not discard old VCLs\n";
		plan_step_output(d->x, msg, sizeof(msg) - 1);
		d->stage = VCL_DONE;
	} else
		d->stage++;
	vcl_next(d);
}

static void vcl_next(struct vcl_data *d)
{
	size_t n = strv_len(d->adm), extra = 0;
	char **names = NULL;
	_cleanup_free_ char *host = NULL;
	int r;

	if (d->stage == VCL_DISCARD) {
		extra = front_vcl_list_parse(d->out.data ? d->out.data : "", d->out.len, d->prefix, d->name, &names);
		if (extra == 0) {
			front_strv_free(names);
			d->stage = VCL_DONE;
		}
	}
	buf_reset(&d->out);
	if (d->stage == VCL_DONE) {
		struct plan_exec *x = d->x;
		d->x = NULL;
		return plan_step_done(x, STEP_CHANGED, NULL);
	}
	front_strv_free(d->argv_run);
	d->argv_run = xcalloc(n + 3 + extra + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		d->argv_run[i] = xstrdup(d->adm[i]);
	switch (d->stage) {
	case VCL_LOAD:
		if (path_join_under(d->root, d->vcl_path, &host) < 0) {
			struct plan_exec *x = d->x;
			d->x = NULL;
			return plan_step_done(x, STEP_FAILED, "cannot name %s under root", d->vcl_path);
		}
		d->argv_run[n] = xstrdup("vcl.load");
		d->argv_run[n + 1] = xstrdup(d->name);
		d->argv_run[n + 2] = xstrdup(host);
		break;
	case VCL_USE:
		d->argv_run[n] = xstrdup("vcl.use");
		d->argv_run[n + 1] = xstrdup(d->name);
		break;
	case VCL_LIST:
		d->argv_run[n] = xstrdup("vcl.list");
		break;
	case VCL_DISCARD:
		d->argv_run[n] = xstrdup("vcl.discard");
		for (size_t i = 0; i < extra; i++) {
			d->argv_run[n + 1 + i] = names[i];
			names[i] = NULL;
		}
		break;
	case VCL_DONE:
		break;
	}
	front_strv_free(names);

	struct exec_opts o = {
		.argv = d->argv_run,
		.env = front_env,
		.timeout_ms = d->timeout_sec * 1000,
	};
	r = exec_start(plan_exec_env(d->x)->loop, &o, cb_vcl_output, cb_vcl_done, d, &d->proc);
	if (r < 0) {
		struct plan_exec *x = d->x;
		d->x = NULL;
		d->proc = NULL;
		return plan_step_done(x, STEP_FAILED, "could not start %s: %s", d->adm[0], strerror(-r));
	}
	plan_step_spawned(d->x, d->proc);
}

static void vcl_apply(struct step *s, struct plan_exec *x)
{
	struct vcl_data *d = s->data;

	d->x = x;
	d->stage = VCL_LOAD;
	buf_reset(&d->out);
	vcl_next(d);
}

static void vcl_cancel(struct step *s)
{
	struct vcl_data *d = s->data;

	if (d->proc)
		exec_terminate(d->proc);
}

static const struct step_ops varnish_vcl_ops = {
	.kind = "varnish-vcl",
	.describe = vcl_describe,
	.apply = vcl_apply,
	.cancel = vcl_cancel,
	.free_data = vcl_free,
};

struct step *front_add_varnish_vcl(struct plan *p, char *const *varnishadm, const char *vcl_path, const char *name,
				   const char *prefix, long timeout_sec, char **ret_error)
{
	struct vcl_data *d;

	if (!varnishadm || !varnishadm[0]) {
		*ret_error = xstrdup("no varnishadm command");
		return NULL;
	}
	if (!path_is_safe_absolute(vcl_path)) {
		*ret_error = xasprintf("not a safe absolute file path: %s", vcl_path);
		return NULL;
	}
	d = xcalloc(1, sizeof(*d));
	d->adm = strv_copy(varnishadm);
	d->root = xstrdup(p->root ? p->root : "/");
	d->vcl_path = xstrdup(vcl_path);
	d->name = xstrdup(name);
	d->prefix = xstrdup(prefix);
	d->timeout_sec = timeout_sec;
	buf_init(&d->out);
	return plan_add(p, &varnish_vcl_ops, name, d);
}

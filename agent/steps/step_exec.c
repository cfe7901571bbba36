/* SPDX-License-Identifier: BSD-2-Clause */
/* The exec step kind (plan.h): a child process through io/exec.c, with a
 * cwd resolved inside root, output passed on, and change reporting by
 * input hash or a last "changed=yes|no" line. */
#include "plan.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "io/exec.h"
#include "log.h"
#include "rootfs.h"
#include "step_util.h"
#include "strv.h"
#include "util.h"

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
	const struct step_memory *mem = plan_exec_env(x)->memory;
	enum step_status status = STEP_CHANGED;
	uint64_t old;
	int o;

	d->proc = NULL;
	d->x = NULL;
	if (r->spawn_error)
		/* Named: "bin/zeopack: Permission denied" says what to fix. */
		return plan_step_done(x, STEP_FAILED, "could not start %s: %s", d->argv[0], strerror(-r->spawn_error));
	if (r->timed_out || r->term_signal || r->exit_status != 0) {
		_cleanup_free_ char *why = exec_result_describe(r, d->timeout_sec * 1000);
		return plan_step_done(x, STEP_FAILED, "%s", why);
	}
	if (d->input_key && mem && mem->input_hash_get(mem->userdata, d->input_key, &old) && old == d->input_hash)
		status = STEP_UNCHANGED;
	o = exec_changed_override(d);
	if (o >= 0)
		status = o ? STEP_CHANGED : STEP_UNCHANGED;
	if (d->input_key && mem)
		mem->input_hash_set(mem->userdata, d->input_key, d->input_hash);
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
	r = exec_start(plan_exec_env(x)->loop, &o, cb_exec_output, cb_exec_done, d, &d->proc);
	if (r < 0) {
		d->x = NULL;
		d->proc = NULL;
		return plan_step_done(x, STEP_FAILED, "could not start %s: %s", d->argv[0], strerror(-r));
	}
	plan_step_spawned(x, d->proc);
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


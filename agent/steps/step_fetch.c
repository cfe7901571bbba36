/* SPDX-License-Identifier: BSD-2-Clause */
/* The fetch step (step_fetch.h). The archive is written through our own
 * descriptor of the directory (/proc/self/fd/N/...), and tar runs in that
 * directory (entered through /proc/self/fd/N), so nothing follows a path
 * string out of root. GNU tar refuses members with ".." and strips a
 * leading "/". */
#include "step_fetch.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/exec.h"
#include "io/http.h"
#include "plan.h"
#include "rootfs.h"
#include "util.h"

#define FETCH_FILE ".agentd-fetch.tar.gz"
#define FETCH_SOURCE ".agentd-fetch-source"
#define FETCH_MAX (2048L * 1024 * 1024)

struct fetch_data {
	char *url, *dir, *userpwd, *user, *root;
	bool purge;
	long timeout_sec;

	struct plan_exec *x;
	struct http_request *req; /* on the loop's one HTTP client (step_env.http) */
	struct exec *proc;
	int dfd;
	int archive_fd; /* the archive we created, while it is fetched */
	int stage; /* 0 purge, 1 fetch, 2 unpack */
	uid_t uid; /* of user, or -1 without one */
	gid_t gid;
};

static void fetch_free(void *data)
{
	struct fetch_data *d = data;

	if (!d)
		return;
	if (d->dfd >= 0)
		(void)close(d->dfd);
	if (d->archive_fd >= 0)
		(void)close(d->archive_fd);
	free(d->url);
	free(d->dir);
	free(d->userpwd);
	free(d->user);
	free(d->root);
	free(d);
}

/* 0: empty (ignoring our own files), 1: not empty, negative errno. With
 * ret_same, whether the recorded URL is ours. */
static int dir_state(int dfd, const char *url, bool *ret_same)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;
	int r = 0;

	*ret_same = false;
	if (!dir) {
		r = -errno;
		if (fd >= 0)
			(void)close(fd);
		return r;
	}
	while ((de = readdir(dir)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0 && strcmp(de->d_name, FETCH_SOURCE) != 0 &&
		    strcmp(de->d_name, FETCH_FILE) != 0)
			r = 1;
	closedir(dir);
	{
		_cleanup_close_ int sfd = openat(dfd, FETCH_SOURCE, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
		_cleanup_free_ char *rec = NULL;
		if (sfd >= 0 && fd_read_all(sfd, 8192, &rec, NULL) >= 0)
			*ret_same = strcmp(rec, url) == 0;
	}
	return r;
}

static int open_dir(struct fetch_data *d, bool create, char **ret_error)
{
	_cleanup_close_ int rootfd = rootfs_open(d->root);
	int r;

	if (rootfd < 0) {
		*ret_error = xasprintf("cannot open root: %s", strerror(-rootfd));
		return rootfd;
	}
	if (create) {
		_cleanup_close_ int pfd = -1, fd = -1;
		_cleanup_free_ char *name = NULL;
		r = rootfs_open_parent(rootfd, d->dir, true, 0755, &pfd, &name);
		if (r >= 0) {
			if (mkdirat(pfd, name, 0755) == 0) {
				/* tar runs as the app user: the directory is
				 * theirs, given through an fd of the directory
				 * we find there, never followed. */
				fd = openat(pfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
				if (fd < 0 || fchown(fd, d->uid, d->gid) < 0)
					r = -errno;
			} else if (errno != EEXIST)
				r = -errno;
		}
		if (r < 0) {
			*ret_error = xasprintf("cannot create %s: %s", d->dir, rootfs_strerror(r));
			return r;
		}
	}
	r = rootfs_resolve(rootfd, d->dir, true);
	if (r < 0) {
		*ret_error = xasprintf("cannot open %s: %s", d->dir, rootfs_strerror(r));
		return r;
	}
	return r;
}

/* Without a user, tar and rm run as root in the directory: GNU tar
 * follows a symlink that is already there (sub -> /etc) when it extracts
 * sub/file, so neither the directory nor any directory above it may be
 * writable by another user. 0, -EPERM (rootfs_strerror says where) or
 * -EACCES for the directory itself. */
static int dir_private(const struct fetch_data *d)
{
	_cleanup_close_ int rootfd = rootfs_open(d->root);
	_cleanup_close_ int fd = rootfd < 0 ? rootfd : rootfs_resolve_private(rootfd, d->dir, true);

	if (fd < 0)
		return fd == -EPERM ? fd : -EACCES;
	return rootfs_dir_shared(fd) ? -EACCES : 0;
}

static void fetch_done(struct fetch_data *d, enum step_status st, const char *err)
{
	struct plan_exec *x = d->x;

	d->x = NULL;
	if (d->dfd >= 0)
		(void)close(d->dfd);
	d->dfd = -1;
	if (d->archive_fd >= 0)
		(void)close(d->archive_fd);
	d->archive_fd = -1;
	if (d->req) {
		http_request_cancel(d->req);
		d->req = NULL;
	}
	if (err)
		plan_step_done(x, STEP_FAILED, "%s", err);
	else
		plan_step_done(x, st, NULL);
}

static void fetch_next(struct fetch_data *d);

static void cb_output(void *userdata, const char *data, size_t len)
{
	struct fetch_data *d = userdata;
	plan_step_output(d->x, data, len);
}

static void cb_child(void *userdata, const struct exec_result *r)
{
	struct fetch_data *d = userdata;

	d->proc = NULL;
	if (r->spawn_error || r->timed_out || r->term_signal || r->exit_status != 0) {
		_cleanup_free_ char *why = exec_result_describe(r, d->timeout_sec * 1000);
		_cleanup_free_ char *msg = xasprintf("%s in %s failed: %s", d->stage == 0 ? "emptying" : "unpacking",
						     d->dir, why);
		return fetch_done(d, STEP_FAILED, msg);
	}
	d->stage++;
	fetch_next(d);
}

static void spawn_in_dir(struct fetch_data *d, char *const *argv, const char *user)
{
	char cwd[64];
	struct exec_opts o = { .argv = argv, .user = user, .cwd = cwd, .timeout_ms = d->timeout_sec * 1000 };
	int r;

	(void)snprintf(cwd, sizeof(cwd), "/proc/self/fd/%d", d->dfd);
	r = exec_start(plan_exec_env(d->x)->loop, &o, cb_output, cb_child, d, &d->proc);
	if (r < 0) {
		_cleanup_free_ char *msg = xasprintf("could not start %s: %s", argv[0], strerror(-r));
		fetch_done(d, STEP_FAILED, msg);
	} else
		plan_step_spawned(d->x, d->proc);
}

static void cb_fetched(void *userdata, const struct http_response *resp)
{
	struct fetch_data *d = userdata;
	_cleanup_free_ char *url = http_url_redact(d->url);
	_cleanup_free_ char *err = NULL;

	d->req = NULL;
	if (resp->error)
		err = xasprintf("fetch into %s failed: %s", d->dir, resp->error);
	else if (resp->status != 200)
		err = xasprintf("fetch into %s failed: %s answered HTTP %ld", d->dir, url, resp->status);
	/* Written by us (root, 0600) into the file we created; tar reads it
	 * as the app user. The owner changes through our fd of it. */
	else if (fchown(d->archive_fd, d->uid, d->gid) < 0)
		err = xasprintf("cannot give the archive in %s to %s: %s", d->dir, d->user, strerror(errno));
	(void)close(d->archive_fd);
	d->archive_fd = -1;
	if (err) {
		(void)unlinkat(d->dfd, FETCH_FILE, 0);
		return fetch_done(d, STEP_FAILED, err);
	}
	d->stage = 2;
	fetch_next(d);
}

static void fetch_next(struct fetch_data *d)
{
	if (d->stage == 1) {
		char out[96];
		struct http_options o = { .url = d->url, .userpwd = d->userpwd, .output_path = out,
					  .timeout_ms = d->timeout_sec * 1000, .max_body = FETCH_MAX };
		int r;

		/* The directory is the app user's: whatever they put under the
		 * archive's name is removed, the file is created exclusively,
		 * and the download reopens that file through its fd. */
		r = rootfs_create_file_at(d->dfd, FETCH_FILE, 0600);
		if (r < 0) {
			_cleanup_free_ char *err = xasprintf("cannot create the archive in %s: %s", d->dir, strerror(-r));
			return fetch_done(d, STEP_FAILED, err);
		}
		d->archive_fd = r;
		(void)snprintf(out, sizeof(out), "/proc/self/fd/%d", d->archive_fd);
		r = http_request_start(plan_exec_env(d->x)->http, &o, cb_fetched, d, &d->req);
		if (r < 0) {
			_cleanup_free_ char *err = xasprintf("cannot fetch into %s: %s", d->dir, strerror(-r));
			fetch_done(d, STEP_FAILED, err);
		}
		return;
	}
	if (d->stage == 2) {
		char *argv[] = { "tar", "-xzf", FETCH_FILE, "--no-same-owner", "--no-same-permissions", NULL };
		return spawn_in_dir(d, argv, d->user);
	}
	/* Unpacked. */
	(void)unlinkat(d->dfd, FETCH_FILE, 0);
	{
		int r = file_write_atomic_at(d->dfd, FETCH_SOURCE, d->url, strlen(d->url), 0600, (uid_t)-1, (gid_t)-1);
		if (r < 0) {
			_cleanup_free_ char *err = xasprintf("cannot record the source of %s: %s", d->dir, strerror(-r));
			return fetch_done(d, STEP_FAILED, err);
		}
	}
	fetch_done(d, STEP_CHANGED, NULL);
}

/* argv: rm of every entry of the directory (run inside it). */
static char **purge_argv(int dfd)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;
	char **v = xcalloc(5, sizeof(char *));
	size_t n = 0;

	v[n++] = xstrdup("rm");
	v[n++] = xstrdup("-rf");
	v[n++] = xstrdup("--one-file-system");
	v[n++] = xstrdup("--");
	if (!dir) {
		if (fd >= 0)
			(void)close(fd);
		return v;
	}
	while ((de = readdir(dir)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
			v = xrealloc(v, (n + 2) * sizeof(char *));
			v[n++] = xstrdup(de->d_name);
			v[n] = NULL;
		}
	closedir(dir);
	return v;
}

static void fetch_apply(struct step *s, struct plan_exec *x)
{
	struct fetch_data *d = s->data;
	_cleanup_free_ char *err = NULL;
	bool same;
	int r;

	d->x = x;
	d->uid = (uid_t)-1;
	d->gid = (gid_t)-1;
	if (d->user && (r = user_lookup(d->user, &d->uid, &d->gid)) < 0) {
		err = xasprintf("cannot look up user %s: %s", d->user, strerror(-r));
		return fetch_done(d, STEP_FAILED, err);
	}
	d->dfd = open_dir(d, true, &err);
	if (d->dfd < 0)
		return fetch_done(d, STEP_FAILED, err);
	if (!d->user && (r = dir_private(d)) < 0) {
		err = xasprintf("refusing to unpack into %s as root: %s; give the fetch a user", d->dir,
				r == -EPERM ? rootfs_strerror(r) : "a user other than root can write it");
		return fetch_done(d, STEP_FAILED, err);
	}
	r = dir_state(d->dfd, d->url, &same);
	if (r < 0) {
		err = xasprintf("cannot list %s: %s", d->dir, strerror(-r));
		return fetch_done(d, STEP_FAILED, err);
	}
	if (r > 0 && (!d->purge || same))
		return fetch_done(d, STEP_UNCHANGED, NULL);
	if (r > 0) {
		char **argv = purge_argv(d->dfd);
		d->stage = 0;
		/* As the app user: the directory's entries are the app's, and a
		 * symlink among them (shared/eggs -> /etc) must not let root's
		 * rm empty what it points to. */
		spawn_in_dir(d, argv, d->user);
		for (char **p = argv; *p; p++)
			free(*p);
		free(argv);
		return;
	}
	d->stage = 1;
	fetch_next(d);
}

static void fetch_cancel(struct step *s)
{
	struct fetch_data *d = s->data;

	if (d->proc)
		exec_terminate(d->proc);
	if (d->req) {
		http_request_cancel(d->req);
		d->req = NULL;
		fetch_done(d, STEP_FAILED, "cancelled");
	}
}

static int fetch_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			  char **ret_error)
{
	struct fetch_data *d = s->data;
	_cleanup_free_ char *err = NULL;
	int fd = open_dir(d, false, &err);
	bool same = false;
	int r = fd < 0 ? 0 : dir_state(fd, d->url, &same);

	if (fd >= 0)
		(void)close(fd);
	*ret_action = r > 0 && (!d->purge || same) ? "none" : "fetch";
	return 0;
}

static const struct step_ops fetch_ops = {
	.kind = "fetch",
	.describe = fetch_describe,
	.apply = fetch_apply,
	.cancel = fetch_cancel,
	.free_data = fetch_free,
};

struct step *plan_add_fetch(struct plan *p, const struct fetch_step_opts *o, char **ret_error)
{
	struct fetch_data *d;

	if (!o->url || !o->dir || !path_is_safe_absolute(o->dir)) {
		*ret_error = xstrdup("fetch step without a URL or a safe directory");
		return NULL;
	}
	d = xcalloc(1, sizeof(*d));
	d->url = xstrdup(o->url);
	d->dir = xstrdup(o->dir);
	d->userpwd = o->userpwd ? xstrdup(o->userpwd) : NULL;
	d->user = o->user ? xstrdup(o->user) : NULL;
	d->root = xstrdup(p->root);
	d->purge = o->purge;
	d->timeout_sec = o->timeout_sec;
	d->dfd = -1;
	d->archive_fd = -1;
	{
		_cleanup_free_ char *target = http_url_redact(o->url);
		_cleanup_free_ char *t = xasprintf("%s <- %s", o->dir, target);
		return plan_add(p, &fetch_ops, t, d);
	}
}

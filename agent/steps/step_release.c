/* SPDX-License-Identifier: BSD-2-Clause */
/* The release step (step_release.h). Paths are resolved inside root with
 * lib/rootfs.h; children enter their directories through /proc/self/fd/N
 * (as plan.c's exec does) and never see a path built from the stack as a
 * string outside root. Commands are argv, never a shell. */
#include "step_release.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/exec.h"
#include "io/http.h"
#include "log.h"
#include "plan.h"
#include "releases.h"
#include "rootfs.h"
#include "util.h"
#include "strv.h"

#define SOURCE_FILE ".agentd-source"
#define SOURCE_MAX 8192
#define ARCHIVE_FILE ".agentd-archive.tar.gz"
#define ARCHIVE_MAX (1024L * 1024 * 1024)

/* Each stage may start one child; when it exits 0 the next stage runs. */
enum rel_stage { ST_RESOLVE, ST_CLONE, ST_CHECKOUT, ST_PREPARE, ST_BUILD, ST_SWITCH, ST_FINISHED, ST_CLEANUP };
#define RESOLVE_MAX (64 * 1024)

struct rel_data {
	char *deploy_to;
	enum release_scm scm;
	char *repository, *revision, *userpwd, *source_key, *user, *group, *deploy_cfg;
	char **shared, **bootstrap_argv, **build_argv, **env;
	long keep, timeout_sec;
	char *root; /* copy of the plan's root */

	/* While running. */
	struct plan_exec *x;
	struct exec *proc;
	struct http_request *req; /* on the loop's one HTTP client (step_env.http) */
	int dfd, rfd, relfd; /* deploy_to, releases, the new release (O_PATH) */
	int archive_fd;      /* the archive we create in the new release, while it is fetched */
	char name[32];       /* the new release */
	enum rel_stage stage;
	char *failure;       /* set when cleaning up after a failure */
	char *commit;        /* git: the commit the revision names now (ls-remote), or NULL */
	struct buf resolved; /* git ls-remote's output */
	uid_t uid;
	gid_t gid;
};

static void close_fds(struct rel_data *d)
{
	if (d->dfd >= 0)
		(void)close(d->dfd);
	if (d->rfd >= 0)
		(void)close(d->rfd);
	if (d->relfd >= 0)
		(void)close(d->relfd);
	if (d->archive_fd >= 0)
		(void)close(d->archive_fd);
	d->dfd = d->rfd = d->relfd = d->archive_fd = -1;
}

static void rel_free(void *data)
{
	struct rel_data *d = data;

	if (!d)
		return;
	close_fds(d);
	free(d->deploy_to);
	free(d->repository);
	free(d->revision);
	free(d->userpwd);
	free(d->source_key);
	free(d->user);
	free(d->group);
	free(d->deploy_cfg);
	free(d->root);
	free(d->failure);
	free(d->commit);
	buf_free(&d->resolved);
	strv_free(d->shared);
	strv_free(d->bootstrap_argv);
	strv_free(d->build_argv);
	strv_free(d->env);
	free(d);
}

/* The source recorded in the current release, or NULL. "current" is read
 * by the rootfs rule with deploy_to as the root: followed only when it
 * names releases/<name>, a real directory (rootfs.h), so a planted link
 * makes root read nothing of another user's choosing. */
static char *current_source(int dfd)
{
	_cleanup_close_ int fd = -1, pfd = -1;
	_cleanup_free_ char *name = NULL;
	char *data = NULL;

	if (rootfs_open_parent(dfd, ROOTFS_MANAGED_LINK "/" SOURCE_FILE, false, 0, &pfd, &name) < 0)
		return NULL;
	fd = openat(pfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0 || fd_read_all(fd, SOURCE_MAX, &data, NULL) < 0)
		return NULL;
	return data;
}

static int open_dirs(struct rel_data *d, char **ret_error)
{
	_cleanup_close_ int rootfd = rootfs_open(d->root);
	int r = rootfd;

	if (r >= 0)
		r = d->dfd = rootfs_resolve(rootfd, d->deploy_to, true);
	if (r >= 0) {
		d->rfd = openat(d->dfd, "releases", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		r = d->rfd < 0 ? -errno : 0;
	}
	if (r < 0)
		*ret_error = xasprintf("cannot open %s/releases: %s", d->deploy_to, rootfs_strerror(r));
	return r;
}

/* A directory fd named for a child's cwd. */
static int fd_name(int fd, char *buf, size_t n)
{
	(void)snprintf(buf, n, "/proc/self/fd/%d", fd);
	return 0;
}

static void rel_done(struct rel_data *d, enum step_status st, const char *err)
{
	struct plan_exec *x = d->x;

	d->x = NULL;
	close_fds(d);
	if (d->req) {
		http_request_cancel(d->req);
		d->req = NULL;
	}
	if (err)
		plan_step_done(x, STEP_FAILED, "%s", err);
	else
		plan_step_done(x, st, NULL);
}

static void rel_stage(struct rel_data *d);
static void rel_fail(struct rel_data *d, const char *msg);
static void rel_fetch(struct rel_data *d);

static void cb_output(void *userdata, const char *data, size_t len)
{
	struct rel_data *d = userdata;

	if (d->stage == ST_RESOLVE) {
		if (d->resolved.len + len <= RESOLVE_MAX)
			buf_append(&d->resolved, data, len);
		return;
	}
	plan_step_output(d->x, data, len);
}

static void resolve_done(struct rel_data *d, const struct exec_result *r);

static void cb_child_done(void *userdata, const struct exec_result *r)
{
	struct rel_data *d = userdata;

	const char *what_override = NULL;

	d->proc = NULL;
	if (d->stage == ST_CLEANUP)
		return rel_done(d, STEP_FAILED, d->failure);
	if (d->stage == ST_RESOLVE)
		return resolve_done(d, r);
	if (r->spawn_error || r->timed_out || r->term_signal || r->exit_status != 0) {
		static const char *const what[] = { "resolving", "checkout", "checkout", "bootstrap", "buildout", "pruning" };
		if (d->scm == RELEASE_ARCHIVE && d->stage == ST_CHECKOUT)
			what_override = "unpacking";
		_cleanup_free_ char *why = exec_result_describe(r, d->timeout_sec * 1000);
		_cleanup_free_ char *msg = xasprintf("%s of release %s failed: %s",
						     what_override ? what_override : what[d->stage], d->name, why);
		if (d->stage != ST_SWITCH)
			return rel_fail(d, msg);
		/* Pruning is best effort: the deploy itself worked. */
		log_warn("%s", msg);
	}
	d->stage++;
	rel_stage(d);
}

/* Spawns argv in the directory fd dirfd, as the app user when as_user;
 * pass_fd >= 0 is the child's descriptor 3 (exec_opts.pass_fds). */
static void rel_spawn_fd(struct rel_data *d, int dirfd, char *const *argv, bool as_user, int pass_fd)
{
	/* Commands agentd runs as itself (cp, rm) never get the app's
	 * environment: LD_PRELOAD and friends come from the stack. */
	static char *const plain_env[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
					   "LC_ALL=C", NULL };
	char cwd[64];
	struct exec_opts o = {
		.argv = argv,
		.env = as_user ? d->env : plain_env,
		.user = as_user ? d->user : NULL,
		.timeout_ms = d->timeout_sec * 1000,
		.pass_fds = pass_fd >= 0 ? &pass_fd : NULL,
		.n_pass_fds = pass_fd >= 0 ? 1 : 0,
	};
	int r;

	fd_name(dirfd, cwd, sizeof(cwd));
	o.cwd = cwd;
	r = exec_start(plan_exec_env(d->x)->loop, &o, cb_output, cb_child_done, d, &d->proc);
	if (r < 0) {
		_cleanup_free_ char *msg = xasprintf("could not start %s: %s", argv[0], strerror(-r));
		rel_fail(d, msg);
	} else
		plan_step_spawned(d->x, d->proc);
}

static void rel_spawn(struct rel_data *d, int dirfd, char *const *argv, bool as_user)
{
	rel_spawn_fd(d, dirfd, argv, as_user, -1);
}

static void rel_fail(struct rel_data *d, const char *msg)
{
	char *argv[] = { "rm", "-rf", "--one-file-system", "--", d->name, NULL };

	if (d->stage == ST_SWITCH || d->stage == ST_CLEANUP) /* current was switched already, or cleanup failed */
		return rel_done(d, STEP_FAILED, d->failure ? d->failure : msg);
	d->failure = xstrdup(msg);
	if (d->relfd >= 0) {
		(void)close(d->relfd);
		d->relfd = -1;
	}
	/* The half-made release goes; current and the services were never touched. */
	d->stage = ST_CLEANUP;
	rel_spawn(d, d->rfd, argv, false);
}

static int link_shared(struct rel_data *d, char **ret_error)
{
	for (char **s = d->shared; s && *s; s++) {
		_cleanup_free_ char *target = xasprintf("../../shared/%s", *s);
		struct stat st;

		if (fstatat(d->relfd, *s, &st, AT_SYMLINK_NOFOLLOW) == 0) {
			int flags = S_ISDIR(st.st_mode) ? AT_REMOVEDIR : 0;
			if (unlinkat(d->relfd, *s, flags) < 0) {
				int e = errno;
				*ret_error = xasprintf("release %s has its own %s (%s); shared dirs must not be in the "
						       "code: remove it from the repository",
						       d->name, *s, strerror(e));
				return -e;
			}
		}
		if (symlinkat(target, d->relfd, *s) < 0) {
			int e = errno;
			*ret_error = xasprintf("cannot link %s into release %s: %s", *s, d->name, strerror(e));
			return -e;
		}
		/* The link is given to the user through an fd of the link we
		 * find there: the release is theirs, and the name may no longer
		 * be our link. Only a link that is ours is chowned: one name
		 * (a hard link to someone else's symlink, raced in where
		 * protected_hardlinks is off, has two), owned by root or
		 * agentd (or the user already), with our text. */
		{
			_cleanup_close_ int lfd = openat(d->relfd, *s, O_PATH | O_NOFOLLOW | O_CLOEXEC);
			char text[PATH_MAX];
			ssize_t tl = -1;

			if (lfd >= 0 && fstat(lfd, &st) == 0 && S_ISLNK(st.st_mode) && st.st_nlink == 1 &&
			    (st.st_uid == 0 || st.st_uid == geteuid() || st.st_uid == d->uid))
				tl = readlinkat(lfd, "", text, sizeof(text) - 1);
			if (tl >= 0 && (size_t)tl == strlen(target) && memcmp(text, target, (size_t)tl) == 0)
				(void)fchownat(lfd, "", d->uid, d->gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
		}
	}
	return 0;
}

static int switch_current(struct rel_data *d, char **ret_error)
{
	_cleanup_free_ char *target = xasprintf("releases/%s", d->name);
	char tmp[NAME_MAX + 1];
	int r;

	r = file_write_atomic_at(d->relfd, SOURCE_FILE, d->source_key, strlen(d->source_key), 0600, d->uid, d->gid);
	if (r < 0) {
		*ret_error = xasprintf("cannot record the source of release %s: %s", d->name, strerror(-r));
		return r;
	}
	tmp_name_random("current", tmp, sizeof(tmp));
	if (symlinkat(target, d->dfd, tmp) < 0 || renameat(d->dfd, tmp, d->dfd, "current") < 0) {
		r = -errno;
		(void)unlinkat(d->dfd, tmp, 0);
		*ret_error = xasprintf("cannot switch %s/current: %s", d->deploy_to, strerror(-r));
		return r;
	}
	return 0;
}

/* argv for rm of the oldest releases beyond keep (never the new one), or NULL. */
static char **prune_argv(struct rel_data *d)
{
	char **names = NULL, **argv;
	size_t n = 0, k = 0;

	if (releases_list(d->rfd, &names) < 0)
		return NULL;
	for (size_t i = 0; names[i]; i++) {
		if (strcmp(names[i], d->name) != 0)
			names[n++] = names[i];
		else
			free(names[i]);
	}
	names[n] = NULL;
	if ((long)n < d->keep) {
		strv_free(names);
		return NULL;
	}
	argv = xcalloc(n + 5, sizeof(char *));
	argv[k++] = xstrdup("rm");
	argv[k++] = xstrdup("-rf");
	argv[k++] = xstrdup("--one-file-system");
	argv[k++] = xstrdup("--");
	for (size_t i = 0; i < n; i++) {
		if ((long)(n - i) > d->keep - 1)
			argv[k++] = names[i];
		else
			free(names[i]);
	}
	free(names);
	return argv;
}

static void cb_fetched(void *userdata, const struct http_response *resp)
{
	struct rel_data *d = userdata;
	_cleanup_free_ char *url = http_url_redact(d->repository);
	_cleanup_free_ char *err = NULL;

	d->req = NULL;
	if (resp->error)
		err = xasprintf("fetch of release %s failed: %s", d->name, resp->error);
	else if (resp->status != 200)
		err = xasprintf("fetch of release %s failed: %s answered HTTP %ld", d->name, url, resp->status);
	/* Written by us (root, 0600) into the file we created; tar reads it
	 * as the app user. The owner changes through our fd of it. */
	if (!err && fchown(d->archive_fd, d->uid, d->gid) < 0)
		err = xasprintf("cannot give the archive of release %s to its user: %s", d->name, strerror(errno));
	if (d->archive_fd >= 0) {
		(void)close(d->archive_fd);
		d->archive_fd = -1;
	}
	if (err)
		return rel_fail(d, err);
	{
		_cleanup_free_ char *msg = xasprintf("fetched %s\n", url);
		plan_step_output(d->x, msg, strlen(msg));
	}
	d->stage = ST_CHECKOUT;
	rel_stage(d);
}

/* The archive goes into the new release through our own descriptor of it. */
static void rel_fetch(struct rel_data *d)
{
	char out[96];
	struct http_options o = {
		.url = d->repository,
		.userpwd = d->userpwd,
		.output_path = out,
		.timeout_ms = d->timeout_sec * 1000,
		.max_body = ARCHIVE_MAX,
	};
	int r;

	/* The release is the app user's already: whatever they put under
	 * the archive's name (a symlink to /etc/shadow) is removed, the
	 * file is created exclusively, and the download reopens exactly
	 * that file through its fd, never the name. */
	r = rootfs_create_file_at(d->relfd, ARCHIVE_FILE, 0600);
	if (r < 0) {
		_cleanup_free_ char *err = xasprintf("cannot create the archive of release %s: %s", d->name,
						     strerror(-r));
		return rel_fail(d, err);
	}
	d->archive_fd = r;
	(void)snprintf(out, sizeof(out), "/proc/self/fd/%d", d->archive_fd);
	r = http_request_start(plan_exec_env(d->x)->http, &o, cb_fetched, d, &d->req);
	if (r < 0) {
		_cleanup_free_ char *err = xasprintf("cannot fetch release %s: %s", d->name, strerror(-r));
		rel_fail(d, err);
	}
}

/* Whether the release has its own bin/buildout, a regular file. The
 * release is the app user's: nothing in it is followed (a link planted as
 * bin or bin/buildout would have root stat a path of the user's choosing),
 * so a link counts as none and bootstrap (as the user) makes one. */
static bool has_buildout(int relfd)
{
	_cleanup_close_ int bin = openat(relfd, "bin", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct stat st;

	return bin >= 0 && fstatat(bin, "buildout", &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

static void rel_stage(struct rel_data *d)
{
	_cleanup_free_ char *err = NULL;
	int r;

	switch (d->stage) {
	case ST_RESOLVE: /* handled by resolve_done() */
		return rel_done(d, STEP_FAILED, "internal error: release stage");
	case ST_CLONE:
		if (d->scm == RELEASE_GIT) {
			char *argv[] = { "git", "clone", "--quiet", "--no-checkout", "--", d->repository, ".", NULL };
			return rel_spawn(d, d->relfd, argv, true);
		}
		if (d->scm == RELEASE_LOCAL) {
			/* cp runs as the app user, in the release (theirs
			 * already), reading the source through descriptor 3:
			 * the source may be a tree the user owns, and root's
			 * cp would read through links the user swaps in there
			 * (sub -> a root-only directory) and leave what it
			 * read in the user's release. As the user it reads
			 * only what the user could read anyway. "/." so that
			 * cp follows the magic link to the directory. */
			_cleanup_close_ int rootfd = rootfs_open(d->root);
			_cleanup_close_ int src = rootfd < 0 ? rootfd : rootfs_resolve(rootfd, d->repository, true);
			char *argv[] = { "cp", "-a", "-T", "--", "/proc/self/fd/3/.", ".", NULL };

			if (src < 0) {
				err = xasprintf("cannot open the source directory %s: %s", d->repository,
						rootfs_strerror(src));
				return rel_fail(d, err);
			}
			d->stage = ST_CHECKOUT; /* cp is the whole checkout */
			return rel_spawn_fd(d, d->relfd, argv, true, src);
		}
		if (d->scm == RELEASE_ARCHIVE)
			return rel_fetch(d);
		d->stage = ST_CHECKOUT;
		/* fall through */
	case ST_CHECKOUT:
		if (d->scm == RELEASE_ARCHIVE) {
			/* GNU tar refuses members with ".." and strips leading "/". */
			char *argv[] = { "tar", "-xzf", ARCHIVE_FILE, "--no-same-owner", "--no-same-permissions", NULL };
			return rel_spawn(d, d->relfd, argv, true);
		}
		if (d->scm == RELEASE_GIT) {
			/* A branch, tag or commit; a remote branch gets a local tracking branch. */
			char *argv[] = { "git", "-c", "advice.detachedHead=false", "checkout", "--quiet",
					 d->commit ? d->commit : d->revision ? d->revision : "HEAD", "--", NULL };
			return rel_spawn(d, d->relfd, argv, true);
		}
		d->stage = ST_PREPARE;
		/* fall through */
	case ST_PREPARE:
		if (d->scm == RELEASE_ARCHIVE)
			(void)unlinkat(d->relfd, ARCHIVE_FILE, 0);
		/* The code is there: shared dirs and deploy.cfg go in before the build. */
		if (link_shared(d, &err) < 0)
			return rel_fail(d, err);
		r = file_write_atomic_at(d->relfd, "deploy.cfg", d->deploy_cfg, strlen(d->deploy_cfg), 0600, d->uid,
					 d->gid);
		if (r < 0) {
			err = xasprintf("cannot write deploy.cfg in release %s: %s", d->name, strerror(-r));
			return rel_fail(d, err);
		}
		if (d->bootstrap_argv && !has_buildout(d->relfd))
			return rel_spawn(d, d->relfd, d->bootstrap_argv, true);
		d->stage = ST_BUILD;
		/* fall through */
	case ST_BUILD:
		if (d->build_argv)
			return rel_spawn(d, d->relfd, d->build_argv, true);
		d->stage = ST_SWITCH;
		/* fall through */
	case ST_SWITCH: {
		char **argv;

		if (switch_current(d, &err) < 0)
			return rel_fail(d, err);
		argv = prune_argv(d);
		if (argv) {
			rel_spawn(d, d->rfd, argv, false);
			strv_free(argv);
			return;
		}
		d->stage = ST_FINISHED;
	}
		/* fall through */
	case ST_FINISHED:
		return rel_done(d, STEP_CHANGED, NULL);
	case ST_CLEANUP:
		return rel_done(d, STEP_FAILED, d->failure);
	}
}

static void release_name(int rfd, char *out, size_t n)
{
	time_t t = time(NULL);
	struct tm tm;
	struct stat st;

	/* UTC timestamps sort by time; two deploys in one second get the next second. */
	for (int i = 0; i < 3600; i++, t++) {
		gmtime_r(&t, &tm);
		(void)strftime(out, n, "%Y%m%d%H%M%S", &tm);
		if (fstatat(rfd, out, &st, AT_SYMLINK_NOFOLLOW) < 0 && errno == ENOENT)
			return;
	}
}

/* A full commit id needs no resolving; a branch, a tag or nothing (HEAD) does. */
static bool needs_resolve(const struct rel_data *d)
{
	size_t n = d->revision ? strlen(d->revision) : 0;

	if (d->scm != RELEASE_GIT)
		return false;
	if (n == 40 && strspn(d->revision, "0123456789abcdef") == 40)
		return false;
	return true;
}

/* The commit of ref in ls-remote output ("<sha>\t<ref>\n"...): a branch
 * first, then a tag, then HEAD; NULL when nothing matches (an abbreviated
 * commit id, which the checkout resolves itself). */
static char *pick_commit(const char *out, const char *rev)
{
	static const char *const prefixes[] = { "refs/heads/", "refs/tags/", "" };

	for (size_t p = 0; p < ELEMENTSOF(prefixes); p++)
		for (const char *line = out; line && *line;) {
			const char *nl = strchr(line, '\n');
			size_t len = nl ? (size_t)(nl - line) : strlen(line);
			const char *tab = memchr(line, '\t', len);

			if (tab && tab - line == 40 && strspn(line, "0123456789abcdef") >= 40) {
				_cleanup_free_ char *want = xasprintf("%s%s", prefixes[p], rev);
				size_t rl = len - (size_t)(tab + 1 - line);
				if (rl == strlen(want) && memcmp(tab + 1, want, rl) == 0)
					return xstrndup(line, 40);
			}
			line = nl ? nl + 1 : NULL;
		}
	return NULL;
}

static void apply_continue(struct rel_data *d)
{
	_cleanup_free_ char *err = NULL, *cur = NULL;
	int r;

	cur = current_source(d->dfd);
	if (cur && strcmp(cur, d->source_key) == 0)
		return rel_done(d, STEP_UNCHANGED, NULL);
	r = user_lookup(d->user, &d->uid, NULL);
	if (r >= 0)
		r = group_lookup(d->group, &d->gid);
	if (r < 0) {
		err = xasprintf("unknown user %s or group %s", d->user, d->group);
		return rel_done(d, STEP_FAILED, err);
	}
	release_name(d->rfd, d->name, sizeof(d->name));
	if (mkdirat(d->rfd, d->name, 0755) < 0) {
		err = xasprintf("cannot create release %s/releases/%s: %s", d->deploy_to, d->name, strerror(errno));
		return rel_done(d, STEP_FAILED, err);
	}
	d->relfd = openat(d->rfd, d->name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (d->relfd < 0) {
		err = xasprintf("cannot open release %s: %s", d->name, strerror(errno));
		return rel_done(d, STEP_FAILED, err);
	}
	/* git, tar and cp run as the app user, in the release: it is theirs
	 * from the start. */
	if (fchownat(d->relfd, "", d->uid, d->gid, AT_EMPTY_PATH) < 0)
		log_warn("cannot give release %s to %s: %m", d->name, d->user);
	{
		_cleanup_free_ char *msg = d->commit ? xasprintf("new release %s/releases/%s (commit %s)\n", d->deploy_to,
								 d->name, d->commit)
						     : xasprintf("new release %s/releases/%s\n", d->deploy_to, d->name);
		plan_step_output(d->x, msg, strlen(msg));
	}
	d->stage = ST_CLONE;
	rel_stage(d);
}

static void resolve_done(struct rel_data *d, const struct exec_result *r)
{
	const char *rev = d->revision ? d->revision : "HEAD";

	if (r->spawn_error || r->timed_out || r->term_signal || r->exit_status != 0) {
		_cleanup_free_ char *why = exec_result_describe(r, d->timeout_sec * 1000);
		_cleanup_free_ char *msg = xasprintf("cannot look up revision %s in the repository: %s", rev, why);
		if (d->resolved.len) /* git's own message */
			plan_step_output(d->x, d->resolved.data, d->resolved.len);
		return rel_done(d, STEP_FAILED, msg);
	}
	d->commit = pick_commit(d->resolved.data ? d->resolved.data : "", rev);
	if (d->commit) {
		/* The recorded source names the commit, so a branch that moved
		 * is a new release and one that did not is no change. */
		char *key = xasprintf("%s\ncommit %s\n", d->source_key, d->commit);
		free(d->source_key);
		d->source_key = key;
	}
	apply_continue(d);
}

static void rel_apply(struct step *s, struct plan_exec *x)
{
	struct rel_data *d = s->data;
	_cleanup_free_ char *err = NULL;

	d->x = x;
	free(d->failure);
	d->failure = NULL;
	d->dfd = d->rfd = d->relfd = d->archive_fd = -1;
	if (open_dirs(d, &err) < 0)
		return rel_done(d, STEP_FAILED, err);
	if (needs_resolve(d)) {
		/* Where the branch or tag points now: stdout only, no progress. */
		char *argv[] = { "git", "ls-remote", "--", d->repository, d->revision ? d->revision : "HEAD", NULL };
		d->stage = ST_RESOLVE;
		buf_free(&d->resolved);
		buf_init(&d->resolved);
		return rel_spawn(d, d->dfd, argv, true);
	}
	apply_continue(d);
}

static void rel_cancel(struct step *s)
{
	struct rel_data *d = s->data;

	if (d->proc)
		exec_terminate(d->proc);
	if (d->req) {
		http_request_cancel(d->req);
		d->req = NULL;
		rel_fail(d, "cancelled");
	}
}

static int rel_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			char **ret_error)
{
	struct rel_data *d = s->data;
	_cleanup_close_ int rootfd = rootfs_open(d->root);
	_cleanup_close_ int dfd = rootfd < 0 ? -1 : rootfs_resolve(rootfd, d->deploy_to, true);
	_cleanup_free_ char *cur = dfd < 0 ? NULL : current_source(dfd);

	/* For git the recorded source also names the commit, which only the
	 * run looks up (a fork): the same scm counts as converged here. */
	*ret_action = cur && strncmp(cur, d->source_key, strlen(d->source_key)) == 0 &&
				      (cur[strlen(d->source_key)] == '\0' ||
				       strncmp(cur + strlen(d->source_key), "\ncommit ", 8) == 0)
			      ? "none"
			      : "deploy";
	return 0;
}

static const struct step_ops release_ops = {
	.kind = "release",
	.describe = rel_describe,
	.apply = rel_apply,
	.cancel = rel_cancel,
	.free_data = rel_free,
};

struct step *plan_add_release(struct plan *p, const struct release_step_opts *o, char **ret_error)
{
	struct rel_data *d;

	if (!o->deploy_to || !path_is_safe_absolute(o->deploy_to) || !o->repository || !o->source_key) {
		*ret_error = xstrdup("release step without a deploy_to, repository or source");
		return NULL;
	}
	d = xcalloc(1, sizeof(*d));
	d->deploy_to = xstrdup(o->deploy_to);
	d->scm = o->scm;
	d->repository = xstrdup(o->repository);
	d->revision = o->revision ? xstrdup(o->revision) : NULL;
	d->userpwd = o->userpwd ? xstrdup(o->userpwd) : NULL;
	d->source_key = xstrdup(o->source_key);
	d->user = xstrdup(o->user);
	d->group = xstrdup(o->group);
	d->deploy_cfg = xstrdup(o->deploy_cfg ? o->deploy_cfg : "");
	d->shared = strv_dup(o->shared);
	d->bootstrap_argv = strv_dup(o->bootstrap_argv);
	d->build_argv = strv_dup(o->build_argv);
	d->env = strv_dup(o->env);
	d->keep = o->keep > 0 ? o->keep : 5;
	d->timeout_sec = o->timeout_sec;
	d->root = xstrdup(p->root);
	d->dfd = d->rfd = d->relfd = d->archive_fd = -1;
	return plan_add(p, &release_ops, o->deploy_to, d);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* Step "ec2_snapshot"; see step_ec2_snapshot.h. One state machine on the
 * loop: credentials and region, then per volume: list, (freeze,) create,
 * (thaw,) delete one by one; every EC2 call through io/ec2.c. */
#include "step_ec2_snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "io/ec2.h"
#include "io/exec.h"
#include "log.h"
#include "plan.h"
#include "rootfs.h"
#include "strv.h"
#include "util.h"

#define JOB "ebs_snapshots"
#define EXT4_MAGIC 0xEF53
#define XFS_MAGIC 0x58465342
#define DESCRIBE_PAGE "1000" /* MaxResults: EC2 allows 5..1000 */
/* Pages of one volume's listing before giving up: 1000 pages of 1000 are
 * far beyond any volume's snapshots; an endpoint that keeps answering a
 * nextToken (the same one, or a cycle) must not hold the run until
 * run_timeout. */
#define DESCRIBE_PAGES_MAX 1000

struct vol {
	char *volume_id, *device, *mount_point; /* owned; volume_id may be NULL until found */
};

struct snap_step {
	struct vol *vols;          /* owned */
	size_t n_vols;
	char *hostname, *stack_name, *region, *endpoint, *imds;
	char *aws_key, *aws_secret; /* owned; secret never printed */
	char **fsfreeze_argv;
	long keep, freeze_timeout_sec, backoff_min_ms;
	bool freeze;

	/* While running. */
	struct plan_exec *x;       /* borrowed */
	struct step *self;         /* borrowed: its no_retry is set on a permanent failure */
	struct ec2_creds creds;    /* owned */
	char *run_region, *run_endpoint; /* owned */
	struct ec2_imds *imds_req;
	struct ec2_call *call;
	size_t cur;                /* volume being handled */
	struct ec2_snapshots list; /* of the current volume */
	char *next_token;
	size_t *doomed;            /* indexes into list to delete */
	size_t n_doomed, next_doomed;
	struct freeze *fz;         /* NULL when not frozen */
	bool changed, cancelled;
	bool permanent;            /* EC2 refused the credentials or the action: retrying cannot help */
	unsigned created, deleted, skipped;
	unsigned pages;            /* DescribeSnapshots pages of the current volume */
	struct buf failures;       /* one sentence per failed volume */
};

/* A freeze: its child and the descriptor FITHAW goes through. Lives on its
 * own: a child stuck in FIFREEZE (D state) may outlive the step, and must
 * still be reaped and thawed after. */
struct freeze {
	int fd;                    /* the mount point, O_RDONLY */
	char *path;                /* owned: as the kernel names it */
	struct exec *proc;         /* borrowed while the child runs */
	uv_timer_t *timer;         /* owned until closed: the deadline */
	struct snap_step *d;       /* NULL once the step let go */
	bool frozen, thawed, deadline_passed;
	int64_t started;
	char *journal;             /* owned, NULL: none; state_dir/freeze/<hash>, holding path until thawed */
};

#define FREEZE_DIR "freeze"

static void out(struct snap_step *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* state_dir/freeze/<hash of path>: the mount point a freeze is under way
 * on, for ec2_snapshot_thaw_left() after a kill -9. NULL when there is no
 * state_dir (plans, tests) or it cannot be written (said in the output:
 * the freeze still has its deadline; only a crash would go unthawed). */
static char *freeze_journal_write(struct snap_step *d, const char *state_dir, const char *path)
{
	_cleanup_free_ char *dir = NULL, *file = NULL;
	int r;

	if (!state_dir)
		return NULL;
	dir = xasprintf("%s/%s", state_dir, FREEZE_DIR);
	file = xasprintf("%s/%016llx", dir, (unsigned long long)hash_fnv1a64(path, strlen(path), HASH_FNV_SEED));
	if ((r = mkdir_p(dir, 0700)) < 0 || (r = file_write_atomic(file, path, strlen(path), 0600, 0, 0)) < 0) {
		out(d, "freeze: cannot record the freeze in %s (%s): a crash meanwhile would leave %s frozen", dir,
		    strerror(-r), path);
		return NULL;
	}
	{
		char *ret = file;

		file = NULL;
		return ret;
	}
}

void ec2_snapshot_thaw_left(const char *state_dir)
{
	_cleanup_free_ char *dir = xasprintf("%s/%s", state_dir, FREEZE_DIR);
	DIR *dh = opendir(dir);
	struct dirent *de;

	if (!dh)
		return;
	while ((de = readdir(dh))) {
		_cleanup_free_ char *file = NULL, *path = NULL;
		size_t len = 0;
		int fd;

		if (de->d_name[0] == '.')
			continue;
		file = xasprintf("%s/%s", dir, de->d_name);
		if (file_read_all(file, 4096, &path, &len) < 0 || !path || path[0] != '/' || strlen(path) != len) {
			log_warn("freeze: %s is not a freeze record; removed", file);
			(void)unlink(file);
			continue;
		}
		fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (fd < 0)
			log_warn("freeze: cannot open %s to thaw it: %s", path, strerror(errno));
		else if (ioctl(fd, FITHAW, 0) == 0)
			log_warn("freeze: thawed %s, left frozen by an agentd stopped during a snapshot", path);
		else if (errno != EINVAL)
			log_warn("freeze: FITHAW on %s failed: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		(void)unlink(file);
	}
	closedir(dh);
}

static void out(struct snap_step *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out(struct snap_step *d, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	if (s && d->x) {
		plan_step_output(d->x, s, strlen(s));
		plan_step_output(d->x, "\n", 1);
	}
	free(s);
}

static void snap_free(void *data)
{
	struct snap_step *d = data;

	if (!d)
		return;
	for (size_t i = 0; i < d->n_vols; i++) {
		free(d->vols[i].volume_id);
		free(d->vols[i].device);
		free(d->vols[i].mount_point);
	}
	free(d->vols);
	free(d->hostname);
	free(d->stack_name);
	free(d->region);
	free(d->endpoint);
	free(d->imds);
	free(d->aws_key);
	if (d->aws_secret)
		explicit_bzero(d->aws_secret, strlen(d->aws_secret));
	free(d->aws_secret);
	strv_free(d->fsfreeze_argv);
	free(d);
}

size_t ec2_snapshot_prune_pick(const struct ec2_snapshot *v, size_t n, const char *stack, const char *job, long keep,
			       size_t **ret)
{
	size_t *idx = xcalloc(n + 1, sizeof(size_t)), m = 0, del;

	for (size_t i = 0; i < n; i++) {
		const char *ts = ec2_snapshot_tag(&v[i], "agentd:stack"), *tj = ec2_snapshot_tag(&v[i], "agentd:job");
		if (strcmp(v[i].state, "completed") == 0 && ts && tj && strcmp(ts, stack) == 0 && strcmp(tj, job) == 0 &&
		    v[i].start >= 0)
			idx[m++] = i;
	}
	/* Oldest first (insertion sort: a volume has tens of snapshots). */
	for (size_t i = 1; i < m; i++)
		for (size_t j = i; j > 0 && v[idx[j]].start < v[idx[j - 1]].start; j--) {
			size_t t = idx[j];
			idx[j] = idx[j - 1];
			idx[j - 1] = t;
		}
	del = m + 1 > (size_t)keep ? m + 1 - (size_t)keep : 0;
	*ret = idx;
	return del;
}

/* ---- Freeze. */

static void on_timer_closed(uv_handle_t *h)
{
	free(h);
}

static void freeze_thaw(struct freeze *f, const char *why)
{
	int r = ioctl(f->fd, FITHAW, 0);

	/* EINVAL: not frozen (the child never got there, or already thawed). */
	if (r < 0 && errno != EINVAL && f->d)
		out(f->d, "freeze: FITHAW on %s failed: %s", f->path, strerror(errno));
	else if (f->d && f->frozen && !f->thawed)
		out(f->d, "freeze: %s thawed %s after %.1f s", f->path, why,
		    (double)(time_monotonic_usec() - f->started) / 1e6);
	f->thawed = true;
}

static void freeze_release(struct freeze *f)
{
	if (f->proc)
		return; /* the child's done frees it */
	if (f->timer) {
		uv_timer_stop(f->timer);
		uv_close((uv_handle_t *)f->timer, on_timer_closed);
	}
	close(f->fd);
	if (f->journal && f->thawed)
		(void)unlink(f->journal);
	free(f->journal);
	free(f->path);
	free(f);
}

static void vol_created(struct snap_step *d);
static void vol_fail(struct snap_step *d, const char *action, const char *error, bool stop);
static void create_start(struct snap_step *d);

/* The step is done with the freeze: thaw now, and let the child (if it
 * still runs) be reaped and the thaw repeated by itself. */
static void freeze_end(struct snap_step *d, const char *why)
{
	struct freeze *f = d->fz;

	if (!f)
		return;
	d->fz = NULL;
	freeze_thaw(f, why);
	f->d = NULL;
	if (f->proc)
		exec_terminate(f->proc);
	freeze_release(f);
}

static void on_freeze_output(void *userdata, const char *data, size_t len)
{
	struct freeze *f = userdata;

	if (f->d && f->d->x)
		plan_step_output(f->d->x, data, len);
}

static void on_freeze_done(void *userdata, const struct exec_result *r)
{
	struct freeze *f = userdata;
	struct snap_step *d = f->d;

	f->proc = NULL;
	if (!d) {
		/* Killed at the deadline, but FIFREEZE may have completed
		 * before the kill took: thaw again. */
		freeze_thaw(f, "again once the freeze child ended");
		freeze_release(f);
		return;
	}
	if (r->spawn_error || r->term_signal || r->exit_status != 0) {
		_cleanup_free_ char *why = exec_result_describe(r, 0), *msg = NULL;
		msg = xasprintf("freeze of %s: %s %s", f->path, d->fsfreeze_argv[0], why);
		freeze_end(d, "after the failed freeze");
		return vol_fail(d, "freeze", msg, false);
	}
	f->frozen = true;
	out(d, "freeze: %s frozen", f->path);
	create_start(d);
}

static void on_freeze_deadline(uv_timer_t *t)
{
	struct freeze *f = t->data;
	struct snap_step *d = f->d;
	_cleanup_free_ char *msg = NULL;

	f->deadline_passed = true;
	if (!d)
		return;
	msg = xasprintf("freeze of %s: %s did not complete within freeze_timeout (%ld s); thawed at the deadline%s",
			f->path, f->frozen ? "CreateSnapshot" : "the freeze", d->freeze_timeout_sec,
			f->frozen ? " (the snapshot may still be made, without the freeze's consistency)" : "");
	if (d->call) {
		ec2_call_cancel(d->call);
		d->call = NULL;
	}
	freeze_end(d, "at the deadline");
	vol_fail(d, "CreateSnapshot", msg, false);
}

/* Whether the file system of dev holds agentd's own state_dir, log_dir or
 * metrics file (said in the output): agentd writes there during the run
 * (its run log), so a freeze would block agentd itself in write(2), with
 * the deadline's thaw on the same blocked loop. */
static bool holds_own_files(struct snap_step *d, const char *mp, dev_t dev)
{
	const struct step_env *env = plan_exec_env(d->x);
	_cleanup_free_ char *mdir = env->metrics_file ? xstrdup(env->metrics_file) : NULL;
	char *slash = mdir ? strrchr(mdir, '/') : NULL;
	const char *which[] = { "state_dir", "log_dir", "metrics_file directory" };
	const char *paths[] = { env->state_dir, env->log_dir, mdir };
	struct stat st;

	if (slash)
		*(slash == mdir ? slash + 1 : slash) = '\0';
	for (size_t i = 0; i < ELEMENTSOF(paths); i++)
		if (paths[i] && stat(paths[i], &st) == 0 && st.st_dev == dev) {
			out(d, "freeze: %s holds agentd's %s (%s): snapshot without a freeze", mp, which[i], paths[i]);
			return true;
		}
	return false;
}

/* Whether the current volume gets frozen, and its freeze started. Returns
 * 1 when the freeze is under way (create follows), 0 when there is nothing
 * to freeze (said in the output), or a negative errno with the volume failed. */
static int freeze_start(struct snap_step *d)
{
	const struct vol *v = &d->vols[d->cur];
	_cleanup_close_ int rootfd = -1, pfd = -1;
	char proc[64], buf[PATH_MAX];
	struct stat st, host_root;
	struct statx stx;
	struct statfs sfs;
	struct freeze *f;
	ssize_t n;
	int fd;

	if (!d->freeze || !v->mount_point)
		return 0;
	if (strcmp(v->mount_point, "/") == 0) {
		out(d, "freeze: \"/\" is never frozen; snapshot without a freeze");
		return 0;
	}
	rootfd = rootfs_open(plan_exec_env(d->x)->root);
	pfd = rootfd >= 0 ? rootfs_resolve_private(rootfd, v->mount_point, true) : rootfd;
	if (pfd < 0) {
		out(d, "freeze: %s: %s; snapshot without a freeze", v->mount_point, rootfs_strerror(pfd));
		return 0;
	}
	if (statx(pfd, "", AT_EMPTY_PATH, STATX_BASIC_STATS, &stx) < 0 || fstat(pfd, &st) < 0 || stat("/", &host_root) < 0)
		return -errno;
	if (!(stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) || !(stx.stx_attributes & STATX_ATTR_MOUNT_ROOT)) {
		out(d, "freeze: %s is not mounted; snapshot without a freeze", v->mount_point);
		return 0;
	}
	if (st.st_dev == host_root.st_dev && st.st_ino == host_root.st_ino) {
		out(d, "freeze: %s is the system's \"/\", never frozen; snapshot without a freeze", v->mount_point);
		return 0;
	}
	if (holds_own_files(d, v->mount_point, st.st_dev))
		return 0;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
	n = readlink(proc, buf, sizeof(buf) - 1);
	fd = open(proc, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (n < 0 || fd < 0) {
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	buf[n] = '\0';
	if (fstatfs(fd, &sfs) < 0 || (sfs.f_type != EXT4_MAGIC && sfs.f_type != XFS_MAGIC)) {
		out(d, "freeze: %s is not ext4 or xfs; snapshot without a freeze", v->mount_point);
		close(fd);
		return 0;
	}
	f = xcalloc(1, sizeof(*f));
	f->fd = fd;
	f->path = xstrdup(buf);
	f->d = d;
	f->started = time_monotonic_usec();
	f->journal = freeze_journal_write(d, plan_exec_env(d->x)->state_dir, f->path);
	d->fz = f;
	f->timer = xcalloc(1, sizeof(*f->timer));
	(void)uv_timer_init(plan_exec_env(d->x)->loop, f->timer);
	f->timer->data = f;
	(void)uv_timer_start(f->timer, on_freeze_deadline, (uint64_t)d->freeze_timeout_sec * 1000, 0);

	size_t na = strv_length((const char *const *)d->fsfreeze_argv);
	_cleanup_free_ char **argv = xcalloc(na + 3, sizeof(char *));
	static char *const env[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL };
	for (size_t i = 0; i < na; i++)
		argv[i] = d->fsfreeze_argv[i];
	argv[na] = "--freeze";
	argv[na + 1] = f->path;
	struct exec_opts o = { .argv = argv, .env = env, .kill_after_ms = 1000 };
	int r = exec_start(plan_exec_env(d->x)->loop, &o, on_freeze_output, on_freeze_done, f, &f->proc);
	if (r < 0) {
		f->proc = NULL;
		freeze_end(d, "after the failed freeze");
		return r;
	}
	return 1;
}

/* ---- The volumes. */

static void step_finish(struct snap_step *d)
{
	struct plan_exec *x = d->x;
	bool failed = d->failures.len > 0;

	out(d, "ebs_snapshots: %u created, %u deleted, %u volume%s skipped", d->created, d->deleted, d->skipped,
	    d->skipped == 1 ? "" : "s");
	d->x = NULL;
	ec2_creds_clear(&d->creds);
	free(d->run_region);
	free(d->run_endpoint);
	d->run_region = d->run_endpoint = NULL;
	ec2_snapshots_free(&d->list);
	free(d->next_token);
	d->next_token = NULL;
	free(d->doomed);
	d->doomed = NULL;
	if (failed) {
		_cleanup_free_ char *msg = buf_steal(&d->failures);
		if (d->permanent && d->self)
			d->self->no_retry = true;
		plan_step_done(x, STEP_FAILED, "%s", msg);
	} else
		plan_step_done(x, d->changed ? STEP_CHANGED : STEP_UNCHANGED, NULL);
}

static void vol_start(struct snap_step *d);

static void vol_next(struct snap_step *d)
{
	ec2_snapshots_free(&d->list);
	free(d->next_token);
	d->next_token = NULL;
	free(d->doomed);
	d->doomed = NULL;
	d->n_doomed = d->next_doomed = 0;
	d->pages = 0;
	d->cur++;
	vol_start(d);
}

/* A failure of the current volume; stop: no other volume is tried
 * (credentials refused: the others would fail alike). */
static void vol_fail(struct snap_step *d, const char *action, const char *error, bool stop)
{
	const struct vol *v = &d->vols[d->cur];

	buf_printf(&d->failures, "%svolume %s (%s): %s", d->failures.len ? "; " : "",
		   v->volume_id ? v->volume_id : "?", v->device ? v->device : "no device", error);
	(void)action;
	if (stop || d->cancelled) {
		d->cur = d->n_vols;
		return step_finish(d);
	}
	vol_next(d);
}

/* Whether an error stops every volume (the others would fail alike). A
 * refusal of the credentials or of the account (EC2 API reference, "Error
 * codes": AuthFailure, UnauthorizedOperation, ...) is also permanent: no
 * retry before the next due time (d->permanent). ExpiredToken and
 * RequestExpired are not: fresh role credentials or a set clock fix them. */
static bool stops_everything(struct snap_step *d, const struct ec2_reply *r)
{
	static const char *const permanent[] = { "AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId",
						 "SignatureDoesNotMatch", "OptInRequired", "Blocked",
						 "PendingVerification", NULL };

	if (r->r == -EIO)
		return true; /* the endpoint is not there */
	if (!r->code)
		return false;
	for (size_t i = 0; permanent[i]; i++)
		if (strncmp(r->code, permanent[i], strlen(permanent[i])) == 0) {
			d->permanent = true;
			return true;
		}
	return strcmp(r->code, "ExpiredToken") == 0 || strcmp(r->code, "RequestExpired") == 0;
}

static int call(struct snap_step *d, const char *action, const char *form, ec2_done_cb cb)
{
	struct ec2_target t = { .endpoint = d->run_endpoint, .region = d->run_region, .creds = &d->creds,
				.backoff_min_ms = d->backoff_min_ms };

	return ec2_call(plan_exec_env(d->x)->loop, plan_exec_env(d->x)->http, &t, action, form, cb, d, &d->call);
}

static void delete_next(struct snap_step *d);

static void on_delete(void *userdata, const struct ec2_reply *r)
{
	struct snap_step *d = userdata;
	const struct ec2_snapshot *s = &d->list.v[d->doomed[d->next_doomed]];

	d->call = NULL;
	if (r->r == 0) {
		out(d, "%s: deleted %s of %s", d->vols[d->cur].volume_id, s->id, s->start_time);
		d->deleted++;
		d->changed = true;
	} else if (r->code && strcmp(r->code, "InvalidSnapshot.InUse") == 0) {
		out(d, "%s: kept %s of %s: in use (InvalidSnapshot.InUse: %s)", d->vols[d->cur].volume_id, s->id,
		    s->start_time, r->message ? r->message : "");
	} else if (r->code && strcmp(r->code, "InvalidSnapshot.NotFound") == 0) {
		out(d, "%s: %s was already gone", d->vols[d->cur].volume_id, s->id);
	} else {
		_cleanup_free_ char *msg = xasprintf("%s of %s: %s", "DeleteSnapshot", s->id, r->error);
		return vol_fail(d, "DeleteSnapshot", msg, stops_everything(d, r));
	}
	d->next_doomed++;
	delete_next(d);
}

static void delete_next(struct snap_step *d)
{
	struct buf form;
	int r;

	if (d->cancelled)
		return vol_fail(d, "DeleteSnapshot", "cancelled", true);
	if (d->next_doomed >= d->n_doomed)
		return vol_next(d);
	buf_init(&form);
	ec2_form_add(&form, "SnapshotId", d->list.v[d->doomed[d->next_doomed]].id);
	r = call(d, "DeleteSnapshot", form.data, on_delete);
	buf_free(&form);
	if (r < 0)
		vol_fail(d, "DeleteSnapshot", strerror(-r), true);
}

static void vol_created(struct snap_step *d)
{
	const struct vol *v = &d->vols[d->cur];

	d->n_doomed = ec2_snapshot_prune_pick(d->list.v, d->list.n, d->stack_name, JOB, d->keep, &d->doomed);
	d->next_doomed = 0;
	if (d->n_doomed)
		out(d, "%s: %zu snapshot%s beyond keep %ld", v->volume_id, d->n_doomed, d->n_doomed == 1 ? "" : "s",
		    d->keep);
	delete_next(d);
}

static void on_create(void *userdata, const struct ec2_reply *r)
{
	struct snap_step *d = userdata;
	_cleanup_free_ char *id = NULL, *err = NULL;

	d->call = NULL;
	freeze_end(d, "once CreateSnapshot returned");
	if (r->r < 0)
		return vol_fail(d, "CreateSnapshot", r->error, stops_everything(d, r));
	if (ec2_parse_create_snapshot(r->body, r->body_len, &id, &err) < 0) {
		_cleanup_free_ char *msg = xasprintf("CreateSnapshot: %s", err);
		return vol_fail(d, "CreateSnapshot", msg, false);
	}
	out(d, "%s: created %s", d->vols[d->cur].volume_id, id);
	d->created++;
	d->changed = true;
	vol_created(d);
}

static void create_start(struct snap_step *d)
{
	const struct vol *v = &d->vols[d->cur];
	const char *dev = v->device ? v->device : v->volume_id;
	_cleanup_free_ char *desc = xasprintf("%s: automated snapshot of %s (%s)", d->hostname, dev, v->volume_id);
	_cleanup_free_ char *name = xasprintf("%s (%s)", d->hostname, dev);
	const char *tags[][2] = { { "Name", name }, { "Hostname", d->hostname }, { "agentd:stack", d->stack_name },
				  { "agentd:job", JOB } };
	struct buf form;
	int r;

	buf_init(&form);
	ec2_form_add(&form, "VolumeId", v->volume_id);
	ec2_form_add(&form, "Description", desc);
	ec2_form_add(&form, "TagSpecification.1.ResourceType", "snapshot");
	for (size_t i = 0; i < ELEMENTSOF(tags); i++) {
		char k[64];
		snprintf(k, sizeof(k), "TagSpecification.1.Tag.%zu.Key", i + 1);
		ec2_form_add(&form, k, tags[i][0]);
		snprintf(k, sizeof(k), "TagSpecification.1.Tag.%zu.Value", i + 1);
		ec2_form_add(&form, k, tags[i][1]);
	}
	r = call(d, "CreateSnapshot", form.data, on_create);
	buf_free(&form);
	if (r < 0) {
		freeze_end(d, "after the failed request");
		vol_fail(d, "CreateSnapshot", strerror(-r), true);
	}
}

static void describe_page(struct snap_step *d);

static void on_describe(void *userdata, const struct ec2_reply *r)
{
	struct snap_step *d = userdata;
	const struct vol *v = &d->vols[d->cur];
	_cleanup_free_ char *err = NULL;
	int k;

	_cleanup_free_ char *sent = d->next_token; /* the token this page was asked with */

	d->call = NULL;
	d->next_token = NULL;
	if (r->r < 0)
		return vol_fail(d, "DescribeSnapshots", r->error, stops_everything(d, r));
	if ((k = ec2_parse_snapshots(r->body, r->body_len, &d->list, &d->next_token, &err)) < 0) {
		_cleanup_free_ char *msg = xasprintf("DescribeSnapshots: %s", err);
		return vol_fail(d, "DescribeSnapshots", msg, false);
	}
	if (d->next_token && sent && strcmp(d->next_token, sent) == 0)
		return vol_fail(d, "DescribeSnapshots",
				"DescribeSnapshots: the endpoint answered the same nextToken again (pagination would "
				"never end); nothing deleted",
				false);
	if (d->next_token && ++d->pages >= DESCRIBE_PAGES_MAX) {
		_cleanup_free_ char *msg = xasprintf("DescribeSnapshots: still a nextToken after %d pages "
						     "(DESCRIBE_PAGES_MAX); nothing deleted",
						     DESCRIBE_PAGES_MAX);
		return vol_fail(d, "DescribeSnapshots", msg, false);
	}
	if (d->next_token)
		return describe_page(d);
	/* Listed by volume id, but filtered here too: the listing is what
	 * the prune acts on. */
	for (size_t i = 0; i < d->list.n; i++) {
		if (d->list.v[i].volume_id && strcmp(d->list.v[i].volume_id, v->volume_id) != 0) {
			_cleanup_free_ char *msg =
				xasprintf("DescribeSnapshots: the listing of %s holds %s of another volume (%s)",
					  v->volume_id, d->list.v[i].id, d->list.v[i].volume_id);
			return vol_fail(d, "DescribeSnapshots", msg, false);
		}
		if (strcmp(d->list.v[i].state, "pending") == 0) {
			out(d, "%s: skipped: snapshot %s is still pending", v->volume_id, d->list.v[i].id);
			d->skipped++;
			return vol_next(d);
		}
	}
	k = freeze_start(d);
	if (k < 0) {
		_cleanup_free_ char *msg = xasprintf("freeze of %s: %s", v->mount_point, strerror(-k));
		return vol_fail(d, "freeze", msg, false);
	}
	if (k == 0)
		create_start(d);
}

static void describe_page(struct snap_step *d)
{
	struct buf form;
	int r;

	if (d->cancelled)
		return vol_fail(d, "DescribeSnapshots", "cancelled", true);
	buf_init(&form);
	ec2_form_add(&form, "Owner.1", "self");
	ec2_form_add(&form, "Filter.1.Name", "volume-id");
	ec2_form_add(&form, "Filter.1.Value.1", d->vols[d->cur].volume_id);
	ec2_form_add(&form, "MaxResults", DESCRIBE_PAGE);
	if (d->next_token)
		ec2_form_add(&form, "NextToken", d->next_token);
	r = call(d, "DescribeSnapshots", form.data, on_describe);
	buf_free(&form);
	if (r < 0)
		vol_fail(d, "DescribeSnapshots", strerror(-r), true);
}

/* The volume id of a mapping name: its device inside root, resolved, and
 * the NVMe serial of that block device (vol0123... -> vol-0123...). */
static char *volume_id_of(const char *root, const char *device)
{
	_cleanup_close_ int rootfd = rootfs_open(root), fd = -1, sfd = -1;
	_cleanup_free_ char *serial_path = NULL, *data = NULL;
	char proc[64], buf[PATH_MAX];
	const char *kname;
	size_t len = 0;
	ssize_t n;

	if (rootfd < 0 || !device || (fd = rootfs_resolve(rootfd, device, false)) < 0)
		return NULL;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, buf, sizeof(buf) - 1);
	if (n < 0)
		return NULL;
	buf[n] = '\0';
	kname = strrchr(buf, '/') ? strrchr(buf, '/') + 1 : buf;
	if (!name_is_valid(kname))
		return NULL;
	serial_path = xasprintf("/sys/block/%s/device/serial", kname);
	if ((sfd = rootfs_resolve(rootfd, serial_path, false)) < 0)
		return NULL;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", sfd);
	if (file_read_all(proc, 256, &data, &len) < 0)
		return NULL;
	while (len > 0 && (data[len - 1] == ' ' || data[len - 1] == '\n' || data[len - 1] == '\0'))
		data[--len] = '\0';
	if (len < 4 || strncmp(data, "vol", 3) != 0 || data[3] == '-')
		return NULL;
	for (size_t i = 3; i < len; i++)
		if (!((data[i] >= '0' && data[i] <= '9') || (data[i] >= 'a' && data[i] <= 'f')))
			return NULL;
	return xasprintf("vol-%s", data + 3);
}

static void vol_start(struct snap_step *d)
{
	struct vol *v;

	if (d->cur >= d->n_vols || d->cancelled) {
		if (d->cancelled && d->cur < d->n_vols)
			buf_printf(&d->failures, "%scancelled", d->failures.len ? "; " : "");
		return step_finish(d);
	}
	v = &d->vols[d->cur];
	if (!v->volume_id)
		v->volume_id = volume_id_of(plan_exec_env(d->x)->root, v->device);
	if (!v->volume_id) {
		_cleanup_free_ char *msg = xasprintf("no volume id: %s is no EBS NVMe device here (its serial names none)",
						     v->device);
		return vol_fail(d, "find", msg, false);
	}
	describe_page(d);
}

static void on_imds(void *userdata, const struct ec2_imds_result *r)
{
	struct snap_step *d = userdata;

	d->imds_req = NULL;
	if (r->r < 0) {
		buf_printf(&d->failures, "%s", r->error);
		return step_finish(d);
	}
	if (r->creds)
		ec2_creds_copy(&d->creds, r->creds);
	if (r->region && !d->run_region)
		d->run_region = xstrdup(r->region);
	d->run_endpoint = ec2_endpoint_for(d->endpoint, d->run_region);
	out(d, "ebs_snapshots: region %s, %s credentials%s", d->run_region, r->creds ? "the IMDS role's" : "the stack's",
	    d->freeze ? ", freeze" : "");
	vol_start(d);
}

static void snap_apply(struct step *s, struct plan_exec *x)
{
	struct snap_step *d = s->data;
	int r;

	if (!plan_exec_env(x)->http)
		return plan_step_done(x, STEP_FAILED, "no HTTP client");
	d->x = x;
	d->self = s;
	d->permanent = false;
	d->pages = 0;
	d->cur = 0;
	d->changed = d->cancelled = false;
	d->created = d->deleted = d->skipped = 0;
	buf_init(&d->failures);
	d->run_region = d->region ? xstrdup(d->region) : NULL;
	if (d->aws_key) {
		d->creds = (struct ec2_creds){ .key = xstrdup(d->aws_key), .secret = xstrdup(d->aws_secret) };
	}
	r = ec2_imds_fetch(plan_exec_env(x)->loop, plan_exec_env(x)->http, d->imds, !d->aws_key, !d->region, on_imds, d,
			   &d->imds_req);
	if (r < 0) {
		buf_printf(&d->failures, "IMDS: %s", strerror(-r));
		step_finish(d);
	}
}

static void snap_cancel(struct step *s)
{
	struct snap_step *d = s->data;

	if (!d->x)
		return;
	d->cancelled = true;
	/* A call in flight ends the step when it returns; a freeze stays
	 * bounded by its deadline. Only the IMDS lookup is cut short. */
	if (d->imds_req) {
		ec2_imds_cancel(d->imds_req);
		d->imds_req = NULL;
		buf_printf(&d->failures, "cancelled");
		step_finish(d);
	}
}

static int snap_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			 char **ret_error)
{
	struct snap_step *d = s->data;

	free(s->message);
	s->message = xasprintf("CreateSnapshot of %zu volume%s (skipping one with a pending snapshot), keep %ld%s; "
			       "region %s, %s credentials",
			       d->n_vols, d->n_vols == 1 ? "" : "s", d->keep, d->freeze ? ", frozen during the call" : "",
			       d->region ? d->region : "from IMDS", d->aws_key ? "the stack's" : "the IMDS role's");
	*ret_action = "snapshot";
	return 0;
}

static const struct step_ops ec2_snapshot_ops = {
	.kind = "ec2_snapshot",
	.describe = snap_describe,
	.apply = snap_apply,
	.cancel = snap_cancel,
	.free_data = snap_free,
};

struct step *plan_add_ec2_snapshot(struct plan *p, const struct ec2_snapshot_opts *o, char **ret_error)
{
	struct snap_step *d;
	struct buf target;

	if (!o->hostname || !o->imds_endpoint || o->keep < 1 || o->freeze_timeout_sec < 1 ||
	    !o->aws_key != !o->aws_secret) {
		*ret_error = xstrdup("ec2_snapshot: a hostname, an IMDS endpoint, keep >= 1, a freeze timeout, and both "
				     "of aws_key and aws_secret or neither");
		return NULL;
	}
	d = xcalloc(1, sizeof(*d));
	d->vols = xcalloc(o->n_volumes + 1, sizeof(*d->vols));
	buf_init(&target);
	for (size_t i = 0; i < o->n_volumes; i++) {
		const struct ec2_snapshot_volume *v = &o->volumes[i];
		if (!v->volume_id && !v->device)
			continue;
		d->vols[d->n_vols++] = (struct vol){
			.volume_id = v->volume_id ? xstrdup(v->volume_id) : NULL,
			.device = v->device ? xstrdup(v->device) : NULL,
			.mount_point = v->mount_point ? xstrdup(v->mount_point) : NULL,
		};
		buf_printf(&target, "%s%s", target.len ? " " : "", v->volume_id ? v->volume_id : v->device);
	}
	d->hostname = xstrdup(o->hostname);
	d->stack_name = xstrdup(o->stack_name ? o->stack_name : "");
	d->region = o->region ? xstrdup(o->region) : NULL;
	d->endpoint = o->endpoint ? xstrdup(o->endpoint) : NULL;
	d->imds = xstrdup(o->imds_endpoint);
	d->aws_key = o->aws_key ? xstrdup(o->aws_key) : NULL;
	d->aws_secret = o->aws_secret ? xstrdup(o->aws_secret) : NULL;
	d->fsfreeze_argv = o->fsfreeze_argv ? strv_dup(o->fsfreeze_argv) : strv_dup((const char *const[]){ "fsfreeze", NULL });
	d->keep = o->keep;
	d->freeze = o->freeze;
	d->freeze_timeout_sec = o->freeze_timeout_sec;
	d->backoff_min_ms = o->backoff_min_ms;
	if (!target.len)
		buf_puts(&target, "no volumes");
	_cleanup_free_ char *t = buf_steal(&target);
	return plan_add(p, &ec2_snapshot_ops, t, d);
}

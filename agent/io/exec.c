/* SPDX-License-Identifier: BSD-2-Clause */
/* Child processes through uv_spawn (see exec.h).
 *
 * Lifetime of a struct exec: it owns a uv_process_t, the uv_pipe_t its
 * output arrives on, a uv_pipe_t for stdin when there is stdin data, and two
 * timers (the timeout, and a shared one for "SIGKILL after the grace period"
 * and "EOF did not come after the exit"). done_cb runs once, when the child
 * has exited and its output pipe has reached EOF; then every handle is
 * closed and the struct is freed in the last close callback.
 *
 * The child runs in its own session (UV_PROCESS_DETACHED, so setsid()), which
 * makes its pid the process group id of everything it starts: a timeout or a
 * terminate signals the whole group, so a recipe's grandchildren die too. The
 * group id cannot be reused by another process while any member is alive,
 * so signalling it after the child itself was reaped is safe. */
#include "exec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

/* How long we wait for EOF on the output pipe after the child exited: a
 * grandchild that daemonised without closing its stdout must not hold the
 * step open forever. */
#define EXEC_EOF_WAIT_MS 2000
#define EXEC_KILL_AFTER_DEFAULT_MS 5000
/* The kernel's PID_MAX_LIMIT on 64-bit hosts: no pid is larger. */
#define EXEC_PID_MAX_LIMIT (INT64_C(1) << 22)
/* exec_opts.pass_fds: a child needs one or two at most. */
#define EXEC_PASS_FDS_MAX 8

struct exec {
	uv_loop_t *loop;            /* borrowed */
	uv_process_t proc;
	uv_pipe_t out;              /* stdout and stderr of the child, read end */
	uv_pipe_t in;               /* stdin of the child, when there is data */
	uv_timer_t timeout;         /* the timeout; also "run done_cb next iteration" after a spawn failure */
	uv_timer_t kill;            /* SIGKILL after the grace period, and the wait for EOF after the exit */
	uv_write_t write_req;

	exec_output_cb output_cb;
	exec_done_cb done_cb;
	void *userdata;

	long timeout_ms;
	long kill_after_ms;
	pid_t pgid;                 /* 0 when not started */

	bool proc_init, out_init, in_init, timeout_init, kill_init;
	bool in_closed;             /* stdin pipe closed (after the write, or never opened) */
	bool exited;                /* exit_cb fired */
	bool eof;                   /* output pipe reached EOF (or was given up on) */
	bool terminating;           /* SIGTERM sent: SIGKILL follows after the grace */
	bool killed;                /* SIGKILL sent */
	bool done;                  /* done_cb called */
	bool freeing;               /* exec_free() ran: free when the last close completes */
	unsigned pending_closes;

	struct exec_result result;
};

static void exec_maybe_done(struct exec *e);

static void on_close(uv_handle_t *h)
{
	struct exec *e = h->data;

	/* The stdin pipe closes early, while the child runs: only the last
	 * close after exec_free() frees the struct. */
	if (--e->pending_closes == 0 && e->freeing)
		free(e);
}

static void exec_close_handle(struct exec *e, uv_handle_t *h, bool *initialised)
{
	if (!*initialised)
		return;
	*initialised = false;
	if (uv_is_closing(h))
		return;
	e->pending_closes++;
	uv_close(h, on_close);
}

/* Closes everything; the struct is freed once the last handle is closed
 * (close callbacks never run synchronously inside uv_close()). */
static void exec_free(struct exec *e)
{
	e->freeing = true;
	exec_close_handle(e, (uv_handle_t *)&e->proc, &e->proc_init);
	exec_close_handle(e, (uv_handle_t *)&e->out, &e->out_init);
	exec_close_handle(e, (uv_handle_t *)&e->in, &e->in_init);
	exec_close_handle(e, (uv_handle_t *)&e->timeout, &e->timeout_init);
	exec_close_handle(e, (uv_handle_t *)&e->kill, &e->kill_init);
	if (e->pending_closes == 0)
		free(e);
}

int exec_pgid(const struct exec *e)
{
	return e ? (int)e->pgid : 0;
}

static void exec_signal_group(struct exec *e, int sig)
{
	/* kill(-1) and kill(-our group) would reach far more than the child:
	 * never, whatever pgid holds. */
	if (e->pgid <= 1 || e->pgid == getpgrp())
		return;
	/* ESRCH: the whole group is gone already, which is what we wanted. */
	if (kill(-e->pgid, sig) < 0 && errno != ESRCH)
		log_warn("Failed to send signal %d to process group %d: %m", sig, (int)e->pgid);
}

static void on_kill_timer(uv_timer_t *t)
{
	struct exec *e = t->data;

	if (e->exited && !e->eof) {
		/* The EOF wait ran out: some grandchild still holds the output
		 * pipe. If we are killing the group anyway, finish the job. */
		if (e->terminating && !e->killed) {
			e->killed = true;
			exec_signal_group(e, SIGKILL);
		}
		(void)uv_read_stop((uv_stream_t *)&e->out);
		e->eof = true;
		exec_maybe_done(e);
		return;
	}
	if (e->terminating && !e->killed) {
		e->killed = true;
		exec_signal_group(e, SIGKILL);
	}
}

static void exec_start_terminate(struct exec *e, int sig)
{
	if (e->terminating || e->done || e->pgid <= 0)
		return;
	e->terminating = true;
	exec_signal_group(e, sig);
	/* When the child already exited, the kill timer is busy waiting for EOF;
	 * on_kill_timer sends the SIGKILL then. */
	if (!e->exited && e->kill_init)
		(void)uv_timer_start(&e->kill, on_kill_timer, (uint64_t)e->kill_after_ms, 0);
}

static void on_timeout(uv_timer_t *t)
{
	struct exec *e = t->data;

	if (e->exited)
		return;
	e->result.timed_out = true;
	exec_start_terminate(e, SIGTERM);
}

/* After a spawn failure: done_cb runs from here, on the next loop iteration. */
static void on_spawn_failed(uv_timer_t *t)
{
	struct exec *e = t->data;

	e->exited = true;
	e->eof = true;
	exec_maybe_done(e);
}

static void exec_maybe_done(struct exec *e)
{
	if (e->done || !e->exited || !e->eof)
		return;
	e->done = true;
	if (e->done_cb)
		e->done_cb(e->userdata, &e->result);
	exec_free(e);
}

static void on_exit_cb(uv_process_t *p, int64_t exit_status, int term_signal)
{
	struct exec *e = p->data;

	e->exited = true;
	e->result.exit_status = (int)exit_status;
	e->result.term_signal = term_signal;
	(void)uv_timer_stop(&e->timeout);
	(void)uv_timer_stop(&e->kill);
	if (!e->eof)
		(void)uv_timer_start(&e->kill, on_kill_timer, EXEC_EOF_WAIT_MS, 0);
	exec_maybe_done(e);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	static char slab[65536];

	/* Reads are delivered synchronously to output_cb before the next read,
	 * so one static slab serves every child. */
	b->base = slab;
	b->len = sizeof(slab);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct exec *e = s->data;

	if (n > 0) {
		if (e->output_cb)
			e->output_cb(e->userdata, b->base, (size_t)n);
		return;
	}
	if (n == 0)
		return;
	if (n != UV_EOF)
		log_warn("Failed to read child output: %s", uv_strerror((int)n));
	(void)uv_read_stop(s);
	e->eof = true;
	if (e->exited)
		(void)uv_timer_stop(&e->kill);
	exec_maybe_done(e);
}

static void on_stdin_written(uv_write_t *req, int status)
{
	struct exec *e = req->data;

	/* A child that does not read its stdin (EPIPE, ECONNRESET) is fine. */
	if (status < 0 && status != UV_EPIPE && status != UV_ECONNRESET && status != UV_ECANCELED)
		log_debug("Failed to write child stdin: %s", uv_strerror(status));
	exec_close_handle(e, (uv_handle_t *)&e->in, &e->in_init);
}

static int exec_resolve_user(const char *user, uid_t *ret_uid, gid_t *ret_gid)
{
	return user_lookup(user, ret_uid, ret_gid);
}

/* Writes to a child's stdin pipe must not kill the daemon when the child
 * does not read it: we want EPIPE from the write, not SIGPIPE. The main
 * program ignores SIGPIPE too; this also covers tests and other embedders.
 * Children get default dispositions back from libuv. */
static void exec_ignore_sigpipe(void)
{
	static bool done;
	struct sigaction sa;

	if (done)
		return;
	done = true;
	if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
		(void)signal(SIGPIPE, SIG_IGN);
}

/* Marks every descriptor above 2 close-on-exec (see exec_start in exec.h),
 * walking /proc/self/fd; where /proc is missing, every number up to the
 * descriptor limit. Only ever sets the flag: agentd's own descriptors keep
 * working, and a spawn is synchronous, so no other spawn can race it. */
static void exec_cloexec_all(void)
{
	_cleanup_close_ int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dir = NULL;
	struct dirent *de;

	if (dfd >= 0)
		dir = fdopendir(dfd);
	if (!dir) {
		long max = sysconf(_SC_OPEN_MAX);

		for (long fd = 3; fd < (max > 0 ? max : 65536); fd++) {
			int fl = fcntl((int)fd, F_GETFD);

			if (fl >= 0 && !(fl & FD_CLOEXEC))
				(void)fcntl((int)fd, F_SETFD, fl | FD_CLOEXEC);
		}
		return;
	}
	dfd = -1; /* owned by dir */
	while ((de = readdir(dir))) {
		long fd;
		int fl;

		if (parse_long(de->d_name, 3, INT_MAX, &fd) < 0 || fd == dirfd(dir))
			continue;
		fl = fcntl((int)fd, F_GETFD);
		if (fl >= 0 && !(fl & FD_CLOEXEC))
			(void)fcntl((int)fd, F_SETFD, fl | FD_CLOEXEC);
	}
	closedir(dir);
}

/* The child's stdio: stdin from stdin_data (or none), stdout and stderr
 * into one pipe, then opts->pass_fds. One pipe for stdout and stderr:
 * libuv cannot hand the same UV_CREATE_PIPE to two slots, so we make the
 * pipe ourselves and let the child inherit its write end twice. Both ends
 * are O_CLOEXEC, so other children never inherit them. Returns the write
 * end (to close after the spawn), or a negative errno. */
static int exec_setup_stdio(struct exec *e, const struct exec_opts *opts, uv_stdio_container_t *stdio)
{
	uv_file fds[2] = { -1, -1 };
	int r;

	r = uv_pipe(fds, UV_NONBLOCK_PIPE, 0);
	if (r < 0)
		return r;
	(void)uv_pipe_init(e->loop, &e->out, 0);
	e->out_init = true;
	r = uv_pipe_open(&e->out, fds[0]);
	if (r < 0) {
		(void)close(fds[0]);
		(void)close(fds[1]);
		return r;
	}
	if (opts->stdin_data) {
		(void)uv_pipe_init(e->loop, &e->in, 0);
		e->in_init = true;
		stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
		stdio[0].data.stream = (uv_stream_t *)&e->in;
	} else {
		stdio[0].flags = UV_IGNORE;
	}
	stdio[1].flags = UV_INHERIT_FD;
	stdio[1].data.fd = fds[1];
	stdio[2].flags = UV_INHERIT_FD;
	stdio[2].data.fd = fds[1];
	for (size_t i = 0; i < opts->n_pass_fds; i++) {
		stdio[3 + i].flags = UV_INHERIT_FD;
		stdio[3 + i].data.fd = opts->pass_fds[i];
	}
	return fds[1];
}

/* After a successful spawn: read the output, write stdin, arm the timeout. */
static void exec_started(struct exec *e, const struct exec_opts *opts)
{
	int r;

	e->pgid = e->proc.pid;
	r = uv_read_start((uv_stream_t *)&e->out, on_alloc, on_read);
	if (r < 0) {
		/* Should not happen on a fresh pipe; without a reader we would
		 * never see EOF, so stop waiting for it. */
		log_warn("Failed to read child output: %s", uv_strerror(r));
		e->eof = true;
	}
	if (opts->stdin_data) {
		uv_buf_t b = uv_buf_init((char *)opts->stdin_data, (unsigned)opts->stdin_len);

		r = uv_write(&e->write_req, (uv_stream_t *)&e->in, &b, 1, on_stdin_written);
		if (r < 0)
			exec_close_handle(e, (uv_handle_t *)&e->in, &e->in_init);
	}
	if (e->timeout_ms > 0)
		(void)uv_timer_start(&e->timeout, on_timeout, (uint64_t)e->timeout_ms, 0);
}

static struct exec *exec_new(uv_loop_t *loop, const struct exec_opts *opts, exec_output_cb output_cb,
			     exec_done_cb done_cb, void *userdata)
{
	struct exec *e = xcalloc(1, sizeof(*e));

	e->loop = loop;
	e->output_cb = output_cb;
	e->done_cb = done_cb;
	e->userdata = userdata;
	e->timeout_ms = opts->timeout_ms;
	e->kill_after_ms = opts->kill_after_ms > 0 ? opts->kill_after_ms : EXEC_KILL_AFTER_DEFAULT_MS;
	e->proc.data = e->out.data = e->in.data = e->timeout.data = e->kill.data = e;
	e->write_req.data = e;
	(void)uv_timer_init(loop, &e->timeout);
	e->timeout_init = true;
	(void)uv_timer_init(loop, &e->kill);
	e->kill_init = true;
	return e;
}

int exec_start(uv_loop_t *loop, const struct exec_opts *opts, exec_output_cb output_cb, exec_done_cb done_cb,
	       void *userdata, struct exec **ret)
{
	static char *const empty_env[] = { NULL };
	uv_process_options_t po = { 0 };
	uv_stdio_container_t stdio[3 + EXEC_PASS_FDS_MAX];
	struct exec *e;
	int r, wfd;

	if (!opts || !opts->argv || !opts->argv[0] || opts->n_pass_fds > EXEC_PASS_FDS_MAX)
		return -EINVAL;

	exec_ignore_sigpipe();
	e = exec_new(loop, opts, output_cb, done_cb, userdata);
	if (ret)
		*ret = e;

	po.exit_cb = on_exit_cb;
	po.file = opts->argv[0];
	po.args = (char **)opts->argv;
	po.env = (char **)(opts->env ? opts->env : empty_env);
	po.cwd = opts->cwd;
	po.flags = UV_PROCESS_DETACHED;
	if (opts->user) {
		uid_t uid = 0;
		gid_t gid = 0;

		r = exec_resolve_user(opts->user, &uid, &gid);
		if (r < 0)
			goto spawn_failed;
		po.uid = uid;
		po.gid = gid;
		po.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
	}
	r = wfd = exec_setup_stdio(e, opts, stdio);
	if (r < 0)
		goto spawn_failed;
	po.stdio = stdio;
	po.stdio_count = 3 + (int)opts->n_pass_fds;

	exec_cloexec_all();
	e->proc_init = true;
	r = uv_spawn(loop, &e->proc, &po);
	(void)close(wfd);
	if (r < 0)
		goto spawn_failed;
	exec_started(e, opts);
	return 0;

spawn_failed:
	/* One path for callers: done_cb on the next loop iteration. */
	e->result.spawn_error = r;
	(void)uv_timer_start(&e->timeout, on_spawn_failed, 0, 0);
	return 0;
}

void exec_terminate(struct exec *e)
{
	/* Also after the exit while we wait for EOF: then the group is what is
	 * left, and it is what we want gone. */
	if (!e || e->done)
		return;
	exec_start_terminate(e, SIGTERM);
}

char *exec_result_describe(const struct exec_result *r, long timeout_ms)
{
	if (r->spawn_error)
		return xasprintf("could not start: %s", strerror(-r->spawn_error));
	if (r->timed_out) {
		if (timeout_ms % 1000 == 0)
			return xasprintf("timed out after %ld s and was killed", timeout_ms / 1000);
		return xasprintf("timed out after %ld ms and was killed", timeout_ms);
	}
	if (r->term_signal) {
		const char *abbrev = sigabbrev_np(r->term_signal);

		if (abbrev)
			return xasprintf("killed by signal %d (SIG%s)", r->term_signal, abbrev);
		return xasprintf("killed by signal %d", r->term_signal);
	}
	return xasprintf("exited with status %d", r->exit_status);
}

int exec_proc_stat(int64_t pid, int64_t *ret_pgrp, uint64_t *ret_start)
{
	_cleanup_free_ char *path = NULL, *data = NULL;
	unsigned long long start;
	long long pgrp;
	const char *p;
	int r;

	if (pid <= 0 || pid > EXEC_PID_MAX_LIMIT)
		return -EINVAL;
	path = xasprintf("/proc/%" PRId64 "/stat", pid);
	r = file_read_regular(AT_FDCWD, path, 0, 4096, &data, NULL);
	if (r == -ENOENT)
		return -ESRCH;
	if (r < 0)
		return r;
	/* The command name may hold spaces and parentheses: fields count from
	 * the last ')'. Field 3 (the state) follows it. */
	p = strrchr(data, ')');
	if (!p)
		return -EINVAL;
	for (int field = 2; field < 22; field++) {
		p = strchr(p + 1, ' ');
		if (!p)
			return -EINVAL;
		if (field == 4) {
			if (sscanf(p + 1, "%lld", &pgrp) != 1)
				return -EINVAL;
		}
	}
	if (sscanf(p + 1, "%llu", &start) != 1)
		return -EINVAL;
	if (ret_pgrp)
		*ret_pgrp = pgrp;
	if (ret_start)
		*ret_start = start;
	return 0;
}

int exec_kill_recorded_group(int64_t pgid, int64_t start, int sig)
{
	uint64_t now_start;
	int64_t pgrp;
	int r;

	/* kill(0) and kill(-1) mean "our group" and "every process": a pgid of
	 * 0, 1 or a value that does not fit a pid_t (4294967297 would become 1
	 * in an int) is refused before anything is cast. */
	if (pgid <= 1 || pgid > EXEC_PID_MAX_LIMIT || start <= 0)
		return -EINVAL;
	if ((pid_t)pgid == getpgrp() || (pid_t)pgid == getpid())
		return -EPERM;
	r = exec_proc_stat(pgid, &pgrp, &now_start);
	if (r < 0)
		return r == -EINVAL ? -ESRCH : r;
	/* The leader must be the very process we started (same start time) and
	 * still lead its group: otherwise the pid was reused by someone else. */
	if (pgrp != pgid || now_start != (uint64_t)start)
		return -ESRCH;
	if (kill(-(pid_t)pgid, sig) < 0)
		return -errno;
	return 0;
}

void exec_kill_orphans(const struct exec_recorded_group *g, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		long long pg = (long long)g[i].pgid, id = (long long)g[i].run;
		int r;

		if (!g[i].start_known) {
			log_warn("Run %lld: the recorded process group is not a number; not signalling anything", id);
			continue;
		}
		r = exec_kill_recorded_group(g[i].pgid, g[i].start, SIGKILL);
		if (r == 0)
			log_warn("Killed process group %lld left running by the interrupted run %lld", pg, id);
		else if (r == -EINVAL || r == -EPERM)
			log_warn("Run %lld: recorded process group %lld is %s; not signalling it", id, pg,
				 r == -EPERM ? "agentd's own" : "out of range");
		else if (r != -ESRCH)
			log_warn_errno(r, "Failed to kill process group %lld of run %lld: %m", pg, id);
	}
}

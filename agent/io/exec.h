/* SPDX-License-Identifier: BSD-2-Clause */
/* Child processes through uv_spawn: argv exec'd directly (never a shell),
 * optional user switch, environment, cwd, stdin data, stdout+stderr captured
 * through one pipe, and a timeout that sends SIGTERM, then SIGKILL after a
 * grace period. Never waitpid(), never a SIGCHLD handler of our own. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

struct exec;

struct exec_opts {
	char *const *argv;      /* argv[0] is looked up in PATH when it has no '/' */
	char *const *env;       /* "KEY=VALUE", NULL-terminated; NULL: an empty environment */
	const char *cwd;        /* NULL: inherit */
	const char *user;       /* NULL: run as ourselves; else switch uid, gid and groups */
	long timeout_ms;        /* 0: none */
	long kill_after_ms;     /* grace between SIGTERM and SIGKILL; 0 means 5000 */
	const char *stdin_data; /* borrowed until done; NULL: /dev/null */
	size_t stdin_len;
	/* Descriptors the child gets as 3, 4, ... (in this order); every
	 * other descriptor of ours is closed at its exec (exec_start). */
	const int *pass_fds;
	size_t n_pass_fds;
};

struct exec_result {
	int exit_status;        /* valid when term_signal == 0 */
	int term_signal;
	bool timed_out;
	int spawn_error;        /* negative errno when the process could not start (bad user, ENOENT, ...) */
};

/* Output is delivered as it arrives (stdout and stderr interleaved). */
typedef void (*exec_output_cb)(void *userdata, const char *data, size_t len);
/* Called once, after the process exited and every byte of output was delivered.
 * The struct exec is freed by the library after this returns. */
typedef void (*exec_done_cb)(void *userdata, const struct exec_result *r);

/* Starts the child. The child gets its stdio and opts->pass_fds, nothing
 * else: every other descriptor of this process above 2 is marked
 * close-on-exec first (libraries open some without it: libcurl's wakeup
 * socketpair), so no root-opened file, socket or directory reaches an app
 * user's program. On a spawn failure, returns 0 and done_cb runs on the
 * next loop iteration with spawn_error set, so callers have one path. */
int exec_start(uv_loop_t *loop, const struct exec_opts *opts, exec_output_cb output_cb, exec_done_cb done_cb,
	       void *userdata, struct exec **ret);
/* The child's process group id (its pid; the child leads its own group), or
 * 0 when it did not start. */
int exec_pgid(const struct exec *e);
/* Sends SIGTERM now (and SIGKILL after the grace period). done_cb still runs. */
void exec_terminate(struct exec *e);
/* Describes r in words ("exited with status 3", "killed by signal 9 after
 * timeout of 5 s", "could not start: No such file or directory"). */
char *exec_result_describe(const struct exec_result *r, long timeout_ms);

/* Reads field 5 (the process group) and field 22 (the start time, in clock
 * ticks since boot) of /proc/PID/stat. Together they
 * tell a process group leader from a later process that reused its pid.
 * Returns 0, -ESRCH when there is no such process, or -EINVAL when the file
 * cannot be parsed. ret_* may be NULL. */
int exec_proc_stat(int64_t pid, int64_t *ret_pgrp, uint64_t *ret_start);

/* Sends sig to a process group that an earlier agentd recorded (a value from
 * state_dir, hence not trusted): pgid must be > 1 and a valid pid, must not
 * be agentd's own group, and its leader must still exist, still lead the
 * group pgid and have the recorded start time (clock ticks, > 0). Anything
 * else is left alone: kill(-1) or our own group is never signalled.
 * Returns 0 when the signal was sent, -EINVAL for a value out of range,
 * -EPERM for agentd's own group, -ESRCH when the leader is gone or is
 * another process now, or the errno of kill(). */
int exec_kill_recorded_group(int64_t pgid, int64_t start, int sig);

/* A process group an earlier agentd recorded for a run's step. */
struct exec_recorded_group {
	long run;               /* the run's id, for messages */
	int64_t pgid;
	int64_t start;          /* clock ticks; meaningless unless start_known */
	bool start_known;       /* the record held a number for the start time */
};
/* Ends the process groups of steps that a killed agentd left running (so
 * that two copies of a recipe never run at once), each with SIGKILL
 * through exec_kill_recorded_group, logging what was done or why nothing
 * was signalled. The values come from state_dir and are not trusted. */
void exec_kill_orphans(const struct exec_recorded_group *g, size_t n);

/* SPDX-License-Identifier: BSD-2-Clause */
/* exec.c: real children through uv_spawn on a private loop; every test ends
 * with the loop closing cleanly (no handle left behind). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/exec.h"
#include "util.h"

struct run {
	struct buf out;
	struct exec_result r;
	int n_done;
	int64_t done_usec;
};

/* The captured output as a string; buf leaves data NULL until written. */
#define OUT(run) ((run).out.data ? (run).out.data : "")

static void cb_output(void *userdata, const char *data, size_t len)
{
	struct run *run = userdata;

	assert_int_equal(run->n_done, 0);
	buf_append(&run->out, data, len);
}

static void cb_done(void *userdata, const struct exec_result *r)
{
	struct run *run = userdata;

	run->n_done++;
	run->r = *r;
	run->done_usec = time_monotonic_usec();
}

/* Runs one child to completion on a fresh loop. */
static void run_child(const struct exec_opts *o, struct run *run)
{
	uv_loop_t loop;
	struct exec *e = NULL;

	memset(run, 0, sizeof(*run));
	buf_init(&run->out);
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(exec_start(&loop, o, cb_output, cb_done, run, &e), 0);
	assert_non_null(e);
	/* Never synchronous, not even a spawn failure. */
	assert_int_equal(run->n_done, 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(run->n_done, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_output_and_status(void **state)
{
	char *argv[] = { "/bin/sh", "-c", "echo out; echo err >&2; echo out2; exit 3", NULL };
	struct exec_opts o = { .argv = argv };
	struct run run;
	char *d;

	run_child(&o, &run);
	assert_string_equal(OUT(run), "out\nerr\nout2\n");
	assert_int_equal(run.r.exit_status, 3);
	assert_int_equal(run.r.term_signal, 0);
	assert_false(run.r.timed_out);
	assert_int_equal(run.r.spawn_error, 0);
	d = exec_result_describe(&run.r, 0);
	assert_string_equal(d, "exited with status 3");
	free(d);
	buf_free(&run.out);
}

static void test_env_exact(void **state)
{
	char *argv[] = { "/usr/bin/env", NULL };
	char *env[] = { "FOO=bar", "AGENT_EVENT=deploy", NULL };
	struct exec_opts o = { .argv = argv, .env = env };
	struct run run;

	run_child(&o, &run);
	assert_string_equal(OUT(run), "FOO=bar\nAGENT_EVENT=deploy\n");
	assert_int_equal(run.r.exit_status, 0);
	buf_free(&run.out);

	/* NULL env: empty, and argv[0] without '/' is still found. */
	char *argv2[] = { "env", NULL };
	struct exec_opts o2 = { .argv = argv2 };
	run_child(&o2, &run);
	assert_string_equal(OUT(run), "");
	assert_int_equal(run.r.exit_status, 0);
	buf_free(&run.out);
}

static void test_cwd(void **state)
{
	char tmpl[] = "/tmp/test_exec.XXXXXX";
	char *argv[] = { "/bin/pwd", NULL };
	struct exec_opts o = { .argv = argv };
	struct run run;
	char *expect;

	assert_non_null(mkdtemp(tmpl));
	o.cwd = tmpl;
	run_child(&o, &run);
	expect = xasprintf("%s\n", tmpl);
	assert_string_equal(OUT(run), expect);
	free(expect);
	buf_free(&run.out);
	assert_int_equal(rmdir(tmpl), 0);

	/* A cwd that does not exist is a spawn failure. */
	o.cwd = "/nonexistent/dir";
	run_child(&o, &run);
	assert_int_equal(run.r.spawn_error, -ENOENT);
	buf_free(&run.out);
}

static void test_stdin(void **state)
{
	char *argv[] = { "/bin/cat", NULL };
	const char data[] = "hello\nworld";
	struct exec_opts o = { .argv = argv, .stdin_data = data, .stdin_len = strlen(data) };
	struct run run;

	run_child(&o, &run);
	assert_string_equal(OUT(run), data);
	assert_int_equal(run.r.exit_status, 0);
	buf_free(&run.out);

	/* A large input through a pipe that needs several writes. */
	size_t n = 1 << 20;
	char *big = xmalloc(n);
	for (size_t i = 0; i < n; i++)
		big[i] = (char)('a' + i % 26);
	o.stdin_data = big;
	o.stdin_len = n;
	run_child(&o, &run);
	assert_int_equal(run.out.len, n);
	assert_memory_equal(run.out.data, big, n);
	buf_free(&run.out);

	/* A child that never reads its stdin: no SIGPIPE, no error. */
	char *argv2[] = { "/bin/true", NULL };
	o.argv = argv2;
	run_child(&o, &run);
	assert_int_equal(run.r.exit_status, 0);
	assert_int_equal(run.r.spawn_error, 0);
	buf_free(&run.out);
	free(big);

	/* No stdin data: /dev/null, so cat sees EOF at once. */
	o.argv = argv;
	o.stdin_data = NULL;
	o.stdin_len = 0;
	run_child(&o, &run);
	assert_string_equal(OUT(run), "");
	assert_int_equal(run.r.exit_status, 0);
	buf_free(&run.out);
}

/* Processes of group pgid that are still alive (zombies do not count: PID 1
 * in a container may be slow to reap the orphans). */
static int count_group_alive(pid_t pgid)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d))) {
		char path[300], line[512], *p, state;
		int pgrp;
		FILE *f;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		f = fopen(path, "re");
		if (!f)
			continue;
		if (!fgets(line, sizeof(line), f)) {
			fclose(f);
			continue;
		}
		fclose(f);
		p = strrchr(line, ')');
		if (!p || sscanf(p + 1, " %c %*d %d", &state, &pgrp) != 2)
			continue;
		if (pgrp == pgid && state != 'Z' && state != 'X')
			n++;
	}
	closedir(d);
	return n;
}

/* The pid the child printed on its first line: its process group. */
static long first_line_long(const char *s)
{
	const char *nl = strchr(s, '\n');
	char *line;
	long v = 0;

	assert_non_null(nl);
	line = xstrndup(s, (size_t)(nl - s));
	assert_int_equal(parse_long(line, 1, 1L << 30, &v), 0);
	free(line);
	return v;
}

static void wait_group_gone(pid_t pgid)
{
	for (int i = 0; i < 200 && count_group_alive(pgid) > 0; i++)
		usleep(10000);
	assert_int_equal(count_group_alive(pgid), 0);
}

static void test_timeout_kills_group(void **state)
{
	char *argv[] = { "/bin/sh", "-c", "echo $$; sleep 100 & sleep 100", NULL };
	struct exec_opts o = { .argv = argv, .timeout_ms = 300 };
	struct run run;
	int64_t start = time_monotonic_usec();
	long pgid;
	char *d;

	run_child(&o, &run);
	assert_true(run.r.timed_out);
	assert_int_equal(run.r.term_signal, SIGTERM);
	/* Well before the grandchild's 100 s, and before the EOF grace ran out:
	 * the grandchild died with the group, closing the pipe. */
	assert_true(run.done_usec - start < 1500000);
	pgid = first_line_long(OUT(run));
	wait_group_gone((pid_t)pgid);
	d = exec_result_describe(&run.r, 300);
	assert_string_equal(d, "timed out after 300 ms and was killed");
	free(d);
	d = exec_result_describe(&run.r, 5000);
	assert_string_equal(d, "timed out after 5 s and was killed");
	free(d);
	buf_free(&run.out);
}

static void test_timeout_sigkill(void **state)
{
	/* Ignoring SIGTERM is inherited by sleep: only SIGKILL works. */
	char *argv[] = { "/bin/sh", "-c", "trap '' TERM; echo $$; sleep 100", NULL };
	struct exec_opts o = { .argv = argv, .timeout_ms = 200, .kill_after_ms = 200 };
	struct run run;
	long pgid;

	run_child(&o, &run);
	assert_true(run.r.timed_out);
	assert_int_equal(run.r.term_signal, SIGKILL);
	pgid = first_line_long(OUT(run));
	wait_group_gone((pid_t)pgid);
	buf_free(&run.out);
}

static void on_terminate_timer(uv_timer_t *t)
{
	exec_terminate(t->data);
	uv_close((uv_handle_t *)t, NULL);
}

static void test_terminate(void **state)
{
	char *argv[] = { "/bin/sleep", "100", NULL };
	struct exec_opts o = { .argv = argv };
	struct run run = { 0 };
	struct exec *e = NULL;
	uv_loop_t loop;
	uv_timer_t t;
	char *d;

	buf_init(&run.out);
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(exec_start(&loop, &o, cb_output, cb_done, &run, &e), 0);
	uv_timer_init(&loop, &t);
	t.data = e;
	uv_timer_start(&t, on_terminate_timer, 50, 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(run.n_done, 1);
	assert_false(run.r.timed_out);
	assert_int_equal(run.r.term_signal, SIGTERM);
	d = exec_result_describe(&run.r, 0);
	assert_string_equal(d, "killed by signal 15 (SIGTERM)");
	free(d);
	assert_int_equal(uv_loop_close(&loop), 0);
	buf_free(&run.out);
}

static void test_grandchild_holds_pipe(void **state)
{
	/* The child exits at once; a grandchild keeps stdout open. done_cb
	 * must come after the 2 s EOF grace, not after 30 s. */
	char *argv[] = { "/bin/sh", "-c", "echo $$; sleep 30 & exit 0", NULL };
	struct exec_opts o = { .argv = argv };
	int64_t start = time_monotonic_usec();
	struct run run;
	long pgid;

	run_child(&o, &run);
	assert_int_equal(run.r.exit_status, 0);
	assert_true(run.done_usec - start >= 1900000);
	assert_true(run.done_usec - start < 4000000);
	pgid = first_line_long(OUT(run));
	(void)kill(-(pid_t)pgid, SIGKILL);
	wait_group_gone((pid_t)pgid);
	buf_free(&run.out);
}

static void test_spawn_failure(void **state)
{
	char *argv[] = { "/nonexistent/program", "x", NULL };
	struct exec_opts o = { .argv = argv };
	struct run run;
	char *d;

	run_child(&o, &run);
	assert_int_equal(run.r.spawn_error, -ENOENT);
	assert_string_equal(OUT(run), "");
	d = exec_result_describe(&run.r, 0);
	assert_string_equal(d, "could not start: No such file or directory");
	free(d);
	buf_free(&run.out);

	/* Not executable. */
	char *argv2[] = { "/etc/passwd", NULL };
	o.argv = argv2;
	run_child(&o, &run);
	assert_int_equal(run.r.spawn_error, -EACCES);
	buf_free(&run.out);

	/* Unknown user. */
	char *argv3[] = { "/bin/true", NULL };
	o.argv = argv3;
	o.user = "no-such-user-agentd-test";
	run_child(&o, &run);
	assert_int_equal(run.r.spawn_error, -ENOENT);
	buf_free(&run.out);
}

static void test_user_switch(void **state)
{
	char *argv[] = { "/usr/bin/id", "-u", NULL };
	struct exec_opts o = { .argv = argv, .user = "nobody" };
	struct passwd *pw;
	struct run run;
	char *expect;

	if (getuid() != 0)
		skip();
	pw = getpwnam("nobody");
	if (!pw)
		skip();
	expect = xasprintf("%u\n", (unsigned)pw->pw_uid);
	run_child(&o, &run);
	assert_int_equal(run.r.exit_status, 0);
	assert_string_equal(OUT(run), expect);
	buf_free(&run.out);
	free(expect);

	/* The group is the user's primary group, and supplementary groups are gone. */
	char *argv2[] = { "/usr/bin/id", "-G", NULL };
	o.argv = argv2;
	expect = xasprintf("%u\n", (unsigned)pw->pw_gid);
	run_child(&o, &run);
	assert_string_equal(OUT(run), expect);
	buf_free(&run.out);
	free(expect);
}

/* No descriptor of ours reaches the child but its stdio and pass_fds (as
 * 3, 4...): not one opened without O_CLOEXEC (libcurl's socketpair). */
static void test_only_stdio_and_pass_fds(void **state)
{
	char *argv[] = { "/bin/sh", "-c", "ls /proc/self/fd | sort -n | tr '\\n' ' '", NULL };
	char *argv2[] = { "/bin/sh", "-c", "cat <&3; ls /proc/self/fd | sort -n | tr '\\n' ' '", NULL };
	struct exec_opts o = { .argv = argv };
	struct run run;
	int leak = open("/dev/null", O_RDONLY); /* no O_CLOEXEC */
	int sv[2], pv[2];

	assert_true(leak > 2);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	run_child(&o, &run);
	assert_int_equal(run.r.exit_status, 0);
	/* ls's own descriptor of the directory it lists is the 3 here. */
	assert_string_equal(OUT(run), "0 1 2 3 ");
	buf_free(&run.out);
	/* Marked close-on-exec, still open and usable here. */
	assert_true(fcntl(leak, F_GETFD) & FD_CLOEXEC);
	assert_true(fcntl(sv[0], F_GETFD) & FD_CLOEXEC);

	assert_int_equal(pipe2(pv, O_CLOEXEC), 0);
	assert_int_equal(write(pv[1], "hello ", 6), 6);
	(void)close(pv[1]);
	o.argv = argv2;
	o.pass_fds = &pv[0];
	o.n_pass_fds = 1;
	run_child(&o, &run);
	assert_int_equal(run.r.exit_status, 0);
	assert_string_equal(OUT(run), "hello 0 1 2 3 4 ");
	buf_free(&run.out);
	(void)close(pv[0]);
	(void)close(sv[0]);
	(void)close(sv[1]);
	(void)close(leak);
}

static void test_describe(void **state)
{
	struct exec_result r = { .term_signal = SIGKILL };
	char *d = exec_result_describe(&r, 0);

	assert_string_equal(d, "killed by signal 9 (SIGKILL)");
	free(d);
	r = (struct exec_result){ .spawn_error = -EACCES };
	d = exec_result_describe(&r, 0);
	assert_string_equal(d, "could not start: Permission denied");
	free(d);
	r = (struct exec_result){ 0 };
	d = exec_result_describe(&r, 0);
	assert_string_equal(d, "exited with status 0");
	free(d);
}

static void test_bad_args(void **state)
{
	char *argv[] = { NULL };
	struct exec_opts o = { .argv = argv };
	uv_loop_t loop;
	struct exec *e = NULL;

	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(exec_start(&loop, &o, cb_output, cb_done, NULL, &e), -EINVAL);
	assert_int_equal(uv_loop_close(&loop), 0);
}

/* A group recorded by an earlier agentd (numbers from state.json): only a
 * real group, not ours, led by the same process, is signalled. */
static void test_kill_recorded_group(void **state)
{
	char *argv[] = { "sleep", "100", NULL };
	struct exec_opts o = { .argv = argv };
	struct run run;
	uv_loop_t loop;
	struct exec *e = NULL;
	uint64_t start = 0;
	int64_t pgrp = 0;
	int pgid;

	/* Never kill(-1), kill(0), our own group or a value that is no pid:
	 * 4294967297 is 1 once cast to an int. */
	static const int64_t bad[] = { 4294967297LL, 1, 0, -1, -5, INT64_MIN, INT64_MAX, (1LL << 22) + 1 };
	for (size_t i = 0; i < ELEMENTSOF(bad); i++)
		assert_int_equal(exec_kill_recorded_group(bad[i], 1, 0), -EINVAL);
	assert_int_equal(exec_kill_recorded_group(getpgrp(), 1, 0), -EPERM);
	assert_int_equal(exec_kill_recorded_group(getpid(), 1, 0) < 0, 1);

	memset(&run, 0, sizeof(run));
	buf_init(&run.out);
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(exec_start(&loop, &o, cb_output, cb_done, &run, &e), 0);
	pgid = exec_pgid(e);
	assert_true(pgid > 1);
	assert_int_equal(exec_proc_stat(pgid, &pgrp, &start), 0);
	assert_int_equal(pgrp, pgid);
	assert_true(start > 0);
	/* Another start time: a later process that reused the pid. */
	assert_int_equal(exec_kill_recorded_group(pgid, (int64_t)start + 1, SIGKILL), -ESRCH);
	assert_int_equal(exec_kill_recorded_group(pgid, 0, SIGKILL), -EINVAL);
	assert_int_equal(exec_kill_recorded_group(pgid, -1, SIGKILL), -EINVAL);
	assert_int_equal(kill(pgid, 0), 0);
	/* The very process: killed. */
	assert_int_equal(exec_kill_recorded_group(pgid, (int64_t)start, SIGKILL), 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(run.n_done, 1);
	assert_int_equal(run.r.term_signal, SIGKILL);
	assert_int_equal(uv_loop_close(&loop), 0);
	buf_free(&run.out);
	/* Gone now. */
	assert_int_equal(exec_kill_recorded_group(pgid, (int64_t)start, SIGKILL), -ESRCH);
	assert_int_equal(exec_proc_stat(0, NULL, NULL), -EINVAL);
}

/* A process that does not lead its group (a recipe's grandchild whose pid
 * was recorded, or a reused pid) is not taken for the group. */
static void test_kill_recorded_group_not_leader(void **state)
{
	char *argv[] = { "/bin/sh", "-c", "sleep 100 & echo $!; wait", NULL };
	struct exec_opts o = { .argv = argv, .timeout_ms = 20000 };
	struct run run;
	uv_loop_t loop;
	struct exec *e = NULL;
	uint64_t start = 0, leader_start = 0;
	int64_t pgrp = 0;
	long child;
	int pgid;

	memset(&run, 0, sizeof(run));
	buf_init(&run.out);
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(exec_start(&loop, &o, cb_output, cb_done, &run, &e), 0);
	pgid = exec_pgid(e);
	while (!strchr(OUT(run), '\n'))
		assert_int_equal(uv_run(&loop, UV_RUN_ONCE) >= 0, 1);
	*strchr(run.out.data, '\n') = '\0';
	assert_int_equal(parse_long(run.out.data, 2, INT32_MAX, &child), 0);
	assert_int_equal(exec_proc_stat(child, &pgrp, &start), 0);
	assert_int_equal(pgrp, pgid);
	assert_int_equal(exec_kill_recorded_group(child, (int64_t)start, SIGKILL), -ESRCH);
	assert_int_equal(kill((pid_t)child, 0), 0);
	assert_int_equal(exec_proc_stat(pgid, NULL, &leader_start), 0);
	assert_int_equal(exec_kill_recorded_group(pgid, (int64_t)leader_start, SIGKILL), 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(run.n_done, 1);
	assert_int_equal(run.r.term_signal, SIGKILL);
	assert_int_equal(uv_loop_close(&loop), 0);
	buf_free(&run.out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_output_and_status),
		cmocka_unit_test(test_env_exact),
		cmocka_unit_test(test_cwd),
		cmocka_unit_test(test_stdin),
		cmocka_unit_test(test_timeout_kills_group),
		cmocka_unit_test(test_timeout_sigkill),
		cmocka_unit_test(test_terminate),
		cmocka_unit_test(test_grandchild_holds_pipe),
		cmocka_unit_test(test_spawn_failure),
		cmocka_unit_test(test_user_switch),
		cmocka_unit_test(test_only_stdio_and_pass_fds),
		cmocka_unit_test(test_describe),
		cmocka_unit_test(test_bad_args),
		cmocka_unit_test(test_kill_recorded_group),
		cmocka_unit_test(test_kill_recorded_group_not_leader),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

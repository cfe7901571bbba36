/* SPDX-License-Identifier: BSD-2-Clause */
/* Step "gluster"; see step_gluster.h. */
#include "step_gluster.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/exec.h"
#include "io/gluster_parse.h"
#include "plan.h"
#include "rootfs.h"
#include "util.h"
#include "strv.h"

#define GLUSTER_OUTPUT_MAX (1u << 20)
#define GLUSTER_TIMEOUT_MS 120000

struct gluster_step {
	char *volume, *brick;   /* owned */
	char **peers;           /* owned, NULL-terminated */
	char **command;         /* owned, NULL-terminated */

	/* While applying. */
	struct plan_exec *x;    /* borrowed */
	char *brick_path;       /* owned: the brick directory as the host knows it */
	char ***cmds;           /* owned: argv suffixes still to run */
	size_t n_cmds, next;
	bool info_phase;
	bool changed;
	struct buf out;
	struct exec *exec;      /* borrowed while running */
	bool cancelled;
};

static void cmds_clear(struct gluster_step *g)
{
	for (size_t i = 0; i < g->n_cmds; i++)
		strv_free(g->cmds[i]);
	free(g->cmds);
	g->cmds = NULL;
	g->n_cmds = g->next = 0;
}

static void gluster_free(void *data)
{
	struct gluster_step *g = data;

	if (!g)
		return;
	free(g->volume);
	free(g->brick);
	strv_free(g->peers);
	strv_free(g->command);
	free(g->brick_path);
	cmds_clear(g);
	buf_free(&g->out);
	free(g);
}

/* Appends a command: the words, NULL-terminated. */
static void cmd_add(struct gluster_step *g, ...)
{
	char **argv = NULL;
	size_t n = 0;
	const char *w;
	va_list ap;

	va_start(ap, g);
	while ((w = va_arg(ap, const char *))) {
		argv = xrealloc(argv, (n + 2) * sizeof(char *));
		argv[n++] = xstrdup(w);
	}
	va_end(ap);
	argv = xrealloc(argv, (n + 1) * sizeof(char *));
	argv[n] = NULL;
	g->cmds = xrealloc(g->cmds, (g->n_cmds + 1) * sizeof(char **));
	g->cmds[g->n_cmds++] = argv;
}

static void cmd_add_v(struct gluster_step *g, char **argv)
{
	g->cmds = xrealloc(g->cmds, (g->n_cmds + 1) * sizeof(char **));
	g->cmds[g->n_cmds++] = argv;
}

static void run_next(struct gluster_step *g);

static void on_output(void *userdata, const char *data, size_t len)
{
	struct gluster_step *g = userdata;

	plan_step_output(g->x, data, len);
	if (g->out.len + len <= GLUSTER_OUTPUT_MAX)
		buf_append(&g->out, data, len);
}

static char *brick_of(const char *peer, const char *path)
{
	return xasprintf("%s:%s", peer, path);
}

static size_t peers_count(const struct gluster_step *g)
{
	size_t n = 0;

	while (g->peers[n])
		n++;
	return n;
}

/* After `volume info`: what is left to do. */
static void plan_rest(struct gluster_step *g, bool exists)
{
	size_t n = peers_count(g);
	_cleanup_free_ char *replica = xasprintf("%zu", n);

	if (!exists) {
		char **argv = xcalloc(n + 8, sizeof(char *));
		size_t k = 0;

		for (size_t i = 1; i < n; i++)
			cmd_add(g, "peer", "probe", g->peers[i], NULL);
		argv[k++] = xstrdup("volume");
		argv[k++] = xstrdup("create");
		argv[k++] = xstrdup(g->volume);
		if (n > 1) {
			argv[k++] = xstrdup("replica");
			argv[k++] = xstrdup(replica);
		}
		for (size_t i = 0; i < n; i++)
			argv[k++] = brick_of(g->peers[i], g->brick_path);
		argv[k++] = xstrdup("force");
		cmd_add_v(g, argv);
		cmd_add(g, "volume", "start", g->volume, NULL);
		cmd_add(g, "volume", "set", g->volume, "performance.cache-size", "256MB", NULL);
		return;
	}

	struct gluster_info info;
	char **add = xcalloc(n + 8, sizeof(char *));
	size_t k = 0;

	buf_append(&g->out, "", 1);
	(void)gluster_info_parse(g->out.data, strlen(g->out.data), &info);
	add[k++] = xstrdup("volume");
	add[k++] = xstrdup("add-brick");
	add[k++] = xstrdup(g->volume);
	add[k++] = xstrdup("replica");
	add[k++] = xstrdup(replica);
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *b = brick_of(g->peers[i], g->brick_path);
		bool have = false;

		for (size_t j = 0; j < info.n_bricks; j++)
			have = have || strcmp(info.bricks[j], b) == 0;
		if (!have) {
			cmd_add(g, "peer", "probe", g->peers[i], NULL);
			add[k++] = xstrdup(b);
		}
	}
	if (k > 5) {
		/* Removed peers are never pruned (reference §6): a replica
		 * count below the bricks present is not asked for. */
		if (n < info.n_bricks + (k - 5)) {
			free(add[4]);
			add[4] = xasprintf("%zu", info.n_bricks + (k - 5));
		}
		add[k++] = xstrdup("force");
		cmd_add_v(g, add);
		cmd_add(g, "volume", "heal", g->volume, "full", NULL);
	} else
		strv_free(add);
	if (!info.status || strcmp(info.status, "Started") != 0)
		cmd_add(g, "volume", "start", g->volume, NULL);
	if (!info.cache_size || strcmp(info.cache_size, "256MB") != 0)
		cmd_add(g, "volume", "set", g->volume, "performance.cache-size", "256MB", NULL);
	gluster_info_done(&info);
}

static void on_done(void *userdata, const struct exec_result *res)
{
	struct gluster_step *g = userdata;
	bool ok = !res->spawn_error && !res->term_signal && !res->timed_out && res->exit_status == 0;

	g->exec = NULL;
	if (g->info_phase) {
		bool absent = false;

		g->info_phase = false;
		if (!ok && !res->spawn_error && !res->term_signal && !res->timed_out) {
			buf_append(&g->out, "", 1);
			absent = gluster_info_says_absent(g->out.data, strlen(g->out.data), g->volume);
		}
		/* Only "does not exist" means absent: glusterd down, a timeout or
		 * any other failure must never lead to peer probe + volume create. */
		if (!ok && !absent) {
			_cleanup_free_ char *how = exec_result_describe(res, GLUSTER_TIMEOUT_MS);

			return plan_step_done(g->x, STEP_FAILED,
					      "gluster volume info %s: %s (not an answer that the volume does not exist)",
					      g->volume, how);
		}
		plan_rest(g, ok);
	} else if (!ok) {
		_cleanup_free_ char *how = exec_result_describe(res, GLUSTER_TIMEOUT_MS);

		return plan_step_done(g->x, STEP_FAILED, "gluster %s %s: %s", g->cmds[g->next - 1][0],
				      g->cmds[g->next - 1][1] ? g->cmds[g->next - 1][1] : "", how);
	} else
		g->changed = true;
	if (g->cancelled)
		return plan_step_done(g->x, STEP_FAILED, "cancelled");
	run_next(g);
}

static void spawn(struct gluster_step *g, char **suffix)
{
	static char *const env[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL };
	size_t a = 0, b = 0;
	char **argv;
	struct exec_opts o = { .env = env, .timeout_ms = GLUSTER_TIMEOUT_MS };
	int r;

	while (g->command[a])
		a++;
	while (suffix[b])
		b++;
	argv = xcalloc(a + b + 1, sizeof(char *));
	memcpy(argv, g->command, a * sizeof(char *));
	memcpy(argv + a, suffix, b * sizeof(char *));
	o.argv = argv;
	buf_reset(&g->out);
	r = exec_start(plan_exec_env(g->x)->loop, &o, on_output, on_done, g, &g->exec);
	free(argv);
	if (r < 0)
		plan_step_done(g->x, STEP_FAILED, "cannot run gluster: %s", strerror(-r));
	else
		plan_step_spawned(g->x, g->exec);
}

static void run_next(struct gluster_step *g)
{
	if (g->next >= g->n_cmds)
		return plan_step_done(g->x, g->changed ? STEP_CHANGED : STEP_UNCHANGED, NULL);
	spawn(g, g->cmds[g->next++]);
}

static void gluster_apply(struct step *s, struct plan_exec *x)
{
	struct gluster_step *g = s->data;
	_cleanup_close_ int rootfd = -1;
	char proc[64], buf[PATH_MAX];
	char *info[] = { "volume", "info", g->volume, NULL };
	ssize_t n;
	int fd;

	g->x = x;
	g->changed = g->cancelled = false;
	cmds_clear(g);
	rootfd = rootfs_open(plan_exec_env(x)->root);
	/* glusterd gets the brick as a path string: no name of it may be in a
	 * directory another user can write (rootfs.h). */
	fd = rootfd < 0 ? rootfd : rootfs_resolve_private(rootfd, g->brick, true);
	if (fd < 0)
		return plan_step_done(x, STEP_FAILED, "cannot open the brick directory %s: %s", g->brick,
				      rootfs_strerror(fd));
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return plan_step_done(x, STEP_FAILED, "cannot resolve %s: %m", g->brick);
	buf[n] = '\0';
	free(g->brick_path);
	g->brick_path = xstrdup(buf);
	g->info_phase = true;
	spawn(g, info);
}

static void gluster_cancel(struct step *s)
{
	struct gluster_step *g = s->data;

	g->cancelled = true;
	if (g->exec)
		exec_terminate(g->exec);
}

static int gluster_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			    char **ret_error)
{
	(void)s;
	(void)env;
	(void)ret_diff;
	(void)ret_error;
	*ret_action = "run";
	return 0;
}

static const struct step_ops gluster_ops = {
	.kind = "gluster",
	.describe = gluster_describe,
	.apply = gluster_apply,
	.cancel = gluster_cancel,
	.free_data = gluster_free,
};

struct step *plan_add_gluster(struct plan *p, const struct gluster_spec *spec, char **ret_error)
{
	struct gluster_step *g;

	if (!spec->brick || !path_is_safe_absolute(spec->brick)) {
		*ret_error = xasprintf("brick %s is not a safe absolute path", spec->brick ? spec->brick : "(null)");
		return NULL;
	}
	if (!spec->command || !spec->command[0]) {
		*ret_error = xstrdup("gluster_command is empty");
		return NULL;
	}
	g = xcalloc(1, sizeof(*g));
	g->volume = xstrdup(spec->volume);
	g->brick = xstrdup(spec->brick);
	g->peers = strv_dup(spec->peers ? spec->peers : (const char *const[]){ NULL });
	g->command = strv_dup(spec->command);
	buf_init(&g->out);
	return plan_add(p, &gluster_ops, spec->volume, g);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* The packages step (step_packages.h). */
#include "step_packages.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "io/exec.h"
#include "plan.h"
#include "util.h"
#include "strv.h"

#define QUERY_OUTPUT_MAX (1024 * 1024)

struct pkg_data {
	char **names, **query_argv, **install_argv;
	long timeout_sec;

	struct plan_exec *x;
	struct exec *proc;
	struct buf out;   /* the query's output */
	int stage;        /* 0 query, 1 install */
};

static void pkg_free(void *data)
{
	struct pkg_data *d = data;

	if (!d)
		return;
	strv_free(d->names);
	strv_free(d->query_argv);
	strv_free(d->install_argv);
	buf_free(&d->out);
	free(d);
}

const char **packages_missing(const char *output, size_t len, const char *const *wanted)
{
	size_t n = 0, k = 0;
	const char **missing;
	bool *installed;

	while (wanted && wanted[n])
		n++;
	installed = xcalloc(n + 1, sizeof(bool));
	for (size_t pos = 0; pos < len;) {
		const char *line = output + pos;
		const char *nl = memchr(line, '\n', len - pos);
		size_t l = nl ? (size_t)(nl - line) : len - pos;
		const char *sp = memchr(line, ' ', l);

		pos += l + 1;
		if (!sp)
			continue;
		/* "<name> installed" exactly; anything else is not installed. */
		if ((size_t)(line + l - (sp + 1)) != strlen("installed") || memcmp(sp + 1, "installed", 9) != 0)
			continue;
		for (size_t i = 0; i < n; i++) {
			size_t wl = strlen(wanted[i]);
			const char *colon = strchr(wanted[i], ':'); /* "pkg:arch" is reported as "pkg" */
			if (colon)
				wl = (size_t)(colon - wanted[i]);
			if ((size_t)(sp - line) == wl && memcmp(line, wanted[i], wl) == 0)
				installed[i] = true;
		}
	}
	missing = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		if (!installed[i])
			missing[k++] = wanted[i];
	free(installed);
	return missing;
}

static void pkg_next(struct pkg_data *d);

static void cb_output(void *userdata, const char *data, size_t len)
{
	struct pkg_data *d = userdata;

	if (d->stage == 0) {
		if (d->out.len + len <= QUERY_OUTPUT_MAX)
			buf_append(&d->out, data, len);
	} else
		plan_step_output(d->x, data, len);
}

static void cb_done(void *userdata, const struct exec_result *r)
{
	struct pkg_data *d = userdata;
	struct plan_exec *x = d->x;

	d->proc = NULL;
	/* dpkg-query exits 1 when a name is unknown: still an answer. */
	if (r->spawn_error || r->timed_out || r->term_signal || r->exit_status > (d->stage == 0 ? 1 : 0)) {
		_cleanup_free_ char *why = exec_result_describe(r, d->timeout_sec * 1000);
		if (d->stage == 0)
			plan_step_output(x, d->out.data ? d->out.data : "", d->out.len);
		d->x = NULL;
		return plan_step_done(x, STEP_FAILED, "package %s failed: %s", d->stage == 0 ? "query" : "install", why);
	}
	if (d->stage == 1) {
		d->x = NULL;
		return plan_step_done(x, STEP_CHANGED, NULL);
	}
	d->stage = 1;
	pkg_next(d);
}

static void pkg_spawn(struct pkg_data *d, char **argv)
{
	static char *const env[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
				     "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C", NULL };
	struct exec_opts o = { .argv = argv, .env = env, .timeout_ms = d->timeout_sec * 1000 };
	int r = exec_start(plan_exec_env(d->x)->loop, &o, cb_output, cb_done, d, &d->proc);

	if (r < 0) {
		struct plan_exec *x = d->x;
		d->x = NULL;
		plan_step_done(x, STEP_FAILED, "could not start %s: %s", argv[0], strerror(-r));
	} else
		plan_step_spawned(d->x, d->proc);
}

/* argv + names, NULL-terminated (malloc'd array of borrowed strings). */
static char **concat(char **argv, const char *const *names)
{
	size_t a = 0, n = 0;
	char **v;

	while (argv[a])
		a++;
	while (names[n])
		n++;
	v = xcalloc(a + n + 1, sizeof(char *));
	memcpy(v, argv, a * sizeof(char *));
	memcpy(v + a, names, n * sizeof(char *));
	return v;
}

static void pkg_next(struct pkg_data *d)
{
	if (d->stage == 0) {
		_cleanup_free_ char **argv = concat(d->query_argv, (const char *const *)d->names);
		buf_reset(&d->out);
		return pkg_spawn(d, argv);
	}
	{
		_cleanup_free_ const char **missing =
			packages_missing(d->out.data ? d->out.data : "", d->out.len, (const char *const *)d->names);
		_cleanup_free_ char **argv = NULL;
		struct buf msg;

		if (!missing[0]) {
			struct plan_exec *x = d->x;
			d->x = NULL;
			return plan_step_done(x, STEP_UNCHANGED, NULL);
		}
		buf_init(&msg);
		buf_puts(&msg, "installing:");
		for (size_t i = 0; missing[i]; i++)
			buf_printf(&msg, " %s", missing[i]);
		buf_puts(&msg, "\n");
		plan_step_output(d->x, msg.data, msg.len);
		buf_free(&msg);
		argv = concat(d->install_argv, missing);
		pkg_spawn(d, argv);
	}
}

static void pkg_apply(struct step *s, struct plan_exec *x)
{
	struct pkg_data *d = s->data;

	d->x = x;
	d->stage = 0;
	pkg_next(d);
}

static void pkg_cancel(struct step *s)
{
	struct pkg_data *d = s->data;

	if (d->proc)
		exec_terminate(d->proc);
}

/* dpkg's database, which the default package_query_command reads. */
#define DPKG_STATUS "/var/lib/dpkg/status"
#define DPKG_STATUS_MAX (64 * 1024 * 1024)

static bool query_is_default(char *const *argv)
{
	static const char *const def[] = { "dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", NULL };
	size_t i;

	for (i = 0; def[i]; i++)
		if (!argv[i] || strcmp(argv[i], def[i]) != 0)
			return false;
	return !argv[i];
}

/* What `dpkg-query -W -f='${Package} ${db:Status-Status}\n'` prints, read
 * from dpkg's status file: "<name> <status>" per stanza, status being the
 * third word of its Status field. */
static char *dpkg_status_lines(const char *db, size_t len)
{
	struct buf out;
	const char *name = NULL, *status = NULL;
	size_t name_len = 0, status_len = 0;

	buf_init(&out);
	for (size_t pos = 0; pos <= len;) {
		const char *line = db + pos;
		const char *nl = pos < len ? memchr(line, '\n', len - pos) : NULL;
		size_t l = pos < len ? (nl ? (size_t)(nl - line) : len - pos) : 0;

		pos += l + 1;
		if (l == 0) { /* the end of a stanza */
			if (name && status) {
				buf_append(&out, name, name_len);
				buf_puts(&out, " ");
				buf_append(&out, status, status_len);
				buf_puts(&out, "\n");
			}
			name = status = NULL;
			continue;
		}
		if (l > 9 && memcmp(line, "Package: ", 9) == 0) {
			name = line + 9;
			name_len = l - 9;
		} else if (l > 8 && memcmp(line, "Status: ", 8) == 0) {
			const char *w = memrchr(line, ' ', l);
			status = w + 1;
			status_len = (size_t)(line + l - status);
		}
	}
	return buf_steal(&out);
}

static int pkg_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			char **ret_error)
{
	struct pkg_data *d = s->data;
	_cleanup_free_ char *db = NULL, *lines = NULL;
	_cleanup_free_ const char **missing = NULL;
	size_t len = 0;

	/* Running the query would fork: with the default one, its answer is
	 * read from dpkg's status file, so that a converged instance plans
	 * "none" (design.md §5); another command is only said to run. */
	*ret_action = "check";
	if (!query_is_default(d->query_argv) ||
	    file_read_regular(AT_FDCWD, DPKG_STATUS, 0, DPKG_STATUS_MAX, &db, &len) < 0)
		return 0;
	lines = dpkg_status_lines(db, len);
	missing = packages_missing(lines ? lines : "", lines ? strlen(lines) : 0, (const char *const *)d->names);
	*ret_action = missing[0] ? "install" : "none";
	return 0;
}

static const struct step_ops packages_ops = {
	.kind = "packages",
	.describe = pkg_describe,
	.apply = pkg_apply,
	.cancel = pkg_cancel,
	.free_data = pkg_free,
};

struct step *plan_add_packages(struct plan *p, const struct packages_step_opts *o, char **ret_error)
{
	struct pkg_data *d;
	struct buf t;

	if (!o->names || !o->names[0] || !o->query_argv || !o->query_argv[0] || !o->install_argv ||
	    !o->install_argv[0]) {
		*ret_error = xstrdup("packages step without names or commands");
		return NULL;
	}
	d = xcalloc(1, sizeof(*d));
	d->names = strv_dup(o->names);
	d->query_argv = strv_dup(o->query_argv);
	d->install_argv = strv_dup(o->install_argv);
	d->timeout_sec = o->timeout_sec;
	buf_init(&d->out);
	buf_init(&t);
	for (size_t i = 0; o->names[i]; i++)
		buf_printf(&t, "%s%s", i ? " " : "", o->names[i]);
	{
		struct step *s = plan_add(p, &packages_ops, t.data, d);
		buf_free(&t);
		return s;
	}
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* agentctl's output: each method's result in text form (aligned fields and
 * tables, diffs, run output), or as JSON with --json, and the event lines of
 * streams. */
#include "output.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"
#include "proto.h"
#include "util.h"

/* ---- formatting helpers ---- */

static bool same_str(const char *a, const char *b)
{
	return a && b && strcmp(a, b) == 0;
}

static const char *str_or_dash(const json_t *v)
{
	static char num[32];

	if (json_is_string(v))
		return json_string_value(v)[0] ? json_string_value(v) : "-";
	if (json_is_integer(v)) {
		(void)snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return num;
	}
	if (json_is_real(v)) {
		(void)snprintf(num, sizeof(num), "%g", json_real_value(v));
		return num;
	}
	if (json_is_true(v))
		return "yes";
	if (json_is_false(v))
		return "no";
	return "-";
}

/* Any value as one line of text, into b. */
static void value_text(struct buf *b, const json_t *v)
{
	if (json_is_array(v)) {
		size_t i;
		json_t *x;

		if (json_array_size(v) == 0) {
			buf_puts(b, "-");
			return;
		}
		json_array_foreach(v, i, x)
		{
			if (i > 0)
				buf_puts(b, ", ");
			value_text(b, x);
		}
	} else if (json_is_object(v)) {
		char *s = json_dumps(v, JSON_COMPACT);
		buf_puts(b, s ? s : "?");
		free(s);
	} else
		buf_puts(b, str_or_dash(v));
}

/* s with C0 control characters and DEL written C-style (\n, \t, \r, \e,
 * \xNN), other bytes kept: a message from the daemon quotes what the stack
 * or another user chose, and a raw ESC or newline would drive the
 * terminal or forge a line of the output. Returns a malloc'd string. */
static char *escape_ctl(const char *s)
{
	struct buf b;

	buf_init(&b);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '\n')
			buf_puts(&b, "\\n");
		else if (*p == '\t')
			buf_puts(&b, "\\t");
		else if (*p == '\r')
			buf_puts(&b, "\\r");
		else if (*p == '\033')
			buf_puts(&b, "\\e");
		else if (*p < 0x20 || *p == 0x7f)
			buf_printf(&b, "\\x%02x", *p);
		else
			buf_append(&b, p, 1);
	}
	return buf_steal(&b);
}

static void print_field(const char *label, const char *value)
{
	_cleanup_free_ char *v = escape_ctl(value && *value ? value : "-");

	printf("%*s: %s\n", 13, label, v);
}

static void print_field_value(const char *label, const json_t *v)
{
	struct buf b;

	buf_init(&b);
	value_text(&b, v);
	print_field(label, b.data);
	buf_free(&b);
}

static void format_duration(char *out, size_t n, long long s)
{
	if (s >= 86400)
		(void)snprintf(out, n, "%lldd %lldh %lldmin", s / 86400, s % 86400 / 3600, s % 3600 / 60);
	else if (s >= 3600)
		(void)snprintf(out, n, "%lldh %lldmin %llds", s / 3600, s % 3600 / 60, s % 60);
	else if (s >= 60)
		(void)snprintf(out, n, "%lldmin %llds", s / 60, s % 60);
	else
		(void)snprintf(out, n, "%llds", s);
}

/* Steps are numbered from 1 for people, as in the run log. */
static const char *step_number(const json_t *index)
{
	static char num[32];

	if (!json_is_integer(index))
		return "-";
	(void)snprintf(num, sizeof(num), "%" JSON_INTEGER_FORMAT, json_integer_value(index) + 1);
	return num;
}

/* Milliseconds with one decimal, the way the run log shows them. */
static char *ms_cell(const json_t *v)
{
	return json_is_number(v) ? xasprintf("%.1f", json_number_value(v)) : xstrdup("-");
}

/* "12 configure success", plus the layer and app when set. */
static void run_summary(struct buf *b, const json_t *run)
{
	const json_t *layer = json_object_get(run, "layer"), *app = json_object_get(run, "app");

	if (json_is_integer(run)) {
		buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(run));
		return;
	}
	if (!json_is_object(run)) {
		buf_puts(b, "-");
		return;
	}
	buf_printf(b, "%s %s", str_or_dash(json_object_get(run, "id")), str_or_dash(json_object_get(run, "event")));
	if (json_is_string(layer))
		buf_printf(b, " layer %s", json_string_value(layer));
	if (json_is_string(app))
		buf_printf(b, " app %s", json_string_value(app));
	if (json_object_get(run, "status"))
		buf_printf(b, " %s", str_or_dash(json_object_get(run, "status")));
}

/* What a waiting run waits for (its waiting_for, design.md §5/§9), as
 * "semaphore deploy-shop held by app1, app3" ("..., ignoring junk keys
 * K1, K2" when the lock ignores some, issue 12 #6). Nothing when v is no
 * object. */
static void waiting_text(struct buf *b, const json_t *v)
{
	const json_t *sem = json_object_get(v, "semaphore"), *lock = json_object_get(v, "lock");
	const json_t *holders = json_object_get(v, "holders"), *ignored = json_object_get(v, "ignored");

	if (!json_is_object(v))
		return;
	buf_printf(b, "%s %s", json_is_string(lock) ? "lock" : "semaphore", str_or_dash(json_is_string(lock) ? lock : sem));
	if (json_array_size(holders) > 0) {
		buf_puts(b, " held by ");
		value_text(b, holders);
	}
	if (json_array_size(ignored) > 0) {
		buf_puts(b, ", ignoring junk keys ");
		value_text(b, ignored);
	}
}

/* "Waiting for: semaphore deploy-shop held by app1" when v is an object. */
static void print_waiting(const json_t *v)
{
	struct buf b;

	if (!json_is_object(v))
		return;
	buf_init(&b);
	waiting_text(&b, v);
	for (char *p = b.data; p && *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	print_field("Waiting for", b.data);
	buf_free(&b);
}

/* A table with columns sized to their widest cell. cells is rows x ncols. */
static void print_table(const char *const *header, size_t ncols, char **cells, size_t nrows)
{
	size_t width[16] = { 0 };

	for (size_t c = 0; c < ncols; c++)
		width[c] = strlen(header[c]);
	for (size_t r = 0; r < nrows; r++)
		for (size_t c = 0; c < ncols; c++) {
			size_t l = strlen(cells[r * ncols + c]);
			if (l > width[c])
				width[c] = l;
		}
	for (size_t r = 0; r <= nrows; r++) {
		const char *const *row = r == 0 ? header : (const char *const *)cells + (r - 1) * ncols;
		size_t last = ncols;

		/* No trailing blanks when the last cells are empty. */
		while (last > 1 && !*row[last - 1])
			last--;
		for (size_t c = 0; c < last; c++) {
			if (c + 1 < last)
				printf("%-*s  ", (int)width[c], row[c]);
			else
				printf("%s\n", row[c]);
		}
	}
}

static char *cell(const json_t *v)
{
	struct buf b;
	char *s;

	buf_init(&b);
	value_text(&b, v);
	s = buf_steal(&b);
	/* One line per row; other control characters escaped. */
	for (char *p = s; *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	char *e = escape_ctl(s);
	free(s);
	return e;
}

static void free_cells(char **cells, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(cells[i]);
	free(cells);
}

/* ---- printers (text form) ---- */

/* A microsecond epoch as "2026-11-30 17:05:00 UTC (in 42s)", for people. */
/* A run's status cell: "waiting (app1, app3)" names the holders. */
static char *status_cell(const json_t *run)
{
	const json_t *holders = json_object_get(json_object_get(run, "waiting_for"), "holders");
	json_t *text;
	struct buf b;
	char *c;

	if (!same_str(json_string_value(json_object_get(run, "status")), "waiting") || json_array_size(holders) == 0)
		return cell(json_object_get(run, "status"));
	buf_init(&b);
	buf_puts(&b, "waiting (");
	value_text(&b, holders);
	buf_puts(&b, ")");
	text = json_string(b.data);
	buf_free(&b);
	c = cell(text ? text : json_object_get(run, "status"));
	json_decref(text);
	return c;
}

static void format_when(struct buf *b, long long usec)
{
	time_t t = (time_t)(usec / 1000000);
	long long now = (long long)time(NULL), left = usec / 1000000 - now;
	char d[64], when[64];
	struct tm tm;

	if (!gmtime_r(&t, &tm) || strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm) == 0) {
		buf_printf(b, "%lld", usec);
		return;
	}
	format_duration(d, sizeof(d), left < 0 ? -left : left);
	buf_printf(b, "%s (%s%s%s)", when, left < 0 ? "" : "in ", d, left < 0 ? " ago" : "");
}

/* Each recorded failure on its own line, aligned under the first:
 * "configure layer web: run 12, 3 failures, retry at ... (in 42s)". The
 * daemon gives next_retry in microseconds since the epoch, 0: no retry. */
static void print_failed(const json_t *failed)
{
	size_t i;
	json_t *f;

	if (!json_is_array(failed) || json_array_size(failed) == 0) {
		print_field_value("Failed", failed);
		return;
	}
	json_array_foreach(failed, i, f)
	{
		const json_t *next = json_object_get(f, "next_retry");
		const json_t *count = json_object_get(f, "count");
		struct buf b;

		buf_init(&b);
		buf_puts(&b, str_or_dash(json_object_get(f, "event")));
		if (json_is_string(json_object_get(f, "layer")))
			buf_printf(&b, " layer %s", json_string_value(json_object_get(f, "layer")));
		if (json_is_string(json_object_get(f, "app")))
			buf_printf(&b, " app %s", json_string_value(json_object_get(f, "app")));
		buf_printf(&b, ": run %s", str_or_dash(json_object_get(f, "run")));
		if (json_is_integer(count))
			buf_printf(&b, ", %" JSON_INTEGER_FORMAT " failure%s", json_integer_value(count),
				   json_integer_value(count) == 1 ? "" : "s");
		if (json_is_integer(next) && json_integer_value(next) > 0) {
			buf_puts(&b, ", retry at ");
			format_when(&b, (long long)json_integer_value(next));
		} else
			buf_puts(&b, ", no retry (run it again or clear-failed)");
		if (i == 0)
			print_field("Failed", b.data);
		else
			printf("%*s  %s\n", 13, "", b.data);
		buf_free(&b);
	}
}

/* Why the fetched revision is not the applied one yet. */
static const char *pending_reason(const json_t *r)
{
	const char *state = json_string_value(json_object_get(r, "state"));
	const json_t *settling = json_object_get(r, "settling");
	const json_t *cur = json_object_get(r, "current_run");
	size_t i;
	json_t *q;

	if (state && strcmp(state, "paused") == 0)
		return "resume to apply";
	if (settling && !json_is_false(settling) && !json_is_null(settling))
		return "settling";
	if (json_is_object(cur) && same_str(json_string_value(json_object_get(cur, "trigger")), "stack-change"))
		return "running";
	json_array_foreach(json_object_get(r, "queue"), i, q) if (same_str(json_string_value(json_object_get(q, "trigger")),
									  "stack-change")) return "queued";
	if (state && strcmp(state, "unassigned") == 0)
		return "no layer of this instance";
	return NULL;
}

/* The applied revision, with what is pending when the fetched one differs:
 * "1 change pending (resume to apply)". Only the newest revision is ever
 * applied, so one change is pending however many came meanwhile. */
static void print_applied(const json_t *r, const json_t *src)
{
	const json_t *applied = json_object_get(r, "applied_revision");
	const char *fetched = json_string_value(json_object_get(src, "stack_revision")), *why;
	struct buf b;

	if (!applied)
		applied = json_object_get(src, "applied_revision");
	if (!applied && !fetched)
		return;
	buf_init(&b);
	buf_puts(&b, str_or_dash(applied));
	if (fetched && !same_str(json_string_value(applied), fetched)) {
		why = pending_reason(r);
		buf_printf(&b, ", 1 change pending%s%s%s", why ? " (" : "", why ? why : "", why ? ")" : "");
	}
	print_field("Applied", b.data);
	buf_free(&b);
}

static void print_paused(const json_t *paused)
{
	if (json_is_string(paused))
		print_field("Paused", json_string_value(paused)[0] ? json_string_value(paused) : "yes (no reason given)");
	else
		print_field("Paused", "no");
}

int print_status(const json_t *r)
{
	static const char *const known[] = { "instance", "layers",   "state",   "current_run",	    "last_run",
					     "source",	 "queue",    "uptime",  "version",	    "failed",
					     "paused",	 "settling", "applied_revision", NULL };
	const json_t *src = json_object_get(r, "source");
	const json_t *last = json_object_get(r, "last_run");
	const json_t *q = json_object_get(r, "queue");
	const json_t *up = json_object_get(r, "uptime");
	struct buf b;
	const char *k;
	json_t *v;

	buf_init(&b);
	print_field_value("Instance", json_object_get(r, "instance"));
	print_field_value("Layers", json_object_get(r, "layers"));
	print_field_value("State", json_object_get(r, "state"));
	run_summary(&b, json_object_get(r, "current_run"));
	print_field("Current run", b.data);
	buf_reset(&b);
	print_waiting(json_object_get(json_object_get(r, "current_run"), "waiting_for"));
	run_summary(&b, last);
	if (json_is_object(last) && json_is_string(json_object_get(last, "finished")))
		buf_printf(&b, " (finished %s)", json_string_value(json_object_get(last, "finished")));
	print_field("Last run", b.data);
	buf_reset(&b);
	if (json_is_object(src)) {
		print_field_value("Source", json_object_get(src, "url"));
		print_field_value("Last fetch", json_object_get(src, "last_fetch"));
		print_field_value("Last change", json_object_get(src, "last_change"));
		print_field_value("Source error", json_object_get(src, "error"));
		print_field_value("Revision", json_object_get(src, "stack_revision"));
		print_applied(r, src);
	} else
		print_field_value("Source", src);
	if (json_is_array(q)) {
		size_t i;
		json_t *x;

		buf_printf(&b, "%zu", json_array_size(q));
		json_array_foreach(q, i, x)
		{
			buf_puts(&b, i == 0 ? " (" : ", ");
			if (json_is_object(x)) {
				buf_puts(&b, str_or_dash(json_object_get(x, "event")));
				if (json_is_string(json_object_get(x, "layer")))
					buf_printf(&b, " layer %s", json_string_value(json_object_get(x, "layer")));
				if (json_is_string(json_object_get(x, "app")))
					buf_printf(&b, " app %s", json_string_value(json_object_get(x, "app")));
			} else
				value_text(&b, x);
		}
		if (json_array_size(q) > 0)
			buf_puts(&b, ")");
		print_field("Queue", b.data);
		buf_reset(&b);
	} else
		print_field_value("Queue", q);
	if (json_is_number(up)) {
		char d[64];
		format_duration(d, sizeof(d), (long long)json_number_value(up));
		print_field("Uptime", d);
	} else
		print_field_value("Uptime", up);
	print_field_value("Version", json_object_get(r, "version"));
	print_paused(json_object_get(r, "paused"));
	print_failed(json_object_get(r, "failed"));

	/* Whatever else the daemon reports, so that new fields show up. */
	json_object_foreach((json_t *)r, k, v)
	{
		bool seen = false;
		char label[64];

		for (size_t i = 0; known[i]; i++)
			if (strcmp(known[i], k) == 0)
				seen = true;
		if (seen)
			continue;
		(void)snprintf(label, sizeof(label), "%s", k);
		label[0] = (char)(label[0] >= 'a' && label[0] <= 'z' ? label[0] - 'a' + 'A' : label[0]);
		for (char *p = label; *p; p++)
			if (*p == '_')
				*p = ' ';
		print_field_value(label, v);
	}
	buf_free(&b);
	return 0;
}

int print_runs(const json_t *r)
{
	static const char *const header[] = { "ID", "EVENT", "LAYER", "APP", "TRIGGER", "STATUS", "STARTED", "CHANGED" };
	static const char *const keys[] = { "id", "event", "layer", "app", "trigger", "status", "started", "changed" };
	const json_t *runs = json_object_get(r, "runs");
	size_t n = json_array_size(runs), i;
	char **cells;
	json_t *run;

	if (n == 0) {
		printf("No runs.\n");
		return 0;
	}
	cells = xcalloc(n * ELEMENTSOF(keys), sizeof(char *));
	json_array_foreach(runs, i, run) for (size_t c = 0; c < ELEMENTSOF(keys); c++)
		cells[i * ELEMENTSOF(keys) + c] =
			strcmp(keys[c], "status") == 0 ? status_cell(run) : cell(json_object_get(run, keys[c]));
	print_table(header, ELEMENTSOF(header), cells, n);
	free_cells(cells, n * ELEMENTSOF(keys));
	return 0;
}

int print_show(const json_t *r)
{
	static const char *const header[] = { "#", "KIND", "TARGET", "STATUS", "MS", "ERROR" };
	const json_t *steps = json_object_get(r, "steps");
	size_t n = json_array_size(steps), i;
	char **cells;
	json_t *step;

	print_field_value("Run", json_object_get(r, "id"));
	print_field_value("Event", json_object_get(r, "event"));
	print_field_value("Layer", json_object_get(r, "layer"));
	print_field_value("App", json_object_get(r, "app"));
	print_field_value("Trigger", json_object_get(r, "trigger"));
	print_field_value("Status", json_object_get(r, "status"));
	print_waiting(json_object_get(r, "waiting_for"));
	print_field_value("Started", json_object_get(r, "started"));
	print_field_value("Finished", json_object_get(r, "finished"));
	print_field_value("Changed", json_object_get(r, "changed"));
	if (json_object_get(r, "error"))
		print_field_value("Error", json_object_get(r, "error"));
	if (json_object_get(r, "steps_error"))
		print_field_value("Steps", json_object_get(r, "steps_error"));
	if (json_object_get(r, "steps_omitted"))
		print_field_value("Steps omitted", json_object_get(r, "steps_omitted"));
	if (n == 0)
		return 0;
	printf("\n");
	cells = xcalloc(n * 6, sizeof(char *));
	json_array_foreach(steps, i, step)
	{
		json_t *idx = json_object_get(step, "index");
		cells[i * 6] = json_is_integer(idx) ? xstrdup(step_number(idx)) : xasprintf("%zu", i + 1);
		cells[i * 6 + 1] = cell(json_object_get(step, "kind"));
		cells[i * 6 + 2] = cell(json_object_get(step, "target"));
		cells[i * 6 + 3] = cell(json_object_get(step, "status"));
		cells[i * 6 + 4] = ms_cell(json_object_get(step, "duration_ms"));
		cells[i * 6 + 5] = json_object_get(step, "error") ? cell(json_object_get(step, "error")) : xstrdup("");
	}
	print_table(header, 6, cells, n);
	free_cells(cells, n * 6);
	return 0;
}

int print_plan(const json_t *r)
{
	static const char *const header[] = { "ACTION", "KIND", "TARGET", "RECIPE", "NOTE" };
	const json_t *steps = json_object_get(r, "steps");
	size_t n = json_array_size(steps), i;
	char **cells;
	json_t *step;

	/* An unassigned instance (design.md §3 Identity): say why there is
	 * nothing, rather than that nothing needs doing. */
	if (json_is_string(json_object_get(r, "warning")))
		printf("Warning: %s\n", json_string_value(json_object_get(r, "warning")));
	if (n == 0) {
		if (!json_is_string(json_object_get(r, "warning")))
			printf("Nothing to do.\n");
		return 0;
	}
	cells = xcalloc(n * 5, sizeof(char *));
	json_array_foreach(steps, i, step)
	{
		const json_t *recipe = json_object_get(step, "recipe");
		const json_t *error = json_object_get(step, "error"), *message = json_object_get(step, "message");

		cells[i * 5] = cell(json_object_get(step, "action"));
		cells[i * 5 + 1] = cell(json_object_get(step, "kind"));
		cells[i * 5 + 2] = cell(json_object_get(step, "target"));
		cells[i * 5 + 3] = json_is_string(recipe) ? xasprintf("(%s)", json_string_value(recipe)) : xstrdup("");
		/* Why it would fail, else what the step says of itself (a user
		 * not created under a test root): the reader needs no --json. */
		cells[i * 5 + 4] = json_is_string(error) ? cell(error) : json_is_string(message) ? cell(message) : xstrdup("");
	}
	print_table(header, 5, cells, n);
	free_cells(cells, n * 5);
	json_array_foreach(steps, i, step)
	{
		const char *diff = json_string_value(json_object_get(step, "diff"));
		size_t l;

		if (!diff || !*diff)
			continue;
		printf("\n");
		fputs(diff, stdout);
		l = strlen(diff);
		if (diff[l - 1] != '\n')
			printf("\n");
	}
	return 0;
}

int print_version(const json_t *r)
{
	printf("agentctl %s (protocol %d)\n", AGENTD_VERSION, PROTO_VERSION);
	printf("agentd %s (protocol %s)\n", str_or_dash(json_object_get(r, "version")),
	       str_or_dash(json_object_get(r, "protocol")));
	return 0;
}

/* After an upgrade whose restart has not happened yet, the agentd that
 * answers is older than the agentctl installed: said on stderr, in both
 * forms; the command still succeeds. */
static void version_warn(const json_t *r)
{
	const char *daemon = json_string_value(json_object_get(r, "version"));

	if (daemon && strcmp(daemon, AGENTD_VERSION) != 0)
		fprintf(stderr,
			"agentctl: warning: agentd runs version %s but agentctl is version %s; "
			"was agentd restarted after the upgrade? (systemctl restart agentd)\n",
			daemon, AGENTD_VERSION);
}

/* The exposition text that metrics_file holds (lib/metrics.h); why the
 * file cannot be written goes to stderr. */
int print_metrics(const json_t *r)
{
	const char *err = json_string_value(json_object_get(r, "file_error"));
	struct buf text;

	buf_init(&text);
	metrics_text(r, &text);
	fputs(text.data, stdout);
	buf_free(&text);
	if (err)
		fprintf(stderr, "agentctl: warning: the metrics file cannot be written: %s\n", err);
	return 0;
}

int print_queued(const json_t *r)
{
	printf("Queued run %s.\n", str_or_dash(json_object_get(r, "id")));
	return 0;
}

int print_log(const json_t *r)
{
	const char *out = json_string_value(json_object_get(r, "output"));

	if (json_is_true(json_object_get(r, "truncated")))
		fprintf(stderr, "agentctl: showing the end of the log only\n");
	if (out)
		fputs(out, stdout);
	return 0;
}

/* log -f: what print_log prints (the output came as events while the run
 * went on; a run over before we asked comes whole in the reply), and the
 * exit code of run --wait: 1 unless the run succeeded. */
int print_log_follow(const json_t *r)
{
	const char *status = json_string_value(json_object_get(r, "status"));

	(void)print_log(r);
	return status && strcmp(status, "success") == 0 ? 0 : EXIT_FAILED;
}

/* A finished run waited for: its summary, and exit 1 unless it succeeded. */
int print_run_result(const json_t *r)
{
	const char *status = json_string_value(json_object_get(r, "status"));
	const json_t *steps = json_object_get(r, "steps");
	const json_t *changed = json_object_get(r, "changed");

	printf("Run %s %s", str_or_dash(json_object_get(r, "id")), status ? status : "finished");
	if (json_is_array(steps))
		printf(": %zu steps", json_array_size(steps));
	if (json_is_integer(changed))
		printf(", %" JSON_INTEGER_FORMAT " changed", json_integer_value(changed));
	printf(".\n");
	return status && strcmp(status, "success") == 0 ? 0 : EXIT_FAILED;
}

int print_generic(const json_t *r)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)r, k, v) print_field_value(k, v);
	return 0;
}

int print_resumed(const json_t *r)
{
	printf("Resumed: stack changes apply again.\n");
	return 0;
}

int print_cleared(const json_t *r)
{
	printf("Cleared the failed state: no retries are due.\n");
	return 0;
}

int print_reloaded(const json_t *r)
{
	printf("Fetching the stack source now.\n");
	return 0;
}

/* One instance per line. LAYERS comma-joined (one cell), LAST RUN "id event
 * status", LEASE the seconds left on its etcd lease ("-": none, the static
 * members of other sources). Then "HOSTNAME: error" for each registration
 * the effective stack leaves out (STATE "invalid") or names a missing
 * layer. */
int print_fleet(const json_t *r)
{
	static const char *const header[] = { "HOSTNAME", "LAYERS", "ADDRESS", "STATE", "APPLIED", "LAST RUN", "LEASE" };
	const json_t *insts = json_object_get(r, "instances");
	size_t n = json_array_size(insts), i, nc = ELEMENTSOF(header);
	char **cells;
	json_t *in;

	if (n == 0) {
		printf("No instances.\n");
		return 0;
	}
	cells = xcalloc(n * nc, sizeof(char *));
	json_array_foreach(insts, i, in)
	{
		const json_t *layers = json_object_get(in, "layers"), *l;
		struct buf b;
		size_t k;

		buf_init(&b);
		json_array_foreach(layers, k, l) buf_printf(&b, "%s%s", k ? "," : "", str_or_dash(l));
		if (b.len == 0)
			buf_puts(&b, "-");
		cells[i * nc + 0] = cell(json_object_get(in, "hostname"));
		cells[i * nc + 1] = buf_steal(&b);
		cells[i * nc + 2] = cell(json_object_get(in, "address"));
		cells[i * nc + 3] = cell(json_object_get(in, "state"));
		cells[i * nc + 4] = cell(json_object_get(in, "applied_revision"));
		buf_init(&b);
		run_summary(&b, json_object_get(in, "last_run"));
		cells[i * nc + 5] = buf_steal(&b);
		cells[i * nc + 6] = cell(json_object_get(in, "lease_ttl"));
	}
	print_table(header, nc, cells, n);
	free_cells(cells, n * nc);
	/* Why a registration is left out (STATE "invalid") or incomplete. */
	json_array_foreach(insts, i, in)
	{
		const char *err = json_string_value(json_object_get(in, "error"));
		if (err)
			printf("%s: %s\n", str_or_dash(json_object_get(in, "hostname")), err);
	}
	return 0;
}

/* One job per line: NAME, SCHEDULE (cron, UTC), SPLAY as "+OFFSET/SPLAY"
 * seconds, LAST RUN "id status", LAST SUCCESS, NEXT RUN, LOCK (the lock's
 * name, with " (held)" while this instance holds it; "-": none). */
int print_schedule(const json_t *r)
{
	static const char *const header[] = { "JOB", "SCHEDULE", "SPLAY", "LAST RUN", "LAST SUCCESS", "NEXT RUN", "LOCK" };
	const json_t *jobs = json_object_get(r, "jobs");
	size_t n = json_array_size(jobs), i, nc = ELEMENTSOF(header);
	char **cells;
	json_t *j;

	if (n == 0) {
		printf("No maintenance jobs on this instance.\n");
		return 0;
	}
	cells = xcalloc(n * nc, sizeof(char *));
	json_array_foreach(jobs, i, j)
	{
		const json_t *last = json_object_get(j, "last_run"), *lock = json_object_get(j, "lock");

		cells[i * nc + 0] = cell(json_object_get(j, "name"));
		cells[i * nc + 1] = cell(json_object_get(j, "schedule"));
		cells[i * nc + 2] = xasprintf("+%" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT,
					      json_integer_value(json_object_get(j, "offset")),
					      json_integer_value(json_object_get(j, "splay")));
		cells[i * nc + 3] = json_is_object(last) ? xasprintf("%" JSON_INTEGER_FORMAT " %s",
								    json_integer_value(json_object_get(last, "id")),
								    str_or_dash(json_object_get(last, "status")))
							 : xstrdup("-");
		cells[i * nc + 4] = cell(json_object_get(j, "last_success"));
		cells[i * nc + 5] = cell(json_object_get(j, "next_run"));
		cells[i * nc + 6] = json_is_string(lock) ? xasprintf("%s%s", json_string_value(lock),
								     json_is_true(json_object_get(j, "holds_lock")) ? " (held)" : "")
							 : xstrdup("-");
	}
	print_table(header, nc, cells, n);
	free_cells(cells, n * nc);
	if (json_is_true(json_object_get(r, "paused")))
		printf("Paused: jobs that fall due are held and run once at resume.\n");
	return 0;
}

/* "pushed: PREFIX/stack at revision N (based on B)". */
int print_pushed(const json_t *r)
{
	const char *key = json_string_value(json_object_get(r, "key"));

	printf("pushed: %s at revision %s", key ? key : "the stack", str_or_dash(json_object_get(r, "revision")));
	printf(" (based on %s)\n", str_or_dash(json_object_get(r, "base")));
	return 0;
}

/* The base for `stack push --base`: the etcd mod revision of PREFIX/stack
 * that the agent read (status's source.stack_mod_revision); for other
 * sources, which have no such number, the stack_revision hash of the
 * document, so that the command says which document the agent holds. */
int print_stack_revision(const json_t *r)
{
	const json_t *src = json_object_get(r, "source");
	const json_t *mod = json_object_get(src, "stack_mod_revision");
	const json_t *hash = json_object_get(src, "stack_revision");

	if (json_is_integer(mod) || json_is_string(mod))
		printf("%s\n", str_or_dash(mod));
	else if (json_is_string(hash))
		printf("%s\n", json_string_value(hash));
	else {
		fprintf(stderr, "agentctl: the agent has read no stack yet\n");
		return EXIT_FAILED;
	}
	return 0;
}

/* Event lines of streams, in text form. */
void print_event(const json_t *ev)
{
	const char *name = json_string_value(json_object_get(ev, "event"));
	const json_t *run = json_object_get(ev, "run");

	if (!name)
		return;
	if (strcmp(name, "output") == 0) {
		const char *data = json_string_value(json_object_get(ev, "data"));
		if (data)
			fputs(data, stdout);
	} else if (strcmp(name, "run-queued") == 0)
		printf("Run %s queued.\n", str_or_dash(run));
	else if (strcmp(name, "run-started") == 0)
		printf("Run %s started.\n", str_or_dash(run));
	/* Steps need no line of their own: the output has the run log's
	 * "==> [n/N] kind target" and "<== status" lines. */
	fflush(stdout);
}

int output_result(const char *method, const json_t *result, int (*print)(const json_t *result), bool json)
{
	int r;

	if (strcmp(method, "version") == 0)
		version_warn(result);
	if (json) {
		const json_t *doc = result;
		char *s;

		json_auto_t *rev = NULL;

		if (strcmp(method, "stack") == 0)
			doc = json_object_get(result, "stack");
		/* version: the daemon's "version" and "protocol", and ours. */
		if (strcmp(method, "version") == 0 && json_is_object(result)) {
			doc = rev = json_copy((json_t *)result);
			json_object_set_new(rev, "agentctl_version", json_string(AGENTD_VERSION));
			json_object_set_new(rev, "agentctl_protocol", json_integer(PROTO_VERSION));
		}
		if (print == print_stack_revision) {
			const json_t *src = json_object_get(result, "source");
			const json_t *mod = json_object_get(src, "stack_mod_revision");
			const json_t *hash = json_object_get(src, "stack_revision");

			doc = rev = json_pack("{s:O, s:O}", "stack_mod_revision", mod ? mod : json_null(), "stack_revision",
					      hash ? hash : json_null());
		}
		s = json_dumps(doc ? doc : json_null(), JSON_INDENT(2) | JSON_ENCODE_ANY);
		if (s)
			printf("%s\n", s);
		free(s);
		r = 0;
		/* A run waited for (or followed) still fails the command when it failed. */
		if (print == print_run_result || print == print_log_follow) {
			const char *status = json_string_value(json_object_get(result, "status"));
			r = status && strcmp(status, "success") == 0 ? 0 : EXIT_FAILED;
		}
	} else if (strcmp(method, "stack") == 0) {
		char *s = json_dumps(json_object_get(result, "stack") ?: json_null(), JSON_INDENT(2) | JSON_ENCODE_ANY);
		if (s)
			printf("%s\n", s);
		free(s);
		r = 0;
	} else
		r = print ? print(result) : 0;
	return r;
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* agentctl's output: each method's result in text form (aligned fields and
 * tables, diffs, run output), or as JSON with --json, and the event lines of
 * streams. */
#include "output.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "proto.h"
#include "util.h"

/* ---- formatting helpers ---- */

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

static void print_field(const char *label, const char *value)
{
	printf("%*s: %s\n", 13, label, value && *value ? value : "-");
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
	/* One line per row. */
	for (char *p = s; *p; p++)
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	return s;
}

static void free_cells(char **cells, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(cells[i]);
	free(cells);
}

/* ---- printers (text form) ---- */

int print_status(const json_t *r)
{
	static const char *const known[] = { "instance",   "layers", "state",	"current_run", "last_run",
					     "source",	   "queue",  "uptime", "version",     NULL };
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
		cells[i * ELEMENTSOF(keys) + c] = cell(json_object_get(run, keys[c]));
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
	static const char *const header[] = { "ACTION", "KIND", "TARGET", "RECIPE" };
	const json_t *steps = json_object_get(r, "steps");
	size_t n = json_array_size(steps), i;
	char **cells;
	json_t *step;

	if (n == 0) {
		printf("Nothing to do.\n");
		return 0;
	}
	cells = xcalloc(n * 4, sizeof(char *));
	json_array_foreach(steps, i, step)
	{
		const json_t *recipe = json_object_get(step, "recipe");
		cells[i * 4] = cell(json_object_get(step, "action"));
		cells[i * 4 + 1] = cell(json_object_get(step, "kind"));
		cells[i * 4 + 2] = cell(json_object_get(step, "target"));
		cells[i * 4 + 3] = json_is_string(recipe) ? xasprintf("(%s)", json_string_value(recipe)) : xstrdup("");
	}
	print_table(header, 4, cells, n);
	free_cells(cells, n * 4);
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
	printf("agentctl %s\n", AGENTD_VERSION);
	printf("agentd %s (protocol %s)\n", str_or_dash(json_object_get(r, "version")),
	       str_or_dash(json_object_get(r, "protocol")));
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

int print_nothing(const json_t *r)
{
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
	else if (strcmp(name, "step-started") == 0) {
		printf("[%s] %s", step_number(json_object_get(ev, "index")), str_or_dash(json_object_get(ev, "kind")));
		printf(" %s\n", str_or_dash(json_object_get(ev, "target")));
	} else if (strcmp(name, "step-finished") == 0) {
		const json_t *ms = json_object_get(ev, "duration_ms");
		const json_t *err = json_object_get(ev, "error");

		printf("[%s] %s", step_number(json_object_get(ev, "index")), str_or_dash(json_object_get(ev, "status")));
		if (json_is_number(ms))
			printf(" (%.1f ms)", json_number_value(ms));
		if (json_is_string(err))
			printf(": %s", json_string_value(err));
		printf("\n");
	}
	fflush(stdout);
}

int output_result(const char *method, const json_t *result, int (*print)(const json_t *result), bool json)
{
	int r;

	if (json) {
		const json_t *doc = result;
		char *s;

		if (strcmp(method, "stack") == 0)
			doc = json_object_get(result, "stack");
		s = json_dumps(doc ? doc : json_null(), JSON_INDENT(2) | JSON_ENCODE_ANY);
		if (s)
			printf("%s\n", s);
		free(s);
		r = 0;
		/* A run waited for still fails the command when it failed. */
		if (print == print_run_result) {
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

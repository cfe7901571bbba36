/* SPDX-License-Identifier: BSD-2-Clause */
/* agentctl: drives agentd through its control socket (design.md §5), in the
 * shape of bgpctl and networkctl: arguments parsed from a verb table and
 * checked before connecting, one request, the reply printed through a text
 * or a JSON form.
 *
 * Exit codes: 0 success; 1 the run or request failed; 2 usage error;
 * 3 cannot reach the daemon (or the connection dropped before the final
 * reply); 4 permission denied. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "event.h"
#include "proto.h"
#include "util.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_UNREACHABLE 3
#define EXIT_DENIED 4

#define CTL_TIMEOUT_MS 30000         /* for a reply to a request that does not stream */
#define CTL_MAX_REPLY (256u << 20)   /* bytes in one reply line (a stack is at most 16 MiB) */
#define CTL_LIMIT_RETRIES 50         /* when the daemon is at its connection limit */

static const char *arg_socket;
static bool arg_json;

static void usage_error(const char *fmt, ...) _printf_(1, 2);

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

static int print_status(const json_t *r)
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

static int print_runs(const json_t *r)
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

static int print_show(const json_t *r)
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

static int print_plan(const json_t *r)
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

static int print_version(const json_t *r)
{
	printf("agentctl %s\n", AGENTD_VERSION);
	printf("agentd %s (protocol %s)\n", str_or_dash(json_object_get(r, "version")),
	       str_or_dash(json_object_get(r, "protocol")));
	return 0;
}

static int print_queued(const json_t *r)
{
	printf("Queued run %s.\n", str_or_dash(json_object_get(r, "id")));
	return 0;
}

static int print_log(const json_t *r)
{
	const char *out = json_string_value(json_object_get(r, "output"));

	if (json_is_true(json_object_get(r, "truncated")))
		fprintf(stderr, "agentctl: showing the end of the log only\n");
	if (out)
		fputs(out, stdout);
	return 0;
}

/* A finished run waited for: its summary, and exit 1 unless it succeeded. */
static int print_run_result(const json_t *r)
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

static int print_generic(const json_t *r)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)r, k, v) print_field_value(k, v);
	return 0;
}

static int print_nothing(const json_t *r)
{
	return 0;
}

/* Event lines of streams, in text form. */
static void print_event(const json_t *ev)
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

/* ---- verbs ---- */

struct request {
	json_t *params; /* owned */
	bool streams;   /* no reply timeout; event lines before the reply */
	int (*print)(const json_t *result);
};

struct verb {
	const char *name;
	const char *method;
	const char *args;
	const char *help;
	int (*parse)(int argc, char **argv, struct request *req); /* argv[0] is the verb */
	int (*print)(const json_t *result);
};

/* "setup, configure, ..." from lib/event.c, for usage messages. */
static const char *event_list(void)
{
	static char list[128];

	if (!list[0])
		for (int e = 0; e < _EVENT_MAX; e++)
			snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", e ? ", " : "",
				 event_to_string((enum event)e));
	return list;
}

static void check_event(const char *ev)
{
	if (event_from_string(ev) == EVENT_INVALID)
		usage_error("unknown event \"%s\" (%s)", ev, event_list());
}

static void check_name(const char *what, const char *s)
{
	if (!name_is_valid(s))
		usage_error("invalid %s name \"%s\"", what, s);
}

static void set_run_id(json_t *params, const char *s)
{
	long id;

	if (strcmp(s, "last") == 0) {
		json_object_set_new(params, "id", json_string("last"));
		return;
	}
	if (parse_long(s, 1, LONG_MAX, &id) < 0)
		usage_error("invalid run \"%s\": a run id or \"last\"", s);
	json_object_set_new(params, "id", json_integer(id));
}

static int parse_none(int argc, char **argv, struct request *req)
{
	if (argc > 1)
		usage_error("%s takes no arguments", argv[0]);
	return 0;
}

/* Verb options: a tiny getopt over the verb's own arguments, so that global
 * options may come anywhere and verb options after the verb. */
struct vopt {
	const char *name; /* "-n", "--layer", ... */
	bool has_arg;
};

static int next_vopt(int argc, char **argv, int *i, const struct vopt *opts, const char **ret_arg)
{
	const char *a = argv[*i];

	*ret_arg = NULL;
	for (int o = 0; opts[o].name; o++) {
		size_t l = strlen(opts[o].name);

		if (strncmp(a, opts[o].name, l) != 0)
			continue;
		if (a[l] == '\0') {
			if (opts[o].has_arg) {
				if (*i + 1 >= argc)
					usage_error("%s needs a value", opts[o].name);
				*ret_arg = argv[++*i];
			}
			return o;
		}
		if (opts[o].has_arg && (a[l] == '=' || (l == 2 && a[1] != '-'))) {
			*ret_arg = a + l + (a[l] == '=');
			return o;
		}
	}
	return -1;
}

static int parse_runs(int argc, char **argv, struct request *req)
{
	static const struct vopt opts[] = { { "-n", true }, { NULL, false } };

	for (int i = 1; i < argc; i++) {
		const char *arg;
		long n;

		if (next_vopt(argc, argv, &i, opts, &arg) != 0)
			usage_error("runs: unexpected argument \"%s\"", argv[i]);
		if (parse_long(arg, 1, 1000, &n) < 0)
			usage_error("runs: -n needs a number from 1 to 1000");
		json_object_set_new(req->params, "n", json_integer(n));
	}
	return 0;
}

static int parse_show(int argc, char **argv, struct request *req)
{
	if (argc != 2)
		usage_error("usage: agentctl show RUN");
	set_run_id(req->params, argv[1]);
	return 0;
}

static int parse_log(int argc, char **argv, struct request *req)
{
	static const struct vopt opts[] = { { "-f", false }, { "--follow", false }, { NULL, false } };
	const char *run = NULL;

	for (int i = 1; i < argc; i++) {
		const char *arg;

		if (next_vopt(argc, argv, &i, opts, &arg) >= 0) {
			json_object_set_new(req->params, "follow", json_true());
			req->streams = true;
		} else if (argv[i][0] == '-' || run)
			usage_error("log: unexpected argument \"%s\"", argv[i]);
		else
			run = argv[i];
	}
	if (!run)
		usage_error("usage: agentctl log RUN|last [-f]");
	set_run_id(req->params, run);
	return 0;
}

/* EVENT [--layer L] [--app A], plus --wait for run. */
static int parse_event_args(int argc, char **argv, struct request *req, bool allow_wait)
{
	static const struct vopt opts[] = { { "--layer", true }, { "--app", true }, { "--wait", false }, { NULL, false } };
	const char *ev = NULL;

	for (int i = 1; i < argc; i++) {
		const char *arg;
		int o = next_vopt(argc, argv, &i, opts, &arg);

		if (o == 0) {
			check_name("layer", arg);
			json_object_set_new(req->params, "layer", json_string(arg));
		} else if (o == 1) {
			check_name("app", arg);
			json_object_set_new(req->params, "app", json_string(arg));
		} else if (o == 2 && allow_wait) {
			json_object_set_new(req->params, "wait", json_true());
			req->streams = true;
			req->print = print_run_result;
		} else if (argv[i][0] == '-' || ev)
			usage_error("%s: unexpected argument \"%s\"", argv[0], argv[i]);
		else
			ev = argv[i];
	}
	if (!ev)
		usage_error("%s: which event? (%s)", argv[0], event_list());
	check_event(ev);
	json_object_set_new(req->params, "event", json_string(ev));
	return 0;
}

static int parse_plan(int argc, char **argv, struct request *req)
{
	return parse_event_args(argc, argv, req, false);
}

static int parse_run(int argc, char **argv, struct request *req)
{
	return parse_event_args(argc, argv, req, true);
}

static int parse_pause(int argc, char **argv, struct request *req)
{
	struct buf b;

	if (argc < 2)
		return 0;
	buf_init(&b);
	for (int i = 1; i < argc; i++) {
		if (i > 1)
			buf_puts(&b, " ");
		buf_puts(&b, argv[i]);
	}
	json_object_set_new(req->params, "reason", json_stringn(b.data, b.len));
	buf_free(&b);
	if (!json_object_get(req->params, "reason"))
		usage_error("pause: the reason is not valid UTF-8");
	return 0;
}

static int parse_rollback(int argc, char **argv, struct request *req)
{
	if (argc != 2)
		usage_error("usage: agentctl rollback APP");
	check_name("app", argv[1]);
	json_object_set_new(req->params, "app", json_string(argv[1]));
	return 0;
}

static const struct verb verbs[] = {
	{ "status", "status", "", "Show the agent's state, source and runs", parse_none, print_status },
	{ "stack", "stack", "", "Print the current stack JSON (secrets hidden unless privileged)", parse_none, NULL },
	{ "runs", "runs", "[-n N]", "List recent runs, newest first", parse_runs, print_runs },
	{ "show", "run-info", "RUN", "Show one run and its steps", parse_show, print_show },
	{ "log", "log", "RUN|last [-f]", "Print a run's output, -f to follow it", parse_log, print_log },
	{ "plan", "plan", "EVENT [--layer L] [--app A]", "Show what an event would do, with diffs", parse_plan,
	  print_plan },
	{ "run", "run", "EVENT [--layer L] [--app A] [--wait]", "Run an event now (privileged)", parse_run,
	  print_queued },
	{ "reload", "reload", "", "Fetch the stack source now (privileged)", parse_none, print_nothing },
	{ "pause", "pause", "[REASON]", "Stop reacting to stack changes (privileged)", parse_pause, print_nothing },
	{ "resume", "resume", "", "React to stack changes again (privileged)", parse_none, print_nothing },
	{ "clear-failed", "clear-failed", "", "Leave the failed state (privileged)", parse_none, print_nothing },
	{ "rollback", "rollback", "APP", "Point an app at its previous release (privileged)", parse_rollback,
	  print_generic },
	{ "version", "version", "", "Show agentctl's and agentd's versions", parse_none, print_version },
};

static void help(FILE *f)
{
	fprintf(f, "Usage: agentctl [--socket PATH] [--json] VERB [ARGS]\n\n"
		   "Queries and drives agentd through its control socket.\n\nVerbs:\n");
	for (size_t i = 0; i < ELEMENTSOF(verbs); i++) {
		char left[64];
		(void)snprintf(left, sizeof(left), "%s %s", verbs[i].name, verbs[i].args);
		fprintf(f, "  %-44s %s\n", left, verbs[i].help);
	}
	fprintf(f, "  %-44s %s\n", "help", "Show this help");
	fprintf(f, "\nOptions:\n"
		   "  --socket PATH  control socket (default $AGENTD_SOCKET or " PROTO_DEFAULT_SOCKET ")\n"
		   "  --json         print the result as JSON\n"
		   "  -h, --help     show this help\n"
		   "\nExit status: 0 success, 1 failed, 2 usage error, 3 agentd unreachable, 4 permission denied.\n");
}

static void usage_error(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "agentctl: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'agentctl help' for more information.\n");
	exit(EXIT_USAGE);
}

/* ---- talking to the daemon ---- */

static int ctl_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "agentctl: socket path %s is too long\n", path);
		exit(EXIT_USAGE);
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int r = -errno;
		(void)close(fd);
		return r;
	}
	return fd;
}

static int send_all(int fd, const char *data, size_t len)
{
	while (len > 0) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		data += n;
		len -= (size_t)n;
	}
	return 0;
}

enum outcome {
	OUTCOME_REPLY,   /* *ret_reply holds the final reply */
	OUTCOME_LIMIT,   /* the daemon is at its connection limit; try again */
	OUTCOME_CLOSED,  /* connection dropped before the final reply */
	OUTCOME_TIMEOUT, /* no reply in time */
};

/* Reads lines until the final reply; event lines are printed as they come. */
static enum outcome read_reply(int fd, const struct request *req, json_t **ret_reply)
{
	struct proto_reader rd;
	char buf[65536];
	bool any_line = false;
	enum outcome out = OUTCOME_CLOSED;

	*ret_reply = NULL;
	proto_reader_init(&rd, CTL_MAX_REPLY);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		char *line = NULL;
		ssize_t n;
		int r;

		while ((r = proto_reader_next(&rd, &line)) != 0) {
			json_error_t jerr;
			json_t *v;

			if (r < 0) {
				fprintf(stderr, "agentctl: invalid reply from agentd\n");
				goto done;
			}
			v = json_loads(line, 0, &jerr);
			free(line);
			if (!json_is_object(v)) {
				json_decref(v);
				fprintf(stderr, "agentctl: invalid reply from agentd: %s\n", jerr.text);
				goto done;
			}
			if (json_object_get(v, "ok")) {
				const char *code = json_string_value(
					json_object_get(json_object_get(v, "error"), "code"));
				if (!any_line && code && strcmp(code, PROTO_E_LIMIT) == 0) {
					json_decref(v);
					out = OUTCOME_LIMIT;
					goto done;
				}
				*ret_reply = v;
				out = OUTCOME_REPLY;
				goto done;
			}
			any_line = true;
			if (arg_json) {
				char *s = json_dumps(v, JSON_COMPACT);
				if (s)
					printf("%s\n", s);
				free(s);
				fflush(stdout);
			} else
				print_event(v);
			json_decref(v);
		}

		r = poll(&p, 1, req->streams ? -1 : CTL_TIMEOUT_MS);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			goto done;
		}
		if (r == 0) {
			out = OUTCOME_TIMEOUT;
			goto done;
		}
		n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			goto done;
		}
		if (n == 0)
			goto done;
		proto_reader_feed(&rd, buf, (size_t)n);
	}
done:
	proto_reader_free(&rd);
	return out;
}

static int run_verb(const struct verb *v, struct request *req, const char *socket_path)
{
	json_auto_t *msg = json_pack("{s:s, s:O}", "method", v->method, "params", req->params);
	_cleanup_free_ char *line = NULL;
	json_t *reply = NULL, *result;
	enum outcome out = OUTCOME_CLOSED;
	size_t len;
	int r = 0;

	line = proto_encode_line(msg, &len);
	if (!line) {
		fprintf(stderr, "agentctl: cannot encode the request\n");
		return EXIT_FAILED;
	}

	/* At the daemon's connection limit we are told so at once; such
	 * bursts are short, so try again for a while before giving up. */
	for (int attempt = 0; attempt <= CTL_LIMIT_RETRIES; attempt++) {
		_cleanup_close_ int fd = ctl_connect(socket_path);

		if (fd < 0) {
			fprintf(stderr, "agentctl: cannot connect to agentd at %s: %s\n", socket_path, strerror(-fd));
			return EXIT_UNREACHABLE;
		}
		r = send_all(fd, line, len);
		out = read_reply(fd, req, &reply);
		if (out != OUTCOME_LIMIT)
			break;
		struct timespec ts = { 0, 20 * 1000 * 1000 + attempt * 2 * 1000 * 1000 };
		(void)nanosleep(&ts, NULL);
	}
	if (out == OUTCOME_LIMIT) {
		fprintf(stderr, "agentctl: agentd has too many connections open\n");
		return EXIT_FAILED;
	}
	if (out == OUTCOME_TIMEOUT) {
		fprintf(stderr, "agentctl: no reply from agentd within %d s\n", CTL_TIMEOUT_MS / 1000);
		return EXIT_UNREACHABLE;
	}
	if (out != OUTCOME_REPLY) {
		if (r < 0)
			fprintf(stderr, "agentctl: cannot send to agentd: %s\n", strerror(-r));
		else
			fprintf(stderr, "agentctl: connection to agentd lost\n");
		return EXIT_UNREACHABLE;
	}

	if (!json_is_true(json_object_get(reply, "ok"))) {
		json_t *err = json_object_get(reply, "error");
		const char *code = json_string_value(json_object_get(err, "code"));
		const char *m = json_string_value(json_object_get(err, "message"));

		fprintf(stderr, "agentctl: %s\n", m ? m : code ? code : "request failed");
		r = code && strcmp(code, PROTO_E_PERMISSION) == 0 ? EXIT_DENIED : EXIT_FAILED;
		json_decref(reply);
		return r;
	}

	result = json_object_get(reply, "result");
	if (arg_json) {
		const json_t *doc = result;
		char *s;

		if (strcmp(v->method, "stack") == 0)
			doc = json_object_get(result, "stack");
		s = json_dumps(doc ? doc : json_null(), JSON_INDENT(2) | JSON_ENCODE_ANY);
		if (s)
			printf("%s\n", s);
		free(s);
		r = 0;
		/* A run waited for still fails the command when it failed. */
		if (req->print == print_run_result) {
			const char *status = json_string_value(json_object_get(result, "status"));
			r = status && strcmp(status, "success") == 0 ? 0 : EXIT_FAILED;
		}
	} else if (strcmp(v->method, "stack") == 0) {
		char *s = json_dumps(json_object_get(result, "stack") ?: json_null(), JSON_INDENT(2) | JSON_ENCODE_ANY);
		if (s)
			printf("%s\n", s);
		free(s);
		r = 0;
	} else
		r = req->print ? req->print(result) : 0;
	json_decref(reply);
	if (fflush(stdout) != 0 && r == 0)
		r = EXIT_FAILED;
	return r;
}

int main(int argc, char **argv)
{
	_cleanup_free_ char **rest = NULL;
	int nrest = 0, r;
	const struct verb *verb = NULL;
	struct request req = { 0 };

	/* Global options anywhere on the line; the rest, in order, is the verb
	 * and its own arguments (parsed from the verb table below). */
	rest = xcalloc((size_t)argc + 1, sizeof(char *));
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--") == 0) {
			while (++i < argc)
				rest[nrest++] = argv[i];
			break;
		}
		if (strcmp(a, "--json") == 0)
			arg_json = true;
		else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			help(stdout);
			return 0;
		} else if (strcmp(a, "--socket") == 0) {
			if (i + 1 >= argc)
				usage_error("--socket needs a path");
			arg_socket = argv[++i];
		} else if (strncmp(a, "--socket=", 9) == 0)
			arg_socket = a + 9;
		else if (nrest == 0 && a[0] == '-')
			usage_error("unknown option \"%s\"", a);
		else
			rest[nrest++] = argv[i];
	}

	if (nrest == 0)
		usage_error("which verb?");
	if (strcmp(rest[0], "help") == 0) {
		help(stdout);
		return 0;
	}
	for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
		if (strcmp(verbs[i].name, rest[0]) == 0)
			verb = &verbs[i];
	if (!verb)
		usage_error("unknown verb \"%s\"", rest[0]);
	if (!arg_socket)
		arg_socket = getenv("AGENTD_SOCKET");
	if (!arg_socket || !*arg_socket)
		arg_socket = PROTO_DEFAULT_SOCKET;

	req.params = json_object();
	req.print = verb->print;
	(void)verb->parse(nrest, rest, &req);
	r = run_verb(verb, &req, arg_socket);
	json_decref(req.params);
	return r;
}

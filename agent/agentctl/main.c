/* SPDX-License-Identifier: BSD-2-Clause */
/* agentctl: drives agentd through its control socket (design.md §5), in the
 * shape of bgpctl and networkctl: arguments parsed from a verb table and
 * checked before connecting, one request, the reply printed through a text
 * or a JSON form (output.c).
 *
 * Exit codes: 0 success; 1 the run or request failed; 2 usage error;
 * 3 cannot reach the daemon (or the connection dropped before the final
 * reply); 4 permission denied. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "event.h"
#include "output.h"
#include "proto.h"
#include "util.h"

#define CTL_TIMEOUT_MS 30000         /* for a reply to a request that does not stream */
#define CTL_MAX_REPLY (256u << 20)   /* bytes in one reply line (a stack is at most 16 MiB) */
#define CTL_LIMIT_RETRIES 50         /* when the daemon is at its connection limit */

static const char *arg_socket;
static bool arg_json;

static void usage_error(const char *fmt, ...) _printf_(1, 2);

/* ---- verbs ---- */

struct request {
	json_t *params; /* owned */
	bool streams;   /* no reply timeout; event lines before the reply */
	int (*print)(const json_t *result);
	const char *method; /* NULL: the verb's; else a sub-verb's (stack push, stack --revision) */
	int pass_fd;        /* owned, -1: none; sent with the request (SCM_RIGHTS) */
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
			req->print = print_log_follow;
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

/* EVENT [--layer L] [--app A] (and [--wait] when with_wait), or
 * "maintenance --recipe JOB": one maintenance job (design.md §8.1), which
 * runs for the instance: one --recipe, no --layer or --app (usage errors,
 * exit 2, rather than the last one winning or a filter ignored). */
static int parse_event_recipe(int argc, char **argv, struct request *req, bool with_wait)
{
	int n = 0;
	char **rest = calloc((size_t)argc + 1, sizeof(char *));
	const char *recipe = NULL;

	if (!rest)
		usage_error("out of memory");
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--recipe") == 0 || strncmp(argv[i], "--recipe=", 9) == 0) {
			if (recipe)
				usage_error("%s: --recipe given twice: one job per run", argv[0]);
			recipe = argv[i][8] == '=' ? argv[i] + 9 : i + 1 < argc ? argv[++i] : NULL;
			if (!recipe)
				usage_error("%s: --recipe needs a job name", argv[0]);
			check_name("recipe", recipe);
			continue;
		}
		rest[n++] = argv[i];
	}
	parse_event_args(n, rest, req, with_wait);
	free(rest);
	const char *ev = json_string_value(json_object_get(req->params, "event"));
	if (strcmp(ev, "maintenance") == 0 && !recipe)
		usage_error("%s maintenance: which job? (--recipe JOB)", argv[0]);
	if (strcmp(ev, "maintenance") != 0 && recipe)
		usage_error("%s: --recipe names a maintenance job: only with the event maintenance", argv[0]);
	if (recipe && (json_object_get(req->params, "layer") || json_object_get(req->params, "app")))
		usage_error("%s: a maintenance job runs for the instance: no --layer or --app", argv[0]);
	if (recipe)
		json_object_set_new(req->params, "recipe", json_string(recipe));
	return 0;
}

/* EVENT [--layer L] [--app A], "maintenance --recipe JOB", or "rollback APP". */
static int parse_plan(int argc, char **argv, struct request *req)
{
	if (argc >= 2 && strcmp(argv[1], "rollback") == 0) {
		if (argc != 3)
			usage_error("usage: agentctl plan rollback APP");
		check_name("app", argv[2]);
		json_object_set_new(req->params, "event", json_string(event_to_string(EVENT_DEPLOY)));
		json_object_set_new(req->params, "app", json_string(argv[2]));
		json_object_set_new(req->params, "recipe", json_string("rollback"));
		return 0;
	}
	return parse_event_recipe(argc, argv, req, false);
}

static int parse_run(int argc, char **argv, struct request *req)
{
	return parse_event_recipe(argc, argv, req, true);
}

static const char *pause_reason; /* as given, for the line that confirms it */

static int print_paused(const json_t *r)
{
	if (pause_reason)
		printf("Paused: %s. Stack changes wait until resume.\n", pause_reason);
	else
		printf("Paused (no reason given). Stack changes wait until resume.\n");
	return 0;
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
	pause_reason = json_string_value(json_object_get(req->params, "reason"));
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

/* ---- stack, stack --revision, stack push FILE [--base REV] ---- */

/* The document inline when the request stays within PROTO_MAX_REQUEST (and
 * is UTF-8, which a JSON string must be), else the open file itself, passed
 * to the daemon (SCM_RIGHTS) which reads it through our descriptor: in both
 * cases the file is opened here, with the caller's access. */
static void push_document(const char *path, struct request *req)
{
	_cleanup_free_ char *data = NULL, *line = NULL;
	json_auto_t *probe = NULL;
	struct stat st;
	size_t len = 0, enc = 0;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		fprintf(stderr, "agentctl: cannot open %s: %s\n", path, strerror(errno));
		exit(EXIT_FAILED);
	}
	if (fstat(fd, &st) < 0) {
		fprintf(stderr, "agentctl: cannot stat %s: %s\n", path, strerror(errno));
		exit(EXIT_FAILED);
	}
	if (!S_ISREG(st.st_mode)) {
		fprintf(stderr, "agentctl: %s is not a regular file\n", path);
		exit(EXIT_FAILED);
	}
	if (st.st_size > PROTO_MAX_PUSH_FILE) {
		fprintf(stderr, "agentctl: %s has %lld bytes, more than the %d MiB a stack may have\n", path,
			(long long)st.st_size, PROTO_MAX_PUSH_FILE >> 20);
		exit(EXIT_FAILED);
	}
	if (st.st_size < PROTO_MAX_REQUEST) {
		data = xmalloc(PROTO_MAX_REQUEST);
		for (;;) {
			ssize_t n = read(fd, data + len, PROTO_MAX_REQUEST - len);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				fprintf(stderr, "agentctl: cannot read %s: %s\n", path, strerror(errno));
				exit(EXIT_FAILED);
			}
			len += (size_t)n;
			if (n == 0 || len == PROTO_MAX_REQUEST)
				break;
		}
		if (len < PROTO_MAX_REQUEST) {
			json_t *doc = json_stringn(data, len);

			/* A copy: "O" would share req->params, and the document
			 * would stay in the request whatever its size. */
			probe = json_pack("{s:s, s:o}", "method", "stack-push", "params", json_copy(req->params));
			if (doc)
				json_object_set_new(json_object_get(probe, "params"), "document", doc);
			line = doc ? proto_encode_line(probe, &enc) : NULL;
			if (line && enc <= PROTO_MAX_REQUEST) {
				json_object_set(req->params, "document", doc);
				(void)close(fd);
				return;
			}
		}
	}
	json_object_set_new(req->params, "fd", json_true());
	req->pass_fd = fd;
}

static int parse_stack(int argc, char **argv, struct request *req)
{
	static const struct vopt opts[] = { { "--base", true }, { NULL, false } };
	const char *file = NULL;

	if (argc == 1)
		return 0;
	if (strcmp(argv[1], "--revision") == 0) {
		if (argc > 2)
			usage_error("usage: agentctl stack --revision");
		req->method = "status";
		req->print = print_stack_revision;
		return 0;
	}
	if (strcmp(argv[1], "push") != 0)
		usage_error("usage: agentctl stack [--revision | push FILE [--base REV]]");
	for (int i = 2; i < argc; i++) {
		const char *arg;
		long rev;

		if (next_vopt(argc, argv, &i, opts, &arg) == 0) {
			/* 0: only when PREFIX/stack does not exist yet (what a
			 * first push reports as its base). */
			if (parse_long(arg, 0, LONG_MAX, &rev) < 0)
				usage_error("stack push: invalid --base \"%s\": a mod revision (an integer of at least 0)",
					    arg);
			json_object_set_new(req->params, "base", json_integer(rev));
		} else if ((argv[i][0] == '-' && argv[i][1]) || file)
			usage_error("stack push: unexpected argument \"%s\"", argv[i]);
		else
			file = argv[i];
	}
	if (!file)
		usage_error("usage: agentctl stack push FILE [--base REV]");
	req->method = "stack-push";
	req->print = print_pushed;
	push_document(file, req);
	return 0;
}

static const struct verb verbs[] = {
	{ "status", "status", "", "Show the agent's state, source and runs", parse_none, print_status },
	{ "stack", "stack", "", "Print the current stack JSON (secrets hidden unless privileged)", parse_stack, NULL },
	{ "stack", "status", "--revision", "Print the revision of the stack the agent read (its etcd mod revision)",
	  parse_stack, NULL },
	{ "stack", "stack-push", "push FILE [--base REV]", "Validate FILE and put it in etcd if REV is current (privileged)",
	  parse_stack, NULL },
	{ "runs", "runs", "[-n N]", "List recent runs, newest first", parse_runs, print_runs },
	{ "show", "run-info", "RUN", "Show one run and its steps", parse_show, print_show },
	{ "log", "log", "RUN|last [-f]", "Print a run's output, -f to follow it", parse_log, print_log },
	{ "plan", "plan", "EVENT [--layer L] [--app A] | maintenance --recipe JOB", "Show what an event (or rollback APP) would do, with diffs", parse_plan,
	  print_plan },
	{ "run", "run", "EVENT [--layer L] [--app A] [--recipe R] [--wait]", "Run an event now (privileged)", parse_run,
	  print_queued },
	{ "reload", "reload", "", "Fetch the stack source now (privileged)", parse_none, print_reloaded },
	{ "pause", "pause", "[REASON]", "Stop reacting to stack changes (privileged)", parse_pause, print_paused },
	{ "resume", "resume", "", "React to stack changes again (privileged)", parse_none, print_resumed },
	{ "clear-failed", "clear-failed", "", "Leave the failed state (privileged)", parse_none, print_cleared },
	{ "rollback", "rollback", "APP", "Point an app at its previous release (privileged)", parse_rollback,
	  print_generic },
	{ "version", "version", "", "Show agentctl's and agentd's versions", parse_none, print_version },
	{ "fleet", "fleet", "", "List every instance of the stack: etcd registrations, or static members", parse_none,
	  print_fleet },
	{ "schedule", "schedule", "", "List the maintenance jobs: schedule, last run, next run, lock", parse_none,
	  print_schedule },
	{ "metrics", "metrics", "", "Print the figures of metrics_file (Prometheus text format)", parse_none,
	  print_metrics },
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

/* Sends the first bytes of data with pass (SCM_RIGHTS), then the rest. */
static int send_with_fd(int fd, const char *data, size_t len, int pass)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u = { 0 };
	struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	ssize_t n;

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &pass, sizeof(int));
	do
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return send_all(fd, data + n, len - (size_t)n);
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
	const char *method = req->method ? req->method : v->method;
	json_auto_t *msg = json_pack("{s:s, s:O}", "method", method, "params", req->params);
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
			/* version: agentctl's own still, right after an install
			 * that enabled agentd without starting it. */
			if (strcmp(method, "version") == 0 && arg_json)
				printf("{\"agentctl_version\": \"%s\", \"agentctl_protocol\": %d}\n", AGENTD_VERSION,
				       PROTO_VERSION);
			else if (strcmp(method, "version") == 0)
				printf("agentctl %s (protocol %d)\n", AGENTD_VERSION, PROTO_VERSION);
			fprintf(stderr, "agentctl: cannot connect to agentd at %s: %s\n", socket_path, strerror(-fd));
			return EXIT_UNREACHABLE;
		}
		r = req->pass_fd >= 0 ? send_with_fd(fd, line, len, req->pass_fd) : send_all(fd, line, len);
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
	r = output_result(method, result, req->print, arg_json);
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
		if (!verb && strcmp(verbs[i].name, rest[0]) == 0)
			verb = &verbs[i]; /* the first: "stack" has sub-verbs on the lines that follow */
	if (!verb)
		usage_error("unknown verb \"%s\"", rest[0]);
	if (!arg_socket)
		arg_socket = getenv("AGENTD_SOCKET");
	if (!arg_socket || !*arg_socket)
		arg_socket = PROTO_DEFAULT_SOCKET;

	req.params = json_object();
	req.print = verb->print;
	req.pass_fd = -1;
	(void)verb->parse(nrest, rest, &req);
	r = run_verb(verb, &req, arg_socket);
	json_decref(req.params);
	if (req.pass_fd >= 0)
		(void)close(req.pass_fd);
	return r;
}

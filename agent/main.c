/* SPDX-License-Identifier: BSD-2-Clause */
/* agentd: options, configuration, the loop, signals, sd_notify and the
 * watchdog. Everything else hangs off the engine and the control server. */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <systemd/sd-daemon.h>
#include <uv.h>

#include "config.h"
#include "control/control.h"
#include "engine/engine.h"
#include "log.h"
#include "proto.h"
#include "recipes/recipe.h"
#include "source/source.h"
#include "util.h"


struct daemon {
	uv_loop_t loop;
	struct config config;
	struct engine *engine;
	struct control *control;
	uv_signal_t sigterm, sigint, sighup;
	uv_timer_t watchdog;
	bool watchdog_on;
	bool stopping;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: agentd [OPTIONS]\n"
		"\n"
		"Runs the recipes of this instance's layers when the stack changes.\n"
		"\n"
		"  -c, --config FILE    configuration (default /etc/agentd/agentd.conf)\n"
		"      --check-config   print the normalised configuration and exit\n"
		"  -d, --debug          debug logging to stderr, even under systemd\n"
		"      --version        print the version and exit\n"
		"  -h, --help           this text\n");
}

static void on_handle_closed(uv_handle_t *h)
{
	(void)h;
}

static void on_stopped(void *userdata)
{
	struct daemon *d = userdata;

	control_free(d->control);
	d->control = NULL;
	engine_free(d->engine);
	d->engine = NULL;
	uv_close((uv_handle_t *)&d->sigterm, on_handle_closed);
	uv_close((uv_handle_t *)&d->sigint, on_handle_closed);
	uv_close((uv_handle_t *)&d->sighup, on_handle_closed);
	uv_close((uv_handle_t *)&d->watchdog, on_handle_closed);
}

static void on_terminate(uv_signal_t *s, int signum)
{
	struct daemon *d = s->data;

	if (d->stopping) {
		log_warn("Second %s: terminating the current step", strsignal(signum));
		engine_stop_now(d->engine);
		return;
	}
	d->stopping = true;
	log_info("Received %s: stopping", strsignal(signum));
	(void)sd_notify(0, "STOPPING=1");
	engine_stop(d->engine, on_stopped, d);
}

static void on_hangup(uv_signal_t *s, int signum)
{
	struct daemon *d = s->data;
	log_info("Received SIGHUP: fetching the stack now");
	engine_reload(d->engine);
}

static void on_watchdog(uv_timer_t *t)
{
	(void)sd_notify(0, "WATCHDOG=1");
}

struct options {
	const char *config_path;
	bool check;
	bool debug;
};

/* Returns -1 to go on, else the exit code (--version, --help, a bad
 * option). */
static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option options[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "debug", no_argument, NULL, 'd' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*o = (struct options){ .config_path = "/etc/agentd/agentd.conf" };
	while ((c = getopt_long(argc, argv, "c:dh", options, NULL)) >= 0) {
		switch (c) {
		case 'c':
			o->config_path = optarg;
			break;
		case 'C':
			o->check = true;
			break;
		case 'd':
			o->debug = true;
			break;
		case 'V':
			printf("agentd %s\n", AGENTD_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "agentd: unexpected argument \"%s\"\n", argv[optind]);
		return 2;
	}
	return -1;
}

/* Whether the command name (argv[0] of a command key) names an executable
 * file: as given when it has a slash, else in $PATH or the directories
 * systemd gives services. */
static bool command_found(const char *name)
{
	static const char service_path[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	const char *paths[] = { getenv("PATH"), service_path };

	if (strchr(name, '/'))
		return access(name, X_OK) == 0;
	for (size_t i = 0; i < ELEMENTSOF(paths); i++)
		for (const char *p = paths[i]; p && *p;) {
			const char *end = strchr(p, ':');
			size_t len = end ? (size_t)(end - p) : strlen(p);
			_cleanup_free_ char *path = xasprintf("%.*s/%s", (int)len, p, name);

			if (len > 0 && access(path, X_OK) == 0)
				return true;
			p = end ? end + 1 : p + len;
		}
	return false;
}

/* What a valid configuration names that does not exist on this host, on
 * stderr: not errors (it may be installed or created later, and is looked
 * up when used), but the operator should know. An admin_group that does not
 * exist leaves the privileged methods to root and agentd's own user; a
 * command key set to a program that is not there fails the steps that run
 * it. Defaults are not checked: a host need not have every family's tools. */
static void check_config_warnings(const struct config *config)
{
	json_auto_t *mine = config_to_json(config), *defaults_json = NULL;
	struct config defaults;
	const char *key;
	json_t *v;

	if (config->admin_group && *config->admin_group && !getgrnam(config->admin_group))
		fprintf(stderr,
			"agentd: warning: admin_group \"%s\" does not exist: until it does, only root and agentd's own "
			"user may use privileged methods\n",
			config->admin_group);
	config_defaults(&defaults);
	defaults_json = config_to_json(&defaults);
	config_free(&defaults);
	json_object_foreach(mine, key, v)
	{
		const char *cmd = json_string_value(json_array_get(v, 0));

		if (cmd && !json_equal(v, json_object_get(defaults_json, key)) && !command_found(cmd))
			fprintf(stderr, "agentd: warning: %s: command \"%s\" is not an executable file here\n", key,
				cmd);
	}
}

/* --check-config: the normalised configuration on stdout, or the error on
 * stderr. Returns the exit code: 0 for a configuration agentd starts with,
 * warnings (on stderr) included; 1 for an error (design.md §4). */
static int check_config(struct config *config, int r, const char *err)
{
	if (r < 0) {
		fprintf(stderr, "agentd: %s\n", err);
		config_free(config);
		return 1;
	}
	check_config_warnings(config);
	json_t *j = config_to_json(config);
	char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15));
	printf("%s\n", s);
	free(s);
	json_decref(j);
	config_free(config);
	return 0;
}

/* The engine (which starts the source) and the control server, on the
 * socket systemd passed or one of our own. */
static int daemon_start(struct daemon *d)
{
	int listen_fd = -1, r;

	if (sd_listen_fds(1) == 1)
		listen_fd = SD_LISTEN_FDS_START;

	/* Validation reads it too: where data directories default to. */
	recipes_set_config(&d->config);
	r = engine_new(&d->loop, &d->config, &d->engine);
	if (r >= 0)
		r = engine_start(d->engine);
	if (r >= 0)
		r = control_new(&d->loop, &d->config, d->engine, listen_fd, &d->control);
	if (r < 0) {
		log_error_errno(r, "Failed to start: %m");
		(void)sd_notifyf(0, "STATUS=failed to start: %s", strerror(-r));
	}
	return r;
}

static void daemon_watch_signals(struct daemon *d)
{
	uint64_t wd_usec = 0;

	uv_signal_init(&d->loop, &d->sigterm);
	uv_signal_init(&d->loop, &d->sigint);
	uv_signal_init(&d->loop, &d->sighup);
	uv_timer_init(&d->loop, &d->watchdog);
	d->sigterm.data = d->sigint.data = d->sighup.data = d->watchdog.data = d;
	uv_signal_start(&d->sigterm, on_terminate, SIGTERM);
	uv_signal_start(&d->sigint, on_terminate, SIGINT);
	uv_signal_start(&d->sighup, on_hangup, SIGHUP);
	/* The watchdog is fed from the loop itself: a stuck loop stops feeding it. */
	if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0) {
		uv_timer_start(&d->watchdog, on_watchdog, 0, wd_usec / 2000 ? wd_usec / 2000 : 1);
		d->watchdog_on = true;
	}
}

int main(int argc, char **argv)
{
	_cleanup_free_ char *err = NULL, *shown = NULL;
	struct daemon d = { 0 };
	struct options o;
	int lock_fd = -1, r;

	/* One malloc arena for the whole process. libuv's thread pool (reads of
	 * the file source, mount and volume steps) would otherwise give each of
	 * its four threads an arena of its own: 32 KiB of anonymous memory
	 * measured at idle (tests/bench/run), and a buffer read there but freed
	 * on the loop stays in that thread's arena. Those threads hardly
	 * allocate; the lock is never contended. */
	(void)mallopt(M_ARENA_MAX, 1);

	r = parse_options(argc, argv, &o);
	if (r >= 0)
		return r;
	log_open("agentd", o.debug);
	if (o.debug)
		log_force_stderr();

	r = config_load(o.config_path, &d.config, &err);
	if (o.check)
		return check_config(&d.config, r, err);
	if (r < 0) {
		log_error("Bad configuration: %s", err);
		config_free(&d.config);
		return 1;
	}

	/* One agentd per state_dir (design.md §3): the lock comes first,
	 * before any state is read or any process is touched. A second agentd
	 * leaves with the holder's pid, having changed nothing. */
	lock_fd = engine_lock_state_dir(d.config.state_dir, &err);
	if (lock_fd < 0) {
		log_error("Not starting: %s", err);
		(void)sd_notifyf(0, "STATUS=not starting: %s", err);
		config_free(&d.config);
		return 1;
	}

	srandom((unsigned)time(NULL) ^ (unsigned)getpid());
	signal(SIGPIPE, SIG_IGN);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		log_error("Failed to initialise libcurl");
		return 1;
	}
	uv_loop_init(&d.loop);
	if (daemon_start(&d) < 0)
		return 1;
	daemon_watch_signals(&d);

	shown = source_url_redact(d.config.source);
	log_info("agentd %s started (instance %s, source %s, socket %s)", AGENTD_VERSION,
		 d.config.instance ? d.config.instance : "(host name)", shown, d.config.socket);
	(void)sd_notify(0, "READY=1");

	uv_run(&d.loop, UV_RUN_DEFAULT);

	r = uv_loop_close(&d.loop);
	if (r < 0)
		log_warn("Handles left open at exit: %s", uv_strerror(r));
	config_free(&d.config);
	curl_global_cleanup();
	log_info("Stopped");
	/* Last: the next agentd may start once we are done with state_dir. */
	(void)close(lock_fd);
	return 0;
}

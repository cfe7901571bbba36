/* SPDX-License-Identifier: BSD-2-Clause */
/* Unit tests of the fleet gates of plans (design.md §9): agent.rolling and
 * a custom recipe's "singleton" validated with their JSON paths,
 * maintenance kept out of agent.layers, and recipes/build.c's gates: a
 * rolling deploy's semaphore and health step, a singleton job's lock; the
 * health step's URLs for the clients of the built-in instances app, and
 * the step itself against live HTTP servers on free ports (threads here). */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "config.h"
#include "io/http.h"
#include "recipes/recipe.h"
#include "stack/stack.h"
#include "steps/plan.h"
#include "steps/step_health.h"
#include "util.h"

/* Single quotes to double quotes. */
static char *sq(const char *s)
{
	char *d = xstrdup(s);

	for (char *p = d; *p; p++)
		if (*p == '\'')
			*p = '"';
	return d;
}

/* A stack with one layer "web" of instance h, app "site" deployed by the
 * custom recipe "rel", and agent's extra members. */
static char *doc(const char *agent_extra, const char *recipe_extra)
{
	_cleanup_free_ char *t = xasprintf(
		"{'opsworks': {'stack': {'name': 's'}, 'layers': {'web': {'name': 'Web', 'instances': {"
		"   'h': {'private_ip': '10.0.0.1', 'status': 'online'}}}}},"
		" 'deploy': {'site': {}},"
		" 'agent': {'layers': {'web': {'deploy': ['rel']}},"
		"   'recipes': {'rel': {'command': ['/bin/true']}, 'job': {'command': ['/bin/true']%s}}%s}}",
		recipe_extra, agent_extra);
	return sq(t);
}

static int load(const char *agent_extra, const char *recipe_extra, struct stack **s, struct stack_error *err)
{
	_cleanup_free_ char *d = doc(agent_extra, recipe_extra);

	return recipes_stack_load(d, strlen(d), "h", s, err);
}

static void refused(const char *agent_extra, const char *recipe_extra, const char *path, const char *words)
{
	struct stack_error err = { 0 };
	struct stack *s = NULL;

	assert_int_equal(load(agent_extra, recipe_extra, &s, &err), -EINVAL);
	assert_null(s);
	if (strcmp(err.path, path) != 0 || !strstr(err.message, words))
		fail_msg("got %s: %s; wanted %s: ...%s...", err.path, err.message, path, words);
}

static void test_rolling_validation(void **state)
{
	struct stack_error err = { 0 };
	struct stack *s = NULL;

	assert_int_equal(load(", 'rolling': {'site': {'max_parallel': 2, 'health': {'command': ['/bin/true'], "
			      "'timeout': 5}}}", "", &s, &err), 0);
	stack_unref(s);
	refused(", 'rolling': []", "", "$.agent.rolling", "must be an object");
	refused(", 'rolling': {'site': {}}", "", "$.agent.rolling.site.max_parallel", "is required");
	refused(", 'rolling': {'site': {'max_parallel': 0}}", "", "$.agent.rolling.site.max_parallel",
		"from 1 to 1000");
	refused(", 'rolling': {'site': {'max_parallel': 1, 'speed': 3}}", "", "$.agent.rolling.site", "unknown key");
	refused(", 'rolling': {'site': {'max_parallel': 1, 'health': {}}}", "", "$.agent.rolling.site.health",
		"needs \"path\"");
	refused(", 'rolling': {'site': {'max_parallel': 1, 'health': {'path': 'x y'}}}", "",
		"$.agent.rolling.site.health.path", "starts with \"/\"");
	refused(", 'rolling': {'site': {'max_parallel': 1, 'health': {'command': []}}}", "",
		"$.agent.rolling.site.health.command", "must not be empty");
	refused(", 'rolling': {'site': {'max_parallel': 1, 'health': {'path': '/', 'timeout': 0}}}", "",
		"$.agent.rolling.site.health.timeout", "from 1 to 86400");
}

static void test_singleton_and_layers(void **state)
{
	refused("", ", 'singleton': 'yes'", "$.agent.recipes.job.singleton", "true or false");
	_cleanup_free_ char *d = sq("{'opsworks': {'layers': {'web': {'name': 'Web', 'instances': {'h': {}}}}},"
				    " 'agent': {'layers': {'web': {'maintenance': ['job']}},"
				    "   'recipes': {'job': {'command': ['/bin/true']}}}}");
	struct stack_error err = { 0 };
	struct stack *s = NULL;

	/* A job runs alone, never as a layer's event. */
	assert_int_equal(recipes_stack_load(d, strlen(d), "h", &s, &err), -EINVAL);
	assert_string_equal(err.path, "$.agent.layers.web");
	assert_non_null(strstr(err.message, "unknown event \"maintenance\""));
}

static int plan_of(struct stack *s, enum event ev, const char *app, const char *recipe, struct plan *p,
		   char **error)
{
	struct config c;
	struct recipe_ctx ctx = { .stack = s, .config = &c, .event = ev, .app = app, .run_id = 1 };
	int r;

	config_defaults(&c);
	r = recipes_build_plan(&ctx, recipe, p, error);
	config_free(&c);
	return r;
}

static void test_rolling_plan(void **state)
{
	struct stack_error err = { 0 };
	struct stack *s = NULL;
	struct plan p;
	char *error = NULL;

	assert_int_equal(load(", 'rolling': {'site': {'max_parallel': 2, 'health': {'command': ['/bin/true']}}}", "",
			      &s, &err),
			 0);
	assert_int_equal(plan_of(s, EVENT_DEPLOY, "site", NULL, &p, &error), 0);
	assert_int_equal(p.gate.kind, PLAN_GATE_SEMAPHORE);
	assert_string_equal(p.gate.name, "deploy-site");
	assert_int_equal(p.gate.slots, 2);
	assert_true(p.gate.keep_on_failure);
	assert_null(p.gate.job);
	assert_int_equal(p.n_steps, 2);
	assert_string_equal(p.steps[0]->ops->kind, "exec");
	assert_string_equal(p.steps[1]->ops->kind, "health");
	plan_free(&p);
	/* A configure takes no slot. */
	assert_int_equal(plan_of(s, EVENT_CONFIGURE, NULL, NULL, &p, &error), 0);
	assert_int_equal(p.gate.kind, PLAN_GATE_NONE);
	plan_free(&p);
	stack_unref(s);

	/* Without agent.rolling: no gate, no health step. */
	assert_int_equal(load("", "", &s, &err), 0);
	assert_int_equal(plan_of(s, EVENT_DEPLOY, "site", NULL, &p, &error), 0);
	assert_int_equal(p.gate.kind, PLAN_GATE_NONE);
	assert_int_equal(p.n_steps, 1);
	plan_free(&p);
	stack_unref(s);
}

static void test_maintenance_plan(void **state)
{
	struct stack_error err = { 0 };
	struct stack *s = NULL;
	struct plan p;
	char *error = NULL;
	json_t *g;

	assert_int_equal(load("", ", 'singleton': true", &s, &err), 0);
	assert_int_equal(plan_of(s, EVENT_MAINTENANCE, NULL, "job", &p, &error), 0);
	assert_int_equal(p.n_steps, 1);
	assert_string_equal(p.steps[0]->ops->kind, "exec");
	assert_string_equal(p.steps[0]->recipe, "job");
	assert_int_equal(p.gate.kind, PLAN_GATE_MUTEX);
	assert_string_equal(p.gate.name, "job");
	assert_string_equal(p.gate.job, "job");
	g = plan_gate_json(&p.gate);
	assert_string_equal(json_string_value(json_object_get(g, "lock")), "job");
	json_decref(g);
	plan_free(&p);

	assert_int_equal(plan_of(s, EVENT_MAINTENANCE, NULL, NULL, &p, &error), -EINVAL);
	assert_non_null(strstr(error, "--recipe"));
	free(error);
	plan_free(&p);
	assert_int_equal(plan_of(s, EVENT_MAINTENANCE, NULL, "nope", &p, &error), -ENOENT);
	assert_non_null(strstr(error, "\"nope\""));
	free(error);
	plan_free(&p);
	stack_unref(s);

	/* Not a singleton: no lock. */
	assert_int_equal(load("", "", &s, &err), 0);
	assert_int_equal(plan_of(s, EVENT_MAINTENANCE, NULL, "job", &p, &error), 0);
	assert_int_equal(p.gate.kind, PLAN_GATE_NONE);
	plan_free(&p);
	stack_unref(s);
}

/* A rolling deploy of the built-in instances app checks every Zope client
 * of this instance (plone_instances.instance_count) on 127.0.0.1, from
 * 8081 (recipes/plone.h), at the health path; the plan says so. */
static void test_health_urls_planned(void **state)
{
	_cleanup_free_ char *d = sq(
		"{'opsworks': {'layers': {'plone_instances': {'instances': {"
		"   'h': {'private_ip': '10.0.0.1', 'status': 'online'}}}}},"
		" 'deploy': {'plone_instances': {'scm': {'scm_type': 'git', 'repository': '/r'}}},"
		" 'plone_instances': {'instance_count': 2},"
		" 'agent': {'rolling': {'plone_instances': {'max_parallel': 1, 'health': {'path': '/ok', 'timeout': 7}}}}}");
	struct stack_error err = { 0 };
	struct stack *s = NULL;
	struct plan p;
	char *error = NULL, *diff = NULL;
	const char *action = NULL;
	struct step *h;

	assert_int_equal(recipes_stack_load(d, strlen(d), "h", &s, &err), 0);
	assert_int_equal(plan_of(s, EVENT_DEPLOY, "plone_instances", NULL, &p, &error), 0);
	assert_int_equal(p.gate.kind, PLAN_GATE_SEMAPHORE);
	assert_string_equal(p.gate.name, "deploy-plone_instances");
	h = p.steps[p.n_steps - 1];
	assert_string_equal(h->ops->kind, "health");
	assert_string_equal(h->recipe, "rolling");
	assert_int_equal(h->ops->describe(h, NULL, &action, &diff, &error), 0);
	assert_string_equal(action, "check");
	assert_string_equal(h->message,
			    "GET http://127.0.0.1:8081/ok, http://127.0.0.1:8082/ok: 2xx or 3xx within 7 s");
	plan_free(&p);
	stack_unref(s);
}

/* ---- live HTTP servers for the health step: each port answers by path,
 * "/ok" 200, "/moved" 302, "/bad" 500, "/late" 503 to its first two
 * requests then 200. */

static struct {
	int fds[2], ports[2];
	int late;
	volatile int stop;
	pthread_t thread;
} srv;

static void srv_answer(int fd)
{
	char req[2048], out[128];
	ssize_t n = read(fd, req, sizeof(req) - 1);
	int code = 404;

	if (n > 0) {
		req[n] = '\0';
		if (strncmp(req, "GET /ok ", 8) == 0)
			code = 200;
		else if (strncmp(req, "GET /moved ", 11) == 0)
			code = 302;
		else if (strncmp(req, "GET /bad ", 9) == 0)
			code = 500;
		else if (strncmp(req, "GET /late ", 10) == 0)
			code = srv.late++ < 2 ? 503 : 200;
	}
	n = snprintf(out, sizeof(out), "HTTP/1.1 %d X\r\nContent-Length: 0\r\nConnection: close\r\n%s\r\n", code,
		     code == 302 ? "Location: /elsewhere\r\n" : "");
	if (write(fd, out, (size_t)n) != n)
		fprintf(stderr, "test_gate: short write\n");
	close(fd);
}

static void *srv_main(void *arg)
{
	while (!srv.stop) {
		struct pollfd p[2] = { { .fd = srv.fds[0], .events = POLLIN }, { .fd = srv.fds[1], .events = POLLIN } };

		if (poll(p, 2, 20) <= 0)
			continue;
		for (int i = 0; i < 2; i++)
			if (p[i].revents & POLLIN) {
				int fd = accept(srv.fds[i], NULL, NULL);
				if (fd >= 0)
					srv_answer(fd);
			}
	}
	return arg;
}

static int srv_setup(void **state)
{
	for (int i = 0; i < 2; i++) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		socklen_t len = sizeof(a);

		srv.fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (bind(srv.fds[i], (struct sockaddr *)&a, sizeof(a)) < 0 || listen(srv.fds[i], 16) < 0)
			return -1;
		getsockname(srv.fds[i], (struct sockaddr *)&a, &len);
		srv.ports[i] = ntohs(a.sin_port);
	}
	return pthread_create(&srv.thread, NULL, srv_main, NULL) == 0 ? 0 : -1;
}

static int srv_teardown(void **state)
{
	srv.stop = 1;
	pthread_join(srv.thread, NULL);
	close(srv.fds[0]);
	close(srv.fds[1]);
	return 0;
}

struct health_run {
	bool done, failed;
	char output[1024];
	size_t output_len;
};

static void hr_output(void *userdata, struct step *s, const char *data, size_t len)
{
	struct health_run *r = userdata;
	size_t room = sizeof(r->output) - 1 - r->output_len;

	memcpy(r->output + r->output_len, data, len < room ? len : room);
	r->output_len += len < room ? len : room;
	r->output[r->output_len] = '\0';
}

static void hr_done(void *userdata, bool failed)
{
	struct health_run *r = userdata;

	r->done = true;
	r->failed = failed;
}

/* Runs one health step of these URLs (path on each server port, "-" for a
 * port where nothing listens) to its end; returns the step's status, its
 * error in *error (malloc'd) and its output in r. */
static enum step_status health_run(const char *path0, const char *path1, long timeout, struct health_run *r,
				   char **error)
{
	static const struct plan_exec_cbs cbs = { .on_output = hr_output, .on_done = hr_done };
	_cleanup_free_ char *u0 = xasprintf("http://127.0.0.1:%d%s", srv.ports[0], path0);
	_cleanup_free_ char *u1 = path1 ? xasprintf("http://127.0.0.1:%d%s", srv.ports[1], path1) : NULL;
	char *urls[] = { u0, u1, NULL };
	struct health_step_opts o = { .urls = urls, .timeout_sec = timeout, .interval_ms = 50 };
	struct step_env env = { .root = "/", .output_max = 4096 };
	struct plan_exec *x = NULL;
	enum step_status st;
	uv_loop_t loop;
	struct plan p;

	memset(r, 0, sizeof(*r));
	assert_int_equal(uv_loop_init(&loop), 0);
	assert_int_equal(http_new(&loop, &env.http), 0);
	env.loop = &loop;
	plan_init(&p, "/");
	assert_non_null(plan_add_health(&p, "site", &o, error));
	assert_int_equal(plan_execute(&loop, &p, &env, &cbs, r, &x), 0);
	while (!r->done)
		uv_run(&loop, UV_RUN_ONCE);
	st = p.steps[0]->status;
	*error = p.steps[0]->error ? xstrdup(p.steps[0]->error) : NULL;
	plan_free(&p);
	http_free(env.http);
	while (uv_run(&loop, UV_RUN_NOWAIT) != 0)
		;
	assert_int_equal(uv_loop_close(&loop), 0);
	return st;
}

static void test_health_step_live(void **state)
{
	struct health_run r;
	char *error = NULL;
	int64_t t0;

	/* Both clients answer: 200 and a redirect (3xx, not followed). */
	assert_int_equal(health_run("/ok", "/moved", 2, &r, &error), STEP_UNCHANGED);
	assert_false(r.failed);
	assert_null(error);
	assert_non_null(strstr(r.output, "health: passed"));

	/* A client that answers 503 at first: checked again until it passes. */
	srv.late = 0;
	assert_int_equal(health_run("/ok", "/late", 3, &r, &error), STEP_UNCHANGED);
	assert_int_equal(srv.late, 3);
	assert_non_null(strstr(r.output, "not yet"));
	assert_non_null(strstr(r.output, "HTTP 503"));
	assert_non_null(strstr(r.output, "passed after"));

	/* One client answers 500 throughout: the step fails after its
	 * timeout, naming the URL and the last answer. */
	t0 = time_monotonic_usec();
	assert_int_equal(health_run("/ok", "/bad", 1, &r, &error), STEP_FAILED);
	assert_true(r.failed);
	assert_true(time_monotonic_usec() - t0 >= 1000000);
	assert_non_null(error);
	if (!strstr(error, "not healthy within 1 s") || !strstr(error, "/bad answered HTTP 500"))
		fail_msg("error: %s", error);
	free(error);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rolling_validation),
		cmocka_unit_test(test_singleton_and_layers),
		cmocka_unit_test(test_rolling_plan),
		cmocka_unit_test(test_maintenance_plan),
		cmocka_unit_test(test_health_urls_planned),
		cmocka_unit_test_setup_teardown(test_health_step_live, srv_setup, srv_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* Unit tests of the front-end family (agent/recipes/front*.c): rendering
 * against golden files (tests/golden/front/, rewritten by `make
 * update-golden`), validation with JSON paths, the vcl.list parser and
 * the CLI quoting. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "recipes/front.h"
#include "steps/step_vcl.h"
#include "strv.h"
#include "recipes/recipe.h"
#include "stack/stack.h"
#include "util.h"

static const struct front_render_opts defaults = {
	.haproxy_bind = ":8080",
	.haproxy_address = "127.0.0.1:8080",
	.stats_socket = "/run/haproxy/admin.sock",
	.haproxy_maxconn = 80000,
	.varnish_address = "127.0.0.1:6081",
	.nginx_listen = "80",
};

static struct stack *load(const char *data, const char *instance, struct stack_error *err)
{
	struct stack *s = NULL;
	int r = stack_parse(data, strlen(data), instance, &s, err);

	if (r < 0)
		return NULL;
	r = recipes_validate(s, err);
	if (r < 0) {
		stack_unref(s);
		return NULL;
	}
	return s;
}

static char *sq(const char *s)
{
	char *d = xstrdup(s);

	for (char *p = d; *p; p++)
		if (*p == '\'')
			*p = '"';
	return d;
}

static void golden_one(const char *example, const char *kind, char *got)
{
	_cleanup_free_ char *path = xasprintf("tests/golden/front/%s.%s", example, kind);
	_cleanup_free_ char *want = NULL;
	size_t len;

	if (getenv("AGENTD_UPDATE_GOLDEN")) {
		assert_int_equal(file_write_atomic(path, got, strlen(got), 0644, (uid_t)-1, (gid_t)-1), 0);
		printf("wrote %s\n", path);
	} else {
		int r = file_read_all(path, 1 << 20, &want, &len);
		if (r < 0)
			fail_msg("%s: %s (run `make update-golden`)", path, strerror(-r));
		if (strcmp(want, got) != 0)
			fail_msg("%s differs from the rendered config:\n%s", path, got);
	}
	free(got);
}

static void test_golden(void **state)
{
	static const char *const examples[] = { "plone-full", "seed-compat", "front-sticky" };

	for (size_t i = 0; i < ELEMENTSOF(examples); i++) {
		_cleanup_free_ char *path = xasprintf("conf/examples/%s.json", examples[i]);
		_cleanup_free_ char *data = NULL;
		struct stack_error err = { 0 };
		struct stack *s;

		assert_int_equal(file_read_all(path, 1 << 24, &data, NULL), 0);
		s = load(data, "lb1", &err);
		if (!s)
			fail_msg("%s: %s: %s", path, err.path, err.message);
		golden_one(examples[i], "haproxy.cfg", front_render_haproxy(s, &defaults));
		golden_one(examples[i], "vcl", front_render_vcl(s, &defaults));
		golden_one(examples[i], "nginx", front_render_nginx(s, &defaults));
		stack_unref(s);
	}
}

static struct stack *load_fmt(const char *addr, const char *extra, struct stack_error *err)
{
	struct buf b;
	_cleanup_free_ char *doc = NULL, *d = NULL;

	buf_init(&b);
	buf_puts(&b, "{'opsworks': {'stack': {'name': 't'}, 'layers': {"
		     " 'lb': {'instances': {'lb1': {'private_ip': '10.0.0.9', 'status': 'online'}}},"
		     " 'plone_instances': {'instances': {"
		     "   'a1': {'private_ip': ");
	buf_puts(&b, addr);
	buf_puts(&b, ", 'status': 'online'},"
		     "   'a2': {'private_ip': '10.0.0.2', 'status': 'stopped'}}}}},"
		     " 'plone_instances': {'instance_count': 2}");
	buf_puts(&b, extra);
	buf_puts(&b, "}");
	d = buf_steal(&b);
	doc = sq(d);
	return load(doc, "lb1", err);
}

static void test_render_membership(void **state)
{
	struct stack_error err = { 0 };
	struct stack *s = load_fmt("'10.0.0.1'", "", &err);
	_cleanup_free_ char *cfg = NULL, *vcl = NULL;

	assert_non_null(s);
	cfg = front_render_haproxy(s, &defaults);
	assert_non_null(strstr(cfg, "\tserver a1-1 10.0.0.1:8081 check"));
	assert_non_null(strstr(cfg, "\tserver a1-2 10.0.0.1:8082 check"));
	assert_null(strstr(cfg, "a2-"));
	assert_null(strstr(cfg, "cookie"));
	assert_non_null(strstr(cfg, "option httpchk\n\thttp-check send meth OPTIONS uri /\n"));
	assert_null(strstr(cfg, "stats auth"));
	vcl = front_render_vcl(s, &defaults);
	assert_non_null(strstr(vcl, "\"10.0.0.1\";"));
	assert_null(strstr(vcl, "10.0.0.2"));
	stack_unref(s);
}

static void test_nginx_stats_location_is_the_path(void **state)
{
	struct stack_error err = { 0 };
	struct stack *s = load_fmt("'10.0.0.1'", ", 'haproxy': {'enable_stats': true, 'stats_password': 'pw'}", &err);
	_cleanup_free_ char *ngx = NULL, *cfg = NULL;

	(void)state;
	assert_non_null(s);
	/* The default stats_url "/haproxy?stats": haproxy gets it whole, nginx
	 * matches locations without the query string. */
	cfg = front_render_haproxy(s, &defaults);
	assert_non_null(strstr(cfg, "\tstats uri /haproxy?stats\n"));
	ngx = front_render_nginx(s, &defaults);
	assert_non_null(strstr(ngx, "\tlocation = /haproxy {\n\t\tproxy_pass http://balancer;\n"));
	assert_null(strstr(ngx, "?stats"));
	stack_unref(s);
}

static void expect_invalid(const char *addr, const char *extra, const char *path)
{
	struct stack_error err = { 0 };
	struct stack *s = load_fmt(addr, extra, &err);

	if (s) {
		stack_unref(s);
		fail_msg("accepted: %s %s", addr, extra);
	}
	if (strcmp(err.path, path) != 0)
		fail_msg("error at %s (%s), expected %s", err.path, err.message, path);
}

static void test_validation(void **state)
{
	expect_invalid("'10.0.0.1'", ", 'haproxy': {'health_check_url': '/x\\nbind :1'}", "$.haproxy.health_check_url");
	expect_invalid("'10.0.0.1'", ", 'haproxy': {'health_check_url': 'x'}", "$.haproxy.health_check_url");
	expect_invalid("'10.0.0.1'", ", 'haproxy': {'health_check_method': 'GET /'}", "$.haproxy.health_check_method");
	expect_invalid("'10.0.0.1'", ", 'haproxy': {'stats_password': 'a b'}", "$.haproxy.stats_password");
	expect_invalid("'10.0.0.1'", ", 'haproxy': {'stats_password': 'a#b'}", "$.haproxy.stats_password");
	expect_invalid("'10.0.0.1'", ", 'haproxy': {'stats_user': 'a:b'}", "$.haproxy.stats_user");
	expect_invalid("'10.0.0.1'", ", 'haproxy': {'enable_stats': true}", "$.haproxy.stats_password");
	expect_invalid("'10.0.0.1'", ", 'haproxy': {'enable_stats': 1}", "$.haproxy.enable_stats");
	expect_invalid("'10.0.0.1'", ", 'varnish_purge_urls': ['a\\nb']", "$.varnish_purge_urls[0]");
	expect_invalid("'10.0.0.1'", ", 'varnish_purge_urls': 'x'", "$.varnish_purge_urls");
	expect_invalid("'10.0.0.1'", ", 'varnish_purge_urls': ['/', 'a b']", "$.varnish_purge_urls[1]");
	expect_invalid("'10.0.0.1;'", "", "$.opsworks.layers.plone_instances.instances.a1.private_ip");
	expect_invalid("'10.0.0.1\\n'", "", "$.opsworks.layers.plone_instances.instances.a1.private_ip");

	/* site_id and subsites live in the plone_instances section. */
	{
		_cleanup_free_ char *f = sq("{'opsworks': {'layers': {'lb': {'instances': {'lb1': {'status': 'online'}}}}},"
					    " 'plone_instances': {'site_id': 'Plone;'}}");
		struct stack_error err = { 0 };
		struct stack *s = load(f, "lb1", &err);
		assert_null(s);
		assert_string_equal(err.path, "$.plone_instances.site_id");
	}
	{
		_cleanup_free_ char *f = sq("{'opsworks': {'layers': {'lb': {'instances': {'lb1': {'status': 'online'}}}}},"
					    " 'plone_instances': {'subsites': {'a.example': 'Plone/../x'}}}");
		struct stack_error err = { 0 };
		struct stack *s = load(f, "lb1", &err);
		assert_null(s);
		assert_string_equal(err.path, "$.plone_instances.subsites[\"a.example\"]");
	}
}

static void test_vcl_list_parse(void **state)
{
	static const char out[] = "available   auto    warm         0    boot\n"
				  "available   auto    warm         0    agentd_1_aa\n"
				  "active      auto    warm         0    agentd_2_bb\n"
				  "available   auto    cold         0    agentd_3_cc\n"
				  "available   auto    warm         0    other\n"
				  "discarded   cold    busy         1    agentd_0_ee\n"
				  "short line\n"
				  "available   auto    warm         0    agentd_4_dd";
	char **names = NULL;
	size_t n = front_vcl_list_parse(out, sizeof(out) - 1, "agentd_", "agentd_4_dd", &names);

	assert_int_equal(n, 2);
	assert_string_equal(names[0], "agentd_1_aa");
	assert_string_equal(names[1], "agentd_3_cc");
	assert_null(names[2]);
	strv_free(names);
	n = front_vcl_list_parse("", 0, "agentd_", "x", &names);
	assert_int_equal(n, 0);
	strv_free(names);
}

static void test_cli_quote(void **state)
{
	_cleanup_free_ char *q = front_cli_quote("a \"b\" \\.css$");

	assert_string_equal(q, "\"a \\\"b\\\" \\\\.css$\"");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden),
		cmocka_unit_test(test_nginx_stats_location_is_the_path),
		cmocka_unit_test(test_render_membership),
		cmocka_unit_test(test_validation),
		cmocka_unit_test(test_vcl_list_parse),
		cmocka_unit_test(test_cli_quote),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* Unit tests of the apps family: XML-RPC building and parsing
 * (agent/supervisor.c), deploy.cfg rendering, services and validation
 * (agent/recipes/apps*.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "recipes/apps.h"
#include "recipes/plone.h"
#include "stack/stack.h"
#include "steps/step_packages.h"
#include "io/supervisor.h"
#include "util.h"

static void test_build_call_escapes(void **state)
{
	json_t *p = json_pack("[s, b, i]", "a<b>&\"c", 1, 42);
	char *x = xmlrpc_build_call("supervisor.startProcess", p);

	assert_non_null(strstr(x, "<methodName>supervisor.startProcess</methodName>"));
	assert_non_null(strstr(x, "<string>a&lt;b&gt;&amp;&quot;c</string>"));
	assert_non_null(strstr(x, "<boolean>1</boolean>"));
	assert_non_null(strstr(x, "<int>42</int>"));
	free(x);
	json_decref(p);
}

static void parse_ok(const char *xml, const char *want_json)
{
	json_t *v = NULL, *want = json_loads(want_json, JSON_DECODE_ANY, NULL);
	int fault = -1;
	char *err = NULL;

	assert_int_equal(xmlrpc_parse_response(xml, strlen(xml), &v, &fault, &err), 0);
	assert_int_equal(fault, 0);
	assert_null(err);
	assert_non_null(want);
	assert_true(json_equal(v, want));
	json_decref(v);
	json_decref(want);
}

static void test_parse_values(void **state)
{
	parse_ok("<?xml version='1.0'?><methodResponse><params><param><value><array><data><value><array><data>"
		 "<value><string>a</string></value></data></array></value><value><array><data></data></array></value>"
		 "</data></array></value></param></params></methodResponse>",
		 "[[\"a\"], []]");
	parse_ok("<methodResponse><params><param><value><struct><member><name>pid</name><value><int>12</int></value>"
		 "</member><member><name>statename</name><value><string>RUNNING</string></value></member>"
		 "<member><name>x</name><value>bare &amp; text</value></member></struct></value></param></params>"
		 "</methodResponse>",
		 "{\"pid\": 12, \"statename\": \"RUNNING\", \"x\": \"bare & text\"}");
	parse_ok("<methodResponse><params><param><value><boolean>1</boolean></value></param></params></methodResponse>",
		 "true");
}

static void test_parse_fault(void **state)
{
	const char *xml = "<methodResponse><fault><value><struct><member><name>faultCode</name><value><int>70</int>"
			  "</value></member><member><name>faultString</name><value><string>NOT_RUNNING: x</string>"
			  "</value></member></struct></value></fault></methodResponse>";
	json_t *v = NULL;
	int fault = 0;
	char *err = NULL;

	assert_int_equal(xmlrpc_parse_response(xml, strlen(xml), &v, &fault, &err), 0);
	assert_int_equal(fault, SUPERVISOR_NOT_RUNNING);
	assert_string_equal(err, "NOT_RUNNING: x");
	assert_null(v);
	free(err);
}

static void test_parse_rejects(void **state)
{
	static const char *const bad[] = {
		"",
		"not xml",
		"<methodResponse></methodResponse>",
		"<other><params/></other>",
		"<methodResponse><params><param><value><int>x</int></value></param></params></methodResponse>",
		"<methodResponse><params><param><value><boolean>2</boolean></value></param></params></methodResponse>",
		"<?xml version='1.0'?><!DOCTYPE m [<!ENTITY a 'aaaa'>]><methodResponse><params><param><value>"
		"<string>&a;</string></value></param></params></methodResponse>",
		"<methodResponse><fault><value><string>x</string></value></fault></methodResponse>",
	};
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		json_t *v = NULL;
		int fault = 0;
		char *err = NULL;
		assert_true(xmlrpc_parse_response(bad[i], strlen(bad[i]), &v, &fault, &err) < 0);
		assert_null(v);
		assert_non_null(err);
		free(err);
	}
}

static struct stack *parse(const char *doc)
{
	struct stack *s = NULL;
	struct stack_error err;
	int r = stack_parse(doc, strlen(doc), "app1", &s, &err);
	if (r < 0)
		fail_msg("stack_parse: %s: %s", err.path, err.message);
	return s;
}

static const char doc_fmt[] =
	"{\"opsworks\":{\"layers\":{"
	"\"plone_instances\":{\"instances\":{\"app1\":{\"private_ip\":\"10.0.0.1\",\"status\":\"online\"%s}}},"
	"\"zeoserver\":{\"instances\":{"
	"\"zeo0\":{\"private_ip\":\"10.0.2.9\",\"status\":\"stopped\"},"
	"\"zeo1\":{\"private_ip\":\"10.0.2.1\",\"public_dns_name\":\"ec2-zeo\",\"status\":\"online\"}}}}},"
	"\"deploy\":{\"plone_instances\":{\"scm\":{\"scm_type\":\"git\",\"repository\":\"/r\"},"
	"\"environment\":{\"ZED\":\"1\",\"ALPHA\":\"2\",\"RAILS_ENV\":\"x\",\"TMPDIR\":\"/t\"}%s}},"
	"\"plone_instances\":{%s}}";

static struct stack *parse_fmt(const char *member, const char *app, const char *pi)
{
	char buf[4096];
	(void)snprintf(buf, sizeof(buf), doc_fmt, member, app, pi);
	return parse(buf);
}

static void test_render_instances(void **state)
{
	struct stack *s = parse_fmt("", ",\"buildout_extends\":[\"cfg/prod.cfg\"],\"buildout_parts_to_include\":[\"x\"]",
				    "\"instance_count\":3");
	char *cfg = apps_render_deploy_cfg(s, APP_INSTANCES, stack_app_find(s, "plone_instances"), "/srv/www/p");

	/* extends, then parts: the clients first, then the stack's. */
	assert_non_null(strstr(cfg, "extends =\n    cfg/base.cfg\n    cfg/prod.cfg\n"));
	assert_non_null(strstr(cfg, "parts +=\n    client1\n    client2\n    client3\n    x\n"));
	/* The ZEO server: the first online member, by its private address. */
	assert_non_null(strstr(cfg, "[zeo-host]\naddress = 10.0.2.1:8001\n"));
	assert_non_null(strstr(cfg, "[zeoserver]\naddress = ${zeo-host:address}\n"));
	/* Sorted environment, without RAILS and TMP keys, with the egg cache. */
	assert_non_null(strstr(cfg, "environment-vars +=\n    ALPHA 2\n    PYTHON_EGG_CACHE /srv/www/p/shared/eggs\n"
				    "    ZED 1\n"));
	assert_null(strstr(cfg, "RAILS_ENV"));
	assert_null(strstr(cfg, "TMPDIR"));
	assert_non_null(strstr(cfg, "[client3]\n<= client1\nhttp-address = 8083\n"));
	assert_null(strstr(cfg, "[client4]"));
	free(cfg);
	stack_unref(s);
}

static void test_render_relstorage_solr_celery(void **state)
{
	struct stack *s = parse(
		"{\"opsworks\":{\"layers\":{"
		"\"plone_instances\":{\"instances\":{\"app1\":{\"private_ip\":\"10.0.0.1\",\"status\":\"online\"}}},"
		"\"memcached\":{\"instances\":{\"m1\":{\"private_ip\":\"10.0.5.1\",\"status\":\"online\"},"
		"\"m2\":{\"private_ip\":\"10.0.5.2\",\"status\":\"stopped\"},"
		"\"m3\":{\"private_dns_name\":\"m3.internal\",\"status\":\"online\"}}},"
		"\"solr\":{\"instances\":{\"s1\":{\"private_ip\":\"10.0.6.1\",\"status\":\"online\"}}},"
		"\"celery_broker\":{\"instances\":{\"b1\":{\"private_ip\":\"10.0.7.1\",\"status\":\"online\"}}}}},"
		"\"deploy\":{\"plone_instances\":{\"scm\":{\"scm_type\":\"git\",\"repository\":\"/r\"},"
		"\"buildout_parts_to_include\":[\"extra\"]}},"
		"\"plone_instances\":{\"instance_count\":2,\"enable_relstorage\":true,\"solr_enabled\":true,"
		"\"enable_celery\":true,\"broker\":{\"port\":6380},"
		"\"relstorage\":{\"db\":{\"name\":\"zodb\",\"host\":\"db.internal\",\"user\":\"z\",\"password\":\"pw\","
		"\"adapter\":\"postgresql\"},\"enable_pack\":true,\"two_stage_pack\":true,\"pack_days\":3,"
		"\"truncate_refs\":true}}}");
	char *cfg = apps_render_deploy_cfg(s, APP_INSTANCES, stack_app_find(s, "plone_instances"), "/srv/www/p");

	assert_non_null(strstr(cfg, "extends =\n    cfg/base.cfg\n    cfg/relstorage.cfg\n"));
	/* Clients, then the pack parts, then celery, then the stack's parts.
	 * agentd runs bin/zodbpack itself (recipes/zodb.c): the cron parts
	 * zodbpack-prepack and zodbpack-pack are left out. */
	assert_non_null(strstr(cfg, "parts +=\n    client1\n    client2\n    pack-config\n"
				    "    zodb-clear-refs\n    celery\n    extra\n"));
	assert_null(strstr(cfg, "    zodbpack"));
	assert_non_null(strstr(cfg, "eggs +=\n    psycopg2\n    pylibmc\n"));
	/* The port is never written (reference §4.1). */
	assert_non_null(strstr(cfg, "[relstorage]\ndbname = zodb\nhost = db.internal\nuser = z\npassword = pw\n"));
	/* Online (or self) memcached members, private addresses first. */
	assert_non_null(strstr(cfg, "[memcached]\nservers = 10.0.5.1:11211 m3.internal:11211\n"));
	assert_non_null(strstr(cfg, "[zodbpack]\npack-days = 3\n"));
	assert_null(strstr(cfg, "[zeo-host]"));
	assert_non_null(strstr(cfg, "[solr-host]\nhost = 10.0.6.1\n"));
	assert_non_null(strstr(cfg, "[celery-broker]\nhost = 10.0.7.1\nport = 6380\n"));
	assert_non_null(strstr(cfg, "[celery]\nbroker-host = 10.0.7.1\nbroker-port = 6380\n"));
	free(cfg);
	stack_unref(s);
}

static void test_client_count(void **state)
{
	struct stack *s = parse_fmt(",\"backends\":12", "", "\"per_cpu\":2");
	assert_int_equal(plone_client_count(s, NULL), 3); /* ceil(12 × 2 ÷ 8) */
	stack_unref(s);
	s = parse_fmt(",\"backends\":12", "", "\"per_cpu\":2,\"instance_count\":5");
	assert_int_equal(plone_client_count(s, NULL), 5);
	stack_unref(s);
	s = parse_fmt("", "", "\"per_cpu\":0.5");
	assert_int_equal(plone_client_count(s, NULL), (plone_cpu_count() + 1) / 2);
	stack_unref(s);
}

static void test_services(void **state)
{
	struct stack *s = parse_fmt("", ",\"buildout_init_commands\":[{\"name\":\"celery\",\"cmd\":\"bin/celery\","
					"\"args\":\"worker\",\"delay\":3}]",
				    "\"instance_count\":2,\"restart_delay\":7");
	struct app_services sv;

	apps_services(s, APP_INSTANCES, stack_app_find(s, "plone_instances"), &sv);
	assert_int_equal(sv.n, 3);
	assert_string_equal(sv.v[0].name, "plone_instances-celery");
	assert_string_equal(sv.v[0].command, "bin/celery worker");
	assert_int_equal(sv.v[0].delay, 3);
	assert_string_equal(sv.v[2].name, "plone_instances-client2");
	assert_string_equal(sv.v[2].command, "bin/client2 console");
	assert_int_equal(sv.v[2].delay, 7);
	apps_services_free(&sv);
	stack_unref(s);
}

/* With enable_celery and a broker: the worker and (celerybeat) the scheduler, after the clients. */
static void test_services_celery(void **state)
{
	struct stack *s = parse_fmt("", "",
				    "\"instance_count\":1,\"enable_celery\":true,\"broker\":{\"host\":\"10.0.7.1\"},"
				    "\"celery_args\":\"-A app -l info\",\"celerybeat\":true,\"beat_args\":\"-A app\"");
	struct app_services sv;

	apps_services(s, APP_INSTANCES, stack_app_find(s, "plone_instances"), &sv);
	assert_int_equal(sv.n, 3);
	assert_string_equal(sv.v[0].name, "plone_instances-client1");
	assert_string_equal(sv.v[1].name, "plone_instances-celery");
	assert_string_equal(sv.v[1].command, "bin/celery worker -A app -l info");
	assert_string_equal(sv.v[2].name, "plone_instances-celerybeat");
	assert_string_equal(sv.v[2].command, "bin/celery beat -A app");
	apps_services_free(&sv);
	stack_unref(s);

	/* No broker host found: no celery programs. */
	s = parse_fmt("", "", "\"instance_count\":1,\"enable_celery\":true,\"celerybeat\":true");
	apps_services(s, APP_INSTANCES, stack_app_find(s, "plone_instances"), &sv);
	assert_int_equal(sv.n, 1);
	apps_services_free(&sv);
	stack_unref(s);
}

static void test_validation_paths(void **state)
{
	static const struct {
		const char *app, *path, *pi;
	} cases[] = {
		{ ",\"buildout_init_commands\":[{\"name\":\"x\",\"cmd\":\"../bin/sh\"}]",
		  "$.deploy.plone_instances.buildout_init_commands[0]" },
		{ ",\"buildout_extends\":[\"/etc/passwd\"]", "$.deploy.plone_instances.buildout_extends[0]" },
		{ ",\"buildout_parts_to_include\":[\"a b\"]", "$.deploy.plone_instances.buildout_parts_to_include[0]" },
		{ ",\"buildout_cache_archives\":[{\"url\":\"http://x/a.tgz\",\"path\":\"../x\"}]",
		  "$.deploy.plone_instances.buildout_cache_archives[0]" },
		/* agentd's own links and releases: a purge would empty what they point to. */
		{ ",\"buildout_cache_archives\":[{\"url\":\"http://x/a.tgz\",\"path\":\"current/eggs\"}]",
		  "$.deploy.plone_instances.buildout_cache_archives[0]" },
		{ ",\"buildout_cache_archives\":[{\"url\":\"http://x/a.tgz\",\"path\":\"releases\"}]",
		  "$.deploy.plone_instances.buildout_cache_archives[0]" },
		{ ",\"buildout_cache_archives\":[{\"url\":\"http://x/a.tgz\",\"path\":\"shared\"}]",
		  "$.deploy.plone_instances.buildout_cache_archives[0]" },
		/* Lines of deploy.cfg and supervisor programs: no control characters, plain hosts. */
		{ "", "$.plone_instances.relstorage.dsn", "\"relstorage\":{\"dsn\":\"dbname=z\\n[buildout]\"}" },
		{ "", "$.plone_instances.relstorage.db.password", "\"relstorage\":{\"db\":{\"password\":\"pw\\nx = y\"}}" },
		{ "", "$.plone_instances.relstorage.cache_servers", "\"relstorage\":{\"cache_servers\":\"a:1 b;c\"}" },
		{ ",\"database\":{\"host\":\"db\\n[x]\"}", "$.deploy.plone_instances.database.host" },
		{ "", "$.plone_instances.broker.host", "\"broker\":{\"host\":\"b\\nx\"}" },
		{ "", "$.plone_instances.zeo.address", "\"zeo\":{\"address\":\"z/x:8100\"}" },
		{ "", "$.plone_instances.solr_host", "\"solr_host\":\"s\\tx\"" },
		{ "", "$.plone_instances.broker.host", "\"enable_celery\":true,\"broker\":{\"host\":\"b\\n[celery]\"}" },
		{ "", "$.plone_instances.celery_args", "\"celery_args\":\"-A app; rm -rf /\"" },
		/* Values that would not read back through deploy.cfg's parser
		 * (design.md §8): buildout strips edge spaces, substitutes "${". */
		{ "", "$.plone_instances.relstorage.db.dsn", "\"relstorage\":{\"db\":{\"dsn\":\"host=${a:b}\"}}" },
		{ "", "$.plone_instances.relstorage.cache_servers", "\"relstorage\":{\"cache_servers\":\" a:1\"}" },
		/* Raw buildout text that zc.buildout cannot read, or that would
		 * extend agentd's own last [buildout] option. */
		{ ",\"buildout_additional_config\":\"    x\\n\"", "$.deploy.plone_instances.buildout_additional_config" },
		{ ",\"buildout_additional_config\":\"[x]\\na: b\\n\"",
		  "$.deploy.plone_instances.buildout_additional_config" },
		{ ",\"buildout_additional_config\":\"[x:True]\\n\"", "$.deploy.plone_instances.buildout_additional_config" },
		/* Numbers that the renderer would drop or read otherwise. */
		{ "", "$.plone_instances.broker.port", "\"broker\":{\"port\":\"6380\"}" },
		{ "", "$.plone_instances.broker.port", "\"broker\":{\"port\":70000}" },
		{ "", "$.plone_instances.zodb_cache_size", "\"zodb_cache_size\":\"30000\"" },
		{ "", "$.plone_instances.relstorage.pack_days", "\"relstorage\":{\"pack_days\":1.5}" },
		/* Two programs of one name, or one named like the kind's own. */
		{ ",\"buildout_init_commands\":[{\"name\":\"w\",\"cmd\":\"bin/a\"},{\"name\":\"w\",\"cmd\":\"bin/b\"}]",
		  "$.deploy.plone_instances.buildout_init_commands[1]" },
		{ ",\"buildout_init_commands\":[{\"name\":\"client2\",\"cmd\":\"bin/a\"}]",
		  "$.deploy.plone_instances.buildout_init_commands[0]" },
		{ ",\"buildout_init_commands\":[{\"name\":\"celery\",\"cmd\":\"bin/a\"}]",
		  "$.deploy.plone_instances.buildout_init_commands[0]", "\"enable_celery\":true" },
		{ ",\"buildout_init_commands\":[{\"name\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\","
		  "\"cmd\":\"bin/a\"}]",
		  "$.deploy.plone_instances.buildout_init_commands[0]" },
	};
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		char buf[4096];
		struct stack *s = NULL;
		struct stack_error err;

		(void)snprintf(buf, sizeof(buf), doc_fmt, "", cases[i].app, cases[i].pi ? cases[i].pi : "");
		/* stack.c checks types; the family's validator checks the values. */
		if (stack_parse(buf, strlen(buf), "app1", &s, &err) < 0)
			fail_msg("case %zu: %s: %s", i, err.path, err.message);
		assert_int_equal(apps_validate(s, &err), -EINVAL);
		assert_string_equal(err.path, cases[i].path);
		stack_unref(s);
	}
}

/* An environment value reads back through supervisord's environment= and
 * deploy.cfg's environment-vars, or is refused with its path (design.md
 * §8): supervisord takes " ;" and " #" for a comment (the issue's "x ;y"
 * gave "No closing quotation" for the whole conf.d) and strips edge
 * quotes; buildout strips edge spaces and substitutes "${". */
static void test_validation_environment_values(void **state)
{
	static const char *const bad[] = { "x ;y", "x #y", "x\t;y", "'q'", "q'", "a\"b", " x", "x ", "${buildout:x}",
					   "a\nb", "nb\xc2\xa0;sp" };
	static const char *const good[] = { "x;y", "a#b", "100%", "$HOME", "back\\slash", "it's", "a b", "", "\xc3\xbc" };

	(void)state;
	for (size_t i = 0; i < ELEMENTSOF(bad) + ELEMENTSOF(good); i++) {
		bool ok = i >= ELEMENTSOF(bad);
		const char *v = ok ? good[i - ELEMENTSOF(bad)] : bad[i];
		char buf[4096];
		struct stack *s = NULL;
		struct stack_error err;

		(void)snprintf(buf, sizeof(buf), doc_fmt, "", "", "");
		if (stack_parse(buf, strlen(buf), "app1", &s, &err) < 0)
			fail_msg("%s: %s", err.path, err.message);
		json_object_set_new(json_object_get(s->apps[0].json, "environment"), "FOO", json_string(v));
		if (ok) {
			if (apps_validate(s, &err) < 0)
				fail_msg("value %zu refused: %s: %s", i, err.path, err.message);
		} else {
			assert_int_equal(apps_validate(s, &err), -EINVAL);
			assert_string_equal(err.path, "$.deploy.plone_instances.environment.FOO");
		}
		stack_unref(s);
	}
}

/* A member's cpus is an integer count: "4" or 2.5 would be skipped in
 * silence for this machine's own CPU count. */
static void test_validation_member_cpus(void **state)
{
	static const char *const bad[] = { ",\"cpus\":\"4\"", ",\"cpus\":2.5", ",\"cpus\":0" };
	(void)state;
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		char buf[4096];
		struct stack *s = NULL;
		struct stack_error err;

		(void)snprintf(buf, sizeof(buf), doc_fmt, bad[i], "", "");
		if (stack_parse(buf, strlen(buf), "app1", &s, &err) < 0)
			fail_msg("%s: %s", err.path, err.message);
		assert_int_equal(apps_validate(s, &err), -EINVAL);
		assert_string_equal(err.path, "$.opsworks.layers.plone_instances.instances.app1.cpus");
		stack_unref(s);
	}
}

/* Lists are capped at 64 entries. */
static void test_validation_caps(void **state)
{
	struct buf app;
	char buf[16384];
	struct stack *s = NULL;
	struct stack_error err;

	buf_init(&app);
	buf_puts(&app, ",\"buildout_init_commands\":[");
	for (int i = 0; i < 65; i++)
		buf_printf(&app, "%s{\"name\":\"c%d\",\"cmd\":\"bin/c\"}", i ? "," : "", i);
	buf_puts(&app, "]");
	(void)snprintf(buf, sizeof(buf), doc_fmt, "", app.data, "");
	buf_free(&app);
	if (stack_parse(buf, strlen(buf), "app1", &s, &err) < 0)
		fail_msg("%s: %s", err.path, err.message);
	assert_int_equal(apps_validate(s, &err), -EINVAL);
	assert_string_equal(err.path, "$.deploy.plone_instances.buildout_init_commands");
	stack_unref(s);
}

static void test_packages_missing(void **state)
{
	static const char *const wanted[] = { "libxml2-dev", "libxslt-dev", "libc6:amd64", "nosuch", "installed", NULL };
	const char *out = "libxml2-dev installed\nlibxslt-dev not-installed\n"
			  "dpkg-query: no packages found matching nosuch\nlibc6 installed\ninstalled";
	const char **m = packages_missing(out, strlen(out), wanted);

	assert_string_equal(m[0], "libxslt-dev");
	assert_string_equal(m[1], "nosuch");
	assert_string_equal(m[2], "installed");
	assert_null(m[3]);
	free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_build_call_escapes), cmocka_unit_test(test_parse_values),
		cmocka_unit_test(test_parse_fault),	 cmocka_unit_test(test_parse_rejects),
		cmocka_unit_test(test_render_instances), cmocka_unit_test(test_render_relstorage_solr_celery),
		cmocka_unit_test(test_client_count),
		cmocka_unit_test(test_services),	 cmocka_unit_test(test_validation_paths),
		cmocka_unit_test(test_validation_caps), cmocka_unit_test(test_validation_environment_values),
		cmocka_unit_test(test_validation_member_cpus),
		cmocka_unit_test(test_services_celery),
		cmocka_unit_test(test_packages_missing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

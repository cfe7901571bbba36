/* SPDX-License-Identifier: BSD-2-Clause */
/* Unit tests of agent/stack.c and agent/recipes/custom_validate.c: the model,
 * validation errors with their JSON paths, revisions, and the diff rules of
 * design.md §3. JSON is written with single quotes for readability and turned
 * into double quotes by sq(). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "recipes/recipe.h"
#include "recipes/storage.h"
#include "stack/stack.h"
#include "util.h"

static const char *const base_doc =
	"{'opsworks': {'stack': {'name': 'prod'}, 'activity': 'configure',"
	" 'layers': {"
	"  'plone_instances': {'name': 'Plone', 'instances': {"
	"    'app1': {'private_ip': '10.0.0.1', 'private_dns_name': 'app1.internal', 'public_dns_name': 'ec2-1',"
	"             'ip': '1.1.1.1', 'status': 'online', 'backends': 4},"
	"    'app2': {'private_ip': '10.0.0.2', 'status': 'online', 'backends': 2},"
	"    'app3': {'private_ip': '10.0.0.3', 'status': 'stopped', 'ip': null}}},"
	"  'lb': {'name': 'LB', 'instances': {'lb1': {'private_ip': '10.0.1.1', 'status': 'online'}}},"
	"  'zeoserver': {'name': 'ZEO', 'instances': {'db1': {'private_ip': '10.0.2.1', 'status': 'online'}}}}},"
	" 'deploy': {"
	"  'plone_instances': {'scm': {'scm_type': 'git', 'repository': 'https://example.com/x.git',"
	"                              'revision': 'main', 'ssh_key': null}, 'keep_releases': 3,"
	"                      'environment': {'A': 'b'}, 'buildout_extends': ['prod.cfg'],"
	"                      'buildout_init_commands': [{'name': 'client1', 'cmd': 'bin/client1'}],"
	"                      'always_build_on_deploy': false},"
	"  'zeoserver': {}},"
	" 'plone_instances': {'app_name': 'plone_instances'},"
	" 'varnish_purge_urls': ['/']}";

/* Single quotes to double quotes; the tests never need a literal quote. */
static char *sq(const char *s)
{
	char *d = xstrdup(s);

	for (char *p = d; *p; p++)
		if (*p == '\'')
			*p = '"';
	return d;
}

/* What stack_parse() checked before the registry took agent.* and ebs:
 * the document's shape, the agent section, and the storage family's
 * agent.volumes and ebs (the other families' hooks run in the tests that
 * call recipes_validate()). */
static int load(const char *d, const char *instance, struct stack **ret, struct stack_error *err)
{
	int r = stack_parse(d, strlen(d), instance, ret, err);

	if (r == 0 && ((r = recipes_validate_agent(*ret, err)) < 0 || (r = storage_validate_shape(*ret, err)) < 0)) {
		stack_unref(*ret);
		*ret = NULL;
	}
	return r;
}

static int parse_sq(const char *doc, const char *instance, struct stack **ret, struct stack_error *err)
{
	char *d = sq(doc);
	int r = load(d, instance, ret, err);

	free(d);
	return r;
}

static struct stack *parse_ok(const char *doc, const char *instance)
{
	struct stack_error err;
	struct stack *s = NULL;
	int r = parse_sq(doc, instance, &s, &err);

	if (r < 0)
		fail_msg("parse failed: %d at %s: %s", r, err.path, err.message);
	return s;
}

static json_t *load_sq(const char *doc)
{
	char *d = sq(doc);
	json_t *j = json_loads(d, 0, NULL);

	free(d);
	assert_non_null(j);
	return j;
}

/* Sets (or with value NULL removes) a dotted path of object keys in root,
 * creating objects on the way. value is single-quoted JSON. */
static void set_path(json_t *root, const char *path, const char *value)
{
	char *p = xstrdup(path), *k = p, *dot;
	json_t *o = root;

	while ((dot = strchr(k, '.'))) {
		json_t *c;

		*dot = '\0';
		c = json_object_get(o, k);
		if (!c) {
			c = json_object();
			json_object_set_new(o, k, c);
		}
		o = c;
		k = dot + 1;
	}
	if (value) {
		char *v = sq(value);
		json_t *j = json_loads(v, JSON_DECODE_ANY, NULL);

		assert_non_null(j);
		json_object_set_new(o, k, j);
		free(v);
	} else {
		json_object_del(o, k);
	}
	free(p);
}

static struct stack *parse_json(json_t *j, const char *instance)
{
	struct stack_error err;
	struct stack *s = NULL;
	char *d = json_dumps(j, JSON_COMPACT);
	int r = load(d, instance, &s, &err);

	free(d);
	if (r < 0)
		fail_msg("parse failed: %d at %s: %s", r, err.path, err.message);
	return s;
}

/* Expects parsing to fail with -EINVAL at path; returns the message in msg. */
static void expect_error(const char *doc, const char *path, const char *msg_part)
{
	struct stack_error err;
	struct stack *s = (struct stack *)0x1;
	int r = parse_sq(doc, "app1", &s, &err);

	if (r != -EINVAL)
		fail_msg("expected -EINVAL at %s, got %d (%s: %s)", path, r, err.path, err.message);
	assert_null(s);
	if (strcmp(err.path, path) != 0)
		fail_msg("expected path %s, got %s (%s)", path, err.path, err.message);
	if (msg_part && !strstr(err.message, msg_part))
		fail_msg("message \"%s\" lacks \"%s\"", err.message, msg_part);
}

/* "event/layer/app" per trigger, "-" for NULL, "!" when planned against the
 * old stack, joined by spaces. */
static char *render(const struct trigger *t, size_t n)
{
	struct buf b;

	buf_init(&b);
	for (size_t i = 0; i < n; i++)
		buf_printf(&b, "%s%s/%s/%s%s", i ? " " : "", event_to_string(t[i].event), t[i].layer ? t[i].layer : "-",
			   t[i].app ? t[i].app : "-", t[i].use_old_stack ? "!" : "");
	return buf_steal(&b);
}

static void expect_diff(const struct stack *old, const struct stack *new, const char *want)
{
	struct trigger *t = NULL;
	size_t n = 0;
	char *got;

	assert_int_equal(stack_diff(old, new, &t, &n), 0);
	got = render(t, n);
	if (strcmp(got, want) != 0)
		fail_msg("triggers \"%s\", expected \"%s\"", got, want);
	free(got);
	triggers_free(t, n);
}

/* Diff of the base document (as instance) against a changed copy. */
static void expect_diff_change(const char *instance, const char *set, const char *value, const char *want)
{
	json_t *j = load_sq(base_doc);
	struct stack *a = parse_json(j, instance), *b;

	set_path(j, set, value);
	b = parse_json(j, instance);
	expect_diff(a, b, want);
	stack_unref(a);
	stack_unref(b);
	json_decref(j);
}

/* ---- parsing ------------------------------------------------------------- */

static void test_parse_model(void **state)
{
	struct stack *s = parse_ok(base_doc, "app1");
	const struct stack_layer *l;
	const struct stack_app *a;

	assert_int_equal(s->refcount, 1);
	assert_string_equal(s->name, "prod");
	assert_string_equal(s->instance, "app1");
	assert_int_equal(strlen(s->revision), 16);
	assert_int_equal(s->n_layers, 3);
	assert_string_equal(s->layers[0].shortname, "plone_instances");
	assert_string_equal(s->layers[1].shortname, "lb");
	assert_string_equal(s->layers[2].shortname, "zeoserver");

	l = stack_layer_find(s, "plone_instances");
	assert_ptr_equal(l, &s->layers[0]);
	assert_string_equal(l->name, "Plone");
	assert_true(l->has_self);
	assert_int_equal(l->n_members, 3);
	assert_string_equal(l->members[0].hostname, "app1");
	assert_string_equal(l->members[0].private_ip, "10.0.0.1");
	assert_string_equal(l->members[0].private_dns_name, "app1.internal");
	assert_string_equal(l->members[0].public_dns_name, "ec2-1");
	assert_string_equal(l->members[0].ip, "1.1.1.1");
	assert_int_equal(l->members[0].backends, 4);
	assert_true(l->members[0].online);
	assert_true(l->members[0].self);
	assert_false(l->members[1].self);
	assert_int_equal(l->members[2].backends, -1);
	assert_false(l->members[2].online);
	assert_string_equal(l->members[2].status, "stopped");
	assert_null(l->members[2].ip);
	assert_false(stack_layer_find(s, "lb")->has_self);
	assert_null(stack_layer_find(s, "nope"));

	assert_int_equal(s->n_self_layers, 1);
	assert_string_equal(s->self_layers[0], "plone_instances");
	assert_true(stack_has_self_layer(s, "plone_instances"));
	assert_false(stack_has_self_layer(s, "lb"));
	/* Without opsworks.instance, self is our member entry. */
	assert_ptr_equal(s->self, json_object_get(json_object_get(json_object_get(json_object_get(
								    json_object_get(s->root, "opsworks"), "layers"),
								    "plone_instances"),
							    "instances"),
				  "app1"));

	assert_int_equal(s->n_apps, 2);
	a = stack_app_find(s, "plone_instances");
	assert_ptr_equal(a, &s->apps[0]);
	assert_string_equal(a->deploy_to, "/srv/www/plone_instances");
	assert_string_equal(a->user, "deploy");
	assert_string_equal(a->group, "www-data");
	assert_int_equal(a->keep_releases, 3);
	assert_ptr_equal(a->json, json_object_get(json_object_get(s->root, "deploy"), "plone_instances"));
	a = stack_app_find(s, "zeoserver");
	assert_string_equal(a->deploy_to, "/srv/www/zeoserver");
	assert_int_equal(a->keep_releases, 5);
	assert_null(stack_app_find(s, "solr"));

	assert_ptr_equal(stack_ref(s), s);
	assert_int_equal(s->refcount, 2);
	stack_unref(s);
	stack_unref(s);
	stack_unref(NULL);
}

static void test_parse_app_fields(void **state)
{
	struct stack *s = parse_ok("{'deploy': {'site': {'deploy_to': '/opt/site', 'user': 'zope', 'group': 'zope',"
				   " 'keep_releases': 100, 'scm': {'scm_type': 'archive', 'revision': null}}}}",
				   "h");

	assert_int_equal(s->n_layers, 0);
	assert_int_equal(s->n_self_layers, 0);
	assert_null(s->self);
	assert_null(s->name);
	assert_string_equal(s->apps[0].deploy_to, "/opt/site");
	assert_string_equal(s->apps[0].user, "zope");
	assert_string_equal(s->apps[0].group, "zope");
	assert_int_equal(s->apps[0].keep_releases, 100);
	stack_unref(s);
}

static void test_self_from_membership(void **state)
{
	/* Any status counts for ourselves; document order of layers. */
	struct stack *s = parse_ok("{'opsworks': {'layers': {"
				   " 'a': {'instances': {'x': {'status': 'online'}}},"
				   " 'b': {'instances': {'me': {'status': 'booting'}}},"
				   " 'c': {'instances': {}},"
				   " 'd': {'instances': {'me': {'status': 'online', 'private_ip': '10.1.1.1'}}}}}}",
				   "me");

	assert_int_equal(s->n_self_layers, 2);
	assert_string_equal(s->self_layers[0], "b");
	assert_string_equal(s->self_layers[1], "d");
	assert_false(stack_layer_find(s, "a")->has_self);
	assert_true(stack_layer_find(s, "b")->has_self);
	assert_true(stack_layer_find(s, "b")->members[0].self);
	assert_false(stack_layer_find(s, "b")->members[0].online);
	/* self is the first member entry. */
	assert_string_equal(json_string_value(json_object_get(s->self, "status")), "booting");
	stack_unref(s);
}

static void test_self_from_opsworks_instance(void **state)
{
	struct stack *s = parse_ok("{'opsworks': {'instance': {'hostname': 'lb1', 'layers': ['lb', 'solr', 'lb'],"
				   " 'private_ip': '10.0.1.1', 'backends': 3},"
				   " 'layers': {'plone_instances': {'instances': {'lb1': {'status': 'online'}}},"
				   "            'lb': {'instances': {'lb1': {'status': 'online'}}}}}}",
				   "configured-name");

	assert_string_equal(s->instance, "lb1");
	/* OpsWorks' own list wins over membership; a layer not in the document
	 * still counts; duplicates collapse. */
	assert_int_equal(s->n_self_layers, 2);
	assert_string_equal(s->self_layers[0], "lb");
	assert_string_equal(s->self_layers[1], "solr");
	assert_true(stack_has_self_layer(s, "solr"));
	assert_false(stack_has_self_layer(s, "plone_instances"));
	assert_true(stack_layer_find(s, "lb")->has_self);
	assert_false(stack_layer_find(s, "plone_instances")->has_self);
	assert_true(stack_layer_find(s, "lb")->members[0].self);
	assert_ptr_equal(s->self, json_object_get(json_object_get(s->root, "opsworks"), "instance"));
	stack_unref(s);

	/* Without hostname, the configured name is used. */
	s = parse_ok("{'opsworks': {'instance': {'layers': []}, 'layers': {'lb': {'instances': {'me': {}}}}}}", "me");
	assert_string_equal(s->instance, "me");
	assert_int_equal(s->n_self_layers, 0);
	stack_unref(s);
}

static void test_syntax_error(void **state)
{
	struct stack_error err;
	struct stack *s = NULL;

	assert_int_equal(stack_parse("{\"a\": ", 6, "h", &s, &err), -EINVAL);
	assert_null(s);
	assert_string_equal(err.path, "$");
	assert_non_null(strstr(err.message, "line 1"));
	assert_non_null(strstr(err.message, "column"));

	assert_int_equal(stack_parse("", 0, "h", &s, NULL), -EINVAL);
	assert_int_equal(stack_parse(NULL, 0, "h", &s, &err), -EINVAL);
	expect_error("{'a': 1, 'a': 2}", "$", "duplicate");
	expect_error("[]", "$", "must be an object, got an array");
	expect_error("\"x\"", "$", "must be an object");
}

static void test_too_big(void **state)
{
	size_t n = 20 * 1024 * 1024;
	char *d = xmalloc(n);
	struct stack_error err;
	struct stack *s = NULL;

	memset(d, ' ', n);
	d[0] = '{';
	d[n - 1] = '}';
	assert_int_equal(stack_parse(d, n, "h", &s, &err), -EFBIG);
	assert_null(s);
	assert_string_equal(err.path, "$");
	free(d);
	/* Just over the limit too. */
	d = xmalloc(STACK_MAX_BYTES + 1);
	assert_int_equal(stack_parse(d, STACK_MAX_BYTES + 1, "h", &s, NULL), -EFBIG);
	free(d);
}

static void test_wrong_types(void **state)
{
	expect_error("{'opsworks': {'layers': []}}", "$.opsworks.layers", "must be an object, got an array");
	expect_error("{'opsworks': 3}", "$.opsworks", "an object");
	expect_error("{'opsworks': {'stack': {'name': 7}}}", "$.opsworks.stack.name", "a string");
	expect_error("{'opsworks': {'layers': {'web': []}}}", "$.opsworks.layers.web", "an object");
	expect_error("{'opsworks': {'layers': {'web': {'instances': {'h1': {'status': 1}}}}}}",
		     "$.opsworks.layers.web.instances.h1.status", "a string");
	expect_error("{'opsworks': {'layers': {'web': {'instances': {'h1.example.com': {'backends': -1}}}}}}",
		     "$.opsworks.layers.web.instances[\"h1.example.com\"].backends", "at least 0");
	expect_error("{'opsworks': {'instance': {'layers': 'web'}}}", "$.opsworks.instance.layers", "array");
	expect_error("{'opsworks': {'instance': {'layers': ['web', 3]}}}", "$.opsworks.instance.layers[1]", "string");
	expect_error("{'opsworks': {'instance': {'layers': ['a/b']}}}", "$.opsworks.instance.layers[0]", "a/b");
	expect_error("{'opsworks': {'instance': {'hostname': '../x'}}}", "$.opsworks.instance.hostname", "../x");
	expect_error("{'deploy': []}", "$.deploy", "an object");
	expect_error("{'deploy': {'x': 'y'}}", "$.deploy.x", "an object");
	expect_error("{'deploy': {'x': {'keep_releases': '5'}}}", "$.deploy.x.keep_releases",
		     "must be an integer, got a string");
	expect_error("{'deploy': {'x': {'keep_releases': 0}}}", "$.deploy.x.keep_releases", "between 1 and 100");
	expect_error("{'deploy': {'x': {'keep_releases': 101}}}", "$.deploy.x.keep_releases", "between 1 and 100");
	expect_error("{'deploy': {'x': {'keep_releases': 2.5}}}", "$.deploy.x.keep_releases", "a number");
	expect_error("{'deploy': {'x': {'user': 'a b'}}}", "$.deploy.x.user", "\"a b\"");
	expect_error("{'deploy': {'x': {'group': '..'}}}", "$.deploy.x.group", NULL);
	expect_error("{'deploy': {'x': {'scm': 'git'}}}", "$.deploy.x.scm", "an object");
	expect_error("{'deploy': {'x': {'scm': {'scm_type': 'svn'}}}}", "$.deploy.x.scm.scm_type", "\"svn\"");
	expect_error("{'deploy': {'x': {'scm': {'revision': '-f'}}}}", "$.deploy.x.scm.revision", NULL);
	expect_error("{'deploy': {'x': {'scm': {'revision': 'a b'}}}}", "$.deploy.x.scm.revision", "whitespace");
	expect_error("{'deploy': {'x': {'environment': {'A': 1}}}}", "$.deploy.x.environment.A", "a string");
	expect_error("{'deploy': {'x': {'environment': []}}}", "$.deploy.x.environment", "an object");
	expect_error("{'deploy': {'x': {'os_packages': ['a', 1]}}}", "$.deploy.x.os_packages[1]", "a string");
	expect_error("{'deploy': {'x': {'buildout_extends': 'a.cfg'}}}", "$.deploy.x.buildout_extends", "array");
	expect_error("{'deploy': {'x': {'buildout_parts_to_include': [1]}}}", "$.deploy.x.buildout_parts_to_include[0]",
		     NULL);
	expect_error("{'deploy': {'x': {'buildout_init_commands': ['client1']}}}",
		     "$.deploy.x.buildout_init_commands[0]", "an object");
	expect_error("{'deploy': {'x': {'buildout_cache_archives': {}}}}", "$.deploy.x.buildout_cache_archives",
		     "array of objects");
	expect_error("{'deploy': {'x': {'buildout_additional_config': []}}}", "$.deploy.x.buildout_additional_config",
		     "a string");
	expect_error("{'deploy': {'x': {'always_build_on_deploy': 'yes'}}}", "$.deploy.x.always_build_on_deploy",
		     "a boolean");
	expect_error("{'deploy': {'x': {'application': 1}}}", "$.deploy.x.application", "a string");
	expect_error("{'plone_instances': 'x'}", "$.plone_instances", "an object");
	expect_error("{'apt': []}", "$.apt", "an object");
	expect_error("{'ebs_snapshots': 1}", "$.ebs_snapshots", "an object");
	/* Custom JSON nobody type-checks passes through; null counts as absent. */
	stack_unref(parse_ok("{'anything': [1, {'x': null}], 'plone_solr': null, 'ssh_users': {}}", "h"));
}

static void test_secret_not_echoed(void **state)
{
	struct stack_error err;
	struct stack *s = NULL;

	/* A repository URL may carry a password. */
	assert_int_equal(parse_sq("{'deploy': {'x': {'scm': {'repository': '--upload-pack=hunter2'}}}}", "h", &s, &err),
			 -EINVAL);
	assert_string_equal(err.path, "$.deploy.x.scm.repository");
	assert_null(strstr(err.message, "hunter2"));
	assert_int_equal(parse_sq("{'agent': {'recipes': {'r': {'command': ['x'], 'environment': {'API_TOKEN': 7}}}}}",
				  "h", &s, &err),
			 -EINVAL);
	assert_string_equal(err.path, "$.agent.recipes.r.environment.API_TOKEN");
	assert_null(strstr(err.message, "7"));
	assert_int_equal(parse_sq("{'agent': {'recipes': {'r': {'command': ['x', '--pass=hunter2\\n']}}}}", "h", &s,
				  &err),
			 -EINVAL);
	assert_string_equal(err.path, "$.agent.recipes.r.command[1]");
	assert_null(strstr(err.message, "hunter2"));
}

static void test_bad_paths(void **state)
{
	expect_error("{'deploy': {'myapp': {'deploy_to': '../../etc'}}}", "$.deploy.myapp.deploy_to",
		     "must be an absolute path without \"..\" components, got \"../../etc\"");
	expect_error("{'deploy': {'myapp': {'deploy_to': 'srv/www/x'}}}", "$.deploy.myapp.deploy_to", "absolute");
	expect_error("{'deploy': {'myapp': {'deploy_to': '/srv/www/../../etc'}}}", "$.deploy.myapp.deploy_to", NULL);
	expect_error("{'deploy': {'myapp': {'deploy_to': ''}}}", "$.deploy.myapp.deploy_to", NULL);
	expect_error("{'deploy': {'myapp': {'deploy_to': 5}}}", "$.deploy.myapp.deploy_to", "a string");
	expect_error("{'ebs': {'devices': {'sdf': {'mount_point': '/data'}}}}", "$.ebs.devices", "\"sdf\"");
	expect_error("{'ebs': {'devices': {'/dev/sdf': {'mount_point': 'data'}}}}",
		     "$.ebs.devices[\"/dev/sdf\"].mount_point", "absolute");
	expect_error("{'ebs': {'devices': {'/dev/sdf': {}}}}", "$.ebs.devices[\"/dev/sdf\"].mount_point", "required");
	expect_error("{'ebs': []}", "$.ebs", "an object");
	stack_unref(parse_ok("{'ebs': {'devices': {'/dev/sdf': {'mount_point': '/data', 'fstype': 'xfs'}},"
			     " 'raids': {}}}",
			     "h"));
}

static void test_bad_names(void **state)
{
	expect_error("{'opsworks': {'layers': {'a/b': {}}}}", "$.opsworks.layers", "\"a/b\"");
	expect_error("{'opsworks': {'layers': {'..': {}}}}", "$.opsworks.layers", NULL);
	expect_error("{'opsworks': {'layers': {'': {}}}}", "$.opsworks.layers", NULL);
	expect_error("{'deploy': {'x/y': {}}}", "$.deploy", "\"x/y\"");
	expect_error("{'deploy': {'a..b': {}}}", "$.deploy", NULL);
	expect_error("{'opsworks': {'layers': {'web': {'instances': {'h 1': {}}}}}}", "$.opsworks.layers.web.instances",
		     "\"h 1\"");
	/* Keys outside [A-Za-z0-9_-] are quoted in paths. */
	expect_error("{'opsworks': {'layers': {'web.v2': {'name': 1}}}}", "$.opsworks.layers[\"web.v2\"].name", NULL);
}

static void test_agent_layers(void **state)
{
	struct stack *s;
	const char **v;
	size_t n;

	expect_error("{'agent': {'layers': {'web': {'setup': ['nope']}}}}", "$.agent.layers.web.setup[0]",
		     "unknown recipe \"nope\"");
	expect_error("{'agent': {'layers': {'web': {'setup': ['haproxy', 'varnish', 'x::y']}}}}",
		     "$.agent.layers.web.setup[2]", "unknown recipe \"x::y\"");
	expect_error("{'agent': {'layers': {'web': {'boot': []}}}}", "$.agent.layers.web", "unknown event \"boot\"");
	expect_error("{'agent': {'layers': {'web': {'setup': 'haproxy'}}}}", "$.agent.layers.web.setup", "array");
	expect_error("{'agent': {'layers': {'web': {'setup': [1]}}}}", "$.agent.layers.web.setup[0]", NULL);
	expect_error("{'agent': {'layers': {'web': []}}}", "$.agent.layers.web", "an object");
	expect_error("{'agent': {'layers': {'a/b': {}}}}", "$.agent.layers", "\"a/b\"");
	expect_error("{'agent': {'layers': []}}", "$.agent.layers", "an object");
	expect_error("{'agent': {'colour': 'blue'}}", "$.agent", "unknown key \"colour\"");
	expect_error("{'agent': []}", "$.agent", "an object");

	s = parse_ok("{'opsworks': {'layers': {'lb': {}, 'plone_instances': {}, 'web': {}}},"
		     " 'agent': {'files': ['anything', 1],"
		     "  'layers': {'lb': {'setup': ['plone_buildout::haproxy', 'mine'], 'configure': null},"
		     "             'web': {'deploy': []}},"
		     "  'recipes': {'mine': {'command': ['/usr/local/bin/mine']}}}}",
		     "h");
	v = recipes_layer_recipes(s, "lb", EVENT_SETUP, &n);
	assert_int_equal(n, 2);
	assert_string_equal(v[0], "plone_buildout::haproxy");
	assert_string_equal(v[1], "mine");
	assert_null(v[2]);
	free(v);
	/* An entry without the event (or with null) has no recipes, no default. */
	v = recipes_layer_recipes(s, "lb", EVENT_CONFIGURE, &n);
	assert_int_equal(n, 0);
	free(v);
	v = recipes_layer_recipes(s, "lb", EVENT_DEPLOY, &n);
	assert_int_equal(n, 0);
	free(v);
	v = recipes_layer_recipes(s, "plone_instances", EVENT_SHUTDOWN, &n);
	assert_int_equal(n, 1);
	assert_string_equal(v[0], "instances-stop");
	free(v);
	v = recipes_layer_recipes(s, "web", EVENT_SETUP, &n);
	assert_int_equal(n, 0);
	free(v);
	v = recipes_layer_recipes(s, "unknown_layer", EVENT_SETUP, &n);
	assert_int_equal(n, 0);
	free(v);
	assert_non_null(stack_custom_recipe(s, "mine"));
	assert_null(stack_custom_recipe(s, "haproxy"));
	stack_unref(s);

	s = parse_ok("{}", "h");
	v = recipes_layer_recipes(s, "lb", EVENT_SETUP, &n);
	assert_int_equal(n, 3);
	assert_string_equal(v[0], "haproxy");
	assert_string_equal(v[2], "nginx");
	free(v);
	assert_null(stack_custom_recipe(s, "mine"));
	stack_unref(s);
}

static void test_syntax_error_does_not_quote_input(void **state)
{
	struct stack_error err;
	struct stack *s = NULL;
	const char *doc = "{\"ebs_snapshots\": {\"aws_secret\": \"hunter2\\q\"}}";

	assert_int_equal(stack_parse(doc, strlen(doc), "h", &s, &err), -EINVAL);
	assert_string_equal(err.path, "$");
	assert_null(strstr(err.message, "hunter2"));
	assert_non_null(strstr(err.message, "line 1"));
}

static void test_custom_recipes(void **state)
{
	char big[4200], doc[8192];
	struct buf b;

	expect_error("{'agent': {'recipes': {'haproxy': {'command': ['x']}}}}", "$.agent.recipes",
		     "shadows a built-in recipe");
	expect_error("{'agent': {'recipes': {'instances-setup': {'command': ['x']}}}}", "$.agent.recipes", "shadows");
	expect_error("{'agent': {'recipes': {'a/b': {'command': ['x']}}}}", "$.agent.recipes", "\"a/b\"");
	expect_error("{'agent': {'recipes': []}}", "$.agent.recipes", "an object");
	expect_error("{'agent': {'recipes': {'r': ['x']}}}", "$.agent.recipes.r", "must be an object");
	expect_error("{'agent': {'recipes': {'r': {}}}}", "$.agent.recipes.r.command", "required");
	expect_error("{'agent': {'recipes': {'r': {'command': []}}}}", "$.agent.recipes.r.command", "empty");
	expect_error("{'agent': {'recipes': {'r': {'command': 'ls -l'}}}}", "$.agent.recipes.r.command", "array");
	expect_error("{'agent': {'recipes': {'r': {'command': ['']}}}}", "$.agent.recipes.r.command[0]", "empty");
	expect_error("{'agent': {'recipes': {'r': {'command': ['bin/run']}}}}", "$.agent.recipes.r.command[0]",
		     "\"bin/run\"");
	expect_error("{'agent': {'recipes': {'r': {'command': ['/usr/../bin/sh']}}}}", "$.agent.recipes.r.command[0]",
		     NULL);
	expect_error("{'agent': {'recipes': {'r': {'command': ['run', 1]}}}}", "$.agent.recipes.r.command[1]",
		     "a string");
	expect_error("{'agent': {'recipes': {'r': {'command': ['run', 'a\\tb']}}}}", "$.agent.recipes.r.command[1]",
		     "control");
	expect_error("{'agent': {'recipes': {'r': {'command': ['run'], 'shell': true}}}}", "$.agent.recipes.r",
		     "unknown key \"shell\"");
	expect_error("{'agent': {'recipes': {'r': {'command': ['run'], 'user': 'a/b'}}}}", "$.agent.recipes.r.user",
		     NULL);
	/* A recipe runs as its user's primary group; "group" is not a key. */
	expect_error("{'agent': {'recipes': {'r': {'command': ['run'], 'group': 'x'}}}}", "$.agent.recipes.r",
		     "unknown key \"group\"");
	expect_error("{'agent': {'recipes': {'r': {'command': ['run'], 'cwd': 'tmp'}}}}", "$.agent.recipes.r.cwd",
		     "absolute");
	expect_error("{'agent': {'recipes': {'r': {'command': ['run'], 'creates': '/a/../b'}}}}",
		     "$.agent.recipes.r.creates", "absolute");
	expect_error("{'agent': {'recipes': {'r': {'command': ['run'], 'timeout': 0}}}}", "$.agent.recipes.r.timeout",
		     "between 1 and 86400");
	expect_error("{'agent': {'recipes': {'r': {'command': ['run'], 'timeout': 86401}}}}",
		     "$.agent.recipes.r.timeout", NULL);
	expect_error("{'agent': {'recipes': {'r': {'command': ['run'], 'timeout': '60'}}}}",
		     "$.agent.recipes.r.timeout", "integer");
	expect_error("{'agent': {'recipes': {'r': {'command': ['run'], 'environment': []}}}}",
		     "$.agent.recipes.r.environment", "object");
	expect_error("{'agent': {'recipes': {'r': {'command': ['run'], 'environment': {'1X': 'a'}}}}}",
		     "$.agent.recipes.r.environment", "\"1X\"");
	expect_error("{'agent': {'recipes': {'r': {'command': ['run'], 'environment': {'A-B': 'a'}}}}}",
		     "$.agent.recipes.r.environment", NULL);
	expect_error("{'agent': {'recipes': {'r': {'command': ['run'], 'description': []}}}}",
		     "$.agent.recipes.r.description", "string");
	expect_error("{'agent': {'recipes': {'r.x': {'command': ['run'], 'timeout': -1}}}}",
		     "$.agent.recipes[\"r.x\"].timeout", NULL);

	/* Size limits: 257 arguments, one argument over 4096 bytes, a long
	 * variable name. */
	buf_init(&b);
	buf_puts(&b, "{'agent': {'recipes': {'r': {'command': ['run'");
	for (int i = 0; i < 256; i++)
		buf_puts(&b, ", 'a'");
	buf_puts(&b, "]}}}}");
	expect_error(b.data, "$.agent.recipes.r.command", "at most 256");
	buf_free(&b);
	memset(big, 'a', sizeof(big));
	big[4097] = '\0';
	(void)snprintf(doc, sizeof(doc), "{'agent': {'recipes': {'r': {'command': ['run', '%s']}}}}", big);
	expect_error(doc, "$.agent.recipes.r.command[1]", "4096");
	big[129] = '\0';
	(void)snprintf(doc, sizeof(doc), "{'agent': {'recipes': {'r': {'command': ['run'], 'environment': {'%s': ''}}}}}",
		       big);
	expect_error(doc, "$.agent.recipes.r.environment", "128");
	big[4096] = '\0';
	memset(big, 'a', 4096);
	(void)snprintf(doc, sizeof(doc), "{'agent': {'recipes': {'r': {'command': ['run', '%s']}}}}", big);
	stack_unref(parse_ok(doc, "h"));

	stack_unref(parse_ok("{'agent': {'recipes': {'deploy-hook': {'command': ['/usr/local/bin/hook', '--x', ''],"
			     " 'user': 'deploy', 'cwd': '/srv/www', 'timeout': 86400,"
			     " 'environment': {'_A1': 'v', 'B': ''}, 'creates': '/var/lib/done',"
			     " 'description': 'runs the hook'}},"
			     " 'layers': {'web': {'deploy': ['deploy-hook', 'haproxy']}}}}",
			     "h"));
}

static void test_volumes(void **state)
{
	stack_unref(parse_ok("{'agent': {'volumes': {'db1': [{'volume_id': 'vol-0123456789abcdef0', 'device': '/dev/sdf',"
			     " 'mount_point': '/mnt/shared', 'fstype': 'xfs', 'mkfs': true, 'options': 'noatime,nofail',"
			     " 'force': false}, {'volume_id': 'vol-01234567', 'mount_point': '/srv/exports'},"
			     " {'device': '/dev/xvdg', 'mount_point': '/x', 'fstype': 'ext4'}]}}}",
			     "h"));
	expect_error("{'agent': {'volumes': {'db1': [{'volume_id': 'vol-xyz12345', 'mount_point': '/m'}]}}}",
		     "$.agent.volumes.db1[0].volume_id", "\"vol-xyz12345\"");
	expect_error("{'agent': {'volumes': {'db1': [{'volume_id': 'vol-0123456', 'mount_point': '/m'}]}}}",
		     "$.agent.volumes.db1[0].volume_id", NULL);
	expect_error("{'agent': {'volumes': {'db1': [{'volume_id': 'vol-0123456789abcdef01', 'mount_point': '/m'}]}}}",
		     "$.agent.volumes.db1[0].volume_id", NULL);
	expect_error("{'agent': {'volumes': {'db1': [{'device': '/dev/sdf', 'mount_point': '/m', 'fstype': 'btrfs'}]}}}",
		     "$.agent.volumes.db1[0].fstype", "\"btrfs\"");
	expect_error("{'agent': {'volumes': {'db1': [{'device': '/dev/sdf', 'mount_point': '/m', 'options': 'a b'}]}}}",
		     "$.agent.volumes.db1[0].options", "whitespace");
	/* libmount reads "\\040" in fstab's options as a space: no backslash (design.md §8). */
	expect_error("{'agent': {'volumes': {'db1': [{'device': '/dev/sdf', 'mount_point': '/m', 'options': 'a\\\\040b'}]}}}",
		     "$.agent.volumes.db1[0].options", "backslashes");
	expect_error("{'agent': {'volumes': {'db1': [{'device': '/dev/sdf', 'mount_point': '/m', 'mkfs': 'yes'}]}}}",
		     "$.agent.volumes.db1[0].mkfs", "boolean");
	expect_error("{'agent': {'volumes': {'db1': [{'device': 'sdf', 'mount_point': '/m'}]}}}",
		     "$.agent.volumes.db1[0].device", "absolute");
	expect_error("{'agent': {'volumes': {'db1': [{'device': '/dev/sdf'}]}}}", "$.agent.volumes.db1[0].mount_point",
		     "required");
	expect_error("{'agent': {'volumes': {'db1': [{'mount_point': '/m'}]}}}", "$.agent.volumes.db1[0]",
		     "\"volume_id\"");
	expect_error("{'agent': {'volumes': {'db1': [{'mount_point': '/m', 'device': '/d', 'size': 5}]}}}",
		     "$.agent.volumes.db1[0]", "unknown key \"size\"");
	expect_error("{'agent': {'volumes': {'db1': {}}}}", "$.agent.volumes.db1", "array");
	expect_error("{'agent': {'volumes': {'db1': ['x']}}}", "$.agent.volumes.db1[0]", "object");
	expect_error("{'agent': {'volumes': {'../x': []}}}", "$.agent.volumes", "\"../x\"");
}

static void test_revision_and_dump(void **state)
{
	struct stack *a = parse_ok("{'b': [1, 2], 'a': {'y': 1, 'x': 'z'}, 'deploy': {'p': {}, 'q': {}}}", "h");
	struct stack *b = parse_ok("{'deploy': {'q': {}, 'p': {}}, 'a': {'x': 'z', 'y': 1}, 'b': [1, 2]}", "h");
	struct stack *c = parse_ok("{'b': [2, 1], 'a': {'y': 1, 'x': 'z'}, 'deploy': {'p': {}, 'q': {}}}", "h");
	char *d;
	size_t n;

	assert_string_equal(a->revision, b->revision);
	assert_string_not_equal(a->revision, c->revision);
	/* Document order is kept in the model and the dump. */
	assert_string_equal(a->apps[0].name, "p");
	assert_string_equal(b->apps[0].name, "q");
	d = stack_dump(a, &n);
	assert_int_equal(n, strlen(d));
	assert_string_equal(d, "{\"b\":[1,2],\"a\":{\"y\":1,\"x\":\"z\"},\"deploy\":{\"p\":{},\"q\":{}}}");
	free(d);
	/* Identical content, different order: nothing to do. */
	expect_diff(a, b, "");
	stack_unref(a);
	stack_unref(b);
	stack_unref(c);
}

/* ---- diff ----------------------------------------------------------------- */

static void test_diff_first_start(void **state)
{
	struct stack *s = parse_ok(base_doc, "app1");

	expect_diff(NULL, s, "setup/-/- configure/-/- deploy/-/plone_instances deploy/-/zeoserver");
	stack_unref(s);
	s = parse_ok("{'opsworks': {'layers': {'lb': {'instances': {'app1': {}}}}}}", "app1");
	expect_diff(NULL, s, "setup/-/- configure/-/- deploy/-/-");
	stack_unref(s);
	s = parse_ok("{'deploy': {}}", "app1");
	expect_diff(NULL, s, "setup/-/- configure/-/- deploy/-/-");
	stack_unref(s);
}

static void test_diff_identical(void **state)
{
	struct stack *a = parse_ok(base_doc, "app1"), *b = parse_ok(base_doc, "app1");

	expect_diff(a, b, "");
	expect_diff(a, a, "");
	stack_unref(a);
	stack_unref(b);
}

static void test_diff_membership(void **state)
{
	json_t *j = load_sq(base_doc);
	struct stack *a, *b;

	/* A new online peer. */
	expect_diff_change("app1", "opsworks.layers.plone_instances.instances.app4",
			   "{'private_ip': '10.0.0.4', 'status': 'online'}", "configure/-/-");
	/* A peer of another layer goes away. */
	expect_diff_change("app1", "opsworks.layers.zeoserver.instances.db1", NULL, "configure/-/-");
	/* Address and capacity changes of online members. */
	expect_diff_change("app1", "opsworks.layers.plone_instances.instances.app2.private_ip", "'10.0.0.22'",
			   "configure/-/-");
	expect_diff_change("app1", "opsworks.layers.lb.instances.lb1.public_dns_name", "'ec2-9'", "configure/-/-");
	expect_diff_change("app1", "opsworks.layers.lb.instances.lb1.ip", "'2.2.2.2'", "configure/-/-");
	expect_diff_change("app1", "opsworks.layers.lb.instances.lb1.private_dns_name", "'x'", "configure/-/-");
	expect_diff_change("app1", "opsworks.layers.plone_instances.instances.app2.backends", "8", "configure/-/-");
	expect_diff_change("app1", "opsworks.layers.plone_instances.instances.app1.private_ip", "'10.9.9.9'",
			   "configure/-/-");
	/* A member going offline, or an offline one coming online. */
	expect_diff_change("app1", "opsworks.layers.plone_instances.instances.app2.status", "'stopping'",
			   "configure/-/-");
	expect_diff_change("app1", "opsworks.layers.plone_instances.instances.app3.status", "'online'",
			   "configure/-/-");
	/* A layer appearing or disappearing. */
	expect_diff_change("app1", "opsworks.layers.solr", "{'name': 'Solr', 'instances': {}}", "configure/-/-");
	expect_diff_change("app1", "opsworks.layers.lb", NULL, "configure/-/-");

	/* Changes that do not touch the online membership. */
	expect_diff_change("app1", "opsworks.layers.plone_instances.instances.app3.private_ip", "'10.0.0.33'", "");
	expect_diff_change("app1", "opsworks.layers.plone_instances.instances.app3.status", "'terminated'", "");
	expect_diff_change("app1", "opsworks.layers.plone_instances.instances.app5", "{'status': 'booting'}", "");
	expect_diff_change("app1", "opsworks.layers.plone_instances.instances.app2.availability_zone", "'eu-west-1a'",
			   "");
	expect_diff_change("app1", "opsworks.layers.plone_instances.name", "'Plone 6'", "");
	expect_diff_change("app1", "opsworks.activity", "'deploy'", "");
	expect_diff_change("app1", "opsworks.sent_at", "1700000000", "");
	/* Our own status does not matter for ourselves. */
	expect_diff_change("app1", "opsworks.layers.plone_instances.instances.app1.status", "'booting'", "");

	/* Several membership changes and a Custom JSON change: exactly one configure. */
	a = parse_json(j, "app1");
	set_path(j, "opsworks.layers.lb.instances.lb2", "{'status': 'online'}");
	set_path(j, "opsworks.layers.zeoserver.instances.db1.private_ip", "'10.0.2.9'");
	set_path(j, "opsworks.layers.plone_instances.instances.app2", NULL);
	set_path(j, "plone_instances.instance_count", "4");
	b = parse_json(j, "app1");
	expect_diff(a, b, "configure/-/-");
	stack_unref(a);
	stack_unref(b);
	json_decref(j);
}

static void test_diff_opsworks_instance(void **state)
{
	json_t *j = load_sq(base_doc);
	struct stack *a, *b;

	set_path(j, "opsworks.instance", "{'hostname': 'app1', 'layers': ['plone_instances'], 'backends': 4}");
	a = parse_json(j, "x");
	set_path(j, "opsworks.instance.backends", "6");
	b = parse_json(j, "x");
	expect_diff(a, b, "configure/-/-");
	stack_unref(a);
	stack_unref(b);

	/* Listed in a new layer through opsworks.instance.layers. */
	a = parse_json(j, "x");
	set_path(j, "opsworks.instance.layers", "['plone_instances', 'solr']");
	b = parse_json(j, "x");
	expect_diff(a, b,
		    "setup/solr/- configure/solr/- deploy/solr/plone_instances deploy/solr/zeoserver configure/-/-");
	stack_unref(a);
	stack_unref(b);
	json_decref(j);
}

static void test_diff_layer_added(void **state)
{
	json_t *j = load_sq(base_doc);
	struct stack *a, *b;

	/* The instance joins lb and stays in plone_instances: lb's lifecycle,
	 * then configure for every layer, as lb's membership changed. */
	expect_diff_change("app1", "opsworks.layers.lb.instances.app1", "{'status': 'online'}",
			   "setup/lb/- configure/lb/- deploy/lb/plone_instances deploy/lb/zeoserver configure/-/-");

	/* Joining a first layer: only that layer's lifecycle. */
	a = parse_json(j, "newhost");
	set_path(j, "opsworks.layers.zeoserver.instances.newhost", "{'status': 'online'}");
	set_path(j, "plone_instances.x", "1");
	b = parse_json(j, "newhost");
	expect_diff(a, b,
		    "setup/zeoserver/- configure/zeoserver/- deploy/zeoserver/plone_instances deploy/zeoserver/zeoserver");
	stack_unref(a);
	stack_unref(b);

	/* Without apps, one deploy without app. */
	set_path(j, "deploy", NULL);
	a = parse_json(j, "newhost");
	set_path(j, "opsworks.layers.lb.instances.newhost", "{'status': 'online'}");
	b = parse_json(j, "newhost");
	expect_diff(a, b, "setup/lb/- configure/lb/- deploy/lb/- configure/-/-");
	stack_unref(a);
	stack_unref(b);
	json_decref(j);
}

static void test_diff_layer_removed(void **state)
{
	json_t *j = load_sq(base_doc);
	struct stack *a, *b;

	set_path(j, "opsworks.layers.lb.instances.app1", "{'status': 'online'}");
	a = parse_json(j, "app1");
	set_path(j, "opsworks.layers.lb.instances.app1", NULL);
	b = parse_json(j, "app1");
	expect_diff(a, b, "undeploy/lb/-! shutdown/lb/-! configure/-/-");
	stack_unref(b);

	/* The layer itself is deleted, with the instance in it. */
	set_path(j, "opsworks.layers.lb", NULL);
	b = parse_json(j, "app1");
	expect_diff(a, b, "undeploy/lb/-! shutdown/lb/-! configure/-/-");
	stack_unref(b);
	stack_unref(a);

	/* Removed from its last layer: teardown only, nothing for "every layer". */
	expect_diff_change("app1", "opsworks.layers.plone_instances.instances.app1", NULL,
			   "undeploy/plone_instances/-! shutdown/plone_instances/-!");
	json_decref(j);
}

static void test_diff_deploy(void **state)
{
	json_t *j = load_sq(base_doc);
	struct stack *a, *b;

	expect_diff_change("app1", "deploy.plone_instances.scm.revision", "'v2'", "deploy/-/plone_instances");
	expect_diff_change("app1", "deploy.zeoserver.environment", "{'X': '1'}", "deploy/-/zeoserver");
	expect_diff_change("app1", "deploy.solr", "{}", "deploy/-/solr");
	expect_diff_change("app1", "deploy.zeoserver", NULL, "undeploy/-/zeoserver!");

	/* Two apps change and Custom JSON changes: configure first, then the deploys. */
	a = parse_json(j, "app1");
	set_path(j, "deploy.plone_instances.keep_releases", "4");
	set_path(j, "deploy.zeoserver.user", "'zope'");
	set_path(j, "deploy.plone_instances", NULL);
	set_path(j, "deploy.plone_instances", "{'keep_releases': 4}");
	set_path(j, "varnish_purge_urls", "['/', '/x']");
	b = parse_json(j, "app1");
	expect_diff(a, b, "configure/-/- deploy/-/zeoserver deploy/-/plone_instances");
	stack_unref(a);
	stack_unref(b);
	json_decref(j);
}

static void test_diff_custom_json(void **state)
{
	expect_diff_change("app1", "plone_instances.instance_count", "3", "configure/-/-");
	expect_diff_change("app1", "plone_zeoserver", "{'app_name': 'zeo'}", "configure/-/-");
	expect_diff_change("app1", "varnish_purge_urls", NULL, "configure/-/-");
	expect_diff_change("app1", "opsworks.stack.name", "'staging'", "configure/-/-");
	expect_diff_change("app1", "agent.layers.lb", "{'setup': ['haproxy']}", "configure/-/-");
	expect_diff_change("app1", "ebs.devices", "{'/dev/sdf': {'mount_point': '/data'}}", "configure/-/-");
	/* Not in any layer: nothing to configure. */
	expect_diff_change("nobody", "plone_instances.instance_count", "3", "");
}

static void test_deploy_to_and_addresses_are_checked(void **state)
{
	struct stack *s;

	/* deploy_to is owned, chmodded and removed at undeploy. */
	expect_error("{'deploy': {'a': {'deploy_to': '/usr'}}}", "$.deploy.a.deploy_to", "system directory");
	expect_error("{'deploy': {'a': {'deploy_to': '/srv'}}}", "$.deploy.a.deploy_to", "system directory");
	expect_error("{'deploy': {'a': {'deploy_to': '/etc/app'}}}", "$.deploy.a.deploy_to", NULL);
	expect_error("{'deploy': {'a': {'deploy_to': '/srv/50%'}}}", "$.deploy.a.deploy_to", NULL);
	expect_error("{'deploy': {'a': {'deploy_to': '/srv/a b'}}}", "$.deploy.a.deploy_to", NULL);
	/* One app's tree must not hold another's. */
	expect_error("{'deploy': {'a': {'deploy_to': '/srv/www'}, 'b': {}}}", "$.deploy.b.deploy_to", "inside");
	expect_error("{'deploy': {'a': {'deploy_to': '/srv/x'}, 'b': {'deploy_to': '/srv/x/'}}}",
		     "$.deploy.b.deploy_to", NULL);
	s = parse_ok("{'deploy': {'a': {'deploy_to': '/srv/www/a'}, 'ab': {'deploy_to': '/srv/www/ab'}}}", "app1");
	stack_unref(s);
	/* Member addresses become hosts in configs and tool arguments. */
	expect_error("{'opsworks': {'layers': {'l': {'instances': {'m': {'private_ip': '10.0.0.1\\n[x]'}}}}}}",
		     "$.opsworks.layers.l.instances.m.private_ip", "host name or an IP address");
	expect_error("{'opsworks': {'layers': {'l': {'instances': {'m': {'private_dns_name': '-V'}}}}}}",
		     "$.opsworks.layers.l.instances.m.private_dns_name", NULL);
	s = parse_ok("{'opsworks': {'layers': {'l': {'instances': {'m': {'private_ip': 'fd00::1', 'ip': '',"
		     " 'public_dns_name': 'ec2-1-2-3-4.compute-1.amazonaws.com'}}}}}}",
		     "app1");
	stack_unref(s);
}

/* Issue 9 kind 2: two spellings of one directory are one directory. */
static void test_paths_one_spelling(void **state)
{
	struct stack *s, *t;
	const json_t *v;

	/* The two cases: refused, naming the second app's deploy_to. */
	expect_error("{'deploy': {'a': {'deploy_to': '/srv/www/shared'}, 'b': {'deploy_to': '/srv/www//shared'}}}",
		     "$.deploy.b.deploy_to", "/srv/www/shared is the same as the deploy_to of app a");
	expect_error("{'deploy': {'a': {'deploy_to': '/srv/www/a/'}, 'b': {'deploy_to': '/srv/www/a/b'}}}",
		     "$.deploy.b.deploy_to", "/srv/www/a/b is inside the deploy_to of app a");
	expect_error("{'deploy': {'a': {'deploy_to': '/srv/www/a/b//'}, 'b': {'deploy_to': '/srv//www/a'}}}",
		     "$.deploy.a.deploy_to", "inside the deploy_to of app b");
	/* The default deploy_to is a spelling too. */
	expect_error("{'deploy': {'a': {}, 'b': {'deploy_to': '/srv/www/a//'}}}", "$.deploy.b.deploy_to",
		     "the same as the deploy_to of app a");
	/* "." is refused, with its path; a prefix that is not a component is no overlap. */
	expect_error("{'deploy': {'a': {'deploy_to': '/srv/www/./a'}}}", "$.deploy.a.deploy_to", "\".\"");
	expect_error("{'deploy': {'a': {'deploy_to': '/srv/www/a/.'}}}", "$.deploy.a.deploy_to", NULL);
	s = parse_ok("{'deploy': {'a': {'deploy_to': '/srv/www/a'}, 'ab': {'deploy_to': '/srv/www/ab'}}}", "h");
	stack_unref(s);

	/* What is kept is the normal form, in the model and in the document. */
	s = parse_ok("{'deploy': {'a': {'deploy_to': '//srv/www//a/', 'scm': {'scm_type': 'local',"
		     "  'repository': '/src//a/'}}},"
		     " 'agent': {'volumes': {'h': [{'device': '/dev//xvdf', 'mount_point': '/data/'}]},"
		     "  'files': {'web': [{'path': '/etc//motd', 'content': 'x'}]},"
		     "  'recipes': {'r': {'command': ['/usr//bin/true'], 'cwd': '/tmp/', 'creates': '/tmp//x'}}},"
		     " 'ebs': {'devices': {'/dev//sdg': {'mount_point': '/vol//g/'}, '/dev/sdh': {'mount_point': '/h'}}},"
		     " 'plone_blobs': {'blob_dir': '/blobs/'}, 'plone_solr': {'data_dir': '/solr//data'},"
		     " 'plone_zeoserver': {'filestorage_dir': '/fs/'}, 'plone_instances': {'filestorage_dir': '/fs2//'}}",
		     "h");
	assert_string_equal(s->apps[0].deploy_to, "/srv/www/a");
	v = json_object_get(s->root, "deploy");
	assert_string_equal(json_string_value(json_object_get(json_object_get(v, "a"), "deploy_to")), "/srv/www/a");
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(json_object_get(v, "a"), "scm"), "repository")),
		"/src/a");
	v = json_array_get(json_object_get(json_object_get(json_object_get(s->root, "agent"), "volumes"), "h"), 0);
	assert_string_equal(json_string_value(json_object_get(v, "device")), "/dev/xvdf");
	assert_string_equal(json_string_value(json_object_get(v, "mount_point")), "/data");
	v = json_array_get(json_object_get(json_object_get(json_object_get(s->root, "agent"), "files"), "web"), 0);
	assert_string_equal(json_string_value(json_object_get(v, "path")), "/etc/motd");
	v = stack_custom_recipe(s, "r");
	assert_string_equal(json_string_value(json_array_get(json_object_get(v, "command"), 0)), "/usr/bin/true");
	assert_string_equal(json_string_value(json_object_get(v, "cwd")), "/tmp");
	assert_string_equal(json_string_value(json_object_get(v, "creates")), "/tmp/x");
	v = json_object_get(json_object_get(s->root, "ebs"), "devices");
	assert_null(json_object_get(v, "/dev//sdg"));
	assert_string_equal(json_string_value(json_object_get(json_object_get(v, "/dev/sdg"), "mount_point")), "/vol/g");
	/* In their order. */
	assert_string_equal(json_object_iter_key(json_object_iter((json_t *)v)), "/dev/sdg");
	assert_non_null(json_object_get(v, "/dev/sdh"));
	assert_string_equal(json_string_value(json_object_get(json_object_get(s->root, "plone_blobs"), "blob_dir")),
			    "/blobs");
	assert_string_equal(json_string_value(json_object_get(json_object_get(s->root, "plone_solr"), "data_dir")),
			    "/solr/data");
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(s->root, "plone_zeoserver"), "filestorage_dir")), "/fs");
	assert_string_equal(
		json_string_value(json_object_get(json_object_get(s->root, "plone_instances"), "filestorage_dir")),
		"/fs2");
	/* One stack, two spellings: one revision. */
	t = parse_ok("{'deploy': {'a': {'deploy_to': '/srv/www/a', 'scm': {'scm_type': 'local',"
		     "  'repository': '/src/a'}}},"
		     " 'agent': {'volumes': {'h': [{'device': '/dev/xvdf', 'mount_point': '/data'}]},"
		     "  'files': {'web': [{'path': '/etc/motd', 'content': 'x'}]},"
		     "  'recipes': {'r': {'command': ['/usr/bin/true'], 'cwd': '/tmp', 'creates': '/tmp/x'}}},"
		     " 'ebs': {'devices': {'/dev/sdg': {'mount_point': '/vol/g'}, '/dev/sdh': {'mount_point': '/h'}}},"
		     " 'plone_blobs': {'blob_dir': '/blobs'}, 'plone_solr': {'data_dir': '/solr/data'},"
		     " 'plone_zeoserver': {'filestorage_dir': '/fs'}, 'plone_instances': {'filestorage_dir': '/fs2'}}",
		     "h");
	assert_string_equal(s->revision, t->revision);
	stack_unref(s);
	stack_unref(t);
}

/* Lists whose entries name one mount point, device or file: one entry each. */
static void test_paths_no_duplicates(void **state)
{
	expect_error("{'agent': {'volumes': {'h': [{'device': '/dev/xvdf', 'mount_point': '/data'},"
		     " {'device': '/dev/xvdg', 'mount_point': '/data/'}]}}}",
		     "$.agent.volumes.h[1].mount_point", "also the mount_point of volume 0");
	expect_error("{'agent': {'volumes': {'h': [{'device': '/dev/xvdf', 'mount_point': '/a'},"
		     " {'device': '/dev//xvdf', 'mount_point': '/b'}]}}}",
		     "$.agent.volumes.h[1].device", "also the device of volume 0");
	expect_error("{'agent': {'volumes': {'h': [{'volume_id': 'vol-0123456789abcdef0', 'mount_point': '/a'},"
		     " {'volume_id': 'vol-0123456789abcdef0', 'mount_point': '/b'}]}}}",
		     "$.agent.volumes.h[1].volume_id", NULL);
	expect_error("{'ebs': {'devices': {'/dev/sdf': {'mount_point': '/a'}, '/dev//sdf': {'mount_point': '/b'}}}}",
		     "$.ebs.devices", "listed twice");
	expect_error("{'ebs': {'devices': {'/dev/sdf': {'mount_point': '/a'}, '/dev/sdg': {'mount_point': '/a/'}}}}",
		     "$.ebs.devices[\"/dev/sdg\"].mount_point", "also the mount point of device \"/dev/sdf\"");
	/* Different hosts may use one mount point each. */
	stack_unref(parse_ok("{'agent': {'volumes': {'h1': [{'device': '/dev/xvdf', 'mount_point': '/data'}],"
			     " 'h2': [{'device': '/dev/xvdf', 'mount_point': '/data'}]}}}",
			     "h"));
}

/* Parses and runs the recipes' validate hooks (agent.files is the files recipe's). */
static void expect_recipes_error(const char *doc, const char *path, const char *msg_part)
{
	struct stack_error err;
	struct stack *s = NULL;
	int r = parse_sq(doc, "app1", &s, &err);

	if (r < 0)
		fail_msg("parse failed: %d at %s: %s", r, err.path, err.message);
	r = recipes_validate(s, &err);
	stack_unref(s);
	if (r != -EINVAL)
		fail_msg("expected -EINVAL at %s, got %d", path, r);
	if (strcmp(err.path, path) != 0)
		fail_msg("expected path %s, got %s (%s)", path, err.path, err.message);
	if (msg_part && !strstr(err.message, msg_part))
		fail_msg("message \"%s\" lacks \"%s\"", err.message, msg_part);
}

static void expect_recipes_ok(const char *doc)
{
	struct stack_error err;
	struct stack *s = parse_ok(doc, "app1");

	if (recipes_validate(s, &err) < 0)
		fail_msg("validate failed at %s: %s", err.path, err.message);
	stack_unref(s);
}

/* The same file twice made every run write both contents (changed=2). */
static void test_files_no_duplicates(void **state)
{
	expect_recipes_error("{'agent': {'files': {'web': [{'path': '/etc/motd', 'content': 'a'},"
			     " {'path': '/etc/motd', 'content': 'b'}]}}}",
			     "$.agent.files.web[1].path", "is the same file as $.agent.files.web[0]");
	expect_recipes_error("{'agent': {'files': {'web': [{'path': '/etc/motd', 'content': 'a'},"
			     " {'path': '/etc//motd/', 'content': 'b'}]}}}",
			     "$.agent.files.web[1].path", "the same file");
	expect_recipes_error("{'agent': {'files': {'web': [{'path': '/etc/x', 'content': 'a'},"
			     " {'path': '/etc/x/y', 'content': 'b'}]}}}",
			     "$.agent.files.web[1].path", "inside the file of $.agent.files.web[0]");
	expect_recipes_error("{'agent': {'files': {'web': [{'path': '/', 'content': 'a'}]}}}",
			     "$.agent.files.web[0].path", "\"/\"");
	expect_recipes_error("{'agent': {'files': {'web': [{'path': '//', 'content': 'a'}]}}}",
			     "$.agent.files.web[0].path", "\"/\"");
	expect_recipes_error("{'agent': {'files': {'web': [{'path': '/etc/./motd', 'content': 'a'}]}}}",
			     "$.agent.files.web[0].path", "without \".\" components");
	/* Two layers this instance is in. */
	expect_recipes_error("{'opsworks': {'layers': {'web': {'instances': {'app1': {}}}, 'lb': {'instances': {"
			     " 'app1': {}}}}}, 'agent': {'files': {'web': [{'path': '/etc/motd', 'content': 'a'}],"
			     " 'lb': [{'path': '/etc/motd', 'content': 'b'}]}}}",
			     "$.agent.files.lb[0].path", "in both layers");
	/* Two layers no instance is in at once; names that share a prefix only. */
	expect_recipes_ok("{'opsworks': {'layers': {'web': {'instances': {'app1': {}}}, 'lb': {'instances': {"
			  " 'lb1': {}}}}}, 'agent': {'files': {'web': [{'path': '/etc/motd', 'content': 'a'},"
			  " {'path': '/etc/motd2', 'content': 'c'}, {'path': '/etc/motd-x/y', 'content': 'd'}],"
			  " 'lb': [{'path': '/etc/motd', 'content': 'b'}]}}}");
}

/* A file mode is an octal string (design.md §8): a JSON number is refused
 * with its path, never read as decimal (644 would be mode 01204). */
static void test_files_mode_is_an_octal_string(void **state)
{
	static const char *const bad[] = { "644", "420", "0", "'rw-r--r--'", "'0x1a4'", "' 644'", "'+644'",
					   "'-0'", "'0648'", "'06444'", "'64'", "''", "true", "6.44" };
	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		_cleanup_free_ char *d = xasprintf("{'agent': {'files': {'web': [{'path': '/etc/motd',"
						   " 'content': 'a', 'mode': %s}]}}}",
						   bad[i]);
		expect_recipes_error(d, "$.agent.files.web[0].mode", "must be an octal string like \"0644\"");
	}
	expect_recipes_error("{'agent': {'files': {'web': [{'path': '/etc/motd', 'content': 'a', 'mode': 644}]}}}",
			     "$.agent.files.web[0].mode", "not a number");
	expect_recipes_ok("{'agent': {'files': {'web': [{'path': '/etc/a', 'content': 'a', 'mode': '0644'},"
			  " {'path': '/etc/b', 'content': 'b', 'mode': '640'}, {'path': '/etc/c', 'content': 'c',"
			  " 'mode': '4755'}]}}}");
}

/* Data directories of different kinds are apart, in any spelling. */
static void test_data_dirs_apart(void **state)
{
	expect_recipes_error("{'plone_blobs': {'blob_dir': '/data/blobs'},"
			     " 'plone_zeoserver': {'filestorage_dir': '/data/blobs//fs/'}}",
			     "$.plone_zeoserver.filestorage_dir", "is inside plone_blobs.blob_dir");
	expect_recipes_error("{'plone_blobs': {'blob_dir': '/data/x/'}, 'plone_solr': {'data_dir': '/data//x'}}",
			     "$.plone_solr.data_dir", "is the same directory as plone_blobs.blob_dir");
	expect_recipes_error("{'plone_instances': {'filestorage_dir': '/data/fs/blobs'},"
			     " 'plone_blobs': {'blob_dir': '/data/fs'}}",
			     "$.plone_instances.filestorage_dir", "is inside plone_blobs.blob_dir");
	expect_recipes_error("{'deploy': {'a': {'deploy_to': '/data/fs/a'}}, 'plone_zeoserver': {'filestorage_dir': "
			     "'/data//fs/'}}",
			     "$.plone_zeoserver.filestorage_dir", "holds the deploy_to of app a");
	expect_recipes_error("{'deploy': {'a': {}}, 'plone_blobs': {'blob_dir': '/srv/www/a/'}}",
			     "$.plone_blobs.blob_dir", "is the deploy_to of app a");
	expect_recipes_ok("{'plone_blobs': {'blob_dir': '/data/blobs'}, 'plone_solr': {'data_dir': '/data/blobs2'},"
			  " 'plone_zeoserver': {'filestorage_dir': '/data/fs'},"
			  " 'plone_instances': {'filestorage_dir': '/data/fs/'}}");
}

/* Issue 9 kind 2 (break1): a deploy_to may not be, hold or lie inside a data
 * directory left at its default (ephemeral_mount_point /mnt in tests). Before:
 * only the directories the stack names were compared, and the undeploy of
 * deploy_to /mnt/shared deleted the default file storage's Data.fs. */
#define ZEO_AND_PI "'opsworks': {'layers': {'plone_instances': {'instances': {'app1': {}}}, 'zeoserver': {'instances': {'app1': {}}}}}"
static void test_data_dirs_defaults(void **state)
{
	expect_recipes_error("{" ZEO_AND_PI ", 'deploy': {'plone_instances': {'deploy_to': '/mnt/shared', 'user': 'root',"
			     " 'group': 'root'}, 'zeoserver': {}}}",
			     "$.deploy.plone_instances.deploy_to",
			     "/mnt/shared holds the file storage (plone_zeoserver.filestorage_dir, default) "
			     "(/mnt/shared/zodb/filestorage)");
	expect_recipes_error("{" ZEO_AND_PI ", 'deploy': {'zeoserver': {'deploy_to': '/mnt//shared/zodb/filestorage/x'}}}",
			     "$.deploy.zeoserver.deploy_to", "is inside the file storage");
	expect_recipes_error("{'opsworks': {'layers': {'shared_blobs': {'instances': {'app1': {}}}}},"
			     " 'deploy': {'plone_instances': {'deploy_to': '/srv/exports'}}}",
			     "$.deploy.plone_instances.deploy_to", "is the same directory as the NFS export");
	expect_recipes_error("{'deploy': {'x': {'deploy_to': '/mnt/shared'}}, 'plone_instances': {'gluster_blobs': true}}",
			     "$.deploy.x.deploy_to", "holds the shared blobs' mount point (/mnt/shared/blobs)");
	expect_recipes_error("{'opsworks': {'layers': {'solr': {'instances': {'app1': {}}}}},"
			     " 'deploy': {'x': {'deploy_to': '/mnt/shared/solr'}}}",
			     "$.deploy.x.deploy_to", "Solr's index (plone_solr.data_dir, default)");
	expect_recipes_error("{'agent': {'layers': {'b': {'configure': ['gluster']}}}, 'deploy': {'x': {'deploy_to': '/mnt/gluster-exports/brick/a'}}}",
			     "$.deploy.x.deploy_to", "is inside the GlusterFS brick");
	/* A data directory set inside an app's tree. */
	expect_recipes_error("{'deploy': {'a': {}}, 'plone_solr': {'data_dir': '/srv/www/a/solr'}}", "$.plone_solr.data_dir",
			     "is inside the deploy_to of app a");
	/* A set directory against a default of another kind. */
	expect_recipes_error("{" ZEO_AND_PI ", 'plone_blobs': {'blob_dir': '/mnt/shared/zodb'}}", "$.plone_blobs.blob_dir",
			     "holds the file storage");
	/* agentd's own directories (config defaults): state, logs, supervisor's. */
	expect_recipes_error("{'deploy': {'x': {'deploy_to': '/var/lib/agentd'}}}", "$.deploy.x.deploy_to",
			     "/var/lib/agentd is the same directory as agentd's state_dir");
	expect_recipes_error("{'deploy': {'x': {'deploy_to': '/var/log/supervisor/x'}}}", "$.deploy.x.deploy_to",
			     "is inside supervisor's logs");
	expect_recipes_error("{'agent': {'files': {'web': [{'path': '/var/lib/agentd/state.json', 'content': '{}'}]}}}",
			     "$.agent.files.web[0].path", "is inside agentd's state_dir");
	/* No recipe uses the default: nothing there to protect. */
	expect_recipes_ok("{'deploy': {'x': {'deploy_to': '/mnt/shared'}}}");
	expect_recipes_ok("{" ZEO_AND_PI ", 'deploy': {'plone_instances': {'deploy_to': '/mnt/sharedx'}, 'zeoserver': {}}}");
	/* The blobs may nest: the NFS export's blobstorage as blob_dir. */
	expect_recipes_ok("{'opsworks': {'layers': {'shared_blobs': {'instances': {'app1': {}}}}},"
			  " 'plone_blobs': {'blob_dir': '/srv/exports/blobstorage'}}");
}
#undef ZEO_AND_PI

/* Issue 9 kind 2 (break1 k2f): an agent.files path that a built-in recipe of
 * a layer on the same instance writes, or inside a tree agentd manages, is
 * refused. Before: accepted, and every configure wrote both contents. */
static void test_files_not_written_by_recipes(void **state)
{
	expect_recipes_error("{'opsworks': {'layers': {'shared_blobs': {'instances': {'app1': {}}}}},"
			     " 'agent': {'layers': {'shared_blobs': {'setup': ['files', 'nfs_blobs'],"
			     " 'configure': ['files', 'nfs_blobs']}},"
			     " 'files': {'shared_blobs': [{'path': '/etc/default//nfs-common', 'content': 'mine'}]}}}",
			     "$.agent.files.shared_blobs[0].path", "/etc/default/nfs-common is statd's ports");
	/* The default mapping of shared_blobs, the exports file, another layer of this instance. */
	expect_recipes_error("{'opsworks': {'layers': {'shared_blobs': {'instances': {'app1': {}}},"
			     " 'web': {'instances': {'app1': {}}}}},"
			     " 'agent': {'files': {'web': [{'path': '/etc/exports.d/agentd-blobs.exports', 'content': 'x'}]}}}",
			     "$.agent.files.web[0].path", "the exports file of recipe nfs_blobs");
	expect_recipes_error("{'opsworks': {'layers': {'lb': {'instances': {'app1': {}}}}},"
			     " 'agent': {'files': {'lb': [{'path': '/etc/haproxy/haproxy.cfg/', 'content': 'x'}]}}}",
			     "$.agent.files.lb[0].path", "haproxy's configuration");
	expect_recipes_error("{'opsworks': {'layers': {'lb': {'instances': {'app1': {}}}}},"
			     " 'agent': {'files': {'lb': [{'path': '/etc/varnish/default.vcl', 'content': 'x'}]}}}",
			     "$.agent.files.lb[0].path", "the VCL");
	expect_recipes_error("{'opsworks': {'layers': {'lb': {'instances': {'app1': {}}}}},"
			     " 'agent': {'files': {'lb': [{'path': '/etc/nginx/sites-enabled/instances', 'content': 'x'}]}}}",
			     "$.agent.files.lb[0].path", "nginx site link");
	expect_recipes_error("{'opsworks': {'layers': {'plone_instances': {'instances': {'app1': {}}}}},"
			     " 'deploy': {'plone_instances': {}},"
			     " 'agent': {'files': {'plone_instances': [{'path': '/etc/supervisor/conf.d/plone_instances-client1.conf',"
			     " 'content': 'x'}]}}}",
			     "$.agent.files.plone_instances[0].path", "the supervisor program file of app plone_instances");
	expect_recipes_error("{'opsworks': {'layers': {'zeoserver': {'instances': {'app1': {}}}}},"
			     " 'plone_zeoserver': {'nfs_blobs': true},"
			     " 'agent': {'files': {'zeoserver': [{'path': '/etc/fstab', 'content': 'x'}]}}}",
			     "$.agent.files.zeoserver[0].path", "fstab");
	/* Inside a tree agentd manages, whatever the layer. */
	expect_recipes_error("{'deploy': {'a': {}}, 'agent': {'files': {'web': [{'path': '/srv/www/a/current/deploy.cfg',"
			     " 'content': 'x'}]}}}",
			     "$.agent.files.web[0].path", "is inside the deploy_to of app a");
	expect_recipes_error("{'opsworks': {'layers': {'zeoserver': {'instances': {'z1': {}}}}},"
			     " 'agent': {'files': {'web': [{'path': '/mnt/shared/zodb/filestorage/Data.fs', 'content': 'x'}]}}}",
			     "$.agent.files.web[0].path", "is inside the file storage");
	expect_recipes_error("{'deploy': {'a': {}}, 'agent': {'files': {'web': [{'path': '/srv/www', 'content': 'x'}]}}}",
			     "$.agent.files.web[0].path", "holds the deploy_to of app a");
	/* A layer no instance shares with the writer's: allowed. */
	expect_recipes_ok("{'opsworks': {'layers': {'shared_blobs': {'instances': {'nfs1': {}}},"
			  " 'web': {'instances': {'app1': {}}}}},"
			  " 'agent': {'files': {'web': [{'path': '/etc/default/nfs-common', 'content': 'x'},"
			  " {'path': '/etc/haproxy/haproxy.cfg', 'content': 'x'}, {'path': '/srv/www2/x', 'content': 'x'}]}}}");
}

/* Issue 9 kind 2 (break1 k2c): one device, or one volume id, in agent.volumes
 * and ebs.devices, in any spelling, is refused. Before: compared by mount
 * point only, and two mounts of /dev/sdf were planned. */
static void test_volumes_one_device_once(void **state)
{
	expect_recipes_error("{'agent': {'volumes': {'app1': [{'volume_id': 'vol-0123456789abcdef0', 'device': '/dev/sdf',"
			     " 'mount_point': '/srv/data', 'fstype': 'xfs'}]}},"
			     " 'ebs': {'devices': {'/dev//sdf': {'mount_point': '/srv/other', 'fstype': 'xfs'}}}}",
			     "$.ebs.devices[\"/dev/sdf\"]", "device /dev/sdf is also the device of $.agent.volumes.app1[0]");
	/* The Xen name of the same device. */
	expect_recipes_error("{'agent': {'volumes': {'app1': [{'device': '/dev/xvdf', 'mount_point': '/srv/data'}]}},"
			     " 'ebs': {'devices': {'/dev/sdf/': {'mount_point': '/srv/other'}}}}",
			     "$.ebs.devices[\"/dev/sdf\"]", "/dev/xvdf");
	expect_recipes_error("{'agent': {'volumes': {'app1': [{'device': '/dev/xvdf', 'mount_point': '/srv/a'},"
			     " {'device': '/dev//sdf', 'mount_point': '/srv/b'}]}}}",
			     "$.agent.volumes.app1[1]", "one device cannot be mounted at two places");
	/* One volume id on two hosts. */
	expect_recipes_error("{'agent': {'volumes': {'app1': [{'volume_id': 'vol-0123456789abcdef1', 'device': '/dev/sdf', 'mount_point': '/srv/a'}],"
			     " 'app2': [{'volume_id': 'vol-0123456789abcdef1', 'device': '/dev/sdg', 'mount_point': '/srv/b'}]}}}",
			     "$.agent.volumes.app2[0]", "volume vol-0123456789abcdef1 is also $.agent.volumes.app1[0]");
	/* The one form the planner merges: the same device at the same mount point. */
	expect_recipes_ok("{'agent': {'volumes': {'app1': [{'device': '/dev/sdf', 'mount_point': '/srv/data'}]}},"
			  " 'ebs': {'devices': {'/dev//sdf': {'mount_point': '/srv/data/'}}}}");
	/* Other hosts may use the same device name. */
	expect_recipes_ok("{'agent': {'volumes': {'app1': [{'device': '/dev/sdf', 'mount_point': '/srv/a'}],"
			  " 'app2': [{'device': '/dev/sdf', 'mount_point': '/srv/b'}]}}}");
}

/* Issue 9 kind 2 (break1): a "." component is named as such, not as "..".
 * Before: "/etc/./motd" in agent.files was refused "without \"..\"". */
static void test_dot_component_messages(void **state)
{
	static const char *const docs[][2] = {
		{ "{'agent': {'files': {'web': [{'path': '/etc/./motd', 'content': 'a'}]}}}", "$.agent.files.web[0].path" },
		{ "{'plone_blobs': {'blob_dir': '/data/./blobs'}}", "$.plone_blobs.blob_dir" },
		{ "{'plone_solr': {'data_dir': '/data/.'}}", "$.plone_solr.data_dir" },
		{ "{'plone_zeoserver': {'filestorage_dir': '/./fs'}}", "$.plone_zeoserver.filestorage_dir" },
		{ "{'plone_instances': {'filestorage_dir': '/data/./fs'}}", "$.plone_instances.filestorage_dir" },
		{ "{'agent': {'recipes': {'r': {'command': ['/bin/true'], 'cwd': '/srv/./x'}}}}", "$.agent.recipes.r.cwd" },
		{ "{'agent': {'recipes': {'r': {'command': ['/usr/./bin/true']}}}}", "$.agent.recipes.r.command[0]" },
	};
	struct stack_error err;

	for (size_t i = 0; i < ELEMENTSOF(docs); i++) {
		struct stack *s = NULL;
		int r = parse_sq(docs[i][0], "app1", &s, &err);

		if (r == 0) {
			r = recipes_validate(s, &err);
			stack_unref(s);
		}
		if (r != -EINVAL || strcmp(err.path, docs[i][1]) != 0)
			fail_msg("case %zu: %d at %s: %s", i, r, err.path, err.message);
		if (!strstr(err.message, "without \".\" components") || strstr(err.message, "\"..\""))
			fail_msg("case %zu: %s", i, err.message);
	}
	/* And ".." is named as "..". */
	expect_recipes_error("{'agent': {'files': {'web': [{'path': '/etc/../motd', 'content': 'a'}]}}}",
			     "$.agent.files.web[0].path", "without \"..\" components");
	expect_recipes_error("{'agent': {'files': {'web': [{'path': 'etc/motd', 'content': 'a'}]}}}",
			     "$.agent.files.web[0].path", "starting with \"/\"");
}

/* Issue 9 kind 7: a document's elements and depth are bounded before a tree is built. */
static void test_element_and_depth_bounds(void **state)
{
	size_t n = 16u << 20, len;
	char *d = xmalloc(n);
	struct stack_error err;
	struct stack *s = NULL;

	/* The document: 16 MiB of small integers. */
	len = (size_t)snprintf(d, n, "{\"x\": [");
	while (len + 4 < n) {
		d[len++] = '1';
		d[len++] = ',';
	}
	d[len - 1] = ']';
	d[len++] = '}';
	assert_true(len <= STACK_MAX_BYTES);
	assert_int_equal(stack_parse(d, len, "h", &s, &err), -E2BIG);
	assert_null(s);
	assert_string_equal(err.path, "$");
	assert_non_null(strstr(err.message, "more than 200000 elements"));

	/* Just at the limit: {"x": [1,...]} is 3 + (STACK_MAX_ELEMENTS - 3) elements. */
	len = (size_t)snprintf(d, n, "{\"x\": [");
	for (int i = 0; i < STACK_MAX_ELEMENTS - 3; i++) {
		d[len++] = '1';
		d[len++] = ',';
	}
	d[len - 1] = ']';
	d[len++] = '}';
	assert_int_equal(stack_parse(d, len, "h", &s, &err), 0);
	stack_unref(s);
	s = NULL;

	/* Depth: 64 levels pass, 65 do not. */
	for (int depth = STACK_MAX_DEPTH; depth <= STACK_MAX_DEPTH + 1; depth++) {
		len = (size_t)snprintf(d, n, "{\"x\": ");
		for (int i = 1; i < depth; i++)
			d[len++] = '[';
		for (int i = 1; i < depth; i++)
			d[len++] = ']';
		d[len++] = '}';
		if (depth == STACK_MAX_DEPTH) {
			assert_int_equal(stack_parse(d, len, "h", &s, &err), 0);
			stack_unref(s);
			s = NULL;
		} else {
			assert_int_equal(stack_parse(d, len, "h", &s, &err), -E2BIG);
			assert_non_null(strstr(err.message, "deeper than 64 levels"));
		}
	}
	/* Brackets, commas and colons inside strings are not structure. */
	len = (size_t)snprintf(d, n, "{\"x\": \"");
	while (len + 3 < n / 2)
		d[len++] = '[';
	d[len++] = '"';
	d[len++] = '}';
	assert_int_equal(stack_parse(d, len, "h", &s, &err), 0);
	stack_unref(s);
	free(d);
}

/* Issue 10: the validate hook is the family's, run once per document
 * however many recipes the family has (front's ran four times, once per
 * recipe that carried it). */
static unsigned count_calls;

static int count_validate(const struct stack *s, struct stack_error *err)
{
	count_calls++;
	return 0;
}

static int refuse_validate(const struct stack *s, struct stack_error *err)
{
	return stack_error_set(err, "$.x", "refused");
}

static void test_family_validate_once(void **state)
{
	static const struct recipe many[] = {
		{ "a", NULL }, { "b", NULL }, { "c", NULL }, { "d", NULL }, { NULL, NULL },
	};
	static const struct recipe_family counting = { .name = "counting", .recipes = many, .validate = count_validate };
	static const struct recipe_family none = { .name = "none", .recipes = many };
	static const struct recipe_family refusing = { .name = "refusing", .recipes = many,
						       .validate = refuse_validate };
	const struct recipe_family *const two[] = { &counting, &none, &counting };
	const struct recipe_family *const stop[] = { &refusing, &counting };
	struct stack *s = parse_ok(base_doc, "app1");
	struct stack_error err;

	count_calls = 0;
	assert_int_equal(recipes_validate_families(two, 3, s, &err), 0);
	assert_int_equal(count_calls, 2);
	/* The first refusal ends validation. */
	count_calls = 0;
	assert_int_equal(recipes_validate_families(stop, 2, s, &err), -EINVAL);
	assert_string_equal(err.path, "$.x");
	assert_int_equal(count_calls, 0);
	stack_unref(s);
}

/* stack_parse() checks the document's own shape; recipes_stack_load() adds
 * the registry's validation (agent.*, ebs, the families' hooks). */
static void test_stack_load_validates_recipes(void **state)
{
	char *d = sq("{'agent': {'layers': {'web': {'setup': ['no-such-recipe']}}}}");
	struct stack_error err;
	struct stack *s = NULL;

	assert_int_equal(stack_parse(d, strlen(d), "h", &s, &err), 0);
	stack_unref(s);
	s = (struct stack *)0x1;
	assert_int_equal(recipes_stack_load(d, strlen(d), "h", &s, &err), -EINVAL);
	assert_null(s);
	assert_string_equal(err.path, "$.agent.layers.web.setup[0]");
	assert_string_equal(err.message, "unknown recipe \"no-such-recipe\"");
	free(d);
	d = sq("{'deploy': {'a': {'user': 7}}}");
	assert_int_equal(recipes_stack_load(d, strlen(d), "h", &s, &err), -EINVAL);
	assert_string_equal(err.path, "$.deploy.a.user");
	free(d);
	assert_int_equal(recipes_stack_load("{}", 2, "h", &s, NULL), 0);
	stack_unref(s);
}


/* Identity (design.md §3): an FQDN host name that no layer lists is found
 * by its first label, as OpsWorks hostnames are short; the full name wins
 * when a layer lists it, opsworks.instance.hostname wins over both, and a
 * name found nowhere gives no layer. */
static void test_identity_first_label(void **state)
{
	static const char doc[] = "{'opsworks': {'layers': {"
				  "'web': {'instances': {'web1': {'status': 'online'}}},"
				  "'db': {'instances': {'db1.example.com': {'status': 'online'}, 'db1': {'status': 'online'}}}}}}";
	static const struct {
		const char *host, *instance, *layer;
	} cases[] = {
		{ "web1.eu-west-1.compute.internal", "web1", "web" },
		{ "web1.example", "web1", "web" },
		{ "web1", "web1", "web" },
		{ "db1.example.com", "db1.example.com", "db" },   /* the full name first */
		{ "db1.other.net", "db1", "db" },
		{ "web2.eu-west-1.compute.internal", "web2.eu-west-1.compute.internal", NULL },
		{ ".web1", ".web1", NULL },
	};
	struct stack_error err = { 0 };
	struct stack *s;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(parse_sq(doc, cases[i].host, &s, &err), 0);
		assert_string_equal(s->instance, cases[i].instance);
		if (cases[i].layer) {
			assert_int_equal(s->n_self_layers, 1);
			assert_string_equal(s->self_layers[0], cases[i].layer);
			assert_non_null(s->self);
		} else
			assert_int_equal(s->n_self_layers, 0);
		stack_unref(s);
	}
	/* opsworks.instance names the instance: no fallback. */
	assert_int_equal(parse_sq("{'opsworks': {'instance': {'hostname': 'web1.x'},"
				  "'layers': {'web': {'instances': {'web1': {}}}}}}",
				  "web1", &s, &err), 0);
	assert_string_equal(s->instance, "web1.x");
	assert_int_equal(s->n_self_layers, 0);
	stack_unref(s);
}


/* agentd.conf's `layers` makes the instance's layers whatever the members
 * say; the identity of two models compares name and layer set. */
static void test_assign_layers_and_identity(void **state)
{
	static const char doc[] = "{'opsworks': {'layers': {'web': {'instances': {'app1': {}}}, 'db': {'instances': {}}}}}";
	static const char *const db[] = { "db", "extra", "db", NULL };
	static const char *const none[] = { NULL };
	struct stack_error err = { 0 };
	struct stack *a, *b;

	assert_int_equal(parse_sq(doc, "app1", &a, &err), 0);
	assert_int_equal(parse_sq(doc, "app1", &b, &err), 0);
	assert_true(stack_same_identity(a, b));
	stack_assign_layers(b, db);
	assert_int_equal(b->n_self_layers, 2);
	assert_string_equal(b->self_layers[0], "db");
	assert_string_equal(b->self_layers[1], "extra");
	assert_true(stack_has_self_layer(b, "db") && !stack_has_self_layer(b, "web"));
	assert_true(stack_layer_find(b, "db")->has_self && !stack_layer_find(b, "web")->has_self);
	assert_false(stack_same_identity(a, b));
	stack_assign_layers(b, none);
	assert_int_equal(b->n_self_layers, 0);
	assert_false(stack_same_identity(a, b));
	stack_unref(b);
	assert_int_equal(parse_sq(doc, "app2", &b, &err), 0);
	assert_false(stack_same_identity(a, b));
	stack_unref(a);
	stack_unref(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_model),
		cmocka_unit_test(test_parse_app_fields),
		cmocka_unit_test(test_self_from_membership),
		cmocka_unit_test(test_self_from_opsworks_instance),
		cmocka_unit_test(test_syntax_error),
		cmocka_unit_test(test_too_big),
		cmocka_unit_test(test_wrong_types),
		cmocka_unit_test(test_secret_not_echoed),
		cmocka_unit_test(test_bad_paths),
		cmocka_unit_test(test_bad_names),
		cmocka_unit_test(test_agent_layers),
		cmocka_unit_test(test_custom_recipes),
		cmocka_unit_test(test_syntax_error_does_not_quote_input),
		cmocka_unit_test(test_volumes),
		cmocka_unit_test(test_revision_and_dump),
		cmocka_unit_test(test_diff_first_start),
		cmocka_unit_test(test_diff_identical),
		cmocka_unit_test(test_diff_membership),
		cmocka_unit_test(test_diff_opsworks_instance),
		cmocka_unit_test(test_diff_layer_added),
		cmocka_unit_test(test_diff_layer_removed),
		cmocka_unit_test(test_diff_deploy),
		cmocka_unit_test(test_diff_custom_json),
		cmocka_unit_test(test_deploy_to_and_addresses_are_checked),
		cmocka_unit_test(test_paths_one_spelling),
		cmocka_unit_test(test_paths_no_duplicates),
		cmocka_unit_test(test_files_no_duplicates),
		cmocka_unit_test(test_data_dirs_apart),
		cmocka_unit_test(test_data_dirs_defaults),
		cmocka_unit_test(test_files_not_written_by_recipes),
		cmocka_unit_test(test_volumes_one_device_once),
		cmocka_unit_test(test_dot_component_messages),
		cmocka_unit_test(test_element_and_depth_bounds),
		cmocka_unit_test(test_family_validate_once),
		cmocka_unit_test(test_stack_load_validates_recipes),
		cmocka_unit_test(test_files_mode_is_an_octal_string),
		cmocka_unit_test(test_identity_first_label),
		cmocka_unit_test(test_assign_layers_and_identity),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* deploy.cfg rendering (reference §3 buildout_configure step 5, §4.1, §7)
 * and the services of an app. Pure functions of the stack. */
#include <string.h>

#include "apps.h"
#include "plone.h"
#include "stack/stack.h"

const char *apps_section_name(enum app_kind k)
{
	static const char *const n[] = { "plone_instances", "plone_zeoserver", "plone_solr" };
	return n[k];
}

const char *apps_app_name(const struct stack *s, enum app_kind k)
{
	static const char *const def[] = { "plone_instances", "zeoserver", "solr" };
	const json_t *v = json_object_get(plone_section(s, apps_section_name(k)), "app_name");
	return json_is_string(v) ? json_string_value(v) : def[k];
}

static const json_t *sect(const struct stack *s, enum app_kind k, const char *key)
{
	return json_object_get(plone_section(s, apps_section_name(k)), key);
}

static bool sect_bool(const struct stack *s, enum app_kind k, const char *key, bool def)
{
	const json_t *v = sect(s, k, key);
	return json_is_boolean(v) ? json_is_true(v) : def;
}

static const char *sect_string(const struct stack *s, enum app_kind k, const char *key, const char *def)
{
	const json_t *v = sect(s, k, key);
	return json_is_string(v) ? json_string_value(v) : def;
}

static bool env_key_dropped(const char *k, bool for_zope)
{
	static const char *const always[] = { "RUBY", "RAILS", "RACK" };
	for (size_t i = 0; i < ELEMENTSOF(always); i++)
		if (strncmp(k, always[i], strlen(always[i])) == 0)
			return true;
	return for_zope && (strncmp(k, "TMP", 3) == 0 || strncmp(k, "TEMP", 4) == 0);
}

static int key_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted keys of an object (malloc'd array of borrowed strings). */
static const char **sorted_keys(const json_t *o, size_t *ret_n)
{
	const char **keys = xcalloc(json_object_size(o) + 1, sizeof(char *));
	const char *k;
	json_t *v;
	size_t n = 0;

	json_object_foreach((json_t *)o, k, v)
		keys[n++] = k;
	qsort(keys, n, sizeof(char *), key_cmp);
	*ret_n = n;
	return keys;
}

json_t *apps_environment(const struct stack_app *app, const char *host_deploy_to)
{
	const json_t *env = json_object_get(app->json, "environment");
	json_t *r = json_object();
	_cleanup_free_ const char **keys = NULL;
	size_t n;

	keys = sorted_keys(env, &n);
	for (size_t i = 0; i < n; i++)
		if (!env_key_dropped(keys[i], false))
			json_object_set(r, keys[i], json_object_get(env, keys[i]));
	json_object_set_new(r, "PYTHON_EGG_CACHE", json_sprintf("%s/shared/eggs", host_deploy_to));
	return r;
}

/* "<address>" of the first online-or-self member of layer, or NULL. */
static const char *discover(const struct stack *s, const char *layer)
{
	const struct stack_member *m = plone_first_online_or_self(s, layer);
	return m ? plone_member_address(m) : NULL;
}

/* The celery broker's host (reference §4.1 item 6): broker.host, or the
 * first online-or-self member of broker_layer (celery_broker); NULL
 * without enable_celery or a host. */
static const char *celery_broker_host(const struct stack *s)
{
	const json_t *pi = plone_section(s, "plone_instances");
	const char *host = json_string_value(json_object_get(json_object_get(pi, "broker"), "host"));
	const char *layer = json_string_value(json_object_get(pi, "broker_layer"));

	if (!json_is_true(json_object_get(pi, "enable_celery")))
		return NULL;
	return host ? host : discover(s, layer ? layer : "celery_broker");
}

static void render_list(struct buf *b, const char *head, const json_t *list, const char *const *first)
{
	size_t i, n = 0;
	json_t *v;

	for (const char *const *f = first; f && *f; f++)
		n++;
	if (n + json_array_size(list) == 0)
		return;
	buf_printf(b, "%s\n", head);
	for (const char *const *f = first; f && *f; f++)
		buf_printf(b, "    %s\n", *f);
	json_array_foreach((json_t *)list, i, v)
		buf_printf(b, "    %s\n", json_string_value(v));
}

/* RelStorage (reference §4.1): the [relstorage] and [memcached] sections,
 * the driver egg of the adapter, and the pack parts. */
static void render_relstorage(struct buf *b, const struct stack *s, const struct stack_app *app, const json_t *pi,
			      struct buf *parts, struct buf *extends, struct buf *eggs)
{
	const json_t *rs = json_object_get(pi, "relstorage");
	const json_t *db = json_object_get(rs, "db");
	const json_t *appdb = json_object_get(app->json, "database");
	const json_t *src = json_object_get(db, "name") || !appdb ? db : appdb;
	const char *adapter = json_string_value(json_object_get(src, "adapter"));
	const json_t *dsn = json_object_get(db, "dsn");
	const json_t *cache = json_object_get(rs, "enable_cache");

	buf_puts(extends, "cfg/relstorage.cfg\n");
	if (!adapter || strncmp(adapter, "postgres", 8) == 0)
		buf_puts(eggs, "psycopg2\n");
	else if (strcmp(adapter, "mysql") == 0)
		buf_puts(eggs, "MySQL-python\n");
	else if (strcmp(adapter, "oracle") == 0)
		buf_puts(eggs, "cx_Oracle\n");
	buf_puts(b, "[relstorage]\n");
	if (json_is_string(dsn))
		buf_printf(b, "db-type = %s\ndsn = %s\n", adapter ? adapter : "postgresql", json_string_value(dsn));
	else {
		const char *dbname = json_string_value(json_object_get(src, src == appdb ? "database" : "name"));
		const char *host = json_string_value(json_object_get(src, "host"));
		const char *user = json_string_value(json_object_get(src, src == appdb ? "username" : "user"));
		const char *pw = json_string_value(json_object_get(src, "password"));
		buf_printf(b, "dbname = %s\nhost = %s\nuser = %s\npassword = %s\n", dbname ? dbname : "",
			   host ? host : "", user ? user : "", pw ? pw : "");
	}
	if (!json_is_false(cache)) {
		const json_t *servers = json_object_get(rs, "cache_servers");
		const struct stack_layer *ml = stack_layer_find(s, "memcached");
		buf_puts(eggs, "pylibmc\n");
		buf_puts(b, "\n[memcached]\nservers =");
		if (json_is_string(servers))
			buf_printf(b, " %s", json_string_value(servers));
		else
			for (size_t i = 0; ml && i < ml->n_members; i++)
				if (ml->members[i].online || ml->members[i].self)
					buf_printf(b, " %s:11211", plone_member_address(&ml->members[i]));
		buf_puts(b, "\n");
	}
	buf_puts(b, "\n");
	if (plone_relstorage_packs(s)) {
		/* Packing (reference §4.1 item 3): the parts after the clients.
		 * pack-config writes parts/zodbpack.cfg; the cron parts zodbpack,
		 * zodbpack-prepack and zodbpack-pack are left out: agentd runs
		 * bin/zodbpack as its maintenance jobs (recipes/zodb.c), once per
		 * stack, so nothing runs twice. */
		const json_t *days = json_object_get(rs, "pack_days");
		buf_puts(parts, "pack-config\n");
		if (json_is_integer(days))
			buf_printf(b, "[zodbpack]\npack-days = %lld\n\n", (long long)json_integer_value(days));
		if (json_is_false(json_object_get(rs, "pack_gc")))
			buf_puts(b, "[pack-config]\nenable-gc = false\n\n");
		else if (json_is_true(json_object_get(rs, "truncate_refs")))
			buf_puts(parts, "zodb-clear-refs\n");
	}
}

/* Clients: client1 carries the settings, the others inherit them. */
static void render_clients(struct buf *b, const struct stack *s, const struct stack_app *app,
			   const char *host_deploy_to, const json_t *pi, long n)
{
	const json_t *blobs = plone_section(s, "plone_blobs");
	json_auto_t *env = apps_environment(app, host_deploy_to);
	_cleanup_free_ const char **keys = NULL;
	size_t nk;
	bool shared = json_is_true(json_object_get(pi, "shared_blobs")) ||
		      json_is_true(json_object_get(pi, "nfs_blobs")) ||
		      json_is_true(json_object_get(pi, "gluster_blobs"));
	const char *blob_dir = json_string_value(json_object_get(blobs, "blob_dir"));
	bool persistent = json_is_true(json_object_get(pi, "persistent_cache"));
	const json_t *cache_size = json_object_get(pi, "zodb_cache_size");
	const json_t *threads = json_object_get(pi, "zserver_threads");

	buf_puts(b, "[client1]\n");
	if (!shared && json_object_get(pi, "shared_blobs"))
		buf_puts(b, "shared-blob = off\n");
	if (blob_dir)
		buf_printf(b, "blob-storage = %s\n", blob_dir);
	if (persistent)
		buf_puts(b, "zeo-client-client = zeoclient-1\n");
	if (json_is_integer(cache_size))
		buf_printf(b, "zodb-cache-size = %lld\n", (long long)json_integer_value(cache_size));
	if (json_is_integer(threads))
		buf_printf(b, "zserver-threads = %lld\n", (long long)json_integer_value(threads));
	buf_puts(b, "http-fast-listen = off\n");
	keys = sorted_keys(env, &nk);
	buf_puts(b, "environment-vars +=\n");
	for (size_t i = 0; i < nk; i++)
		if (!env_key_dropped(keys[i], true))
			buf_printf(b, "    %s %s\n", keys[i], json_string_value(json_object_get(env, keys[i])));
	for (long i = 2; i <= n; i++) {
		buf_printf(b, "\n[client%ld]\n<= client1\nhttp-address = %ld\n", i, PLONE_CLIENT_PORT_BASE + i);
		if (persistent)
			buf_printf(b, "zeo-client-client = zeoclient-%ld\n", i);
	}
}

static void render_instances(struct buf *b, const struct stack *s, const struct stack_app *app,
			     const char *host_deploy_to, struct buf *parts, struct buf *extends, struct buf *eggs)
{
	const json_t *pi = plone_section(s, "plone_instances");
	long n = plone_client_count(s, NULL);
	bool relstorage = json_is_true(json_object_get(pi, "enable_relstorage"));

	if (relstorage) {
		render_relstorage(b, s, app, pi, parts, extends, eggs);
	} else {
		const json_t *zeo = json_object_get(pi, "zeo");
		const char *addr = json_string_value(json_object_get(zeo, "address"));
		const char *layer = json_string_value(json_object_get(pi, "zeo_layer"));
		const char *host = addr ? NULL : discover(s, layer ? layer : "zeoserver");

		if (addr || host) {
			if (addr)
				buf_printf(b, "[zeo-host]\naddress = %s\n", addr);
			else
				buf_printf(b, "[zeo-host]\naddress = %s:8001\n", host);
			buf_puts(b, "\n[zeoserver]\naddress = ${zeo-host:address}\n\n");
		}
	}
	if (json_is_true(json_object_get(pi, "solr_enabled"))) {
		const char *host = json_string_value(json_object_get(pi, "solr_host"));
		const char *layer = json_string_value(json_object_get(pi, "solr_layer"));
		if (!host)
			host = discover(s, layer ? layer : "solr");
		if (host)
			buf_printf(b, "[solr-host]\nhost = %s\n\n", host);
	}
	{
		const json_t *port = json_object_get(json_object_get(pi, "broker"), "port");
		long p = json_is_integer(port) ? (long)json_integer_value(port) : 6379;
		const char *host = celery_broker_host(s);
		if (host) {
			buf_puts(parts, "celery\n");
			buf_printf(b, "[celery-broker]\nhost = %s\nport = %ld\n\n[celery]\nbroker-host = %s\nbroker-port = %ld\n\n",
				   host, p, host, p);
		}
	}

	render_clients(b, s, app, host_deploy_to, pi, n);
}

char *apps_render_deploy_cfg(const struct stack *s, enum app_kind k, const struct stack_app *app,
			     const char *host_deploy_to)
{
	struct buf out, sections, parts, extends, eggs;
	const json_t *json_parts = json_object_get(app->json, "buildout_parts_to_include");
	const json_t *json_extends = json_object_get(app->json, "buildout_extends");
	const json_t *additional = json_object_get(app->json, "buildout_additional_config");
	const json_t *inherit = json_object_get(app->json, "buildout_inherit_parts");

	buf_init(&out);
	buf_init(&sections);
	buf_init(&parts);
	buf_init(&extends);
	buf_init(&eggs);
	buf_puts(&extends, "cfg/base.cfg\n");
	if (k == APP_INSTANCES) {
		long n = plone_client_count(s, NULL);
		struct buf tmp;

		buf_init(&tmp);
		for (long i = 1; i <= n; i++)
			buf_printf(&parts, "client%ld\n", i);
		render_instances(&tmp, s, app, host_deploy_to, &parts, &extends, &eggs);
		buf_puts(&sections, tmp.data ? tmp.data : "");
		buf_free(&tmp);
	} else if (k == APP_ZEOSERVER) {
		const char *blob_dir = json_string_value(json_object_get(plone_section(s, "plone_blobs"), "blob_dir"));
		/* backup makes bin/backup; the cron parts backupcronjob and
		 * packcronjob are left out: agentd runs bin/backup and bin/zeopack
		 * as its maintenance jobs backup and zeopack (recipes/zodb.c,
		 * enable_backup and enable_pack), so nothing runs twice. */
		buf_puts(&parts, "zeoserver\nbackup\n");
		if (blob_dir)
			buf_printf(&sections, "[zeoserver]\nblob-storage = %s\n", blob_dir);
	} else {
		const struct stack_member *self = plone_self_member(s, sect_string(s, k, "layer", "solr"));
		buf_puts(&parts, "solr-download\nsolr-instance\n");
		buf_printf(&sections, "[solr-host]\nhost = %s\n", self ? plone_member_address(self) : "127.0.0.1");
	}

	buf_puts(&out, "# Written by agentd: changes here are overwritten.\n[buildout]\n"
		       "extends-cache = extends\nunzip = true\nextends =\n");
	for (char *line = extends.data, *nl; line && *line; line = nl + 1) {
		nl = strchr(line, '\n');
		buf_printf(&out, "    %.*s\n", (int)(nl - line), line);
	}
	{
		size_t i;
		json_t *v;
		json_array_foreach((json_t *)json_extends, i, v)
			buf_printf(&out, "    %s\n", json_string_value(v));
	}
	{
		/* parts: the kind's own, then the JSON ones. */
		size_t np = 0;
		const char *lines[PLONE_CLIENTS_MAX + 16];
		for (char *line = parts.data, *nl; line && *line && np < ELEMENTSOF(lines) - 1; line = nl + 1) {
			nl = strchr(line, '\n');
			*nl = '\0';
			lines[np++] = line;
		}
		lines[np] = NULL;
		render_list(&out, json_is_false(inherit) ? "parts =" : "parts +=", json_parts, lines);
	}
	if (eggs.len) {
		buf_puts(&out, "eggs +=\n");
		for (char *line = eggs.data, *nl; line && *line; line = nl + 1) {
			nl = strchr(line, '\n');
			buf_printf(&out, "    %.*s\n", (int)(nl - line), line);
		}
	}
	buf_puts(&out, "\n");
	if (json_is_string(additional) && json_string_length(additional)) {
		buf_puts(&out, json_string_value(additional));
		buf_puts(&out, "\n\n");
	}
	buf_puts(&out, sections.data ? sections.data : "");
	buf_free(&sections);
	buf_free(&parts);
	buf_free(&extends);
	buf_free(&eggs);
	return buf_steal(&out);
}

static void add_service(struct app_services *sv, const char *app, const char *name, const char *command, long delay)
{
	struct app_service *s;

	sv->v = xrealloc(sv->v, (sv->n + 1) * sizeof(*sv->v));
	s = &sv->v[sv->n++];
	s->name = strcmp(name, app) == 0 ? xstrdup(app) : xasprintf("%s-%s", app, name);
	s->command = xstrdup(command);
	s->delay = delay;
}

void apps_services(const struct stack *s, enum app_kind k, const struct stack_app *app, struct app_services *ret)
{
	const json_t *cmds = json_object_get(app->json, "buildout_init_commands");
	const json_t *delay = sect(s, k, "restart_delay");
	long d = json_is_integer(delay) ? (long)json_integer_value(delay) : 0;
	size_t i;
	json_t *c;

	ret->v = NULL;
	ret->n = 0;
	json_array_foreach((json_t *)cmds, i, c) {
		const char *name = json_string_value(json_object_get(c, "name"));
		const char *cmd = json_string_value(json_object_get(c, "cmd"));
		const char *args = json_string_value(json_object_get(c, "args"));
		const json_t *dl = json_object_get(c, "delay");
		_cleanup_free_ char *line = args && *args ? xasprintf("%s %s", cmd, args) : xstrdup(cmd);
		add_service(ret, app->name, name, line, json_is_integer(dl) ? (long)json_integer_value(dl) : 0);
	}
	if (k == APP_INSTANCES) {
		long n = plone_client_count(s, NULL);
		for (long j = 1; j <= n; j++) {
			char name[32], cmd[64];
			(void)snprintf(name, sizeof(name), "client%ld", j);
			(void)snprintf(cmd, sizeof(cmd), "bin/client%ld console", j);
			add_service(ret, app->name, name, cmd, d);
		}
		/* Celery with its broker (reference §4.1 items 6 and 10): the
		 * worker, and with celerybeat the scheduler. */
		if (celery_broker_host(s)) {
			const char *wa = sect_string(s, k, "celery_args", "");
			const char *ba = sect_string(s, k, "beat_args", "");
			_cleanup_free_ char *worker = *wa ? xasprintf("bin/celery worker %s", wa) : xstrdup("bin/celery worker");
			add_service(ret, app->name, "celery", worker, 0);
			if (sect_bool(s, k, "celerybeat", false)) {
				_cleanup_free_ char *beat = *ba ? xasprintf("bin/celery beat %s", ba) : xstrdup("bin/celery beat");
				add_service(ret, app->name, "celerybeat", beat, 0);
			}
		}
	} else if (k == APP_ZEOSERVER)
		add_service(ret, app->name, "zeoserver", "bin/zeoserver fg", d);
	else
		add_service(ret, app->name, "solr", "bin/solr-instance fg", d);
}

void apps_services_free(struct app_services *sv)
{
	for (size_t i = 0; i < sv->n; i++) {
		free(sv->v[i].name);
		free(sv->v[i].command);
	}
	free(sv->v);
	sv->v = NULL;
	sv->n = 0;
}

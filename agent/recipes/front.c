/* SPDX-License-Identifier: BSD-2-Clause */
/* Front end (reference §8, issue 5): haproxy, varnish, nginx,
 * varnish-restart, varnish-purge. The configs are rendered from the live
 * membership of the app layer (plone_instances), checked with the real
 * binary before they replace the running ones (steps/step_checked_file.h,
 * steps/step_vcl.h), and reloaded
 * gracefully only when they changed. See doc/front.md. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "front.h"
#include "steps/step_checked_file.h"
#include "steps/step_vcl.h"
#include "plone.h"
#include "recipe.h"
#include "config.h"
#include "steps/plan.h"
#include "stack/stack.h"
#include "util.h"

#define FRONT_APP_LAYER "plone_instances"
#define FRONT_VCL_PREFIX "agentd_"
#define FRONT_PURGE_URLS_MAX 100

/* --- reading the stack (validated before, so types hold) --- */

static const json_t *front_get(const struct stack *s, const char *section, const char *key)
{
	return json_object_get(plone_section(s, section), key);
}

static const char *front_str(const struct stack *s, const char *section, const char *key, const char *def)
{
	const json_t *v = front_get(s, section, key);

	return json_is_string(v) ? json_string_value(v) : def;
}

static bool front_bool(const struct stack *s, const char *section, const char *key, bool def)
{
	const json_t *v = front_get(s, section, key);

	return json_is_boolean(v) ? json_is_true(v) : def;
}

static long front_long(const struct stack *s, const char *section, const char *key, long def)
{
	const json_t *v = front_get(s, section, key);

	return json_is_integer(v) ? (long)json_integer_value(v) : def;
}

void front_settings_get(const struct stack *s, struct front_settings *ret)
{
	ret->health_check_method = front_str(s, "haproxy", "health_check_method", "OPTIONS");
	ret->health_check_url = front_str(s, "haproxy", "health_check_url", "/");
	ret->enable_stats = front_bool(s, "haproxy", "enable_stats", false);
	ret->stats_url = front_str(s, "haproxy", "stats_url", "/haproxy?stats");
	ret->stats_user = front_str(s, "haproxy", "stats_user", "opsworks");
	ret->stats_password = front_str(s, "haproxy", "stats_password", NULL);
	ret->sticky_sessions = front_bool(s, FRONT_APP_LAYER, "sticky_sessions", false);
	ret->zserver_threads = front_long(s, FRONT_APP_LAYER, "zserver_threads", 2);
	ret->site_id = front_str(s, FRONT_APP_LAYER, "site_id", "Plone");
	ret->subsites = front_get(s, FRONT_APP_LAYER, "subsites");
}

/* --- validation --- */

/* A URL path as it may appear unquoted in haproxy.cfg, VCL and nginx:
 * starts with '/', only RFC 3986 path/query characters, no whitespace,
 * quotes, backslash, '#', ';', '{', '}' or '$'. */
static bool url_path_ok(const char *u)
{
	if (!u || u[0] != '/' || strlen(u) > 1024)
		return false;
	for (const char *p = u; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
			continue;
		if (!strchr("-._~/?&=%+,:@!*()", c))
			return false;
	}
	return true;
}

static bool charset_ok(const char *s, const char *extra, size_t max)
{
	if (!s || !*s || strlen(s) > max)
		return false;
	for (const char *p = s; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
			continue;
		if (!strchr(extra, c))
			return false;
	}
	return true;
}

static bool method_ok(const char *m)
{
	if (!m || !*m || strlen(m) > 32)
		return false;
	for (const char *p = m; *p; p++)
		if (*p < 'A' || *p > 'Z')
			return false;
	return true;
}

bool front_hostname_ok(const char *h)
{
	return charset_ok(h, "-.", 253) && h[0] != '-' && h[0] != '.';
}

/* An address of a member: an IPv4 or IPv6 literal or a DNS name. */
static bool address_ok(const char *a)
{
	return charset_ok(a, "-.:", 253) && a[0] != '-' && a[0] != '.';
}

static bool stats_user_ok(const char *s)
{
	return charset_ok(s, "-._", 64);
}

/* No whitespace, quotes, backslash, '#', '$' or ':' (user:password). */
static bool stats_password_ok(const char *s)
{
	return charset_ok(s, "-._~!%^*+=,/@?&()[]", 128);
}

static bool site_path_ok(const char *s)
{
	/* A Zope path: names separated by '/', optional leading '/'. */
	if (!s || !*s || strlen(s) > 512 || strstr(s, ".."))
		return false;
	return charset_ok(s, "-._/", 512);
}

static bool site_id_ok(const char *s)
{
	return name_is_valid(s) && charset_ok(s, "-._", 255);
}

static bool purge_re_ok(const char *s)
{
	if (!s || !*s || strlen(s) > 1024)
		return false;
	/* varnishd splits a ban argument again at spaces and quotes, so an
	 * expression with them cannot be passed whole; URLs have neither. */
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '"')
			return false;
	return true;
}

/* haproxy: the front end's own section. */
static int front_validate_haproxy(const json_t *hap, struct stack_error *err)
{
	static const char url_msg[] =
		"must be a URL path starting with \"/\" without spaces, quotes, '#', ';' or control characters";
	int r;

	if (!json_is_object(hap))
		return stack_error_set(err, "$.haproxy", "must be an object");
	if ((r = check_string_ok(err, "$.haproxy", hap, "health_check_url", url_path_ok, url_msg)) < 0 ||
	    (r = check_string_ok(err, "$.haproxy", hap, "stats_url", url_path_ok, url_msg)) < 0 ||
	    (r = check_string_ok(err, "$.haproxy", hap, "health_check_method", method_ok,
				 "must be an HTTP method in capital letters, like \"OPTIONS\" or \"HEAD\"")) < 0 ||
	    (r = check_string_ok(err, "$.haproxy", hap, "stats_user", stats_user_ok,
				 "must be a user name of letters, digits, '-', '.' and '_'")) < 0 ||
	    (r = check_string_ok(err, "$.haproxy", hap, "stats_password", stats_password_ok,
				 "must be a password of letters, digits and -._~!%^*+=,/@?&()[] (no spaces, quotes, "
				 "'#', '$', ':' or backslash)")) < 0 ||
	    (r = check_flag(err, "$.haproxy", hap, "enable_stats")) < 0)
		return r;
	if (json_is_true(json_object_get(hap, "enable_stats")) && !json_object_get(hap, "stats_password"))
		return stack_error_set(err, "$.haproxy.stats_password", "is required when enable_stats is true");
	return 0;
}

/* plone_instances: what the front end reads of the app layer's section. */
static int front_validate_instances(const json_t *pi, struct stack_error *err)
{
	const json_t *sub = json_object_get(pi, "subsites"), *v;
	const char *host;
	int r;

	if ((r = check_flag(err, "$.plone_instances", pi, "sticky_sessions")) < 0 ||
	    (r = check_string_ok(err, "$.plone_instances", pi, "site_id", site_id_ok,
				 "must be a Zope id of letters, digits, '-', '.' and '_'")) < 0 ||
	    (r = check_int_ok(err, "$.plone_instances", pi, "zserver_threads", 1, 10000,
			      "must be an integer from 1 to 10000")) < 0)
		return r;
	if (sub && !json_is_object(sub))
		return stack_error_set(err, "$.plone_instances.subsites", "must be an object of host name to site path");
	json_object_foreach((json_t *)sub, host, v) {
		char path[CHECK_PATH_SIZE];

		stack_path_key(path, sizeof(path), "$.plone_instances.subsites", host);
		if (!front_hostname_ok(host))
			return stack_error_set(err, path, "the key must be a host name (letters, digits, '-', '.')");
		if (!json_is_string(v) || !site_path_ok(json_string_value(v)))
			return stack_error_set(err, path,
					       "must be a site path like \"Plone/subsite\" (letters, digits, "
					       "'-', '.', '_', '/', no \"..\")");
	}
	return 0;
}

/* The front family's validate hook (recipe_family.validate), once per stack. */
static int front_validate(const struct stack *s, struct stack_error *err)
{
	const json_t *hap = json_object_get(s->root, "haproxy");
	const json_t *pi = json_object_get(s->root, FRONT_APP_LAYER);
	const json_t *purge = json_object_get(s->root, "varnish_purge_urls");
	const struct stack_layer *l;
	int r;

	if (hap && (r = front_validate_haproxy(hap, err)) < 0)
		return r;
	if (pi && json_is_object(pi) && (r = front_validate_instances(pi, err)) < 0)
		return r;
	if (purge) {
		size_t i;
		json_t *v;

		if (!json_is_array(purge) || json_array_size(purge) > FRONT_PURGE_URLS_MAX)
			return stack_error_set(err, "$.varnish_purge_urls", "must be a list of at most 100 regular expressions");
		json_array_foreach(purge, i, v) {
			char path[CHECK_PATH_SIZE];

			stack_path_index(path, sizeof(path), "$.varnish_purge_urls", i);
			if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v) ||
			    !purge_re_ok(json_string_value(v)))
				return stack_error_set(err, path,
						       "must be a regular expression without spaces, quotes or control "
						       "characters");
		}
	}
	/* Member addresses go into haproxy.cfg and the VCL. */
	l = stack_layer_find(s, FRONT_APP_LAYER);
	for (size_t i = 0; l && i < l->n_members; i++) {
		const struct stack_member *m = &l->members[i];
		const char *a = plone_member_address(m);
		char path[CHECK_PATH_SIZE], p2[CHECK_PATH_SIZE];

		if (address_ok(a) && (!m->ip || !*m->ip || address_ok(m->ip)))
			continue;
		stack_path_key(path, sizeof(path), "$.opsworks.layers." FRONT_APP_LAYER ".instances", m->hostname);
		stack_path_key(p2, sizeof(p2), path, address_ok(a) ? "ip" : "private_ip");
		return stack_error_set(err, p2, "must be an IP address or a host name");
	}
	return 0;
}

/* --- rendering (pure: unit-tested and kept as golden files) --- */

/* "host:port" split at the last ':'; a bare port gives host def_host. */
static void split_addr(const char *a, const char *def_host, char **ret_host, char **ret_port)
{
	const char *c = strrchr(a, ':');

	if (!c) {
		*ret_host = xstrdup(def_host);
		*ret_port = xstrdup(a);
		return;
	}
	*ret_host = c == a ? xstrdup(def_host) : xstrndup(a, (size_t)(c - a));
	*ret_port = xstrdup(c + 1);
}

static bool member_counts(const struct stack_member *m)
{
	return m->online || m->self;
}

char *front_render_haproxy(const struct stack *s, const struct front_render_opts *o)
{
	struct front_settings fs;
	const struct stack_layer *l = stack_layer_find(s, FRONT_APP_LAYER);
	struct buf b;

	front_settings_get(s, &fs);
	buf_init(&b);
	buf_puts(&b, "# Generated by agentd (recipe haproxy) from the stack: changes here are overwritten.\n");
	buf_printf(&b, "global\n\tlog 127.0.0.1 local1 notice\n\tmaxconn %ld\n", o->haproxy_maxconn);
	if (o->stats_socket)
		buf_printf(&b, "\tstats socket %s mode 600 level admin\n", o->stats_socket);
	buf_puts(&b, "\ndefaults\n"
		     "\tlog global\n"
		     "\tmode http\n"
		     "\toption httplog\n"
		     "\toption dontlognull\n"
		     "\tretries 3\n"
		     "\tno option redispatch\n"
		     "\toption httpclose\n"
		     "\toption abortonclose\n"
		     "\ttimeout client 60s\n"
		     "\ttimeout server 900s\n"
		     "\ttimeout queue 120s\n"
		     "\ttimeout connect 10s\n"
		     "\ttimeout http-request 30s\n");
	if (fs.enable_stats && fs.stats_password)
		buf_printf(&b, "\tstats enable\n\tstats uri %s\n\tstats auth %s:%s\n\tstats refresh 30s\n", fs.stats_url,
			   fs.stats_user, fs.stats_password);
	buf_puts(&b, "\nbackend plone_instances\n\tbalance leastconn\n\toption forwardfor\n");
	buf_printf(&b, "\toption httpchk\n\thttp-check send meth %s uri %s\n", fs.health_check_method,
		   fs.health_check_url);
	if (fs.sticky_sessions)
		buf_puts(&b, "\tcookie sid insert nocache indirect httponly\n\toption persist\n");
	for (size_t i = 0; l && i < l->n_members; i++) {
		const struct stack_member *m = &l->members[i];
		long n;

		if (!member_counts(m))
			continue;
		n = plone_client_count(s, m);
		for (long c = 1; c <= n; c++) {
			buf_printf(&b, "\tserver %s-%ld %s:%ld", m->hostname, c, plone_member_address(m),
				   PLONE_CLIENT_PORT_BASE + c);
			if (fs.sticky_sessions)
				buf_printf(&b, " cookie %s-%ld", m->hostname, c);
			buf_printf(&b, " check inter 10000 fastinter 1000 downinter 5000 maxconn %ld rise 1 fall 5\n",
				   fs.zserver_threads);
		}
	}
	buf_printf(&b, "\nfrontend plone\n\tbind %s\n\tdefault_backend plone_instances\n", o->haproxy_bind);
	return buf_steal(&b);
}

char *front_render_vcl(const struct stack *s, const struct front_render_opts *o)
{
	const struct stack_layer *l = stack_layer_find(s, FRONT_APP_LAYER);
	_cleanup_free_ char *host = NULL, *port = NULL;
	struct buf b;

	split_addr(o->haproxy_address, "127.0.0.1", &host, &port);
	buf_init(&b);
	buf_puts(&b, "vcl 4.1;\n# Generated by agentd (recipe varnish) from the stack: changes here are overwritten.\n\n");
	buf_printf(&b,
		   "backend balancer {\n"
		   "\t.host = \"%s\";\n"
		   "\t.port = \"%s\";\n"
		   "\t.connect_timeout = 5s;\n"
		   "\t.first_byte_timeout = 300s;\n"
		   "\t.between_bytes_timeout = 100s;\n"
		   "}\n\n",
		   host, port);
	buf_puts(&b, "acl purge {\n\t\"127.0.0.0\"/24;\n");
	for (size_t i = 0; l && i < l->n_members; i++) {
		const struct stack_member *m = &l->members[i];

		if (!member_counts(m))
			continue;
		/* Private and public addresses (reference §8); names are
		 * resolved by the VCL compiler. */
		buf_printf(&b, "\t\"%s\";\n", plone_member_address(m));
		if (m->ip && *m->ip && strcmp(m->ip, plone_member_address(m)) != 0)
			buf_printf(&b, "\t\"%s\";\n", m->ip);
	}
	buf_puts(&b, "}\n\n");
	buf_puts(&b,
		 "sub vcl_recv {\n"
		 "\tset req.backend_hint = balancer;\n"
		 "\tif (req.method == \"PURGE\") {\n"
		 "\t\tif (client.ip !~ purge) {\n"
		 "\t\t\treturn (synth(405, \"Not allowed.\"));\n"
		 "\t\t}\n"
		 "\t\tban(\"req.http.host == \" + req.http.host + \" && req.url == \" + req.url);\n"
		 "\t\treturn (synth(200, \"Purged.\"));\n"
		 "\t}\n"
		 "\tif (req.method != \"GET\" && req.method != \"HEAD\" && req.method != \"PUT\" &&\n"
		 "\t    req.method != \"POST\" && req.method != \"TRACE\" && req.method != \"OPTIONS\" &&\n"
		 "\t    req.method != \"DELETE\" && req.method != \"PATCH\") {\n"
		 "\t\treturn (pipe);\n"
		 "\t}\n"
		 "\tif (req.method != \"GET\" && req.method != \"HEAD\") {\n"
		 "\t\treturn (pass);\n"
		 "\t}\n"
		 "\tunset req.http.Accept-Encoding;\n"
		 "\tif (!req.http.Authorization && req.http.Cookie !~ \"__ac=\") {\n"
		 "\t\tset req.http.X-Anonymous = \"True\";\n"
		 "\t} else {\n"
		 "\t\tunset req.http.X-Anonymous;\n"
		 "\t}\n"
		 "}\n\n"
		 "sub vcl_backend_response {\n"
		 "\tset beresp.grace = 60s;\n"
		 "\tif (beresp.http.Cache-Control ~ \"s-maxage\") {\n"
		 "\t\tset beresp.http.Cache-Control = regsub(beresp.http.Cache-Control, \"s-maxage=[0-9]+\", \"s-maxage=0\");\n"
		 "\t}\n"
		 "\tif (beresp.ttl <= 0s || beresp.http.Set-Cookie ||\n"
		 "\t    beresp.http.Cache-Control ~ \"(private|no-cache|no-store)\" ||\n"
		 "\t    bereq.url ~ \"/(login|logout|login_form|logged_out)\" ||\n"
		 "\t    (!bereq.http.X-Anonymous && !beresp.http.Cache-Control)) {\n"
		 "\t\tset beresp.uncacheable = true;\n"
		 "\t\tset beresp.ttl = 120s;\n"
		 "\t\treturn (deliver);\n"
		 "\t}\n"
		 "\tif (bereq.http.X-Anonymous && !beresp.http.Cache-Control) {\n"
		 "\t\tset beresp.ttl = 300s;\n"
		 "\t}\n"
		 "\treturn (deliver);\n"
		 "}\n\n"
		 "sub vcl_deliver {\n"
		 "\tif (obj.hits > 0) {\n"
		 "\t\tset resp.http.X-Cache = \"HIT\";\n"
		 "\t} else {\n"
		 "\t\tset resp.http.X-Cache = \"MISS\";\n"
		 "\t}\n"
		 "\tset resp.http.X-Varnish-Age = resp.http.Age;\n"
		 "\tset resp.http.Age = \"0\";\n"
		 "}\n");
	return buf_steal(&b);
}

static void nginx_proxy_block(struct buf *b, const char *site_path)
{
	buf_printf(b,
		   "\tlocation / {\n"
		   "\t\trewrite ^/(.*)$ /VirtualHostBase/$agentd_scheme/$host:$agentd_port/%s/VirtualHostRoot/$1 break;\n"
		   "\t\tproxy_pass http://cache;\n"
		   "\t\tproxy_set_header Host $host;\n"
		   "\t\tproxy_set_header X-Real-IP $remote_addr;\n"
		   "\t\tproxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
		   "\t\tproxy_set_header Accept-Encoding \"\";\n"
		   "\t\tproxy_connect_timeout 900s;\n"
		   "\t\tproxy_send_timeout 900s;\n"
		   "\t\tproxy_read_timeout 900s;\n"
		   "\t\tadd_header Access-Control-Allow-Origin $agentd_font_cors;\n"
		   "\t}\n",
		   site_path);
}

char *front_render_nginx(const struct stack *s, const struct front_render_opts *o)
{
	struct front_settings fs;
	const char *host, *path;
	json_t *v;
	struct buf b;

	front_settings_get(s, &fs);
	buf_init(&b);
	buf_puts(&b, "# Generated by agentd (recipe nginx) from the stack: changes here are overwritten.\n");
	buf_printf(&b, "upstream cache {\n\tserver %s;\n}\n\nupstream balancer {\n\tserver %s;\n}\n\n", o->varnish_address,
		   o->haproxy_address);
	buf_puts(&b, "map $http_x_forwarded_proto $agentd_scheme {\n\tdefault $scheme;\n\thttps https;\n\thttp http;\n}\n\n"
		     "map $http_x_forwarded_proto $agentd_port {\n\tdefault $server_port;\n\thttps 443;\n\thttp 80;\n}\n\n"
		     "map $uri $agentd_font_cors {\n\tdefault \"\";\n\t\"~*\\.(eot|ttf|otf|woff2?)$\" \"*\";\n}\n\n"
		     "map $http_user_agent $agentd_is_bot {\n\tdefault 0;\n\t\"~*(bot|crawl|spider|slurp)\" 1;\n}\n\n");
	buf_printf(&b, "server {\n\tlisten %s default_server;\n\tserver_name _;\n\tclient_max_body_size 128m;\n\n",
		   o->nginx_listen);
	buf_puts(&b, "\tlocation = /_main_status_ {\n\t\tallow 127.0.0.1;\n\t\tdeny all;\n\t\treturn 200 \"ok\\n\";\n\t}\n\n");
	/* nginx matches a location against the path only (no query string):
	 * "/haproxy?stats" is served at "= /haproxy", and proxy_pass without a
	 * URI passes the request, query included, as it came. */
	if (fs.enable_stats && fs.stats_password)
		buf_printf(&b, "\tlocation = %.*s {\n\t\tproxy_pass http://balancer;\n\t}\n\n",
			   (int)strcspn(fs.stats_url, "?"), fs.stats_url);
	buf_puts(&b, "\t# Trailing slashes: one URL per page for crawlers.\n"
		     "\tif ($agentd_is_bot) {\n\t\trewrite ^(.+)/$ $1 permanent;\n\t}\n\n");
	nginx_proxy_block(&b, fs.site_id);
	buf_puts(&b, "}\n");
	json_object_foreach((json_t *)fs.subsites, host, v) {
		path = json_string_value(v);
		while (*path == '/')
			path++;
		buf_printf(&b, "\nserver {\n\tlisten %s;\n\tserver_name %s;\n\tclient_max_body_size 128m;\n\n",
			   o->nginx_listen, host);
		nginx_proxy_block(&b, path);
		buf_puts(&b, "}\n");
	}
	return buf_steal(&b);
}

/* --- planning --- */

static void front_render_opts_from_config(const struct config *c, struct front_render_opts *o)
{
	o->haproxy_bind = config_string(c, "haproxy_bind");
	o->haproxy_address = config_string(c, "haproxy_address");
	o->haproxy_maxconn = config_int(c, "haproxy_maxconn");
	o->stats_socket = config_string(c, "haproxy_stats_socket");
	o->varnish_address = config_string(c, "varnish_address");
	o->nginx_listen = config_string(c, "nginx_listen");
}

/* argv = config command + extra (NULL-terminated), malloc'd array of borrowed strings. */
static char **argv_concat(const char **cmd, const char *const *extra)
{
	size_t n = 0, m = 0, k = 0;
	char **r;

	while (cmd && cmd[n])
		n++;
	while (extra && extra[m])
		m++;
	r = xcalloc(n + m + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		r[k++] = (char *)cmd[i];
	for (size_t i = 0; i < m; i++)
		r[k++] = (char *)extra[i];
	return r;
}

static struct step *front_exec(const struct recipe_ctx *ctx, struct plan *plan, const char *target, char **argv,
			       char **ret_error)
{
	struct exec_step_opts eo = { .argv = argv, .timeout_sec = config_int(ctx->config, "front_check_timeout") };

	return plan_add_exec(plan, target, &eo, ret_error);
}

/* fallback (may be NULL): the argv run instead when the check exits 2 (see
 * varnish_plan). */
static int front_plan_checked(const struct recipe_ctx *ctx, struct plan *plan, const char *id, const char *path,
			      char *content, char **argv, char **fallback, const char *wrapper, bool secret,
			      char **ret_error)
{
	struct front_file_opts fo = {
		.path = path,
		.content = content,
		.len = strlen(content),
		/* A config with a password is readable by root only (the
		 * services read their configs as root before they drop
		 * privileges). */
		.mode = secret ? 0600 : 0644,
		.check_argv = argv,
		.wrapper = wrapper,
		.timeout_sec = config_int(ctx->config, "front_check_timeout"),
		.fallback_argv = fallback,
		.fallback_status = 2,
	};
	struct step *s = front_add_checked_file(plan, &fo, ret_error);

	free(content);
	if (!s)
		return -EINVAL;
	s->id = xstrdup(id);
	s->secret = secret;
	return 0;
}

static int front_plan_reload(const struct recipe_ctx *ctx, struct plan *plan, const char *target, const char *cmd_key,
			     const char *const *guards, char **ret_error)
{
	_cleanup_free_ const char **cmd = config_argv(ctx->config, cmd_key);
	_cleanup_free_ char **argv = argv_concat(cmd, NULL);
	struct step *s;

	if (!cmd)
		return 0;
	s = front_exec(ctx, plan, target, argv, ret_error);
	if (!s)
		return -EINVAL;
	for (size_t i = 0; guards[i]; i++)
		step_only_if_changed(s, guards[i]);
	return 0;
}

static int haproxy_plan(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	struct front_render_opts o;
	struct front_settings fs;
	static const char *const check[] = { "-c", "-f", "{}", NULL };
	static const char *const guards[] = { "front-haproxy-cfg", NULL };
	int r;

	_cleanup_free_ const char **cmd = config_argv(ctx->config, "haproxy_command");
	_cleanup_free_ char **argv = argv_concat(cmd, check);

	front_render_opts_from_config(ctx->config, &o);
	front_settings_get(ctx->stack, &fs);
	r = front_plan_checked(ctx, plan, "front-haproxy-cfg", config_string(ctx->config, "haproxy_config"),
			       front_render_haproxy(ctx->stack, &o), argv, NULL, NULL, fs.enable_stats && fs.stats_password,
			       ret_error);
	if (r < 0)
		return r;
	return front_plan_reload(ctx, plan, "reload haproxy", "haproxy_reload_command", guards, ret_error);
}

/* The VCL is compiled once (issue 12): its check is `varnishadm vcl.load
 * NAME candidate`, which compiles it in the running varnishd; varnishd
 * refuses a bad VCL with its compiler's message and keeps the active one,
 * and only an accepted VCL replaces the file. When varnishadm cannot reach
 * varnishd (exit status 2), `varnishd -C -f candidate` checks it instead.
 * The varnish-vcl step then makes NAME active (loading the file itself
 * when the check could not). */
static int varnish_plan(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	struct front_render_opts o;
	static const char *const compile[] = { "-C", "-f", "{}", NULL };
	const char *vcl = config_string(ctx->config, "varnish_vcl");
	_cleanup_free_ char *content = NULL, *name = NULL;
	_cleanup_free_ const char **adm = config_argv(ctx->config, "varnishadm_command");
	_cleanup_free_ const char **vd = config_argv(ctx->config, "varnishd_command");
	_cleanup_free_ char **admv = argv_concat(adm, NULL), **load = NULL, **check = NULL;
	struct step *s;
	int r;

	if (!admv[0]) {
		*ret_error = xstrdup("no varnishadm command (varnishadm_command)");
		return -EINVAL;
	}
	front_render_opts_from_config(ctx->config, &o);
	content = front_render_vcl(ctx->stack, &o);
	/* A name unique to this run and content: vcl.load refuses a name
	 * that is loaded already. */
	name = xasprintf(FRONT_VCL_PREFIX "%ld_%016llx", ctx->run_id,
			 (unsigned long long)hash_fnv1a64(content, strlen(content), HASH_FNV_SEED));
	{
		const char *const extra[] = { "vcl.load", name, "{}", NULL };
		load = argv_concat(adm, extra);
	}
	check = argv_concat(vd, compile);
	r = front_plan_checked(ctx, plan, "front-varnish-vcl", vcl, xstrdup(content), load, vd && vd[0] ? check : NULL, NULL,
			       false, ret_error);
	if (r < 0)
		return r;
	s = front_add_varnish_vcl(plan, admv, vcl, name, FRONT_VCL_PREFIX, config_int(ctx->config, "front_check_timeout"),
				  ret_error);
	if (!s)
		return -EINVAL;
	step_only_if_changed(s, "front-varnish-vcl");
	return 0;
}

/* The nginx check: a main config around the candidate site, so that
 * `nginx -t` checks the site in the http context it is included in. */
static const char nginx_wrapper[] = "# agentd: checks a candidate site before it replaces the live one\n"
				    "error_log stderr;\n"
				    "events {\n}\n"
				    "http {\n"
				    "\taccess_log off;\n"
				    "\tinclude \"{}\";\n"
				    "}\n";

static int nginx_plan(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	struct front_render_opts o;
	static const char *const check[] = { "-t", "-q", "-e", "stderr", "-c", "{}", NULL };
	static const char *const guards[] = { "front-nginx-site", "front-nginx-link", "front-nginx-default", NULL };
	const char *site = config_string(ctx->config, "nginx_site");
	const char *enabled = config_string(ctx->config, "nginx_sites_enabled");
	_cleanup_free_ char *link = NULL, *def = NULL;
	struct step *s;
	int r;

	_cleanup_free_ const char **cmd = config_argv(ctx->config, "nginx_command");
	_cleanup_free_ char **argv = argv_concat(cmd, check);

	front_render_opts_from_config(ctx->config, &o);
	r = front_plan_checked(ctx, plan, "front-nginx-site", site, front_render_nginx(ctx->stack, &o), argv, NULL,
			       nginx_wrapper, false, ret_error);
	if (r < 0)
		return r;
	link = xasprintf("%s/instances", enabled);
	def = xasprintf("%s/default", enabled);
	s = plan_add_link(plan, link, site, ret_error);
	if (!s)
		return -EINVAL;
	s->id = xstrdup("front-nginx-link");
	s = plan_add_absent(plan, def, false, ret_error);
	if (!s)
		return -EINVAL;
	s->id = xstrdup("front-nginx-default");
	return front_plan_reload(ctx, plan, "reload nginx", "nginx_reload_command", guards, ret_error);
}

static int varnish_restart_plan(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	_cleanup_free_ const char **cmd = config_argv(ctx->config, "varnish_restart_command");
	_cleanup_free_ char **argv = argv_concat(cmd, NULL);

	return front_exec(ctx, plan, "restart varnish", argv, ret_error) ? 0 : -EINVAL;
}

char *front_cli_quote(const char *s)
{
	struct buf b;

	buf_init(&b);
	buf_puts(&b, "\"");
	for (const char *p = s; *p; p++) {
		if (*p == '"' || *p == '\\')
			buf_puts(&b, "\\");
		buf_append(&b, p, 1);
	}
	buf_puts(&b, "\"");
	return buf_steal(&b);
}

static int varnish_purge_plan(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	const json_t *urls = json_object_get(ctx->stack->root, "varnish_purge_urls");
	_cleanup_free_ const char **adm = config_argv(ctx->config, "varnishadm_command");
	size_t i;
	json_t *v;

	if (!json_is_array(urls) || json_array_size(urls) == 0) {
		static const char *const all[] = { "ban", "req.url", "~", "\".*\"", NULL };
		_cleanup_free_ char **argv = argv_concat(adm, all);
		return front_exec(ctx, plan, "ban .*", argv, ret_error) ? 0 : -EINVAL;
	}
	json_array_foreach(urls, i, v) {
		/* varnishadm joins its arguments with spaces and does not
		 * quote them: quote the expression for the CLI ourselves. */
		_cleanup_free_ char *q = front_cli_quote(json_string_value(v));
		const char *extra[] = { "ban", "req.url", "~", q, NULL };
		_cleanup_free_ char **argv = argv_concat(adm, extra);
		_cleanup_free_ char *target = xasprintf("ban %s", json_string_value(v));

		if (!front_exec(ctx, plan, target, argv, ret_error))
			return -EINVAL;
	}
	return 0;
}

/* The files each front-end recipe writes (recipe.owns), from agentd.conf. */
static void front_owns(const struct stack *s, const struct config *c, const char *layer, const char *name,
		       struct recipe_paths *ret)
{
	if (strcmp(name, "haproxy") == 0)
		recipe_paths_add(ret, config_string(c, "haproxy_config"), false,
				 xstrdup("haproxy's configuration, written by recipe haproxy"));
	else if (strcmp(name, "varnish") == 0)
		recipe_paths_add(ret, config_string(c, "varnish_vcl"), false,
				 xstrdup("the VCL written by recipe varnish"));
	else if (strcmp(name, "nginx") == 0) {
		const char *enabled = config_string(c, "nginx_sites_enabled");
		_cleanup_free_ char *link = xasprintf("%s/instances", enabled), *def = xasprintf("%s/default", enabled);

		recipe_paths_add(ret, config_string(c, "nginx_site"), false, xstrdup("the nginx site of recipe nginx"));
		recipe_paths_add(ret, link, false, xstrdup("the nginx site link of recipe nginx"));
		recipe_paths_add(ret, def, false, xstrdup("the nginx default site recipe nginx removes"));
	}
}

static const struct recipe recipes_front[] = {
	{ "haproxy", haproxy_plan, front_owns },
	{ "varnish", varnish_plan, front_owns },
	{ "nginx", nginx_plan, front_owns },
	{ "varnish-restart", varnish_restart_plan, NULL },
	{ "varnish-purge", varnish_purge_plan, NULL },
	{ NULL, NULL, NULL },
};

const struct recipe_family family_front = { .name = "front", .recipes = recipes_front, .validate = front_validate };

/* SPDX-License-Identifier: BSD-2-Clause */
/* The front-end family's renderers, exposed for unit tests and the golden
 * files (tests/golden/front/). Pure functions of the stack model. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

struct stack;

/* Where things listen and meet, from agentd.conf (haproxy_bind,
 * haproxy_address, haproxy_stats_socket, varnish_address, nginx_listen). */
struct front_render_opts {
	const char *haproxy_bind;     /* "bind" of the frontend, e.g. ":8080" */
	const char *haproxy_address;  /* where varnish and nginx reach haproxy, "host:port" */
	const char *stats_socket;     /* may be NULL */
	long haproxy_maxconn;         /* global maxconn (80000 in the reference) */
	const char *varnish_address;  /* where nginx reaches varnish, "host:port" */
	const char *nginx_listen;     /* nginx "listen" value, e.g. "80" */
};

/* The stack keys the front end reads, with the reference's defaults. Strings borrowed. */
struct front_settings {
	const char *health_check_method, *health_check_url;
	bool enable_stats;
	const char *stats_url, *stats_user, *stats_password;
	bool sticky_sessions;
	long zserver_threads;
	const char *site_id;
	const json_t *subsites;
};
void front_settings_get(const struct stack *s, struct front_settings *ret);

char *front_render_haproxy(const struct stack *s, const struct front_render_opts *o);
char *front_render_vcl(const struct stack *s, const struct front_render_opts *o);
char *front_render_nginx(const struct stack *s, const struct front_render_opts *o);

/* s as a Varnish CLI string: double-quoted, '"' and '\' escaped. */
char *front_cli_quote(const char *s);
bool front_hostname_ok(const char *h);

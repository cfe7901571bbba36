/* SPDX-License-Identifier: BSD-2-Clause */
/* This instance in etcd (design.md §9): its hostname, the value of
 * PREFIX/instances/<hostname> (layers and addresses from agentd.conf or
 * its static member, the agent's state), and the registration that keeps
 * it under a lease (fleet/registration.c). See etcd.c's top comment for
 * the whole source. */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "fleet/etcd.h"
#include "fleet/registration.h"
#include "log.h"
#include "source.h"
#include "source/etcd_int.h"
#include "util.h"

/* ------------------------------------------------------------ identity */

static char *es_own_ipv4(void)
{
	struct ifaddrs *ifa = NULL;
	char buf[INET_ADDRSTRLEN] = "127.0.0.1";

	if (getifaddrs(&ifa) == 0) {
		for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
			if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || (i->ifa_flags & IFF_LOOPBACK) ||
			    !(i->ifa_flags & IFF_UP))
				continue;
			if (inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, buf, sizeof(buf)))
				break;
		}
		freeifaddrs(ifa);
	}
	return xstrdup(buf);
}

/* opsworks.layers.<l>.instances.<host> of the last good stack, in
 * document order: the first entry, and the layers (when ret_layers). */
static const json_t *es_static_member(const struct etcd_source *es, const char *host, json_t *ret_layers)
{
	const json_t *layers = json_object_get(json_object_get(es->stack, "opsworks"), "layers"), *l, *first = NULL;
	const char *name;

	json_object_foreach((json_t *)layers, name, l) {
		const json_t *m = json_object_get(json_object_get(l, "instances"), host);
		if (!json_is_object(m))
			continue;
		if (!first)
			first = m;
		if (ret_layers)
			json_array_append_new(ret_layers, json_string(name));
	}
	return first;
}

/* The configured name, else the system's; its first label when only that is
 * a static member (web1.eu-west-1.compute.internal -> web1). */
static char *es_pick_hostname(const struct etcd_source *es)
{
	const struct config *c = es->s->config;
	char host[256];
	const char *dot;

	if (c->instance)
		return xstrdup(c->instance);
	if (gethostname(host, sizeof(host)) < 0)
		return xstrdup("localhost");
	host[sizeof(host) - 1] = '\0';
	dot = strchr(host, '.');
	if (dot && dot > host && !es_static_member(es, host, NULL)) {
		_cleanup_free_ char *label = xstrndup(host, (size_t)(dot - host));
		if (es_static_member(es, label, NULL))
			return xstrdup(label);
	}
	return xstrdup(host);
}

/* design.md §9's registration value. */
static json_t *es_registration_value(struct etcd_source *es)
{
	static const char *const copied[] = { "private_ip", "private_dns_name", "public_dns_name", "ip",
					      "aws_instance_id", "availability_zone", "instance_type", "backends",
					      NULL };
	const struct config *c = es->s->config;
	json_t *v = json_object(), *layers = json_array();
	const json_t *m = es_static_member(es, es->hostname, c->layers ? NULL : layers);

	if (c->layers)
		for (char **l = c->layers; *l; l++)
			json_array_append_new(layers, json_string(*l));
	json_object_set_new(v, "layers", layers);
	for (size_t i = 0; m && copied[i]; i++) {
		json_t *f = json_object_get(m, copied[i]);
		if (f && !json_is_null(f))
			json_object_set(v, copied[i], f);
	}
	if (!json_object_get(v, "private_ip")) {
		if (!es->own_ip)
			es->own_ip = es_own_ipv4();
		json_object_set_new(v, "private_ip", json_string(es->own_ip));
	}
	json_object_set_new(v, "status", json_string("online"));
	if (es->agent)
		json_object_set(v, "agent", es->agent);
	return v;
}

void es_register_update(struct etcd_source *es)
{
	if (es->reg)
		registration_set(es->reg, es_registration_value(es));
}

static void cb_reg_lease(void *userdata, int64_t lease)
{
	struct etcd_source *es = userdata;

	if (es->reg_error) {
		log_info("Registration of %s: lease %llx granted", es->hostname, (unsigned long long)lease);
		free(es->reg_error);
		es->reg_error = NULL;
	}
}

/* A keepalive or put worked after an error: etcd came back with the lease
 * (a restart on the same data), so no new grant clears the error. */
static void cb_reg_ok(void *userdata)
{
	struct etcd_source *es = userdata;

	if (!es->reg_error)
		return;
	log_info("Registration of %s works again (lease %llx)", es->hostname,
		 (unsigned long long)registration_lease(es->reg));
	free(es->reg_error);
	es->reg_error = NULL;
}

static void cb_reg_error(void *userdata, const char *message)
{
	struct etcd_source *es = userdata;
	_cleanup_free_ char *m = str_escape_ctl(message);

	if (es->reg_error && strcmp(es->reg_error, m) == 0)
		return;
	log_warn("%s (retrying)", m);
	free(es->reg_error);
	es->reg_error = m;
	m = NULL;
}

void es_register(struct etcd_source *es)
{
	static const struct registration_callbacks cbs = {
		.on_lease = cb_reg_lease, .on_error = cb_reg_error, .on_ok = cb_reg_ok
	};
	const struct config *c = es->s->config;
	_cleanup_free_ char *error = NULL, *ehost = NULL;
	long timeout_ms;
	int r;

	if (es->reg || es->hostname)
		return;
	es->hostname = es_pick_hostname(es);
	if (!name_is_valid(es->hostname)) {
		ehost = str_escape_ctl(es->hostname);
		log_error("Not registering in etcd: hostname \"%s\" is not a name of [A-Za-z0-9_.-]", ehost);
		return;
	}
	/* A keepalive that waits longer than lease_ttl/3 on a frozen etcd
	 * leaves no time for the next one (issue 12 follow-up #11). */
	if (etcd_new(es->s->loop, es->s->http, c, es->s->url, &es->reg_c, &error) < 0) {
		log_error("Not registering in etcd: %s", error ? error : "invalid etcd source");
		es->reg_c = NULL;
		return;
	}
	timeout_ms = c->lease_ttl * 1000 / 3;
	if (timeout_ms < REG_CALL_TIMEOUT_MIN_MS)
		timeout_ms = REG_CALL_TIMEOUT_MIN_MS;
	/* Only ever shorter than the client's defaults (5 s, connect 2 s). */
	etcd_set_timeouts(es->reg_c, timeout_ms < 5000 ? timeout_ms : 0, timeout_ms < 2000 ? timeout_ms : 0);
	r = registration_new(es->s->loop, es->reg_c, es->hostname, c->lease_ttl, &cbs, es, &es->reg);
	if (r < 0) {
		es->reg = NULL;
		return;
	}
	es_register_update(es);
}

static void on_publish(uv_timer_t *t)
{
	struct etcd_source *es = t->data;

	if (es->s)
		es_register_update(es);
}

/* The agent's state goes out PUBLISH_DELAY_MS (plus up to as much again of
 * jitter) after it changed, with whatever changed meanwhile: a quick run's
 * "running" and "idle" are one put, not two, and a fleet that ran one
 * configure everywhere does not put its states in the same millisecond.
 * Every agent watches the whole prefix, so each put reaches all of them:
 * a fleet-wide change costs N puts times N watchers (each skipped
 * cheaply, see es_same_but_agent); fewer, spread puts keep that off the
 * runs' start. A change of membership (layers, addresses) is not delayed. */
#define PUBLISH_DELAY_MS 1000

void etcd_source_set_agent(struct source *s, const json_t *agent)
{
	struct etcd_source *es = s->data;

	if (!es || !json_is_object(agent))
		return;
	if (es->agent && json_equal(es->agent, agent))
		return;
	json_decref(es->agent);
	es->agent = json_deep_copy(agent);
	if (!uv_is_active((uv_handle_t *)&es->publish))
		(void)uv_timer_start(&es->publish, on_publish,
				     PUBLISH_DELAY_MS + (uint64_t)random() % (PUBLISH_DELAY_MS + 1), 0);
}


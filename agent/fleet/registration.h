/* SPDX-License-Identifier: BSD-2-Clause */
/* This instance's registration in etcd (design.md §9): a lease of
 * lease_ttl seconds, the key PREFIX/instances/<hostname> put under it, a
 * keepalive every TTL/3 (one POST each, etcd #8237). A lost lease (a
 * keepalive answered without TTL, or -ENOENT) is granted again and the key
 * put again. The value is put when it changes, at most once per change,
 * and again after a new lease; nothing else writes. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct etcd;
struct registration;

struct registration_callbacks {
	/* A lease was granted (the first, or one after the last was lost):
	 * whatever was held under the old lease (locks, slots) is gone and
	 * must be taken again under this one. May be NULL. */
	void (*on_lease)(void *userdata, int64_t lease);
	/* A grant, put or keepalive failed (it is retried with backoff);
	 * message names the endpoint and the cause. May be NULL. */
	void (*on_error)(void *userdata, const char *message);
	/* A grant, keepalive or put succeeded after on_error: the
	 * registration works again (a restarted etcd that kept the lease
	 * grants nothing new). May be NULL. */
	void (*on_ok)(void *userdata);
};

/* hostname: this instance's name (the key's last part, name_is_valid).
 * ttl: seconds (>= 1). loop: c's, for the keepalive and retry timer.
 * Starts at once: grant, then put when a value was set. Returns 0, or
 * -EINVAL for a hostname that is not a name. */
int registration_new(uv_loop_t *loop, struct etcd *c, const char *hostname, long ttl,
		     const struct registration_callbacks *cbs, void *userdata, struct registration **ret);
/* Sets the key's value (a JSON object, stolen): put now when it differs
 * from what was put last and a lease is live, else once one is. */
void registration_set(struct registration *r, json_t *value);
/* The live lease, 0 while there is none. */
int64_t registration_lease(const struct registration *r);
/* Stops keepalives. revoke: revoke the lease too (the key goes at once: a
 * system shutdown), else the key lives out its TTL (an agentd restart
 * within it changes nothing for the other members). */
void registration_free(struct registration *r, bool revoke);

/* SPDX-License-Identifier: BSD-2-Clause */
/* This instance's registration (design.md §9): one lease, one key under it,
 * one call in flight at a time and one timer. What to do next is decided
 * in one place (reg_next) from three facts: is there a lease, is a
 * keepalive due, does the key hold the value we want. A failure waits
 * etcd_backoff_ms() and checks the lease first (a keepalive) before it
 * puts again, so that a put refused for a lease that expired meanwhile
 * leads to a new grant, not to a put retried forever. */
#include "registration.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fleet/etcd.h"
#include "log.h"
#include "util.h"

struct registration {
	struct etcd *c;              /* borrowed */
	char *key;                   /* owned: PREFIX/instances/<hostname> */
	long ttl;                    /* seconds */
	struct registration_callbacks cbs;
	void *userdata;
	uv_timer_t timer;            /* keepalive, or the end of a backoff */
	struct etcd_call *call;      /* in flight, NULL when none */
	int64_t lease;               /* live lease, 0: none */
	int64_t next_keepalive_usec; /* monotonic: a keepalive is due from then on */
	char *want;                  /* owned: the value to hold (compact JSON), NULL: none set yet */
	char *put;                   /* owned: the value put under lease, NULL: nothing put under it */
	char *putting;               /* owned: the value of the put in flight */
	unsigned failures;           /* in a row, for the backoff */
	bool backoff;                /* the timer ends a backoff: nothing starts before it fires */
	bool failing;                /* on_error was called, on_ok not since */
	bool freed;                  /* registration_free ran; the close callback frees */
};

static void reg_next(struct registration *r);

static uint64_t keepalive_interval_usec(const struct registration *r)
{
	/* TTL/3, as etcd's own client does (reference/protocols.md). */
	return (uint64_t)r->ttl * 1000000 / 3;
}

static void on_timer(uv_timer_t *t);

static void reg_backoff(struct registration *r, const char *what, const struct etcd_result *res)
{
	r->failures++;
	r->failing = true;
	if (r->cbs.on_error) {
		_cleanup_free_ char *msg = xasprintf("registration %s: %s: %s", r->key, what,
						     res->message ? res->message : strerror(-res->error));
		r->cbs.on_error(r->userdata, msg);
	}
	r->backoff = true;
	(void)uv_timer_start(&r->timer, on_timer, etcd_backoff_ms(r->failures), 0);
}

/* The lease is gone (a keepalive without TTL, etcd #8237's one-POST form):
 * whatever was under it went with it. */
static void reg_lease_lost(struct registration *r)
{
	log_warn("Registration %s: lease %llx is gone; granting a new one", r->key, (unsigned long long)r->lease);
	r->lease = 0;
	free(r->put);
	r->put = NULL;
}

/* A call succeeded: the registration works again after an error. */
static void reg_ok(struct registration *r)
{
	r->failures = 0;
	if (!r->failing)
		return;
	r->failing = false;
	if (r->cbs.on_ok)
		r->cbs.on_ok(r->userdata);
}

static void cb_grant(void *userdata, const struct etcd_result *res)
{
	struct registration *r = userdata;

	r->call = NULL;
	if (res->error < 0 || res->lease == 0) {
		reg_backoff(r, "granting a lease", res);
		return;
	}
	r->lease = res->lease;
	r->next_keepalive_usec = time_monotonic_usec() + (int64_t)keepalive_interval_usec(r);
	free(r->put);
	r->put = NULL;
	log_debug("Registration %s: lease %llx of %lld s", r->key, (unsigned long long)r->lease, (long long)res->ttl);
	if (r->cbs.on_lease)
		r->cbs.on_lease(r->userdata, r->lease);
	reg_ok(r);
	reg_next(r);
}

static void cb_keepalive(void *userdata, const struct etcd_result *res)
{
	struct registration *r = userdata;

	r->call = NULL;
	if (res->error == -ENOENT || (res->error == 0 && res->ttl <= 0)) {
		r->failures = 0;
		reg_lease_lost(r);
		reg_next(r);
		return;
	}
	if (res->error < 0) {
		reg_backoff(r, "keepalive", res);
		return;
	}
	r->next_keepalive_usec = time_monotonic_usec() + (int64_t)keepalive_interval_usec(r);
	reg_ok(r);
	reg_next(r);
}

static void cb_put(void *userdata, const struct etcd_result *res)
{
	struct registration *r = userdata;

	r->call = NULL;
	if (res->error < 0) {
		free(r->putting);
		r->putting = NULL;
		/* Perhaps the lease expired: the retry checks it first. */
		r->next_keepalive_usec = 0;
		reg_backoff(r, "put", res);
		return;
	}
	free(r->put);
	r->put = r->putting;
	r->putting = NULL;
	reg_ok(r);
	reg_next(r);
}

static void reg_start_call(struct registration *r, const char *what, int rc)
{
	struct etcd_result res = { .error = rc };

	if (rc >= 0)
		return;
	/* Refused at once (a bad argument: it will not get better soon). */
	r->call = NULL;
	reg_backoff(r, what, &res);
}

static void reg_next(struct registration *r)
{
	int64_t now;

	if (r->freed || r->call || r->backoff)
		return;
	now = time_monotonic_usec();
	if (r->lease == 0) {
		reg_start_call(r, "granting a lease", etcd_lease_grant(r->c, r->ttl, cb_grant, r, &r->call));
		return;
	}
	if (now >= r->next_keepalive_usec) {
		reg_start_call(r, "keepalive", etcd_lease_keepalive(r->c, r->lease, cb_keepalive, r, &r->call));
		return;
	}
	if (r->want && (!r->put || strcmp(r->want, r->put) != 0)) {
		/* The value may change while the put is in flight: the put
		 * records the text it wrote, and a newer one is put after it. */
		free(r->putting);
		r->putting = xstrdup(r->want);
		reg_start_call(r, "put",
			       etcd_put(r->c, r->key, r->putting, strlen(r->putting), r->lease, cb_put, r, &r->call));
		return;
	}
	(void)uv_timer_start(&r->timer, on_timer, (uint64_t)(r->next_keepalive_usec - now + 999) / 1000, 0);
}

static void on_timer(uv_timer_t *t)
{
	struct registration *r = t->data;

	r->backoff = false;
	reg_next(r);
}

int registration_new(uv_loop_t *loop, struct etcd *c, const char *hostname, long ttl,
		     const struct registration_callbacks *cbs, void *userdata, struct registration **ret)
{
	struct registration *r;

	if (!name_is_valid(hostname) || ttl < 1)
		return -EINVAL;
	r = xcalloc(1, sizeof(*r));
	r->c = c;
	r->key = xasprintf("%s/instances/%s", etcd_prefix(c), hostname);
	r->ttl = ttl;
	if (cbs)
		r->cbs = *cbs;
	r->userdata = userdata;
	(void)uv_timer_init(loop, &r->timer);
	r->timer.data = r;
	reg_next(r);
	*ret = r;
	return 0;
}

void registration_set(struct registration *r, json_t *value)
{
	char *text = json_dumps(value, JSON_COMPACT | JSON_SORT_KEYS);

	json_decref(value);
	if (!text)
		return;
	free(r->want);
	r->want = text;
	reg_next(r);
}

int64_t registration_lease(const struct registration *r)
{
	return r ? r->lease : 0;
}

static void cb_revoked(void *userdata, const struct etcd_result *res)
{
	if (res->error < 0)
		log_warn("Revoking the registration's lease: %s", res->message ? res->message : strerror(-res->error));
}

static void on_closed(uv_handle_t *h)
{
	struct registration *r = h->data;

	free(r->key);
	free(r->want);
	free(r->put);
	free(r->putting);
	free(r);
}

void registration_free(struct registration *r, bool revoke)
{
	if (!r)
		return;
	if (r->call)
		etcd_call_cancel(r->call);
	r->call = NULL;
	/* Best effort: a system going down takes its key with it at once,
	 * instead of after its TTL. The call outlives r (no userdata). */
	if (revoke && r->lease)
		(void)etcd_lease_revoke(r->c, r->lease, cb_revoked, NULL, NULL);
	r->freed = true;
	uv_close((uv_handle_t *)&r->timer, on_closed);
}

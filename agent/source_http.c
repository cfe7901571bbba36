/* SPDX-License-Identifier: BSD-2-Clause */
/* Polled stack sources on top of http.c:
 *
 * - http:// and https://: a conditional GET (If-None-Match/If-Modified-Since
 *   from the last 200) every poll_interval seconds with jitter; 304 is a
 *   successful fetch with nothing new.
 * - imds: EC2 IMDSv2 (reference/protocols.md): a session token from
 *   PUT /latest/api/token, cached and renewed a minute before it expires;
 *   instance id and region read once per process; then
 *   GET /latest/user-data on every poll. 401 drops the token and retries
 *   that GET once with a new one; 403 means IMDS is disabled, so polling
 *   stops until a reload instead of spinning; 404 on user-data is reported
 *   and polled again at the normal interval.
 *
 * Both share one poller: a timer, at most one request in flight, a failure
 * count for source_next_delay_ms()'s backoff. The next poll is scheduled
 * before the engine's callback runs, so that a reload or stop from inside the
 * callback simply overrides it. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "http.h"
#include "log.h"
#include "source.h"
#include "stack.h"
#include "util.h"

#define IMDS_DEFAULT_ENDPOINT "http://169.254.169.254"
#define IMDS_TOKEN_TTL_SEC 21600 /* the maximum; what cloud-init and the SDKs ask for */
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)
#define IMDS_TOKEN_REFRESH_USEC (60 * INT64_C(1000000)) /* renew this long before expiry */
#define IMDS_TOKEN_TIMEOUT_MS 2000
#define IMDS_GET_TIMEOUT_MS 5000
#define IMDS_VALUE_MAX 255 /* instance id, region */

enum imds_step {
	IMDS_TOKEN,
	IMDS_INSTANCE_ID,
	IMDS_REGION,
	IMDS_USER_DATA,
};

struct poller {
	struct source *s;          /* borrowed; not touched once stopped */
	uv_timer_t timer;          /* data points back here */
	void (*fetch)(struct poller *p);
	struct http_request *req;  /* in flight, NULL when idle */
	unsigned failures;         /* consecutive; drives the backoff */
	bool busy;                 /* a fetch (perhaps several requests) is under way */
	bool again;                /* reloaded while busy: fetch once more right after */
	bool halted;               /* IMDS answered 403: wait for a reload */
	bool stopped;
	bool timer_closed;
	bool free_pending;         /* free_data ran before the timer's close callback */
	char *shown_url;           /* owned: s->url without credentials */

	/* http */
	char *etag;                /* owned, from the last 200 */
	char *last_modified;       /* owned, from the last 200 */

	/* imds */
	char *base;                /* owned: endpoint without trailing slash */
	char *token;               /* owned, NULL when none or dropped */
	int64_t token_expiry_usec; /* monotonic */
	enum imds_step step;       /* of the request in flight */
	bool retried;              /* the current GET already got a fresh token after a 401 */
	bool meta_id_done, meta_region_done;
};

static long poller_interval(const struct poller *p)
{
	long i = p->s->config ? p->s->config->poll_interval : 0;
	return i > 0 ? i : 60;
}

static void poller_free(struct poller *p)
{
	free(p->shown_url);
	free(p->etag);
	free(p->last_modified);
	free(p->base);
	free(p->token);
	free(p);
}

static void on_timer_close(uv_handle_t *handle)
{
	struct poller *p = handle->data;
	p->timer_closed = true;
	if (p->free_pending)
		poller_free(p);
}

static void on_poll_timer(uv_timer_t *t)
{
	struct poller *p = t->data;

	if (p->stopped || p->busy)
		return;
	p->busy = true;
	p->fetch(p);
}

/* The fetch is over: schedule the next one (at once when reloaded meanwhile,
 * never while halted or stopped). Called before the engine hears the result. */
static void poller_rest(struct poller *p)
{
	uint64_t delay;

	p->busy = false;
	if (p->stopped)
		return;
	if (p->again) {
		p->again = false;
		p->halted = false;
		delay = 0;
	} else if (p->halted)
		return;
	else
		delay = source_next_delay_ms(poller_interval(p), p->failures);
	(void)uv_timer_start(&p->timer, on_poll_timer, delay, 0);
}

static void poller_fail(struct poller *p, bool count, const char *fmt, ...) _printf_(3, 4);
static void poller_fail(struct poller *p, bool count, const char *fmt, ...)
{
	_cleanup_free_ char *msg = NULL;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);

	p->s->last_fetch_usec = time_now_usec();
	if (count)
		p->failures++;
	else
		p->failures = 0;
	poller_rest(p);
	source_fail(p->s, "%s", msg ? msg : "fetch failed (out of memory formatting the error)");
}

static void poller_succeed(struct poller *p, const char *data, size_t len)
{
	p->s->last_fetch_usec = time_now_usec();
	p->failures = 0;
	poller_rest(p);
	if (data)
		source_deliver(p->s, data, len);
}

static long request_timeout_ms(const struct poller *p, long cap_ms)
{
	long ms = poller_interval(p) * 1000;
	if (ms > cap_ms)
		ms = cap_ms;
	return ms < 1000 ? 1000 : ms;
}

static int poller_start(struct source *s, void (*fetch)(struct poller *p), struct poller **ret)
{
	struct poller *p = xcalloc(1, sizeof(*p));
	int r;

	p->s = s;
	p->fetch = fetch;
	p->shown_url = http_url_redact(s->url);
	r = uv_timer_init(s->loop, &p->timer);
	if (r < 0) {
		poller_free(p);
		return r;
	}
	p->timer.data = p;
	s->data = p;
	/* The first fetch right away, but from the loop: start() never calls
	 * back into the engine. */
	(void)uv_timer_start(&p->timer, on_poll_timer, 0, 0);
	*ret = p;
	return 0;
}

static void poller_reload(struct source *s)
{
	struct poller *p = s->data;

	if (!p || p->stopped)
		return;
	if (p->busy) {
		p->again = true;
		return;
	}
	p->halted = false;
	(void)uv_timer_start(&p->timer, on_poll_timer, 0, 0);
}

static void poller_stop_internal(struct poller *p)
{
	if (p->stopped)
		return;
	p->stopped = true;
	if (p->req) {
		http_request_cancel(p->req);
		p->req = NULL;
	}
	uv_close((uv_handle_t *)&p->timer, on_timer_close);
}

static void poller_stop(struct source *s)
{
	if (s->data)
		poller_stop_internal(s->data);
}

static void poller_free_data(void *data)
{
	struct poller *p = data;

	if (!p)
		return;
	poller_stop_internal(p);
	if (p->timer_closed)
		poller_free(p);
	else
		p->free_pending = true;
}

/* ---- http:// and https:// ---- */

static void http_source_done(void *userdata, const struct http_response *r)
{
	struct poller *p = userdata;

	p->req = NULL;
	if (r->error) {
		poller_fail(p, true, "GET %s", r->error);
		return;
	}
	if (r->status == 304) {
		poller_succeed(p, NULL, 0);
		return;
	}
	if (r->status != 200) {
		poller_fail(p, true, "GET %s: HTTP %ld", p->shown_url, r->status);
		return;
	}
	/* Validators belong to the document last delivered: a 200 without
	 * them means the next GET is unconditional. */
	free(p->etag);
	free(p->last_modified);
	p->etag = r->etag ? xstrdup(r->etag) : NULL;
	p->last_modified = r->last_modified ? xstrdup(r->last_modified) : NULL;
	poller_succeed(p, r->body, r->body_len);
}

static void http_source_fetch(struct poller *p)
{
	struct http_options o = {
		.method = "GET",
		.url = p->s->url,
		.timeout_ms = request_timeout_ms(p, 30000),
		.max_body = STACK_MAX_BYTES,
		.if_none_match = p->etag,
		.if_modified_since = p->last_modified,
	};
	int r;

	r = http_request_start(p->s->http, &o, http_source_done, p, &p->req);
	if (r < 0) {
		p->req = NULL;
		poller_fail(p, true, "GET %s: %s", p->shown_url, strerror(-r));
	}
}

static int http_source_start(struct source *s)
{
	struct poller *p;

	if (!s->http || !s->url)
		return -EINVAL;
	return poller_start(s, http_source_fetch, &p);
}

const struct source_ops source_http_ops = {
	.scheme = "http",
	.start = http_source_start,
	.reload = poller_reload,
	.stop = poller_stop,
	.free_data = poller_free_data,
};

/* ---- imds: ---- */

static const char *imds_path(enum imds_step step)
{
	switch (step) {
	case IMDS_TOKEN:
		return "/latest/api/token";
	case IMDS_INSTANCE_ID:
		return "/latest/meta-data/instance-id";
	case IMDS_REGION:
		return "/latest/meta-data/placement/region";
	case IMDS_USER_DATA:
		return "/latest/user-data";
	}
	return "/";
}

/* A short metadata value or a token: printable ASCII, no blanks. */
static char *imds_value(const char *body, size_t len)
{
	while (len > 0 && (body[len - 1] == '\n' || body[len - 1] == '\r' || body[len - 1] == ' '))
		len--;
	if (len == 0 || len > 4096)
		return NULL;
	for (size_t i = 0; i < len; i++)
		if (body[i] <= ' ' || body[i] > '~')
			return NULL;
	return xstrndup(body, len);
}

static void imds_done(void *userdata, const struct http_response *r);

static void imds_next(struct poller *p)
{
	static const char *ttl_header[] = { "X-aws-ec2-metadata-token-ttl-seconds: " STRINGIFY(IMDS_TOKEN_TTL_SEC), NULL };
	_cleanup_free_ char *url = NULL, *token_header = NULL;
	const char *get_headers[2] = { NULL, NULL };
	/* A proxy from the environment would add X-Forwarded-For, which
	 * IMDS refuses, and the link-local address is never behind one. */
	struct http_options o = { .max_body = STACK_MAX_BYTES, .no_proxy = true };
	int64_t now = time_monotonic_usec();
	int r;

	if (!p->token || now + IMDS_TOKEN_REFRESH_USEC >= p->token_expiry_usec) {
		free(p->token);
		p->token = NULL;
		p->step = IMDS_TOKEN;
	} else if (!p->meta_id_done)
		p->step = IMDS_INSTANCE_ID;
	else if (!p->meta_region_done)
		p->step = IMDS_REGION;
	else
		p->step = IMDS_USER_DATA;

	url = xasprintf("%s%s", p->base, imds_path(p->step));
	o.url = url;
	if (p->step == IMDS_TOKEN) {
		o.method = "PUT";
		o.headers = ttl_header;
		o.timeout_ms = IMDS_TOKEN_TIMEOUT_MS;
	} else {
		token_header = xasprintf("X-aws-ec2-metadata-token: %s", p->token);
		get_headers[0] = token_header;
		o.method = "GET";
		o.headers = get_headers;
		o.timeout_ms = request_timeout_ms(p, IMDS_GET_TIMEOUT_MS);
	}

	r = http_request_start(p->s->http, &o, imds_done, p, &p->req);
	if (r < 0) {
		p->req = NULL;
		poller_fail(p, true, "%s %s: %s", o.method, url, strerror(-r));
	}
}

static void imds_fetch(struct poller *p)
{
	p->retried = false;
	imds_next(p);
}

static void imds_done(void *userdata, const struct http_response *r)
{
	struct poller *p = userdata;
	struct source *s = p->s;
	const char *method = p->step == IMDS_TOKEN ? "PUT" : "GET";
	_cleanup_free_ char *url = xasprintf("%s%s", p->base, imds_path(p->step));
	char *v;

	p->req = NULL;
	if (r->error) {
		poller_fail(p, true, "%s %s", method, r->error);
		return;
	}
	if (r->status == 403) {
		/* HttpEndpoint=disabled (or a PUT that looked forwarded): asking
		 * again will not help, and cloud-init learned that spinning here
		 * only delays boot. */
		p->halted = true;
		poller_fail(p, true,
			    "IMDS at %s answered 403 to %s %s: instance metadata is disabled "
			    "(enable it with modify-instance-metadata-options --http-endpoint enabled); "
			    "not polling again until reload",
			    p->base, method, imds_path(p->step));
		return;
	}

	switch (p->step) {
	case IMDS_TOKEN:
		if (r->status != 200) {
			poller_fail(p, true, "PUT %s: HTTP %ld", url, r->status);
			return;
		}
		v = imds_value(r->body, r->body_len);
		if (!v) {
			poller_fail(p, true, "PUT %s: the token in the answer is empty or malformed", url);
			return;
		}
		free(p->token);
		p->token = v;
		p->token_expiry_usec = time_monotonic_usec() + (int64_t)IMDS_TOKEN_TTL_SEC * 1000000;
		imds_next(p);
		return;

	case IMDS_INSTANCE_ID:
	case IMDS_REGION:
	case IMDS_USER_DATA:
		if (r->status == 401) {
			free(p->token);
			p->token = NULL;
			if (!p->retried) {
				p->retried = true;
				imds_next(p);
				return;
			}
			poller_fail(p, true, "GET %s: HTTP 401 even with a new token", url);
			return;
		}
		break;
	}

	if (p->step == IMDS_USER_DATA) {
		if (r->status == 404) {
			/* Not a fault of IMDS: the instance was launched without
			 * user-data. Keep the normal interval so it is picked up
			 * once someone adds it (stop/start). */
			poller_fail(p, false, "GET %s: no user-data (HTTP 404)", url);
			return;
		}
		if (r->status != 200) {
			poller_fail(p, true, "GET %s: HTTP %ld", url, r->status);
			return;
		}
		p->retried = false;
		poller_succeed(p, r->body, r->body_len);
		return;
	}

	/* Meta-data, read once per process: they do not change while the
	 * instance runs, and IMDS is rate limited. */
	if (r->status == 200) {
		v = imds_value(r->body, r->body_len);
		if (!v || strlen(v) > IMDS_VALUE_MAX) {
			free(v);
			poller_fail(p, true, "GET %s: malformed value", url);
			return;
		}
		if (p->step == IMDS_INSTANCE_ID) {
			free(s->instance_id);
			s->instance_id = v;
			p->meta_id_done = true;
		} else {
			free(s->region);
			s->region = v;
			p->meta_region_done = true;
		}
	} else if (r->status == 404) {
		log_warn("imds: GET %s: HTTP 404, going on without it", url);
		if (p->step == IMDS_INSTANCE_ID)
			p->meta_id_done = true;
		else
			p->meta_region_done = true;
	} else {
		poller_fail(p, true, "GET %s: HTTP %ld", url, r->status);
		return;
	}
	p->retried = false;
	imds_next(p);
}

static int imds_source_start(struct source *s)
{
	const char *endpoint = s->config && s->config->imds_endpoint ? s->config->imds_endpoint : IMDS_DEFAULT_ENDPOINT;
	struct poller *p;
	size_t n;
	int r;

	if (!s->http)
		return -EINVAL;
	r = poller_start(s, imds_fetch, &p);
	if (r < 0)
		return r;
	n = strlen(endpoint);
	while (n > 0 && endpoint[n - 1] == '/')
		n--;
	p->base = xstrndup(endpoint, n);
	return 0;
}

const struct source_ops source_imds_ops = {
	.scheme = "imds",
	.start = imds_source_start,
	.reload = poller_reload,
	.stop = poller_stop,
	.free_data = poller_free_data,
};

/* SPDX-License-Identifier: BSD-2-Clause */
/* Polled stack sources on top of http.c:
 *
 * - http:// and https://: a conditional GET (If-None-Match/If-Modified-Since
 *   from the last 200) every poll_interval seconds with jitter; 304 is a
 *   successful fetch with nothing new, and ends an error of fetching. The
 *   validators come from the server and go back to it, so they are only kept
 *   when short and well-formed (http.c checks), and forgotten after any 4xx
 *   (the server may be refusing them) and on reload (a reload starts from
 *   scratch). A 304 to a request that carried none has nothing to refer to:
 *   it is an error, and the next GET is unconditional again.
 * - imds: EC2 IMDSv2 (reference/protocols.md): a session token from
 *   PUT /latest/api/token, cached for the TTL the answer grants (1..21600 s,
 *   else the TTL asked for) and renewed a minute (at most half the TTL)
 *   before it expires; the token and meta-data are short and plain (they
 *   are sent back in a header or shown in status);
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
#include "io/http.h"
#include "log.h"
#include "source.h"
#include "stack/stack.h"
#include "util.h"

#define IMDS_DEFAULT_ENDPOINT "http://169.254.169.254"
#define IMDS_TOKEN_TTL_SEC 21600 /* the maximum; what cloud-init and the SDKs ask for */
#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)
#define IMDS_TOKEN_REFRESH_USEC (60 * INT64_C(1000000)) /* renew this long before expiry */
#define IMDS_TOKEN_TIMEOUT_MS 2000
#define IMDS_GET_TIMEOUT_MS 5000
#define IMDS_VALUE_MAX 255 /* instance id, region */
#define IMDS_TOKEN_MAX 1024 /* real tokens are about 60 bytes; it goes back in a header */
#define IMDS_SMALL_BODY_MAX 4096 /* token and meta-data answers */
#define IMDS_TTL_HEADER "X-aws-ec2-metadata-token-ttl-seconds"

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
	bool reloaded;             /* reload asked: the next fetch starts from scratch */
	bool stopped;
	bool timer_closed;
	bool free_pending;         /* free_data ran before the timer's close callback */
	char *shown_url;           /* owned: s->url without credentials */

	/* http */
	char *etag;                /* owned, from the last 200 */
	char *last_modified;       /* owned, from the last 200 */
	bool conditional;          /* the request in flight carried a validator */

	/* imds */
	char *base;                /* owned: endpoint without trailing slash */
	char *token;               /* owned, NULL when none or dropped */
	int64_t token_expiry_usec; /* monotonic */
	int64_t token_renew_usec;  /* monotonic: ask for a new one from then on */
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
	p->reloaded = true;
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

static void http_forget_validators(struct poller *p)
{
	free(p->etag);
	free(p->last_modified);
	p->etag = p->last_modified = NULL;
}

static void http_source_done(void *userdata, const struct http_response *r)
{
	struct poller *p = userdata;

	p->req = NULL;
	if (r->error) {
		poller_fail(p, true, "GET %s", r->error);
		return;
	}
	if (r->status == 304 && !p->conditional) {
		/* We sent no validator (first fetch, after a reload or a 4xx):
		 * there is no document this answer could refer to, and keeping
		 * quiet would leave no stack and no error. */
		http_forget_validators(p);
		poller_fail(p, true,
			    "GET %s: HTTP 304 Not Modified to a request without If-None-Match or "
			    "If-Modified-Since (no document to keep); asking again",
			    p->shown_url);
		return;
	}
	if (r->status == 304) {
		p->s->last_fetch_usec = time_now_usec();
		p->failures = 0;
		poller_rest(p);
		/* The document we delivered last is current: an error of
		 * fetching is over. If the engine lost track of how that
		 * document fared, it gets the bytes again. */
		if (!source_unchanged(p->s) && !p->stopped) {
			http_forget_validators(p);
			if (!p->busy)
				(void)uv_timer_start(&p->timer, on_poll_timer, 0, 0);
		}
		return;
	}
	if (r->status >= 400 && r->status < 500)
		/* The server may be refusing what we sent back (431, 400, 412):
		 * the next request is unconditional. */
		http_forget_validators(p);
	if (r->status != 200) {
		poller_fail(p, true, "GET %s: HTTP %ld", p->shown_url, r->status);
		return;
	}
	/* Validators belong to the document last delivered: a 200 without
	 * them (or with ones http.c found unfit to send back) means the next
	 * GET is unconditional. */
	http_forget_validators(p);
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
	};
	int r;

	if (p->reloaded) {
		/* An operator's reload starts from scratch: the whole document,
		 * whatever the validators we hold. */
		p->reloaded = false;
		http_forget_validators(p);
	}
	o.if_none_match = p->etag;
	o.if_modified_since = p->last_modified;
	p->conditional = p->etag || p->last_modified;
	r = http_request_start(p->s->http, &o, http_source_done, p, &p->req);
	if (r < 0) {
		p->req = NULL;
		/* Whatever in them was refused, the next attempt goes without. */
		http_forget_validators(p);
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

static bool imds_token_char(char c)
{
	return c > ' ' && c <= '~';
}

/* Instance ids and region names: letters, digits, '-', '_', '.'. */
static bool imds_meta_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
	       c == '.';
}

/* A token or a meta-data value: the body without trailing blanks, 1..max
 * bytes, each one accepted by ok; else NULL. */
static char *imds_value(const char *body, size_t len, size_t max, bool (*ok)(char c))
{
	if (!body)
		return NULL;
	while (len > 0 && (body[len - 1] == '\n' || body[len - 1] == '\r' || body[len - 1] == ' '))
		len--;
	if (len == 0 || len > max)
		return NULL;
	for (size_t i = 0; i < len; i++)
		if (!ok(body[i]))
			return NULL;
	return xstrndup(body, len);
}

static void imds_done(void *userdata, const struct http_response *r);

/* Sets the new token's expiry from the TTL IMDS granted (granted: the value
 * of its TTL header, may be NULL). A granted TTL outside 1..21600 s, or
 * none, counts as the one asked for: a token that expires sooner only costs
 * a 401 and a new token. */
static void imds_token_times(struct poller *p, const char *granted, const char *url)
{
	int64_t now = time_monotonic_usec(), ttl_usec, margin;
	long ttl = IMDS_TOKEN_TTL_SEC;

	if (granted && parse_long(granted, 1, IMDS_TOKEN_TTL_SEC, &ttl) < 0) {
		log_warn("imds: PUT %s: the answer grants a token TTL of \"%.32s\" s, not in 1..%d; assuming %d",
			 url, granted, IMDS_TOKEN_TTL_SEC, IMDS_TOKEN_TTL_SEC);
		ttl = IMDS_TOKEN_TTL_SEC;
	}
	ttl_usec = (int64_t)ttl * 1000000;
	margin = ttl_usec / 2 < IMDS_TOKEN_REFRESH_USEC ? ttl_usec / 2 : IMDS_TOKEN_REFRESH_USEC;
	p->token_expiry_usec = now + ttl_usec;
	p->token_renew_usec = p->token_expiry_usec - margin;
}

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

	if (!p->token || now >= p->token_renew_usec) {
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
		o.max_body = IMDS_SMALL_BODY_MAX;
		o.capture_header = IMDS_TTL_HEADER;
	} else {
		token_header = xasprintf("X-aws-ec2-metadata-token: %s", p->token);
		get_headers[0] = token_header;
		o.method = "GET";
		o.headers = get_headers;
		o.timeout_ms = request_timeout_ms(p, IMDS_GET_TIMEOUT_MS);
		if (p->step != IMDS_USER_DATA)
			o.max_body = IMDS_SMALL_BODY_MAX;
	}

	r = http_request_start(p->s->http, &o, imds_done, p, &p->req);
	if (r < 0) {
		p->req = NULL;
		poller_fail(p, true, "%s %s: %s", o.method, url, strerror(-r));
	}
}

static void imds_fetch(struct poller *p)
{
	p->reloaded = false; /* nothing is conditional here */
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
		v = imds_value(r->body, r->body_len, IMDS_TOKEN_MAX, imds_token_char);
		if (!v) {
			poller_fail(p, true,
				    "PUT %s: the token in the answer is empty, longer than %d bytes or not printable ASCII",
				    url, IMDS_TOKEN_MAX);
			return;
		}
		free(p->token);
		p->token = v;
		imds_token_times(p, r->captured, url);
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
		v = imds_value(r->body, r->body_len, IMDS_VALUE_MAX, imds_meta_char);
		if (!v) {
			poller_fail(p, true,
				    "GET %s: malformed value (empty, longer than %d bytes, or not letters, digits, "
				    "'-', '_', '.')",
				    url, IMDS_VALUE_MAX);
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

static void imds_status(struct source *s, json_t *o)
{
	if (s->instance_id)
		json_object_set_new(o, "instance_id", json_string(s->instance_id));
	if (s->region)
		json_object_set_new(o, "region", json_string(s->region));
}

const struct source_ops source_imds_ops = {
	.scheme = "imds",
	.status = imds_status,
	.start = imds_source_start,
	.reload = poller_reload,
	.stop = poller_stop,
	.free_data = poller_free_data,
};

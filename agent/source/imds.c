/* SPDX-License-Identifier: BSD-2-Clause */
/* imds: — the stack in EC2's user-data, polled (poller.c) through IMDSv2
 * (reference/protocols.md): a session token from PUT /latest/api/token,
 * cached for the TTL the answer grants (1..21600 s, else the TTL asked for)
 * and renewed a minute (at most half the TTL) before it expires; the token and
 * meta-data are short and plain (they are sent back in a header or shown in
 * status); instance id and region read once per process; then
 * GET /latest/user-data on every poll. 401 drops the token and retries that
 * GET once with a new one; 403 means IMDS is disabled, so polling stops until
 * a reload instead of spinning; 404 on user-data is reported and polled again
 * at the normal interval. Gzipped user-data is decompressed (imds_deliver). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "io/http.h"
#include "log.h"
#include "poller.h"
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

struct imds_source {
	struct poller p;           /* first: s->data points here */
	char *base;                /* owned: endpoint without trailing slash */
	char *token;               /* owned, NULL when none or dropped */
	int64_t token_expiry_usec; /* monotonic */
	int64_t token_renew_usec;  /* monotonic: ask for a new one from then on */
	enum imds_step step;       /* of the request in flight */
	bool retried;              /* the current GET already got a fresh token after a 401 */
	bool meta_id_done, meta_region_done;
	/* Read by status. */
	char *instance_id;         /* owned, may be NULL */
	char *region;              /* owned, may be NULL */
};

static void imds_source_free(struct poller *p)
{
	struct imds_source *m = (struct imds_source *)p;

	free(m->base);
	free(m->token);
	free(m->instance_id);
	free(m->region);
	free(m);
}

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
static void imds_token_times(struct imds_source *m, const char *granted, const char *url)
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
	m->token_expiry_usec = now + ttl_usec;
	m->token_renew_usec = m->token_expiry_usec - margin;
}

static void imds_next(struct imds_source *m)
{
	static const char *ttl_header[] = { "X-aws-ec2-metadata-token-ttl-seconds: " STRINGIFY(IMDS_TOKEN_TTL_SEC), NULL };
	_cleanup_free_ char *url = NULL, *token_header = NULL;
	const char *get_headers[2] = { NULL, NULL };
	/* A proxy from the environment would add X-Forwarded-For, which
	 * IMDS refuses, and the link-local address is never behind one. */
	struct http_options o = { .max_body = STACK_MAX_BYTES, .no_proxy = true, .decode_content = true };
	int64_t now = time_monotonic_usec();
	int r;

	if (!m->token || now >= m->token_renew_usec) {
		free(m->token);
		m->token = NULL;
		m->step = IMDS_TOKEN;
	} else if (!m->meta_id_done)
		m->step = IMDS_INSTANCE_ID;
	else if (!m->meta_region_done)
		m->step = IMDS_REGION;
	else
		m->step = IMDS_USER_DATA;

	url = xasprintf("%s%s", m->base, imds_path(m->step));
	o.url = url;
	if (m->step == IMDS_TOKEN) {
		o.method = "PUT";
		o.headers = ttl_header;
		o.timeout_ms = IMDS_TOKEN_TIMEOUT_MS;
		o.max_body = IMDS_SMALL_BODY_MAX;
		o.capture_header = IMDS_TTL_HEADER;
	} else {
		token_header = xasprintf("X-aws-ec2-metadata-token: %s", m->token);
		get_headers[0] = token_header;
		o.method = "GET";
		o.headers = get_headers;
		o.timeout_ms = poller_request_timeout_ms(&m->p, IMDS_GET_TIMEOUT_MS);
		if (m->step != IMDS_USER_DATA)
			o.max_body = IMDS_SMALL_BODY_MAX;
	}

	r = http_request_start(m->p.s->http, &o, imds_done, m, &m->p.req);
	if (r < 0) {
		m->p.req = NULL;
		poller_fail(&m->p, true, "%s %s: %s", o.method, url, strerror(-r));
	}
}

static void imds_fetch(struct poller *p)
{
	struct imds_source *m = (struct imds_source *)p;

	m->p.reloaded = false; /* nothing is conditional here */
	m->retried = false;
	imds_next(m);
}

/* User-data gzipped to fit EC2's 16 KiB limit comes without
 * Content-Encoding (IMDS serves the bytes as they were given): it is known
 * by gzip's magic and decompressed with the stack's cap. */
static void imds_deliver(struct imds_source *m, const char *url, const struct http_response *r)
{
	_cleanup_free_ char *what = xasprintf("GET %s", url), *error = NULL, *doc = NULL;
	size_t doc_len = 0;

	if (source_gunzip(what, r->body, r->body_len, &doc, &doc_len, &error) < 0) {
		poller_fail(&m->p, true, "%s", error);
		return;
	}
	if (doc)
		poller_succeed(&m->p, doc, doc_len);
	else
		poller_succeed(&m->p, r->body, r->body_len);
}

static void imds_done(void *userdata, const struct http_response *r)
{
	struct imds_source *m = userdata;
	const char *method = m->step == IMDS_TOKEN ? "PUT" : "GET";
	_cleanup_free_ char *url = xasprintf("%s%s", m->base, imds_path(m->step));
	char *v;

	m->p.req = NULL;
	if (r->error) {
		poller_fail(&m->p, true, "%s %s", method, r->error);
		return;
	}
	if (r->status == 403) {
		/* HttpEndpoint=disabled (or a PUT that looked forwarded): asking
		 * again will not help, and cloud-init learned that spinning here
		 * only delays boot. */
		m->p.halted = true;
		poller_fail(&m->p, true,
			    "IMDS at %s answered 403 to %s %s: instance metadata is disabled "
			    "(enable it with modify-instance-metadata-options --http-endpoint enabled); "
			    "not polling again until reload",
			    m->base, method, imds_path(m->step));
		return;
	}

	switch (m->step) {
	case IMDS_TOKEN:
		if (r->status != 200) {
			poller_fail(&m->p, true, "PUT %s: HTTP %ld", url, r->status);
			return;
		}
		v = imds_value(r->body, r->body_len, IMDS_TOKEN_MAX, imds_token_char);
		if (!v) {
			poller_fail(&m->p, true,
				    "PUT %s: the token in the answer is empty, longer than %d bytes or not printable ASCII",
				    url, IMDS_TOKEN_MAX);
			return;
		}
		free(m->token);
		m->token = v;
		imds_token_times(m, r->captured, url);
		imds_next(m);
		return;

	case IMDS_INSTANCE_ID:
	case IMDS_REGION:
	case IMDS_USER_DATA:
		if (r->status == 401) {
			free(m->token);
			m->token = NULL;
			if (!m->retried) {
				m->retried = true;
				imds_next(m);
				return;
			}
			poller_fail(&m->p, true, "GET %s: HTTP 401 even with a new token", url);
			return;
		}
		break;
	}

	if (m->step == IMDS_USER_DATA) {
		if (r->status == 404) {
			/* Not a fault of IMDS: the instance was launched without
			 * user-data. Keep the normal interval so it is picked up
			 * once someone adds it (stop/start). */
			poller_fail(&m->p, false, "GET %s: no user-data (HTTP 404)", url);
			return;
		}
		if (r->status != 200) {
			poller_fail(&m->p, true, "GET %s: HTTP %ld", url, r->status);
			return;
		}
		m->retried = false;
		imds_deliver(m, url, r);
		return;
	}

	/* Meta-data, read once per process: they do not change while the
	 * instance runs, and IMDS is rate limited. */
	if (r->status == 200) {
		v = imds_value(r->body, r->body_len, IMDS_VALUE_MAX, imds_meta_char);
		if (!v) {
			poller_fail(&m->p, true,
				    "GET %s: malformed value (empty, longer than %d bytes, or not letters, digits, "
				    "'-', '_', '.')",
				    url, IMDS_VALUE_MAX);
			return;
		}
		if (m->step == IMDS_INSTANCE_ID) {
			free(m->instance_id);
			m->instance_id = v;
			m->meta_id_done = true;
		} else {
			free(m->region);
			m->region = v;
			m->meta_region_done = true;
		}
	} else if (r->status == 404) {
		log_warn("imds: GET %s: HTTP 404, going on without it", url);
		if (m->step == IMDS_INSTANCE_ID)
			m->meta_id_done = true;
		else
			m->meta_region_done = true;
	} else {
		poller_fail(&m->p, true, "GET %s: HTTP %ld", url, r->status);
		return;
	}
	m->retried = false;
	imds_next(m);
}

static int imds_source_start(struct source *s)
{
	const char *endpoint = s->config && s->config->imds_endpoint ? s->config->imds_endpoint : IMDS_DEFAULT_ENDPOINT;
	struct imds_source *m;
	size_t n = strlen(endpoint);

	if (!s->http)
		return -EINVAL;
	m = xcalloc(1, sizeof(*m));
	while (n > 0 && endpoint[n - 1] == '/')
		n--;
	m->base = xstrndup(endpoint, n);
	return poller_start(s, &m->p, imds_fetch, imds_source_free);
}

/* The instance id and region, once read. */
static void imds_status(struct source *s, json_t *o)
{
	const struct imds_source *m = s->data;

	if (m && m->instance_id)
		json_object_set_new(o, "instance_id", json_string(m->instance_id));
	if (m && m->region)
		json_object_set_new(o, "region", json_string(m->region));
}

const struct source_ops source_imds_ops = {
	.scheme = "imds",
	.status = imds_status,
	.start = imds_source_start,
	.reload = poller_reload,
	.stop = poller_stop,
	.free_data = poller_free_data,
};

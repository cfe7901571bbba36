/* SPDX-License-Identifier: BSD-2-Clause */
/* Role credentials and region from IMDSv2 for EC2 calls (ec2.h): a token
 * PUT (X-aws-ec2-metadata-token-ttl-seconds, reference/protocols.md), then
 * GET meta-data/iam/security-credentials/ (the role's name, its first line),
 * GET .../<role> (the credentials) and meta-data/placement/region, each with
 * the token. The answers are cached for the process: the region for good,
 * the credentials until 5 minutes before their Expiration (AWS publishes new
 * ones at least 5 minutes before). The source imds: (source/imds.c) polls
 * user-data with its own token; both are short-lived IMDS clients on the
 * loop's one struct http. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ec2.h"
#include "io/http.h"
#include "util.h"

#define IMDS_TTL_SEC 300          /* the token is used for a few requests */
#define IMDS_TIMEOUT_MS 5000
#define IMDS_SMALL_MAX 65536      /* credentials documents are about 1.3 KiB */
#define CREDS_REFRESH_SEC 300     /* fetch again this long before Expiration */

enum imds_phase { PH_TOKEN, PH_ROLE, PH_CREDS, PH_REGION };

static struct {
	char *base;               /* owned: the IMDS the cache is from */
	struct ec2_creds creds;
	char *region;
} cache;

struct ec2_imds {
	uv_loop_t *loop;
	struct http *http;
	char *base;               /* owned, no trailing '/' */
	bool want_creds, want_region;
	ec2_imds_cb cb;
	void *userdata;
	enum imds_phase phase;
	char *token;              /* owned */
	char *role;               /* owned */
	bool creds_done;          /* fetched by this request: used even when they expire soon */
	struct http_request *req;
	uv_timer_t *timer;        /* owned until closed: starts from the loop */
};

void ec2_imds_forget(void)
{
	free(cache.base);
	ec2_creds_clear(&cache.creds);
	free(cache.region);
	cache.base = NULL;
	cache.region = NULL;
}

static void on_timer_closed(uv_handle_t *h)
{
	free(h);
}

static void imds_free(struct ec2_imds *m)
{
	if (m->req)
		http_request_cancel(m->req);
	if (m->timer) {
		uv_timer_stop(m->timer);
		uv_close((uv_handle_t *)m->timer, on_timer_closed);
	}
	free(m->base);
	if (m->token)
		explicit_bzero(m->token, strlen(m->token));
	free(m->token);
	free(m->role);
	free(m);
}

void ec2_imds_cancel(struct ec2_imds *m)
{
	if (m)
		imds_free(m);
}

static bool cache_for(const char *base)
{
	return cache.base && strcmp(cache.base, base) == 0;
}

static bool creds_fresh(void)
{
	return cache.creds.key &&
	       (cache.creds.expiration == 0 || cache.creds.expiration - CREDS_REFRESH_SEC > time_now_usec() / 1000000);
}

static void imds_finish(struct ec2_imds *m, int r, const char *error)
{
	struct ec2_imds_result res = { .r = r, .error = error };

	if (r == 0) {
		res.creds = m->want_creds ? &cache.creds : NULL;
		res.region = m->want_region ? cache.region : NULL;
	}
	m->cb(m->userdata, &res);
	imds_free(m);
}

static void imds_next(struct ec2_imds *m);

/* The body without trailing blanks: its first line, 1..255 bytes of
 * [A-Za-z0-9+=,.@_-] (IAM role names; region names are a subset). */
static char *imds_word(const struct http_response *r)
{
	size_t n = 0;

	if (!r->body)
		return NULL;
	while (n < r->body_len && r->body[n] != '\n' && r->body[n] != '\r')
		n++;
	if (n == 0 || n > 255)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		char c = r->body[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || strchr("+=,.@_-", c)))
			return NULL;
	}
	return xstrndup(r->body, n);
}

static void on_http_done(void *userdata, const struct http_response *r)
{
	struct ec2_imds *m = userdata;
	_cleanup_free_ char *error = NULL;
	char *v = NULL;

	m->req = NULL;
	if (r->error) {
		error = xasprintf("IMDS: %s", r->error);
		return imds_finish(m, -EIO, error);
	}
	if (r->status != 200) {
		static const char *what[] = { "token PUT", "role name", "role credentials", "region" };
		error = xasprintf("IMDS at %s: HTTP %ld to the %s request%s", m->base, r->status, what[m->phase],
				  r->status == 404 && m->phase == PH_ROLE ? " (no IAM role on this instance, and no "
									    "ebs_snapshots.aws_key in the stack)"
									  : "");
		return imds_finish(m, -EIO, error);
	}
	switch (m->phase) {
	case PH_TOKEN:
		if (!r->body || r->body_len == 0 || r->body_len > 1024 || memchr(r->body, '\n', r->body_len))
			return imds_finish(m, -EBADMSG, "IMDS: the token in the answer is empty or malformed");
		m->token = xstrndup(r->body, r->body_len);
		break;
	case PH_ROLE:
		if (!(v = imds_word(r)))
			return imds_finish(m, -EBADMSG, "IMDS: the role name in the answer is malformed");
		m->role = v;
		break;
	case PH_CREDS: {
		struct ec2_creds c;
		if (ec2_parse_role_creds(r->body, r->body_len, &c, &error) < 0) {
			_cleanup_free_ char *msg = xasprintf("IMDS role %s: %s", m->role, error);
			return imds_finish(m, -EBADMSG, msg);
		}
		ec2_creds_clear(&cache.creds);
		cache.creds = c;
		m->creds_done = true;
		break;
	}
	case PH_REGION:
		if (!(v = imds_word(r)))
			return imds_finish(m, -EBADMSG, "IMDS: the region in the answer is malformed");
		free(cache.region);
		cache.region = v;
		break;
	}
	imds_next(m);
}

static void imds_next(struct ec2_imds *m)
{
	static const char *ttl_header[] = { "X-aws-ec2-metadata-token-ttl-seconds: 300", NULL };
	_cleanup_free_ char *url = NULL, *token_header = NULL;
	const char *headers[2] = { NULL, NULL };
	/* Never through a proxy: it would add X-Forwarded-For, which IMDS refuses. */
	struct http_options o = { .method = "GET", .timeout_ms = IMDS_TIMEOUT_MS, .max_body = IMDS_SMALL_MAX,
				  .no_proxy = true };
	int r;

	bool need_creds = m->want_creds && !m->creds_done && !creds_fresh();

	if (!m->token)
		m->phase = PH_TOKEN;
	else if (need_creds && !m->role)
		m->phase = PH_ROLE;
	else if (need_creds)
		m->phase = PH_CREDS;
	else if (m->want_region && !cache.region)
		m->phase = PH_REGION;
	else
		return imds_finish(m, 0, NULL);

	switch (m->phase) {
	case PH_TOKEN:
		url = xasprintf("%s/latest/api/token", m->base);
		o.method = "PUT";
		o.headers = ttl_header;
		break;
	case PH_ROLE:
		url = xasprintf("%s/latest/meta-data/iam/security-credentials/", m->base);
		break;
	case PH_CREDS:
		url = xasprintf("%s/latest/meta-data/iam/security-credentials/%s", m->base, m->role);
		break;
	case PH_REGION:
		url = xasprintf("%s/latest/meta-data/placement/region", m->base);
		break;
	}
	if (m->phase != PH_TOKEN) {
		token_header = xasprintf("X-aws-ec2-metadata-token: %s", m->token);
		headers[0] = token_header;
		o.headers = headers;
	}
	o.url = url;
	r = http_request_start(m->http, &o, on_http_done, m, &m->req);
	if (r < 0) {
		_cleanup_free_ char *error = xasprintf("IMDS: cannot request %s: %s", url, strerror(-r));
		m->req = NULL;
		imds_finish(m, r, error);
	}
}

static void on_start(uv_timer_t *t)
{
	struct ec2_imds *m = t->data;

	/* A cache of another IMDS (tests change it) is no answer. */
	if (!cache_for(m->base)) {
		ec2_imds_forget();
		cache.base = xstrdup(m->base);
	}
	if ((!m->want_creds || creds_fresh()) && (!m->want_region || cache.region))
		return imds_finish(m, 0, NULL);
	imds_next(m);
}

int ec2_imds_fetch(uv_loop_t *loop, struct http *http, const char *base, bool want_creds, bool want_region,
		   ec2_imds_cb cb, void *userdata, struct ec2_imds **ret)
{
	struct ec2_imds *m;
	size_t n;

	if (!loop || !http || !base || !cb)
		return -EINVAL;
	m = xcalloc(1, sizeof(*m));
	n = strlen(base);
	while (n > 0 && base[n - 1] == '/')
		n--;
	m->loop = loop;
	m->http = http;
	m->base = xstrndup(base, n);
	m->want_creds = want_creds;
	m->want_region = want_region;
	m->cb = cb;
	m->userdata = userdata;
	m->timer = xcalloc(1, sizeof(*m->timer));
	(void)uv_timer_init(loop, m->timer);
	m->timer->data = m;
	(void)uv_timer_start(m->timer, on_start, 0, 0);
	if (ret)
		*ret = m;
	return 0;
}

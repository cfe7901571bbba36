/* SPDX-License-Identifier: BSD-2-Clause */
/* http:// and https:// — the stack polled from a web server (poller.c), one
 * conditional GET (If-None-Match/If-Modified-Since from the last 200) every
 * poll_interval seconds with jitter. 304 is a successful fetch with nothing
 * new, and ends an error of fetching. The validators come from the server and
 * go back to it, so they are only kept when short and well-formed (io/http.c
 * checks), and forgotten after any 4xx (the server may be refusing them) and
 * on reload (a reload starts from scratch). A 304 to a request that carried
 * none has nothing to refer to: it is an error, and the next GET is
 * unconditional again. A compressed document is accepted either way a server
 * sends one (design.md §4): with Content-Encoding (libcurl decodes it) or as
 * a body that is itself gzip data (source_gunzip), both capped at
 * STACK_MAX_BYTES decompressed. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "io/http.h"
#include "poller.h"
#include "source.h"
#include "stack/stack.h"
#include "util.h"

#define HTTP_SOURCE_TIMEOUT_MS 30000

struct http_source {
	struct poller p;           /* first: s->data points here */
	char *etag;                /* owned, from the last 200 */
	char *last_modified;       /* owned, from the last 200 */
	bool conditional;          /* the request in flight carried a validator */
};

static void http_forget_validators(struct http_source *h)
{
	free(h->etag);
	free(h->last_modified);
	h->etag = h->last_modified = NULL;
}

static void http_source_free(struct poller *p)
{
	struct http_source *h = (struct http_source *)p;

	http_forget_validators(h);
	free(h);
}

/* A 304: the document we delivered last is current, and an error of fetching
 * is over. If the engine lost track of how that document fared, it gets the
 * bytes again. */
static void http_source_unchanged(struct http_source *h)
{
	struct poller *p = &h->p;

	p->s->last_fetch_usec = time_now_usec();
	p->failures = 0;
	poller_rest(p);
	if (!source_unchanged(p->s) && !p->stopped) {
		http_forget_validators(h);
		poller_kick(p);
	}
}

static void http_source_done(void *userdata, const struct http_response *r)
{
	struct http_source *h = userdata;
	struct poller *p = &h->p;

	p->req = NULL;
	if (r->error) {
		poller_fail(p, true, "GET %s", r->error);
		return;
	}
	if (r->status == 304 && !h->conditional) {
		/* We sent no validator (first fetch, after a reload or a 4xx):
		 * there is no document this answer could refer to, and keeping
		 * quiet would leave no stack and no error. */
		http_forget_validators(h);
		poller_fail(p, true,
			    "GET %s: HTTP 304 Not Modified to a request without If-None-Match or "
			    "If-Modified-Since (no document to keep); asking again",
			    p->shown_url);
		return;
	}
	if (r->status == 304) {
		http_source_unchanged(h);
		return;
	}
	if (r->status >= 400 && r->status < 500)
		/* The server may be refusing what we sent back (431, 400, 412):
		 * the next request is unconditional. */
		http_forget_validators(h);
	if (r->status != 200) {
		poller_fail(p, true, "GET %s: HTTP %ld", p->shown_url, r->status);
		return;
	}
	/* A body that is itself gzip data (a .json.gz served as
	 * application/octet-stream) is decompressed here, before its
	 * validators are kept: a bomb or broken gzip is a failed fetch, and the
	 * next GET asks for the whole document again rather than a 304 that
	 * would confirm it. */
	_cleanup_free_ char *what = xasprintf("GET %s", p->shown_url), *error = NULL, *doc = NULL;
	size_t doc_len = 0;
	if (source_gunzip(what, r->body, r->body_len, &doc, &doc_len, &error) < 0) {
		http_forget_validators(h);
		poller_fail(p, true, "%s", error);
		return;
	}
	/* Validators belong to the document last delivered: a 200 without
	 * them (or with ones io/http.c found unfit to send back) means the
	 * next GET is unconditional. */
	http_forget_validators(h);
	h->etag = r->etag ? xstrdup(r->etag) : NULL;
	h->last_modified = r->last_modified ? xstrdup(r->last_modified) : NULL;
	if (doc)
		poller_succeed(p, doc, doc_len);
	else
		poller_succeed(p, r->body, r->body_len);
}

static void http_source_fetch(struct poller *p)
{
	struct http_source *h = (struct http_source *)p;
	struct http_options o = {
		.method = "GET",
		.url = p->s->url,
		.timeout_ms = poller_request_timeout_ms(p, HTTP_SOURCE_TIMEOUT_MS),
		.max_body = STACK_MAX_BYTES,
		/* Content-Encoding (gzip, and what else libcurl decodes) is
		 * undone by libcurl; the cap counts decoded bytes. */
		.decode_content = true,
	};
	int r;

	if (p->reloaded) {
		/* An operator's reload starts from scratch: the whole document,
		 * whatever the validators we hold. */
		p->reloaded = false;
		http_forget_validators(h);
	}
	o.if_none_match = h->etag;
	o.if_modified_since = h->last_modified;
	h->conditional = h->etag || h->last_modified;
	r = http_request_start(p->s->http, &o, http_source_done, h, &p->req);
	if (r < 0) {
		p->req = NULL;
		/* Whatever in them was refused, the next attempt goes without. */
		http_forget_validators(h);
		poller_fail(p, true, "GET %s: %s", p->shown_url, strerror(-r));
	}
}

static int http_source_start(struct source *s)
{
	struct http_source *h;

	if (!s->http || !s->url)
		return -EINVAL;
	h = xcalloc(1, sizeof(*h));
	return poller_start(s, &h->p, http_source_fetch, http_source_free);
}

const struct source_ops source_http_ops = {
	.scheme = "http",
	.start = http_source_start,
	.reload = poller_reload,
	.stop = poller_stop,
	.free_data = poller_free_data,
};

/* SPDX-License-Identifier: BSD-2-Clause */
/* HTTP client: libcurl's multi interface driven by libuv (one uv_poll per
 * socket libcurl announces, one uv_timer for its timeout). One struct http
 * per loop, made by the engine and lent to the http, imds and (later)
 * etcd sources and to the fetch, release and service steps. A response body
 * is collected whole (the default), written to a file (output_path) or
 * streamed to a callback as it arrives (on_body: an etcd watch). */
#pragma once

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

struct http;          /* one per loop */
struct http_request;  /* one transfer */

/* http_options.timeout_ms: no deadline for the whole transfer (a watch
 * stream that stays open for as long as the server keeps it). The connect
 * timeout still applies, and TCP keep-alive probes find a peer that went
 * away silently. */
#define HTTP_NO_DEADLINE LONG_MAX

/* A chunk of a streamed response body (see http_options.on_body), as it
 * arrives: data[0..len) is not NUL-terminated and valid only during the call;
 * status is the response's HTTP status. Returns 0 to go on, or a negative
 * errno to stop the transfer, which then ends with an error that names it.
 * It runs inside libcurl: it must not call http_request_cancel or http_free
 * (returning an error is the way to stop), and http_request_start fails
 * there (-EIO: libcurl's CURLM_RECURSIVE_API_CALL), so queue what it
 * finds and act on it from the loop (fleet/etcd.c's watch does). */
typedef int (*http_body_cb)(void *userdata, long status, const char *data, size_t len);

struct http_options {
	const char *method;            /* "GET" (default), "PUT", "POST" */
	const char *url;
	const char *const *headers;    /* "Name: value", NULL-terminated, may be NULL */
	const char *body;              /* request body, may be NULL; copied */
	size_t body_len;
	long timeout_ms;               /* whole transfer; 0: 30000; HTTP_NO_DEADLINE: none */
	long connect_timeout_ms;       /* 0: 10000 */
	size_t max_body;               /* response body cap; 0: 16 MiB, or none when streamed (on_body).
	                                * Over it: failed, error says so */
	const char *unix_socket;       /* connect through this unix socket (supervisord), may be NULL */
	const char *userpwd;           /* "user:password" for basic auth, may be NULL */
	/* AWS Signature Version 4 by libcurl (CURLOPT_AWS_SIGV4), may be NULL:
	 * the provider string "aws:amz:<region>:<service>", with the access key
	 * and secret (both then required). libcurl 7.88.1 signs the raw query
	 * string unsorted: send a form-encoded POST without a query string
	 * (reference/protocols.md, io/ec2.c). It signs every header of
	 * `headers` (X-Amz-Security-Token goes there). */
	const char *aws_sigv4;
	const char *aws_key;
	const char *aws_secret;
	const char *if_none_match;     /* ETag for a conditional GET, may be NULL */
	const char *if_modified_since; /* Last-Modified value, may be NULL */
	bool no_proxy;                 /* ignore http_proxy and friends from the environment (IMDS must
	                                * never go through a proxy: it would add X-Forwarded-For) */
	const char *output_path;       /* stream the body into this file (O_TRUNC, 0600) instead of memory, may be NULL;
	                                * on failure it holds what arrived */
	const char *capture_header;    /* a response header name whose value to return in http_response.captured, may be NULL */
	http_body_cb on_body;          /* stream the body to this callback (with the done callback's userdata) as
	                                * it arrives instead of collecting it, may be NULL; not with output_path */
	bool decode_content;           /* send "Accept-Encoding: gzip" and undo the Content-Encoding of the answer
	                                * (any libcurl decodes: gzip, deflate, br, zstd): the body, the
	                                * files and on_body get the decoded bytes, and max_body caps those (a
	                                * gzip bomb fails as "larger than", naming the encoding). Off, the bytes
	                                * are kept as sent: an archive's checksum is over what the server has */
	/* TLS (https:// only; etcd+https:// with a client certificate). The peer is always verified. */
	const char *ca_file;           /* PEM CA bundle the peer is verified against instead of the system's, may be NULL */
	const char *client_cert;       /* PEM client certificate, may be NULL */
	const char *client_key;        /* PEM private key of client_cert (NULL: in client_cert's file) */
};

/* Longest ETag or Last-Modified value a response reports or a request sends
 * back, in bytes. */
#define HTTP_VALIDATOR_MAX 1024

struct http_response {
	long status;                   /* HTTP status, 0 when no response */
	int curl_code;                 /* CURLcode, 0 on transport success */
	char *error;                   /* owned: "<url>: <cause>" (credentials in the URL hidden), NULL when curl_code == 0 */
	char *body;                    /* owned: NUL-terminated, NULL when output_path or on_body was used */
	size_t body_len;
	/* Validators, only when safe to send back: at most HTTP_VALIDATOR_MAX
	 * bytes, no control characters, an ETag shaped as one (RFC 9110, or a
	 * bare token), a Last-Modified that parses as an HTTP date. Otherwise
	 * NULL, and the response is still good. */
	char *etag;                    /* owned, may be NULL */
	char *last_modified;           /* owned, may be NULL */
	char *captured;                /* owned: value of http_options.capture_header (no control characters), may be NULL */
	bool truncated;                /* body over max_body: transfer aborted */
};

/* r is valid only during the call; so is the request handle, which is freed
 * right after (do not cancel it from here). A non-2xx status is not an error:
 * error is set only for transport failures (refused, timeout, short body,
 * body over max_body, output file not writable, on_body said stop). A
 * streamed body's chunks have all been delivered before this runs. */
typedef void (*http_done_cb)(void *userdata, const struct http_response *r);

int http_new(uv_loop_t *loop, struct http **ret);
/* Cancels pending requests (their callbacks are not called), closes every
 * handle and frees itself once libuv has run the close callbacks, so the loop
 * must run once more. May be called from a done callback. */
void http_free(struct http *h);

/* Whether v may be stored and sent back as If-None-Match / If-Modified-Since
 * (see struct http_response). */
bool http_etag_is_valid(const char *v);
bool http_date_is_valid(const char *v);

/* Starts a transfer; cb runs later, from the loop, never from in here.
 * Response header lines over 8 KiB are ignored; more than 256 KiB of
 * response headers fail the transfer (error says so).
 * Returns 0, -EINVAL (no URL, a header value with a control character, an
 * invalid if_none_match / if_modified_since, on_body with output_path, h
 * being freed)
 * or the negative errno of opening output_path. TLS peers are always
 * verified, redirects are not followed, only http and https are allowed. */
int http_request_start(struct http *h, const struct http_options *o, http_done_cb cb, void *userdata,
		       struct http_request **ret);
/* Cancels: cb is not called. */
void http_request_cancel(struct http_request *r);

/* A malloc'd copy of url with any "user:password@" replaced by "***@", for
 * messages and logs. */
char *http_url_redact(const char *url);

/* SPDX-License-Identifier: BSD-2-Clause */
/* HTTP client: libcurl's multi interface on libuv, after curl's multi-uv
 * example. libcurl tells us which sockets to watch (cb_socket: one uv_poll per
 * socket, found again through curl_multi_assign) and when to call it back
 * (cb_timer: one uv_timer). Every uv event is turned into
 * curl_multi_socket_action(), after which finished transfers are collected
 * with curl_multi_info_read().
 *
 * Callbacks libcurl calls are cb_*, callbacks libuv calls are on_*. Nothing
 * calls into libcurl's multi handle from inside a libcurl callback: a zero
 * timeout starts a 0 ms timer instead of calling socket_action directly. */
#include "http.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

#define HTTP_DEFAULT_TIMEOUT_MS 30000L
#define HTTP_DEFAULT_CONNECT_TIMEOUT_MS 10000L
/* The largest stack document (stack.h's STACK_MAX_BYTES, which callers that
 * fetch one pass explicitly); io/ sits below stack/ and does not include it. */
#define HTTP_DEFAULT_MAX_BODY ((size_t)16 * 1024 * 1024)
/* TCP keep-alive of a transfer without deadline: first probe after this
 * long idle, then one every interval (seconds). */
#define HTTP_KEEPIDLE_SEC 60L
#define HTTP_KEEPINTVL_SEC 20L
/* Response header budget. libcurl takes header lines of up to 100 KiB and
 * (depending on its version) unbounded sums of them; a server that sends
 * more than a real one ever would gets its transfer failed, and a line longer
 * than a real one ever is gets ignored, never stored or sent back. */
#define HTTP_HEADERS_MAX (256 * 1024)
#define HTTP_HEADER_LINE_MAX 8192

struct http_sock {
	uv_poll_t poll;           /* data points back here */
	curl_socket_t fd;
	struct http *h;           /* borrowed */
	struct http_sock *prev, *next;
};

struct http_request {
	struct http *h;           /* borrowed */
	struct http_request *prev, *next;
	CURL *easy;               /* owned */
	http_done_cb cb;
	void *userdata;
	struct curl_slist *headers; /* owned */
	char *shown_url;          /* owned: the URL without credentials, for messages */
	char *req_body;           /* owned: copy of the request body, may be NULL */
	struct buf body;          /* response body when not streamed to a file or on_body */
	size_t received;          /* response body bytes so far */
	size_t max_body;          /* SIZE_MAX: no cap */
	http_body_cb on_body;     /* may be NULL */
	int body_errno;           /* on_body stopped the transfer with this */
	int fd;                   /* output file, -1 when the body goes to memory */
	char *output_path;        /* owned, may be NULL */
	int write_errno;          /* writing output_path failed with this */
	char *etag;               /* owned, may be NULL */
	char *last_modified;      /* owned, may be NULL */
	char *capture_name;       /* owned: http_options.capture_header, may be NULL */
	char *captured;           /* owned: its value, may be NULL */
	char *content_encoding;   /* owned: of a response whose body libcurl decodes, for messages, may be NULL */
	bool decode_content;
	size_t header_bytes;      /* response header bytes so far, all responses of the transfer */
	bool headers_too_large;
	bool truncated;
	char errbuf[CURL_ERROR_SIZE];
};

struct http {
	uv_loop_t *loop;          /* borrowed */
	CURLM *multi;             /* owned, NULL once http_free ran */
	uv_timer_t timer;         /* libcurl's single timeout */
	struct http_request *requests; /* in flight */
	struct http_sock *socks;  /* watched sockets */
	unsigned handles_open;    /* uv handles whose close callback has not run yet */
	bool closing;
};

static void on_poll(uv_poll_t *p, int status, int events);

/* The "user:password@" part of a URL becomes "***@", and the value of a
 * query parameter whose name looks secret (token=, api_key=, ...) becomes
 * "***", so that credentials never reach a log line or a status reply. */
char *http_url_redact(const char *url)
{
	const char *start = strstr(url, "://");
	struct buf b;
	const char *q;

	buf_init(&b);
	if (start) {
		start += 3;
		size_t auth_len = strcspn(start, "/?#");
		const char *at = memchr(start, '@', auth_len);
		if (at) {
			buf_append(&b, url, (size_t)(start - url));
			buf_puts(&b, "***");
			url = at;
		}
	}
	q = strchr(url, '?');
	if (!q) {
		buf_puts(&b, url);
		return buf_steal(&b);
	}
	buf_append(&b, url, (size_t)(q - url) + 1);
	for (const char *p = q + 1; *p;) {
		size_t n = strcspn(p, "&#");
		const char *eq = memchr(p, '=', n);
		if (eq) {
			_cleanup_free_ char *name = xstrndup(p, (size_t)(eq - p));
			buf_append(&b, p, (size_t)(eq - p) + 1);
			if (key_is_secret(name))
				buf_puts(&b, "***");
			else
				buf_append(&b, eq + 1, n - (size_t)(eq - p) - 1);
		} else
			buf_append(&b, p, n);
		p += n;
		if (*p == '#') {
			buf_puts(&b, p);
			break;
		}
		if (*p == '&') {
			buf_puts(&b, "&");
			p++;
		}
	}
	return buf_steal(&b);
}

static void http_maybe_free(struct http *h)
{
	if (h->closing && h->handles_open == 0)
		free(h);
}

static void on_handle_close(uv_handle_t *handle)
{
	struct http *h = handle->data;
	h->handles_open--;
	http_maybe_free(h);
}

static void on_sock_close(uv_handle_t *handle)
{
	struct http_sock *sock = handle->data;
	struct http *h = sock->h;
	free(sock);
	h->handles_open--;
	http_maybe_free(h);
}

static void sock_close(struct http_sock *sock)
{
	struct http *h = sock->h;
	if (sock->prev)
		sock->prev->next = sock->next;
	else
		h->socks = sock->next;
	if (sock->next)
		sock->next->prev = sock->prev;
	sock->prev = sock->next = NULL;
	/* uv_close stops the poll at once, so a new uv_poll for the same fd
	 * number (libcurl reuses numbers) can be created right after. */
	uv_close((uv_handle_t *)&sock->poll, on_sock_close);
}

static void request_unlink(struct http_request *r)
{
	struct http *h = r->h;
	if (r->prev)
		r->prev->next = r->next;
	else if (h->requests == r)
		h->requests = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->prev = r->next = NULL;
}

static void request_free(struct http_request *r)
{
	if (!r)
		return;
	if (r->easy)
		curl_easy_cleanup(r->easy);
	curl_slist_free_all(r->headers);
	if (r->fd >= 0)
		(void)close(r->fd);
	free(r->shown_url);
	free(r->req_body);
	buf_free(&r->body);
	free(r->output_path);
	free(r->etag);
	free(r->last_modified);
	free(r->capture_name);
	free(r->captured);
	free(r->content_encoding);
	free(r);
}

/* Removes a transfer from the multi handle and frees it. */
static void request_drop(struct http_request *r)
{
	request_unlink(r);
	if (r->h->multi && r->easy)
		(void)curl_multi_remove_handle(r->h->multi, r->easy);
	request_free(r);
}

static void request_finish(struct http_request *r, CURLcode code)
{
	struct http_response resp = { 0 };
	_cleanup_free_ char *error = NULL;
	long status = 0;

	(void)curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
	request_unlink(r);
	(void)curl_multi_remove_handle(r->h->multi, r->easy);

	if (r->fd >= 0) {
		if (close(r->fd) < 0 && code == CURLE_OK && r->write_errno == 0) {
			r->write_errno = errno;
			code = CURLE_WRITE_ERROR;
		}
		r->fd = -1;
	}
	if (code == CURLE_FILESIZE_EXCEEDED)
		r->truncated = true;

	if (code != CURLE_OK) {
		if (r->headers_too_large)
			error = xasprintf("%s: response headers larger than %d bytes", r->shown_url, HTTP_HEADERS_MAX);
		else if (r->truncated && r->content_encoding && code != CURLE_FILESIZE_EXCEEDED)
			/* The cap counts decoded bytes: say so, or a small
			 * Content-Length would make the message look wrong.
			 * (FILESIZE_EXCEEDED is the announced, encoded length.) */
			error = xasprintf("%s: body larger than %zu bytes once decoded (Content-Encoding: %s)",
					  r->shown_url, r->max_body, r->content_encoding);
		else if (r->truncated)
			error = xasprintf("%s: body larger than %zu bytes", r->shown_url, r->max_body);
		else if (r->write_errno)
			error = xasprintf("%s: writing %s: %s", r->shown_url, r->output_path, strerror(r->write_errno));
		else if (r->body_errno)
			error = xasprintf("%s: the receiver stopped the body: %s", r->shown_url, strerror(r->body_errno));
		else {
			const char *cause = r->errbuf[0] ? r->errbuf : curl_easy_strerror(code);
			long os_errno = 0;
			/* libcurl 7.88 says "Couldn't connect to server" where the
			 * operator wants to know "Connection refused" or "No route
			 * to host": add the system's word when it says more. */
			if (code == CURLE_COULDNT_CONNECT)
				(void)curl_easy_getinfo(r->easy, CURLINFO_OS_ERRNO, &os_errno);
			if (os_errno > 0 && !strstr(cause, strerror((int)os_errno)))
				error = xasprintf("%s: %s (%s)", r->shown_url, cause, strerror((int)os_errno));
			else
				error = xasprintf("%s: %s", r->shown_url, cause);
		}
	}

	resp.status = status;
	resp.curl_code = (int)code;
	resp.error = error;
	if (!r->output_path && !r->on_body) {
		if (!r->body.data)
			buf_append(&r->body, "", 0);
		resp.body = r->body.data;
		resp.body_len = r->body.len;
	}
	resp.etag = r->etag;
	resp.last_modified = r->last_modified;
	resp.captured = r->captured;
	resp.truncated = r->truncated;

	r->cb(r->userdata, &resp);
	request_free(r);
}

/* Collects finished transfers. Must run after every curl_multi_socket_action. */
static void http_check_multi_info(struct http *h)
{
	CURLMsg *msg;
	int pending;

	/* A done callback may call http_free(): stop reading then, the multi
	 * handle is gone (h itself lives until its close callbacks ran). */
	while (!h->closing && (msg = curl_multi_info_read(h->multi, &pending))) {
		struct http_request *r = NULL;
		if (msg->msg != CURLMSG_DONE)
			continue;
		(void)curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
		request_finish(r, msg->data.result);
	}
}

static void on_poll(uv_poll_t *p, int status, int events)
{
	struct http_sock *sock = p->data;
	struct http *h = sock->h;
	int flags = 0, running;

	if (status < 0)
		flags = CURL_CSELECT_ERR;
	else {
		if (events & UV_READABLE)
			flags |= CURL_CSELECT_IN;
		if (events & UV_WRITABLE)
			flags |= CURL_CSELECT_OUT;
	}
	/* sock may be closed inside socket_action; read nothing from it after. */
	(void)curl_multi_socket_action(h->multi, sock->fd, flags, &running);
	http_check_multi_info(h);
}

static void on_timeout(uv_timer_t *t)
{
	struct http *h = t->data;
	int running;

	(void)curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	http_check_multi_info(h);
}

static int cb_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct http *h = userp;
	struct http_sock *sock = socketp;
	int events = 0, r;

	if (what == CURL_POLL_REMOVE) {
		if (sock) {
			sock_close(sock);
			if (h->multi)
				(void)curl_multi_assign(h->multi, fd, NULL);
		}
		return 0;
	}
	if (h->closing)
		return 0;

	if (!sock) {
		sock = xcalloc(1, sizeof(*sock));
		sock->fd = fd;
		sock->h = h;
		r = uv_poll_init_socket(h->loop, &sock->poll, fd);
		if (r < 0) {
			log_error("http: cannot watch socket %d: %s", (int)fd, uv_strerror(r));
			free(sock);
			return -1;
		}
		sock->poll.data = sock;
		h->handles_open++;
		sock->next = h->socks;
		if (h->socks)
			h->socks->prev = sock;
		h->socks = sock;
		(void)curl_multi_assign(h->multi, fd, sock);
	}

	if (what & CURL_POLL_IN)
		events |= UV_READABLE;
	if (what & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	r = uv_poll_start(&sock->poll, events, on_poll);
	if (r < 0) {
		log_error("http: cannot poll socket %d: %s", (int)fd, uv_strerror(r));
		return -1;
	}
	return 0;
}

static int cb_timer(CURLM *multi, long timeout_ms, void *userp)
{
	struct http *h = userp;

	if (h->closing)
		return 0;
	if (timeout_ms < 0)
		(void)uv_timer_stop(&h->timer);
	else
		/* 0 means "as soon as possible": calling socket_action from
		 * inside this callback is not allowed, a 0 ms timer runs it on
		 * the next loop iteration. */
		(void)uv_timer_start(&h->timer, on_timeout, (uint64_t)timeout_ms, 0);
	return 0;
}

static size_t cb_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct http_request *r = userdata;
	size_t n = size * nmemb;

	if (n > r->max_body - r->received) {
		r->truncated = true;
		return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
	}
	if (r->on_body) {
		long status = 0;
		int k;

		(void)curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
		k = r->on_body(r->userdata, status, ptr, n);
		if (k < 0) {
			r->body_errno = -k;
			return 0;
		}
	} else if (r->fd >= 0) {
		size_t off = 0;
		while (off < n) {
			ssize_t w = write(r->fd, ptr + off, n - off);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				r->write_errno = errno;
				return 0;
			}
			off += (size_t)w;
		}
	} else
		buf_append(&r->body, ptr, n);
	r->received += n;
	return n;
}

/* Header value with surrounding blanks and the CRLF removed, or NULL when
 * line is not "name: value". */
static char *header_value(const char *line, size_t len, const char *name)
{
	size_t nlen = strlen(name);

	if (len <= nlen || line[nlen] != ':' || strncasecmp(line, name, nlen) != 0)
		return NULL;
	const char *v = line + nlen + 1, *end = line + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
		end--;
	return xstrndup(v, (size_t)(end - v));
}

/* No control character (NUL, CR, LF, DEL, ...) in s[0..len): what may be
 * written back into a request header line. */
static bool bytes_are_field_safe(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

bool http_etag_is_valid(const char *v)
{
	size_t n = v ? strlen(v) : 0;

	if (n == 0 || n > HTTP_VALIDATOR_MAX || !bytes_are_field_safe(v, n))
		return false;
	if (strncmp(v, "W/", 2) == 0) {
		v += 2;
		n -= 2;
	}
	if (n == 0)
		return false;
	if (v[0] != '"') {
		/* Unquoted, as some servers send it: one token, sent back as is. */
		for (size_t i = 0; i < n; i++)
			if (v[i] == ' ' || v[i] == '"' || v[i] == ',')
				return false;
		return true;
	}
	/* RFC 9110 entity-tag: DQUOTE *etagc DQUOTE, etagc = %x21 / %x23-7E / obs-text. */
	if (n < 2 || v[n - 1] != '"')
		return false;
	for (size_t i = 1; i + 1 < n; i++)
		if (v[i] == '"' || v[i] == ' ')
			return false;
	return true;
}

bool http_date_is_valid(const char *v)
{
	size_t n = v ? strlen(v) : 0;

	/* An IMF-fixdate is 29 bytes; the obsolete formats are no longer. */
	if (n == 0 || n > 64 || !bytes_are_field_safe(v, n))
		return false;
	return curl_getdate(v, NULL) != -1;
}

static size_t cb_header(char *buffer, size_t size, size_t nitems, void *userdata)
{
	struct http_request *r = userdata;
	size_t n = size * nitems;
	char *v;

	if (n > HTTP_HEADERS_MAX - r->header_bytes) {
		r->headers_too_large = true;
		return 0; /* aborts the transfer */
	}
	r->header_bytes += n;
	/* Longer than any header a real server sends: not looked at, so it can
	 * never be stored or sent back (a 90 KB ETag echoed in If-None-Match
	 * would make every later request fail with 431). */
	if (n > HTTP_HEADER_LINE_MAX)
		return n;

	/* A new status line starts a new response (after "100 Continue"):
	 * only the final response's headers count. */
	if (n >= 5 && strncmp(buffer, "HTTP/", 5) == 0) {
		free(r->etag);
		free(r->last_modified);
		free(r->captured);
		free(r->content_encoding);
		r->etag = r->last_modified = r->captured = r->content_encoding = NULL;
		return n;
	}
	/* A header with a NUL in it would be cut short by the string copy and
	 * then look well-formed; one with another control character must not
	 * be echoed either. Such values are dropped (the next request is
	 * unconditional), the response itself is still good. */
	if ((v = header_value(buffer, n, "ETag"))) {
		free(r->etag);
		r->etag = NULL;
		if (!memchr(buffer, '\0', n) && http_etag_is_valid(v))
			r->etag = v;
		else
			free(v);
	} else if ((v = header_value(buffer, n, "Last-Modified"))) {
		free(r->last_modified);
		r->last_modified = NULL;
		if (!memchr(buffer, '\0', n) && http_date_is_valid(v))
			r->last_modified = v;
		else
			free(v);
	} else if (r->decode_content && (v = header_value(buffer, n, "Content-Encoding"))) {
		/* Only named in a message: kept when short and printable. */
		free(r->content_encoding);
		r->content_encoding = NULL;
		if (!memchr(buffer, '\0', n) && strlen(v) <= 64 && bytes_are_field_safe(v, strlen(v)))
			r->content_encoding = v;
		else
			free(v);
	} else if (r->capture_name && (v = header_value(buffer, n, r->capture_name))) {
		free(r->captured);
		r->captured = NULL;
		if (!memchr(buffer, '\0', n) && bytes_are_field_safe(v, strlen(v)))
			r->captured = v;
		else
			free(v);
	}
	return n;
}

/* A request header line we build: no control character but HTAB, so that
 * nothing can end the line early or smuggle another one in. */
static bool header_is_safe(const char *s)
{
	if (!s)
		return false;
	for (; *s; s++)
		if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
			return false;
	return true;
}

static int request_add_header(struct http_request *r, const char *fmt, ...) _printf_(2, 3);
static int request_add_header(struct http_request *r, const char *fmt, ...)
{
	_cleanup_free_ char *line = NULL;
	struct curl_slist *l;
	va_list ap;

	va_start(ap, fmt);
	if (vasprintf(&line, fmt, ap) < 0)
		line = NULL;
	va_end(ap);
	if (!line || !header_is_safe(line))
		return -EINVAL;
	l = curl_slist_append(r->headers, line);
	if (!l)
		return -ENOMEM;
	r->headers = l;
	return 0;
}

#define SETOPT(easy, opt, val)                                   \
	do {                                                     \
		if (curl_easy_setopt((easy), (opt), (val)) != CURLE_OK) \
			return -EINVAL;                          \
	} while (0)

static int request_setup(struct http_request *r, const struct http_options *o)
{
	CURL *e = r->easy;
	const char *method = o->method ? o->method : "GET";
	bool deadline = o->timeout_ms != HTTP_NO_DEADLINE;
	long timeout = !deadline ? 0 : o->timeout_ms > 0 ? o->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;
	long connect_timeout = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : HTTP_DEFAULT_CONNECT_TIMEOUT_MS;
	int k;

	if (deadline && connect_timeout > timeout)
		connect_timeout = timeout;

	SETOPT(e, CURLOPT_URL, o->url);
	SETOPT(e, CURLOPT_PRIVATE, (char *)r);
	SETOPT(e, CURLOPT_ERRORBUFFER, r->errbuf);
	SETOPT(e, CURLOPT_NOSIGNAL, 1L);
	SETOPT(e, CURLOPT_PROTOCOLS_STR, "http,https");
	SETOPT(e, CURLOPT_FOLLOWLOCATION, 0L);
	SETOPT(e, CURLOPT_SSL_VERIFYPEER, 1L);
	SETOPT(e, CURLOPT_SSL_VERIFYHOST, 2L);
	SETOPT(e, CURLOPT_TIMEOUT_MS, timeout); /* 0: none */
	SETOPT(e, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout);
	if (!deadline) {
		/* Nothing else would notice a peer that vanished without a
		 * FIN or RST: the stream would wait for ever. */
		SETOPT(e, CURLOPT_TCP_KEEPALIVE, 1L);
		SETOPT(e, CURLOPT_TCP_KEEPIDLE, HTTP_KEEPIDLE_SEC);
		SETOPT(e, CURLOPT_TCP_KEEPINTVL, HTTP_KEEPINTVL_SEC);
	}
	SETOPT(e, CURLOPT_USERAGENT, "agentd");
	SETOPT(e, CURLOPT_WRITEFUNCTION, cb_write);
	SETOPT(e, CURLOPT_WRITEDATA, r);
	SETOPT(e, CURLOPT_HEADERFUNCTION, cb_header);
	SETOPT(e, CURLOPT_HEADERDATA, r);
	/* Asks for gzip, the encoding every server and CDN offers, in a
	 * short header line; libcurl then decodes whatever Content-Encoding it
	 * knows (gzip, deflate, br, zstd), asked for or not (S3 serves an
	 * object stored gzipped with Content-Encoding: gzip to every client).
	 * The write callback sees decoded bytes: max_body caps those. */
	if (o->decode_content)
		SETOPT(e, CURLOPT_ACCEPT_ENCODING, "gzip");
	/* Fails early when the server announces a too large body; the write
	 * callback catches the rest. */
	if (r->max_body != SIZE_MAX)
		SETOPT(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)r->max_body);

	if (strcmp(method, "GET") == 0)
		SETOPT(e, CURLOPT_HTTPGET, 1L);
	else if (strcmp(method, "POST") != 0)
		SETOPT(e, CURLOPT_CUSTOMREQUEST, method);
	if (strcmp(method, "GET") != 0 && (o->body || strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0)) {
		/* POSTFIELDS with a size: a PUT without a body still sends
		 * "Content-Length: 0", which IMDS's token PUT needs. */
		r->req_body = o->body_len ? xmalloc(o->body_len) : xstrdup("");
		if (o->body_len)
			memcpy(r->req_body, o->body, o->body_len);
		SETOPT(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
		SETOPT(e, CURLOPT_POSTFIELDS, r->req_body);
	}

	if (o->headers)
		for (const char *const *hd = o->headers; *hd; hd++)
			if ((k = request_add_header(r, "%s", *hd)) < 0)
				return k;
	/* Validators come from a server: only well-formed, short ones are
	 * sent back. */
	if (o->if_none_match) {
		if (!http_etag_is_valid(o->if_none_match))
			return -EINVAL;
		if ((k = request_add_header(r, "If-None-Match: %s", o->if_none_match)) < 0)
			return k;
	}
	if (o->if_modified_since) {
		if (!http_date_is_valid(o->if_modified_since))
			return -EINVAL;
		if ((k = request_add_header(r, "If-Modified-Since: %s", o->if_modified_since)) < 0)
			return k;
	}
	/* No "Expect: 100-continue" round trip for request bodies. Not with
	 * SigV4: libcurl 7.88.1 signs every header of the list, this empty
	 * one too, which is then not sent, and the signature fails (a curl
	 * that adds Expect itself, for bodies over 1 KiB, does so unsigned,
	 * which SigV4 allows). */
	if (r->req_body && !o->aws_sigv4 && (k = request_add_header(r, "Expect:")) < 0)
		return k;
	if (r->headers)
		SETOPT(e, CURLOPT_HTTPHEADER, r->headers);

	if (o->ca_file)
		SETOPT(e, CURLOPT_CAINFO, o->ca_file);
	if (o->client_cert) {
		SETOPT(e, CURLOPT_SSLCERT, o->client_cert);
		SETOPT(e, CURLOPT_SSLCERTTYPE, "PEM");
	}
	if (o->client_key) {
		SETOPT(e, CURLOPT_SSLKEY, o->client_key);
		SETOPT(e, CURLOPT_SSLKEYTYPE, "PEM");
	}
	if (o->unix_socket)
		SETOPT(e, CURLOPT_UNIX_SOCKET_PATH, o->unix_socket);
	if (o->no_proxy || o->unix_socket)
		SETOPT(e, CURLOPT_NOPROXY, "*");
	if (o->userpwd) {
		SETOPT(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		SETOPT(e, CURLOPT_USERPWD, o->userpwd);
	}
	if (o->aws_sigv4) {
		/* libcurl signs the method, path, raw query, the headers we
		 * give and the body's hash (see the note in http.h). */
		if (!o->aws_key || !o->aws_secret)
			return -EINVAL;
		SETOPT(e, CURLOPT_AWS_SIGV4, o->aws_sigv4);
		SETOPT(e, CURLOPT_USERNAME, o->aws_key);
		SETOPT(e, CURLOPT_PASSWORD, o->aws_secret);
	}
	return 0;
}

int http_request_start(struct http *h, const struct http_options *o, http_done_cb cb, void *userdata,
		       struct http_request **ret)
{
	struct http_request *r;
	int k;

	if (!h || h->closing || !o || !o->url || !cb || (o->on_body && o->output_path))
		return -EINVAL;

	r = xcalloc(1, sizeof(*r));
	r->h = h;
	r->cb = cb;
	r->userdata = userdata;
	r->fd = -1;
	r->on_body = o->on_body;
	/* A stream has no end to cap unless the caller gives one: its
	 * chunks are not kept. */
	r->max_body = o->max_body ? o->max_body : o->on_body ? SIZE_MAX : HTTP_DEFAULT_MAX_BODY;
	r->shown_url = http_url_redact(o->url);
	r->capture_name = o->capture_header ? xstrdup(o->capture_header) : NULL;
	r->decode_content = o->decode_content;
	buf_init(&r->body);

	r->easy = curl_easy_init();
	if (!r->easy) {
		request_free(r);
		return -ENOMEM;
	}
	k = request_setup(r, o);
	if (k < 0) {
		request_free(r);
		return k;
	}
	if (o->output_path) {
		r->output_path = xstrdup(o->output_path);
		r->fd = open(o->output_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		if (r->fd < 0) {
			k = -errno;
			request_free(r);
			return k;
		}
	}
	if (curl_multi_add_handle(h->multi, r->easy) != CURLM_OK) {
		request_free(r);
		return -EIO;
	}
	r->next = h->requests;
	if (h->requests)
		h->requests->prev = r;
	h->requests = r;
	if (ret)
		*ret = r;
	return 0;
}

void http_request_cancel(struct http_request *r)
{
	if (r)
		request_drop(r);
}

int http_new(uv_loop_t *loop, struct http **ret)
{
	static bool curl_ready;
	struct http *h;
	int r;

	if (!curl_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return -EIO;
		curl_ready = true;
	}

	h = xcalloc(1, sizeof(*h));
	h->loop = loop;
	h->multi = curl_multi_init();
	if (!h->multi) {
		free(h);
		return -ENOMEM;
	}
	r = uv_timer_init(loop, &h->timer);
	if (r < 0) {
		curl_multi_cleanup(h->multi);
		free(h);
		return r;
	}
	/* The published multi-uv example forgets this, and its timeouts then
	 * never find their owner. */
	h->timer.data = h;
	h->handles_open = 1;

	(void)curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, cb_socket);
	(void)curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
	(void)curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, cb_timer);
	(void)curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);

	*ret = h;
	return 0;
}

void http_free(struct http *h)
{
	if (!h || h->closing)
		return;
	h->closing = true;

	while (h->requests)
		request_drop(h->requests);
	/* Cleanup may announce CURL_POLL_REMOVE for cached connections;
	 * cb_socket still closes those polls while closing. */
	curl_multi_cleanup(h->multi);
	h->multi = NULL;
	while (h->socks)
		sock_close(h->socks);
	uv_close((uv_handle_t *)&h->timer, on_handle_close);
}

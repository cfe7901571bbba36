/* SPDX-License-Identifier: BSD-2-Clause */
/* agent/io/http.c and the polled sources (agent/source/http.c, imds.c) on a
 * real uv loop, against tests/integration/httpfixture.py started as a child
 * process (once for the whole binary; every test resets it). No fixed sleeps:
 * the loop runs until a condition holds or a deadline timer fires. Every test
 * ends with the loop closing without a handle left. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <jansson.h>
#include <uv.h>
#include <zlib.h>

#include "config.h"
#include "io/http.h"
#include "source/source.h"
#include "stack/stack.h"
#include "util.h"

extern char **environ;

#define FIXTURE_SCRIPT "tests/integration/httpfixture.py"
#define STACK_DOC "{\"opsworks\": {\"stack\": {\"name\": \"unit\"}, \"layers\": {}}}"

/* ---- the fixture process ---- */

static pid_t fixture_pid = -1;
static int fixture_port;
static char fixture_dir[64];

static size_t cb_ctl_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	buf_append(userdata, ptr, size * nmemb);
	return size * nmemb;
}

/* A blocking request to the fixture, outside the loop under test. Returns the
 * status; the body goes to out when given. */
static long ctl(const char *method, const char *path, const char *body, struct buf *out)
{
	_cleanup_free_ char *url = xasprintf("http://127.0.0.1:%d%s", fixture_port, path);
	struct buf sink;
	CURL *e = curl_easy_init();
	long status = 0;

	buf_init(&sink);
	assert_non_null(e);
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 5000L);
	curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	if (body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	}
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, cb_ctl_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, out ? out : &sink);
	assert_int_equal(curl_easy_perform(e), CURLE_OK);
	curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(e);
	buf_free(&sink);
	return status;
}

static void fixture_set(const char *json)
{
	assert_int_equal(ctl("POST", "/_ctl/set", json, NULL), 200);
}

static void fixture_mode(const char *mode)
{
	_cleanup_free_ char *path = xasprintf("/_ctl/mode/%s", mode);
	assert_int_equal(ctl("POST", path, "", NULL), 200);
}

/* The requests the fixture saw, oldest first (new reference). */
static json_t *fixture_log(void)
{
	struct buf b;
	json_t *log;

	buf_init(&b);
	assert_int_equal(ctl("GET", "/_ctl/log", NULL, &b), 200);
	log = json_loadb(b.data, b.len, 0, NULL);
	buf_free(&b);
	assert_non_null(log);
	assert_true(json_is_array(log));
	return log;
}

static const char *log_str(json_t *log, size_t i, const char *key)
{
	return json_string_value(json_object_get(json_array_get(log, i), key));
}

static const char *log_header(json_t *log, size_t i, const char *name)
{
	return json_string_value(json_object_get(json_object_get(json_array_get(log, i), "headers"), name));
}

static char *fixture_url(const char *path)
{
	return xasprintf("http://127.0.0.1:%d%s", fixture_port, path);
}

static int group_setup(void **state)
{
	_cleanup_free_ char *port_file = NULL;
	const char *script = getenv("HTTPFIXTURE") ? getenv("HTTPFIXTURE") : FIXTURE_SCRIPT;

	if (access(script, R_OK) < 0) {
		fprintf(stderr, "test_http: %s not found (run from the repository root)\n", script);
		return -1;
	}
	snprintf(fixture_dir, sizeof(fixture_dir), "/tmp/test_http.XXXXXX");
	if (!mkdtemp(fixture_dir))
		return -1;
	port_file = xasprintf("%s/port", fixture_dir);

	char *argv[] = { "/usr/bin/python3", (char *)script, "--port-file", port_file, NULL };
	if (posix_spawn(&fixture_pid, argv[0], NULL, NULL, argv, environ) != 0)
		return -1;

	/* Waiting for the child to bind: poll its port file for up to 10 s. */
	for (int i = 0; i < 1000; i++) {
		char *data = NULL;
		size_t len;
		if (file_read_all(port_file, 64, &data, &len) == 0) {
			long port;
			while (len > 0 && data[len - 1] == '\n')
				data[--len] = '\0';
			int r = parse_long(data, 1, 65535, &port);
			free(data);
			if (r == 0) {
				fixture_port = (int)port;
				return 0;
			}
		}
		if (waitpid(fixture_pid, NULL, WNOHANG) == fixture_pid) {
			fixture_pid = -1;
			return -1;
		}
		nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
	}
	return -1;
}

static int group_teardown(void **state)
{
	_cleanup_free_ char *port_file = xasprintf("%s/port", fixture_dir);

	if (fixture_pid > 0) {
		(void)kill(fixture_pid, SIGTERM);
		(void)waitpid(fixture_pid, NULL, 0);
	}
	(void)unlink(port_file);
	(void)rmdir(fixture_dir);
	curl_global_cleanup();
	return 0;
}

/* ---- the loop under test ---- */

/* Callbacks that change what a test waits for call uv_stop(test_loop): a
 * UV_RUN_ONCE iteration whose timer callbacks did the work would otherwise
 * still block in poll until the next event. */
static uv_loop_t *test_loop;

struct t {
	uv_loop_t loop;
	struct http *http;
	struct config config;
	struct source *source; /* freed by teardown when a failed test left it */
};

static int setup(void **state)
{
	struct t *t = xcalloc(1, sizeof(*t));

	assert_int_equal(ctl("POST", "/_ctl/reset", "", NULL), 200);
	json_t *settings = json_pack("{s:s, s:s}", "stack", STACK_DOC, "user_data", STACK_DOC);
	_cleanup_free_ char *body = json_dumps(settings, 0);
	json_decref(settings);
	fixture_set(body);
	assert_int_equal(ctl("POST", "/_ctl/log/clear", "", NULL), 200);
	assert_int_equal(uv_loop_init(&t->loop), 0);
	test_loop = &t->loop;
	assert_int_equal(http_new(&t->loop, &t->http), 0);
	config_defaults(&t->config);
	t->config.poll_interval = 1;
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct t *t = *state;

	source_free(t->source);
	http_free(t->http);
	assert_int_equal(uv_run(&t->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&t->loop), 0);
	config_free(&t->config);
	free(t);
	return 0;
}

struct deadline {
	uv_timer_t timer;
	bool fired, closed;
};

static void on_deadline(uv_timer_t *timer)
{
	((struct deadline *)timer->data)->fired = true;
	uv_stop(timer->loop);
}

static void on_deadline_close(uv_handle_t *h)
{
	((struct deadline *)h->data)->closed = true;
}

static void deadline_start(uv_loop_t *loop, struct deadline *d, uint64_t ms)
{
	*d = (struct deadline){ 0 };
	assert_int_equal(uv_timer_init(loop, &d->timer), 0);
	d->timer.data = d;
	assert_int_equal(uv_timer_start(&d->timer, on_deadline, ms, 0), 0);
}

static void deadline_stop(uv_loop_t *loop, struct deadline *d)
{
	uv_close((uv_handle_t *)&d->timer, on_deadline_close);
	while (!d->closed)
		(void)uv_run(loop, UV_RUN_NOWAIT);
}

/* Runs the loop until cond holds or ms pass; evaluates to cond. */
#define RUN_UNTIL(loop, cond, ms)                                  \
	({                                                         \
		struct deadline d_;                                \
		deadline_start((loop), &d_, (ms));                 \
		while (!(cond) && !d_.fired)                       \
			(void)uv_run((loop), UV_RUN_ONCE);         \
		deadline_stop((loop), &d_);                        \
		(bool)(cond);                                      \
	})

/* ---- http.c ---- */

struct result {
	int calls;
	long status;
	int curl_code;
	char *error;
	char *body;
	size_t body_len;
	char *etag;
	char *last_modified;
	char *captured;
	bool truncated;
	int64_t done_usec;
};

static void result_clear(struct result *res)
{
	free(res->error);
	free(res->body);
	free(res->etag);
	free(res->last_modified);
	free(res->captured);
	*res = (struct result){ 0 };
}

static void on_result(void *userdata, const struct http_response *r)
{
	struct result *res = userdata;

	res->calls++;
	uv_stop(test_loop);
	res->status = r->status;
	res->curl_code = r->curl_code;
	res->error = r->error ? xstrdup(r->error) : NULL;
	res->body = r->body ? xstrndup(r->body, r->body_len) : NULL;
	res->body_len = r->body_len;
	res->etag = r->etag ? xstrdup(r->etag) : NULL;
	res->last_modified = r->last_modified ? xstrdup(r->last_modified) : NULL;
	res->captured = r->captured ? xstrdup(r->captured) : NULL;
	res->truncated = r->truncated;
	res->done_usec = time_monotonic_usec();
	if (r->error)
		assert_int_not_equal(r->curl_code, 0);
	else
		assert_int_equal(r->curl_code, 0);
}

static void fetch(struct t *t, const struct http_options *o, struct result *res)
{
	result_clear(res);
	assert_int_equal(http_request_start(t->http, o, on_result, res, NULL), 0);
	assert_true(RUN_UNTIL(&t->loop, res->calls > 0, 15000));
	assert_int_equal(res->calls, 1);
}

static void test_http_200_etag_then_304(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	struct result res = { 0 };
	_cleanup_free_ char *etag = NULL, *lm = NULL;

	fetch(t, &(struct http_options){ .url = url }, &res);
	assert_null(res.error);
	assert_int_equal(res.status, 200);
	assert_string_equal(res.body, STACK_DOC);
	assert_int_equal(res.body_len, strlen(STACK_DOC));
	assert_non_null(res.etag);
	assert_non_null(res.last_modified);
	assert_int_equal(res.etag[0], '"'); /* the value, trimmed, quotes kept */
	assert_null(strpbrk(res.etag, "\r\n "));
	etag = xstrdup(res.etag);
	lm = xstrdup(res.last_modified);

	fetch(t, &(struct http_options){ .url = url, .if_none_match = etag, .if_modified_since = lm }, &res);
	assert_null(res.error);
	assert_int_equal(res.status, 304);
	assert_int_equal(res.body_len, 0);
	assert_string_equal(res.etag, etag);

	fetch(t, &(struct http_options){ .url = url, .if_modified_since = lm }, &res);
	assert_int_equal(res.status, 304);

	/* A changed document: the old ETag no longer matches. */
	assert_int_equal(ctl("POST", "/_ctl/stack", "{\"v\": 2}", NULL), 200);
	fetch(t, &(struct http_options){ .url = url, .if_none_match = etag }, &res);
	assert_int_equal(res.status, 200);
	assert_string_equal(res.body, "{\"v\": 2}");
	assert_string_not_equal(res.etag, etag);

	json_t *log = fixture_log();
	assert_int_equal(json_array_size(log), 4);
	assert_null(log_header(log, 0, "if-none-match"));
	assert_string_equal(log_header(log, 1, "if-none-match"), etag);
	assert_string_equal(log_header(log, 1, "if-modified-since"), lm);
	assert_string_equal(log_header(log, 0, "user-agent"), "agentd");
	json_decref(log);
	result_clear(&res);
}

static void test_http_500(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	struct result res = { 0 };

	fixture_mode("500");
	fetch(t, &(struct http_options){ .url = url }, &res);
	/* A status is not a transport error; the caller decides. */
	assert_null(res.error);
	assert_int_equal(res.status, 500);
	result_clear(&res);
}

static void test_http_hang_times_out(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	struct result res = { 0 };
	int64_t start;

	fixture_mode("hang");
	start = time_monotonic_usec();
	fetch(t, &(struct http_options){ .url = url, .timeout_ms = 500 }, &res);
	assert_int_equal(res.curl_code, CURLE_OPERATION_TIMEDOUT);
	assert_non_null(res.error);
	assert_true(strncmp(res.error, url, strlen(url)) == 0);
	assert_non_null(strstr(res.error, "timed out"));
	assert_true(res.done_usec - start >= 450 * 1000);
	assert_true(res.done_usec - start < 2000 * 1000);
	result_clear(&res);
}

static void test_http_truncated(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	struct result res = { 0 };

	fixture_mode("truncate");
	fetch(t, &(struct http_options){ .url = url }, &res);
	assert_int_equal(res.curl_code, CURLE_PARTIAL_FILE);
	assert_non_null(res.error);
	assert_false(res.truncated); /* short, not over the cap */
	result_clear(&res);
}

static void test_http_closed_without_answer(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	struct result res = { 0 };

	fixture_mode("close");
	fetch(t, &(struct http_options){ .url = url }, &res);
	assert_int_equal(res.curl_code, CURLE_GOT_NOTHING);
	assert_int_equal(res.status, 0);
	assert_non_null(res.error);
	result_clear(&res);
}

static void test_http_body_cap(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	_cleanup_free_ char *want = NULL;
	struct result res = { 0 };

	/* Announced by Content-Length. */
	fixture_set("{\"mode\": \"big\", \"big_size\": 2000000}");
	fetch(t, &(struct http_options){ .url = url, .max_body = 1000000 }, &res);
	assert_true(res.truncated);
	want = xasprintf("%s: body larger than 1000000 bytes", url);
	assert_string_equal(res.error, want);

	/* Only seen while reading. */
	fixture_mode("big-stream");
	fetch(t, &(struct http_options){ .url = url, .max_body = 1000000 }, &res);
	assert_true(res.truncated);
	assert_string_equal(res.error, want);
	assert_true(res.body_len <= 1000000);

	/* The default cap is the stack limit. */
	fixture_set("{\"mode\": \"big-stream\", \"big_size\": 16777217}");
	fetch(t, &(struct http_options){ .url = url }, &res);
	assert_true(res.truncated);
	free(want);
	want = xasprintf("%s: body larger than %d bytes", url, STACK_MAX_BYTES);
	assert_string_equal(res.error, want);

	/* Exactly at the cap is fine. */
	fixture_set("{\"mode\": \"big\", \"big_size\": 1000}");
	fetch(t, &(struct http_options){ .url = url, .max_body = 1000 }, &res);
	assert_null(res.error);
	assert_false(res.truncated);
	assert_int_equal(res.body_len, 1000);
	result_clear(&res);
}

/* fixture_set() with one setting whose value is a string of any bytes
 * (len of them), or JSON null when value is NULL. */
static void fixture_set_bytes(const char *key, const char *value, size_t len)
{
	json_t *o = json_object();
	json_object_set_new(o, key, value ? json_stringn(value, len) : json_null());
	_cleanup_free_ char *body = json_dumps(o, 0);
	json_decref(o);
	assert_non_null(body);
	fixture_set(body);
}

static void fixture_set_str(const char *key, const char *value)
{
	fixture_set_bytes(key, value, value ? strlen(value) : 0);
}

/* '"' + n times c + '"' */
static char *quoted_run(size_t n, char c)
{
	char *v = xmalloc(n + 3);
	v[0] = '"';
	memset(v + 1, c, n);
	v[n + 1] = '"';
	v[n + 2] = '\0';
	return v;
}

static void test_http_hostile_validators_dropped(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	_cleanup_free_ char *huge = quoted_run(90 * 1000, 'e'), *just_over = quoted_run(HTTP_VALIDATOR_MAX - 1, 'e'),
			     *at_cap = quoted_run(HTTP_VALIDATOR_MAX - 2, 'e');
	static const struct {
		const char *etag;
		size_t len;
	} bad[] = {
		{ "\"a\rb\"", 5 }, { "\"a\nb\"", 5 }, { "\"a\0b\"", 5 }, { "\"a\x01" "b\"", 5 }, { "\"a\x7f" "b\"", 5 },
		{ "\"open", 5 },   { "\"a\"b\"", 5 }, { "W/", 2 },       { "a b", 3 },
	};
	struct result res = { 0 };

	/* The body of such an answer is still good; only the validator goes. */
	fixture_set_str("etag", huge);
	fetch(t, &(struct http_options){ .url = url }, &res);
	assert_null(res.error);
	assert_int_equal(res.status, 200);
	assert_string_equal(res.body, STACK_DOC);
	assert_null(res.etag);
	assert_non_null(res.last_modified); /* the real one */

	fixture_set_str("etag", just_over);
	fetch(t, &(struct http_options){ .url = url }, &res);
	assert_null(res.etag);
	fixture_set_str("etag", at_cap);
	fetch(t, &(struct http_options){ .url = url }, &res);
	assert_string_equal(res.etag, at_cap);

	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		fixture_set_bytes("etag", bad[i].etag, bad[i].len);
		fetch(t, &(struct http_options){ .url = url }, &res);
		/* libcurl itself refuses a header line split by a bare LF or
		 * holding a NUL; whatever it lets through, we drop. */
		if (!res.error)
			assert_int_equal(res.status, 200);
		if (res.etag)
			fail_msg("ETag %zu kept as \"%s\"", i, res.etag);
	}
	fixture_set_str("etag", "W/\"weak-1\"");
	fetch(t, &(struct http_options){ .url = url }, &res);
	assert_string_equal(res.etag, "W/\"weak-1\"");
	fixture_set_str("etag", "bare-token");
	fetch(t, &(struct http_options){ .url = url }, &res);
	assert_string_equal(res.etag, "bare-token");

	/* Last-Modified: a date, short, clean. */
	fixture_set_str("last_modified", "Mon, 30 Nov 2026 12:00:00 GMT");
	fetch(t, &(struct http_options){ .url = url }, &res);
	assert_string_equal(res.last_modified, "Mon, 30 Nov 2026 12:00:00 GMT");
	static const char *bad_dates[] = { "yesterday", "Mon, 30 Nov 2026 12:00:00 GMT\x01", "Mon, 30 Nov\r 2026 12:00:00 GMT" };
	for (size_t i = 0; i < ELEMENTSOF(bad_dates); i++) {
		fixture_set_str("last_modified", bad_dates[i]);
		fetch(t, &(struct http_options){ .url = url }, &res);
		assert_int_equal(res.status, 200);
		assert_null(res.last_modified);
	}
	_cleanup_free_ char *long_date = xmalloc(20000 + 1);
	memset(long_date, 'x', 20000);
	memcpy(long_date, "Mon, 30 Nov 2026 12:00:00 GMT ", 30);
	long_date[20000] = '\0';
	fixture_set_str("last_modified", long_date);
	fetch(t, &(struct http_options){ .url = url }, &res);
	assert_int_equal(res.status, 200);
	assert_null(res.last_modified);
	result_clear(&res);
}

static void test_http_response_header_caps(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	_cleanup_free_ char *want = xasprintf("%s: response headers larger than 262144 bytes", url);
	struct result res = { 0 };
	json_t *headers = json_array();
	char *line = xmalloc(7001);

	/* One 90 KB line is ignored, the answer is good. */
	char *huge = xmalloc(90001);
	memset(huge, 'j', 90000);
	huge[90000] = '\0';
	json_t *o = json_pack("{s:[[s,s]]}", "headers", "X-Junk", huge);
	free(huge);
	_cleanup_free_ char *body = json_dumps(o, 0);
	json_decref(o);
	fixture_set(body);
	fetch(t, &(struct http_options){ .url = url }, &res);
	assert_null(res.error);
	assert_int_equal(res.status, 200);
	assert_string_equal(res.body, STACK_DOC);
	assert_non_null(res.etag);

	/* 40 lines of 7 KB: more than any real server sends, less than
	 * libcurl's own limit. */
	memset(line, 'k', 7000);
	line[7000] = '\0';
	for (int i = 0; i < 40; i++)
		json_array_append_new(headers, json_pack("[s,s]", "X-Junk", line));
	free(line);
	o = json_pack("{s:o}", "headers", headers);
	free(body);
	body = json_dumps(o, 0);
	json_decref(o);
	fixture_set(body);
	fetch(t, &(struct http_options){ .url = url }, &res);
	assert_string_equal(res.error, want);
	result_clear(&res);
}

static void test_http_captured_header(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	struct result res = { 0 };

	/* Any case in the name; the value trimmed. */
	fixture_set("{\"headers\": [[\"X-Ttl\", \"300 \"]]}");
	fetch(t, &(struct http_options){ .url = url, .capture_header = "x-ttl" }, &res);
	assert_string_equal(res.captured, "300");
	fetch(t, &(struct http_options){ .url = url }, &res);
	assert_null(res.captured);
	/* Nothing with a control character in it. */
	fixture_set("{\"headers\": [[\"X-Ttl\", \"3\\u00010\"]]}");
	fetch(t, &(struct http_options){ .url = url, .capture_header = "X-Ttl" }, &res);
	assert_null(res.captured);
	result_clear(&res);
}

static void test_http_unsafe_validators_refused(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	_cleanup_free_ char *big = quoted_run(HTTP_VALIDATOR_MAX, 'e');
	struct http_request *req = NULL;

	assert_int_equal(http_request_start(t->http, &(struct http_options){ .url = url, .if_none_match = big },
					    on_result, NULL, &req),
			 -EINVAL);
	assert_int_equal(http_request_start(t->http, &(struct http_options){ .url = url, .if_none_match = "\"a\x01\"" },
					    on_result, NULL, &req),
			 -EINVAL);
	assert_int_equal(http_request_start(t->http,
					    &(struct http_options){ .url = url, .if_modified_since = "not a date" },
					    on_result, NULL, &req),
			 -EINVAL);
	static const char *hdr[] = { "X-A: b\x01", NULL };
	assert_int_equal(http_request_start(t->http, &(struct http_options){ .url = url, .headers = hdr }, on_result,
					    NULL, &req),
			 -EINVAL);
}

static int closed_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static void test_http_refused(void **state)
{
	struct t *t = *state;
	int port = closed_port();
	_cleanup_free_ char *url = xasprintf("http://127.0.0.1:%d/stack.json", port);
	_cleanup_free_ char *want = xasprintf("%s: Failed to connect to 127.0.0.1 port %d", url, port);
	struct result res = { 0 };

	fetch(t, &(struct http_options){ .url = url }, &res);
	assert_int_equal(res.curl_code, CURLE_COULDNT_CONNECT);
	assert_int_equal(res.status, 0);
	assert_true(strncmp(res.error, want, strlen(want)) == 0);
	assert_non_null(strstr(res.error, "Connection refused"));
	result_clear(&res);
}

static void test_http_credentials_hidden(void **state)
{
	struct t *t = *state;
	int port = closed_port();
	_cleanup_free_ char *url = xasprintf("http://alice:s3cret@127.0.0.1:%d/x", port);
	_cleanup_free_ char *shown = http_url_redact(url);
	_cleanup_free_ char *want = xasprintf("http://***@127.0.0.1:%d/x", port);
	_cleanup_free_ char *plain = http_url_redact("https://example.com/a@b");
	struct result res = { 0 };

	assert_string_equal(shown, want);
	assert_string_equal(plain, "https://example.com/a@b");
	fetch(t, &(struct http_options){ .url = url }, &res);
	assert_non_null(res.error);
	assert_null(strstr(res.error, "s3cret"));
	result_clear(&res);
}

static void test_http_other_schemes_refused(void **state)
{
	struct t *t = *state;
	struct result res = { 0 };

	fetch(t, &(struct http_options){ .url = "file:///etc/passwd" }, &res);
	assert_int_equal(res.curl_code, CURLE_UNSUPPORTED_PROTOCOL);
	assert_null(strstr(res.body ? res.body : "", "root:"));
	result_clear(&res);
}

static void test_http_put_empty_body(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/latest/api/token");
	const char *hdrs[] = { "X-aws-ec2-metadata-token-ttl-seconds: 21600", NULL };
	const char *bad[] = { "X-aws-ec2-metadata-token-ttl-seconds: 21600", "X-Forwarded-For: 10.0.0.1", NULL };
	struct result res = { 0 };

	fixture_mode("imds");
	fetch(t, &(struct http_options){ .method = "PUT", .url = url, .headers = hdrs }, &res);
	assert_int_equal(res.status, 200);
	assert_true(res.body_len > 10);
	fetch(t, &(struct http_options){ .method = "PUT", .url = url }, &res);
	assert_int_equal(res.status, 400);
	fetch(t, &(struct http_options){ .method = "PUT", .url = url, .headers = bad }, &res);
	assert_int_equal(res.status, 403);

	json_t *log = fixture_log();
	assert_int_equal(json_array_size(log), 3);
	assert_string_equal(log_str(log, 0, "method"), "PUT");
	assert_string_equal(log_header(log, 0, "content-length"), "0");
	assert_string_equal(log_header(log, 0, "x-aws-ec2-metadata-token-ttl-seconds"), "21600");
	assert_null(log_header(log, 0, "expect"));
	json_decref(log);
	result_clear(&res);
}

static void test_http_header_injection_refused(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	const char *hdrs[] = { "X-A: b\r\nX-Evil: 1", NULL };
	struct result res = { 0 };

	assert_int_equal(http_request_start(t->http, &(struct http_options){ .url = url, .headers = hdrs }, on_result,
					    &res, NULL),
			 -EINVAL);
	assert_int_equal(http_request_start(t->http, &(struct http_options){ .url = url, .if_none_match = "\"a\"\n" },
					    on_result, &res, NULL),
			 -EINVAL);
	assert_int_equal(res.calls, 0);
}

static void test_http_output_path(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	_cleanup_free_ char *path = xasprintf("%s/out", fixture_dir);
	char *data = NULL;
	size_t len;
	struct stat st;
	struct result res = { 0 };

	assert_int_equal(file_write_atomic(path, "old contents, longer than the new", 33, 0644, -1, -1), 0);
	fetch(t, &(struct http_options){ .url = url, .output_path = path }, &res);
	assert_null(res.error);
	assert_int_equal(res.status, 200);
	assert_null(res.body);
	assert_int_equal(file_read_all(path, 1 << 20, &data, &len), 0);
	assert_int_equal(len, strlen(STACK_DOC));
	assert_memory_equal(data, STACK_DOC, len);
	free(data);
	assert_int_equal(stat(path, &st), 0);
	/* O_CREAT's mode applies to new files only; the caller owns the path. */
	unlink(path);
	fetch(t, &(struct http_options){ .url = url, .output_path = path }, &res);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	unlink(path);

	_cleanup_free_ char *bad = xasprintf("%s/no/such/dir/out", fixture_dir);
	assert_int_equal(http_request_start(t->http, &(struct http_options){ .url = url, .output_path = bad },
					    on_result, &res, NULL),
			 -ENOENT);
	result_clear(&res);
}

static void test_http_parallel(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	struct result res[8] = { 0 };
	int done;

	for (size_t i = 0; i < ELEMENTSOF(res); i++)
		assert_int_equal(http_request_start(t->http, &(struct http_options){ .url = url }, on_result, &res[i], NULL),
				 0);
	assert_true(RUN_UNTIL(&t->loop, ({
					  done = 0;
					  for (size_t i = 0; i < ELEMENTSOF(res); i++)
						  done += res[i].calls;
					  done == (int)ELEMENTSOF(res);
				  }),
			      10000));
	for (size_t i = 0; i < ELEMENTSOF(res); i++) {
		assert_int_equal(res[i].calls, 1);
		assert_int_equal(res[i].status, 200);
		assert_string_equal(res[i].body, STACK_DOC);
		result_clear(&res[i]);
	}
}

static void test_http_cancel(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	struct http_request *req = NULL;
	struct result res = { 0 }, other = { 0 };

	fixture_mode("hang");
	assert_int_equal(http_request_start(t->http, &(struct http_options){ .url = url }, on_result, &res, &req), 0);
	/* Let it connect and send, then cancel: no callback, nothing leaks. */
	assert_false(RUN_UNTIL(&t->loop, res.calls > 0, 200));
	http_request_cancel(req);
	assert_false(RUN_UNTIL(&t->loop, res.calls > 0, 100));
	assert_int_equal(res.calls, 0);

	/* A request still in flight at http_free is cancelled too (teardown). */
	assert_int_equal(http_request_start(t->http, &(struct http_options){ .url = url }, on_result, &other, NULL), 0);
	assert_false(RUN_UNTIL(&t->loop, other.calls > 0, 100));
}

struct free_in_cb {
	struct t *t;
	int calls;
};

static void on_result_free_http(void *userdata, const struct http_response *r)
{
	struct free_in_cb *f = userdata;

	f->calls++;
	uv_stop(test_loop);
	http_free(f->t->http);
	f->t->http = NULL;
}

static void test_http_free_from_callback(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	struct free_in_cb f = { .t = t };

	/* Whichever answer comes first frees the client; the other request is
	 * dropped without its callback, even if it finished in the same batch. */
	for (int i = 0; i < 2; i++)
		assert_int_equal(http_request_start(t->http, &(struct http_options){ .url = url }, on_result_free_http, &f,
						    NULL),
				 0);
	assert_true(RUN_UNTIL(&t->loop, f.calls > 0, 5000));
	assert_null(t->http);
	assert_false(RUN_UNTIL(&t->loop, f.calls > 1, 200));
	assert_int_equal(f.calls, 1);
}

/* A streamed body: on_body's chunks beside the done callback's result
 * (first, so that on_result reads it). */
struct stream {
	struct result res;
	struct buf got;      /* every chunk, in order */
	int chunks;          /* on_body calls */
	long status;         /* as on_body saw it */
	int stop_with;       /* on_body returns this */
	bool done_at_first;  /* the done callback had run at the first chunk */
};

static int on_stream_body(void *userdata, long status, const char *data, size_t len)
{
	struct stream *st = userdata;

	if (st->chunks++ == 0)
		st->done_at_first = st->res.calls > 0;
	st->status = status;
	buf_append(&st->got, data, len);
	uv_stop(test_loop);
	return st->stop_with;
}

static void stream_clear(struct stream *st)
{
	result_clear(&st->res);
	buf_free(&st->got);
	*st = (struct stream){ 0 };
}

#define DRIP_BODY "chunk 0\nchunk 1\nchunk 2\nchunk 3\n"

/* Chunks reach on_body as they arrive, in order, all before the done
 * callback, which then has no body of its own. */
static void test_http_stream_chunks(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/watch");
	struct stream st = { 0 };
	struct http_options o = { .url = url, .on_body = on_stream_body, .timeout_ms = HTTP_NO_DEADLINE };

	fixture_mode("drip");
	assert_int_equal(http_request_start(t->http, &o, on_result, &st, NULL), 0);
	/* The first line comes while the server still holds the others back. */
	assert_true(RUN_UNTIL(&t->loop, st.chunks > 0, 5000));
	assert_int_equal(st.res.calls, 0);
	assert_false(st.done_at_first);
	assert_int_equal(st.status, 200);
	assert_true(st.got.len < strlen(DRIP_BODY));
	assert_true(RUN_UNTIL(&t->loop, st.res.calls > 0, 10000));
	assert_null(st.res.error);
	assert_int_equal(st.res.status, 200);
	assert_null(st.res.body);
	assert_true(st.chunks >= 2);
	assert_int_equal(st.got.len, strlen(DRIP_BODY));
	assert_memory_equal(st.got.data, DRIP_BODY, st.got.len);
	stream_clear(&st);

	/* A streamed body has no default cap, but a given one holds. */
	fixture_set("{\"mode\": \"big-stream\", \"big_size\": 2097152}");
	o = (struct http_options){ .url = url, .on_body = on_stream_body };
	assert_int_equal(http_request_start(t->http, &o, on_result, &st, NULL), 0);
	assert_true(RUN_UNTIL(&t->loop, st.res.calls > 0, 10000));
	assert_null(st.res.error);
	assert_int_equal(st.got.len, 2097152);
	stream_clear(&st);
	o.max_body = 1024 * 1024;
	assert_int_equal(http_request_start(t->http, &o, on_result, &st, NULL), 0);
	assert_true(RUN_UNTIL(&t->loop, st.res.calls > 0, 10000));
	assert_non_null(strstr(st.res.error, "body larger than 1048576 bytes"));
	assert_true(st.got.len <= 1024 * 1024);
	stream_clear(&st);

	/* Not both a file and a callback. */
	o = (struct http_options){ .url = url, .on_body = on_stream_body, .output_path = "/dev/null" };
	assert_int_equal(http_request_start(t->http, &o, on_result, &st, NULL), -EINVAL);
}

/* on_body stops the transfer with an error of its own. */
static void test_http_stream_stopped_by_receiver(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/watch");
	_cleanup_free_ char *want = xasprintf("%s: the receiver stopped the body: %s", url, strerror(EBADMSG));
	struct stream st = { .stop_with = -EBADMSG };
	struct http_options o = { .url = url, .on_body = on_stream_body, .timeout_ms = HTTP_NO_DEADLINE };

	fixture_mode("drip");
	assert_int_equal(http_request_start(t->http, &o, on_result, &st, NULL), 0);
	assert_true(RUN_UNTIL(&t->loop, st.res.calls > 0, 10000));
	assert_int_equal(st.chunks, 1);
	assert_string_equal(st.res.error, want);
	stream_clear(&st);
}

/* The drip body takes 1.5 s: a 1 s deadline ends it, HTTP_NO_DEADLINE lets
 * it finish (no wait for the 30 s default: its absence is what is shown). */
static void test_http_no_deadline(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/watch");
	struct result res = { 0 };

	fixture_mode("drip");
	fetch(t, &(struct http_options){ .url = url, .timeout_ms = 1000 }, &res);
	assert_non_null(res.error);
	assert_int_equal(res.curl_code, CURLE_OPERATION_TIMEDOUT);

	fetch(t, &(struct http_options){ .url = url, .timeout_ms = HTTP_NO_DEADLINE }, &res);
	assert_null(res.error);
	assert_string_equal(res.body, DRIP_BODY);
	result_clear(&res);
}

/* ---- sources ---- */

struct events {
	int docs;
	int errors;
	int unchanged;   /* on_unchanged calls */
	bool need_again; /* what on_unchanged answers: the document again, please */
	char *doc;       /* the last */
	char *error;     /* the last */
	char *first_error;
};

static bool on_unchanged(void *userdata)
{
	struct events *ev = userdata;
	ev->unchanged++;
	uv_stop(test_loop);
	return !ev->need_again;
}

static void on_document(void *userdata, const char *data, size_t len)
{
	struct events *ev = userdata;
	ev->docs++;
	uv_stop(test_loop);
	free(ev->doc);
	ev->doc = xstrndup(data, len);
}

static void on_error(void *userdata, const char *message)
{
	struct events *ev = userdata;
	ev->errors++;
	uv_stop(test_loop);
	free(ev->error);
	ev->error = xstrdup(message);
	if (!ev->first_error)
		ev->first_error = xstrdup(message);
}

static void events_clear(struct events *ev)
{
	free(ev->doc);
	free(ev->error);
	free(ev->first_error);
	*ev = (struct events){ 0 };
}

static struct source *source_open(struct t *t, const char *url, struct events *ev)
{
	static const struct source_callbacks cbs = { .on_document = on_document,
						     .on_error = on_error,
						     .on_unchanged = on_unchanged };
	_cleanup_free_ char *error = NULL;
	struct source *s = NULL;

	free(t->config.source);
	t->config.source = xstrdup(url);
	assert_int_equal(source_new(&t->loop, &t->config, t->http, &cbs, ev, &s, &error), 0);
	assert_int_equal(source_start(s), 0);
	/* start() only arms a timer: nothing is reported from inside it. */
	assert_int_equal(ev->docs + ev->errors, 0);
	t->source = s;
	return s;
}

static void source_close(struct t *t)
{
	source_free(t->source);
	t->source = NULL;
}

static void test_source_http_200_then_304(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	struct events ev = { 0 };
	struct source *s = source_open(t, url, &ev);
	int64_t first;

	assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 3000));
	assert_string_equal(ev.doc, STACK_DOC);
	first = s->last_fetch_usec;
	assert_true(first > 0);

	/* The next poll is conditional and answered 304: nothing delivered,
	 * but the fetch counts. */
	assert_true(RUN_UNTIL(&t->loop, s->last_fetch_usec > first, 3000));
	assert_int_equal(ev.docs, 1);
	assert_int_equal(ev.errors, 0);
	json_t *log = fixture_log();
	assert_true(json_array_size(log) >= 2);
	assert_null(log_header(log, 0, "if-none-match"));
	assert_non_null(log_header(log, 1, "if-none-match"));
	assert_non_null(log_header(log, 1, "if-modified-since"));
	json_decref(log);

	/* A change is delivered on the next poll. */
	assert_int_equal(ctl("POST", "/_ctl/stack", "{\"v\": 3}", NULL), 200);
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 2, 3000));
	assert_string_equal(ev.doc, "{\"v\": 3}");
	assert_int_equal(ev.errors, 0);

	source_close(t);
	events_clear(&ev);
}

static void test_source_http_500_then_recovers(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	_cleanup_free_ char *want = xasprintf("GET %s: HTTP 500", url);
	struct events ev = { 0 };

	fixture_mode("500");
	(void)source_open(t, url, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.errors >= 2, 5000));
	assert_string_equal(ev.error, want);
	assert_int_equal(ev.docs, 0);

	fixture_mode("stack");
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 5000));
	assert_string_equal(ev.doc, STACK_DOC);

	source_close(t);
	events_clear(&ev);
}

static void test_source_http_hang(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	_cleanup_free_ char *want = xasprintf("GET %s: ", url);
	struct events ev = { 0 };
	int64_t start = time_monotonic_usec();

	/* poll_interval 1: the request may take at most 1 s. */
	fixture_mode("hang");
	(void)source_open(t, url, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.errors >= 1, 4000));
	assert_true(time_monotonic_usec() - start < 2500 * 1000);
	assert_true(strncmp(ev.error, want, strlen(want)) == 0);
	assert_non_null(strstr(ev.error, "timed out"));

	source_close(t);
	events_clear(&ev);
}

static void test_source_http_oversize(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	_cleanup_free_ char *want = xasprintf("GET %s: body larger than 16777216 bytes", url);
	struct events ev = { 0 };

	fixture_set("{\"mode\": \"big-stream\", \"big_size\": 16777217}");
	(void)source_open(t, url, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.errors >= 1, 10000));
	assert_string_equal(ev.error, want);
	assert_int_equal(ev.docs, 0);

	source_close(t);
	events_clear(&ev);
}

static void test_source_http_truncated(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	_cleanup_free_ char *want = xasprintf("GET %s: ", url);
	struct events ev = { 0 };

	fixture_mode("truncate");
	(void)source_open(t, url, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.errors >= 1, 3000));
	assert_true(strncmp(ev.error, want, strlen(want)) == 0);
	assert_int_equal(ev.docs, 0);

	source_close(t);
	events_clear(&ev);
}

static void test_source_http_refused(void **state)
{
	struct t *t = *state;
	int port = closed_port();
	_cleanup_free_ char *url = xasprintf("http://127.0.0.1:%d/stack.json", port);
	_cleanup_free_ char *want = xasprintf("GET %s: Failed to connect to 127.0.0.1 port %d", url, port);
	struct events ev = { 0 };
	struct source *s = source_open(t, url, &ev);

	assert_true(RUN_UNTIL(&t->loop, ev.errors >= 1, 3000));
	assert_true(strncmp(ev.error, want, strlen(want)) == 0);
	assert_non_null(strstr(ev.error, "Connection refused"));
	assert_true(s->last_fetch_usec > 0);

	source_close(t);
	events_clear(&ev);
}

static void test_source_http_reload(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	struct events ev = { 0 };
	struct source *s;

	t->config.poll_interval = 3600;
	s = source_open(t, url, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 3000));

	/* Nothing more for an hour, unless reloaded. */
	assert_int_equal(ctl("POST", "/_ctl/stack", "{\"v\": 4}", NULL), 200);
	assert_false(RUN_UNTIL(&t->loop, ev.docs == 2, 300));
	source_reload(s);
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 2, 3000));
	assert_string_equal(ev.doc, "{\"v\": 4}");

	/* A reload while a request is in flight fetches again right after. */
	fixture_mode("hang");
	source_reload(s);
	assert_false(RUN_UNTIL(&t->loop, ev.errors > 0, 200));
	source_reload(s); /* in flight now */
	fixture_mode("stack");      /* releases the hanging request: an error */
	assert_int_equal(ctl("POST", "/_ctl/stack", "{\"v\": 5}", NULL), 200);
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 3, 5000));
	assert_string_equal(ev.doc, "{\"v\": 5}");

	source_close(t);
	events_clear(&ev);
}

static void test_source_http_stop_in_flight(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	struct events ev = { 0 };

	fixture_mode("hang");
	(void)source_open(t, url, &ev);
	assert_false(RUN_UNTIL(&t->loop, ev.errors > 0, 200));
	source_close(t); /* cancels the request; teardown checks the handles */
	assert_false(RUN_UNTIL(&t->loop, ev.errors > 0, 100));
	events_clear(&ev);
}

static bool log_has_status(json_t *log, long status)
{
	for (size_t i = 0; i < json_array_size(log); i++)
		if (json_integer_value(json_object_get(json_array_get(log, i), "status")) == status)
			return true;
	return false;
}

/* Runs the loop until the source has made n more fetches. */
static void wait_fetches(struct t *t, struct source *s, int n)
{
	for (int i = 0; i < n; i++) {
		int64_t last = s->last_fetch_usec;
		assert_true(RUN_UNTIL(&t->loop, s->last_fetch_usec > last, 5000));
	}
}

/* issue 9: one 200 with a 90 KB ETag made every later GET fail with 431. */
static void test_source_http_huge_etag_no_431(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	_cleanup_free_ char *huge = quoted_run(90 * 1000, 'e');
	struct events ev = { 0 };
	struct source *s;

	fixture_set_str("etag", huge);
	s = source_open(t, url, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 3000));
	wait_fetches(t, s, 2);
	assert_int_equal(ev.errors, 0);
	json_t *log = fixture_log();
	assert_false(log_has_status(log, 431));
	for (size_t i = 0; i < json_array_size(log); i++)
		assert_null(log_header(log, i, "if-none-match"));
	json_decref(log);

	/* A normal document is picked up on the next poll. */
	fixture_set_str("etag", NULL);
	assert_int_equal(ctl("POST", "/_ctl/stack", "{\"v\": 7}", NULL), 200);
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 2, 3000));
	assert_string_equal(ev.doc, "{\"v\": 7}");
	assert_int_equal(ev.errors, 0);

	source_close(t);
	events_clear(&ev);
}

/* Validators that must not be sent back: polling goes on without errors. */
static void test_source_http_hostile_validators(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	_cleanup_free_ char *long_lm = xmalloc(20001);
	static const struct {
		const char *key, *value;
	} cases[] = {
		{ "etag", "\"a\rb\"" },
		{ "etag", "\"a\x01" "b\"" },
		{ "last_modified", NULL }, /* long_lm */
		{ "last_modified", "Mon, 30 Nov 2026\r 12:00:00 GMT" },
	};

	memset(long_lm, 'x', 20000);
	memcpy(long_lm, "Mon, 30 Nov 2026 12:00:00 GMT ", 30);
	long_lm[20000] = '\0';
	for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
		struct events ev = { 0 };
		struct source *s;

		assert_int_equal(ctl("POST", "/_ctl/reset", "", NULL), 200);
		fixture_set_str(cases[i].key, cases[i].value ? cases[i].value : long_lm);
		s = source_open(t, url, &ev);
		assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 3000));
		wait_fetches(t, s, 2);
		if (ev.errors)
			fail_msg("case %zu: %s", i, ev.error);
		json_t *log = fixture_log();
		assert_false(log_has_status(log, 431));
		for (size_t j = 0; j < json_array_size(log); j++) {
			const char *inm = log_header(log, j, "if-none-match");
			const char *ims = log_header(log, j, "if-modified-since");
			assert_true(!inm || !strpbrk(inm, "\r\n\x01"));
			assert_true(!ims || strlen(ims) < 64);
		}
		json_decref(log);
		source_close(t);
		events_clear(&ev);
	}
}

/* A 4xx may be the server refusing what we sent back: the next GET is
 * unconditional. */
static void test_source_http_4xx_forgets_validators(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	struct events ev = { 0 };
	size_t i;

	(void)source_open(t, url, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 3000));
	/* If-Modified-Since lines are longer than 30 bytes, the others not. */
	fixture_set("{\"max_header_bytes\": 30}");
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 2, 5000));
	assert_int_equal(ev.errors, 1);
	assert_non_null(strstr(ev.first_error, "HTTP 431"));
	json_t *log = fixture_log();
	for (i = 0; i < json_array_size(log); i++)
		if (json_integer_value(json_object_get(json_array_get(log, i), "status")) == 431)
			break;
	assert_true(i + 1 < json_array_size(log));
	assert_non_null(log_header(log, i, "if-none-match"));
	assert_null(log_header(log, i + 1, "if-none-match"));
	assert_null(log_header(log, i + 1, "if-modified-since"));
	json_decref(log);

	source_close(t);
	events_clear(&ev);
}

/* issue 9: a 500 then endless 304s left the 500 in status for good. */
static void test_source_http_500_then_304_clears(void **state)
{
	static const char *modes[] = { "stack", "304" };

	for (size_t i = 0; i < ELEMENTSOF(modes); i++) {
		struct t *t = *state;
		_cleanup_free_ char *url = fixture_url("/stack.json");
		struct events ev = { 0 };

		assert_int_equal(ctl("POST", "/_ctl/reset", "", NULL), 200);
		(void)source_open(t, url, &ev);
		assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 3000));
		fixture_mode("500");
		assert_true(RUN_UNTIL(&t->loop, ev.errors == 1, 3000));
		ev.unchanged = 0;
		fixture_mode(modes[i]);
		assert_true(RUN_UNTIL(&t->loop, ev.unchanged == 1, 5000));
		assert_int_equal(ev.docs, 1);
		assert_int_equal(ev.errors, 1);
		source_close(t);
		events_clear(&ev);
	}
}

/* When the receiver lost track of the document, a 304 makes the source
 * fetch it whole at once. */
static void test_source_http_304_need_again(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	struct events ev = { 0 };

	(void)source_open(t, url, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 3000));
	ev.need_again = true;
	assert_true(RUN_UNTIL(&t->loop, ev.unchanged == 1, 3000));
	ev.need_again = false;
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 2, 3000));
	assert_string_equal(ev.doc, STACK_DOC);
	json_t *log = fixture_log();
	size_t n = json_array_size(log);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(log, n - 2), "status")), 304);
	assert_null(log_header(log, n - 1, "if-none-match"));
	json_decref(log);

	source_close(t);
	events_clear(&ev);
}

/* issue 9: a 304 to the first, unconditional GET left no stack and no error. */
static void test_source_http_304_without_base(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	_cleanup_free_ char *want = xasprintf("GET %s: HTTP 304", url);
	struct events ev = { 0 };

	fixture_mode("304");
	(void)source_open(t, url, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.errors == 2, 5000));
	assert_true(strncmp(ev.error, want, strlen(want)) == 0);
	assert_int_equal(ev.docs, 0);
	assert_int_equal(ev.unchanged, 0);
	json_t *log = fixture_log();
	for (size_t i = 0; i < json_array_size(log); i++)
		assert_null(log_header(log, i, "if-none-match"));
	json_decref(log);

	fixture_mode("stack");
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 5000));
	assert_string_equal(ev.doc, STACK_DOC);

	source_close(t);
	events_clear(&ev);
}

/* A reload fetches the whole document, whatever validators we hold. */
static void test_source_http_reload_unconditional(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	struct events ev = { 0 };
	struct source *s;

	t->config.poll_interval = 3600;
	s = source_open(t, url, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 3000));
	source_reload(s);
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 2, 3000));
	json_t *log = fixture_log();
	assert_int_equal(json_array_size(log), 2);
	assert_null(log_header(log, 1, "if-none-match"));
	json_decref(log);

	source_close(t);
	events_clear(&ev);
}

/* ---- imds: ---- */

static struct source *imds_open(struct t *t, struct events *ev)
{
	free(t->config.imds_endpoint);
	t->config.imds_endpoint = xasprintf("http://127.0.0.1:%d/", fixture_port); /* slash trimmed */
	fixture_mode("imds");
	return source_open(t, "imds:", ev);
}

/* The source's member key of status's "source" object equals want (NULL:
 * absent). */
static void assert_status_member(struct source *s, const char *key, const char *want)
{
	json_t *o = json_object();
	json_t *v;

	source_status(s, o);
	v = json_object_get(o, key);
	if (want)
		assert_string_equal(json_string_value(v), want);
	else
		assert_null(v);
	json_decref(o);
}

static size_t log_count(json_t *log, const char *method, const char *path)
{
	size_t n = 0;
	for (size_t i = 0; i < json_array_size(log); i++)
		if (strcmp(log_str(log, i, "method"), method) == 0 && strcmp(log_str(log, i, "path"), path) == 0)
			n++;
	return n;
}

static void test_imds_happy_path(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *proxy = xasprintf("http://127.0.0.1:%d", closed_port());
	struct events ev = { 0 };
	struct source *s;
	const char *token;

	/* IMDS never goes through a proxy from the environment. */
	assert_int_equal(setenv("http_proxy", proxy, 1), 0);
	s = imds_open(t, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 5000));
	(void)unsetenv("http_proxy");
	assert_string_equal(ev.doc, STACK_DOC);
	assert_status_member(s, "instance_id", "i-0123456789abcdef0");
	assert_status_member(s, "region", "eu-west-1");
	assert_int_equal(ev.errors, 0);

	/* The next poll reads only user-data, with the cached token. */
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 2, 3000));
	assert_int_equal(ev.errors, 0);

	json_t *log = fixture_log();
	assert_int_equal(json_array_size(log), 5);
	assert_string_equal(log_str(log, 0, "method"), "PUT");
	assert_string_equal(log_str(log, 0, "path"), "/latest/api/token");
	assert_string_equal(log_header(log, 0, "x-aws-ec2-metadata-token-ttl-seconds"), "21600");
	assert_string_equal(log_header(log, 0, "content-length"), "0");
	assert_null(log_header(log, 0, "x-forwarded-for"));
	assert_string_equal(log_str(log, 1, "path"), "/latest/meta-data/instance-id");
	assert_string_equal(log_str(log, 2, "path"), "/latest/meta-data/placement/region");
	assert_string_equal(log_str(log, 3, "path"), "/latest/user-data");
	assert_string_equal(log_str(log, 4, "path"), "/latest/user-data");
	token = log_header(log, 1, "x-aws-ec2-metadata-token");
	assert_non_null(token);
	for (size_t i = 1; i < 5; i++) {
		assert_string_equal(log_str(log, i, "method"), "GET");
		assert_string_equal(log_header(log, i, "x-aws-ec2-metadata-token"), token);
	}
	json_decref(log);

	source_close(t);
	events_clear(&ev);
}

static void test_imds_401_new_token_retry(void **state)
{
	struct t *t = *state;
	struct events ev = { 0 };
	(void)imds_open(t, &ev);

	assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 5000));
	fixture_set("{\"expire_tokens\": true, \"user_data\": \"{\\\"v\\\": 6}\"}");
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 2, 3000));
	assert_string_equal(ev.doc, "{\"v\": 6}");
	assert_int_equal(ev.errors, 0);

	json_t *log = fixture_log();
	size_t n = json_array_size(log);
	assert_true(n >= 7);
	/* ... GET user-data (401), PUT token, GET user-data (200). */
	assert_string_equal(log_str(log, n - 3, "path"), "/latest/user-data");
	assert_string_equal(log_str(log, n - 2, "method"), "PUT");
	assert_string_equal(log_str(log, n - 2, "path"), "/latest/api/token");
	assert_string_equal(log_str(log, n - 1, "path"), "/latest/user-data");
	assert_string_not_equal(log_header(log, n - 3, "x-aws-ec2-metadata-token"),
				log_header(log, n - 1, "x-aws-ec2-metadata-token"));
	/* Meta-data is not read again. */
	assert_int_equal(log_count(log, "GET", "/latest/meta-data/instance-id"), 1);
	assert_int_equal(log_count(log, "PUT", "/latest/api/token"), 2);
	json_decref(log);

	source_close(t);
	events_clear(&ev);
}

static void test_imds_403_stops_polling(void **state)
{
	struct t *t = *state;
	struct events ev = { 0 };
	struct source *s;

	fixture_set("{\"imds_disabled\": true}");
	s = imds_open(t, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.errors == 1, 3000));
	assert_non_null(strstr(ev.error, "403"));
	assert_non_null(strstr(ev.error, "disabled"));
	assert_non_null(strstr(ev.error, "http://127.0.0.1:"));

	/* More than two poll intervals: no second request, no second error. */
	assert_false(RUN_UNTIL(&t->loop, ev.errors > 1, 2500));
	json_t *log = fixture_log();
	assert_int_equal(json_array_size(log), 1);
	json_decref(log);

	/* A reload tries again. */
	fixture_set("{\"imds_disabled\": false}");
	source_reload(s);
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 3000));
	assert_int_equal(ev.errors, 1);

	source_close(t);
	events_clear(&ev);
}

static void test_imds_404_no_user_data(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *want = xasprintf("GET http://127.0.0.1:%d/latest/user-data: no user-data (HTTP 404)",
					      fixture_port);
	struct events ev = { 0 };
	struct source *s;

	fixture_set("{\"user_data\": null}");
	s = imds_open(t, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.errors == 1, 3000));
	assert_string_equal(ev.error, want);
	assert_status_member(s, "instance_id", "i-0123456789abcdef0");
	/* Still polled at the normal interval; user-data that appears is read. */
	assert_true(RUN_UNTIL(&t->loop, ev.errors == 2, 3000));
	fixture_set("{\"user_data\": \"{}\"}");
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 3000));
	assert_string_equal(ev.doc, "{}");

	source_close(t);
	events_clear(&ev);
}

static void test_imds_unreachable(void **state)
{
	struct t *t = *state;
	int port = closed_port();
	_cleanup_free_ char *want = xasprintf("PUT http://127.0.0.1:%d/latest/api/token: Failed to connect", port);
	struct events ev = { 0 };
	struct source *s;

	free(t->config.imds_endpoint);
	t->config.imds_endpoint = xasprintf("http://127.0.0.1:%d", port);
	s = source_open(t, "imds:", &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.errors == 1, 3000));
	assert_true(strncmp(ev.error, want, strlen(want)) == 0);
	assert_status_member(s, "instance_id", NULL);

	source_close(t);
	events_clear(&ev);
}

/* The TTL IMDS grants is the one used: no 401 once a short token expires. */
static void test_imds_granted_ttl(void **state)
{
	struct t *t = *state;
	struct events ev = { 0 };

	fixture_set("{\"token_ttl_max\": 4}");
	(void)imds_open(t, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 6, 15000));
	assert_int_equal(ev.errors, 0);
	json_t *log = fixture_log();
	assert_false(log_has_status(log, 401));
	assert_true(log_count(log, "PUT", "/latest/api/token") >= 2);
	json_decref(log);

	source_close(t);
	events_clear(&ev);
}

/* A TTL outside 1..21600 s, or not a number, counts as the one asked for. */
static void test_imds_hostile_ttl_header(void **state)
{
	static const char *ttls[] = { "99999999999999999999999", "-5", "0", "21601", "12abc", "" };

	for (size_t i = 0; i < ELEMENTSOF(ttls); i++) {
		struct t *t = *state;
		struct events ev = { 0 };

		assert_int_equal(ctl("POST", "/_ctl/reset", "", NULL), 200);
		fixture_set_str("token_ttl_header", ttls[i]);
		(void)imds_open(t, &ev);
		assert_true(RUN_UNTIL(&t->loop, ev.docs == 2, 5000));
		assert_int_equal(ev.errors, 0);
		json_t *log = fixture_log();
		assert_int_equal(log_count(log, "PUT", "/latest/api/token"), 1);
		json_decref(log);
		source_close(t);
		events_clear(&ev);
	}
}

/* The token goes back in a header: a long one is refused, not echoed. */
static void test_imds_oversized_token(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *token = xmalloc(2001);
	struct events ev = { 0 };

	memset(token, 'a', 2000);
	token[2000] = '\0';
	fixture_set_str("token", token);
	(void)imds_open(t, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.errors == 1, 3000));
	assert_non_null(strstr(ev.error, "/latest/api/token"));
	assert_non_null(strstr(ev.error, "token"));
	assert_int_equal(ev.docs, 0);
	json_t *log = fixture_log();
	assert_int_equal(log_count(log, "GET", "/latest/user-data"), 0);
	json_decref(log);

	fixture_set_str("token", NULL);
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 5000));

	source_close(t);
	events_clear(&ev);
}

/* Instance id and region are shown in status: plain names only. */
static void test_imds_hostile_metadata(void **state)
{
	struct t *t = *state;
	struct events ev = { 0 };
	struct source *s;

	fixture_set_str("instance_id", "i-abc/../\"x\"");
	s = imds_open(t, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.errors == 1, 3000));
	assert_non_null(strstr(ev.error, "/latest/meta-data/instance-id: malformed value"));
	assert_status_member(s, "instance_id", NULL);
	fixture_set_str("instance_id", "i-0abc");
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 5000));
	assert_status_member(s, "instance_id", "i-0abc");

	source_close(t);
	events_clear(&ev);
}

/* ---- issue 11: gzip-compressed documents (design.md §4) ---- */

/* gzip data of in[0..len) (malloc'd), as gzip(1) writes it. */
static unsigned char *gz(const void *in, size_t len, size_t *ret_len)
{
	z_stream z = { 0 };
	size_t cap = len + len / 100 + 1024;
	unsigned char *out = xmalloc(cap);

	assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
	z.next_in = (unsigned char *)in;
	z.avail_in = (uInt)len;
	z.next_out = out;
	z.avail_out = (uInt)cap;
	assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
	*ret_len = cap - z.avail_out;
	deflateEnd(&z);
	return out;
}

/* The fixture's stack (or user-data) becomes these bytes. */
static void fixture_bytes(const char *key, const void *data, size_t len)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const unsigned char *p = data;
	struct buf b;

	buf_init(&b);
	buf_printf(&b, "{\"%s_base64\": \"", key);
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0) |
			     (i + 2 < len ? p[i + 2] : 0);
		char q[4] = { b64[v >> 18 & 63], b64[v >> 12 & 63], i + 1 < len ? b64[v >> 6 & 63] : '=',
			      i + 2 < len ? b64[v & 63] : '=' };
		buf_append(&b, q, 4);
	}
	buf_puts(&b, "\"}");
	fixture_set(b.data);
	buf_free(&b);
}

static void fixture_gzip_bomb(const char *key, size_t n)
{
	_cleanup_free_ char *zeros = xcalloc(1, n);
	size_t len;
	_cleanup_free_ unsigned char *bomb = gz(zeros, n, &len);

	fixture_bytes(key, bomb, len);
}

/* decode_content asks for gzip and undoes it; without it the bytes stay as
 * sent (a fetched archive's checksum is over those). */
static void test_http_decode_content(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json");
	struct result res = { 0 };

	fixture_set("{\"content_encoding\": \"gzip\"}");
	fetch(t, &(struct http_options){ .url = url, .decode_content = true }, &res);
	assert_null(res.error);
	assert_string_equal(res.body, STACK_DOC);
	fetch(t, &(struct http_options){ .url = url }, &res);
	assert_null(res.error);
	assert_true(res.body_len >= 2 && (unsigned char)res.body[0] == 0x1f && (unsigned char)res.body[1] == 0x8b);
	json_t *log = fixture_log();
	assert_string_equal(log_header(log, 0, "accept-encoding"), "gzip");
	assert_null(log_header(log, 1, "accept-encoding"));
	json_decref(log);

	/* The cap counts decoded bytes, and the message says so. */
	fixture_gzip_bomb("stack", 20 * 1024 * 1024);
	fixture_set("{\"content_encoding\": null, \"headers\": [[\"Content-Encoding\", \"gzip\"]]}");
	fetch(t, &(struct http_options){ .url = url, .decode_content = true }, &res);
	assert_non_null(res.error);
	assert_true(res.truncated);
	_cleanup_free_ char *want = xasprintf("%s: body larger than 16777216 bytes once decoded (Content-Encoding: gzip)", url);
	assert_string_equal(res.error, want);
	result_clear(&res);
}

static void test_source_http_gzip(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *url = fixture_url("/stack.json.gz");
	_cleanup_free_ char *want = xasprintf("GET %s: gzip-compressed document larger than 16777216 bytes", url);
	struct events ev = { 0 };
	size_t n;
	_cleanup_free_ unsigned char *data = gz("{\"v\": 7}", 8, &n);

	fixture_set("{\"content_encoding\": \"gzip\"}");
	(void)source_open(t, url, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 3000));
	assert_string_equal(ev.doc, STACK_DOC);

	/* A body that is gzip data itself, without Content-Encoding. */
	fixture_set("{\"content_encoding\": null}");
	fixture_bytes("stack", data, n);
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 2, 3000));
	assert_string_equal(ev.doc, "{\"v\": 7}");
	assert_int_equal(ev.errors, 0);

	/* A bomb is a failed fetch: nothing delivered, the URL named. */
	fixture_gzip_bomb("stack", 20 * 1024 * 1024);
	assert_true(RUN_UNTIL(&t->loop, ev.errors >= 2, 5000));
	assert_int_equal(ev.docs, 2);
	assert_true(strncmp(ev.error, want, strlen(want)) == 0);
	/* Its validators were not kept: every GET after it is unconditional. */
	json_t *log = fixture_log();
	size_t last = json_array_size(log) - 1;
	assert_null(log_header(log, last, "if-none-match"));
	json_decref(log);

	source_close(t);
	events_clear(&ev);
}

static void test_imds_gzip_user_data(void **state)
{
	struct t *t = *state;
	_cleanup_free_ char *want = xasprintf("GET http://127.0.0.1:%d/latest/user-data: gzip-compressed document larger than", fixture_port);
	struct events ev = { 0 };
	size_t n;
	_cleanup_free_ unsigned char *data = gz(STACK_DOC, strlen(STACK_DOC), &n);

	fixture_bytes("user_data", data, n);
	(void)imds_open(t, &ev);
	assert_true(RUN_UNTIL(&t->loop, ev.docs == 1, 5000));
	assert_string_equal(ev.doc, STACK_DOC);

	fixture_gzip_bomb("user_data", 20 * 1024 * 1024);
	assert_true(RUN_UNTIL(&t->loop, ev.errors >= 1, 5000));
	assert_true(strncmp(ev.error, want, strlen(want)) == 0);
	assert_int_equal(ev.docs, 1);

	source_close(t);
	events_clear(&ev);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_http_200_etag_then_304, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_500, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_hang_times_out, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_closed_without_answer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_body_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_credentials_hidden, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_other_schemes_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_put_empty_body, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_header_injection_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_output_path, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_parallel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_free_from_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_hostile_validators_dropped, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_response_header_caps, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_captured_header, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_unsafe_validators_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_stream_chunks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_stream_stopped_by_receiver, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_no_deadline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_http_200_then_304, setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_http_500_then_recovers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_http_hang, setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_http_oversize, setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_http_truncated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_http_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_http_reload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_http_stop_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_imds_happy_path, setup, teardown),
		cmocka_unit_test_setup_teardown(test_imds_401_new_token_retry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_imds_403_stops_polling, setup, teardown),
		cmocka_unit_test_setup_teardown(test_imds_404_no_user_data, setup, teardown),
		cmocka_unit_test_setup_teardown(test_imds_unreachable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_http_huge_etag_no_431, setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_http_hostile_validators, setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_http_4xx_forgets_validators, setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_http_500_then_304_clears, setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_http_304_need_again, setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_http_304_without_base, setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_http_reload_unconditional, setup, teardown),
		cmocka_unit_test_setup_teardown(test_imds_granted_ttl, setup, teardown),
		cmocka_unit_test_setup_teardown(test_imds_hostile_ttl_header, setup, teardown),
		cmocka_unit_test_setup_teardown(test_imds_oversized_token, setup, teardown),
		cmocka_unit_test_setup_teardown(test_imds_hostile_metadata, setup, teardown),
		cmocka_unit_test_setup_teardown(test_http_decode_content, setup, teardown),
		cmocka_unit_test_setup_teardown(test_source_http_gzip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_imds_gzip_user_data, setup, teardown),
	};

	/* Broken pipes from the fixture must not kill the test. */
	signal(SIGPIPE, SIG_IGN);
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

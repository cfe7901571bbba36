/* SPDX-License-Identifier: BSD-2-Clause */
/* agent/fleet/etcd.c against a real etcd (Debian's etcd-server 3.4,
 * /usr/bin/etcd): each etcd runs in a temporary directory on free ports,
 * started by the test and killed after it. One etcd (with progress
 * notifications every second) serves most tests; killing, freezing and TLS
 * get their own. No fixed sleeps: the loop runs until a condition holds or a
 * deadline passes. Skipped when etcd is not installed. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <uv.h>

#include "config.h"
#include "fleet/etcd.h"
#include "io/http.h"
#include "util.h"

#define ETCD_BIN "/usr/bin/etcd"

/* ---- etcd processes ---- */

struct proc {
	pid_t pid;
	int port;
	char dir[64];
	bool tls;
};

static struct proc shared;   /* the group's etcd */
static char tmp_dir[64];     /* certificates, data directories */

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t n = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &n), 0);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static size_t cb_sink(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	if (userdata)
		buf_append(userdata, ptr, size * nmemb);
	return size * nmemb;
}

/* A blocking POST to p's gateway, outside the loop under test (an
 * independent client: libcurl's easy interface). Returns the status. */
static long gateway(const struct proc *p, const char *path, const char *body, struct buf *out)
{
	_cleanup_free_ char *url = xasprintf("%s://127.0.0.1:%d%s", p->tls ? "https" : "http", p->port, path);
	_cleanup_free_ char *ca = xasprintf("%s/ca.pem", tmp_dir), *cert = xasprintf("%s/client.pem", tmp_dir),
			    *key = xasprintf("%s/client-key.pem", tmp_dir);
	CURL *e = curl_easy_init();
	long status = 0;

	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 1000L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, cb_sink);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
	if (p->tls) {
		curl_easy_setopt(e, CURLOPT_CAINFO, ca);
		curl_easy_setopt(e, CURLOPT_SSLCERT, cert);
		curl_easy_setopt(e, CURLOPT_SSLKEY, key);
	}
	if (curl_easy_perform(e) == CURLE_OK)
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(e);
	return status;
}

static void msleep(long ms)
{
	nanosleep(&(struct timespec){ .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L }, NULL);
}

/* Starts etcd in tmp_dir/name; returns 0 once it answers a range. */
static int proc_start(struct proc *p, const char *name, bool tls)
{
	int peer = free_port();
	char url[64], peer_url[64], cluster[128];
	_cleanup_free_ char *data = xasprintf("%s/%s", tmp_dir, name), *log = xasprintf("%s/%s.log", tmp_dir, name);
	_cleanup_free_ char *ca = xasprintf("%s/ca.pem", tmp_dir), *cert = xasprintf("%s/server.pem", tmp_dir),
			    *key = xasprintf("%s/server-key.pem", tmp_dir);

	memset(p, 0, sizeof(*p));
	p->port = free_port();
	p->tls = tls;
	snprintf(url, sizeof(url), "%s://127.0.0.1:%d", tls ? "https" : "http", p->port);
	snprintf(peer_url, sizeof(peer_url), "http://127.0.0.1:%d", peer);
	snprintf(cluster, sizeof(cluster), "t=%s", peer_url);
	const char *argv[32] = { ETCD_BIN, "--name", "t", "--data-dir", data, "--listen-client-urls", url,
				 "--advertise-client-urls", url, "--listen-peer-urls", peer_url,
				 "--initial-advertise-peer-urls", peer_url, "--initial-cluster", cluster,
				 "--log-level", "error", "--logger", "zap",
				 "--experimental-watch-progress-notify-interval", "1s" };
	size_t n = 21;
	if (tls) {
		const char *more[] = { "--cert-file", cert, "--key-file", key, "--client-cert-auth",
				       "--trusted-ca-file", ca };
		for (size_t i = 0; i < ELEMENTSOF(more); i++)
			argv[n++] = more[i];
	}
	argv[n] = NULL;

	p->pid = fork();
	assert_true(p->pid >= 0);
	if (p->pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(ETCD_BIN, (char **)argv);
		_exit(127);
	}
	for (int i = 0; i < 750; i++) {
		if (gateway(p, "/v3/kv/range", "{\"key\":\"Lw==\"}", NULL) == 200)
			return 0;
		if (waitpid(p->pid, NULL, WNOHANG) == p->pid) {
			p->pid = 0;
			return -1;
		}
		msleep(20);
	}
	return -1;
}

static void proc_stop(struct proc *p, int sig)
{
	if (p->pid > 0) {
		(void)kill(p->pid, SIGCONT);
		(void)kill(p->pid, sig);
		(void)waitpid(p->pid, NULL, 0);
	}
	p->pid = 0;
}

static int run(const char *cmd)
{
	int k = system(cmd);
	return WIFEXITED(k) ? WEXITSTATUS(k) : -1;
}

static int group_setup(void **state)
{
	if (access(ETCD_BIN, X_OK) < 0) {
		fprintf(stderr, "test_etcd_live: %s not installed, skipping\n", ETCD_BIN);
		return 0;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/test_etcd.XXXXXX");
	if (!mkdtemp(tmp_dir))
		return -1;
	return proc_start(&shared, "shared", false);
}

static int group_teardown(void **state)
{
	proc_stop(&shared, SIGKILL);
	if (tmp_dir[0]) {
		_cleanup_free_ char *cmd = xasprintf("rm -rf '%s'", tmp_dir);
		(void)run(cmd);
	}
	curl_global_cleanup();
	return 0;
}

/* ---- the loop under test ---- */

struct t {
	uv_loop_t loop;
	struct http *http;
	struct etcd *c;
};

static struct t *T;

static int setup(void **state)
{
	struct t *t = xcalloc(1, sizeof(*t));

	if (shared.pid <= 0)
		skip();
	assert_int_equal(uv_loop_init(&t->loop), 0);
	assert_int_equal(http_new(&t->loop, &t->http), 0);
	T = t;
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct t *t = *state;

	if (!t)
		return 0;
	etcd_free(t->c);
	http_free(t->http);
	while (uv_run(&t->loop, UV_RUN_NOWAIT) != 0)
		;
	assert_int_equal(uv_loop_close(&t->loop), 0);
	free(t);
	T = NULL;
	return 0;
}

static void on_deadline(uv_timer_t *timer)
{
}

/* One loop iteration, waiting at most ms for an event. */
static void run_once(struct t *t, int64_t ms)
{
	uv_timer_t timer;

	uv_timer_init(&t->loop, &timer);
	uv_timer_start(&timer, on_deadline, ms > 0 ? (uint64_t)ms : 0, 0);
	uv_run(&t->loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&timer, NULL);
	uv_run(&t->loop, UV_RUN_NOWAIT);
}

/* Runs the loop until cond holds or ms pass. */
#define WAIT_FOR(t, cond, ms)                                                   \
	do {                                                                    \
		int64_t end_ = time_monotonic_usec() + (int64_t)(ms) * 1000;    \
		while (!(cond) && time_monotonic_usec() < end_)                 \
			run_once((t), (end_ - time_monotonic_usec()) / 1000 + 1); \
	} while (0)

static struct etcd *client(struct t *t, const char *url, const struct config *config)
{
	char *error = NULL;
	struct etcd *c = NULL;

	int k = etcd_new(&t->loop, t->http, config, url, &c, &error);
	if (k < 0)
		fail_msg("etcd_new %s: %s", url, error);
	return c;
}

static struct etcd *shared_client(struct t *t)
{
	_cleanup_free_ char *url = xasprintf("etcd://127.0.0.1:%d/agentd/test", shared.port);
	t->c = client(t, url, NULL);
	return t->c;
}

/* One call's result, copied out of the callback. */
struct res {
	bool done;
	int error;
	char *message;
	int64_t revision, count, lease, ttl, deleted;
	bool succeeded;
	size_t n_kvs;
	bool has_kvs;
	char *key0, *value0;
	size_t value0_len;
	int64_t create0, mod0, lease0, version0;
};

static void res_clear(struct res *r)
{
	free(r->message);
	free(r->key0);
	free(r->value0);
	memset(r, 0, sizeof(*r));
}

static void on_res(void *userdata, const struct etcd_result *r)
{
	struct res *s = userdata;

	assert_false(s->done);
	res_clear(s);
	s->done = true;
	s->error = r->error;
	s->message = r->message ? xstrdup(r->message) : NULL;
	if (r->error)
		assert_non_null(r->message);
	s->revision = r->revision;
	s->count = r->count;
	s->lease = r->lease;
	s->ttl = r->ttl;
	s->deleted = r->deleted;
	s->succeeded = r->succeeded;
	s->n_kvs = r->n_kvs;
	s->has_kvs = r->kvs != NULL;
	if (r->n_kvs) {
		s->key0 = xstrdup(r->kvs[0].key);
		s->value0 = xmalloc(r->kvs[0].value_len + 1);
		memcpy(s->value0, r->kvs[0].value, r->kvs[0].value_len + 1);
		s->value0_len = r->kvs[0].value_len;
		s->create0 = r->kvs[0].create_revision;
		s->mod0 = r->kvs[0].mod_revision;
		s->lease0 = r->kvs[0].lease;
		s->version0 = r->kvs[0].version;
	}
	uv_stop(&T->loop);
}

/* Waits for a call started just before: its callback never ran inside. */
static void wait_res(struct t *t, struct res *r, int k)
{
	assert_int_equal(k, 0);
	assert_false(r->done);
	WAIT_FOR(t, r->done, 8000);
	if (!r->done)
		fail_msg("no answer within 8 s");
}

#define CALL(t, r, expr)                  \
	do {                              \
		res_clear(r);             \
		wait_res((t), (r), (expr)); \
	} while (0)

/* ---- kv ---- */

static void test_put_range_delete(void **state)
{
	struct t *t = *state;
	struct etcd *c = shared_client(t);
	struct res r = { 0 };
	static const char bin[] = { 'a', 0, (char)0xff, '\n', 'z' };
	struct etcd_range_options pfx = { .prefix = true };
	int64_t rev;

	assert_string_equal(etcd_prefix(c), "/agentd/test");
	assert_string_equal(etcd_endpoint(c) + strlen("http://127.0.0.1:"), strchr(strchr(etcd_endpoint(c), ':') + 1, ':') + 1);

	CALL(t, &r, etcd_put(c, "/agentd/test/kv/a", "hello", 5, 0, on_res, &r, NULL));
	assert_int_equal(r.error, 0);
	assert_true(r.revision > 0);
	rev = r.revision;

	CALL(t, &r, etcd_range(c, "/agentd/test/kv/a", NULL, on_res, &r, NULL));
	assert_int_equal(r.error, 0);
	assert_int_equal(r.n_kvs, 1);
	assert_string_equal(r.key0, "/agentd/test/kv/a");
	assert_string_equal(r.value0, "hello");
	assert_int_equal(r.mod0, rev);
	assert_int_equal(r.create0, rev);
	assert_int_equal(r.version0, 1);
	assert_int_equal(r.count, 1);

	/* Bytes, NUL and 0xff included, round-trip. */
	CALL(t, &r, etcd_put(c, "/agentd/test/kv/b", bin, sizeof(bin), 0, on_res, &r, NULL));
	assert_int_equal(r.error, 0);
	CALL(t, &r, etcd_range(c, "/agentd/test/kv/b", NULL, on_res, &r, NULL));
	assert_int_equal(r.value0_len, sizeof(bin));
	assert_memory_equal(r.value0, bin, sizeof(bin));
	assert_int_equal(r.value0[sizeof(bin)], '\0');

	/* An empty value. */
	CALL(t, &r, etcd_put(c, "/agentd/test/kv/c", NULL, 0, 0, on_res, &r, NULL));
	assert_int_equal(r.error, 0);

	CALL(t, &r, etcd_range(c, "/agentd/test/kv/", &pfx, on_res, &r, NULL));
	assert_int_equal(r.n_kvs, 3);
	assert_int_equal(r.count, 3);
	assert_string_equal(r.key0, "/agentd/test/kv/a");

	struct etcd_range_options counting = { .prefix = true, .count_only = true };
	CALL(t, &r, etcd_range(c, "/agentd/test/kv/", &counting, on_res, &r, NULL));
	assert_int_equal(r.n_kvs, 0);
	assert_int_equal(r.count, 3);

	struct etcd_range_options limited = { .prefix = true, .limit = 1, .keys_only = true };
	CALL(t, &r, etcd_range(c, "/agentd/test/kv/", &limited, on_res, &r, NULL));
	assert_int_equal(r.n_kvs, 1);
	assert_int_equal(r.count, 3);
	assert_int_equal(r.value0_len, 0);

	/* An old revision. */
	struct etcd_range_options at = { .revision = rev };
	CALL(t, &r, etcd_range(c, "/agentd/test/kv/", &(struct etcd_range_options){ .prefix = true, .revision = rev },
			       on_res, &r, NULL));
	assert_int_equal(r.n_kvs, 1);
	(void)at;

	CALL(t, &r, etcd_delete(c, "/agentd/test/kv/", true, on_res, &r, NULL));
	assert_int_equal(r.error, 0);
	assert_int_equal(r.deleted, 3);

	/* Nothing: no "kvs" in the reply at all (proto3 default). */
	CALL(t, &r, etcd_range(c, "/agentd/test/kv/", &pfx, on_res, &r, NULL));
	assert_int_equal(r.error, 0);
	assert_int_equal(r.n_kvs, 0);
	assert_int_equal(r.count, 0);
	assert_true(r.revision > rev);

	CALL(t, &r, etcd_delete(c, "/agentd/test/kv/a", false, on_res, &r, NULL));
	assert_int_equal(r.deleted, 0);
	res_clear(&r);
}

static void test_bad_arguments(void **state)
{
	struct t *t = *state;
	struct etcd *c = shared_client(t);
	struct res r = { 0 };
	char *big = xcalloc(1, ETCD_VALUE_MAX + 1);

	assert_int_equal(etcd_put(c, "", "x", 1, 0, on_res, &r, NULL), -EINVAL);
	assert_int_equal(etcd_put(c, NULL, "x", 1, 0, on_res, &r, NULL), -EINVAL);
	assert_int_equal(etcd_put(c, "/k", big, ETCD_VALUE_MAX + 1, 0, on_res, &r, NULL), -EFBIG);
	assert_int_equal(etcd_lease_keepalive(c, 0, on_res, &r, NULL), -EINVAL);
	assert_int_equal(etcd_lease_grant(c, 0, on_res, &r, NULL), -EINVAL);
	struct etcd_op op = { .type = ETCD_OP_PUT, .key = "/k", .value = big, .value_len = ETCD_VALUE_MAX + 1 };
	assert_int_equal(etcd_txn(c, NULL, 0, &op, 1, NULL, 0, on_res, &r, NULL), -EFBIG);
	assert_false(r.done);
	free(big);
}

static void test_txn_mod_revision(void **state)
{
	struct t *t = *state;
	struct etcd *c = shared_client(t);
	struct res r = { 0 };
	int64_t mod;

	CALL(t, &r, etcd_put(c, "/agentd/test/stack", "v1", 2, 0, on_res, &r, NULL));
	mod = r.revision;

	/* The compare holds: the success branch puts and reads back. */
	struct etcd_compare cmp = { .target = ETCD_CMP_MOD, .result = ETCD_CMP_EQUAL, .key = "/agentd/test/stack",
				    .number = mod };
	struct etcd_op ok[] = {
		{ .type = ETCD_OP_PUT, .key = "/agentd/test/stack", .value = "v2", .value_len = 2 },
		{ .type = ETCD_OP_RANGE, .key = "/agentd/test/stack" },
	};
	struct etcd_op ko[] = { { .type = ETCD_OP_RANGE, .key = "/agentd/test/stack" } };
	CALL(t, &r, etcd_txn(c, &cmp, 1, ok, 2, ko, 1, on_res, &r, NULL));
	assert_int_equal(r.error, 0);
	assert_true(r.succeeded);
	assert_int_equal(r.n_kvs, 1);
	assert_string_equal(r.value0, "v2");
	assert_true(r.mod0 > mod);

	/* The same compare is stale now: the failure branch reads the
	 * current value and its mod revision. */
	CALL(t, &r, etcd_txn(c, &cmp, 1, ok, 2, ko, 1, on_res, &r, NULL));
	assert_int_equal(r.error, 0);
	assert_false(r.succeeded);
	assert_int_equal(r.n_kvs, 1);
	assert_string_equal(r.value0, "v2");
	assert_true(r.mod0 > mod);

	/* Create only when absent (the concurrency package's campaign). */
	struct etcd_compare absent = { .target = ETCD_CMP_CREATE, .result = ETCD_CMP_EQUAL,
				       .key = "/agentd/test/locks/x", .number = 0 };
	struct etcd_op put = { .type = ETCD_OP_PUT, .key = "/agentd/test/locks/x", .value = "me", .value_len = 2 };
	struct etcd_op get = { .type = ETCD_OP_RANGE, .key = "/agentd/test/locks/x" };
	CALL(t, &r, etcd_txn(c, &absent, 1, &put, 1, &get, 1, on_res, &r, NULL));
	assert_true(r.succeeded);
	assert_int_equal(r.n_kvs, 0);
	CALL(t, &r, etcd_txn(c, &absent, 1, &put, 1, &get, 1, on_res, &r, NULL));
	assert_false(r.succeeded);
	assert_int_equal(r.n_kvs, 1);
	assert_string_equal(r.value0, "me");

	/* Value compare and a delete op. */
	struct etcd_compare val = { .target = ETCD_CMP_VALUE, .result = ETCD_CMP_EQUAL, .key = "/agentd/test/locks/x",
				    .value = "me", .value_len = 2 };
	struct etcd_op del = { .type = ETCD_OP_DELETE, .key = "/agentd/test/locks/", .prefix = true };
	CALL(t, &r, etcd_txn(c, &val, 1, &del, 1, NULL, 0, on_res, &r, NULL));
	assert_true(r.succeeded);
	assert_false(r.has_kvs);
	CALL(t, &r, etcd_range(c, "/agentd/test/locks/x", NULL, on_res, &r, NULL));
	assert_int_equal(r.n_kvs, 0);
	res_clear(&r);
}

/* ---- leases ---- */

static void test_lease(void **state)
{
	struct t *t = *state;
	struct etcd *c = shared_client(t);
	struct res r = { 0 };
	int64_t lease;

	CALL(t, &r, etcd_lease_grant(c, 30, on_res, &r, NULL));
	assert_int_equal(r.error, 0);
	assert_true(r.lease > 0);
	assert_int_equal(r.ttl, 30);
	lease = r.lease;

	CALL(t, &r, etcd_lease_keepalive(c, lease, on_res, &r, NULL));
	assert_int_equal(r.error, 0);
	assert_int_equal(r.lease, lease);
	assert_int_equal(r.ttl, 30);

	CALL(t, &r, etcd_lease_ttl(c, lease, on_res, &r, NULL));
	assert_int_equal(r.error, 0);
	assert_true(r.ttl > 0 && r.ttl <= 30);

	CALL(t, &r, etcd_put(c, "/agentd/test/instances/h1", "{}", 2, lease, on_res, &r, NULL));
	assert_int_equal(r.error, 0);
	CALL(t, &r, etcd_range(c, "/agentd/test/instances/h1", NULL, on_res, &r, NULL));
	assert_int_equal(r.lease0, lease);

	CALL(t, &r, etcd_lease_revoke(c, lease, on_res, &r, NULL));
	assert_int_equal(r.error, 0);

	/* The key went with its lease. */
	CALL(t, &r, etcd_range(c, "/agentd/test/instances/h1", NULL, on_res, &r, NULL));
	assert_int_equal(r.n_kvs, 0);

	/* A revoked lease: keepalive without TTL, time-to-live -1,
	 * revoke and put 404 "lease not found": all -ENOENT. */
	CALL(t, &r, etcd_lease_keepalive(c, lease, on_res, &r, NULL));
	assert_int_equal(r.error, -ENOENT);
	assert_non_null(strstr(r.message, "/v3/lease/keepalive"));
	CALL(t, &r, etcd_lease_ttl(c, lease, on_res, &r, NULL));
	assert_int_equal(r.error, -ENOENT);
	CALL(t, &r, etcd_lease_revoke(c, lease, on_res, &r, NULL));
	assert_int_equal(r.error, -ENOENT);
	assert_non_null(strstr(r.message, "lease not found"));
	CALL(t, &r, etcd_put(c, "/agentd/test/instances/h1", "{}", 2, lease, on_res, &r, NULL));
	assert_int_equal(r.error, -ENOENT);
	res_clear(&r);
}

/* ---- cancel ---- */

static bool never_flag;
static void on_never(void *userdata, const struct etcd_result *r)
{
	never_flag = true;
}

static void test_cancel_and_free(void **state)
{
	struct t *t = *state;
	struct etcd *c = shared_client(t);
	struct etcd_call *call = NULL;
	struct res r = { 0 };

	never_flag = false;
	assert_int_equal(etcd_put(c, "/agentd/test/cancel", "x", 1, 0, on_never, NULL, &call), 0);
	assert_non_null(call);
	etcd_call_cancel(call);
	/* A later call still runs; the cancelled one never answers. */
	CALL(t, &r, etcd_range(c, "/agentd/test/cancel", NULL, on_res, &r, NULL));
	assert_false(never_flag);
	/* etcd_free with calls in flight: none answers, nothing leaks. */
	assert_int_equal(etcd_range(c, "/agentd/test/", NULL, on_never, NULL, NULL), 0);
	assert_int_equal(etcd_lease_grant(c, 5, on_never, NULL, NULL), 0);
	etcd_free(c);
	t->c = NULL;
	WAIT_FOR(t, false, 200);
	assert_false(never_flag);
	res_clear(&r);
}

/* etcd_free from inside a watch's callback and from inside a call's: the
 * other watch never says anything, not even at its silence deadline, and
 * nothing leaks (ASan run). */
static bool freed_in_cb;
static void on_free_client(void *userdata, const struct etcd_result *r)
{
	struct t *t = userdata;
	etcd_free(t->c);
	t->c = NULL;
	freed_in_cb = true;
}

static void on_created_free(void *userdata, int64_t revision)
{
	struct t *t = userdata;
	etcd_free(t->c);
	t->c = NULL;
	freed_in_cb = true;
}

static void fail_events(void *u, int64_t rev, const struct etcd_event *ev, size_t n)
{
	fail_msg("on_events after etcd_free");
}

static void fail_error(void *u, const char *m)
{
	fail_msg("on_error after etcd_free: %s", m);
}

static void test_free_inside_callbacks(void **state)
{
	struct t *t = *state;
	struct etcd_watch_callbacks cbs = { on_created_free, fail_events, NULL, fail_error };

	never_flag = false;
	freed_in_cb = false;
	shared_client(t);
	struct etcd_watch_callbacks quiet = { NULL, fail_events, NULL, fail_error };
	assert_int_equal(etcd_watch_start(t->c, "/agentd/test/f/", true, 0, 800, &cbs, t, NULL), 0);
	assert_int_equal(etcd_watch_start(t->c, "/agentd/test/g/", true, 0, 800, &quiet, NULL, NULL), 0);
	WAIT_FOR(t, freed_in_cb, 5000);
	assert_true(freed_in_cb);

	freed_in_cb = false;
	shared_client(t);
	assert_int_equal(etcd_watch_start(t->c, "/agentd/test/f/", true, 0, 800, &quiet, NULL, NULL), 0);
	assert_int_equal(etcd_range(t->c, "/agentd/test/f", NULL, on_free_client, t, NULL), 0);
	WAIT_FOR(t, freed_in_cb, 5000);
	assert_true(freed_in_cb);
	/* Past the watches' 800 ms silence deadline: nothing fires. */
	WAIT_FOR(t, false, 900);
}

/* ---- endpoints ---- */

static void test_first_endpoint_dead(void **state)
{
	struct t *t = *state;
	int dead = free_port();
	_cleanup_free_ char *url = xasprintf("etcd://127.0.0.1:%d,127.0.0.1:%d/agentd/test", dead, shared.port);
	_cleanup_free_ char *second = xasprintf("http://127.0.0.1:%d", shared.port);
	struct res r = { 0 };

	t->c = client(t, url, NULL);
	CALL(t, &r, etcd_put(t->c, "/agentd/test/two", "x", 1, 0, on_res, &r, NULL));
	assert_int_equal(r.error, 0);
	/* The client stays on the endpoint that answered. */
	assert_string_equal(etcd_endpoint(t->c), second);
	CALL(t, &r, etcd_range(t->c, "/agentd/test/two", NULL, on_res, &r, NULL));
	assert_string_equal(r.value0, "x");
	res_clear(&r);
}

static void test_all_endpoints_dead(void **state)
{
	struct t *t = *state;
	int a = free_port(), b = free_port();
	_cleanup_free_ char *url = xasprintf("etcd://127.0.0.1:%d,127.0.0.1:%d/p", a, b);
	_cleanup_free_ char *ea = xasprintf("127.0.0.1:%d/v3/kv/range", a), *eb = xasprintf("127.0.0.1:%d/v3/kv/range", b);
	struct res r = { 0 };

	t->c = client(t, url, NULL);
	CALL(t, &r, etcd_range(t->c, "/p/x", NULL, on_res, &r, NULL));
	assert_int_equal(r.error, -EIO);
	/* Both endpoints named, each tried once. */
	assert_non_null(strstr(r.message, ea));
	assert_non_null(strstr(r.message, eb));
	res_clear(&r);
}

/* ---- watch ---- */

struct rec {
	int created;
	int64_t created_rev;
	int progress;
	size_t n;
	struct {
		enum etcd_event_type type;
		char *key, *value;
		int64_t mod;
	} ev[32];
	int64_t last_rev;
	bool compacted;
	int64_t compact_rev;
	bool failed;
	char *error;
	bool want_cancel;        /* cancel from inside on_events */
	struct etcd_watch *w;
	struct etcd *call_from_events; /* start a call from inside on_events */
	struct res *call_res;
	int call_k;
};

static void rec_clear(struct rec *r)
{
	for (size_t i = 0; i < r->n; i++) {
		free(r->ev[i].key);
		free(r->ev[i].value);
	}
	free(r->error);
	memset(r, 0, sizeof(*r));
}

static void on_created(void *userdata, int64_t revision)
{
	struct rec *r = userdata;
	r->created++;
	r->created_rev = revision;
	uv_stop(&T->loop);
}

static void on_events(void *userdata, int64_t revision, const struct etcd_event *ev, size_t n)
{
	struct rec *r = userdata;

	assert_true(revision >= r->last_rev);
	r->last_rev = revision;
	if (n == 0)
		r->progress++;
	for (size_t i = 0; i < n && r->n < ELEMENTSOF(r->ev); i++) {
		r->ev[r->n].type = ev[i].type;
		r->ev[r->n].key = xstrdup(ev[i].kv.key);
		r->ev[r->n].value = xstrdup(ev[i].kv.value);
		r->ev[r->n].mod = ev[i].kv.mod_revision;
		r->n++;
	}
	if (r->call_from_events && n > 0 && !r->call_res->done) {
		r->call_k = etcd_range(r->call_from_events, ev[0].kv.key, NULL, on_res, r->call_res, NULL);
		r->call_from_events = NULL;
	}
	if (r->want_cancel && n > 0) {
		etcd_watch_cancel(r->w);
		r->w = NULL;
	}
	uv_stop(&T->loop);
}

static void on_compacted(void *userdata, int64_t compact_revision)
{
	struct rec *r = userdata;
	r->compacted = true;
	r->compact_rev = compact_revision;
	uv_stop(&T->loop);
}

static void on_error(void *userdata, const char *message)
{
	struct rec *r = userdata;
	assert_false(r->failed);
	r->failed = true;
	r->error = xstrdup(message);
	uv_stop(&T->loop);
}

static const struct etcd_watch_callbacks rec_cbs = { on_created, on_events, on_compacted, on_error };

static void test_watch_events(void **state)
{
	struct t *t = *state;
	struct etcd *c = shared_client(t);
	struct rec w = { 0 };
	struct res r = { 0 };
	struct etcd_watch *h = NULL;

	assert_int_equal(etcd_watch_start(c, "/agentd/test/w/", true, 0, 5000, &rec_cbs, &w, &h), 0);
	assert_int_equal(w.created, 0);
	WAIT_FOR(t, w.created, 5000);
	assert_int_equal(w.created, 1);
	assert_true(w.created_rev > 0);

	CALL(t, &r, etcd_put(c, "/agentd/test/w/a", "1", 1, 0, on_res, &r, NULL));
	int64_t put_rev = r.revision;
	CALL(t, &r, etcd_put(c, "/agentd/test/other", "x", 1, 0, on_res, &r, NULL));
	CALL(t, &r, etcd_delete(c, "/agentd/test/w/a", false, on_res, &r, NULL));
	int64_t del_rev = r.revision;
	WAIT_FOR(t, w.n >= 2, 5000);
	assert_int_equal(w.n, 2);
	assert_int_equal(w.ev[0].type, ETCD_EVENT_PUT);
	assert_string_equal(w.ev[0].key, "/agentd/test/w/a");
	assert_string_equal(w.ev[0].value, "1");
	assert_int_equal(w.ev[0].mod, put_rev);
	assert_int_equal(w.ev[1].type, ETCD_EVENT_DELETE);
	assert_string_equal(w.ev[1].key, "/agentd/test/w/a");
	assert_int_equal(w.ev[1].mod, del_rev);
	assert_int_equal(w.last_rev, del_rev);

	/* A progress notification (etcd runs with a 1 s interval): n == 0,
	 * a resume point, and it keeps the 5 s silence deadline away. */
	WAIT_FOR(t, w.progress, 3000);
	assert_true(w.progress >= 1);
	assert_true(w.last_rev >= del_rev);
	assert_false(w.failed);

	etcd_watch_cancel(h);
	/* Nothing after cancel. */
	CALL(t, &r, etcd_put(c, "/agentd/test/w/b", "2", 1, 0, on_res, &r, NULL));
	WAIT_FOR(t, false, 100);
	assert_int_equal(w.n, 2);
	res_clear(&r);
	rec_clear(&w);
}

static void test_watch_from_revision_and_cancel_inside(void **state)
{
	struct t *t = *state;
	struct etcd *c = shared_client(t);
	struct rec w = { 0 };
	struct res r = { 0 };

	CALL(t, &r, etcd_put(c, "/agentd/test/r/a", "1", 1, 0, on_res, &r, NULL));
	int64_t first = r.revision;
	CALL(t, &r, etcd_put(c, "/agentd/test/r/b", "2", 1, 0, on_res, &r, NULL));

	/* From a past revision: both puts arrive; cancelling inside
	 * on_events stops everything, and the handle is freed later. A call
	 * started from inside on_events runs (not inside libcurl). */
	w.want_cancel = true;
	struct res inner = { 0 };
	w.call_from_events = c;
	w.call_res = &inner;
	w.call_k = 99;
	assert_int_equal(etcd_watch_start(c, "/agentd/test/r/", true, first, 0, &rec_cbs, &w, &w.w), 0);
	WAIT_FOR(t, w.n > 0, 5000);
	assert_true(w.n >= 1);
	assert_string_equal(w.ev[0].key, "/agentd/test/r/a");
	assert_int_equal(w.call_k, 0);
	WAIT_FOR(t, inner.done, 5000);
	assert_int_equal(inner.error, 0);
	assert_string_equal(inner.value0, "1");
	res_clear(&inner);
	size_t n = w.n;
	CALL(t, &r, etcd_put(c, "/agentd/test/r/c", "3", 1, 0, on_res, &r, NULL));
	WAIT_FOR(t, false, 100);
	assert_int_equal(w.n, n);
	assert_false(w.failed);
	res_clear(&r);
	rec_clear(&w);
}

static void test_watch_compacted(void **state)
{
	struct t *t = *state;
	struct etcd *c = shared_client(t);
	struct rec w = { 0 };
	struct res r = { 0 };
	_cleanup_free_ char *body = NULL;

	CALL(t, &r, etcd_put(c, "/agentd/test/k/a", "1", 1, 0, on_res, &r, NULL));
	int64_t old = r.revision;
	CALL(t, &r, etcd_put(c, "/agentd/test/k/a", "2", 1, 0, on_res, &r, NULL));
	int64_t now = r.revision;
	body = xasprintf("{\"revision\":\"%" PRId64 "\",\"physical\":true}", now);
	assert_int_equal(gateway(&shared, "/v3/kv/compaction", body, NULL), 200);

	assert_int_equal(etcd_watch_start(c, "/agentd/test/k/", true, old, 0, &rec_cbs, &w, NULL), 0);
	WAIT_FOR(t, w.compacted || w.failed, 5000);
	assert_true(w.compacted);
	assert_false(w.failed);
	assert_int_equal(w.compact_rev, now);
	assert_int_equal(w.n, 0);
	res_clear(&r);
	rec_clear(&w);
}

static void test_watch_silence_sigstop(void **state)
{
	struct t *t = *state;
	struct etcd *c = shared_client(t);
	struct rec w = { 0 };

	assert_int_equal(etcd_watch_start(c, "/agentd/test/s/", true, 0, 1500, &rec_cbs, &w, NULL), 0);
	WAIT_FOR(t, w.created, 5000);
	assert_int_equal(w.created, 1);
	assert_int_equal(kill(shared.pid, SIGSTOP), 0);
	int64_t start = time_monotonic_usec();
	WAIT_FOR(t, w.failed, 5000);
	int64_t elapsed_ms = (time_monotonic_usec() - start) / 1000;
	assert_int_equal(kill(shared.pid, SIGCONT), 0);
	assert_true(w.failed);
	assert_non_null(strstr(w.error, "no message for 1500 ms"));
	assert_true(elapsed_ms >= 400);
	/* The only endpoint stays the current one. */
	assert_non_null(strstr(w.error, etcd_endpoint(c)));
	rec_clear(&w);
}

static void test_watch_etcd_killed(void **state)
{
	struct t *t = *state;
	struct proc p;
	struct rec w = { 0 };
	struct res r = { 0 };

	assert_int_equal(proc_start(&p, "killed", false), 0);
	_cleanup_free_ char *url = xasprintf("etcd://127.0.0.1:%d/x", p.port);
	t->c = client(t, url, NULL);
	assert_int_equal(etcd_watch_start(t->c, "/x/", true, 0, 0, &rec_cbs, &w, NULL), 0);
	WAIT_FOR(t, w.created, 5000);
	assert_int_equal(w.created, 1);
	proc_stop(&p, SIGKILL);
	WAIT_FOR(t, w.failed, 5000);
	assert_true(w.failed);
	_cleanup_free_ char *ep = xasprintf("http://127.0.0.1:%d/v3/watch", p.port);
	assert_non_null(strstr(w.error, ep));
	CALL(t, &r, etcd_range(t->c, "/x/a", NULL, on_res, &r, NULL));
	assert_int_equal(r.error, -EIO);
	res_clear(&r);
	rec_clear(&w);
}

static void test_watch_moves_to_next_endpoint(void **state)
{
	struct t *t = *state;
	int dead = free_port();
	_cleanup_free_ char *url = xasprintf("etcd://127.0.0.1:%d,127.0.0.1:%d/agentd/test", dead, shared.port);
	_cleanup_free_ char *first = xasprintf("http://127.0.0.1:%d", dead);
	struct rec w = { 0 };

	t->c = client(t, url, NULL);
	assert_string_equal(etcd_endpoint(t->c), first);
	assert_int_equal(etcd_watch_start(t->c, "/agentd/test/", true, 0, 0, &rec_cbs, &w, NULL), 0);
	WAIT_FOR(t, w.failed, 5000);
	assert_true(w.failed);
	assert_non_null(strstr(w.error, first));
	assert_string_not_equal(etcd_endpoint(t->c), first);
	rec_clear(&w);
	assert_int_equal(etcd_watch_start(t->c, "/agentd/test/", true, 0, 0, &rec_cbs, &w, NULL), 0);
	WAIT_FOR(t, w.created, 5000);
	assert_int_equal(w.created, 1);
	rec_clear(&w);
}

/* ---- a fake gateway: canned answers cut where the test says ---- */

struct fake {
	pid_t pid;
	int port;
};

/* Reads one request (headers, then Content-Length bytes). */
static void fake_read_request(int fd)
{
	char buf[8192];
	size_t n = 0;
	char *end = NULL;

	while (n < sizeof(buf) - 1 && !(end = strstr(buf, "\r\n\r\n"))) {
		ssize_t k = read(fd, buf + n, sizeof(buf) - 1 - n);
		if (k <= 0)
			return;
		n += (size_t)k;
		buf[n] = '\0';
	}
	if (!end)
		return;
	char *cl = strcasestr(buf, "Content-Length:");
	size_t want = cl ? strtoul(cl + 15, NULL, 10) : 0, have = n - (size_t)(end + 4 - buf);
	while (have < want) {
		ssize_t k = read(fd, buf, sizeof(buf));
		if (k <= 0)
			return;
		have += (size_t)k;
	}
}

/* Every connection gets the parts in order, 20 ms apart (so that they
 * arrive as separate chunks), then the connection closes. */
static void fake_start(struct fake *f, const char *const *parts)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t n = sizeof(a);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 8), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &n), 0);
	f->port = ntohs(a.sin_port);
	f->pid = fork();
	assert_true(f->pid >= 0);
	if (f->pid == 0) {
		for (;;) {
			int fd = accept(lfd, NULL, NULL);
			if (fd < 0)
				_exit(0);
			fake_read_request(fd);
			for (size_t i = 0; parts[i]; i++) {
				if (i > 0)
					msleep(20);
				if (write(fd, parts[i], strlen(parts[i])) < 0)
					break;
			}
			close(fd);
		}
	}
	close(lfd);
}

static void fake_stop(struct fake *f)
{
	if (f->pid > 0) {
		kill(f->pid, SIGKILL);
		waitpid(f->pid, NULL, 0);
	}
	f->pid = 0;
}

#define STREAM_200 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"

static void fake_watch(struct t *t, const char *const *parts, struct rec *w)
{
	struct fake f;

	fake_start(&f, parts);
	_cleanup_free_ char *url = xasprintf("etcd://127.0.0.1:%d/p", f.port);
	t->c = client(t, url, NULL);
	assert_int_equal(etcd_watch_start(t->c, "/p/", true, 3, 0, &rec_cbs, w, NULL), 0);
	WAIT_FOR(t, w->failed || w->compacted, 5000);
	fake_stop(&f);
	_cleanup_free_ char *ep = xasprintf("http://127.0.0.1:%d/v3/watch", f.port);
	if (w->failed)
		assert_non_null(strstr(w->error, ep));
}

/* Messages cut inside a value and several in one chunk without newline;
 * then an error inside the stream. */
static void test_fake_stream_error_inside(void **state)
{
	static const char *const parts[] = {
		STREAM_200,
		"{\"result\":{\"header\":{\"revision\":\"5\"},\"cre",
		"ated\":true}}{\"result\":{\"header\":{\"revision\":\"6\"},\"events\":[{\"kv\":{\"key\":\"L3AvYQ==\","
		"\"mod_revision\":\"6\",\"value\":\"eA==\"}}]}}\n{\"result\":{\"header\":{\"revision\":\"7\"}}}",
		"\n",
		"{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: boom\",\"http_status\":503}}\n",
		NULL,
	};
	struct rec w = { 0 };

	fake_watch(*state, parts, &w);
	assert_int_equal(w.created, 1);
	assert_int_equal(w.created_rev, 5);
	assert_int_equal(w.n, 1);
	assert_string_equal(w.ev[0].key, "/p/a");
	assert_string_equal(w.ev[0].value, "x");
	assert_int_equal(w.progress, 1);
	assert_int_equal(w.last_rev, 7);
	assert_true(w.failed);
	assert_non_null(strstr(w.error, "etcdserver: boom"));
	rec_clear(&w);
}

static void test_fake_stream_garbage(void **state)
{
	static const char *const parts[] = {
		STREAM_200, "{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}\n<html>", NULL,
	};
	struct rec w = { 0 };

	fake_watch(*state, parts, &w);
	assert_int_equal(w.created, 1);
	assert_true(w.failed);
	assert_non_null(strstr(w.error, "not a sequence of JSON objects"));
	rec_clear(&w);
}

static void test_fake_stream_bad_message(void **state)
{
	static const char *const parts[] = {
		STREAM_200, "{\"result\":{\"header\":{\"revision\":\"5\"},\"events\":[{\"kv\":{\"key\":\"%%%%\"}}]}}",
		"{\"result\":{\"header\":{\"revision\":\"6\"}}}", NULL,
	};
	struct rec w = { 0 };

	fake_watch(*state, parts, &w);
	assert_int_equal(w.n, 0);
	assert_int_equal(w.progress, 0); /* nothing after the bad one */
	assert_true(w.failed);
	assert_non_null(strstr(w.error, "$.result.events[0].kv.key"));
	rec_clear(&w);
}

static void test_fake_stream_compacted_not_canceled(void **state)
{
	/* etcd #8231: compact_revision with canceled false. */
	static const char *const parts[] = {
		STREAM_200, "{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}",
		"{\"result\":{\"header\":{\"revision\":\"5\"},\"compact_revision\":\"4\"}}", NULL,
	};
	struct rec w = { 0 };

	fake_watch(*state, parts, &w);
	assert_true(w.compacted);
	assert_false(w.failed);
	assert_int_equal(w.compact_rev, 4);
	rec_clear(&w);
}

static void test_fake_stream_http_error_and_end(void **state)
{
	static const char *const parts[] = {
		"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
		"{\"error\":\"invalid character\",\"message\":\"invalid character\",\"code\":2}", NULL,
	};
	static const char *const ended[] = { STREAM_200, "{\"result\":{\"header\":{\"revision\":\"5\"},\"created\":true}}",
					     NULL };
	struct rec w = { 0 };

	fake_watch(*state, parts, &w);
	assert_true(w.failed);
	assert_non_null(strstr(w.error, "HTTP 500: invalid character"));
	rec_clear(&w);
	teardown(state);
	setup(state);
	fake_watch(*state, ended, &w);
	assert_true(w.failed);
	assert_non_null(strstr(w.error, "the stream ended"));
	rec_clear(&w);
}

/* A 5xx moves a unary call to the next endpoint; a 4xx does not. */
static void test_fake_unary_5xx_then_real(void **state)
{
	struct t *t = *state;
	static const char *const e503[] = {
		"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 65\r\n\r\n"
		"{\"error\":\"etcdserver: no leader\",\"message\":\"no leader\",\"code\":14}",
		NULL,
	};
	static const char *const e400[] = {
		"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 43\r\n\r\n"
		"{\"error\":\"bad\",\"message\":\"bad\",\"code\":3}   ",
		NULL,
	};
	struct fake f, g;
	struct res r = { 0 };

	fake_start(&f, e503);
	_cleanup_free_ char *url = xasprintf("etcd://127.0.0.1:%d,127.0.0.1:%d/agentd/test", f.port, shared.port);
	_cleanup_free_ char *second = xasprintf("http://127.0.0.1:%d", shared.port);
	t->c = client(t, url, NULL);
	CALL(t, &r, etcd_put(t->c, "/agentd/test/5xx", "y", 1, 0, on_res, &r, NULL));
	assert_int_equal(r.error, 0);
	assert_string_equal(etcd_endpoint(t->c), second);
	fake_stop(&f);

	fake_start(&g, e400);
	_cleanup_free_ char *url2 = xasprintf("etcd://127.0.0.1:%d,127.0.0.1:%d/agentd/test", g.port, shared.port);
	struct etcd *c2 = client(t, url2, NULL);
	CALL(t, &r, etcd_put(c2, "/agentd/test/4xx", "y", 1, 0, on_res, &r, NULL));
	assert_int_equal(r.error, -EIO);
	assert_non_null(strstr(r.message, "HTTP 400: bad"));
	assert_int_equal(strncmp(etcd_endpoint(c2), second, strlen(second)) == 0, 0);
	etcd_free(c2);
	fake_stop(&g);
	res_clear(&r);
}

/* ---- TLS with a client certificate ---- */

static void make_certs(void)
{
	_cleanup_free_ char *cmd = xasprintf(
		"cd '%s' && exec >openssl.log 2>&1 && "
		"openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout ca-key.pem -out ca.pem && "
		"printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n' > ext && "
		"openssl req -newkey rsa:2048 -nodes -subj /CN=server -keyout server-key.pem -out server.csr && "
		"openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 1 "
		"-extfile ext -out server.pem && "
		"openssl req -newkey rsa:2048 -nodes -subj /CN=client -keyout client-key.pem -out client.csr && "
		"openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 1 "
		"-extfile ext -out client.pem",
		tmp_dir);
	assert_int_equal(run(cmd), 0);
}

static void test_tls_client_certificate(void **state)
{
	struct t *t = *state;
	struct proc p;
	struct res r = { 0 };
	struct config with = { 0 }, without = { 0 };
	char *error = NULL;

	make_certs();
	assert_int_equal(proc_start(&p, "tls", true), 0);
	_cleanup_free_ char *url = xasprintf("etcd+https://127.0.0.1:%d/secure", p.port);
	with.etcd_ca = xasprintf("%s/ca.pem", tmp_dir);
	with.etcd_cert = xasprintf("%s/client.pem", tmp_dir);
	with.etcd_key = xasprintf("%s/client-key.pem", tmp_dir);
	without.etcd_ca = with.etcd_ca;

	t->c = client(t, url, &with);
	assert_string_equal(etcd_endpoint(t->c) + 0, etcd_endpoint(t->c));
	assert_int_equal(strncmp(etcd_endpoint(t->c), "https://", 8), 0);
	CALL(t, &r, etcd_put(t->c, "/secure/k", "v", 1, 0, on_res, &r, NULL));
	assert_int_equal(r.error, 0);
	CALL(t, &r, etcd_range(t->c, "/secure/k", NULL, on_res, &r, NULL));
	assert_string_equal(r.value0, "v");

	/* Without the client certificate the handshake is refused. */
	struct etcd *bare = client(t, url, &without);
	CALL(t, &r, etcd_range(bare, "/secure/k", NULL, on_res, &r, NULL));
	assert_int_equal(r.error, -EIO);
	etcd_free(bare);

	/* A named file that cannot be read: refused at etcd_new. */
	struct config missing = { .etcd_ca = "/nonexistent/ca.pem" };
	assert_int_equal(etcd_new(&t->loop, t->http, &missing, url, &bare, &error), -EINVAL);
	assert_non_null(strstr(error, "etcd_ca /nonexistent/ca.pem"));
	free(error);

	proc_stop(&p, SIGKILL);
	free(with.etcd_ca);
	free(with.etcd_cert);
	free(with.etcd_key);
	res_clear(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_put_range_delete, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
		cmocka_unit_test_setup_teardown(test_txn_mod_revision, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lease, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_and_free, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_inside_callbacks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_first_endpoint_dead, setup, teardown),
		cmocka_unit_test_setup_teardown(test_all_endpoints_dead, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_events, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_from_revision_and_cancel_inside, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_compacted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_silence_sigstop, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_etcd_killed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_watch_moves_to_next_endpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fake_stream_error_inside, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fake_stream_garbage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fake_stream_bad_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fake_stream_compacted_not_canceled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fake_stream_http_error_and_end, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fake_unary_5xx_then_real, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_client_certificate, setup, teardown),
	};
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

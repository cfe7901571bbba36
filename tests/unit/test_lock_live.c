/* SPDX-License-Identifier: BSD-2-Clause */
/* agent/fleet/lock.c against a real etcd (/usr/bin/etcd on free ports in a
 * temporary directory, killed after the tests; skipped when etcd is not
 * installed): who holds a semaphore's slots and a mutex, who wakes when a
 * holder gives back or dies with its lease, and a waiter whose watch sits on
 * a half-open connection (a proxy here freezes it) that its silence
 * deadline brings back. No fixed sleeps: the loop runs until a condition
 * holds or a deadline passes. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
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
#include "fleet/lock.h"
#include "io/http.h"
#include "util.h"

#define ETCD_BIN "/usr/bin/etcd"

static pid_t etcd_pid;
static int etcd_port;
static char tmp_dir[64];

static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t n = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	bind(fd, (struct sockaddr *)&a, sizeof(a));
	getsockname(fd, (struct sockaddr *)&a, &n);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

static size_t cb_sink(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	return size * nmemb;
}

static long gateway_ok(void)
{
	_cleanup_free_ char *url = xasprintf("http://127.0.0.1:%d/v3/kv/range", etcd_port);
	CURL *e = curl_easy_init();
	long status = 0;

	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 1000L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, "{\"key\":\"Lw==\"}");
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, cb_sink);
	if (curl_easy_perform(e) == CURLE_OK)
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(e);
	return status == 200;
}

static int group_setup(void **state)
{
	char url[64], peer_url[64], cluster[96];
	int peer;

	if (access(ETCD_BIN, X_OK) < 0) {
		fprintf(stderr, "test_lock_live: %s not installed, skipping\n", ETCD_BIN);
		return 0;
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/test_lock.XXXXXX");
	if (!mkdtemp(tmp_dir))
		return -1;
	etcd_port = free_port();
	peer = free_port();
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", etcd_port);
	snprintf(peer_url, sizeof(peer_url), "http://127.0.0.1:%d", peer);
	snprintf(cluster, sizeof(cluster), "t=%s", peer_url);
	_cleanup_free_ char *data = xasprintf("%s/data", tmp_dir), *log = xasprintf("%s/etcd.log", tmp_dir);
	const char *argv[] = { ETCD_BIN, "--name", "t", "--data-dir", data, "--listen-client-urls", url,
			       "--advertise-client-urls", url, "--listen-peer-urls", peer_url,
			       "--initial-advertise-peer-urls", peer_url, "--initial-cluster", cluster,
			       "--log-level", "error", "--logger", "zap", NULL };
	etcd_pid = fork();
	if (etcd_pid == 0) {
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		execv(ETCD_BIN, (char **)argv);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		if (gateway_ok())
			return 0;
		nanosleep(&(struct timespec){ .tv_nsec = 20000000L }, NULL);
	}
	return -1;
}

static int group_teardown(void **state)
{
	if (etcd_pid > 0) {
		kill(etcd_pid, SIGKILL);
		waitpid(etcd_pid, NULL, 0);
	}
	if (tmp_dir[0]) {
		_cleanup_free_ char *cmd = xasprintf("rm -rf '%s'", tmp_dir);
		if (system(cmd) != 0)
			return 0;
	}
	return 0;
}

/* ---- the loop under test ---- */

struct contender {
	const char *name;
	int64_t lease;
	struct fleet_lock *l;
	int acquired, errors;
	char holders[256]; /* the last on_waiting's, joined with "," */
	char ignored[512]; /* the last on_waiting's junk keys, joined with "," */
	int waits;         /* on_waiting calls */
};

struct t {
	uv_loop_t loop;
	struct http *http;
	struct etcd *c;
	struct config config;
};

static void on_deadline(uv_timer_t *timer)
{
}

static void run_once(struct t *t, int64_t ms)
{
	uv_timer_t timer;

	uv_timer_init(&t->loop, &timer);
	uv_timer_start(&timer, on_deadline, ms > 0 ? (uint64_t)ms : 0, 0);
	uv_run(&t->loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&timer, NULL);
	uv_run(&t->loop, UV_RUN_NOWAIT);
}

#define WAIT_FOR(t, cond, ms)                                                   \
	do {                                                                    \
		int64_t end_ = time_monotonic_usec() + (int64_t)(ms) * 1000;    \
		while (!(cond) && time_monotonic_usec() < end_)                 \
			run_once((t), (end_ - time_monotonic_usec()) / 1000 + 1); \
	} while (0)

static int setup(void **state)
{
	struct t *t = xcalloc(1, sizeof(*t));
	_cleanup_free_ char *url = NULL;
	char *error = NULL;

	if (etcd_pid <= 0)
		skip();
	assert_int_equal(uv_loop_init(&t->loop), 0);
	assert_int_equal(http_new(&t->loop, &t->http), 0);
	config_defaults(&t->config);
	url = xasprintf("etcd://127.0.0.1:%d/locktest/%d", etcd_port, (int)(time_now_usec() % 1000000));
	assert_int_equal(etcd_new(&t->loop, t->http, &t->config, url, &t->c, &error), 0);
	*state = t;
	return 0;
}

static int teardown(void **state)
{
	struct t *t = *state;

	etcd_free(t->c);
	http_free(t->http);
	config_free(&t->config);
	while (uv_run(&t->loop, UV_RUN_NOWAIT) != 0)
		;
	uv_loop_close(&t->loop);
	free(t);
	return 0;
}

static void on_granted(void *userdata, const struct etcd_result *r)
{
	int64_t *lease = userdata;

	assert_int_equal(r->error, 0);
	*lease = r->lease;
}

static int64_t grant(struct t *t, long ttl)
{
	int64_t lease = 0;

	assert_int_equal(etcd_lease_grant(t->c, ttl, on_granted, &lease, NULL), 0);
	WAIT_FOR(t, lease != 0, 3000);
	assert_true(lease != 0);
	return lease;
}

static void on_acquired(void *userdata)
{
	((struct contender *)userdata)->acquired++;
}

static void join(char *buf, size_t size, const json_t *a)
{
	size_t i, n = 0;
	json_t *h;

	buf[0] = '\0';
	json_array_foreach(a, i, h)
		n += (size_t)snprintf(buf + n, size - n, "%s%s", i ? "," : "", json_string_value(h));
}

static void on_waiting(void *userdata, const json_t *holders, const json_t *ignored)
{
	struct contender *c = userdata;

	/* Never empty (issue 12, B4): a waiter always waits for someone. */
	assert_true(json_array_size(holders) > 0);
	assert_true(json_is_array(ignored));
	c->waits++;
	join(c->holders, sizeof(c->holders), holders);
	join(c->ignored, sizeof(c->ignored), ignored);
}

static void on_error(void *userdata, const char *message)
{
	((struct contender *)userdata)->errors++;
}

static const struct fleet_lock_callbacks cbs = { on_acquired, on_waiting, on_error };

/* Contends in order: each one's key is in before the next one's. */
static void contend(struct t *t, struct contender *c, enum fleet_lock_kind kind, unsigned slots)
{
	c->lease = grant(t, 30);
	assert_int_equal(fleet_lock_acquire(&t->loop, t->c, kind, "x", slots, c->lease, 0, c->name, &cbs, c, &c->l), 0);
	WAIT_FOR(t, c->acquired || c->holders[0], 3000);
}

static void release(struct contender *c)
{
	fleet_lock_release(c->l);
	c->l = NULL;
}

static void test_semaphore_slots(void **state)
{
	struct t *t = *state;
	struct contender c[4] = { { .name = "A" }, { .name = "B" }, { .name = "C" }, { .name = "D" } };

	for (int i = 0; i < 4; i++)
		contend(t, &c[i], FLEET_LOCK_SEMAPHORE, 2);
	assert_int_equal(c[0].acquired, 1);
	assert_int_equal(c[1].acquired, 1);
	assert_true(fleet_lock_held(c[0].l) && fleet_lock_held(c[1].l));
	assert_int_equal(c[2].acquired + c[3].acquired, 0);
	assert_string_equal(c[2].holders, "A,B");
	assert_string_equal(c[3].holders, "A,B");

	/* The second holder goes first: the first waiter wakes, although the
	 * first holder (two places ahead of it) stays. */
	release(&c[1]);
	WAIT_FOR(t, c[2].acquired, 3000);
	assert_int_equal(c[2].acquired, 1);
	assert_int_equal(c[3].acquired, 0);

	/* A waiter that leaves does not make the one behind it miss its turn. */
	struct contender e = { .name = "E" };
	contend(t, &e, FLEET_LOCK_SEMAPHORE, 2); /* ranks A, C, D, E */
	assert_int_equal(e.acquired, 0);
	release(&c[3]); /* D leaves: E is next, and must see A go */
	/* A dead holder (its lease revoked) frees its slot. */
	assert_int_equal(etcd_lease_revoke(t->c, c[0].lease, on_granted, &(int64_t){ 0 }, NULL), 0);
	WAIT_FOR(t, e.acquired, 3000);
	assert_int_equal(e.acquired, 1);
	/* A's handle learnt that its key went. */
	WAIT_FOR(t, c[0].errors, 3000);
	assert_int_equal(c[0].errors, 1);
	assert_false(fleet_lock_held(c[0].l));
	release(&c[0]);
	release(&c[2]);
	release(&e);
	WAIT_FOR(t, false, 50);
}

static void test_mutex(void **state)
{
	struct t *t = *state;
	struct contender a = { .name = "a" }, b = { .name = "b" };

	contend(t, &a, FLEET_LOCK_MUTEX, 0);
	contend(t, &b, FLEET_LOCK_MUTEX, 0);
	assert_int_equal(a.acquired, 1);
	assert_int_equal(b.acquired, 0);
	assert_string_equal(b.holders, "a");
	release(&a);
	WAIT_FOR(t, b.acquired, 3000);
	assert_int_equal(b.acquired, 1);
	assert_int_equal(b.errors, 0);
	release(&b);
	WAIT_FOR(t, false, 50);
	/* Bad arguments. */
	assert_int_equal(fleet_lock_acquire(&t->loop, t->c, FLEET_LOCK_MUTEX, "../x", 1, 1, 0, "h", &cbs, &a, &a.l),
			 -EINVAL);
	assert_int_equal(fleet_lock_acquire(&t->loop, t->c, FLEET_LOCK_SEMAPHORE, "x", 0, 1, 0, "h", &cbs, &a, &a.l),
			 -EINVAL);
	assert_int_equal(fleet_lock_acquire(&t->loop, t->c, FLEET_LOCK_MUTEX, "x", 1, 0, 0, "h", &cbs, &a, &a.l),
			 -EINVAL);
}

/* The holders a waiter names follow the holders that go, not only the
 * keys just ahead of it (issue 12, B4): with c behind b behind a, a's
 * going makes b the holder, and c says so (with no range of its own). */
static void test_holders_kept_current(void **state)
{
	struct t *t = *state;
	struct contender a = { .name = "a" }, b = { .name = "b" }, c = { .name = "c" };
	struct contender s[5] = { { .name = "A" }, { .name = "B" }, { .name = "C" }, { .name = "D" }, { .name = "E" } };

	contend(t, &a, FLEET_LOCK_MUTEX, 0);
	contend(t, &b, FLEET_LOCK_MUTEX, 0);
	contend(t, &c, FLEET_LOCK_MUTEX, 0);
	assert_string_equal(c.holders, "a");
	release(&a);
	WAIT_FOR(t, b.acquired && strcmp(c.holders, "b") == 0, 3000);
	assert_int_equal(b.acquired, 1);
	assert_string_equal(c.holders, "b");
	assert_int_equal(c.acquired, 0);
	release(&b);
	WAIT_FOR(t, c.acquired, 3000);
	assert_int_equal(c.acquired, 1);
	release(&c);

	/* A semaphore of 2: A, B hold; C, D, E wait. A goes: C holds, and
	 * D (watching B, C) and E (watching C, D) both name B and C. */
	for (int i = 0; i < 5; i++)
		contend(t, &s[i], FLEET_LOCK_SEMAPHORE, 2);
	assert_string_equal(s[4].holders, "A,B");
	release(&s[0]);
	WAIT_FOR(t, s[2].acquired && strcmp(s[3].holders, "B,C") == 0 && strcmp(s[4].holders, "B,C") == 0, 3000);
	assert_int_equal(s[2].acquired, 1);
	assert_string_equal(s[3].holders, "B,C");
	assert_string_equal(s[4].holders, "B,C");
	release(&s[1]); /* just ahead of D: D holds; E names C, D */
	WAIT_FOR(t, s[3].acquired && strcmp(s[4].holders, "C,D") == 0, 3000);
	assert_string_equal(s[4].holders, "C,D");
	for (int i = 2; i < 5; i++)
		release(&s[i]);
	WAIT_FOR(t, false, 50);
}

static void on_put(void *userdata, const struct etcd_result *r)
{
	assert_int_equal(r->error, 0);
	(*(int *)userdata)++;
}

/* Keys under the name that are no contender's hold nothing (issue 12,
 * #6): one not in hex, one put without a lease, one whose name is another
 * lease than its own. They were there first; a still holds at once, and b,
 * waiting, names a and the junk it ignores. */
static void test_junk_keys_ignored(void **state)
{
	struct t *t = *state;
	struct contender a = { .name = "a" }, b = { .name = "b" };
	int64_t l1 = grant(t, 30), l2 = grant(t, 30);
	_cleanup_free_ char *k1 = xasprintf("%s/locks/x/nothex", etcd_prefix(t->c));
	_cleanup_free_ char *k2 = xasprintf("%s/locks/x/%" PRIx64, etcd_prefix(t->c), (uint64_t)l1 + 1000);
	_cleanup_free_ char *k3 = xasprintf("%s/locks/x/%" PRIx64, etcd_prefix(t->c), (uint64_t)l1);
	int done = 0;

	assert_int_equal(etcd_put(t->c, k1, "garbage", 7, 0, on_put, &done, NULL), 0);
	assert_int_equal(etcd_put(t->c, k2, "junk", 4, 0, on_put, &done, NULL), 0);
	assert_int_equal(etcd_put(t->c, k3, "other", 5, l2, on_put, &done, NULL), 0);
	WAIT_FOR(t, done == 3, 3000);
	assert_int_equal(done, 3);
	contend(t, &a, FLEET_LOCK_MUTEX, 0);
	assert_int_equal(a.acquired, 1);
	contend(t, &b, FLEET_LOCK_MUTEX, 0);
	assert_int_equal(b.acquired, 0);
	assert_string_equal(b.holders, "a");
	assert_non_null(strstr(b.ignored, "/locks/x/nothex"));
	assert_non_null(strstr(b.ignored, k2 + strlen(etcd_prefix(t->c))));
	assert_non_null(strstr(b.ignored, k3 + strlen(etcd_prefix(t->c))));
	release(&a);
	WAIT_FOR(t, b.acquired, 3000);
	assert_int_equal(b.acquired, 1);
	release(&b);
	WAIT_FOR(t, false, 50);
}

/* ---- a TCP proxy to etcd whose connections can be frozen: bytes stop
 * flowing both ways but the sockets stay open, as on a half-open
 * connection; connections made after the freeze flow. */

#define PROXY_PAIRS 64

static struct {
	int listen_fd, port;
	int fds[PROXY_PAIRS][2]; /* client, etcd; -1: free */
	bool frozen[PROXY_PAIRS];
	volatile int freeze;     /* set by the test: freeze every pair open now */
	volatile int stop;
	pthread_t thread;
} proxy;

static int connect_etcd(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				 .sin_port = htons((uint16_t)etcd_port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		fd = -1;
	}
	return fd;
}

static void proxy_close(int i)
{
	close(proxy.fds[i][0]);
	close(proxy.fds[i][1]);
	proxy.fds[i][0] = proxy.fds[i][1] = -1;
}

static void *proxy_main(void *arg)
{
	while (!proxy.stop) {
		struct pollfd p[1 + 2 * PROXY_PAIRS];
		int map[1 + 2 * PROXY_PAIRS];
		nfds_t n = 0;
		char buf[16384];

		if (proxy.freeze) {
			for (int i = 0; i < PROXY_PAIRS; i++)
				proxy.frozen[i] = proxy.fds[i][0] >= 0;
			proxy.freeze = 0;
		}
		p[n++] = (struct pollfd){ .fd = proxy.listen_fd, .events = POLLIN };
		for (int i = 0; i < PROXY_PAIRS; i++)
			for (int k = 0; k < 2 && proxy.fds[i][0] >= 0 && !proxy.frozen[i]; k++) {
				map[n] = i * 2 + k;
				p[n++] = (struct pollfd){ .fd = proxy.fds[i][k], .events = POLLIN };
			}
		if (poll(p, n, 20) <= 0)
			continue;
		if (p[0].revents & POLLIN) {
			int cfd = accept(proxy.listen_fd, NULL, NULL), sfd = cfd >= 0 ? connect_etcd() : -1;
			int i = 0;

			while (i < PROXY_PAIRS && proxy.fds[i][0] >= 0)
				i++;
			if (sfd < 0 || i == PROXY_PAIRS) {
				if (cfd >= 0)
					close(cfd);
				if (sfd >= 0)
					close(sfd);
			} else {
				proxy.fds[i][0] = cfd;
				proxy.fds[i][1] = sfd;
				proxy.frozen[i] = false;
			}
		}
		for (nfds_t j = 1; j < n; j++) {
			int i = map[j] / 2, k = map[j] % 2;
			ssize_t got;

			if (!(p[j].revents & (POLLIN | POLLHUP | POLLERR)) || proxy.fds[i][0] < 0)
				continue;
			got = read(proxy.fds[i][k], buf, sizeof(buf));
			if (got <= 0 || write(proxy.fds[i][1 - k], buf, (size_t)got) != got)
				proxy_close(i);
		}
	}
	for (int i = 0; i < PROXY_PAIRS; i++)
		if (proxy.fds[i][0] >= 0)
			proxy_close(i);
	return arg;
}

static void proxy_start(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);

	memset(proxy.fds, -1, sizeof(proxy.fds));
	proxy.stop = proxy.freeze = 0;
	proxy.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(bind(proxy.listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(proxy.listen_fd, 16), 0);
	getsockname(proxy.listen_fd, (struct sockaddr *)&a, &len);
	proxy.port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&proxy.thread, NULL, proxy_main, NULL), 0);
}

static void proxy_stop(void)
{
	proxy.stop = 1;
	pthread_join(proxy.thread, NULL);
	close(proxy.listen_fd);
}

/* A waiter (its client through the proxy) whose connections freeze
 * before the holder gives back: only its watch's silence deadline brings
 * the news (a new stream, a new range). Without it, it would wait forever. */
static void test_half_open_watch(void **state)
{
	struct t *t = *state;
	struct contender a = { .name = "a" }, b = { .name = "b" };
	_cleanup_free_ char *url = NULL;
	struct etcd *pc = NULL;
	char *error = NULL;
	int64_t t0;

	proxy_start();
	url = xasprintf("etcd://127.0.0.1:%d%s", proxy.port, etcd_prefix(t->c));
	assert_int_equal(etcd_new(&t->loop, t->http, &t->config, url, &pc, &error), 0);
	etcd_set_timeouts(pc, 800, 500);
	contend(t, &a, FLEET_LOCK_MUTEX, 0);
	assert_int_equal(a.acquired, 1);
	b.lease = grant(t, 30);
	assert_int_equal(fleet_lock_acquire(&t->loop, pc, FLEET_LOCK_MUTEX, "x", 1, b.lease, 400, b.name, &cbs, &b, &b.l),
			 0);
	WAIT_FOR(t, b.holders[0], 3000);
	assert_string_equal(b.holders, "a");

	proxy.freeze = 1;
	while (proxy.freeze)
		nanosleep(&(struct timespec){ .tv_nsec = 1000000L }, NULL);
	t0 = time_monotonic_usec();
	release(&a); /* through the direct client: etcd deletes a's key */
	WAIT_FOR(t, b.acquired, 4000);
	assert_int_equal(b.acquired, 1);
	assert_int_equal(b.errors, 0);
	fprintf(stderr, "test_half_open_watch: the waiter held %.2f s after the holder gave back\n",
		(double)(time_monotonic_usec() - t0) / 1e6);
	release(&b);
	WAIT_FOR(t, false, 50);
	etcd_free(pc);
	proxy_stop();
}

/* etcd frozen (SIGSTOP) past the watches' silence and the calls' timeout:
 * the waiter's re-ranks fail and are tried again, keeping its key and its
 * place (no on_error); once etcd is back and the holder gives back, it
 * holds. */
static void test_frozen_etcd(void **state)
{
	struct t *t = *state;
	struct contender a = { .name = "a" }, b = { .name = "b" }, c = { .name = "c" };

	etcd_set_timeouts(t->c, 500, 300);
	contend(t, &a, FLEET_LOCK_MUTEX, 0);
	b.lease = grant(t, 30);
	assert_int_equal(fleet_lock_acquire(&t->loop, t->c, FLEET_LOCK_MUTEX, "x", 1, b.lease, 300, b.name, &cbs, &b, &b.l),
			 0);
	WAIT_FOR(t, b.holders[0], 3000);
	assert_string_equal(b.holders, "a");
	assert_int_equal(kill(etcd_pid, SIGSTOP), 0);
	WAIT_FOR(t, false, 1500); /* the freeze: silences and call timeouts pass */
	assert_int_equal(kill(etcd_pid, SIGCONT), 0);
	contend(t, &c, FLEET_LOCK_MUTEX, 0); /* after b: must not pass it */
	assert_string_equal(c.holders, "a");
	release(&a);
	WAIT_FOR(t, b.acquired, 4000);
	assert_int_equal(b.acquired, 1);
	assert_int_equal(b.errors, 0);
	assert_int_equal(c.acquired, 0);
	release(&b);
	WAIT_FOR(t, c.acquired, 3000);
	assert_int_equal(c.acquired, 1);
	release(&c);
	WAIT_FOR(t, false, 50);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_semaphore_slots, setup, teardown),
		cmocka_unit_test_setup_teardown(test_mutex, setup, teardown),
		cmocka_unit_test_setup_teardown(test_holders_kept_current, setup, teardown),
		cmocka_unit_test_setup_teardown(test_junk_keys_ignored, setup, teardown),
		cmocka_unit_test_setup_teardown(test_half_open_watch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_frozen_etcd, setup, teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

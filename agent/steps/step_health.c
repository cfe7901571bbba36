/* SPDX-License-Identifier: BSD-2-Clause */
/* The health step kind (step_health.h): HTTP checks through the loop's
 * client (io/http.c) or a command through io/exec.c, again every
 * interval until they pass or the timeout is over. */
#include "step_health.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/exec.h"
#include "io/http.h"
#include "step_util.h"
#include "strv.h"
#include "util.h"

#define HEALTH_TAIL_MAX 512

struct health_data {
	char **urls;             /* NULL-terminated, or NULL */
	size_t n_urls;
	char **argv;             /* or NULL */
	char **env;
	long timeout_sec;
	long interval_ms;

	/* While running. */
	struct plan_exec *x;     /* borrowed; NULL when not running */
	uv_timer_t *timer;       /* owned until closed */
	struct http_request *req;
	struct exec *proc;       /* borrowed: freed by exec.c after done */
	size_t next_url;         /* the URLs before it answered */
	int64_t started, deadline; /* monotonic usec */
	unsigned checks;
	bool said_not_yet;       /* the step's output said it checks again */
	bool cancelled;
	char *last;              /* why the last check did not pass */
	char tail[HEALTH_TAIL_MAX];
	size_t tail_len;
};

static int64_t i64_min(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

static void health_data_free(void *data)
{
	struct health_data *d = data;

	if (!d)
		return;
	strv_free(d->urls);
	strv_free(d->argv);
	strv_free(d->env);
	free(d->last);
	free(d);
}

static void on_timer_closed(uv_handle_t *h)
{
	free(h);
}

static void health_finish(struct health_data *d, enum step_status status, const char *error)
{
	struct plan_exec *x = d->x;

	d->x = NULL;
	if (d->timer) {
		uv_timer_stop(d->timer);
		uv_close((uv_handle_t *)d->timer, on_timer_closed);
		d->timer = NULL;
	}
	if (status == STEP_FAILED)
		plan_step_done(x, status, "%s", error);
	else
		plan_step_done(x, status, NULL);
}

static void health_check(struct health_data *d);

static void on_timer(uv_timer_t *t)
{
	health_check(t->data);
}

/* The last check did not pass (why in d->last): again after the interval,
 * or fails when the timeout is over. */
static void health_again(struct health_data *d)
{
	int64_t left = d->deadline - time_monotonic_usec();

	if (d->cancelled)
		return health_finish(d, STEP_FAILED, "cancelled");
	if (left <= 0) {
		_cleanup_free_ char *msg = xasprintf("not healthy within %ld s (%u checks; last: %s)", d->timeout_sec,
						     d->checks, d->last ? d->last : "no answer");
		return health_finish(d, STEP_FAILED, msg);
	}
	if (!d->said_not_yet) {
		/* Once, at the first check that did not pass (with several
		 * URLs, not always the first check). */
		d->said_not_yet = true;
		_cleanup_free_ char *line = xasprintf("health: not yet (%s); checking every %ld ms for %ld s\n",
						      d->last ? d->last : "no answer", d->interval_ms, d->timeout_sec);
		plan_step_output(d->x, line, strlen(line));
	}
	(void)uv_timer_start(d->timer, on_timer, (uint64_t)i64_min((int64_t)d->interval_ms, left / 1000 + 1), 0);
}

static void health_passed(struct health_data *d)
{
	_cleanup_free_ char *line = xasprintf("health: passed after %.1f s (%u checks)\n",
					      (double)(time_monotonic_usec() - d->started) / 1e6, d->checks);

	plan_step_output(d->x, line, strlen(line));
	health_finish(d, STEP_UNCHANGED, NULL);
}

static long check_limit_ms(const struct health_data *d)
{
	int64_t left = (d->deadline - time_monotonic_usec()) / 1000;

	left = i64_min(left, (int64_t)HEALTH_CHECK_MAX_MS);
	return (long)(left < 100 ? 100 : left);
}

/* ---- HTTP */

static int discard_body(void *userdata, long status, const char *data, size_t len)
{
	return 0;
}

static void on_http_done(void *userdata, const struct http_response *r)
{
	struct health_data *d = userdata;

	d->req = NULL;
	if (!r->error && r->status >= 200 && r->status < 400) {
		if (++d->next_url >= d->n_urls)
			return health_passed(d);
		return health_check(d); /* the next client at once */
	}
	free(d->last);
	d->last = r->error ? xstrdup(r->error) : xasprintf("%s answered HTTP %ld", d->urls[d->next_url], r->status);
	health_again(d);
}

/* ---- command */

static void on_cmd_output(void *userdata, const char *data, size_t len)
{
	struct health_data *d = userdata;

	/* The tail of the last check's output, for the error. */
	if (len >= HEALTH_TAIL_MAX) {
		memcpy(d->tail, data + len - HEALTH_TAIL_MAX, HEALTH_TAIL_MAX);
		d->tail_len = HEALTH_TAIL_MAX;
		return;
	}
	if (d->tail_len + len > HEALTH_TAIL_MAX) {
		size_t drop = d->tail_len + len - HEALTH_TAIL_MAX;
		memmove(d->tail, d->tail + drop, d->tail_len - drop);
		d->tail_len -= drop;
	}
	memcpy(d->tail + d->tail_len, data, len);
	d->tail_len += len;
}

static void on_cmd_done(void *userdata, const struct exec_result *r)
{
	struct health_data *d = userdata;
	_cleanup_free_ char *why = NULL;

	d->proc = NULL;
	if (!r->spawn_error && !r->timed_out && !r->term_signal && r->exit_status == 0)
		return health_passed(d);
	why = exec_result_describe(r, check_limit_ms(d));
	while (d->tail_len > 0 && (d->tail[d->tail_len - 1] == '\n' || d->tail[d->tail_len - 1] == '\r'))
		d->tail_len--;
	free(d->last);
	d->last = d->tail_len ? xasprintf("%s %s: %.*s", d->argv[0], why, (int)d->tail_len, d->tail)
			      : xasprintf("%s %s", d->argv[0], why);
	health_again(d);
}

static void health_check(struct health_data *d)
{
	int r;

	if (d->cancelled)
		return health_finish(d, STEP_FAILED, "cancelled");
	d->checks++;
	if (d->urls) {
		struct http_options o = {
			.url = d->urls[d->next_url],
			.timeout_ms = check_limit_ms(d),
			.connect_timeout_ms = check_limit_ms(d),
			.no_proxy = true,
			.on_body = discard_body,
		};
		r = http_request_start(plan_exec_env(d->x)->http, &o, on_http_done, d, &d->req);
		if (r < 0) {
			_cleanup_free_ char *msg = xasprintf("cannot request %s: %s", o.url, strerror(-r));
			return health_finish(d, STEP_FAILED, msg);
		}
		return;
	}
	struct exec_opts o = {
		.argv = d->argv,
		.env = d->env,
		.timeout_ms = check_limit_ms(d),
	};
	d->tail_len = 0;
	r = exec_start(plan_exec_env(d->x)->loop, &o, on_cmd_output, on_cmd_done, d, &d->proc);
	if (r < 0) {
		_cleanup_free_ char *msg = xasprintf("cannot start %s: %s", d->argv[0], strerror(-r));
		return health_finish(d, STEP_FAILED, msg);
	}
}

static void health_apply(struct step *s, struct plan_exec *x)
{
	struct health_data *d = s->data;

	if (d->urls && !plan_exec_env(x)->http)
		return plan_step_done(x, STEP_FAILED, "no HTTP client to check with");
	d->x = x;
	d->cancelled = false;
	d->checks = 0;
	d->said_not_yet = false;
	d->next_url = 0;
	d->started = time_monotonic_usec();
	d->deadline = d->started + (int64_t)d->timeout_sec * 1000000;
	d->timer = xcalloc(1, sizeof(*d->timer));
	(void)uv_timer_init(plan_exec_env(x)->loop, d->timer);
	d->timer->data = d;
	health_check(d);
}

static void health_cancel(struct step *s)
{
	struct health_data *d = s->data;

	if (!d->x)
		return;
	d->cancelled = true;
	if (d->proc)
		exec_terminate(d->proc); /* its done finishes the step */
	else if (d->req) {
		http_request_cancel(d->req);
		d->req = NULL;
		health_finish(d, STEP_FAILED, "cancelled");
	} else
		health_finish(d, STEP_FAILED, "cancelled");
}

/* The plan says what would be checked: "GET URL, URL: 2xx or 3xx within
 * N s", or "ARGV0 exits 0 within N s". */
static int health_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			   char **ret_error)
{
	struct health_data *d = s->data;
	_cleanup_free_ char *what = NULL;

	if (d->urls) {
		struct buf b = { 0 };

		for (size_t i = 0; i < d->n_urls; i++)
			buf_printf(&b, "%s%s", i ? ", " : "GET ", d->urls[i]);
		buf_printf(&b, ": 2xx or 3xx within %ld s", d->timeout_sec);
		what = buf_steal(&b);
	} else
		what = xasprintf("%s exits 0 within %ld s", d->argv[0], d->timeout_sec);
	free(s->message);
	s->message = what;
	what = NULL;
	*ret_action = "check";
	return 0;
}

static const struct step_ops health_ops = {
	.kind = "health",
	.describe = health_describe,
	.apply = health_apply,
	.cancel = health_cancel,
	.free_data = health_data_free,
};

struct step *plan_add_health(struct plan *p, const char *target, const struct health_step_opts *o,
			     char **ret_error)
{
	struct health_data *d;

	if (!o || (!o->urls == !o->argv) || (o->urls && !o->urls[0]) || (o->argv && !o->argv[0]) ||
	    o->timeout_sec < 1) {
		*ret_error = xasprintf("health check of %s: one of URLs or a command, and a timeout of at least 1 s",
				       target ? target : "?");
		return NULL;
	}
	d = xcalloc(1, sizeof(*d));
	d->urls = o->urls ? strv_dup((const char *const *)o->urls) : NULL;
	d->n_urls = d->urls ? strv_length((const char *const *)d->urls) : 0;
	d->argv = o->argv ? strv_dup((const char *const *)o->argv) : NULL;
	d->env = o->env ? strv_dup((const char *const *)o->env) : NULL;
	d->timeout_sec = o->timeout_sec;
	d->interval_ms = o->interval_ms > 0 ? o->interval_ms : HEALTH_INTERVAL_MS;
	return plan_add(p, &health_ops, target, d);
}

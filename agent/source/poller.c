/* SPDX-License-Identifier: BSD-2-Clause */
/* The poller shared by the polled sources: see poller.h. */
#include "poller.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "config.h"
#include "io/http.h"
#include "source.h"

long poller_interval(const struct poller *p)
{
	long i = p->s->config ? p->s->config->poll_interval : 0;
	return i > 0 ? i : 60;
}

long poller_request_timeout_ms(const struct poller *p, long cap_ms)
{
	long ms = poller_interval(p) * 1000;
	if (ms > cap_ms)
		ms = cap_ms;
	return ms < 1000 ? 1000 : ms;
}

static void poller_free(struct poller *p)
{
	free(p->shown_url);
	p->free(p);
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

void poller_kick(struct poller *p)
{
	if (!p->stopped && !p->busy)
		(void)uv_timer_start(&p->timer, on_poll_timer, 0, 0);
}

void poller_rest(struct poller *p)
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

void poller_fail(struct poller *p, bool count, const char *fmt, ...)
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

void poller_succeed(struct poller *p, const char *data, size_t len)
{
	p->s->last_fetch_usec = time_now_usec();
	p->failures = 0;
	poller_rest(p);
	if (data)
		source_deliver(p->s, data, len);
}

int poller_start(struct source *s, struct poller *p, void (*fetch)(struct poller *p),
		 void (*free_fn)(struct poller *p))
{
	int r;

	p->s = s;
	p->fetch = fetch;
	p->free = free_fn;
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
	return 0;
}

void poller_reload(struct source *s)
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

void poller_stop(struct source *s)
{
	if (s->data)
		poller_stop_internal(s->data);
}

void poller_free_data(void *data)
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

/* SPDX-License-Identifier: BSD-2-Clause */
/* The poller that the polled sources (http.c, imds.c) share: a timer, at most
 * one fetch under way, a failure count for source_next_delay_ms()'s backoff.
 * A scheme embeds struct poller first in its own state (s->data points to
 * the poller) and gives two functions: fetch (start one fetch, which ends in
 * poller_succeed or poller_fail) and free (its own members and the struct).
 *
 * The next poll is scheduled before the engine's callback runs, so that a
 * reload or stop from inside the callback simply overrides it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "util.h"

struct http_request;
struct source;

struct poller {
	struct source *s;          /* borrowed; not touched once stopped */
	uv_timer_t timer;          /* data points back here */
	void (*fetch)(struct poller *p);
	void (*free)(struct poller *p); /* the scheme's members and the enclosing struct */
	struct http_request *req;  /* in flight, NULL when idle */
	unsigned failures;         /* consecutive; drives the backoff */
	bool busy;                 /* a fetch (perhaps several requests) is under way */
	bool again;                /* reloaded while busy: fetch once more right after */
	bool halted;               /* polling paused until a reload (IMDS answered 403) */
	bool reloaded;             /* reload asked: the next fetch starts from scratch */
	bool stopped;
	bool timer_closed;
	bool free_pending;         /* free_data ran before the timer's close callback */
	char *shown_url;           /* owned: s->url without credentials */
};

/* Initialises p (embedded, zeroed by the caller), sets s->data to it and
 * schedules the first fetch at once, from the loop (start never calls back
 * into the engine). Returns 0 or uv_timer_init's negative errno, in which
 * case p was freed through free. */
int poller_start(struct source *s, struct poller *p, void (*fetch)(struct poller *p),
		 void (*free_fn)(struct poller *p));
/* poll_interval in seconds, 60 when unset. */
long poller_interval(const struct poller *p);
/* A request's whole-transfer timeout in ms: the poll interval, capped at
 * cap_ms, at least 1000. */
long poller_request_timeout_ms(const struct poller *p, long cap_ms);
/* Fetches again at once (unless a fetch is under way or the poller is
 * stopped). */
void poller_kick(struct poller *p);
/* The fetch is over: schedule the next one (at once when reloaded meanwhile,
 * never while halted or stopped). Called before the engine hears the
 * result. */
void poller_rest(struct poller *p);
/* The fetch failed: count counts it for the backoff (false: poll again at the
 * normal interval). Then the engine hears the message. */
void poller_fail(struct poller *p, bool count, const char *fmt, ...) _printf_(3, 4);
/* The fetch succeeded: data (may be NULL: nothing to deliver) goes to the
 * engine. */
void poller_succeed(struct poller *p, const char *data, size_t len);

/* The source_ops members every polled scheme uses. */
void poller_reload(struct source *s);
void poller_stop(struct source *s);
void poller_free_data(void *data);

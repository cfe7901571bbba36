/* SPDX-License-Identifier: BSD-2-Clause */
/* The health step kind: waits until an app answers, polled, within a
 * timeout (design.md §9 Rolling deploys: a deploy holds its slot until its
 * health check passed). Either every URL answers 2xx or 3xx (the clients of
 * a built-in app on 127.0.0.1), or a command exits 0 (custom recipes). It
 * changes nothing: "unchanged" when healthy, "failed" with the last answer
 * of the last check when the timeout passed. */
#pragma once

#include "plan.h"

struct health_step_opts {
	char *const *urls;       /* NULL-terminated http:// URLs, or NULL */
	char *const *argv;       /* a command, or NULL; argv exec'd directly, never a shell */
	char *const *env;        /* the command's "K=V", NULL-terminated, may be NULL */
	long timeout_sec;        /* >= 1: the whole wait */
	long interval_ms;        /* between checks; 0: HEALTH_INTERVAL_MS */
};
#define HEALTH_INTERVAL_MS 250
/* One check's own limit (an HTTP request, a command), within the timeout. */
#define HEALTH_CHECK_MAX_MS 10000

/* Exactly one of urls and argv. Returns the step, or NULL with *ret_error. */
struct step *plan_add_health(struct plan *p, const char *target, const struct health_step_opts *o,
			     char **ret_error);

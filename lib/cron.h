/* SPDX-License-Identifier: BSD-2-Clause */
/* 5-field cron expressions (crontab(5): minute hour day-of-month month
 * day-of-week), evaluated in UTC. Shared by validation (recipes/) and the
 * scheduler (engine/schedule.c). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct cron {
	uint64_t minutes;   /* bit m: minute m (0-59) */
	uint32_t hours;     /* bit h (0-23) */
	uint32_t mdays;     /* bit d (1-31) */
	uint16_t months;    /* bit m (1-12) */
	uint8_t wdays;      /* bit w (0-6, Sunday 0; "7" is Sunday too) */
	bool mday_star;     /* the day-of-month field was "*" (crontab(5): with both day fields */
	bool wday_star;     /* restricted, a day matches when either matches) */
};

/* Parses expr: five fields separated by blanks; each a list of "*", N,
 * N-M, with an optional "/STEP"; month and day names (jan, sun) as in
 * crontab(5). Returns 0, or -EINVAL with *ret_error (malloc'd, when
 * ret_error is non-NULL) naming the field at fault. */
int cron_parse(const char *expr, struct cron *ret, char **ret_error);
/* The first time strictly after `after` (seconds since the epoch, UTC)
 * that c matches, at second 0 of its minute; -1 when none within 5 years
 * (e.g. "0 0 31 2 *"). */
int64_t cron_next(const struct cron *c, int64_t after);
/* The last time at or before `at` that c matches; -1 when none within 5
 * years. */
int64_t cron_prev(const struct cron *c, int64_t at);

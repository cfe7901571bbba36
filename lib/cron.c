/* SPDX-License-Identifier: BSD-2-Clause */
/* 5-field cron expressions, crontab(5) as Debian's cron (Vixie cron 4.1)
 * reads them, evaluated in UTC. Debian packages no C library for this
 * (only python3-croniter), so this is a small one of our own.
 *
 * Semantics:
 *   - fields: minute 0-59, hour 0-23, day-of-month 1-31, month 1-12 or
 *     jan-dec, day-of-week 0-7 or sun-sat (0 and 7 are both Sunday);
 *   - each field is a comma list of "*", N or N-M, each with an optional
 *     "/STEP" ("*" and ranges only, as in crontab(5)); names may also be
 *     range ends ("mon-fri"), as cronie allows;
 *   - the day rule (crontab(5) NOTE, Vixie cron's DOM_STAR/DOW_STAR): when
 *     either day field starts with "*", a day must match both fields;
 *     when both are restricted, a day matches when EITHER matches. So
 *     "0 9 1-7 * 3" runs on days 1 to 7 AND on every Wednesday; the seeds'
 *     "first Wednesday" job ("0 9 * * 3" plus a shell test of the day) has
 *     no 5-field form: it is "0 9 1-7 * *" with a weekday test in the job.
 *
 * Times are computed on the proleptic Gregorian calendar in plain integer
 * arithmetic (no time zone, no libc state): UTC has no DST to skip. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <strings.h>

#include "cron.h"
#include "util.h"

#define CRON_EXPR_MAX 256
#define CRON_YEARS 5
/* 9999-12-31T23:59:59Z: beyond it there is no RFC 3339 to show. */
#define CRON_TIME_MAX INT64_C(253402300799)

enum { F_MINUTE, F_HOUR, F_MDAY, F_MONTH, F_WDAY, F_COUNT };

static const struct field {
	const char *name;
	int min, max;
	const char *const *names; /* names[i] is the value min + i, or NULL */
} fields[F_COUNT] = {
	[F_MINUTE] = { "minute", 0, 59, NULL },
	[F_HOUR] = { "hour", 0, 23, NULL },
	[F_MDAY] = { "day-of-month", 1, 31, NULL },
	[F_MONTH] = { "month", 1, 12,
		      (const char *const[]){ "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
					     "nov", "dec", NULL } },
	[F_WDAY] = { "day-of-week", 0, 7,
		     (const char *const[]){ "sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL } },
};

/* ------------------------------------------------------------------ parse */

/* n bytes of s JSON-quoted as the stack's validators quote values
 * (stack_quote): "\"" and "\\" escaped, control characters and DEL as
 * \u00XX, at most 80 bytes then "...". The expression comes from the
 * stack and its message reaches logs and `agentctl status`: a raw ESC or
 * newline there would drive a terminal or forge a line. Returns a malloc'd
 * string. */
static char *quote(const char *s, size_t n)
{
	struct buf b;
	size_t i;

	buf_init(&b);
	buf_puts(&b, "\"");
	for (i = 0; i < n && s[i] && i < 80; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\')
			buf_printf(&b, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			buf_printf(&b, "\\u%04x", c);
		else
			buf_append(&b, &c, 1);
	}
	if (i < n && s[i])
		buf_puts(&b, "...");
	buf_puts(&b, "\"");
	return buf_steal(&b);
}

/* "FIELD field \"ITEM\": WHY" into *ret_error; returns -EINVAL. */
static int field_error(char **ret_error, const struct field *f, const char *item, size_t n, const char *fmt, ...)
	_printf_(5, 6);
static int field_error(char **ret_error, const struct field *f, const char *item, size_t n, const char *fmt, ...)
{
	_cleanup_free_ char *q = quote(item, n);
	char why[160];
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	*ret_error = xasprintf("%s field %s: %s", f->name, q, why);
	return -EINVAL;
}

/* A value of field f at *p (a number or a name), advancing *p. */
static int parse_value(const struct field *f, const char **p, int *ret, char **ret_error, const char *item)
{
	const char *s = *p;
	long v = 0;

	if (isdigit((unsigned char)*s)) {
		while (isdigit((unsigned char)*s) && v <= 1000)
			v = v * 10 + (*s++ - '0');
		while (isdigit((unsigned char)*s))
			s++;
	} else if (f->names && isalpha((unsigned char)s[0])) {
		size_t i;
		for (i = 0; f->names[i]; i++)
			if (strncasecmp(s, f->names[i], 3) == 0 && !isalpha((unsigned char)s[3]))
				break;
		if (!f->names[i]) {
			return field_error(ret_error, f, item, SIZE_MAX, "unknown name");
		}
		v = f->min + (long)i;
		s += 3;
	} else {
		return field_error(ret_error, f, item, SIZE_MAX, "expected a number%s", f->names ? " or a name" : "");
	}
	if (v < f->min || v > f->max) {
		return field_error(ret_error, f, item, SIZE_MAX, "%ld is out of range %d-%d", v, f->min, f->max);
	}
	*p = s;
	*ret = (int)v;
	return 0;
}

/* One item of a list ("*", N, N-M, each with "/STEP") into *bits. */
static int parse_item(const struct field *f, const char *item, uint64_t *bits, char **ret_error)
{
	const char *p = item;
	int lo = f->min, hi = f->max, step = 1;
	bool range = false;
	int r;

	if (*p == '*') {
		p++;
		range = true;
	} else {
		if ((r = parse_value(f, &p, &lo, ret_error, item)) < 0)
			return r;
		hi = lo;
		if (*p == '-') {
			p++;
			if ((r = parse_value(f, &p, &hi, ret_error, item)) < 0)
				return r;
			if (hi < lo) {
				return field_error(ret_error, f, item, SIZE_MAX, "a range goes from low to high");
			}
			range = true;
		}
	}
	if (*p == '/') {
		long s = 0;
		p++;
		if (!range) {
			return field_error(ret_error, f, item, SIZE_MAX, "a step follows \"*\" or a range");
		}
		while (isdigit((unsigned char)*p) && s <= 1000)
			s = s * 10 + (*p++ - '0');
		if (s < 1 || s > f->max - f->min + 1) {
			return field_error(ret_error, f, item, SIZE_MAX, "the step must be from 1 to %d", f->max - f->min + 1);
		}
		step = (int)s;
	}
	if (*p) {
		_cleanup_free_ char *q = quote(p, 1);
		return field_error(ret_error, f, item, SIZE_MAX, "unexpected %s", q);
	}
	for (int v = lo; v <= hi; v += step)
		*bits |= UINT64_C(1) << v;
	return 0;
}

/* A field's comma list (len bytes at text) into *bits. */
static int parse_field(const struct field *f, const char *text, size_t len, uint64_t *bits, char **ret_error)
{
	char item[CRON_EXPR_MAX + 1];
	size_t i = 0;
	int r;

	*bits = 0;
	while (i <= len) {
		size_t n = 0;
		while (i + n < len && text[i + n] != ',')
			n++;
		memcpy(item, text + i, n);
		item[n] = '\0';
		if (n == 0) {
			return field_error(ret_error, f, text, len, "an empty item in the list");
		}
		if ((r = parse_item(f, item, bits, ret_error)) < 0)
			return r;
		i += n + 1;
	}
	return 0;
}

int cron_parse(const char *expr, struct cron *ret, char **ret_error)
{
	const char *p = expr, *start[F_COUNT];
	size_t len[F_COUNT];
	uint64_t bits[F_COUNT];
	char *err = NULL;
	int n = 0, r;

	memset(ret, 0, sizeof(*ret));
	if (strlen(expr) > CRON_EXPR_MAX) {
		err = xasprintf("a cron expression has at most %d bytes", CRON_EXPR_MAX);
		goto fail;
	}
	for (;;) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		const char *s = p;
		while (*p && *p != ' ' && *p != '\t')
			p++;
		if (n < F_COUNT) {
			start[n] = s;
			len[n] = (size_t)(p - s);
		}
		n++;
	}
	if (n != F_COUNT) {
		_cleanup_free_ char *q = quote(expr, SIZE_MAX);
		err = xasprintf("%s: a cron expression has 5 fields (minute hour day-of-month month day-of-week), "
				"not %d",
				q, n);
		goto fail;
	}
	for (int i = 0; i < F_COUNT; i++)
		if ((r = parse_field(&fields[i], start[i], len[i], &bits[i], &err)) < 0)
			goto fail;
	ret->minutes = bits[F_MINUTE];
	ret->hours = (uint32_t)bits[F_HOUR];
	ret->mdays = (uint32_t)bits[F_MDAY];
	ret->months = (uint16_t)bits[F_MONTH];
	/* 7 is Sunday too. */
	ret->wdays = (uint8_t)((bits[F_WDAY] | (bits[F_WDAY] >> 7)) & 0x7f);
	/* Vixie cron's DOM_STAR and DOW_STAR: the field's text starts with
	 * "*" (a step of "*" too). */
	ret->mday_star = start[F_MDAY][0] == '*';
	ret->wday_star = start[F_WDAY][0] == '*';
	return 0;
fail:
	if (ret_error)
		*ret_error = err;
	else
		free(err);
	return -EINVAL;
}

/* --------------------------------------------------------------- calendar */

/* Days since 1970-01-01 of a date, and back (H. Hinnant's algorithms). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	int64_t yoe = y - era * 400;
	int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	int64_t doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	int64_t mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

static int days_in_month(int64_t y, int m)
{
	static const int n[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return m == 2 && leap ? 29 : n[m - 1];
}

static bool day_matches(const struct cron *c, int64_t y, int m, int d)
{
	int64_t days = days_from_civil(y, m, d);
	int wday = (int)(((days % 7) + 11) % 7); /* 1970-01-01 was a Thursday (4) */
	bool md = c->mdays & (UINT32_C(1) << d), wd = c->wdays & (1u << wday);

	if (c->mday_star || c->wday_star)
		return md && wd;
	return md || wd;
}

/* The first value >= from (up) or <= from (down) set in bits, within
 * [min, max]; -1 when none. */
static int bit_next(uint64_t bits, int from, int max)
{
	for (int v = from; v <= max; v++)
		if (bits & (UINT64_C(1) << v))
			return v;
	return -1;
}

static int bit_prev(uint64_t bits, int from, int min)
{
	for (int v = from; v >= min; v--)
		if (bits & (UINT64_C(1) << v))
			return v;
	return -1;
}

struct when {
	int64_t y;
	int m, d, H, M;
};

static struct when when_from(int64_t t)
{
	struct when w;
	int64_t days = t >= 0 ? t / 86400 : -((-t + 86399) / 86400);
	int64_t sec = t - days * 86400;

	civil_from_days(days, &w.y, &w.m, &w.d);
	w.H = (int)(sec / 3600);
	w.M = (int)(sec % 3600 / 60);
	return w;
}

static int64_t when_epoch(const struct when *w)
{
	return days_from_civil(w->y, w->m, w->d) * 86400 + w->H * 3600 + w->M * 60;
}

static bool cron_is_empty(const struct cron *c)
{
	return !c->minutes || !c->hours || !c->mdays || !c->months || !c->wdays;
}

/* Field by field: a month that cannot match is skipped whole, then a day,
 * an hour; a year holds at most 12 + 366 + 24 steps of this loop. */
int64_t cron_next(const struct cron *c, int64_t after)
{
	struct when w;
	int64_t limit;
	int v;

	if (cron_is_empty(c) || after >= CRON_TIME_MAX || after < -CRON_TIME_MAX)
		return -1;
	w = when_from(after - (after % 60 + 60) % 60 + 60);
	limit = w.y + CRON_YEARS;
	for (;;) {
		if (w.y > limit)
			return -1;
		if ((v = bit_next(c->months, w.m, 12)) < 0) {
			w = (struct when){ w.y + 1, 1, 1, 0, 0 };
			continue;
		}
		if (v != w.m)
			w = (struct when){ w.y, v, 1, 0, 0 };
		if (w.d > days_in_month(w.y, w.m)) {
			w = w.m == 12 ? (struct when){ w.y + 1, 1, 1, 0, 0 } : (struct when){ w.y, w.m + 1, 1, 0, 0 };
			continue;
		}
		if (!day_matches(c, w.y, w.m, w.d)) {
			w = (struct when){ w.y, w.m, w.d + 1, 0, 0 };
			continue;
		}
		if ((v = bit_next(c->hours, w.H, 23)) < 0) {
			w = (struct when){ w.y, w.m, w.d + 1, 0, 0 };
			continue;
		}
		if (v != w.H)
			w = (struct when){ w.y, w.m, w.d, v, 0 };
		if ((v = bit_next(c->minutes, w.M, 59)) < 0) {
			w = w.H == 23 ? (struct when){ w.y, w.m, w.d + 1, 0, 0 } : (struct when){ w.y, w.m, w.d, w.H + 1, 0 };
			continue;
		}
		w.M = v;
		return when_epoch(&w);
	}
}

int64_t cron_prev(const struct cron *c, int64_t at)
{
	struct when w;
	int64_t limit;
	int v;

	if (cron_is_empty(c) || at > CRON_TIME_MAX || at < -CRON_TIME_MAX)
		return -1;
	w = when_from(at - (at % 60 + 60) % 60);
	limit = w.y - CRON_YEARS;
	for (;;) {
		if (w.y < limit)
			return -1;
		if ((v = bit_prev(c->months, w.m, 1)) < 0) {
			w = (struct when){ w.y - 1, 12, 31, 23, 59 };
			continue;
		}
		if (v != w.m)
			w = (struct when){ w.y, v, days_in_month(w.y, v), 23, 59 };
		if (w.d > days_in_month(w.y, w.m))
			w.d = days_in_month(w.y, w.m);
		if (w.d < 1) {
			w = w.m == 1 ? (struct when){ w.y - 1, 12, 31, 23, 59 }
				     : (struct when){ w.y, w.m - 1, days_in_month(w.y, w.m - 1), 23, 59 };
			continue;
		}
		if (!day_matches(c, w.y, w.m, w.d)) {
			w = (struct when){ w.y, w.m, w.d - 1, 23, 59 };
			continue;
		}
		if ((v = bit_prev(c->hours, w.H, 0)) < 0) {
			w = (struct when){ w.y, w.m, w.d - 1, 23, 59 };
			continue;
		}
		if (v != w.H)
			w = (struct when){ w.y, w.m, w.d, v, 59 };
		if ((v = bit_prev(c->minutes, w.M, 0)) < 0) {
			w = w.H == 0 ? (struct when){ w.y, w.m, w.d - 1, 23, 59 } : (struct when){ w.y, w.m, w.d, w.H - 1, 59 };
			continue;
		}
		w.M = v;
		return when_epoch(&w);
	}
}

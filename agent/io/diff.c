/* SPDX-License-Identifier: BSD-2-Clause */
/* Unified diffs for plans (diff.h).
 *
 * Myers' O(ND) algorithm in its linear-space form (divide and conquer on the
 * middle snake, "An O(ND) Difference Algorithm and Its Variations", 1986,
 * section 4b), on lines compared by hash then bytes. A line includes its
 * '\n', so a last line without one differs from the same text with one, as
 * in GNU diff. The output follows `diff -u`: three lines of context, hunks
 * merged when their contexts touch, "@@ -l,s +l,s @@" with ",1" left out,
 * and "\ No newline at end of file" markers.
 *
 * Bounds: an input over DIFF_MAX_BYTES or DIFF_MAX_LINES gives a one-line
 * summary (diff_summary) instead of a diff, decided before anything is
 * allocated per line: the sizes are known, the lines counted with memchr.
 * A plan may be asked for by any local user, so what one diff costs must
 * not grow with the content: 8 million lines would otherwise cost 24 bytes
 * each, per side, and a reply twice the content's size. A comparison that
 * exceeds DIFF_MAX_WORK steps falls back to a plain (still correct, not
 * minimal) diff: between the common head and tail, everything is deleted,
 * then inserted. */
#include "diff.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "util.h"

#define DIFF_MAX_WORK 20000000L
#define DIFF_CONTEXT 3

struct line {
	const char *p;
	size_t len;    /* including the '\n' when there is one */
	uint64_t hash;
};

struct side {
	struct line *lines;
	long n;
	bool *changed; /* per line: deleted (a) or inserted (b) */
};

struct diff_ctx {
	struct side a, b;
	long *vf, *vb; /* indexed by diagonal k + off */
	long off;
	long work;     /* budget left */
};

/* Whether data has more than max lines (the last one may lack its '\n');
 * stops counting there. */
static bool lines_over(const char *data, size_t len, long max)
{
	const char *p = data, *end = data + len;
	long n = 0;

	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));

		if (++n > max)
			return true;
		p = nl ? nl + 1 : end;
	}
	return false;
}

static void side_split(struct side *s, const char *data, size_t len)
{
	long n = 0, i = 0;
	size_t pos = 0;

	for (size_t k = 0; k < len; k++)
		if (data[k] == '\n')
			n++;
	if (len > 0 && data[len - 1] != '\n')
		n++;
	s->n = n;
	s->lines = xcalloc((size_t)n + 1, sizeof(struct line));
	s->changed = xcalloc((size_t)n + 1, sizeof(bool));
	while (pos < len) {
		const char *nl = memchr(data + pos, '\n', len - pos);
		size_t l = nl ? (size_t)(nl - (data + pos)) + 1 : len - pos;

		s->lines[i].p = data + pos;
		s->lines[i].len = l;
		s->lines[i].hash = hash_fnv1a64(data + pos, l, HASH_FNV_SEED);
		i++;
		pos += l;
	}
}

static void side_free(struct side *s)
{
	free(s->lines);
	free(s->changed);
}

static bool line_eq(const struct diff_ctx *c, long i, long j)
{
	const struct line *x = &c->a.lines[i], *y = &c->b.lines[j];

	return x->hash == y->hash && x->len == y->len && memcmp(x->p, y->p, x->len) == 0;
}

static void mark_range(struct diff_ctx *c, long a0, long a1, long b0, long b1)
{
	for (long i = a0; i < a1; i++)
		c->a.changed[i] = true;
	for (long j = b0; j < b1; j++)
		c->b.changed[j] = true;
}

/* Finds a point (*rx, *ry) on an optimal path through a[a0,a1) x b[b0,b1),
 * both non-empty with differing first and last lines. Returns false when
 * the work budget ran out. */
static bool middle_snake(struct diff_ctx *c, long a0, long a1, long b0, long b1, long *rx, long *ry)
{
	long n = a1 - a0, m = b1 - b0, delta = n - m, dmax = (n + m + 1) / 2;
	bool odd = delta & 1;
	long *vf = c->vf + c->off, *vb = c->vb + c->off;

	/* vf[k]: furthest x on diagonal k = x - y going forward from (0,0);
	 * vb[k]: furthest distance going backward from (n,m), in reversed
	 * coordinates (x' = n - x, y' = m - y). */
	vf[1] = 0;
	vb[1] = 0;
	for (long d = 0; d <= dmax; d++) {
		for (long k = -d; k <= d; k += 2) {
			long x, y;

			if (k == -d || (k != d && vf[k - 1] < vf[k + 1]))
				x = vf[k + 1];
			else
				x = vf[k - 1] + 1;
			y = x - k;
			long x_start = x;
			while (x < n && y < m && line_eq(c, a0 + x, b0 + y)) {
				x++;
				y++;
			}
			vf[k] = x;
			c->work -= 1 + (x - x_start);
			/* Does it reach the reverse (d-1)-path on the same diagonal? */
			long kb = delta - k;
			if (odd && kb >= -(d - 1) && kb <= d - 1 && vf[k] + vb[kb] >= n) {
				*rx = a0 + x;
				*ry = b0 + y;
				return true;
			}
		}
		for (long k = -d; k <= d; k += 2) {
			long x, y;

			if (k == -d || (k != d && vb[k - 1] < vb[k + 1]))
				x = vb[k + 1];
			else
				x = vb[k - 1] + 1;
			y = x - k;
			long x_start = x;
			while (x < n && y < m && line_eq(c, a1 - x - 1, b1 - y - 1)) {
				x++;
				y++;
			}
			vb[k] = x;
			c->work -= 1 + (x - x_start);
			long kf = delta - k;
			if (!odd && kf >= -d && kf <= d && vb[k] + vf[kf] >= n) {
				*rx = a1 - x;
				*ry = b1 - y;
				return true;
			}
		}
		if (c->work < 0)
			return false;
	}
	return false; /* not reached for valid input */
}

static void compare(struct diff_ctx *c, long a0, long a1, long b0, long b1)
{
	for (;;) {
		long x, y;

		while (a0 < a1 && b0 < b1 && line_eq(c, a0, b0)) {
			a0++;
			b0++;
		}
		while (a0 < a1 && b0 < b1 && line_eq(c, a1 - 1, b1 - 1)) {
			a1--;
			b1--;
		}
		if (a0 == a1 || b0 == b1) {
			mark_range(c, a0, a1, b0, b1);
			return;
		}
		if (c->work < 0 || !middle_snake(c, a0, a1, b0, b1, &x, &y) || (x == a0 && y == b0) ||
		    (x == a1 && y == b1)) {
			/* Out of budget (or no progress, which would be a bug):
			 * the rest of this region is simply replaced. */
			mark_range(c, a0, a1, b0, b1);
			return;
		}
		/* Recurse on the smaller half, loop on the other: the stack
		 * depth stays logarithmic in practice. */
		if ((x - a0) + (y - b0) < (a1 - x) + (b1 - y)) {
			compare(c, a0, x, b0, y);
			a0 = x;
			b0 = y;
		} else {
			compare(c, x, a1, y, b1);
			a1 = x;
			b1 = y;
		}
	}
}

static void emit_line(struct buf *out, char tag, const struct line *l)
{
	buf_append(out, &tag, 1);
	buf_append(out, l->p, l->len);
	if (l->len == 0 || l->p[l->len - 1] != '\n')
		buf_puts(out, "\n\\ No newline at end of file\n");
}

static void emit_range(struct buf *out, char sign, long start, long count)
{
	/* GNU: an empty range names the line before it; a count of 1 is implied. */
	if (count == 0)
		buf_printf(out, "%c%ld,0", sign, start);
	else if (count == 1)
		buf_printf(out, "%c%ld", sign, start + 1);
	else
		buf_printf(out, "%c%ld,%ld", sign, start + 1, count);
}

/* Walks both sides in step and prints hunks of changes with context. */
static void emit_hunks(const struct diff_ctx *c, struct buf *out)
{
	const struct side *a = &c->a, *b = &c->b;
	long i = 0, j = 0;

	for (;;) {
		long hi, hj, ei, ej, gi, gj;

		/* Find the next change. */
		while (i < a->n && j < b->n && !a->changed[i] && !b->changed[j]) {
			i++;
			j++;
		}
		if (!(i < a->n && a->changed[i]) && !(j < b->n && b->changed[j]))
			return;
		hi = i > DIFF_CONTEXT ? i - DIFF_CONTEXT : 0;
		hj = j - (i - hi);

		/* Extend the hunk while the next change is within 2 * context. */
		ei = i;
		ej = j;
		for (;;) {
			while (ei < a->n && a->changed[ei])
				ei++;
			while (ej < b->n && b->changed[ej])
				ej++;
			gi = ei;
			gj = ej;
			while (gi < a->n && gj < b->n && !a->changed[gi] && !b->changed[gj] &&
			       gi - ei <= 2 * DIFF_CONTEXT) {
				gi++;
				gj++;
			}
			bool more = (gi < a->n && a->changed[gi]) || (gj < b->n && b->changed[gj]);
			if (more && gi - ei <= 2 * DIFF_CONTEXT) {
				ei = gi;
				ej = gj;
				continue;
			}
			break;
		}
		long ti = ei + DIFF_CONTEXT < a->n ? ei + DIFF_CONTEXT : a->n;
		long tj = ej + (ti - ei);

		buf_puts(out, "@@ ");
		emit_range(out, '-', hi, ti - hi);
		buf_puts(out, " ");
		emit_range(out, '+', hj, tj - hj);
		buf_puts(out, " @@\n");

		/* Body: context, then each change block's deletions before its insertions. */
		long x = hi, y = hj;
		while (x < ti || y < tj) {
			if (x < ti && y < tj && !a->changed[x] && !b->changed[y]) {
				emit_line(out, ' ', &a->lines[x]);
				x++;
				y++;
				continue;
			}
			while (x < ti && a->changed[x])
				emit_line(out, '-', &a->lines[x++]);
			while (y < tj && b->changed[y])
				emit_line(out, '+', &b->lines[y++]);
		}
		i = ti;
		j = tj;
	}
}

char *diff_summary(const char *path, size_t alen, size_t blen)
{
	return xasprintf("Files %s differ (%zu bytes -> %zu bytes): too large to show (diffs are shown up to %u MiB "
			 "and %u lines)\n",
			 path, alen, blen, DIFF_MAX_BYTES >> 20, DIFF_MAX_LINES);
}

char *diff_unified(const char *path, const char *a, size_t alen, const char *b, size_t blen)
{
	struct diff_ctx c = { 0 };
	struct buf out;

	if (alen == blen && (alen == 0 || memcmp(a, b, alen) == 0))
		return NULL;
	if (alen > DIFF_MAX_BYTES || blen > DIFF_MAX_BYTES)
		return diff_summary(path, alen, blen);

	buf_init(&out);
	buf_printf(&out, "--- %s\n+++ %s\n", path, path);
	if ((alen && memchr(a, '\0', alen)) || (blen && memchr(b, '\0', blen))) {
		/* Not text: a diff of it would be noise (and could hide bytes). */
		buf_reset(&out);
		buf_printf(&out, "Binary files %s differ\n", path);
		return buf_steal(&out);
	}

	if (lines_over(a, alen, (long)DIFF_MAX_LINES) || lines_over(b, blen, (long)DIFF_MAX_LINES)) {
		buf_free(&out);
		return diff_summary(path, alen, blen);
	}
	side_split(&c.a, a, alen);
	side_split(&c.b, b, blen);
	c.off = c.a.n + c.b.n + 2;
	c.vf = xcalloc((size_t)(2 * c.off + 1), sizeof(long));
	c.vb = xcalloc((size_t)(2 * c.off + 1), sizeof(long));
	c.work = DIFF_MAX_WORK;
	compare(&c, 0, c.a.n, 0, c.b.n);
	free(c.vf);
	free(c.vb);
	emit_hunks(&c, &out);
	side_free(&c.a);
	side_free(&c.b);
	return buf_steal(&out);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* gzip decompression with a cap, on zlib's inflate (see gzip.h). */
#include "gzip.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "util.h"

/* zlib's window bits for gzip framing only (16 + 15): a zlib or raw deflate
 * stream is refused, as gzip(1) would. */
#define GZIP_WINDOW_BITS (16 + MAX_WBITS)
#define GZIP_FIRST_OUT 65536

bool gzip_is(const void *data, size_t len)
{
	const unsigned char *p = data;

	return len >= 2 && p[0] == 0x1f && p[1] == 0x8b;
}

struct inflater {
	z_stream z;
	const unsigned char *in; /* borrowed: input not yet handed to zlib */
	size_t in_left;
	char *out;               /* owned */
	size_t out_len, out_cap; /* out_cap bytes usable, plus one for the NUL */
	size_t max;
};

/* Hands zlib the next piece of input (avail_in is 32 bits wide). */
static void inflater_feed(struct inflater *f)
{
	size_t n = f->in_left < UINT_MAX ? f->in_left : UINT_MAX;

	if (f->z.avail_in > 0 || n == 0)
		return;
	f->z.next_in = (unsigned char *)f->in;
	f->z.avail_in = (uInt)n;
	f->in += n;
	f->in_left -= n;
}

/* Room for more output: doubles the buffer up to max + 1 bytes, the one
 * over max being how an overflow shows. -EFBIG once that is full. */
static int inflater_room(struct inflater *f)
{
	size_t room;

	if (f->out_len == f->out_cap) {
		size_t limit = f->max + 1, cap = f->out_cap ? f->out_cap * 2 : GZIP_FIRST_OUT;
		if (f->out_cap >= limit)
			return -EFBIG;
		if (cap > limit || cap < f->out_cap)
			cap = limit;
		f->out = xrealloc(f->out, cap + 1);
		f->out_cap = cap;
	}
	room = f->out_cap - f->out_len;
	f->z.next_out = (unsigned char *)f->out + f->out_len;
	f->z.avail_out = room < UINT_MAX ? (uInt)room : UINT_MAX;
	return 0;
}

/* After a member's end: what follows must be NUL padding or another
 * member. Returns 1 to go on with the next member, 0 at the end, -EBADMSG
 * for other bytes. */
static int inflater_next_member(struct inflater *f, const char **ret_reason)
{
	/* Put what zlib did not consume back in front of the rest. */
	f->in -= f->z.avail_in;
	f->in_left += f->z.avail_in;
	f->z.avail_in = 0;
	if (gzip_is(f->in, f->in_left)) {
		if (inflateReset(&f->z) != Z_OK) {
			*ret_reason = "cannot reset the decompressor";
			return -EBADMSG;
		}
		return 1;
	}
	for (size_t i = 0; i < f->in_left; i++)
		if (f->in[i] != 0) {
			*ret_reason = "other data after the end of the gzip data";
			return -EBADMSG;
		}
	return 0;
}

static int inflater_run(struct inflater *f, const char **ret_reason)
{
	for (;;) {
		size_t before;
		int k, z;

		inflater_feed(f);
		if ((k = inflater_room(f)) < 0)
			return k;
		before = f->z.avail_out;
		z = inflate(&f->z, Z_NO_FLUSH);
		f->out_len += before - f->z.avail_out;
		if (f->out_len > f->max)
			return -EFBIG;
		switch (z) {
		case Z_OK:
			continue;
		case Z_STREAM_END:
			k = inflater_next_member(f, ret_reason);
			if (k <= 0)
				return k;
			continue;
		case Z_BUF_ERROR:
			/* No progress: output full (the loop makes room) or input
			 * used up before the member's end. */
			if (f->z.avail_out == 0)
				continue;
			if (f->z.avail_in == 0 && f->in_left == 0) {
				*ret_reason = "truncated (the data ends before the gzip member does)";
				return -EBADMSG;
			}
			continue;
		case Z_MEM_ERROR:
			return -ENOMEM;
		case Z_NEED_DICT:
			*ret_reason = "a preset dictionary is needed";
			return -EBADMSG;
		default:
			*ret_reason = f->z.msg ? f->z.msg : "invalid gzip data";
			return -EBADMSG;
		}
	}
}

int gzip_inflate(const void *data, size_t len, size_t max, char **ret_data, size_t *ret_len,
		 const char **ret_reason)
{
	struct inflater f = { .in = data, .in_left = len, .max = max };
	const char *reason = NULL;
	int r;

	if (!ret_reason)
		ret_reason = &reason;
	*ret_reason = NULL;
	if (!gzip_is(data, len)) {
		*ret_reason = "not gzip data (no gzip magic)";
		return -EBADMSG;
	}
	if (inflateInit2(&f.z, GZIP_WINDOW_BITS) != Z_OK)
		return -ENOMEM;
	r = inflater_run(&f, ret_reason);
	(void)inflateEnd(&f.z);
	if (r < 0) {
		free(f.out);
		return r;
	}
	if (!f.out)
		f.out = xmalloc(1);
	f.out[f.out_len] = '\0';
	*ret_data = f.out;
	*ret_len = f.out_len;
	return 0;
}

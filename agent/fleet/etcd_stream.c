/* SPDX-License-Identifier: BSD-2-Clause */
/* The incremental reader of a watch stream: whole top-level JSON objects out
 * of bytes cut anywhere (etcd #11372: a message across chunks, several in one
 * chunk, a bare "\n" as its own chunk, or no newline at all between them).
 * It only tracks strings, escapes and nesting to find where a value ends;
 * jansson validates the value afterwards. A value that lies whole inside one
 * chunk is handed over without a copy. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fleet/etcd.h"
#include "util.h"

struct etcd_stream_reader {
	size_t max;        /* largest value, bytes */
	struct buf pending; /* the value begun in an earlier chunk */
	size_t depth;      /* 0: between values */
	bool in_string;
	bool escaped;
	int error;         /* sticky */
};

struct etcd_stream_reader *etcd_stream_reader_new(size_t max_message)
{
	struct etcd_stream_reader *rd = xcalloc(1, sizeof(*rd));

	rd->max = max_message;
	buf_init(&rd->pending);
	return rd;
}

void etcd_stream_reader_free(struct etcd_stream_reader *rd)
{
	if (!rd)
		return;
	buf_free(&rd->pending);
	free(rd);
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

int etcd_stream_reader_feed(struct etcd_stream_reader *rd, const char *data, size_t len,
			    int (*on_message)(void *userdata, const char *msg, size_t msg_len), void *userdata)
{
	size_t i = 0, start = 0; /* start: where the value in data begins (depth > 0) */

	if (rd->error)
		return rd->error;
	while (i < len) {
		if (rd->depth == 0) {
			/* Between values: whitespace, then '{'. */
			char c = data[i];
			if (is_ws(c)) {
				i++;
				continue;
			}
			if (c != '{')
				return rd->error = -EBADMSG;
			start = i++;
			rd->depth = 1;
			rd->in_string = rd->escaped = false;
			/* on with the value, even when the chunk ends here */
		}
		for (; i < len && rd->depth > 0; i++) {
			char c = data[i];
			if (rd->in_string) {
				if (rd->escaped)
					rd->escaped = false;
				else if (c == '\\')
					rd->escaped = true;
				else if (c == '"')
					rd->in_string = false;
			} else if (c == '"')
				rd->in_string = true;
			else if (c == '{' || c == '[')
				rd->depth++;
			else if (c == '}' || c == ']')
				rd->depth--;
		}
		/* data[start..i) belongs to the current value. */
		if (rd->pending.len + (i - start) > rd->max) {
			buf_free(&rd->pending);
			return rd->error = -EFBIG;
		}
		if (rd->depth > 0) {
			buf_append(&rd->pending, data + start, i - start);
			break;
		}
		int k;
		if (rd->pending.len == 0)
			k = on_message(userdata, data + start, i - start);
		else {
			buf_append(&rd->pending, data + start, i - start);
			k = on_message(userdata, rd->pending.data, rd->pending.len);
			buf_free(&rd->pending);
		}
		if (k != 0)
			return rd->error = k;
		start = i;
	}
	return 0;
}

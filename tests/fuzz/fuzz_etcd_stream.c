/* SPDX-License-Identifier: BSD-2-Clause */
/* libFuzzer target for the watch stream of fleet/etcd: the incremental
 * reader (etcd_stream_reader, etcd #11372) and the message parser behind it
 * (etcd_watch_message_parse), as the client runs them on bytes from etcd.
 * The first input byte chooses where the rest is cut into chunks. Whatever
 * the input: the reader returns 0, -EBADMSG or -EFBIG; every message it
 * hands over starts with '{', ends with '}' or ']' and fits the cap; the
 * same bytes fed whole give the same messages; a parsed message is
 * consistent (events only with EVENTS, a compact revision only with
 * COMPACTED, an error always with FAILED or a failure); nothing leaks. The
 * unary replies' parser gets the input too. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fleet/etcd.h"
#include "util.h"

#define FUZZ_MAX 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seen {
	struct buf all; /* every message, NUL-separated */
	size_t n;
};

static int on_message(void *userdata, const char *msg, size_t len)
{
	struct seen *s = userdata;
	struct etcd_watch_message m;
	int k;

	if (len == 0 || len > FUZZ_MAX || msg[0] != '{' || (msg[len - 1] != '}' && msg[len - 1] != ']'))
		abort();
	buf_append(&s->all, msg, len);
	buf_append(&s->all, "", 1);
	s->n++;

	k = etcd_watch_message_parse(msg, len, &m);
	if (k < 0) {
		if ((k != -EPROTO && k != -EFBIG) || !m.error || m.events)
			abort();
	} else {
		if (m.kind != ETCD_WATCH_EVENTS && m.n_events)
			abort();
		if ((m.kind == ETCD_WATCH_COMPACTED) != (m.compact_revision != 0))
			abort();
		if ((m.kind == ETCD_WATCH_FAILED) != (m.error != NULL))
			abort();
		for (size_t i = 0; i < m.n_events; i++)
			if (!m.events[i].kv.key || m.events[i].kv.key_len == 0 ||
			    m.events[i].kv.value[m.events[i].kv.value_len] != '\0')
				abort();
	}
	etcd_watch_message_clear(&m);
	return 0;
}

static int feed(const uint8_t *data, size_t size, size_t step, struct seen *s)
{
	struct etcd_stream_reader *rd = etcd_stream_reader_new(FUZZ_MAX);
	int k = 0;

	for (size_t off = 0; off < size && k == 0; off += step)
		k = etcd_stream_reader_feed(rd, (const char *)data + off, size - off < step ? size - off : step,
					    on_message, s);
	etcd_stream_reader_free(rd);
	if (k != 0 && k != -EBADMSG && k != -EFBIG)
		abort();
	return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct seen a = { 0 }, b = { 0 };
	struct etcd_result r;
	char *why = NULL;
	int ka, kb;

	if (size < 1)
		return 0;
	size_t step = (size_t)data[0] % 17 + 1;
	data++;
	size--;

	buf_init(&a.all);
	buf_init(&b.all);
	ka = feed(data, size, step, &a);
	kb = feed(data, size, size ? size : 1, &b);
	/* However it was cut: the same verdict, the same messages (a chunk
	 * that fails stops feeding, so only compare clean runs fully). */
	if (ka == 0 && kb == 0 && (a.n != b.n || a.all.len != b.all.len || memcmp(a.all.data, b.all.data, a.all.len)))
		abort();
	if ((ka == -EBADMSG) != (kb == -EBADMSG) && ka != -EFBIG && kb != -EFBIG)
		abort();
	buf_free(&a.all);
	buf_free(&b.all);

	/* The unary replies' parser on the same bytes. */
	for (int kind = ETCD_REPLY_RANGE; kind <= ETCD_REPLY_LEASE_TTL; kind++) {
		int k = etcd_reply_parse((enum etcd_reply_kind)kind, (const char *)data, size, &r, &why);
		if (k == 0) {
			if (why || (r.n_kvs && !r.kvs))
				abort();
			for (size_t i = 0; i < r.n_kvs; i++)
				if (r.kvs[i].key_len == 0 || r.kvs[i].value[r.kvs[i].value_len] != '\0')
					abort();
			etcd_result_clear(&r);
		} else {
			if (!why || r.kvs || r.n_kvs)
				abort();
			free(why);
			why = NULL;
		}
	}
	return 0;
}

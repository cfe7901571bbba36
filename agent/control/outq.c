/* SPDX-License-Identifier: BSD-2-Clause */
/* Output of the control server: every reply and event line goes through
 * uv_write with a bounded queue per client (PROTO_MAX_OUTPUT_QUEUE) and for
 * all clients together (PROTO_MAX_OUTPUT_TOTAL), the biggest queues dropped
 * first. Replies that many clients read (the stack, logs of finished runs)
 * are serialised once, cached, and handed to each socket a slice at a time
 * as it drains. */
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "control_int.h"
#include "log.h"

#define CONTROL_SLICE (256 * 1024)   /* bytes of a shared reply handed to the socket at a time */
#define CONTROL_STACK_CACHE_MS 10000 /* a serialised stack nobody reads is dropped after this long */
#define CONTROL_TRIM_BYTES (1024 * 1024) /* freeing this much at once is worth a malloc_trim() */

void outq_free(struct control *ctl)
{
	for (size_t i = 0; i < ELEMENTSOF(ctl->stack_cache); i++)
		free(ctl->stack_cache[i]);
	for (size_t i = 0; i < ELEMENTSOF(ctl->log_cache); i++)
		free(ctl->log_cache[i].so);
}

struct shared_out *shared_out_ref(struct shared_out *so)
{
	so->refs++;
	return so;
}

void shared_out_unref(struct control *ctl, struct shared_out *so)
{
	if (!so || --so->refs > 0)
		return;
	if (so->len >= CONTROL_TRIM_BYTES)
		ctl->trim_due = true;
	free(so);
}

struct write_req {
	uv_write_t req;
	struct client *client;
	size_t len;
	char *line;                /* owned, or NULL for a slice of: */
	struct shared_out *shared; /* a reference */
};

/* Bytes handed to the socket and not yet written: memory we hold. */
size_t client_output_queued(struct client *c)
{
	return uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe);
}

/* Bytes of replies not yet written, including the rest of a shared reply
 * (which costs this client nothing, but orders what comes next). */
size_t client_output_pending(struct client *c)
{
	return client_output_queued(c) + (c->big ? c->big->len - c->big_off : 0);
}

static void on_write(uv_write_t *req, int status)
{
	struct write_req *w = (struct write_req *)req;
	struct client *c = w->client;

	if (status == 0)
		c->sent += w->len;
	free(w->line);
	if (w->shared) {
		shared_out_unref(c->ctl, w->shared);
		c->big_inflight = false;
	}
	free(w);
	if (c->closing)
		return;
	if (status < 0) {
		if (status != UV_ECANCELED)
			log_debug("control: write to pid %d failed: %s", (int)c->pid, uv_strerror(status));
		client_close(c);
		return;
	}
	client_pump(c);
	if (c->closing)
		return;
	/* Progress: the timers count from here, and requests held back while
	 * replies were unsent are answered once they are all out. */
	if (client_output_pending(c) == 0)
		client_process(c);
	else
		client_arm_timer(c);
}

static bool shared_out_cached(const struct control *ctl, const struct shared_out *so)
{
	for (size_t i = 0; i < ELEMENTSOF(ctl->stack_cache); i++)
		if (ctl->stack_cache[i] == so)
			return true;
	for (size_t i = 0; i < ELEMENTSOF(ctl->log_cache); i++)
		if (ctl->log_cache[i].so == so)
			return true;
	return false;
}

/* Keeps what replies cost over all clients under PROTO_MAX_OUTPUT_TOTAL
 * (len more bytes are about to be queued for self): the bytes queued, and
 * every shared reply that clients are still writing and nothing else keeps
 * (the cache holds the current ones, a bounded few), counted once however
 * many share it: a slow reader of an old stack pins that whole document.
 * Drops the clients that cost most: their queue, plus such a document. A single reply
 * larger than the cap on its own still goes out. self may be NULL (a
 * check from housekeeping). Returns false when self was dropped. */
static bool control_make_room(struct control *ctl, struct client *self, size_t len)
{
	for (;;) {
		struct client *big = NULL;
		size_t total = 0, most = 0;

		ctl->room_pass++;
		for (struct client *o = ctl->clients; o; o = o->next) {
			size_t q;

			if (o->closing)
				continue; /* its queue goes with its handle */
			q = client_output_queued(o);
			total += q;
			if (o->big && !shared_out_cached(ctl, o->big)) {
				if (o->big->pass != ctl->room_pass) {
					o->big->pass = ctl->room_pass;
					total += o->big->len;
				}
				q += o->big->len;
			}
			if (q > most) {
				most = q;
				big = o;
			}
		}
		if (!big || total + len <= PROTO_MAX_OUTPUT_TOTAL)
			return true;
		log_warn("control: dropping client pid %d uid %u: %zu bytes of replies unread, %zu for all clients",
			 (int)big->pid, (unsigned)big->uid, most, total);
		client_close(big);
		if (big == self)
			return false;
	}
}

void client_send(struct client *c, const json_t *msg)
{
	struct write_req *w;
	size_t queued, len;
	char *line;
	uv_buf_t b;
	int r;

	if (c->closing || c->finishing || !msg)
		return;
	line = proto_encode_line(msg, &len);
	if (!line) {
		log_error("control: cannot encode a reply");
		client_close(c);
		return;
	}
	/* A client that does not read its replies is dropped rather than
	 * buffered without bound: what is queued plus this message must fit
	 * the cap, unless nothing is queued (a reply may be bigger than the cap
	 * on its own; requests are not answered while replies are unsent, so
	 * only streams queue behind one). */
	queued = client_output_pending(c);
	if (queued > 0 && queued + len > PROTO_MAX_OUTPUT_QUEUE) {
		log_warn("control: dropping client pid %d uid %u: %zu bytes of replies unread", (int)c->pid,
			 (unsigned)c->uid, queued);
		free(line);
		client_close(c);
		return;
	}
	if (!control_make_room(c->ctl, c, len)) {
		free(line);
		return;
	}
	w = xcalloc(1, sizeof(*w));
	w->client = c;
	w->len = len;
	w->line = line;
	b = uv_buf_init(line, (unsigned)len);
	r = uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_write);
	if (r < 0) {
		free(line);
		free(w);
		log_debug("control: write to pid %d failed: %s", (int)c->pid, uv_strerror(r));
		client_close(c);
	}
}

/* Sends and releases msg. */
void client_send_new(struct client *c, json_t *msg)
{
	client_send(c, msg);
	json_decref(msg);
}

/* Hands the next slice of the shared reply to the socket, when the last
 * one is written: what is queued for this client stays at CONTROL_SLICE. */
void client_pump(struct client *c)
{
	struct write_req *w;
	size_t n;
	uv_buf_t b;
	int r;

	if (c->closing || !c->big || c->big_inflight)
		return;
	n = c->big->len - c->big_off;
	if (n > CONTROL_SLICE)
		n = CONTROL_SLICE;
	if (!control_make_room(c->ctl, c, n))
		return;
	w = xcalloc(1, sizeof(*w));
	w->client = c;
	w->len = n;
	w->shared = shared_out_ref(c->big);
	b = uv_buf_init(c->big->data + c->big_off, (unsigned)n);
	r = uv_write(&w->req, (uv_stream_t *)&c->pipe, &b, 1, on_write);
	if (r < 0) {
		shared_out_unref(c->ctl, w->shared);
		free(w);
		log_debug("control: write to pid %d failed: %s", (int)c->pid, uv_strerror(r));
		client_close(c);
		return;
	}
	c->big_inflight = true;
	c->big_off += n;
	if (c->big_off == c->big->len) {
		shared_out_unref(c->ctl, c->big);
		c->big = NULL;
		c->big_off = 0;
	}
}

/* Sends a reply serialised once for many clients (so stays the caller's). */
void client_send_shared(struct client *c, struct shared_out *so)
{
	if (c->closing || c->finishing)
		return;
	/* Requests are answered only once the previous replies are out. */
	if (c->big) {
		log_error("control: a shared reply while another is unsent");
		client_close(c);
		return;
	}
	c->big = shared_out_ref(so);
	c->big_off = 0;
	c->big_is_log = false;
	client_pump(c);
}

/* ---- replies shared by many clients ---- */

static int dump_count(const char *buffer, size_t size, void *data)
{
	*(size_t *)data += size;
	return 0;
}

struct dump_fill {
	char *p;
	size_t left;
};

static int dump_fill(const char *buffer, size_t size, void *data)
{
	struct dump_fill *f = data;

	if (size > f->left)
		return -1;
	memcpy(f->p, buffer, size);
	f->p += size;
	f->left -= size;
	return 0;
}

/* The stack reply line for doc (NULL: no stack), serialised into one block
 * of exactly its size: counted first, then written, so that a 16 MiB
 * document costs 16 MiB once and not a growing buffer plus its copies. */
static struct shared_out *stack_reply_build(const json_t *doc)
{
	static const char head[] = "{\"ok\":true,\"result\":{\"stack\":", tail[] = "}}\n";
	const size_t flags = JSON_COMPACT | JSON_ENCODE_ANY;
	struct shared_out *so;
	struct dump_fill f;
	size_t n = 0;

	if (!doc)
		doc = json_null();
	if (json_dump_callback(doc, dump_count, &n, flags) < 0)
		return NULL;
	so = malloc(sizeof(*so) + sizeof(head) - 1 + n + sizeof(tail) - 1);
	if (!so)
		return NULL;
	so->refs = 1;
	so->pass = 0;
	so->len = sizeof(head) - 1 + n + sizeof(tail) - 1;
	memcpy(so->data, head, sizeof(head) - 1);
	f = (struct dump_fill){ .p = so->data + sizeof(head) - 1, .left = n };
	if (json_dump_callback(doc, dump_fill, &f, flags) < 0 || f.left != 0) {
		free(so);
		return NULL;
	}
	memcpy(f.p, tail, sizeof(tail) - 1);
	return so;
}

static void stack_cache_drop(struct control *ctl)
{
	for (size_t i = 0; i < ELEMENTSOF(ctl->stack_cache); i++) {
		shared_out_unref(ctl, ctl->stack_cache[i]);
		ctl->stack_cache[i] = NULL;
	}
	ctl->cache_rev[0] = '\0';
}

/* Served from one serialisation per privilege level and stack revision,
 * shared by every reader and written as the socket drains. */
json_t *outq_send_stack(struct client *c)
{
	struct control *ctl = c->ctl;
	bool priv = client_privileged(c);
	const char *rev;
	struct shared_out *so;

	rev = engine_stack_revision(ctl->engine);
	if (!rev || strcmp(rev, ctl->cache_rev) != 0)
		stack_cache_drop(ctl);
	so = ctl->stack_cache[priv];
	if (!so) {
		json_t *stack = engine_stack_json(ctl->engine);

		if (stack && !priv) {
			/* The one place that redacts the stack: secret keys and
			 * files marked "secret": true. The redacted view shares
			 * what it does not hide with the engine's tree. */
			json_t *red = proto_redact_shared(stack);
			json_decref(stack);
			stack = red;
		}
		so = stack_reply_build(stack);
		json_decref(stack);
		if (!so)
			return proto_reply_error(PROTO_E_INTERNAL, "cannot serialise the stack");
		if (rev && strlen(rev) < sizeof(ctl->cache_rev)) {
			ctl->stack_cache[priv] = so;
			memcpy(ctl->cache_rev, rev, strlen(rev) + 1);
		} else {
			client_send_shared(c, so);
			shared_out_unref(ctl, so);
			return NULL;
		}
	}
	ctl->cache_used = uv_now(ctl->loop);
	client_send_shared(c, so);
	return NULL;
}

/* Drops serialised stacks of an old revision or that nobody read lately,
 * and gives freed memory back to the kernel after something large went:
 * glibc keeps freed heap pages, and raises its mmap threshold after a large
 * block, so a 16 MiB document would stay resident after it is gone. */
/* Whether no stack or log reply is cached (nothing for housekeeping to
 * drop later). */
static bool outq_caches_empty(const struct control *ctl)
{
	for (size_t i = 0; i < ELEMENTSOF(ctl->stack_cache); i++)
		if (ctl->stack_cache[i])
			return false;
	for (size_t i = 0; i < ELEMENTSOF(ctl->log_cache); i++)
		if (ctl->log_cache[i].so)
			return false;
	return true;
}

void outq_on_housekeeping(uv_timer_t *t)
{
	struct control *ctl = t->data;
	const char *rev = engine_stack_revision(ctl->engine);
	uint64_t now = uv_now(ctl->loop);

	if (!rev)
		rev = "";
	if (strcmp(rev, ctl->seen_rev) != 0) {
		/* A new stack: the old document goes once nothing uses it. */
		snprintf(ctl->seen_rev, sizeof(ctl->seen_rev), "%s", rev);
		ctl->trim_due = true;
	}
	if (strcmp(rev, ctl->cache_rev) != 0 || now - ctl->cache_used >= CONTROL_STACK_CACHE_MS) {
		bool busy = false;

		for (size_t i = 0; i < ELEMENTSOF(ctl->stack_cache); i++)
			busy = busy || (ctl->stack_cache[i] && ctl->stack_cache[i]->refs > 1);
		if (!busy || strcmp(rev, ctl->cache_rev) != 0)
			stack_cache_drop(ctl);
	}
	for (size_t i = 0; i < ELEMENTSOF(ctl->log_cache); i++) {
		struct log_cache_entry *lc = &ctl->log_cache[i];

		if (lc->so && lc->so->refs == 1 && now - lc->used >= CONTROL_STACK_CACHE_MS) {
			shared_out_unref(ctl, lc->so);
			memset(lc, 0, sizeof(*lc));
		}
	}
	/* Readers of old documents that stopped reading hold them: dropped
	 * beyond the cap even when nothing is written meanwhile. */
	(void)control_make_room(ctl, NULL, 0);
	if (ctl->trim_due) {
		ctl->trim_due = false;
		(void)malloc_trim(0);
		return;
	}
	if (ctl->nclients == 0 && outq_caches_empty(ctl))
		uv_timer_stop(t);
}

void control_housekeeping_arm(struct control *ctl)
{
	if (!ctl->freeing && !uv_is_active((uv_handle_t *)&ctl->housekeeping))
		(void)uv_timer_start(&ctl->housekeeping, outq_on_housekeeping, CONTROL_HOUSEKEEP_MS,
				     CONTROL_HOUSEKEEP_MS);
}

/* Sends the cached log reply of finished run id for c's privilege level,
 * if there is one still valid. */
bool outq_send_log_cached(struct client *c, long id)
{
	struct control *ctl = c->ctl;
	bool priv = client_privileged(c);

	if (!priv)
		needles_update(ctl); /* a new stack may bring new needles */
	for (size_t i = 0; i < ELEMENTSOF(ctl->log_cache); i++) {
		struct log_cache_entry *lc = &ctl->log_cache[i];

		if (!lc->so || lc->run != id || lc->privileged != priv)
			continue;
		if (!priv && lc->gen != ctl->needles_gen)
			return false;
		lc->used = uv_now(ctl->loop);
		client_send_shared(c, lc->so);
		c->big_is_log = true;
		return true;
	}
	return false;
}

/* Sends reply (released) as a shared log reply, kept in the cache when
 * cacheable (a finished run), the least recently used entry making room.
 * Returns NULL, or an error reply. */
json_t *outq_send_log(struct client *c, long id, json_t *reply, bool cacheable)
{
	struct control *ctl = c->ctl;
	struct log_cache_entry *slot = NULL;
	struct shared_out *so;
	size_t len;
	char *line = proto_encode_line(reply, &len);

	json_decref(reply);
	if (!line)
		return proto_reply_error(PROTO_E_INTERNAL, "cannot encode the log");
	so = malloc(sizeof(*so) + len);
	if (!so) {
		free(line);
		return proto_reply_error(PROTO_E_INTERNAL, "out of memory");
	}
	so->refs = 1;
	so->pass = 0;
	so->len = len;
	memcpy(so->data, line, len);
	free(line);
	if (cacheable) {
		for (size_t i = 0; i < ELEMENTSOF(ctl->log_cache); i++) {
			struct log_cache_entry *lc = &ctl->log_cache[i];

			if (lc->so && lc->run == id && lc->privileged == client_privileged(c)) {
				slot = lc; /* a stale one */
				break;
			}
			if (!slot || !lc->so || (slot->so && lc->used < slot->used))
				slot = lc;
		}
		shared_out_unref(ctl, slot->so);
		*slot = (struct log_cache_entry){ .run = id,
						  .privileged = client_privileged(c),
						  .gen = ctl->needles_gen,
						  .used = uv_now(ctl->loop),
						  .so = shared_out_ref(so) };
	}
	client_send_shared(c, so);
	c->big_is_log = true;
	shared_out_unref(ctl, so);
	return NULL;
}

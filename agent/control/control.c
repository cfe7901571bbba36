/* SPDX-License-Identifier: BSD-2-Clause */
/* The control socket server (design.md §5), in the shape of OpenBGPD's
 * control.c: we accept ourselves (so that EMFILE pauses accepting instead of
 * spinning), take the peer's identity from the kernel at accept time, read
 * NDJSON requests through a capped reader, decide the peer's privilege once
 * at accept time (its uid, or membership of admin_group, whose gid and
 * answers are cached for a while), check it in the dispatcher against the
 * method table in lib/proto.c, and write every reply
 * through uv_write with a bounded queue per client.
 *
 * Choices the design leaves open:
 * - An overlong request gets a bad-request reply as soon as the cap is
 *   passed; the rest of that line is discarded and the connection stays
 *   usable after its newline.
 * - Requests on one connection are answered in order. While a stream
 *   (log with follow, run with wait) is active, later requests wait in the
 *   reader (reading stops once a full request's worth is buffered) and are
 *   answered after the stream's final reply.
 * - EOF: the requests already received are answered, then the connection is
 *   closed. A client that only shut down its sending side (socat, nc -N)
 *   still gets a stream it asked for, as long as the stream makes progress:
 *   after PROTO_FINISH_TIMEOUT_MS without any it is closed, like any client
 *   after EOF, so that a half-closed follower of a quiet run does not hold
 *   its uid's slot for the whole run. One that closed the socket (POLLHUP)
 *   is gone, and its stream and engine watch end at once.
 * - Beyond PROTO_MAX_CLIENTS (PROTO_MAX_CLIENTS_PER_UID for one uid other
 *   than root and the daemon's, PROTO_MAX_CLIENTS - PROTO_RESERVED_CLIENTS
 *   for peers that are not privileged) a new connection gets one "limit"
 *   error line and is closed.
 * - Output: a request is answered only once the previous replies are out;
 *   a client whose unsent output (stream events) would pass
 *   PROTO_MAX_OUTPUT_QUEUE is dropped, and so are the biggest queues when
 *   all clients' together would pass PROTO_MAX_OUTPUT_TOTAL. After EOF the
 *   replies must keep making progress (PROTO_FINISH_TIMEOUT_MS).
 * - stack is serialised once per privilege level and stack revision and
 *   shared by its readers, each written CONTROL_SLICE at a time as its
 *   socket drains: a 16 MiB document is not copied per reader. Copies
 *   nobody reads are dropped, and large freed blocks given back to the
 *   kernel (malloc_trim), by a housekeeping timer.
 * - Text shown to unprivileged callers (run output, errors, messages,
 *   diffs) goes through control_redact_text(): lines of files marked
 *   "secret": true, and the value of NAME=VALUE / NAME: VALUE pairs whose
 *   name looks secret, become "***". Live output is redacted a whole line
 *   at a time (held until its newline or the end of its step), never a
 *   chunk at a time: a name and its value may come in different reads. */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "engine/engine.h"
#include "event.h"
#include "log.h"
#include "proto.h"
#include "stack/stack.h"
#include "util.h"

#define CONTROL_ACCEPT_PAUSE_MS 1000 /* accepting resumes this long after EMFILE */
#define CONTROL_ACCEPT_BURST 64      /* connections accepted per wake-up */
#define CONTROL_MAX_REASON 1024      /* bytes in a pause reason */
#define CONTROL_PEER_CHECK_MS 1000   /* a stream whose client no longer reads: is it still there? */
#define CONTROL_NSS_CACHE_MS 10000   /* admin group gid and membership answers are reused this long */
#define CONTROL_SLICE (256 * 1024)   /* bytes of a shared reply handed to the socket at a time */
#define CONTROL_HOUSEKEEP_MS 2000    /* how often stale stack replies are dropped and memory returned */
#define CONTROL_STACK_CACHE_MS 10000 /* a serialised stack nobody reads is dropped after this long */
#define CONTROL_TRIM_BYTES (1024 * 1024) /* freeing this much at once is worth a malloc_trim() */
#define CONTROL_MAX_HELD_LINE (1024 * 1024) /* an output line held for redaction; longer ones are hidden */
#define CONTROL_MAX_NEEDLES 4096 /* lines of secret files looked for in free text */
#define CONTROL_MAX_NEEDLE_BYTES (4 * 1024 * 1024) /* their bytes; past either, output is hidden */
#define CONTROL_MIN_NEEDLE 4     /* shorter lines ("}", "") are not hidden: see needle_add() */
#define CONTROL_EXTRA_REVS 16    /* revisions kept beyond one per run of `history` */
#define CONTROL_LOG_CACHE 4      /* encoded log replies of finished runs kept */

enum client_stream {
	STREAM_NONE,
	STREAM_LOG, /* log with follow: output of one run, then its status */
	STREAM_RUN, /* run with wait: every event of one run, then its run-info */
};

/* One stack revision's needles: the lines of its secret files. */
struct needle_rev {
	char rev[17];
	bool unknown; /* its saved stack could not be read: its runs' output is hidden */
	char **needles;
	size_t n;
	size_t bytes;
};

struct control;

/* A reply serialised once and written to many clients (stack): each client
 * writing it holds a reference, and hands it to the socket a slice at a
 * time, so that the document is neither copied per reader nor queued whole. */
struct shared_out {
	unsigned refs;
	unsigned pass; /* control_make_room() counted it in this pass */
	size_t len;
	char data[];
};

struct client {
	struct control *ctl; /* borrowed */
	struct client *next, *prev;
	uv_pipe_t pipe;
	uv_timer_t timer; /* see client_arm_timer() */
	uv_shutdown_t shutdown_req;
	int open_handles;

	uid_t uid; /* from SO_PEERCRED at accept time */
	gid_t gid;
	pid_t pid;
	bool privileged; /* root, the daemon's uid or admin_group: decided at accept time */

	struct proto_reader reader;
	struct engine_watch watch;
	bool watching; /* watch is on the engine's list */
	enum client_stream stream;
	long stream_run;
	struct shared_out *big; /* reference; the reply being written, from big_off */
	size_t big_off;
	bool big_is_log; /* big is a log reply: see ctl_log()'s per-uid limit */
	bool big_inflight; /* a slice of a shared reply is queued */

	/* After EOF or while finishing, progress is the peer reading, not a
	 * write landing in the socket buffer, which needs no reader at all:
	 * see client_peer_progress(). */
	uint64_t sent;        /* bytes our writes handed to the kernel */
	uint64_t last_sent;   /* sent at the last check */
	int last_unread;      /* SIOCOUTQ at the last check */
	uint64_t progress_at; /* uv_now() of the last progress */
	bool draining;        /* the timer is the periodic check of the peer reading */

	bool reading;
	bool eof;
	bool deferred; /* the timer is due at once: remove the watch, answer queued requests */
	bool finishing;
	bool closing;
};

struct control {
	uv_loop_t *loop;             /* borrowed */
	const struct config *config; /* borrowed */
	struct engine *engine;       /* borrowed */
	int listen_fd;               /* owned; closed after the poll handle */
	char *socket_path;           /* owned; set when we created the socket, unlinked at free */
	uv_poll_t listener;
	uv_timer_t accept_timer;
	int open_handles;
	struct client *clients;
	size_t nclients;
	uid_t euid;
	char *admin_name; /* owned; the admin_group name last resolved */
	gid_t admin_gid;
	bool admin_found;
	uint64_t admin_checked; /* uv_now() of that lookup */
	struct priv_cache_entry {
		bool used, privileged;
		uid_t uid;
		gid_t gid;
		uint64_t at;
	} priv_cache[8];
	size_t priv_next;
	int in_engine_cb; /* inside engine_watch callbacks: do not touch the engine's list */
	bool freeing;

	/* The stack reply, serialised once per privilege level ([0] redacted)
	 * for stack revision cache_rev, while it is read or was read lately. */
	struct shared_out *stack_cache[2];
	char cache_rev[32];
	uint64_t cache_used; /* uv_now() of the last reader */
	char seen_rev[32];   /* the revision housekeeping saw last */
	bool trim_due;       /* a large block was freed: return memory to the kernel */
	uv_timer_t housekeeping;

	/* log replies of finished runs, encoded once per privilege level and
	 * shared like the stack's: a burst of requests for a 2 MiB log costs
	 * one redaction and one encoding, not one per request. gen is
	 * needles_gen when built: new needles make them stale. */
	struct log_cache_entry {
		long run;
		bool privileged;
		unsigned gen;
		uint64_t used;
		struct shared_out *so;
	} log_cache[CONTROL_LOG_CACHE];

	/* Run output shown to unprivileged followers is redacted per line:
	 * held is the incomplete last line of held_run's output (unredacted),
	 * sent once its newline comes or its step ends. Shared by every
	 * follower, and fed by our own watch so that it is right for one who
	 * joins mid-line (the tail of the log file it reads stops before that
	 * line). */
	struct engine_watch watch;
	bool watching;
	long held_run;
	struct buf held;
	bool held_overflow; /* the line passed CONTROL_MAX_HELD_LINE: hidden until its newline */

	/* Lines of the secret files of every stack revision a run in history
	 * may have used (see needles_update): free text shown to unprivileged
	 * callers has them replaced by "***" too, e.g. a recipe that prints the
	 * file. needles_rev is the current revision when they were updated. */
	struct needle_rev *needle_revs; /* max_revs of them */
	size_t max_revs; /* history + CONTROL_EXTRA_REVS: every revision a run can name */
	size_t n_needle_revs;
	size_t needle_count, needle_bytes;
	bool needles_overflow; /* past the caps: run output is hidden (fail closed) */
	bool needles_synced;
	unsigned room_pass; /* see control_make_room() */
	unsigned needles_gen; /* bumped when the needles change */
	long marker_run; /* the run whose followers got control_hidden_marker */
	char needles_rev[32];
	char readbuf[64 * 1024]; /* shared: on_read consumes it before the next read */
};

static void needle_rev_free(struct needle_rev *nr);
static void client_close(struct client *c);
static void client_process(struct client *c);
static void client_arm_timer(struct client *c);
static void on_listener(uv_poll_t *p, int status, int events);

/* ---- lifetime ---- */

static void control_maybe_free(struct control *ctl)
{
	if (!ctl->freeing || ctl->open_handles > 0 || ctl->clients)
		return;
	for (size_t i = 0; i < ELEMENTSOF(ctl->stack_cache); i++)
		free(ctl->stack_cache[i]);
	for (size_t i = 0; i < ELEMENTSOF(ctl->log_cache); i++)
		free(ctl->log_cache[i].so);
	buf_free(&ctl->held);
	for (size_t i = 0; i < ctl->n_needle_revs; i++)
		needle_rev_free(&ctl->needle_revs[i]);
	free(ctl->needle_revs);
	free(ctl->socket_path);
	free(ctl->admin_name);
	free(ctl);
}

static void on_listener_closed(uv_handle_t *h)
{
	struct control *ctl = h->data;

	if (h == (uv_handle_t *)&ctl->listener && ctl->listen_fd >= 0) {
		(void)close(ctl->listen_fd);
		ctl->listen_fd = -1;
	}
	ctl->open_handles--;
	control_maybe_free(ctl);
}

static struct shared_out *shared_out_ref(struct shared_out *so)
{
	so->refs++;
	return so;
}

static void shared_out_unref(struct control *ctl, struct shared_out *so)
{
	if (!so || --so->refs > 0)
		return;
	if (so->len >= CONTROL_TRIM_BYTES)
		ctl->trim_due = true;
	free(so);
}

static void on_client_closed(uv_handle_t *h)
{
	struct client *c = h->data;
	struct control *ctl = c->ctl;

	if (--c->open_handles > 0)
		return;
	shared_out_unref(ctl, c->big);
	c->big = NULL;
	/* control_free() took every watch off the engine's list: the engine may
	 * be gone by now (main frees it before the loop runs close callbacks). */
	if (c->watching && !ctl->freeing)
		engine_watch_remove(ctl->engine, &c->watch);
	c->watching = false;
	if (c->prev)
		c->prev->next = c->next;
	else
		ctl->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	ctl->nclients--;
	proto_reader_free(&c->reader);
	free(c);
	control_maybe_free(ctl);
}

static void client_close(struct client *c)
{
	if (c->closing)
		return;
	c->closing = true;
	c->stream = STREAM_NONE;
	/* Inside an engine callback the engine is walking its watch list, and
	 * only the watch being called may leave it (this client's, or another
	 * client's dropped meanwhile, e.g. for the global output cap): the close
	 * callback, or control_free(), removes the watch then. */
	if (c->watching && c->ctl->in_engine_cb == 0) {
		engine_watch_remove(c->ctl->engine, &c->watch);
		c->watching = false;
	}
	uv_close((uv_handle_t *)&c->pipe, on_client_closed);
	uv_close((uv_handle_t *)&c->timer, on_client_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
	client_close(req->data);
}

/* Closes once every queued reply has been written, or when they stop
 * making progress (PROTO_FINISH_TIMEOUT_MS): the shutdown never completes
 * for a peer that does not read. */
static void client_finish(struct client *c)
{
	if (c->closing || c->finishing)
		return;
	c->finishing = true;
	client_arm_timer(c);
	c->shutdown_req.data = c;
	if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->pipe, on_shutdown) < 0)
		client_close(c);
}

/* ---- output ---- */

struct write_req {
	uv_write_t req;
	struct client *client;
	size_t len;
	char *line;                /* owned, or NULL for a slice of: */
	struct shared_out *shared; /* a reference */
};

static void client_pump(struct client *c);

/* Bytes handed to the socket and not yet written: memory we hold. */
static size_t client_output_queued(struct client *c)
{
	return uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe);
}

/* Bytes of replies not yet written, including the rest of a shared reply
 * (which costs this client nothing, but orders what comes next). */
static size_t client_output_pending(struct client *c)
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

static void client_send(struct client *c, const json_t *msg)
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
static void client_send_new(struct client *c, json_t *msg)
{
	client_send(c, msg);
	json_decref(msg);
}

/* Hands the next slice of the shared reply to the socket, when the last
 * one is written: what is queued for this client stays at CONTROL_SLICE. */
static void client_pump(struct client *c)
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
static void client_send_shared(struct client *c, struct shared_out *so)
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

/* ---- identity ---- */

static bool gid_in_list(gid_t g, const gid_t *list, int n)
{
	for (int i = 0; i < n; i++)
		if (list[i] == g)
			return true;
	return false;
}

/* The admin group's gid, resolved when the name changes or the last lookup
 * is older than CONTROL_NSS_CACHE_MS (so that a group created after startup
 * counts soon enough), not on every connection. */
static bool control_admin_gid(struct control *ctl, gid_t *ret)
{
	const char *name = ctl->config ? ctl->config->admin_group : NULL;
	uint64_t now = uv_now(ctl->loop);
	gid_t gid = (gid_t)-1;
	bool found;

	if (!name || !*name)
		return false;
	if (ctl->admin_name && strcmp(ctl->admin_name, name) == 0 && now - ctl->admin_checked < CONTROL_NSS_CACHE_MS) {
		*ret = ctl->admin_gid;
		return ctl->admin_found;
	}
	found = group_lookup(name, &gid) == 0;
	if (!ctl->admin_name || strcmp(ctl->admin_name, name) != 0 || ctl->admin_found != found ||
	    (found && ctl->admin_gid != gid))
		memset(ctl->priv_cache, 0, sizeof(ctl->priv_cache)); /* decisions about another group */
	free(ctl->admin_name);
	ctl->admin_name = xstrdup(name);
	ctl->admin_found = found;
	ctl->admin_gid = found ? gid : (gid_t)-1;
	ctl->admin_checked = now;
	*ret = ctl->admin_gid;
	return ctl->admin_found;
}

/* NSS lookups, on the loop: once per connection at most, and not again
 * for the same uid and gid within CONTROL_NSS_CACHE_MS. */
static bool uid_in_admin_group(struct control *ctl, uid_t uid, gid_t primary)
{
	struct passwd pwd, *pw = NULL;
	_cleanup_free_ char *pbuf = NULL;
	_cleanup_free_ gid_t *groups = NULL;
	uint64_t now = uv_now(ctl->loop);
	size_t psize = 4096;
	int ngroups = 64, r;
	bool found = false;
	gid_t admin;

	if (!control_admin_gid(ctl, &admin))
		return false;
	if (admin == primary)
		return true;
	for (size_t i = 0; i < ELEMENTSOF(ctl->priv_cache); i++) {
		const struct priv_cache_entry *e = &ctl->priv_cache[i];
		if (e->used && e->uid == uid && e->gid == primary && now - e->at < CONTROL_NSS_CACHE_MS)
			return e->privileged;
	}
	for (;;) {
		pbuf = xrealloc(pbuf, psize);
		r = getpwuid_r(uid, &pwd, pbuf, psize, &pw);
		if (r != ERANGE || psize >= 1024 * 1024)
			break;
		psize *= 2;
	}
	if (r == 0 && pw) {
		for (int tries = 0; tries < 4; tries++) {
			int n = ngroups;
			groups = xrealloc(groups, sizeof(gid_t) * (size_t)n);
			if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &n) >= 0) {
				found = gid_in_list(admin, groups, n);
				break;
			}
			if (n <= ngroups)
				break;
			ngroups = n;
		}
	}
	ctl->priv_cache[ctl->priv_next] = (struct priv_cache_entry){
		.used = true, .uid = uid, .gid = primary, .privileged = found, .at = now
	};
	ctl->priv_next = (ctl->priv_next + 1) % ELEMENTSOF(ctl->priv_cache);
	return found;
}

/* Root and the daemon's own uid, without any lookup. */
static bool uid_is_exempt(const struct control *ctl, uid_t uid)
{
	return uid == 0 || uid == ctl->euid;
}

/* Decided once, at accept time. */
static bool peer_privileged(struct control *ctl, uid_t uid, gid_t gid)
{
	return uid_is_exempt(ctl, uid) || uid_in_admin_group(ctl, uid, gid);
}

static bool client_privileged(struct client *c)
{
	return c->privileged;
}

/* ---- parameters ---- */

/* Each getter returns NULL, or an error reply for the caller to send. */

static json_t *params_only(json_t *params, const char *const *allowed)
{
	const char *k;
	json_t *v;

	json_object_foreach(params, k, v)
	{
		bool ok = false;
		for (size_t i = 0; allowed && allowed[i]; i++)
			if (strcmp(allowed[i], k) == 0)
				ok = true;
		if (!ok)
			return proto_reply_error(PROTO_E_INVALID_PARAMS, "unknown parameter \"%.64s\"", k);
	}
	return NULL;
}

static json_t *param_bool(json_t *params, const char *key, bool *ret)
{
	json_t *v = json_object_get(params, key);

	*ret = false;
	if (!v || json_is_null(v))
		return NULL;
	if (!json_is_boolean(v))
		return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"%s\" must be a boolean", key);
	*ret = json_is_true(v);
	return NULL;
}

/* A layer or app name, optional unless required. */
static json_t *param_name(json_t *params, const char *key, bool required, const char **ret)
{
	json_t *v = json_object_get(params, key);

	*ret = NULL;
	if (!v || json_is_null(v))
		return required ? proto_reply_error(PROTO_E_INVALID_PARAMS, "\"%s\" is required", key) : NULL;
	if (!json_is_string(v))
		return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"%s\" must be a string", key);
	if (!name_is_valid(json_string_value(v)))
		return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"%s\" is not a valid name", key);
	*ret = json_string_value(v);
	return NULL;
}

static json_t *param_event(json_t *params, enum event *ret)
{
	json_t *v = json_object_get(params, "event");

	*ret = EVENT_INVALID;
	if (!v || json_is_null(v))
		return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"event\" is required");
	if (!json_is_string(v))
		return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"event\" must be a string");
	*ret = event_from_string(json_string_value(v));
	if (*ret == EVENT_INVALID)
		return proto_reply_error(PROTO_E_INVALID_PARAMS,
					 "unknown event \"%.64s\" (setup, configure, deploy, undeploy, shutdown)",
					 json_string_value(v));
	return NULL;
}

/* A run id: a positive integer, or "last". */
static json_t *param_run_id(struct client *c, json_t *params, long *ret)
{
	json_t *v = json_object_get(params, "id");

	*ret = 0;
	if (!v || json_is_null(v))
		return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"id\" is required");
	if (json_is_string(v) && strcmp(json_string_value(v), "last") == 0) {
		*ret = engine_last_run_id(c->ctl->engine);
		if (*ret <= 0)
			return proto_reply_error(PROTO_E_NOT_FOUND, "no runs yet");
		return NULL;
	}
	if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > LONG_MAX)
		return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"id\" must be a positive integer or \"last\"");
	*ret = (long)json_integer_value(v);
	return NULL;
}

static json_t *reply_engine_error(int r, char *msg /* freed */)
{
	json_t *reply = proto_reply_error(proto_error_code_from_errno(r), "%s", msg ? msg : strerror(-r));
	free(msg);
	return reply;
}

/* ---- streams ---- */

static void on_watch_event(void *userdata, const json_t *ev);

static void client_stream_start(struct client *c, enum client_stream kind, long run)
{
	c->stream = kind;
	c->stream_run = run;
	if (!c->watching) {
		c->watch = (struct engine_watch){ .on_event = on_watch_event, .userdata = c };
		engine_watch_add(c->ctl->engine, &c->watch);
		c->watching = true;
	}
	client_arm_timer(c);
}

/* The watch is removed, and requests that queued up meanwhile are answered,
 * from the timer: we are inside the engine's callback here. */
static void client_stream_end(struct client *c)
{
	c->stream = STREAM_NONE;
	c->stream_run = 0;
	c->deferred = true;
	client_arm_timer(c);
}

static void needle_rev_free(struct needle_rev *nr)
{
	for (size_t i = 0; i < nr->n; i++)
		free(nr->needles[i]);
	free(nr->needles);
	memset(nr, 0, sizeof(*nr));
}

struct needle_fill {
	struct control *ctl;
	struct needle_rev *nr;
};

/* Lines of a secret string, trimmed, as needles. Lines shorter than
 * CONTROL_MIN_NEEDLE are not hidden ("}", "", a 3-byte word would blank out
 * ordinary text everywhere); there is no upper bound per line (a long
 * one-line token is searched as a substring), only the totals, past which
 * needles_overflow makes run output hidden entirely (fail closed). */
static void needle_add(const char *s, size_t len, void *userdata)
{
	struct needle_fill *f = userdata;
	struct control *ctl = f->ctl;
	struct needle_rev *nr = f->nr;
	const char *end = s + len;

	while (s < end) {
		const char *nl = s;
		const char *a = s, *b;

		/* A NUL ends a piece too: output shows it as U+FFFD. */
		while (nl < end && *nl != '\n' && *nl != '\0')
			nl++;
		b = nl;
		s = nl < end ? nl + 1 : end;
		while (a < b && (*a == ' ' || *a == '\t'))
			a++;
		while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r'))
			b--;
		if (b - a < CONTROL_MIN_NEEDLE)
			continue;
		if (ctl->needle_count >= CONTROL_MAX_NEEDLES ||
		    ctl->needle_bytes + (size_t)(b - a) > CONTROL_MAX_NEEDLE_BYTES) {
			ctl->needles_overflow = true;
			return;
		}
		nr->needles = xrealloc(nr->needles, sizeof(char *) * (nr->n + 1));
		nr->needles[nr->n++] = xstrndup(a, (size_t)(b - a));
		nr->bytes += (size_t)(b - a);
		ctl->needle_count++;
		ctl->needle_bytes += (size_t)(b - a);
	}
}

static struct needle_rev *needle_rev_find(struct control *ctl, const char *rev)
{
	for (size_t i = 0; i < ctl->n_needle_revs; i++)
		if (strcmp(ctl->needle_revs[i].rev, rev) == 0)
			return &ctl->needle_revs[i];
	return NULL;
}

/* Whether a run in history, the current stack or the applied one names rev. */
static bool needle_rev_named(const json_t *runs, const char *cur, const char *applied, const char *rev)
{
	size_t i;
	json_t *r;

	if ((cur && strcmp(cur, rev) == 0) || (applied && strcmp(applied, rev) == 0))
		return true;
	json_array_foreach(json_object_get(runs, "runs"), i, r)
		if (json_is_string(json_object_get(r, "stack_revision")) &&
		    strcmp(json_string_value(json_object_get(r, "stack_revision")), rev) == 0)
			return true;
	return false;
}

/* Adds rev's needles, from doc (the stack, secrets included) or else from
 * its saved copy in state_dir; a revision neither gives is kept as unknown.
 * Makes room by dropping revisions nothing names any more; with none to
 * drop, needles_overflow (fail closed). */
static void needle_rev_add(struct control *ctl, const char *rev, json_t *doc, const json_t *runs, const char *cur,
			   const char *applied)
{
	_cleanup_free_ char *path = NULL, *data = NULL;
	struct needle_rev *nr;
	struct needle_fill f;
	json_t *loaded = NULL;
	size_t len;

	if (!rev || strlen(rev) != 16 || needle_rev_find(ctl, rev))
		return;
	if (ctl->n_needle_revs >= ctl->max_revs) {
		size_t w = 0;

		for (size_t i = 0; i < ctl->n_needle_revs; i++) {
			if (needle_rev_named(runs, cur, applied, ctl->needle_revs[i].rev)) {
				ctl->needle_revs[w++] = ctl->needle_revs[i];
				continue;
			}
			ctl->needle_count -= ctl->needle_revs[i].n;
			ctl->needle_bytes -= ctl->needle_revs[i].bytes;
			needle_rev_free(&ctl->needle_revs[i]);
		}
		for (size_t i = w; i < ctl->n_needle_revs; i++)
			memset(&ctl->needle_revs[i], 0, sizeof(ctl->needle_revs[i]));
		ctl->n_needle_revs = w;
		if (w >= ctl->max_revs) {
			ctl->needles_overflow = true;
			return;
		}
	}
	ctl->needles_gen++;
	nr = &ctl->needle_revs[ctl->n_needle_revs++];
	memcpy(nr->rev, rev, 17);
	if (!doc && ctl->config && ctl->config->state_dir) {
		path = xasprintf("%s/stacks/%s.json", ctl->config->state_dir, rev);
		/* The same bounds as any stack: a saved copy that passes them
		 * costs no more than the stack did when it was current. */
		if (file_read_regular(AT_FDCWD, path, 0, STACK_MAX_BYTES, &data, &len) == 0 &&
		    json_bounds_check(data, len, STACK_MAX_ELEMENTS, STACK_MAX_DEPTH) == 0)
			doc = loaded = json_loadb(data, len, 0, NULL);
	}
	if (!doc) {
		nr->unknown = true;
		return;
	}
	f = (struct needle_fill){ .ctl = ctl, .nr = nr };
	proto_secret_strings(doc, needle_add, &f);
	json_decref(loaded);
}

/* Keeps the needles of every revision whose runs may show up: the current
 * stack's, and those of the runs in history (the applied stack's too), read
 * from state_dir when they were not seen while current. Called when the
 * current revision changes, and for the first time: a revision current
 * since then is already kept, so later runs need no reading. */
static void needles_update(struct control *ctl)
{
	const char *rev = engine_stack_revision(ctl->engine);
	json_t *doc, *runs, *st, *r;
	const char *applied;
	size_t i;

	if (!rev)
		rev = "";
	if (ctl->needles_synced && strcmp(rev, ctl->needles_rev) == 0)
		return;
	if (ctl->needles_overflow) {
		/* Past the caps once is not past them for good: with a new
		 * revision, start again from what the runs in history name, so
		 * that output shows again once the secrets fit. */
		for (size_t k = 0; k < ctl->n_needle_revs; k++)
			needle_rev_free(&ctl->needle_revs[k]);
		memset(ctl->needle_revs, 0, ctl->n_needle_revs * sizeof(*ctl->needle_revs));
		ctl->n_needle_revs = 0;
		ctl->needle_count = 0;
		ctl->needle_bytes = 0;
		ctl->needles_overflow = false;
		ctl->needles_synced = false;
		ctl->needles_gen++;
	}
	runs = engine_runs(ctl->engine, 0);
	st = engine_status(ctl->engine);
	applied = json_string_value(json_object_get(st, "applied_revision"));
	if (rev[0]) {
		doc = engine_stack_json(ctl->engine, true);
		needle_rev_add(ctl, rev, doc, runs, rev, applied);
		json_decref(doc);
	}
	if (!ctl->needles_synced) {
		needle_rev_add(ctl, applied, NULL, runs, rev, applied);
		json_array_foreach(json_object_get(runs, "runs"), i, r)
			needle_rev_add(ctl, json_string_value(json_object_get(r, "stack_revision")), NULL, runs, rev,
				       applied);
	}
	json_decref(runs);
	json_decref(st);
	snprintf(ctl->needles_rev, sizeof(ctl->needles_rev), "%s", rev);
	ctl->needles_synced = true;
}

/* Whether the output of a run of stack revision rev (NULL: unknown) cannot
 * be redacted with certainty for unprivileged callers: too many secrets to
 * track, or a revision whose secrets we never saw. */
static bool needles_unsure(struct control *ctl, const char *rev)
{
	struct needle_rev *nr;

	needles_update(ctl);
	if (ctl->needles_overflow)
		return true;
	if (!rev)
		return false; /* a run that never started has no output */
	nr = needle_rev_find(ctl, rev);
	if (!nr && strlen(rev) == 16) {
		/* A revision not seen while current (a retry against a failed
		 * run's saved stack): read its saved copy now. */
		json_t *runs = engine_runs(ctl->engine, 0), *st = engine_status(ctl->engine);

		needle_rev_add(ctl, rev, NULL, runs, engine_stack_revision(ctl->engine),
			       json_string_value(json_object_get(st, "applied_revision")));
		json_decref(runs);
		json_decref(st);
		if (ctl->needles_overflow)
			return true;
		nr = needle_rev_find(ctl, rev);
	}
	return !nr || nr->unknown;
}

static const char control_hidden_marker[] =
	"[agentd: output hidden: the contents of secret files cannot all be tracked]\n";

static char *replace_all(const char *text, const char *needle)
{
	size_t n = strlen(needle);
	const char *p, *hit;
	struct buf b;

	buf_init(&b);
	for (p = text; (hit = strstr(p, needle)); p = hit + n) {
		buf_append(&b, p, (size_t)(hit - p));
		buf_puts(&b, "***");
	}
	buf_puts(&b, p);
	return buf_steal(&b);
}

/* Text for an unprivileged caller: lines of secret files (of every stack
 * revision kept, see needles_update), then the values of secret-looking
 * assignments, become "***"; when the secrets cannot all be tracked, the
 * whole text is replaced by a marker. Returns a malloc'd string. */
static char *control_redact_text(struct control *ctl, const char *text)
{
	_cleanup_free_ char *scrubbed = NULL;

	needles_update(ctl);
	if (ctl->needles_overflow)
		return xstrdup(control_hidden_marker);
	for (size_t r = 0; r < ctl->n_needle_revs; r++) {
		const struct needle_rev *nr = &ctl->needle_revs[r];

		for (size_t i = 0; i < nr->n; i++) {
			const char *cur = scrubbed ? scrubbed : text;
			char *next;

			if (!strstr(cur, nr->needles[i]))
				continue;
			next = replace_all(cur, nr->needles[i]);
			free(scrubbed);
			scrubbed = next;
		}
	}
	return proto_redact_text(scrubbed ? scrubbed : text);
}

/* Free text that may quote a file, a command's output or a secret (step
 * errors and messages, plan diffs, a pause reason) goes through
 * control_redact_text() for unprivileged callers, at any depth of doc, on
 * top of whatever the engine redacted. */
static void redact_texts(struct control *ctl, json_t *doc)
{
	static const char *const keys[] = { "error", "message", "diff", "reason" };
	const char *k;
	json_t *v;
	size_t i;

	if (json_is_object(doc)) {
		json_object_foreach(doc, k, v)
		{
			bool text = false;

			for (size_t j = 0; j < ELEMENTSOF(keys); j++)
				text = text || strcmp(k, keys[j]) == 0;
			if (text && json_is_string(v)) {
				_cleanup_free_ char *red = control_redact_text(ctl, json_string_value(v));
				json_object_set_new(doc, k, json_string(red));
			} else
				redact_texts(ctl, v);
		}
	} else if (json_is_array(doc)) {
		json_array_foreach(doc, i, v) redact_texts(ctl, v);
	}
}

/* Output events carry raw process output, which need not be UTF-8 (and the
 * engine may build them without checking): rebuilt here as valid JSON text.
 * Only for privileged callers: the others get whole lines, redacted, from
 * held_feed(). */
static json_t *output_event(const json_t *ev)
{
	json_t *data = json_object_get(ev, "data");
	json_t *text = proto_string_lossy(json_string_value(data), json_string_length(data));
	json_t *out;

	out = json_deep_copy(ev);
	json_object_set_new(out, "data", text ? text : json_string(""));
	return out;
}

/* Whether c is an unprivileged follower of run: its output comes redacted,
 * a line at a time, from the held line machinery below. */
static bool client_follows_redacted(const struct client *c, long run)
{
	return !c->closing && !c->privileged && c->stream != STREAM_NONE && c->stream_run == run;
}

/* Sends data (len bytes of run output, redacted here unless it is our own
 * marker) to every unprivileged follower of run. Called inside engine
 * callbacks (in_engine_cb is raised). */
static void held_send(struct control *ctl, long run, const char *data, size_t len, bool redact)
{
	json_auto_t *ev = NULL;
	json_t *text;
	bool any = false;

	for (struct client *c = ctl->clients; c && !any; c = c->next)
		any = client_follows_redacted(c, run);
	if (!any || len == 0)
		return;
	if (redact && needles_unsure(ctl, NULL)) {
		if (ctl->marker_run == run)
			return;
		ctl->marker_run = run;
		data = control_hidden_marker;
		len = strlen(control_hidden_marker);
		redact = false;
	}
	text = proto_string_lossy(data, len);
	if (redact) {
		_cleanup_free_ char *red = control_redact_text(ctl, json_string_value(text));
		json_decref(text);
		text = json_string(red);
	}
	ev = json_pack("{s:s, s:I, s:o}", "event", "output", "run", (json_int_t)run, "data",
		       text ? text : json_string(""));
	/* client_send() may drop clients (output caps): they stay on the
	 * list until their handles are closed. */
	for (struct client *c = ctl->clients; c; c = c->next)
		if (client_follows_redacted(c, run))
			client_send(c, ev);
}

static void held_send_marker(struct control *ctl, long run, bool newline)
{
	char msg[128];
	int n = snprintf(msg, sizeof(msg), "[agentd: a line longer than %d bytes, hidden while it was written]%s",
			 CONTROL_MAX_HELD_LINE, newline ? "\n" : "");

	held_send(ctl, run, msg, (size_t)n, false);
}

static void held_reset(struct control *ctl, long run)
{
	ctl->held_run = run;
	ctl->held_overflow = false;
	if (ctl->held.cap > 64 * 1024)
		buf_free(&ctl->held); /* a long line: give its memory back */
	else
		buf_reset(&ctl->held);
}

static void held_append(struct control *ctl, const char *data, size_t len)
{
	if (ctl->held_overflow || len == 0)
		return;
	if (ctl->held.len + len > CONTROL_MAX_HELD_LINE) {
		/* Never sent in pieces (a piece could end inside an
		 * assignment): hidden from here to its newline. */
		held_reset(ctl, ctl->held_run);
		ctl->held_overflow = true;
		return;
	}
	buf_append(&ctl->held, data, len);
}

/* One chunk of run output, as the engine read it: whatever completes lines
 * goes out redacted, the incomplete last line is held. */
static void held_feed(struct control *ctl, long run, const char *data, size_t len)
{
	const char *last_nl = len ? memrchr(data, '\n', len) : NULL;
	size_t head;

	if (ctl->held_run != run)
		held_reset(ctl, run);
	if (!last_nl) {
		held_append(ctl, data, len);
		return;
	}
	head = (size_t)(last_nl - data) + 1;
	if (ctl->held_overflow) {
		const char *nl = memchr(data, '\n', head);
		size_t skip = (size_t)(nl - data) + 1;

		held_send_marker(ctl, run, true);
		held_send(ctl, run, data + skip, head - skip, true);
		held_reset(ctl, run);
	} else if (ctl->held.len > 0) {
		buf_append(&ctl->held, data, head);
		held_send(ctl, run, ctl->held.data, ctl->held.len, true);
		held_reset(ctl, run);
	} else
		held_send(ctl, run, data, head, true);
	held_append(ctl, data + head, len - head);
}

/* The step or the run ended: its last line is complete as it is. */
static void held_flush(struct control *ctl, long run)
{
	if (ctl->held_run != run)
		return;
	if (ctl->held_overflow)
		held_send_marker(ctl, run, false);
	else if (ctl->held.len > 0)
		held_send(ctl, run, ctl->held.data, ctl->held.len, true);
	held_reset(ctl, 0);
}

/* Our own watch, always on: it sees every chunk of every run's output. */
static void on_control_event(void *userdata, const json_t *ev)
{
	struct control *ctl = userdata;
	const char *name = json_string_value(json_object_get(ev, "event"));
	json_t *run = json_object_get(ev, "run");
	json_t *data = json_object_get(ev, "data");

	if (ctl->freeing || !name || !json_is_integer(run))
		return;
	ctl->in_engine_cb++;
	/* A run's stack is current (or saved) when it starts, and its saved
	 * copy goes once it ends: take its secrets now, so that its output can
	 * be redacted later rather than hidden as unknown. */
	if (strcmp(name, "run-started") == 0)
		needles_update(ctl);
	if (strcmp(name, "output") == 0)
		held_feed(ctl, (long)json_integer_value(run), json_string_value(data), json_string_length(data));
	else
		held_flush(ctl, (long)json_integer_value(run));
	if (strcmp(name, "run-finished") == 0)
		ctl->trim_due = true; /* the run's stack and buffers are gone by the next housekeeping */
	ctl->in_engine_cb--;
}

static void on_watch_event(void *userdata, const json_t *ev)
{
	struct client *c = userdata;
	struct control *ctl = c->ctl;
	const char *name = json_string_value(json_object_get(ev, "event"));
	json_t *run = json_object_get(ev, "run");
	bool output, finished;

	if (c->closing || c->stream == STREAM_NONE || !name || !json_is_integer(run) ||
	    json_integer_value(run) != c->stream_run)
		return;
	output = strcmp(name, "output") == 0;
	finished = strcmp(name, "run-finished") == 0;

	ctl->in_engine_cb++;
	/* Whichever watch sees a step or run boundary first completes the held
	 * line, so that it comes before what follows it. */
	if (!output)
		held_flush(ctl, c->stream_run);
	if (output) {
		if (client_privileged(c))
			client_send_new(c, output_event(ev));
	} else if (c->stream == STREAM_RUN) {
		if (client_privileged(c))
			client_send(c, ev);
		else {
			json_t *copy = json_deep_copy(ev);
			redact_texts(ctl, copy);
			client_send_new(c, copy);
		}
	}

	if (finished && c->stream == STREAM_LOG) {
		json_t *status = json_object_get(ev, "status");
		client_send_new(c, proto_reply_ok(json_pack("{s:I, s:O}", "id", (json_int_t)c->stream_run, "status",
							     status ? status : json_null())));
		client_stream_end(c);
	} else if (finished && c->stream == STREAM_RUN) {
		json_t *info = engine_run_info(ctl->engine, c->stream_run);
		if (!info) {
			json_t *status = json_object_get(ev, "status");
			info = json_pack("{s:I, s:O}", "id", (json_int_t)c->stream_run, "status",
					 status ? status : json_null());
		}
		if (!client_privileged(c))
			redact_texts(c->ctl, info);
		client_send_new(c, proto_reply_ok(info));
		client_stream_end(c);
	}
	ctl->in_engine_cb--;
}

/* ---- methods ---- */

typedef json_t *(*ctl_handler)(struct client *c, json_t *params);

static json_t *ctl_version(struct client *c, json_t *params)
{
	json_t *err = params_only(params, NULL);
	if (err)
		return err;
	return proto_reply_ok(
		json_pack("{s:s, s:i}", "version", AGENTD_VERSION, "protocol", PROTO_VERSION));
}

static json_t *ctl_status(struct client *c, json_t *params)
{
	json_t *err = params_only(params, NULL);
	json_t *st;

	if (err)
		return err;
	st = engine_status(c->ctl->engine);
	if (!st)
		return proto_reply_error(PROTO_E_INTERNAL, "no status");
	if (!client_privileged(c))
		redact_texts(c->ctl, st);
	return proto_reply_ok(st);
}

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
static json_t *ctl_stack(struct client *c, json_t *params)
{
	struct control *ctl = c->ctl;
	json_t *err = params_only(params, NULL);
	bool priv = client_privileged(c);
	const char *rev;
	struct shared_out *so;

	if (err)
		return err;
	rev = engine_stack_revision(ctl->engine);
	if (!rev || strcmp(rev, ctl->cache_rev) != 0)
		stack_cache_drop(ctl);
	so = ctl->stack_cache[priv];
	if (!so) {
		json_t *stack = engine_stack_json(ctl->engine, priv);

		if (stack && !priv) {
			/* The engine redacts too; this is the one place that
			 * guarantees it for every document we hand out. */
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
static void on_housekeeping(uv_timer_t *t)
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
	}
}

static json_t *ctl_runs(struct client *c, json_t *params)
{
	static const char *const allowed[] = { "n", NULL };
	json_t *err = params_only(params, allowed);
	json_t *n = json_object_get(params, "n");
	json_t *runs;
	long count = 20;

	if (err)
		return err;
	if (n && !json_is_null(n)) {
		if (!json_is_integer(n) || json_integer_value(n) < 1 || json_integer_value(n) > 1000)
			return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"n\" must be an integer from 1 to 1000");
		count = (long)json_integer_value(n);
	}
	runs = engine_runs(c->ctl->engine, count);
	if (!runs)
		runs = json_pack("{s:[]}", "runs");
	if (!client_privileged(c))
		redact_texts(c->ctl, runs);
	return proto_reply_ok(runs);
}

static json_t *ctl_run_info(struct client *c, json_t *params)
{
	static const char *const allowed[] = { "id", NULL };
	json_t *err = params_only(params, allowed);
	json_t *info;
	long id;

	if (err || (err = param_run_id(c, params, &id)))
		return err;
	info = engine_run_info(c->ctl->engine, id);
	if (!info)
		return proto_reply_error(PROTO_E_NOT_FOUND, "no run %ld", id);
	if (!client_privileged(c))
		redact_texts(c->ctl, info);
	return proto_reply_ok(info);
}

/* Reads at most max bytes from the end of a run log, starting at a line
 * boundary when it had to cut (nothing, when the tail is one line: its
 * start, perhaps the name of a secret, is not in it). Synchronous, but
 * bounded and local: a FIFO or a symlink planted in its place is refused
 * (-EINVAL, -ELOOP) without blocking or following it. */
static int read_log_tail(const char *path, size_t max, char **ret, size_t *ret_len, bool *ret_truncated)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *data = NULL;
	struct stat st;
	size_t want, got = 0;
	off_t off;

	*ret = NULL;
	*ret_len = 0;
	*ret_truncated = false;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	want = (size_t)st.st_size > max ? max : (size_t)st.st_size;
	off = st.st_size - (off_t)want;
	data = xmalloc(want + 1);
	while (got < want) {
		ssize_t n = pread(fd, data + got, want - got, off + (off_t)got);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (off > 0) {
		char *nl = memchr(data, '\n', got);
		size_t skip = nl ? (size_t)(nl - data) + 1 : got;

		memmove(data, data + skip, got - skip);
		got -= skip;
		*ret_truncated = true;
	}
	data[got] = '\0';
	*ret = data;
	*ret_len = got;
	data = NULL;
	return 0;
}

/* Sends the cached log reply of finished run id for c's privilege level,
 * if there is one still valid. */
static bool log_cache_send(struct client *c, long id)
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
static json_t *log_reply_send(struct client *c, long id, json_t *reply, bool cacheable)
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

static json_t *ctl_log(struct client *c, json_t *params)
{
	static const char *const allowed[] = { "id", "follow", NULL };
	struct engine *e = c->ctl->engine;
	json_t *err = params_only(params, allowed);
	_cleanup_free_ char *path = NULL, *data = NULL;
	json_t *text, *info, *status, *result;
	bool follow, truncated = false, hidden;
	size_t len = 0;
	long id;
	int r;

	if (err || (err = param_run_id(c, params, &id)) || (err = param_bool(params, "follow", &follow)))
		return err;
	if (!engine_run_is_active(e, id) && log_cache_send(c, id))
		return NULL;
	if (!client_privileged(c)) {
		/* One log reply being built or sent per unprivileged uid: a
		 * burst of requests for large logs is not a burst of copies. */
		for (struct client *o = c->ctl->clients; o; o = o->next)
			if (o != c && !o->closing && o->uid == c->uid && o->big && o->big_is_log)
				return proto_reply_error(PROTO_E_LIMIT,
							 "another log reply for this user is still being sent");
	}
	info = engine_run_info(e, id);
	path = engine_run_log_path(e, id);
	r = path ? read_log_tail(path, PROTO_MAX_LOG_OUTPUT, &data, &len, &truncated) : -ENOENT;
	if (r == -ENOENT && info)
		r = 0; /* the run exists and has written nothing yet */
	if (r < 0) {
		json_decref(info);
		if (r == -ENOENT)
			return proto_reply_error(PROTO_E_NOT_FOUND, "no run %ld", id);
		return proto_reply_error(PROTO_E_FAILED, "cannot read the log of run %ld: %s", id, strerror(-r));
	}
	if (!client_privileged(c) && engine_run_is_active(e, id)) {
		/* The line being written stays out until it is complete: a
		 * follower gets it, whole and redacted, from held_feed(). */
		char *nl = data ? memrchr(data, '\n', len) : NULL;
		len = nl ? (size_t)(nl - data) + 1 : 0;
	}
	hidden = !client_privileged(c) && len > 0 &&
		 needles_unsure(c->ctl, json_string_value(json_object_get(info, "stack_revision")));
	if (hidden) {
		/* Its secrets cannot all be found in it: none of it is shown. */
		text = json_string(control_hidden_marker);
		if (engine_run_is_active(e, id))
			c->ctl->marker_run = id;
	} else
		text = proto_string_lossy(data ? data : "", len);
	if (!client_privileged(c) && !hidden) {
		_cleanup_free_ char *red = control_redact_text(c->ctl, json_string_value(text));
		json_decref(text);
		text = json_string(red);
	}

	if (follow && engine_run_is_active(e, id)) {
		json_decref(info);
		client_send_new(c, json_pack("{s:s, s:I, s:o}", "event", "output", "run", (json_int_t)id, "data", text));
		if (!c->closing)
			client_stream_start(c, STREAM_LOG, id);
		return NULL;
	}
	status = info ? json_object_get(info, "status") : NULL;
	result = json_pack("{s:I, s:o, s:O, s:b}", "id", (json_int_t)id, "output", text, "status",
			   status ? status : json_null(), "truncated", truncated);
	json_decref(info);
	return log_reply_send(c, id, proto_reply_ok(result), !engine_run_is_active(e, id));
}

static json_t *ctl_plan(struct client *c, json_t *params)
{
	static const char *const allowed[] = { "event", "layer", "app", NULL };
	json_t *err = params_only(params, allowed);
	const char *layer, *app;
	char *msg = NULL;
	json_t *result = NULL;
	enum event ev;
	int r;

	if (err || (err = param_event(params, &ev)) || (err = param_name(params, "layer", false, &layer)) ||
	    (err = param_name(params, "app", false, &app)))
		return err;
	r = engine_plan(c->ctl->engine, ev, layer, app, client_privileged(c), &result, &msg);
	if (r < 0)
		return reply_engine_error(r, msg);
	free(msg);
	if (result && !client_privileged(c))
		redact_texts(c->ctl, result);
	return proto_reply_ok(result);
}

static json_t *ctl_run(struct client *c, json_t *params)
{
	static const char *const allowed[] = { "event", "layer", "app", "wait", NULL };
	struct engine *e = c->ctl->engine;
	json_t *err = params_only(params, allowed);
	const char *layer, *app;
	char *msg = NULL;
	enum event ev;
	bool wait;
	long id = 0;
	int r;

	if (err || (err = param_event(params, &ev)) || (err = param_name(params, "layer", false, &layer)) ||
	    (err = param_name(params, "app", false, &app)) || (err = param_bool(params, "wait", &wait)))
		return err;
	r = engine_request_run(e, ev, layer, app, TRIGGER_CTL, &id, &msg);
	if (r < 0)
		return reply_engine_error(r, msg);
	free(msg);
	log_info("control: run %ld (%s%s%s%s%s) requested by uid %u pid %d", id, event_to_string(ev),
		 layer ? " layer " : "", layer ? layer : "", app ? " app " : "", app ? app : "", (unsigned)c->uid,
		 (int)c->pid);
	if (!wait)
		return proto_reply_ok(json_pack("{s:I, s:b}", "id", (json_int_t)id, "queued", 1));
	if (!engine_run_is_active(e, id)) {
		json_t *info = engine_run_info(e, id);
		return proto_reply_ok(info ? info : json_pack("{s:I}", "id", (json_int_t)id));
	}
	client_send_new(c, json_pack("{s:s, s:I}", "event", "run-queued", "run", (json_int_t)id));
	if (!c->closing)
		client_stream_start(c, STREAM_RUN, id);
	return NULL;
}

static json_t *ctl_reload(struct client *c, json_t *params)
{
	json_t *err = params_only(params, NULL);
	if (err)
		return err;
	engine_reload(c->ctl->engine);
	return proto_reply_ok(NULL);
}

static json_t *ctl_pause(struct client *c, json_t *params)
{
	static const char *const allowed[] = { "reason", NULL };
	json_t *err = params_only(params, allowed);
	json_t *v = json_object_get(params, "reason");
	const char *reason = NULL;
	char *msg = NULL;
	int r;

	if (err)
		return err;
	if (v && !json_is_null(v)) {
		if (!json_is_string(v))
			return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"reason\" must be a string");
		if (json_string_length(v) > CONTROL_MAX_REASON)
			return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"reason\" is longer than %d bytes",
						 CONTROL_MAX_REASON);
		reason = json_string_value(v);
	}
	r = engine_pause(c->ctl->engine, reason, &msg);
	if (r < 0)
		return reply_engine_error(r, msg);
	free(msg);
	log_info("control: paused by uid %u%s%s", (unsigned)c->uid, reason ? ": " : "", reason ? reason : "");
	return proto_reply_ok(NULL);
}

static json_t *ctl_resume(struct client *c, json_t *params)
{
	json_t *err = params_only(params, NULL);
	char *msg = NULL;
	int r;

	if (err)
		return err;
	r = engine_resume(c->ctl->engine, &msg);
	if (r < 0)
		return reply_engine_error(r, msg);
	free(msg);
	return proto_reply_ok(NULL);
}

static json_t *ctl_clear_failed(struct client *c, json_t *params)
{
	json_t *err = params_only(params, NULL);
	char *msg = NULL;
	int r;

	if (err)
		return err;
	r = engine_clear_failed(c->ctl->engine, &msg);
	if (r < 0)
		return reply_engine_error(r, msg);
	free(msg);
	return proto_reply_ok(NULL);
}

static json_t *ctl_rollback(struct client *c, json_t *params)
{
	static const char *const allowed[] = { "app", NULL };
	json_t *err = params_only(params, allowed);
	json_t *result = NULL;
	const char *app;
	char *msg = NULL;
	int r;

	if (err || (err = param_name(params, "app", true, &app)))
		return err;
	r = engine_rollback(c->ctl->engine, app, &result, &msg);
	if (r < 0)
		return reply_engine_error(r, msg);
	free(msg);
	log_info("control: rollback of %s requested by uid %u", app, (unsigned)c->uid);
	return proto_reply_ok(result);
}

struct control_method {
	ctl_handler handler;
	enum proto_priv priv;
};

/* The method table: the handler and privilege of every method of
 * lib/proto.h. A switch without default, so that the compiler (-Wswitch, in
 * -Wall, with -Werror) refuses a method that has no line here. Privilege is
 * checked once, in client_dispatch(): anything not PROTO_OPEN is denied to
 * peers that are not privileged. */
static struct control_method control_method_get(enum proto_method m)
{
	switch (m) {
	case PROTO_METHOD_VERSION:
		return (struct control_method){ ctl_version, PROTO_OPEN };
	case PROTO_METHOD_STATUS:
		return (struct control_method){ ctl_status, PROTO_OPEN };
	case PROTO_METHOD_STACK:
		return (struct control_method){ ctl_stack, PROTO_OPEN };
	case PROTO_METHOD_RUNS:
		return (struct control_method){ ctl_runs, PROTO_OPEN };
	case PROTO_METHOD_RUN_INFO:
		return (struct control_method){ ctl_run_info, PROTO_OPEN };
	case PROTO_METHOD_LOG:
		return (struct control_method){ ctl_log, PROTO_OPEN };
	case PROTO_METHOD_PLAN:
		return (struct control_method){ ctl_plan, PROTO_OPEN };
	case PROTO_METHOD_RUN:
		return (struct control_method){ ctl_run, PROTO_PRIV };
	case PROTO_METHOD_RELOAD:
		return (struct control_method){ ctl_reload, PROTO_PRIV };
	case PROTO_METHOD_PAUSE:
		return (struct control_method){ ctl_pause, PROTO_PRIV };
	case PROTO_METHOD_RESUME:
		return (struct control_method){ ctl_resume, PROTO_PRIV };
	case PROTO_METHOD_CLEAR_FAILED:
		return (struct control_method){ ctl_clear_failed, PROTO_PRIV };
	case PROTO_METHOD_ROLLBACK:
		return (struct control_method){ ctl_rollback, PROTO_PRIV };
	case _PROTO_METHOD_MAX:
	case PROTO_METHOD_INVALID:
		break;
	}
	return (struct control_method){ NULL, PROTO_PRIV };
}

enum proto_priv control_method_priv(enum proto_method m)
{
	return control_method_get(m).priv;
}

static json_t *client_dispatch(struct client *c, const char *line)
{
	struct control_method m;
	enum proto_method id;
	json_t *params, *method;
	json_error_t jerr;
	json_auto_t *req = NULL;
	json_auto_t *empty = NULL;

	req = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
	/* JSON numbers have no range, ours do: a number beyond 64 bits is a
	 * parameter out of range, not malformed JSON. */
	if (!req && (strstr(jerr.text, "too big integer") || strstr(jerr.text, "real number overflow")))
		return proto_reply_error(PROTO_E_INVALID_PARAMS, "a number is out of range: %s", jerr.text);
	if (!req)
		return proto_reply_error(PROTO_E_BAD_REQUEST, "invalid JSON: %s", jerr.text);
	if (!json_is_object(req))
		return proto_reply_error(PROTO_E_BAD_REQUEST, "a request must be a JSON object");
	method = json_object_get(req, "method");
	if (!json_is_string(method))
		return proto_reply_error(PROTO_E_BAD_REQUEST, "\"method\" must be a string");
	params = json_object_get(req, "params");
	if (!params || json_is_null(params))
		params = empty = json_object();
	else if (!json_is_object(params))
		return proto_reply_error(PROTO_E_BAD_REQUEST, "\"params\" must be an object");

	id = proto_method_from_string(json_string_value(method));
	if (id == PROTO_METHOD_INVALID)
		return proto_reply_error(PROTO_E_UNKNOWN_METHOD, "unknown method \"%.64s\"",
					 json_string_value(method));
	m = control_method_get(id);
	if (m.priv != PROTO_OPEN && !client_privileged(c)) {
		log_info("control: %s denied to uid %u pid %d", proto_method_to_string(id), (unsigned)c->uid,
			 (int)c->pid);
		return proto_reply_error(PROTO_E_PERMISSION, "%s needs root, uid %u or membership of group %s",
					 proto_method_to_string(id), (unsigned)c->ctl->euid,
					 c->ctl->config && c->ctl->config->admin_group ? c->ctl->config->admin_group
										      : "(none)");
	}
	return m.handler(c, params);
}

/* ---- input ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct client *c = h->data;

	*buf = uv_buf_init(c->ctl->readbuf, sizeof(c->ctl->readbuf));
}

/* After EOF: did the peer close the socket, or only shut down its side? */
static bool client_peer_gone(struct client *c)
{
	struct pollfd p = { .events = POLLOUT };
	uv_os_fd_t fd;

	if (uv_fileno((uv_handle_t *)&c->pipe, &fd) < 0)
		return true;
	p.fd = fd;
	if (poll(&p, 1, 0) < 0)
		return true;
	return (p.revents & (POLLHUP | POLLERR)) != 0;
}

/* Whether the peer read anything since the last check. For an AF_UNIX
 * stream socket SIOCOUTQ is the memory of what the peer has not read yet,
 * counted with each buffer's overhead (so never less than the bytes): had
 * the peer read nothing, it would have grown by at least the bytes written
 * since. When it cannot be told: no progress. */
static bool client_peer_progress(struct client *c)
{
	uv_os_fd_t fd;
	int unread = 0;
	bool progress;

	if (uv_fileno((uv_handle_t *)&c->pipe, &fd) < 0 || ioctl(fd, SIOCOUTQ, &unread) < 0 || unread < 0)
		return false;
	progress = (int64_t)unread - (int64_t)c->last_unread < (int64_t)(c->sent - c->last_sent);
	c->last_unread = unread;
	c->last_sent = c->sent;
	return progress;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
	struct client *c = s->data;

	if (c->closing)
		return;
	if (nread > 0) {
		proto_reader_feed(&c->reader, buf->base, (size_t)nread);
		client_process(c);
	} else if (nread < 0) {
		if (nread != UV_EOF || (c->stream != STREAM_NONE && client_peer_gone(c))) {
			client_close(c);
			return;
		}
		c->eof = true;
		uv_read_stop(s);
		c->reading = false;
		client_process(c);
	}
}

/* Answers every complete request buffered, in order, until a stream starts
 * or a reply is left unsent (the next request waits for it to go out). */
static void client_process(struct client *c)
{
	bool held;

	while (!c->closing && !c->finishing && c->stream == STREAM_NONE && !c->deferred &&
	       client_output_pending(c) == 0) {
		char *line = NULL;
		json_t *reply;
		int r = proto_reader_next(&c->reader, &line);

		if (r == 0)
			break;
		if (r == -EMSGSIZE)
			reply = proto_reply_error(PROTO_E_BAD_REQUEST, "request longer than %d bytes",
						  PROTO_MAX_REQUEST);
		else if (r < 0)
			reply = proto_reply_error(PROTO_E_BAD_REQUEST, "request contains a NUL byte");
		else
			reply = client_dispatch(c, line);
		free(line);
		if (reply)
			client_send_new(c, reply);
	}
	if (c->closing || c->finishing)
		return;

	held = c->stream != STREAM_NONE || c->deferred ||
	       (client_output_pending(c) > 0 && proto_reader_ready(&c->reader));
	if (held) {
		/* Back-pressure on a client that pipelines behind a stream or
		 * behind replies it has not read. */
		if (c->reading && proto_reader_pending(&c->reader) >= PROTO_MAX_REQUEST) {
			uv_read_stop((uv_stream_t *)&c->pipe);
			c->reading = false;
		}
	} else if (c->eof && !c->big) {
		client_finish(c);
		return;
	} else if (c->eof) {
		/* The rest of a shared reply goes out first (client_pump). */
	} else if (!c->reading) {
		if (uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) < 0) {
			client_close(c);
			return;
		}
		c->reading = true;
	}
	client_arm_timer(c);
}

static void on_client_timer(uv_timer_t *t)
{
	struct client *c = t->data;

	if (c->closing)
		return;
	if (c->deferred) {
		c->deferred = false;
		if (c->watching && c->stream == STREAM_NONE) {
			engine_watch_remove(c->ctl->engine, &c->watch);
			c->watching = false;
		}
		client_process(c);
		return;
	}
	if (c->finishing || c->eof) {
		uint64_t now = uv_now(c->ctl->loop);

		if (client_peer_progress(c)) {
			c->progress_at = now;
			return;
		}
		if (now - c->progress_at < PROTO_FINISH_TIMEOUT_MS)
			return;
		log_debug("control: closing client pid %d uid %u: %s", (int)c->pid, (unsigned)c->uid,
			  c->stream != STREAM_NONE ? "it shut down its side and its stream made no progress"
						   : "its replies are not being read");
		client_close(c);
		return;
	}
	if (c->stream != STREAM_NONE) {
		if (client_peer_gone(c)) {
			log_debug("control: client pid %d uid %u left its stream", (int)c->pid, (unsigned)c->uid);
			client_close(c);
		}
		return;
	}
	log_debug("control: closing idle client pid %d uid %u", (int)c->pid, (unsigned)c->uid);
	client_close(c);
}

/* One timer per client, for whichever applies:
 * - deferred: at once;
 * - finishing, or after EOF (a half-close) with a stream or a shared reply
 *   still going: a check every CONTROL_PEER_CHECK_MS, closing once the peer
 *   has read nothing for PROTO_FINISH_TIMEOUT_MS (see client_peer_progress:
 *   our writes completing into the socket buffer are not progress), so
 *   that a follower that half-closed does not keep its slot through a
 *   quiet run, nor through a chatty one it does not read;
 * - stream: none while we read (EOF or an error tells us the client went
 *   away, and a client that stops reading the stream's output meets the
 *   output cap); once we stopped reading (half-close, or back-pressure), a
 *   check every CONTROL_PEER_CHECK_MS that the peer is still there;
 * - otherwise: PROTO_IDLE_TIMEOUT_MS from the last request or progress of
 *   replies. */
static void client_arm_timer(struct client *c)
{
	if (c->closing)
		return;
	if (c->deferred) {
		c->draining = false;
		uv_timer_start(&c->timer, on_client_timer, 0, 0);
		return;
	}
	if (c->finishing || c->eof) {
		if (!c->draining) {
			c->draining = true;
			(void)client_peer_progress(c); /* the baseline */
			c->progress_at = uv_now(c->ctl->loop);
			uv_timer_start(&c->timer, on_client_timer, CONTROL_PEER_CHECK_MS, CONTROL_PEER_CHECK_MS);
		}
		return;
	}
	c->draining = false;
	if (c->stream != STREAM_NONE && c->reading)
		uv_timer_stop(&c->timer); /* a stream may be quiet for a long time */
	else if (c->stream != STREAM_NONE)
		uv_timer_start(&c->timer, on_client_timer, CONTROL_PEER_CHECK_MS, CONTROL_PEER_CHECK_MS);
	else
		uv_timer_start(&c->timer, on_client_timer, PROTO_IDLE_TIMEOUT_MS, 0);
}

/* ---- accepting ---- */

/* Best effort, never blocking: one line on a fresh socket fits its buffer. */
static void reject_fd(int fd, const char *msg)
{
	json_auto_t *reply = proto_reply_error(PROTO_E_LIMIT, "%s", msg);
	_cleanup_free_ char *line = NULL;
	size_t len;

	line = proto_encode_line(reply, &len);
	if (line)
		(void)!send(fd, line, len, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)close(fd);
}

static void control_add_client(struct control *ctl, int fd)
{
	struct ucred cred;
	socklen_t sl = sizeof(cred);
	struct client *c;
	size_t same_uid = 0;
	bool privileged;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &sl) < 0) {
		log_warn_errno(-errno, "control: SO_PEERCRED: %m");
		(void)close(fd);
		return;
	}
	if (ctl->nclients >= PROTO_MAX_CLIENTS) {
		log_warn("control: refusing pid %d uid %u: %d connections open", (int)cred.pid, (unsigned)cred.uid,
			 PROTO_MAX_CLIENTS);
		reject_fd(fd, "too many connections");
		return;
	}
	/* Root and the daemon's uid are not limited per uid, so that other
	 * users cannot lock them out; every other uid is, before any lookup. */
	if (!uid_is_exempt(ctl, cred.uid)) {
		for (c = ctl->clients; c; c = c->next)
			if (c->uid == cred.uid && !c->closing)
				same_uid++;
		if (same_uid >= PROTO_MAX_CLIENTS_PER_UID) {
			log_warn("control: refusing pid %d uid %u: %zu connections open for that uid", (int)cred.pid,
				 (unsigned)cred.uid, same_uid);
			reject_fd(fd, "too many connections for this user");
			return;
		}
	}
	privileged = peer_privileged(ctl, cred.uid, cred.gid);
	if (!privileged && ctl->nclients >= PROTO_MAX_CLIENTS - PROTO_RESERVED_CLIENTS) {
		log_warn("control: refusing pid %d uid %u: %zu connections open, the rest are for privileged users",
			 (int)cred.pid, (unsigned)cred.uid, ctl->nclients);
		reject_fd(fd, "too many connections");
		return;
	}

	c = xcalloc(1, sizeof(*c));
	c->ctl = ctl;
	c->uid = cred.uid;
	c->gid = cred.gid;
	c->pid = cred.pid;
	c->privileged = privileged;
	proto_reader_init(&c->reader, PROTO_MAX_REQUEST);
	uv_pipe_init(ctl->loop, &c->pipe, 0);
	uv_timer_init(ctl->loop, &c->timer);
	c->pipe.data = c;
	c->timer.data = c;
	c->open_handles = 2;
	c->next = ctl->clients;
	if (ctl->clients)
		ctl->clients->prev = c;
	ctl->clients = c;
	ctl->nclients++;

	if (uv_pipe_open(&c->pipe, fd) < 0) {
		(void)close(fd);
		client_close(c);
		return;
	}
	log_debug("control: client pid %d uid %u connected", (int)c->pid, (unsigned)c->uid);
	client_process(c); /* starts reading and the idle timer */
}

static void on_accept_timer(uv_timer_t *t)
{
	struct control *ctl = t->data;

	if (ctl->freeing)
		return;
	log_info("control: accepting connections again");
	(void)uv_poll_start(&ctl->listener, UV_READABLE, on_listener);
}

static void on_listener(uv_poll_t *p, int status, int events)
{
	struct control *ctl = p->data;

	if (status < 0) {
		log_warn("control: listener: %s", uv_strerror(status));
		return;
	}
	for (int i = 0; i < CONTROL_ACCEPT_BURST && !ctl->freeing; i++) {
		int fd = accept4(ctl->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* Waiting connections stay in the backlog; polling
				 * again now would only spin. */
				log_warn_errno(-errno, "control: accept: %m; pausing for %d ms", CONTROL_ACCEPT_PAUSE_MS);
				uv_poll_stop(&ctl->listener);
				uv_timer_start(&ctl->accept_timer, on_accept_timer, CONTROL_ACCEPT_PAUSE_MS, 0);
				return;
			}
			log_warn_errno(-errno, "control: accept: %m");
			return;
		}
		control_add_client(ctl, fd);
	}
}

/* ---- setup ---- */

static int control_listen_path(const char *path, int *ret_fd)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int fd = -1;
	struct stat st;
	char *slash;
	int r;

	if (!path || !*path)
		return log_error_errno(-EINVAL, "control: no socket path configured");
	if (strlen(path) >= sizeof(sa.sun_path))
		return log_error_errno(-ENAMETOOLONG, "control: socket path %s is too long", path);
	memcpy(sa.sun_path, path, strlen(path) + 1);

	dir = xstrdup(path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		r = mkdir_p(dir, 0755);
		if (r < 0)
			return log_error_errno(r, "control: cannot create %s: %m", dir);
	}

	if (lstat(path, &st) == 0) {
		_cleanup_close_ int probe = -1;

		if (!S_ISSOCK(st.st_mode))
			return log_error_errno(-EEXIST, "control: %s exists and is not a socket", path);
		/* A live daemon answers; a stale socket refuses. */
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (probe < 0)
			return log_error_errno(-errno, "control: socket: %m");
		if (connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0 || errno == EAGAIN)
			return log_error_errno(-EADDRINUSE, "control: another daemon is listening on %s", path);
		if (unlink(path) < 0 && errno != ENOENT)
			return log_error_errno(-errno, "control: cannot remove stale socket %s: %m", path);
	}

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return log_error_errno(-errno, "control: socket: %m");
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return log_error_errno(-errno, "control: bind %s: %m", path);
	/* Every local user may connect: read-only methods are open, and each
	 * privileged one is checked against the peer's uid. */
	if (chmod(path, 0666) < 0) {
		r = log_error_errno(-errno, "control: chmod %s: %m", path);
		(void)unlink(path);
		return r;
	}
	if (listen(fd, SOMAXCONN) < 0) {
		r = log_error_errno(-errno, "control: listen %s: %m", path);
		(void)unlink(path);
		return r;
	}
	*ret_fd = fd;
	fd = -1;
	return 0;
}

int control_new(uv_loop_t *loop, const struct config *config, struct engine *engine, int listen_fd,
		struct control **ret)
{
	struct control *ctl;
	int fd = -1, r;

	*ret = NULL;
	if (listen_fd >= 0) {
		int fl = fcntl(listen_fd, F_GETFL);
		if (fl < 0 || fcntl(listen_fd, F_SETFL, fl | O_NONBLOCK) < 0)
			return log_error_errno(-errno, "control: passed socket %d: %m", listen_fd);
		(void)fcntl(listen_fd, F_SETFD, FD_CLOEXEC);
		fd = listen_fd;
	} else {
		r = control_listen_path(config ? config->socket : NULL, &fd);
		if (r < 0)
			return r;
	}

	ctl = xcalloc(1, sizeof(*ctl));
	ctl->max_revs = (config && config->history > 0 ? (size_t)config->history : 50) + CONTROL_EXTRA_REVS;
	ctl->needle_revs = xcalloc(ctl->max_revs, sizeof(*ctl->needle_revs));
	ctl->loop = loop;
	ctl->config = config;
	ctl->engine = engine;
	ctl->listen_fd = fd;
	ctl->euid = geteuid();
	if (listen_fd < 0)
		ctl->socket_path = xstrdup(config->socket);

	r = uv_poll_init(loop, &ctl->listener, fd);
	if (r < 0) {
		log_error("control: cannot poll the listening socket: %s", uv_strerror(r));
		if (ctl->socket_path)
			(void)unlink(ctl->socket_path);
		(void)close(fd);
		free(ctl->socket_path);
		free(ctl);
		return -EINVAL;
	}
	ctl->listener.data = ctl;
	ctl->open_handles++;
	uv_timer_init(loop, &ctl->accept_timer);
	ctl->accept_timer.data = ctl;
	ctl->open_handles++;
	uv_timer_init(loop, &ctl->housekeeping);
	ctl->housekeeping.data = ctl;
	ctl->open_handles++;
	uv_timer_start(&ctl->housekeeping, on_housekeeping, CONTROL_HOUSEKEEP_MS, CONTROL_HOUSEKEEP_MS);
	buf_init(&ctl->held);
	ctl->watch = (struct engine_watch){ .on_event = on_control_event, .userdata = ctl };
	engine_watch_add(engine, &ctl->watch);
	ctl->watching = true;
	r = uv_poll_start(&ctl->listener, UV_READABLE, on_listener);
	if (r < 0) {
		log_error("control: cannot poll the listening socket: %s", uv_strerror(r));
		control_free(ctl);
		return -EINVAL;
	}
	log_debug("control: listening on %s", ctl->socket_path ? ctl->socket_path : "a passed socket");
	if (config && config->admin_group && *config->admin_group) {
		gid_t gid;

		/* Looked up again every CONTROL_NSS_CACHE_MS while clients connect. */
		if (!control_admin_gid(ctl, &gid))
			log_info("control: admin group %s does not exist; privileged methods are for root and uid %u",
				 config->admin_group, (unsigned)ctl->euid);
	}
	*ret = ctl;
	return 0;
}

void control_free(struct control *ctl)
{
	struct client *c, *next;

	if (!ctl || ctl->freeing)
		return;
	ctl->freeing = true;
	if (ctl->socket_path)
		(void)unlink(ctl->socket_path);
	/* The engine is freed right after us, before the loop runs the close
	 * callbacks: every watch leaves its list now, including those of
	 * clients already closing. Never called from inside an engine
	 * callback (main calls us from engine_stop's completion). */
	for (c = ctl->clients; c; c = next) {
		next = c->next;
		if (c->watching) {
			engine_watch_remove(ctl->engine, &c->watch);
			c->watching = false;
		}
		client_close(c);
	}
	if (ctl->watching) {
		engine_watch_remove(ctl->engine, &ctl->watch);
		ctl->watching = false;
	}
	uv_close((uv_handle_t *)&ctl->listener, on_listener_closed);
	uv_close((uv_handle_t *)&ctl->accept_timer, on_listener_closed);
	uv_close((uv_handle_t *)&ctl->housekeeping, on_listener_closed);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* The control socket server (design.md §5), in the shape of OpenBGPD's
 * control.c: we accept ourselves (so that EMFILE pauses accepting instead of
 * spinning), take the peer's identity from the kernel at accept time, read
 * NDJSON requests through a capped reader, decide the peer's privilege once
 * at accept time (its uid, or membership of admin_group, whose gid and
 * answers are cached for a while: peer.c), check it in the dispatcher
 * against the method table (methods.c), and write every reply through
 * uv_write with a bounded queue per client (outq.c).
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
 *   shared by its readers, each written a slice at a time as its socket
 *   drains: a 16 MiB document is not copied per reader. Copies nobody
 *   reads are dropped, and large freed blocks given back to the kernel
 *   (malloc_trim), by a housekeeping timer (outq.c).
 * - Text shown to unprivileged callers (run output, errors, messages,
 *   diffs) goes through control_redact_text() (redact.c).
 * - Client pipes are libuv ipc pipes (read with recvmsg()): a privileged
 *   peer may pass one file with stack-push (SCM_RIGHTS; deferred.c); every
 *   other descriptor is closed as it arrives, so none piles up. */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
#include "control_int.h"
#include "log.h"

#define CONTROL_ACCEPT_PAUSE_MS 1000 /* accepting resumes this long after EMFILE */
#define CONTROL_ACCEPT_BURST 64      /* connections accepted per wake-up */
#define CONTROL_PEER_CHECK_MS 1000   /* a stream whose client no longer reads: is it still there? */

static void on_listener(uv_poll_t *p, int status, int events);

/* ---- lifetime ---- */

static void control_maybe_free(struct control *ctl)
{
	if (!ctl->freeing || ctl->open_handles > 0 || ctl->clients)
		return;
	outq_free(ctl);
	redact_free(ctl);
	free(ctl->socket_path);
	peer_auth_done(&ctl->peers);
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
	json_decref(c->stream_reply);
	free(c);
	control_maybe_free(ctl);
}

void client_close(struct client *c)
{
	if (c->closing)
		return;
	c->closing = true;
	c->stream = STREAM_NONE;
	deferred_client_gone(c);
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
		deferred_take_fds(c);
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

void client_process(struct client *c)
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
			reply = methods_dispatch(c, line);
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
void client_arm_timer(struct client *c)
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
	struct peer cred;
	struct client *c;
	size_t same_uid = 0;
	bool privileged;

	if (peer_get(fd, &cred) < 0) {
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
	if (!peer_is_exempt(&ctl->peers, cred.uid)) {
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
	privileged = peer_is_privileged(&ctl->peers, cred.uid, cred.gid);
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
	c->passed_fd = -1;
	proto_reader_init(&c->reader, PROTO_MAX_REQUEST);
	/* ipc: read with recvmsg(), so that stack-push may come with the
	 * descriptor of its file (deferred.c takes or closes each at once). */
	uv_pipe_init(ctl->loop, &c->pipe, 1);
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
	control_housekeeping_arm(ctl);
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
	ctl->loop = loop;
	ctl->config = config;
	ctl->engine = engine;
	ctl->listen_fd = fd;
	peer_auth_init(&ctl->peers, loop, config);
	if (listen_fd < 0)
		ctl->socket_path = xstrdup(config->socket);

	r = uv_poll_init(loop, &ctl->listener, fd);
	if (r < 0) {
		log_error("control: cannot poll the listening socket: %s", uv_strerror(r));
		if (ctl->socket_path)
			(void)unlink(ctl->socket_path);
		(void)close(fd);
		free(ctl->socket_path);
		peer_auth_done(&ctl->peers);
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
	uv_timer_start(&ctl->housekeeping, outq_on_housekeeping, CONTROL_HOUSEKEEP_MS, CONTROL_HOUSEKEEP_MS);
	redact_init(ctl, config);
	ctl->watch = (struct engine_watch){ .on_event = redact_on_event, .userdata = ctl };
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
		if (!peer_admin_gid(&ctl->peers, &gid))
			log_info("control: admin group %s does not exist; privileged methods are for root and uid %u",
				 config->admin_group, (unsigned)ctl->peers.euid);
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

/* SPDX-License-Identifier: BSD-2-Clause */
/* Replies that the engine gives later (design.md §5, §9): fleet, which may
 * ask etcd, and stack-push, which validates a document as a delivered one
 * and puts it with a compare on the revision it was based on. The client
 * waits in STREAM_DEFERRED: its later requests wait in its reader, as
 * behind a stream, and when it goes away the engine's call is cancelled
 * (engine_call_cancel), so that the engine never answers a freed client.
 *
 * stack-push's document comes in the request ("document") when it fits
 * (PROTO_MAX_REQUEST), else as a file descriptor that the peer opened and
 * passed with SCM_RIGHTS ("fd": true). The file is then opened with the
 * caller's access, never the daemon's (a path in the request would be
 * read as root), and it is read here on libuv's thread pool (uv_fs_fstat,
 * uv_fs_read), so that a slow disk or a hung NFS server stalls no one: a
 * regular file of at most PROTO_MAX_PUSH_FILE bytes, else refused with the
 * reason. Only a privileged peer's descriptor is kept, one at a time
 * (client.passed_fd); every other one is closed as it arrives. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "control_int.h"
#include "log.h"

/* The passed file of a stack-push, read on the thread pool. Owned by
 * whichever callback runs next; c is cleared when the client goes first. */
struct push_read {
	uv_fs_t req;
	uv_loop_t *loop;  /* borrowed */
	struct client *c; /* borrowed; NULL once the client is gone */
	int fd;           /* owned */
	int64_t base;
	char *buf; /* owned */
	size_t len, cap;
};

static void deferred_start(struct client *c)
{
	c->stream = STREAM_DEFERRED;
	c->stream_run = 0;
	client_arm_timer(c);
}

/* Sends the reply (released); requests that queued up meanwhile are
 * answered from the client's timer, as after a stream: we may be inside an
 * engine callback here. */
static void deferred_end(struct client *c, json_t *reply)
{
	c->stream = STREAM_NONE;
	client_send_new(c, reply);
	if (c->closing)
		return;
	c->deferred = true;
	client_arm_timer(c);
}

/* An error for c: the engine's message is free text, which may quote the
 * stack (a validation error), so it is redacted for unprivileged callers. */
static json_t *error_for(struct client *c, const char *code, const char *msg)
{
	_cleanup_free_ char *red = NULL;

	if (!client_privileged(c))
		msg = red = control_redact_text(c->ctl, msg);
	return proto_reply_error(code, "%s", msg);
}

static json_t *engine_error_for(struct client *c, int r, char *msg /* freed */)
{
	json_t *reply = error_for(c, proto_error_code_from_errno(r), msg ? msg : strerror(-r));

	free(msg);
	return reply;
}

static void on_engine_reply(void *userdata, json_t *result, const char *error)
{
	struct client *c = userdata;

	c->call = NULL;
	if (c->closing) { /* cannot happen: closing cancels the call */
		json_decref(result);
		return;
	}
	if (!result) {
		deferred_end(c, error_for(c, PROTO_E_FAILED, error ? error : "the request failed"));
		return;
	}
	if (!client_privileged(c)) {
		json_t *red = proto_redact(result);

		json_decref(result);
		result = red;
		redact_texts(c->ctl, result);
	}
	deferred_end(c, proto_reply_ok(result));
}

static void on_push_reply(void *userdata, json_t *result, const char *error)
{
	struct client *c = userdata;

	if (result)
		log_info("control: stack pushed by uid %u pid %d: revision %" JSON_INTEGER_FORMAT " (based on %" JSON_INTEGER_FORMAT ")",
			 (unsigned)c->uid, (int)c->pid, json_integer_value(json_object_get(result, "revision")),
			 json_integer_value(json_object_get(result, "base")));
	else
		log_info("control: stack push by uid %u pid %d: %s", (unsigned)c->uid, (int)c->pid,
			 error ? error : "?");
	on_engine_reply(userdata, result, error);
}

/* ---- fleet ---- */

json_t *ctl_fleet(struct client *c, json_t *params)
{
	json_t *err = params_only(params, NULL);
	char *msg = NULL;
	int r;

	if (err)
		return err;
	r = engine_fleet(c->ctl->engine, on_engine_reply, c, &c->call, &msg);
	if (r < 0)
		return engine_error_for(c, r, msg);
	free(msg);
	deferred_start(c);
	return NULL;
}

/* ---- stack-push ---- */

/* Hands doc (borrowed for the call) to the engine. NULL: the reply comes
 * through on_push_reply; else the error reply. */
static json_t *push_start(struct client *c, const char *doc, size_t len, int64_t base)
{
	char *msg = NULL;
	int r;

	r = engine_stack_push(c->ctl->engine, doc, len, base, on_push_reply, c, &c->call, &msg);
	if (r < 0) {
		log_info("control: stack push of %zu bytes by uid %u pid %d refused: %s", len, (unsigned)c->uid,
			 (int)c->pid, msg ? msg : strerror(-r));
		return engine_error_for(c, r, msg);
	}
	free(msg);
	deferred_start(c);
	return NULL;
}

static void push_free(struct push_read *p)
{
	if (p->fd >= 0)
		(void)close(p->fd);
	free(p->buf);
	free(p);
}

/* Ends the read with reply (released), which goes to the client if it is
 * still there. */
static void push_fail(struct push_read *p, json_t *reply)
{
	struct client *c = p->c;

	push_free(p);
	if (!c) {
		json_decref(reply);
		return;
	}
	c->push = NULL;
	deferred_end(c, reply);
}

static void on_push_read(uv_fs_t *req);

static void push_read_next(struct push_read *p)
{
	uv_buf_t b;
	int r;

	if (p->len == p->cap) {
		p->cap = p->cap * 2 > PROTO_MAX_PUSH_FILE + 1 ? PROTO_MAX_PUSH_FILE + 1 : p->cap * 2;
		p->buf = xrealloc(p->buf, p->cap);
	}
	b = uv_buf_init(p->buf + p->len, (unsigned)(p->cap - p->len));
	r = uv_fs_read(p->loop, &p->req, p->fd, &b, 1, (int64_t)p->len, on_push_read);
	if (r < 0)
		push_fail(p, proto_reply_error(PROTO_E_FAILED, "cannot read the passed file: %s", uv_strerror(r)));
}

static void on_push_read(uv_fs_t *req)
{
	struct push_read *p = req->data;
	ssize_t n = req->result;
	struct client *c = p->c;
	json_t *reply;

	uv_fs_req_cleanup(req);
	if (!c) {
		push_free(p);
		return;
	}
	if (n < 0) {
		push_fail(p, proto_reply_error(PROTO_E_FAILED, "cannot read the passed file: %s", uv_strerror((int)n)));
		return;
	}
	p->len += (size_t)n;
	if (p->len > PROTO_MAX_PUSH_FILE) {
		push_fail(p, proto_reply_error(PROTO_E_INVALID_PARAMS, "the passed file grew past %d MiB",
					       PROTO_MAX_PUSH_FILE >> 20));
		return;
	}
	if (n > 0) {
		push_read_next(p);
		return;
	}
	/* End of file: the document goes to the engine. */
	c->push = NULL;
	reply = push_start(c, p->buf ? p->buf : "", p->len, p->base);
	push_free(p);
	if (reply)
		deferred_end(c, reply);
}

static void on_push_stat(uv_fs_t *req)
{
	struct push_read *p = req->data;
	uv_stat_t st = req->statbuf;
	ssize_t res = req->result;

	uv_fs_req_cleanup(req);
	if (!p->c) {
		push_free(p);
		return;
	}
	if (res < 0) {
		push_fail(p, proto_reply_error(PROTO_E_FAILED, "cannot stat the passed file: %s", uv_strerror((int)res)));
		return;
	}
	if (!S_ISREG(st.st_mode)) {
		push_fail(p, proto_reply_error(PROTO_E_INVALID_PARAMS, "the passed file is not a regular file"));
		return;
	}
	if (st.st_size > PROTO_MAX_PUSH_FILE) {
		push_fail(p, proto_reply_error(PROTO_E_INVALID_PARAMS,
					       "the passed file has %llu bytes, more than the %d MiB a stack may have",
					       (unsigned long long)st.st_size, PROTO_MAX_PUSH_FILE >> 20));
		return;
	}
	/* One byte more than its size, so that a file that grew is noticed. */
	p->cap = (size_t)st.st_size + 1;
	p->buf = xmalloc(p->cap);
	push_read_next(p);
}

/* The passed descriptor (taken from c) is read on the thread pool. */
static json_t *push_read_start(struct client *c, int64_t base)
{
	struct push_read *p = xcalloc(1, sizeof(*p));
	int r;

	p->loop = c->ctl->loop;
	p->c = c;
	p->fd = c->passed_fd;
	c->passed_fd = -1;
	p->base = base;
	p->req.data = p;
	r = uv_fs_fstat(p->loop, &p->req, p->fd, on_push_stat);
	if (r < 0) {
		push_free(p);
		return proto_reply_error(PROTO_E_FAILED, "cannot stat the passed file: %s", uv_strerror(r));
	}
	c->push = p;
	deferred_start(c);
	return NULL;
}

json_t *ctl_stack_push(struct client *c, json_t *params)
{
	static const char *const allowed[] = { "document", "fd", "base", NULL };
	json_t *err = params_only(params, allowed);
	json_t *doc = json_object_get(params, "document");
	json_t *fd = json_object_get(params, "fd");
	json_t *b = json_object_get(params, "base");
	bool has_doc = doc && !json_is_null(doc);
	int64_t base = ENGINE_PUSH_BASE_READ;

	if (err)
		return err;
	if (b && !json_is_null(b)) {
		if (!json_is_integer(b) || json_integer_value(b) < 0)
			return proto_reply_error(PROTO_E_INVALID_PARAMS,
						 "\"base\" must be an integer of at least 0 (the mod revision of PREFIX/stack; "
						 "0: only when it does not exist)");
		base = (int64_t)json_integer_value(b);
	}
	if (fd && !json_is_null(fd) && !json_is_boolean(fd))
		return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"fd\" must be a boolean");
	if (json_is_true(fd) == has_doc)
		return proto_reply_error(PROTO_E_INVALID_PARAMS,
					 "give either \"document\" or \"fd\": true (a file passed with the request)");
	if (has_doc) {
		if (!json_is_string(doc))
			return proto_reply_error(PROTO_E_INVALID_PARAMS, "\"document\" must be a string");
		return push_start(c, json_string_value(doc), json_string_length(doc), base);
	}
	if (c->passed_fd < 0)
		return proto_reply_error(PROTO_E_INVALID_PARAMS,
					 "\"fd\": true, but no file descriptor came with the request (SCM_RIGHTS)");
	return push_read_start(c, base);
}

/* ---- passed descriptors and departures ---- */

static void on_tmp_closed(uv_handle_t *h)
{
	free(h);
}

/* The next descriptor queued on c's pipe, taken through the public API:
 * uv_accept() into a pipe handle of our own, which we then close after
 * keeping a duplicate. Returns it, or -1. */
static int pipe_take_fd(struct client *c)
{
	uv_pipe_t *tmp = xmalloc(sizeof(*tmp));
	uv_os_fd_t fd;
	int kept = -1;

	(void)uv_pipe_init(c->ctl->loop, tmp, 0);
	if (uv_accept((uv_stream_t *)&c->pipe, (uv_stream_t *)tmp) == 0 && uv_fileno((uv_handle_t *)tmp, &fd) == 0)
		kept = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	uv_close((uv_handle_t *)tmp, on_tmp_closed);
	return kept;
}

void deferred_take_fds(struct client *c)
{
	/* Each uv_accept() takes one from the queue, even when it fails. */
	for (int n = uv_pipe_pending_count(&c->pipe); n > 0; n--) {
		int fd = pipe_take_fd(c);

		if (fd < 0)
			continue;
		if (c->privileged && c->passed_fd < 0) {
			c->passed_fd = fd;
			continue;
		}
		log_debug("control: closing a file descriptor passed by pid %d uid %u", (int)c->pid, (unsigned)c->uid);
		(void)close(fd);
	}
}

void deferred_client_gone(struct client *c)
{
	if (c->call) {
		engine_call_cancel(c->call);
		c->call = NULL;
	}
	if (c->push) {
		/* Its callback frees it: a request on the thread pool cannot be
		 * taken back, only cancelled if it has not started. */
		c->push->c = NULL;
		(void)uv_cancel((uv_req_t *)&c->push->req);
		c->push = NULL;
	}
	if (c->passed_fd >= 0) {
		(void)close(c->passed_fd);
		c->passed_fd = -1;
	}
}

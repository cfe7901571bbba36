/* SPDX-License-Identifier: BSD-2-Clause */
/* What the files of the control server share (not for use outside
 * agent/control/): the server and client state, and the calls between
 *   control.c  sockets, clients, limits, timers, back-pressure;
 *   outq.c     output queues, their caps, and replies shared by many clients;
 *   methods.c  the method table, its handlers and their streams;
 *   deferred.c replies the engine gives later (fleet, stack-push), and
 *              files passed by peers (SCM_RIGHTS);
 *   redact.c   what unprivileged callers see of free text and run output;
 *   peer.c     identity and privilege of a peer. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>
#include <uv.h>

#include "engine/engine.h"
#include "peer.h"
#include "proto.h"
#include "util.h"

#define CONTROL_LOG_CACHE 4 /* encoded log replies of finished runs kept */

enum client_stream {
	STREAM_NONE,
	STREAM_LOG, /* log with follow: output of one run, then its status */
	STREAM_RUN, /* run with wait: every event of one run, then its run-info */
	STREAM_ROLLBACK, /* rollback: nothing, then stream_reply once current has moved */
	STREAM_DEFERRED, /* fleet, stack-push: nothing, then the reply the engine gives (deferred.c) */
};

struct push_read;

/* One stack revision's needles: the lines of its secret files. */
struct needle_rev {
	char rev[17];
	bool unknown; /* its saved stack could not be read: its runs' output is hidden */
	char **needles;
	size_t n;
	size_t bytes;
};

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
	json_t *stream_reply; /* STREAM_ROLLBACK: the answer, sent when the switch is done */
	struct shared_out *big; /* reference; the reply being written, from big_off */
	size_t big_off;
	bool big_is_log; /* big is a log reply: see ctl_log()'s per-uid limit */
	bool big_inflight; /* a slice of a shared reply is queued */
	struct engine_call *call; /* STREAM_DEFERRED: the engine's call, cancelled if we go first */
	struct push_read *push;   /* STREAM_DEFERRED: the passed file being read; see deferred.c */
	int passed_fd; /* owned, -1: none; a file a privileged peer passed with SCM_RIGHTS */

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
	struct peer_auth peers; /* who is privileged: see peer.h */
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
	/* Shared: on_read consumes it before the next read. A page: a request
	 * (at most 64 KiB) arrives in several reads, and idle memory stays lower. */
	char readbuf[4096];
};

/* ---- control.c ---- */

void client_close(struct client *c);
/* Answers every complete request buffered, in order, until a stream starts
 * or a reply is left unsent (the next request waits for it to go out). */
void client_process(struct client *c);
void client_arm_timer(struct client *c);

static inline bool client_privileged(const struct client *c)
{
	return c->privileged;
}

/* ---- outq.c ---- */

struct shared_out *shared_out_ref(struct shared_out *so);
void shared_out_unref(struct control *ctl, struct shared_out *so);
/* Bytes handed to the socket and not yet written: memory we hold. */
size_t client_output_queued(struct client *c);
/* Bytes of replies not yet written, including the rest of a shared reply
 * (which costs this client nothing, but orders what comes next). */
size_t client_output_pending(struct client *c);
/* Queues msg (a reply or an event line) for c, or drops c when its queue
 * or all clients' would pass their caps. */
void client_send(struct client *c, const json_t *msg);
/* Sends and releases msg. */
void client_send_new(struct client *c, json_t *msg);
/* Hands the next slice of the shared reply to the socket, when the last
 * one is written. */
void client_pump(struct client *c);
/* Sends a reply serialised once for many clients (so stays the caller's). */
void client_send_shared(struct client *c, struct shared_out *so);
/* The stack reply for c, from the cache of the current revision. Returns
 * NULL (sent) or an error reply. */
json_t *outq_send_stack(struct client *c);
/* Sends the cached log reply of finished run id for c's privilege level,
 * if there is one still valid. */
bool outq_send_log_cached(struct client *c, long id);
/* Sends reply (released) as a shared log reply, kept in the cache when
 * cacheable (a finished run). Returns NULL, or an error reply. */
json_t *outq_send_log(struct client *c, long id, json_t *reply, bool cacheable);
/* The housekeeping timer (CONTROL_HOUSEKEEP_MS): stale caches dropped,
 * memory given back. */
#define CONTROL_HOUSEKEEP_MS 2000 /* how often stale stack replies are dropped and memory returned */
void outq_on_housekeeping(uv_timer_t *t);
/* Starts the housekeeping timer unless it runs. It stops itself once there
 * is nothing left to drop or trim and no client is connected, so that an
 * idle daemon is woken only by its own work (design.md §10; issue 13: 15
 * of 15 idle wake-ups in 30 s were this timer). Armed again by a client's
 * connection and by every engine event (a run started, output, finished). */
void control_housekeeping_arm(struct control *ctl);
void outq_free(struct control *ctl);

/* ---- methods.c ---- */

/* The reply to one request line (NULL when the handler already sent it, or
 * started a stream). */
json_t *methods_dispatch(struct client *c, const char *line);

/* ---- deferred.c ---- */

json_t *ctl_fleet(struct client *c, json_t *params);
json_t *ctl_stack_push(struct client *c, json_t *params);
/* Takes the file descriptors that came with the bytes just read: the
 * first one of a privileged peer is kept (passed_fd), every other closed. */
void deferred_take_fds(struct client *c);
/* c is closing: its engine call is cancelled, its file read forgotten, its
 * passed descriptor closed. */
void deferred_client_gone(struct client *c);

/* ---- methods.c (shared with deferred.c) ---- */

/* An error reply when params has a member not in allowed (NULL-terminated). */
json_t *params_only(json_t *params, const char *const *allowed);
/* The error reply for an engine action's negative errno and message (freed). */
json_t *reply_engine_error(int r, char *msg);

/* ---- redact.c ---- */

extern const char control_hidden_marker[];
void redact_init(struct control *ctl, const struct config *config);
void redact_free(struct control *ctl);
/* Keeps the needles of every stack revision whose runs may show up. */
void needles_update(struct control *ctl);
/* Whether the output of a run of stack revision rev (NULL: unknown) cannot
 * be redacted with certainty for unprivileged callers. */
bool needles_unsure(struct control *ctl, const char *rev);
/* Text for an unprivileged caller. Returns a malloc'd string. */
char *control_redact_text(struct control *ctl, const char *text);
/* Free text at any depth of doc, redacted for an unprivileged caller. */
void redact_texts(struct control *ctl, json_t *doc);
/* Output events rebuilt as valid JSON text, for privileged callers. */
json_t *output_event(const json_t *ev);
/* The step or the run ended: the held line of run goes out. */
void held_flush(struct control *ctl, long run);
/* control's own engine watch: every chunk of every run's output. */
void redact_on_event(void *userdata, const json_t *ev);

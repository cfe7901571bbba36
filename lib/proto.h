/* SPDX-License-Identifier: BSD-2-Clause */
/* The control protocol, defined once for agentd and agentctl.
 *
 * Framing: one JSON object per line (NDJSON) in each direction.
 *   request:  {"method": "status", "params": {...}}
 *   reply:    {"ok": true, "result": {...}}
 *             {"ok": false, "error": {"code": "...", "message": "..."}}
 *   streaming methods (log with follow, run with wait) first send
 *             {"event": "<kind>", ...} lines, then one final reply line. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#define PROTO_MAX_REQUEST (64 * 1024)      /* bytes in one request line, newline included */
#define PROTO_MAX_CLIENTS 256              /* connections open at once */
#define PROTO_MAX_CLIENTS_PER_UID 32       /* per peer uid, except root and the daemon's own uid */
#define PROTO_RESERVED_CLIENTS 16          /* the last of PROTO_MAX_CLIENTS: privileged peers only */
#define PROTO_IDLE_TIMEOUT_MS 30000        /* no request and no reply progress for this long: dropped */
#define PROTO_MAX_OUTPUT_QUEUE (4 * 1024 * 1024) /* unsent bytes per client (beyond one reply) before it is dropped */
#define PROTO_MAX_OUTPUT_TOTAL (32 * 1024 * 1024) /* unsent bytes over all clients: the biggest queue goes first */
#define PROTO_FINISH_TIMEOUT_MS 5000       /* after EOF: no reply progress for this long: closed */
#define PROTO_MAX_LOG_OUTPUT (2 * 1024 * 1024) /* bytes of a run log sent by "log" (its tail) */
#define PROTO_MAX_PUSH_FILE (16 * 1024 * 1024) /* bytes of a stack-push document passed as a file (a stack's cap) */
#define PROTO_VERSION 1                    /* "protocol" in the version result */
#define PROTO_DEFAULT_SOCKET "/run/agentd/agentd.sock"

#ifndef AGENTD_VERSION
#define AGENTD_VERSION "0.1.0"
#endif

/* Error codes carried in error.code. */
#define PROTO_E_PERMISSION "permission-denied"
#define PROTO_E_BAD_REQUEST "bad-request"      /* not JSON, not an object, too long */
#define PROTO_E_UNKNOWN_METHOD "unknown-method"
#define PROTO_E_INVALID_PARAMS "invalid-params"
#define PROTO_E_NOT_FOUND "not-found"
#define PROTO_E_BUSY "busy"                    /* e.g. rollback while a run is active */
#define PROTO_E_FAILED "failed"                /* the run or action failed */
#define PROTO_E_INTERNAL "internal"
#define PROTO_E_LIMIT "limit"                  /* too many connections */

/* Who may call a method (control's method table says which, per method). */
enum proto_priv {
	PROTO_OPEN = 0, /* any local user */
	PROTO_PRIV = 1, /* root, the daemon's own uid, or admin_group */
};

/* The methods of design.md §5 that agentd implements. A method that is not
 * listed here does not exist: it is refused before any handler runs. The
 * daemon's handlers are a table indexed by this enum (control/methods.c), so
 * that a method added here without a handler does not compile. */
enum proto_method {
	PROTO_METHOD_VERSION,
	PROTO_METHOD_STATUS,
	PROTO_METHOD_STACK,
	PROTO_METHOD_RUNS,
	PROTO_METHOD_RUN_INFO,
	PROTO_METHOD_LOG,
	PROTO_METHOD_PLAN,
	PROTO_METHOD_RUN,
	PROTO_METHOD_RELOAD,
	PROTO_METHOD_PAUSE,
	PROTO_METHOD_RESUME,
	PROTO_METHOD_CLEAR_FAILED,
	PROTO_METHOD_ROLLBACK,
	PROTO_METHOD_FLEET,
	PROTO_METHOD_STACK_PUSH,
	PROTO_METHOD_SCHEDULE,
	PROTO_METHOD_METRICS,
	_PROTO_METHOD_MAX,
	PROTO_METHOD_INVALID = -1,
};

/* stack-push (design.md §5, §9) takes {"document": TEXT} or {"fd": true},
 * plus "base": N (optional, >= 1: the mod revision the document was based
 * on; absent: the one the agent read last). A request is at most
 * PROTO_MAX_REQUEST bytes, and a stack may be 16 MiB: a larger document is
 * passed as an open file descriptor (SCM_RIGHTS, on the request's own
 * bytes) with "fd": true, so that the file is opened with the caller's
 * access, not the daemon's; the daemon reads it (a regular file, at most
 * PROTO_MAX_PUSH_FILE bytes) on libuv's thread pool. Only a privileged peer's
 * descriptor is kept, one at a time; any other is closed on arrival. */

/* The method's name on the wire ("run-info"), NULL when m is not a method. */
const char *proto_method_to_string(enum proto_method m);
/* The method called name (case-sensitive), or PROTO_METHOD_INVALID (also
 * for NULL). */
enum proto_method proto_method_from_string(const char *name);
/* Whether m may send event lines before its final reply (log with follow,
 * run with wait). */
bool proto_method_streams(enum proto_method m);

/* Builds reply objects (new references). */
json_t *proto_reply_ok(json_t *result /* stolen, may be NULL for {} */);
json_t *proto_reply_error(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Serialises v (compact, one line, trailing newline) into a malloc'd string. */
char *proto_encode_line(const json_t *v, size_t *ret_len);

/* Maps a negative errno from an engine action to an error code:
 * -ENOENT not-found, -EBUSY busy, -EINVAL invalid-params, -EPERM/-EACCES
 * permission-denied, anything else failed. */
const char *proto_error_code_from_errno(int r);

/* Incremental line splitter with a length cap. Feed bytes, then take lines.
 * Memory stays bounded: an overlong line is never kept beyond max + 1 bytes. */
struct proto_reader {
	char *buf; /* owned; unconsumed data is buf[start..len) */
	size_t start, len, cap;
	bool overflow; /* the current line exceeded PROTO_MAX_REQUEST (or max); discarding until newline */
	size_t max;
};
void proto_reader_init(struct proto_reader *r, size_t max);
void proto_reader_free(struct proto_reader *r);
void proto_reader_feed(struct proto_reader *r, const char *data, size_t len);
/* Returns 1 and a malloc'd NUL-terminated line (without newline, and
 * without a trailing "\r") in *ret_line, 0 when no complete line is
 * buffered, -EMSGSIZE once for a line that was too long (its bytes are
 * discarded; reported as soon as the cap is passed, without waiting for its
 * newline), or -EBADMSG for a line containing a NUL byte (never valid JSON
 * text). After an error the next line is read normally. */
int proto_reader_next(struct proto_reader *r, char **ret_line);
/* Bytes buffered and not yet returned as lines. */
size_t proto_reader_pending(const struct proto_reader *r);
/* Whether proto_reader_next() would return something other than 0. */
bool proto_reader_ready(const struct proto_reader *r);

/* Returns a deep copy of v (a stack document: its root) with, at any depth,
 * the value of every object key that key_is_secret() matches replaced by
 * "***", and so is every member of an object marked "secret": true, except
 * the mark itself and, for an entry of agent.files.<layer>[] only, the
 * members that describe it: path, mode, owner, group. */
json_t *proto_redact(const json_t *v);
/* The same redaction without the copy: returns v itself (a new reference)
 * when nothing in it is secret, else a new tree that shares every subtree
 * without secrets with v. Neither v nor the result may be modified while
 * the other is in use. */
json_t *proto_redact_shared(json_t *v);
/* Whether v is an object marked "secret": true. */
bool proto_object_is_secret(const json_t *v);
/* Calls fn(s, len, userdata) for every string, and every number as JSON
 * writes it (NUL-terminated then), that proto_redact() hides (a secret
 * file's content, a secret key's value), at any depth of v (a stack
 * document), so that free text quoting it can be redacted too. */
void proto_secret_strings(const json_t *v, void (*fn)(const char *s, size_t len, void *userdata), void *userdata);

/* Redacts secrets in free text (run output shown to unprivileged callers):
 * after every NAME containing password, secret, token or key
 * (case-insensitively; optionally quoted, with [..] subscripts) followed by
 * a separator ('=' or ':', so "=>", ":=", "==" too, or "->"), or after an
 * option "-NAME VALUE", the rest of the line becomes "***": where a value
 * ends cannot be told for every syntax, so it fails closed. Returns a
 * malloc'd string. */
char *proto_redact_text(const char *s);

/* A JSON string from arbitrary bytes (process output): invalid UTF-8 and NUL
 * bytes become U+FFFD. New reference. */
json_t *proto_string_lossy(const char *data, size_t len);

/* SPDX-License-Identifier: BSD-2-Clause */
/* Stack sources behind one interface: file:// (inotify), http(s):// (polled,
 * conditional GET), imds: (EC2 IMDSv2 user-data), later etcd://. A source
 * delivers whole documents; the engine parses and validates them. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct config;
struct http;
struct source;

struct source_callbacks {
	/* A document was fetched (perhaps unchanged: the engine compares). data is
	 * valid only during the call. */
	void (*on_document)(void *userdata, const char *data, size_t len);
	/* A fetch failed; message names the URL or path and the cause. The last
	 * good stack stays in force. */
	void (*on_error)(void *userdata, const char *message);
	/* The source confirmed that the document it delivered last is still
	 * current (an HTTP 304 to a conditional GET): an error of fetching is
	 * over. Returns false when the receiver needs that document again (it
	 * no longer knows how it fared); the source then fetches it
	 * unconditionally at once. May be NULL: nothing to clear. */
	bool (*on_unchanged)(void *userdata);
};

struct source_ops {
	const char *scheme;       /* "file", "http", "imds", "etcd" */
	int (*start)(struct source *s);
	void (*reload)(struct source *s); /* fetch now */
	void (*stop)(struct source *s);   /* close handles; source_free follows after the loop ran */
	void (*free_data)(void *data);
	/* Adds the scheme's own members to status's "source" object (IMDS: the
	 * instance id and region). May be NULL. */
	void (*status)(struct source *s, json_t *o);
	/* etcd only (NULL otherwise): this agent's "agent" member of its
	 * registration changed (a JSON object, borrowed). */
	void (*set_agent)(struct source *s, const json_t *agent);
};

struct source {
	const struct source_ops *ops;
	uv_loop_t *loop;                  /* borrowed */
	const struct config *config;      /* borrowed */
	struct http *http;                /* borrowed */
	char *url;                        /* owned: as configured */
	struct source_callbacks cbs;
	void *userdata;
	void *data;                       /* the scheme's own state */
	/* Read by status. */
	int64_t last_fetch_usec;          /* wall clock of the last attempt that got an answer or error */
};

/* Picks the implementation by scheme. Returns -EINVAL with *ret_error for an
 * unsupported or malformed URL. */
int source_new(uv_loop_t *loop, const struct config *config, struct http *http, const struct source_callbacks *cbs,
	       void *userdata, struct source **ret, char **ret_error);
int source_start(struct source *s);
/* The URL with credentials (user:password@, secret-looking query values)
 * replaced by "***" (malloc'd): the form shown in status and logs. */
char *source_url_redact(const char *url);
void source_reload(struct source *s);
/* Adds the source's own members to o, status's "source" object. */
void source_status(struct source *s, json_t *o);
void source_free(struct source *s);
/* etcd sources (design.md §9); for other sources NULL, 0 and a no-op. */
struct etcd *source_etcd(struct source *s);          /* the client, borrowed */
int64_t source_etcd_lease(struct source *s);          /* this instance's live registration lease, 0: none */
int64_t source_etcd_stack_revision(struct source *s); /* mod_revision of PREFIX/stack as last read, 0: none */
const char *source_etcd_hostname(struct source *s);   /* the registered hostname, borrowed */
void source_set_agent(struct source *s, const json_t *agent);

/* For implementations. */
void source_deliver(struct source *s, const char *data, size_t len);
void source_fail(struct source *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Calls on_unchanged (see struct source_callbacks); true when it is absent. */
bool source_unchanged(struct source *s);
/* Every source accepts a gzip-compressed document (design.md §4): when
 * data[0..len) starts with gzip's magic, whatever the source or its labels
 * said, it is decompressed with STACK_MAX_BYTES as the cap on the document
 * that comes out. Returns 0 with *ret_data NULL (not gzip: use data as is),
 * 0 with the document in *ret_data (malloc'd, NUL-terminated) and
 * *ret_len, or a negative errno (-EFBIG over the cap, -EBADMSG not valid
 * gzip, -ENOMEM) with *ret_error, a malloc'd message that starts with what
 * (the URL or path, as the source names it in its messages). Touches no
 * state: file.c calls it on the thread pool. */
int source_gunzip(const char *what, const char *data, size_t len, char **ret_data, size_t *ret_len,
		  char **ret_error);

/* Poll delay with jitter: interval ± 10%, and on errors capped exponential
 * backoff: min(interval, 2^failures s) ... shared by polled sources. */
uint64_t source_next_delay_ms(long interval_sec, unsigned failures);

extern const struct source_ops source_file_ops;
extern const struct source_ops source_http_ops;
extern const struct source_ops source_imds_ops;
extern const struct source_ops source_etcd_ops;

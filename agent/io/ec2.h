/* SPDX-License-Identifier: BSD-2-Clause */
/* EC2's Query API (design.md §8.1, reference/protocols.md "EC2 Query API and
 * SigV4"): the one place that speaks it. A call is a form-encoded POST
 * (Action, Version 2016-11-15 and the action's parameters, percent-encoded
 * as RFC 3986 unreserved) with no query string, signed by libcurl's
 * CURLOPT_AWS_SIGV4 with provider "aws:amz:<region>:ec2" (libcurl 7.88.1
 * signs a raw query string unsorted, so there is none); a session token goes
 * in X-Amz-Security-Token, a header libcurl signs. Replies are XML read with
 * libxml2 (no network, no entity expansion, no DTD). RequestLimitExceeded and
 * EC2's 5xx codes are retried with capped, jittered backoff, a bounded number
 * of times; every other error goes to the caller with EC2's Code and Message.
 *
 * Role credentials and the region come from IMDSv2 (ec2_imds_fetch): token
 * PUT, iam/security-credentials/ and /<role> (AccessKeyId, SecretAccessKey,
 * Token, Expiration), meta-data/placement/region; cached for the process
 * and fetched again 5 minutes before Expiration (AWS publishes new ones at
 * least 5 minutes before). Nothing here logs a secret, a token or a
 * signature. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "util.h"

struct http;
struct ec2_call;
struct ec2_imds;

#define EC2_API_VERSION "2016-11-15"
#define EC2_REPLY_MAX (8u << 20)  /* bytes of one XML reply */
#define EC2_ATTEMPTS_MAX 5        /* tries of one call that EC2 throttles */
#define EC2_BACKOFF_MIN_MS 200    /* first retry waits up to this, doubling ... */
#define EC2_BACKOFF_MAX_MS 5000   /* ... up to this (full jitter) */

struct ec2_creds {
	char *key;         /* owned: access key id */
	char *secret;      /* owned: secret access key; never printed */
	char *token;       /* owned: session token (role credentials), may be NULL; never printed */
	int64_t expiration; /* seconds since the epoch, 0: does not expire */
};
void ec2_creds_clear(struct ec2_creds *c);
void ec2_creds_copy(struct ec2_creds *dst, const struct ec2_creds *src);

/* Where calls go. Strings borrowed for the call's lifetime. */
struct ec2_target {
	const char *endpoint;           /* "https://ec2.<region>.amazonaws.com" or a test's URL */
	const char *region;
	const struct ec2_creds *creds;
	long timeout_ms;                /* one HTTP request; 0: 30000 */
	long backoff_min_ms;            /* 0: EC2_BACKOFF_MIN_MS (tests make it small) */
};

/* The endpoint for region (malloc'd): config's ec2_endpoint when set, else
 * https://ec2.<region>.amazonaws.com. */
char *ec2_endpoint_for(const char *configured, const char *region);

/* Appends "&key=value" (no '&' when b is empty) with both percent-encoded:
 * every byte but A-Z a-z 0-9 - _ . ~ becomes %XX (RFC 3986 §2.3, as SigV4
 * wants it). */
void ec2_form_add(struct buf *b, const char *key, const char *value);

/* One call's outcome. */
struct ec2_reply {
	int r;                  /* 0: HTTP 2xx with an XML body; -EIO: transport; -EPROTO: EC2 said no */
	long http_status;
	const char *code;       /* EC2's error Code ("AuthFailure", "InvalidSnapshot.InUse"), NULL */
	const char *message;    /* EC2's error Message, NULL */
	const char *error;      /* a sentence for users: "<Action>: <code>: <message>" or the transport error */
	const char *body;       /* the reply (NUL-terminated), valid during the callback */
	size_t body_len;
	unsigned attempts;      /* requests made (retries of throttled calls included) */
};
typedef void (*ec2_done_cb)(void *userdata, const struct ec2_reply *r);

/* Starts action with form (the parameters after Action and Version,
 * ec2_form_add()'s output, may be NULL). cb runs later, from the loop,
 * exactly once unless cancelled. Returns 0, or -EINVAL (no credentials,
 * region or endpoint). */
int ec2_call(uv_loop_t *loop, struct http *http, const struct ec2_target *t, const char *action, const char *form,
	     ec2_done_cb cb, void *userdata, struct ec2_call **ret);
/* Stops a call: cb is not called. */
void ec2_call_cancel(struct ec2_call *c);

/* ---- Replies (pure functions, unit-tested and fuzzed). */

struct ec2_tag {
	char *key, *value; /* owned */
};
struct ec2_snapshot {
	char *id;          /* owned: snap-... */
	char *volume_id;   /* owned, may be NULL */
	char *state;       /* owned: pending, completed, error, recoverable, recovering */
	char *start_time;  /* owned: as EC2 wrote it (ISO 8601) */
	int64_t start;     /* seconds since the epoch, -1 when it did not parse */
	struct ec2_tag *tags; /* owned */
	size_t n_tags;
};
struct ec2_snapshots {
	struct ec2_snapshot *v; /* owned */
	size_t n;
};
void ec2_snapshots_free(struct ec2_snapshots *s);
/* The value of tag key, or NULL. */
const char *ec2_snapshot_tag(const struct ec2_snapshot *s, const char *key);

/* Limits on what a reply may make us keep. */
#define EC2_SNAPSHOTS_MAX 100000  /* snapshots of one listing, all pages */
#define EC2_TAGS_MAX 64           /* tags of one snapshot (EC2 allows 50) */
#define EC2_TEXT_MAX 4096         /* bytes of one value kept */

/* An error reply: <Response><Errors><Error><Code>..<Message>..</Error>.
 * Returns 0 with *ret_code (malloc'd) and *ret_message (malloc'd, may be
 * NULL), or -EBADMSG when body is not one. */
int ec2_parse_error(const char *body, size_t len, char **ret_code, char **ret_message);
/* A DescribeSnapshotsResponse: appends its snapshotSet's items to ret (up to
 * EC2_SNAPSHOTS_MAX in all) and sets *ret_next (malloc'd, NULL on the last
 * page). Returns 0, or -EBADMSG/-EFBIG/-E2BIG/-ENOSYS (libxml2 missing) with
 * *ret_error. */
int ec2_parse_snapshots(const char *body, size_t len, struct ec2_snapshots *ret, char **ret_next, char **ret_error);
/* A CreateSnapshotResponse: *ret_id (malloc'd snap-...). Returns 0 or a
 * negative errno with *ret_error. */
int ec2_parse_create_snapshot(const char *body, size_t len, char **ret_id, char **ret_error);
/* An ISO 8601 UTC time as EC2 writes it (2024-05-01T08:00:12.000Z):
 * seconds since the epoch, or -1. */
int64_t ec2_parse_time(const char *s);
/* The role credentials document of IMDS (iam/security-credentials/<role>):
 * {"Code": "Success", "AccessKeyId", "SecretAccessKey", "Token",
 * "Expiration": "...Z"}. Returns 0 and fills ret, or -EBADMSG with
 * *ret_error (which never quotes a secret). */
int ec2_parse_role_creds(const char *body, size_t len, struct ec2_creds *ret, char **ret_error);

/* ---- IMDS (role credentials, region). */

struct ec2_imds_result {
	int r;                        /* 0, or a negative errno with error */
	const char *error;
	const struct ec2_creds *creds; /* when asked for and r == 0 */
	const char *region;            /* when asked for and r == 0 */
};
typedef void (*ec2_imds_cb)(void *userdata, const struct ec2_imds_result *r);
/* Gets what is asked for from the IMDS at base ("http://169.254.169.254"),
 * from the process-wide cache when still good. cb runs later from the loop
 * exactly once unless cancelled. Returns 0 or -EINVAL. */
int ec2_imds_fetch(uv_loop_t *loop, struct http *http, const char *base, bool want_creds, bool want_region,
		   ec2_imds_cb cb, void *userdata, struct ec2_imds **ret);
void ec2_imds_cancel(struct ec2_imds *m);
/* Forgets the cached credentials and region (tests). */
void ec2_imds_forget(void);

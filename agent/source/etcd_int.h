/* SPDX-License-Identifier: BSD-2-Clause */
/* The etcd source's state, shared by its two files: etcd.c (the range,
 * the watch, the values and their delivery) and etcd_self.c (this
 * instance in etcd: its hostname, its registration and the agent state in
 * it). Nothing outside source/ includes this. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "stack/effective.h"

struct etcd;
struct etcd_call;
struct etcd_watch;
struct registration;
struct source;

#define REG_VALUE_MAX STACK_REGISTRATION_MAX
/* Left-out registrations named in status.source.warnings, the rest counted. */
#define REG_WARNINGS_SHOWN 20
/* The registration's calls end within lease_ttl/3, not under this. */
#define REG_CALL_TIMEOUT_MIN_MS 500

struct etcd_source {
	struct source *s;             /* borrowed; NULL once stopped */
	struct etcd *c;               /* owned */
	struct etcd *reg_c;           /* owned: the registration's client (shorter timeouts), NULL before it */
	char *dir;                    /* owned: "PREFIX/" */
	char *stack_key;              /* owned: "PREFIX/stack" */
	char *hostname;               /* owned: this instance's name in etcd */
	char *own_ip;                 /* owned: first non-loopback IPv4, or 127.0.0.1 */
	struct registration *reg;     /* owned, NULL before the first range */
	json_t *agent;                /* owned: the "agent" member of the registration, NULL: not set yet */

	/* What etcd holds, as last read. */
	json_t *stack;                /* owned: the last good PREFIX/stack, NULL: none yet */
	bool stack_present;           /* the key exists */
	int64_t stack_mod_revision;   /* of the key as last seen, 0: none */
	char *stack_error;            /* owned: why its value is not used, NULL: fine or missing */
	json_t *regs;                 /* owned: hostname -> registration object */
	json_t *bad_regs;             /* owned: hostname -> message (escaped): values that are no registration */
	int64_t revision;             /* the last header.revision seen (range, watch, progress) */

	/* What the engine got. */
	bool delivered;
	uint64_t delivered_hash;
	size_t delivered_len;
	char *failed;                 /* owned: the error the engine holds from us, NULL: none */
	json_t *warnings;             /* owned: array of texts, the left-out registrations (status.source.warnings) */
	char *reg_error;              /* owned: the registration's last error, logged when it changes */

	/* The connection. */
	struct etcd_call *range;      /* in flight */
	struct etcd_watch *watch;     /* open */
	bool watch_created;
	int64_t last_message_usec;    /* monotonic: the stream's last message */
	unsigned failures;            /* in a row, for the backoff */
	uv_timer_t retry;             /* the next range or watch after a failure */
	uv_timer_t build;             /* 0 ms: one build for the messages of a loop iteration */
	uv_timer_t publish;           /* the agent's state, put a moment after it changed */
	unsigned closing;
};


/* etcd_self.c */
/* Registers this instance once its hostname can be known (after the
 * first range): a client of its own, whose calls end within lease_ttl/3. */
void es_register(struct etcd_source *es);
/* Puts the registration's value now (registration_set skips an equal one). */
void es_register_update(struct etcd_source *es);
/* source_ops.set_agent; es->publish's callback. */
void etcd_source_set_agent(struct source *s, const json_t *agent);

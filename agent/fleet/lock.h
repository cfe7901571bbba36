/* SPDX-License-Identifier: BSD-2-Clause */
/* Stack-wide mutexes and counting semaphores on etcd, in the layout of
 * etcd's own client/v3/concurrency (design.md §9, reference/protocols.md
 * "Election and mutex"): each contender puts PREFIX/<kind>/<name>/<lease
 * hex> under its lease (Txn If CreateRevision(k)==0 Then Put Else Get);
 * the `slots` lowest create_revisions hold; a waiter watches only the key
 * ranked just ahead of it for deletion (the `slots` keys just ahead for a
 * semaphore: lock.c says why one is not enough), so there is no herd. A
 * dead holder's key goes with its lease. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

struct etcd;
struct fleet_lock;

enum fleet_lock_kind { FLEET_LOCK_MUTEX, FLEET_LOCK_SEMAPHORE };

struct fleet_lock_callbacks {
	/* This contender holds the lock, or one of the slots. */
	void (*on_acquired)(void *userdata);
	/* Waiting; holders is an array of the holders' hostnames (borrowed,
	 * by rank), given again whenever it changed, a holder's going included
	 * (issue 12, B4); never empty. ignored (borrowed): the keys under the
	 * name that are no contender's (not <lease hex> under that lease:
	 * junk, which holds nothing), escaped, at most 32; an empty array when
	 * none. May be NULL. */
	void (*on_waiting)(void *userdata, const json_t *holders, const json_t *ignored);
	/* The key is gone (lease lost) or etcd failed past retrying; the lock
	 * is not held. message names the key and the cause. */
	void (*on_error)(void *userdata, const char *message);
};

/* Contends for PREFIX/locks/<name> (mutex, slots 1) or
 * PREFIX/semaphores/<name> (slots >= 1) under lease, with holder (this
 * instance's hostname) as the value. Callbacks run later from loop (a
 * re-rank after a watch event is deferred to it: no etcd call is made from
 * inside a stream's callback). A callback may release the lock. silence_ms:
 * each watch's silence deadline (etcd_watch_start; the config's
 * watch_timeout, as the source's), after which it is ranked and watched
 * again; 0: none. Returns 0, -EINVAL (a bad name, no lease, slots 0) or
 * the client's error. */
int fleet_lock_acquire(uv_loop_t *loop, struct etcd *c, enum fleet_lock_kind kind, const char *name, unsigned slots,
		       int64_t lease, uint64_t silence_ms, const char *holder, const struct fleet_lock_callbacks *cbs,
		       void *userdata, struct fleet_lock **ret);
/* Gives up (waiting or holding): deletes our key, frees the handle. No
 * callback runs after this. */
void fleet_lock_release(struct fleet_lock *l);
bool fleet_lock_held(const struct fleet_lock *l);

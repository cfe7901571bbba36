/* SPDX-License-Identifier: BSD-2-Clause */
/* Who is on the other end of a control connection, and whether they are
 * privileged (design.md §5): identity from the kernel (SO_PEERCRED) at
 * accept time, privilege from uid 0, the daemon's own uid, or membership of
 * admin_group, whose gid and answers are cached for a while. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

struct config;

struct peer_auth {
	uv_loop_t *loop;             /* borrowed: its clock ages the caches */
	const struct config *config; /* borrowed: admin_group, read on every lookup */
	uid_t euid;                  /* the daemon's own uid */
	char *admin_name;            /* owned; the admin_group name last resolved */
	gid_t admin_gid;
	bool admin_found;
	uint64_t admin_checked; /* uv_now() of that lookup */
	struct peer_cache_entry {
		bool used, privileged;
		uid_t uid;
		gid_t gid;
		uint64_t at;
	} cache[8];
	size_t cache_next;
};

/* The identity of a connected peer, from the kernel. */
struct peer {
	uid_t uid;
	gid_t gid;
	pid_t pid;
};

void peer_auth_init(struct peer_auth *a, uv_loop_t *loop, const struct config *config);
void peer_auth_done(struct peer_auth *a);
/* The peer of the connected unix socket fd (SO_PEERCRED). Returns 0 or a
 * negative errno, logged here. */
int peer_get(int fd, struct peer *ret);
/* Root and the daemon's own uid: privileged without any lookup, and not
 * limited per uid, so that other users cannot lock them out. */
bool peer_is_exempt(const struct peer_auth *a, uid_t uid);
/* Whether uid (primary group gid) may call privileged methods. NSS lookups,
 * on the loop: decided once per connection, and not looked up again for the
 * same uid and gid within CONTROL_NSS_CACHE_MS. */
bool peer_is_privileged(struct peer_auth *a, uid_t uid, gid_t gid);
/* The admin group's gid, when admin_group is set and exists. */
bool peer_admin_gid(struct peer_auth *a, gid_t *ret);

/* SPDX-License-Identifier: BSD-2-Clause */
/* The peer of a control connection and its privilege: SO_PEERCRED, and
 * membership of admin_group through NSS, with the answers cached. */
#include "peer.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "util.h"

#define CONTROL_NSS_CACHE_MS 10000 /* admin group gid and membership answers are reused this long */

void peer_auth_init(struct peer_auth *a, uv_loop_t *loop, const struct config *config)
{
	*a = (struct peer_auth){ .loop = loop, .config = config, .euid = geteuid(), .admin_gid = (gid_t)-1 };
}

void peer_auth_done(struct peer_auth *a)
{
	free(a->admin_name);
	a->admin_name = NULL;
}

int peer_get(int fd, struct peer *ret)
{
	struct ucred cred;
	socklen_t sl = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &sl) < 0)
		return log_warn_errno(-errno, "control: SO_PEERCRED: %m");
	*ret = (struct peer){ .uid = cred.uid, .gid = cred.gid, .pid = cred.pid };
	return 0;
}

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
bool peer_admin_gid(struct peer_auth *a, gid_t *ret)
{
	const char *name = a->config ? a->config->admin_group : NULL;
	uint64_t now = uv_now(a->loop);
	gid_t gid = (gid_t)-1;
	bool found;

	if (!name || !*name)
		return false;
	if (a->admin_name && strcmp(a->admin_name, name) == 0 && now - a->admin_checked < CONTROL_NSS_CACHE_MS) {
		*ret = a->admin_gid;
		return a->admin_found;
	}
	found = group_lookup(name, &gid) == 0;
	if (!a->admin_name || strcmp(a->admin_name, name) != 0 || a->admin_found != found ||
	    (found && a->admin_gid != gid))
		memset(a->cache, 0, sizeof(a->cache)); /* decisions about another group */
	free(a->admin_name);
	a->admin_name = xstrdup(name);
	a->admin_found = found;
	a->admin_gid = found ? gid : (gid_t)-1;
	a->admin_checked = now;
	*ret = a->admin_gid;
	return a->admin_found;
}

/* NSS lookups, on the loop: once per connection at most, and not again
 * for the same uid and gid within CONTROL_NSS_CACHE_MS. */
static bool uid_in_admin_group(struct peer_auth *a, uid_t uid, gid_t primary)
{
	struct passwd pwd, *pw = NULL;
	_cleanup_free_ char *pbuf = NULL;
	_cleanup_free_ gid_t *groups = NULL;
	uint64_t now = uv_now(a->loop);
	size_t psize = 4096;
	int ngroups = 64, r;
	bool found = false;
	gid_t admin;

	if (!peer_admin_gid(a, &admin))
		return false;
	if (admin == primary)
		return true;
	for (size_t i = 0; i < ELEMENTSOF(a->cache); i++) {
		const struct peer_cache_entry *e = &a->cache[i];
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
	a->cache[a->cache_next] = (struct peer_cache_entry){
		.used = true, .uid = uid, .gid = primary, .privileged = found, .at = now
	};
	a->cache_next = (a->cache_next + 1) % ELEMENTSOF(a->cache);
	return found;
}

bool peer_is_exempt(const struct peer_auth *a, uid_t uid)
{
	return uid == 0 || uid == a->euid;
}

bool peer_is_privileged(struct peer_auth *a, uid_t uid, gid_t gid)
{
	return peer_is_exempt(a, uid) || uid_in_admin_group(a, uid, gid);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* What the built-in step kinds (file, dir, link, absent, exec) share:
 * checking a planned path, resolving owners when a step runs, comparing
 * metadata, opening a parent inside root (step_util.h). */
#include "step_util.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

#include "log.h"
#include "plan.h"
#include "rootfs.h"
#include "util.h"

char *xstrdup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

static bool name_is_number(const char *s, unsigned long *ret)
{
	long v;

	if (!s || !*s || parse_long(s, 0, INT_MAX, &v) < 0)
		return false;
	*ret = (unsigned long)v;
	return true;
}

int resolve_owner(const char *owner, const char *group, uid_t *ret_uid, gid_t *ret_gid, char **ret_error)
{
	unsigned long num;
	int r;

	*ret_uid = (uid_t)-1;
	*ret_gid = (gid_t)-1;
	if (owner) {
		if (name_is_number(owner, &num)) {
			*ret_uid = (uid_t)num;
		} else if ((r = user_lookup(owner, ret_uid, NULL)) < 0) {
			*ret_error = r == -ENOENT ? xasprintf("unknown user %s", owner)
						  : xasprintf("cannot look up user %s: %s", owner, strerror(-r));
			return r;
		}
	}
	if (group) {
		if (name_is_number(group, &num)) {
			*ret_gid = (gid_t)num;
		} else if ((r = group_lookup(group, ret_gid)) < 0) {
			*ret_error = r == -ENOENT ? xasprintf("unknown group %s", group)
						  : xasprintf("cannot look up group %s: %s", group, strerror(-r));
			return r;
		}
	}
	return 0;
}

bool meta_mode_differs(const struct stat *st, mode_t mode)
{
	return mode != (mode_t)-1 && (st->st_mode & 07777) != (mode & 07777);
}

bool meta_owner_differs(const struct stat *st, uid_t uid, gid_t gid)
{
	return (uid != (uid_t)-1 && st->st_uid != uid) || (gid != (gid_t)-1 && st->st_gid != gid);
}

/* The path is joined under root only to check it: the joined string is not
 * used (the step resolves the path inside root with rootfs.h when it runs). */
int plan_check_path(const struct plan *p, const char *path, char **ret_error)
{
	_cleanup_free_ char *joined = NULL;
	int r;

	if (!path || path[0] != '/') {
		if (ret_error)
			*ret_error = xasprintf("path is not absolute: %s", path ? path : "(null)");
		return -EINVAL;
	}
	r = path_join_under(p->root ? p->root : "/", path, &joined);
	if (r < 0 && ret_error)
		*ret_error = r == -EINVAL ? xasprintf("refusing path with \"..\": %s", path)
					  : xasprintf("bad path %s: %s", path, strerror(-r));
	return r;
}

bool path_is_root(const char *path)
{
	for (const char *c = path; *c;) {
		size_t n;

		c += strspn(c, "/");
		n = strcspn(c, "/");
		if (n > 1 || (n == 1 && c[0] != '.'))
			return false;
		c += n;
	}
	return true;
}

char *plan_root(const struct plan *p)
{
	return xstrdup(p->root ? p->root : "/");
}

int open_parent(const char *root, const char *path, bool create, int *ret_dirfd, char **ret_name)
{
	*ret_dirfd = -1;
	*ret_name = NULL;
	return rootfs_open_parent_path(root, path, create, 0755, ret_dirfd, ret_name);
}

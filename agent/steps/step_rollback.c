/* SPDX-License-Identifier: BSD-2-Clause */
/* The rollback step (step_rollback.h): deploy_to/current goes from
 * releases/<name> to the release that sorts just before <name>.
 *
 * deploy_to is resolved inside root like every step's path, so a symlink
 * planted in it cannot take the switch elsewhere. deploy_to, releases and
 * everything in them are the app user's: every name read there is escaped
 * in messages, and nothing there is followed but by the rootfs rule
 * (lib/rootfs.h). This is what `agentctl rollback` did inside the engine
 * before it became a plan; the checks and messages are the same. */
#include "step_rollback.h"
#include "io/diff.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "plan.h"
#include "releases.h"
#include "rootfs.h"
#include "strv.h"
#include "util.h"

#define LINK_PREFIX ROOTFS_MANAGED_LINK_DIR "/"

struct rollback_data {
	char *app;       /* owned, may be NULL: named in messages */
	char *deploy_to; /* owned, absolute, inside root */
	char *root;      /* owned: copy of the plan's root */
	/* Once this step has switched: the link text it wrote ("releases/<name>").
	 * Applied again, it finds current there and does not go back further. */
	char *done;      /* owned, may be NULL */
};

/* What a rollback would do, as found on the file system. */
struct rollback_check {
	int dfd;          /* deploy_to, O_PATH, resolved inside root */
	char *cur;        /* current's text, "releases/<from>" */
	char *target;     /* the new text, "releases/<to>" */
	char *efrom, *eto; /* the release names, escaped for messages */
};

static void check_done(struct rollback_check *k)
{
	if (k->dfd >= 0)
		(void)close(k->dfd);
	free(k->cur);
	free(k->target);
	free(k->efrom);
	free(k->eto);
	*k = (struct rollback_check){ .dfd = -1 };
}

/* current's text when it is a symlink, else NULL. */
static char *current_text(int dfd)
{
	_cleanup_close_ int lfd = openat(dfd, ROOTFS_MANAGED_LINK, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	char buf[4096];
	struct stat st;
	ssize_t len;

	if (lfd < 0 || fstat(lfd, &st) < 0 || !S_ISLNK(st.st_mode))
		return NULL;
	len = readlinkat(lfd, "", buf, sizeof(buf) - 1);
	if (len < 0)
		return NULL;
	buf[len] = '\0';
	return xstrdup(buf);
}

/* Whether text is agentd's link: "releases/<name>", a plain name. */
static bool link_text_is_release(const char *text)
{
	const char *nm = text + strlen(LINK_PREFIX);

	return strncmp(text, LINK_PREFIX, strlen(LINK_PREFIX)) == 0 && *nm && !strchr(nm, '/') &&
	       strcmp(nm, ".") != 0 && strcmp(nm, "..") != 0;
}

/* The release sorting just before name in rfd (malloc'd), NULL when there
 * is none (name first, or not there); -errno of the listing in *ret_r. */
static char *release_before(int rfd, const char *name, int *ret_r)
{
	char **names = NULL, *prev = NULL;

	*ret_r = releases_list(rfd, &names);
	if (*ret_r < 0)
		return NULL;
	/* Release names are timestamps: the previous one sorts just before the current. */
	for (size_t i = 0; names[i]; i++)
		if (i > 0 && strcmp(names[i], name) == 0)
			prev = xstrdup(names[i - 1]);
	strv_free(names);
	return prev;
}

/* Resolves what a rollback of deploy_to would do into *k (check_done()
 * frees it, also after a failure). Returns 0, or a negative errno with
 * *ret_error: the contract of rollback_preview_app(). */
static int rollback_check(const char *root, const char *app, const char *deploy_to, struct rollback_check *k,
			  char **ret_error)
{
	_cleanup_close_ int rootfd = -1, rfd = -1, tfd = -1;
	_cleanup_free_ char *prev = NULL;
	const char *name;
	int r;

	*k = (struct rollback_check){ .dfd = -1 };
	rootfd = rootfs_open(root);
	if (rootfd >= 0)
		k->dfd = rootfs_resolve(rootfd, deploy_to, true);
	if (k->dfd >= 0)
		rfd = openat(k->dfd, ROOTFS_MANAGED_LINK_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (rfd < 0) {
		*ret_error = xasprintf("%s has no releases directory under %s", app, deploy_to);
		return -ENOENT;
	}
	k->cur = current_text(k->dfd);
	if (!k->cur) {
		*ret_error = xasprintf("%s has no current release (%s/current is not a symlink)", app, deploy_to);
		return -ENOENT;
	}
	if (!link_text_is_release(k->cur)) {
		_cleanup_free_ char *ecur = str_escape_ctl(k->cur);

		*ret_error = xasprintf("refusing to roll back %s: %s/current points to \"%s\", not to "
				       "releases/<name>",
				       app, deploy_to, ecur);
		return -EINVAL;
	}
	name = k->cur + strlen(LINK_PREFIX);
	k->efrom = str_escape_ctl(name);
	prev = release_before(rfd, name, &r);
	if (r < 0) {
		*ret_error = xasprintf("cannot list the releases of %s: %s", app, strerror(-r));
		return r;
	}
	if (!prev) {
		*ret_error = xasprintf("%s has no release before %s", app, k->efrom);
		return -ENOENT;
	}
	k->eto = str_escape_ctl(prev);
	/* Relative, as the link step writes it: the same on the host and under a test root. */
	k->target = xasprintf(LINK_PREFIX "%s", prev);
	/* The target must be what "current" may name (rootfs.h): a real
	 * directory, checked on fds with deploy_to as the root, so a link the
	 * user planted under a release's name (-> /etc/sudoers.d) is refused. */
	tfd = rootfs_resolve(k->dfd, k->target, true);
	if (tfd < 0) {
		*ret_error = xasprintf("refusing to roll back %s to %s: %s", app, k->eto, rootfs_strerror(tfd));
		return tfd == -ELOOP ? -ELOOP : -ENOENT;
	}
	return 0;
}

int rollback_preview_app(const char *root, const char *app, const char *deploy_to, char **ret_from, char **ret_to,
			 char **ret_error)
{
	struct rollback_check k;
	int r = rollback_check(root, app ? app : "the app", deploy_to, &k, ret_error);

	*ret_from = *ret_to = NULL;
	if (r >= 0) {
		*ret_from = k.efrom;
		*ret_to = k.eto;
		k.efrom = k.eto = NULL;
	}
	check_done(&k);
	return r;
}

int rollback_preview(const char *root, const char *deploy_to, char **ret_from, char **ret_to, char **ret_error)
{
	return rollback_preview_app(root, NULL, deploy_to, ret_from, ret_to, ret_error);
}

/* Points current at k->target: the new link is made under a name nobody
 * can predict, exclusively (symlinkat fails on anything there), then
 * renamed over current. Returns 0 or a negative errno with *ret_error. */
static int switch_current(const struct rollback_check *k, const char *deploy_to, char **ret_error)
{
	char tmp[NAME_MAX + 1];
	int r;

	for (int attempt = 0;; attempt++) {
		tmp_name_random(ROOTFS_MANAGED_LINK, tmp, sizeof(tmp));
		if (symlinkat(k->target, k->dfd, tmp) == 0)
			break;
		if (errno != EEXIST || attempt >= 16) {
			r = -errno;
			*ret_error = xasprintf("cannot switch %s/current: %s", deploy_to, strerror(-r));
			return r;
		}
	}
	if (renameat(k->dfd, tmp, k->dfd, ROOTFS_MANAGED_LINK) < 0) {
		r = -errno;
		*ret_error = xasprintf("cannot switch %s/current: %s", deploy_to, strerror(-r));
		(void)unlinkat(k->dfd, tmp, 0);
		return r;
	}
	return 0;
}

/* Whether this step already switched current and current still says so. */
static bool already_done(const struct rollback_data *d)
{
	_cleanup_close_ int rootfd = -1, dfd = -1;
	_cleanup_free_ char *cur = NULL;

	if (!d->done)
		return false;
	rootfd = rootfs_open(d->root);
	if (rootfd >= 0)
		dfd = rootfs_resolve(rootfd, d->deploy_to, true);
	cur = dfd >= 0 ? current_text(dfd) : NULL;
	return cur && strcmp(cur, d->done) == 0;
}

static void rollback_apply(struct step *s, struct plan_exec *x)
{
	struct rollback_data *d = s->data;
	const char *app = d->app ? d->app : "the app";
	_cleanup_free_ char *err = NULL;
	struct rollback_check k;
	int r;

	if (already_done(d))
		return plan_step_done(x, STEP_UNCHANGED, NULL);
	r = rollback_check(d->root, app, d->deploy_to, &k, &err);
	if (r >= 0)
		r = switch_current(&k, d->deploy_to, &err);
	if (r < 0) {
		check_done(&k);
		return plan_step_done(x, STEP_FAILED, "%s", err);
	}
	log_info("Rolled back %s from %s to %s", app, k.efrom, k.eto);
	free(s->message);
	s->message = xasprintf("from %s to %s", k.efrom, k.eto);
	free(d->done);
	d->done = xstrdup(k.target);
	check_done(&k);
	plan_step_done(x, STEP_CHANGED, NULL);
}

/* "update", with the change of current's text as a diff (names escaped);
 * the error of a rollback that would fail. Reads only. */
static int rollback_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			     char **ret_error)
{
	struct rollback_data *d = s->data;
	_cleanup_free_ char *ecur = NULL, *etarget = NULL;
	struct rollback_check k;
	int r;

	if (already_done(d)) {
		*ret_action = "none";
		return 0;
	}
	r = rollback_check(d->root, d->app ? d->app : "the app", d->deploy_to, &k, ret_error);
	if (r < 0) {
		check_done(&k);
		return r;
	}
	ecur = xasprintf(LINK_PREFIX "%s\n", k.efrom);
	etarget = xasprintf(LINK_PREFIX "%s\n", k.eto);
	*ret_action = "update";
	*ret_diff = diff_unified(s->target, ecur, strlen(ecur), etarget, strlen(etarget));
	check_done(&k);
	return 0;
}

static void rollback_free(void *data)
{
	struct rollback_data *d = data;

	if (!d)
		return;
	free(d->app);
	free(d->deploy_to);
	free(d->root);
	free(d->done);
	free(d);
}

static const struct step_ops rollback_ops = {
	.kind = "rollback",
	.describe = rollback_describe,
	.apply = rollback_apply,
	.free_data = rollback_free,
};

struct step *plan_add_rollback(struct plan *p, const char *app, const char *deploy_to, char **ret_error)
{
	struct rollback_data *d;
	_cleanup_free_ char *target = NULL;

	if (!deploy_to || !path_is_safe_absolute(deploy_to)) {
		*ret_error = xstrdup("rollback step without an absolute deploy_to");
		return NULL;
	}
	d = xcalloc(1, sizeof(*d));
	d->app = app ? xstrdup(app) : NULL;
	d->deploy_to = xstrdup(deploy_to);
	d->root = xstrdup(p->root);
	target = xasprintf("%s%s" ROOTFS_MANAGED_LINK, deploy_to,
			   deploy_to[strlen(deploy_to) - 1] == '/' ? "" : "/");
	return plan_add(p, &rollback_ops, target, d);
}

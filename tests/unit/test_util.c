/* SPDX-License-Identifier: BSD-2-Clause */
/* lib/util.c: atomic writes (no predictable temporary name to plant things
 * under), fd_read_all, user and group look-ups; lib/rootfs.c: resolution
 * inside a root, with symlinks planted to get out of it (absolute, relative,
 * chains, loops), through openat2 and through the user-space fallback. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "rootfs.h"
#include "util.h"

struct ctx {
	char dir[64];
};

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
	return remove(p);
}

static int setup(void **state)
{
	struct ctx *c = xcalloc(1, sizeof(*c));

	snprintf(c->dir, sizeof(c->dir), "/tmp/test_util.XXXXXX");
	assert_non_null(mkdtemp(c->dir));
	*state = c;
	return 0;
}

static int teardown(void **state)
{
	struct ctx *c = *state;

	(void)nftw(c->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(c);
	return 0;
}

static char *slurp(const char *path)
{
	char *d = NULL;

	if (file_read_all(path, 1 << 20, &d, NULL) < 0)
		return NULL;
	return d;
}

static void spit(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, s, strlen(s)), (ssize_t)strlen(s));
	close(fd);
}

static size_t count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static void test_write_atomic(void **state)
{
	struct ctx *c = *state;
	char *path = xasprintf("%s/f", c->dir), *got;
	struct stat st;

	assert_int_equal(file_write_atomic(path, "one\n", 4, 0640, (uid_t)-1, (gid_t)-1), 0);
	got = slurp(path);
	assert_string_equal(got, "one\n");
	free(got);
	assert_int_equal(lstat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(file_write_atomic(path, "two\n", 4, 0600, (uid_t)-1, (gid_t)-1), 0);
	got = slurp(path);
	assert_string_equal(got, "two\n");
	free(got);
	assert_int_equal(lstat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	/* Nothing left behind. */
	assert_int_equal(count_entries(c->dir), 1);
	free(path);

	/* Missing directory. */
	path = xasprintf("%s/missing/f", c->dir);
	assert_int_equal(file_write_atomic(path, "x", 1, 0644, (uid_t)-1, (gid_t)-1), -ENOENT);
	free(path);
}

/* What an attacker could plant under the old predictable name
 * ".#<name>.<pid>.tmp": a symlink and a hard link to files elsewhere. */
static void test_write_atomic_planted(void **state)
{
	struct ctx *c = *state;
	char *sub = xasprintf("%s/d", c->dir), *victim = xasprintf("%s/victim", c->dir),
	     *victim2 = xasprintf("%s/victim2", c->dir);
	char *planted = xasprintf("%s/.#f.%ld.tmp", sub, (long)getpid());
	char *planted2 = xasprintf("%s/.#g.%ld.tmp", sub, (long)getpid());
	char *f = xasprintf("%s/f", sub), *g = xasprintf("%s/g", sub), *got;
	struct stat st;

	assert_int_equal(mkdir(sub, 0755), 0);
	spit(victim, "victim\n");
	spit(victim2, "victim2\n");
	assert_int_equal(symlink(victim, planted), 0);
	assert_int_equal(link(victim2, planted2), 0);

	assert_int_equal(file_write_atomic(f, "new\n", 4, 0600, (uid_t)-1, (gid_t)-1), 0);
	assert_int_equal(file_write_atomic(g, "new\n", 4, 0600, (uid_t)-1, (gid_t)-1), 0);
	got = slurp(victim);
	assert_string_equal(got, "victim\n");
	free(got);
	got = slurp(victim2);
	assert_string_equal(got, "victim2\n");
	free(got);
	assert_int_equal(stat(victim, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(stat(victim2, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	assert_int_equal(st.st_nlink, 2);
	got = slurp(f);
	assert_string_equal(got, "new\n");
	free(got);
	/* The planted names are untouched; the new files are separate inodes. */
	assert_int_equal(lstat(planted, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_int_equal(lstat(g, &st), 0);
	assert_int_equal(st.st_nlink, 1);
	assert_int_equal(count_entries(sub), 4);

	free(sub);
	free(victim);
	free(victim2);
	free(planted);
	free(planted2);
	free(f);
	free(g);
}

static void test_write_atomic_at(void **state)
{
	struct ctx *c = *state;
	int dfd = open(c->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	char *path = xasprintf("%s/at", c->dir), *got;

	assert_true(dfd >= 0);
	assert_int_equal(file_write_atomic_at(dfd, "at", "at\n", 3, 0644, (uid_t)-1, (gid_t)-1), 0);
	got = slurp(path);
	assert_string_equal(got, "at\n");
	free(got);
	assert_int_equal(file_write_atomic_at(dfd, "a/b", "x", 1, 0644, (uid_t)-1, (gid_t)-1), -EINVAL);
	assert_int_equal(file_write_atomic_at(dfd, "..", "x", 1, 0644, (uid_t)-1, (gid_t)-1), -EINVAL);
	assert_int_equal(file_write_atomic_at(dfd, "", "x", 1, 0644, (uid_t)-1, (gid_t)-1), -EINVAL);
	/* A directory in the way: the rename fails, the temporary file goes. */
	char *d = xasprintf("%s/dir", c->dir);
	assert_int_equal(mkdir(d, 0755), 0);
	assert_true(file_write_atomic_at(dfd, "dir", "x", 1, 0644, (uid_t)-1, (gid_t)-1) < 0);
	assert_int_equal(count_entries(c->dir), 2);
	/* A long name still gets a temporary name within NAME_MAX. */
	char name[256];
	memset(name, 'n', 255);
	name[255] = '\0';
	assert_int_equal(file_write_atomic_at(dfd, name, "x", 1, 0644, (uid_t)-1, (gid_t)-1), 0);
	assert_int_equal(count_entries(c->dir), 3);
	close(dfd);
	free(d);
	free(path);
}

static void test_tmp_name_random(void **state)
{
	char a[NAME_MAX + 1], b[NAME_MAX + 1], name[256];

	tmp_name_random("x.conf", a, sizeof(a));
	tmp_name_random("x.conf", b, sizeof(b));
	assert_true(strncmp(a, ".#x.conf.", 9) == 0);
	assert_int_equal(strlen(a), 9 + 16);
	assert_string_not_equal(a, b);
	memset(name, 'n', 255);
	name[255] = '\0';
	tmp_name_random(name, a, sizeof(a));
	assert_true(strlen(a) <= NAME_MAX);
}

static void test_fd_read_all(void **state)
{
	struct ctx *c = *state;
	char *path = xasprintf("%s/r", c->dir), *data = NULL;
	size_t len = 99;
	int fd;

	spit(path, "");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_int_equal(fd_read_all(fd, 10, &data, &len), 0);
	assert_string_equal(data, "");
	assert_int_equal(len, 0);
	free(data);
	close(fd);

	spit(path, "0123456789");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_int_equal(fd_read_all(fd, 10, &data, NULL), 0);
	assert_string_equal(data, "0123456789");
	free(data);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	assert_int_equal(fd_read_all(fd, 9, &data, &len), -EFBIG);
	close(fd);
	assert_int_equal(file_read_all(path, 9, &data, &len), -EFBIG);
	assert_int_equal(file_read_all(path, 10, &data, &len), 0);
	assert_int_equal(len, 10);
	free(data);
	assert_int_equal(fd_read_all(-1, 10, &data, &len), -EBADF);
	free(path);
}

static void test_user_group_lookup(void **state)
{
	uid_t uid = 1;
	gid_t gid = 1;

	assert_int_equal(user_lookup("root", &uid, &gid), 0);
	assert_int_equal(uid, 0);
	assert_int_equal(gid, 0);
	assert_int_equal(user_lookup("root", NULL, NULL), 0);
	assert_int_equal(user_lookup("no-such-user-xyz", &uid, &gid), -ENOENT);
	assert_int_equal(user_lookup("", &uid, &gid), -EINVAL);
	gid = 1;
	assert_int_equal(group_lookup("root", &gid), 0);
	assert_int_equal(gid, 0);
	assert_int_equal(group_lookup("no-such-group-xyz", &gid), -ENOENT);
}

/* --- rootfs --- */

struct rctx {
	char dir[64];
	char *root, *outside;
};

static int rsetup(void **state)
{
	struct rctx *c = xcalloc(1, sizeof(*c));

	snprintf(c->dir, sizeof(c->dir), "/tmp/test_rootfs.XXXXXX");
	assert_non_null(mkdtemp(c->dir));
	c->root = xasprintf("%s/root", c->dir);
	c->outside = xasprintf("%s/outside", c->dir);
	assert_int_equal(mkdir(c->root, 0755), 0);
	assert_int_equal(mkdir(c->outside, 0755), 0);
	*state = c;
	return 0;
}

static int rteardown(void **state)
{
	struct rctx *c = *state;

	rootfs_force_fallback(false);
	(void)nftw(c->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	free(c->root);
	free(c->outside);
	free(c);
	return 0;
}

static char *R(struct rctx *c, const char *path)
{
	return xasprintf("%s%s", c->root, path);
}

static char *O(struct rctx *c, const char *path)
{
	return xasprintf("%s%s", c->outside, path);
}

static void plant(struct rctx *c, const char *target, const char *path)
{
	char *p = R(c, path);

	assert_int_equal(symlink(target, p), 0);
	free(p);
}

static bool lexists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

/* The fd refers to the same inode as path. */
static void assert_fd_is(int fd, const char *path)
{
	struct stat a, b;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &a), 0);
	assert_int_equal(stat(path, &b), 0);
	assert_true(a.st_dev == b.st_dev && a.st_ino == b.st_ino);
}

/* Everything outside root: its entries, and keep's content and mode. */
static void assert_outside_untouched(struct rctx *c)
{
	char *keep = O(c, "/keep"), *got;
	struct stat st;

	assert_int_equal(count_entries(c->outside), 2);
	got = slurp(keep);
	assert_string_equal(got, "keep\n");
	free(got);
	assert_int_equal(stat(keep, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);
	free(keep);
	keep = O(c, "/dir");
	assert_int_equal(stat(keep, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0755);
	assert_int_equal(count_entries(keep), 0);
	free(keep);
}

static void plant_all(struct rctx *c)
{
	char *keep = O(c, "/keep"), *dir = O(c, "/dir"), *rel;

	spit(keep, "keep\n");
	assert_int_equal(chmod(keep, 0644), 0);
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_int_equal(chmod(dir, 0755), 0);
	free(keep);
	free(dir);
	/* root/abs -> the real outside directory, by its absolute path. */
	plant(c, c->outside, "/abs");
	/* root/rel -> ../outside, which from root is the outside directory. */
	plant(c, "../outside", "/rel");
	/* Deeper and with more "..": root/a/b/up -> ../../../../../outside. */
	char *ab = R(c, "/a/b");
	assert_int_equal(mkdir_p(ab, 0755), 0);
	free(ab);
	plant(c, "../../../../../../../../outside", "/a/b/up");
	/* A chain ending outside: c1 -> c2 -> /abs (absolute inside root) -> outside. */
	plant(c, "c2", "/c1");
	plant(c, "/abs", "/c2");
	/* Loops. */
	plant(c, "loop2", "/loop1");
	plant(c, "/loop1", "/loop2");
	plant(c, "self", "/self");
	/* A magic-link-like absolute path. */
	plant(c, "/proc/self/root", "/proc_root");
	/* A file, to go through. */
	char *f = R(c, "/file");
	spit(f, "f");
	free(f);
	char *etc = R(c, "/etc");
	assert_int_equal(mkdir(etc, 0755), 0);
	free(etc);
	(void)rel;
}

static void check_resolution(struct rctx *c)
{
	int rootfd = rootfs_open(c->root), fd, dfd;
	char *name = NULL, *p, *q;

	assert_true(rootfd >= 0);
	plant_all(c);

	/* Plain paths. */
	fd = rootfs_resolve(rootfd, "/etc", true);
	p = R(c, "/etc");
	assert_fd_is(fd, p);
	free(p);
	close(fd);
	fd = rootfs_resolve(rootfd, "etc/", true);
	assert_true(fd >= 0);
	close(fd);
	fd = rootfs_resolve(rootfd, "/", true);
	assert_fd_is(fd, c->root);
	close(fd);
	fd = rootfs_resolve(rootfd, "", true);
	assert_fd_is(fd, c->root);
	close(fd);
	/* ".." never leaves the root. */
	fd = rootfs_resolve(rootfd, "/../../..", true);
	assert_fd_is(fd, c->root);
	close(fd);
	fd = rootfs_resolve(rootfd, "/../outside", true);
	assert_int_equal(fd, -ENOENT);

	/* Every escape resolves inside the root, where there is nothing. */
	assert_int_equal(rootfs_resolve(rootfd, "/abs", true), -ENOENT);
	assert_int_equal(rootfs_resolve(rootfd, "/abs/keep", false), -ENOENT);
	assert_int_equal(rootfs_resolve(rootfd, "/rel/keep", false), -ENOENT);
	assert_int_equal(rootfs_resolve(rootfd, "/a/b/up/keep", false), -ENOENT);
	assert_int_equal(rootfs_resolve(rootfd, "/c1/keep", false), -ENOENT);
	assert_int_equal(rootfs_resolve(rootfd, "/loop1", false), -ELOOP);
	assert_int_equal(rootfs_resolve(rootfd, "/self/x", false), -ELOOP);
	assert_int_equal(rootfs_resolve(rootfd, "/file/x", false), -ENOTDIR);
	assert_int_equal(rootfs_resolve(rootfd, "/file", true), -ENOTDIR);
	fd = rootfs_resolve(rootfd, "/file", false);
	assert_true(fd >= 0);
	close(fd);
	fd = rootfs_resolve(rootfd, "/proc_root", false);
	assert_true(fd < 0);

	/* rel -> ../outside is root/outside once it exists: inside. */
	p = R(c, "/outside");
	assert_int_equal(mkdir(p, 0755), 0);
	fd = rootfs_resolve(rootfd, "/rel", true);
	assert_fd_is(fd, p);
	close(fd);
	fd = rootfs_resolve(rootfd, "/a/b/up", true);
	assert_fd_is(fd, p);
	close(fd);
	free(p);

	/* open_parent: the final component is not resolved. */
	assert_int_equal(rootfs_open_parent(rootfd, "/abs", false, 0755, &dfd, &name), 0);
	assert_string_equal(name, "abs");
	assert_fd_is(dfd, c->root);
	free(name);
	close(dfd);
	assert_int_equal(rootfs_open_parent(rootfd, "/", false, 0755, &dfd, &name), 0);
	assert_string_equal(name, ".");
	assert_fd_is(dfd, c->root);
	free(name);
	close(dfd);
	assert_int_equal(rootfs_open_parent(rootfd, "/etc/../x", false, 0755, &dfd, &name), -EINVAL);
	assert_int_equal(rootfs_open_parent(rootfd, "/abs/keep", false, 0755, &dfd, &name), -ENOENT);
	assert_int_equal(rootfs_open_parent(rootfd, "/file/x/y", true, 0755, &dfd, &name), -ENOTDIR);
	assert_int_equal(rootfs_open_parent(rootfd, "/loop1/x", true, 0755, &dfd, &name), -ELOOP);

	/* /abs and /c1 dangle inside the root: no parent is made through them. */
	assert_int_equal(rootfs_open_parent(rootfd, "/abs/new/x", true, 0755, &dfd, &name), -ENOENT);
	assert_int_equal(rootfs_open_parent(rootfd, "/c1/new2/x", true, 0755, &dfd, &name), -ENOENT);
	assert_outside_untouched(c);
	/* Once what they name exists inside the root, they lead there. */
	p = xasprintf("%s%s", c->root, c->outside);
	assert_int_equal(mkdir_p(p, 0755), 0);
	free(p);

	/* Creating parents through every planted link: made inside the root. */
	const char *via[] = { "/abs/new/x", "/c1/new2/x", "/a/b/up/new3/x", "/rel/new4/x" };
	for (size_t i = 0; i < ELEMENTSOF(via); i++) {
		assert_int_equal(rootfs_open_parent(rootfd, via[i], true, 0755, &dfd, &name), 0);
		assert_string_equal(name, "x");
		free(name);
		close(dfd);
	}
	/* /abs is <outside's absolute path> inside the root. */
	p = xasprintf("%s%s/new", c->root, c->outside);
	q = xasprintf("%s%s/new2", c->root, c->outside);
	assert_true(lexists(p));
	assert_true(lexists(q));
	free(p);
	free(q);
	p = R(c, "/outside/new3");
	assert_true(lexists(p));
	free(p);
	p = R(c, "/outside/new4");
	assert_true(lexists(p));
	free(p);
	assert_outside_untouched(c);

	/* A dangling link in the middle is not made into a directory. */
	plant(c, "/nowhere", "/dangling");
	assert_int_equal(rootfs_open_parent(rootfd, "/dangling/x/y", true, 0755, &dfd, &name), -ENOENT);
	p = R(c, "/nowhere");
	assert_false(lexists(p));
	free(p);

	/* exists: lstat semantics, inside the root. */
	assert_true(rootfs_exists(c->root, "/abs"));
	assert_true(rootfs_exists(c->root, "/dangling"));
	assert_false(rootfs_exists(c->root, "/abs/keep"));
	assert_false(rootfs_exists(c->root, "/rel/keep"));
	assert_false(rootfs_exists(c->root, "/c1/keep"));
	assert_false(rootfs_exists(c->root, "/../outside/keep"));
	assert_true(rootfs_exists(c->root, "/"));
	assert_outside_untouched(c);
	close(rootfd);
}

static void test_rootfs_openat2(void **state)
{
	rootfs_force_fallback(false);
	check_resolution(*state);
}

static void test_rootfs_fallback(void **state)
{
	rootfs_force_fallback(true);
	check_resolution(*state);
}

/* The same answers from both implementations for a set of paths. */
static void test_rootfs_same_answers(void **state)
{
	struct rctx *c = *state;
	const char *paths[] = { "/", "/etc", "/abs", "/abs/keep", "/rel", "/rel/", "/a/b/up", "/c1", "/loop1",
				"/file", "/file/", "/file/x", "/missing", "/etc/../etc", "/./etc/.", "/a/b/../b/up",
				"//etc//", "/proc_root" };
	int rootfd = rootfs_open(c->root);
	char *inside = R(c, "/outside");

	plant_all(c);
	assert_int_equal(mkdir(inside, 0755), 0);
	free(inside);
	for (size_t i = 0; i < ELEMENTSOF(paths); i++)
		for (int want_dir = 0; want_dir < 2; want_dir++) {
			struct stat a, b;
			int fa, fb;

			rootfs_force_fallback(false);
			fa = rootfs_resolve(rootfd, paths[i], want_dir);
			rootfs_force_fallback(true);
			fb = rootfs_resolve(rootfd, paths[i], want_dir);
			if (fa < 0 || fb < 0) {
				/* openat2 says ELOOP for a magic link, the fallback
				 * resolves its text inside the root. */
				if (strcmp(paths[i], "/proc_root") != 0)
					assert_int_equal(fa, fb);
			} else {
				assert_int_equal(fstat(fa, &a), 0);
				assert_int_equal(fstat(fb, &b), 0);
				assert_true(a.st_ino == b.st_ino && a.st_dev == b.st_dev);
			}
			if (fa >= 0)
				close(fa);
			if (fb >= 0)
				close(fb);
		}
	close(rootfd);
}

static void test_rootfs_mount_id(void **state)
{
	struct rctx *c = *state;
	int fd = open(c->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	uint64_t a = 0, b = 0;

	assert_true(fd >= 0);
	assert_int_equal(rootfs_mount_id(fd, "", &a), 0);
	assert_int_equal(rootfs_mount_id(AT_FDCWD, c->dir, &b), 0);
	assert_true(a == b);
	close(fd);
}

/* --- rootfs: links in directories other users can write --- */

#define OTHER_UID 65534 /* nobody: any uid that is not root */

static void mkdir_owned(struct rctx *c, const char *path, mode_t mode, uid_t uid)
{
	char *p = R(c, path);

	assert_int_equal(mkdir(p, mode), 0);
	assert_int_equal(chmod(p, mode), 0);
	assert_int_equal(chown(p, uid, (gid_t)-1), 0);
	free(p);
}

static void plant_owned(struct rctx *c, const char *target, const char *path, uid_t uid)
{
	char *p = R(c, path);

	assert_int_equal(symlink(target, p), 0);
	assert_int_equal(lchown(p, uid, (gid_t)-1), 0);
	free(p);
}

static void assert_resolves_to(int rootfd, struct rctx *c, const char *path, const char *want)
{
	char *w = R(c, want);
	int fd = rootfs_resolve(rootfd, path, false);

	assert_fd_is(fd, w);
	close(fd);
	free(w);
}

static void assert_refused(int rootfd, const char *path, const char *link)
{
	int fd = rootfs_resolve(rootfd, path, false);

	assert_int_equal(fd, -ELOOP);
	/* The message names the link that was not followed. */
	assert_non_null(strstr(rootfs_strerror(fd), link));
	assert_non_null(strstr(rootfs_strerror(fd), "refusing"));
}

static void check_shared_dirs(struct rctx *c)
{
	int rootfd = rootfs_open(c->root), dfd, fd;
	char *name = NULL, *p;

	assert_true(rootfd >= 0);
	mkdir_owned(c, "/etc", 0755, 0);
	mkdir_owned(c, "/etc/sudoers.d", 0750, 0);
	/* Root's own directory: its links are followed (inside root). */
	mkdir_owned(c, "/trusted", 0755, 0);
	plant(c, "/etc", "/trusted/etc");
	assert_resolves_to(rootfd, c, "/trusted/etc/sudoers.d", "/etc/sudoers.d");
	/* A link to a file, last in the path (a /dev/disk/by-id link). */
	p = R(c, "/etc/node");
	spit(p, "x");
	free(p);
	plant(c, "../etc/node", "/trusted/node");
	assert_resolves_to(rootfd, c, "/trusted/node", "/etc/node");
	assert_int_equal(rootfs_resolve(rootfd, "/trusted/node/", false), -ENOTDIR);
	/* deploy_to, the app user's. */
	mkdir_owned(c, "/app", 0755, OTHER_UID);
	mkdir_owned(c, "/app/releases", 0755, OTHER_UID);
	mkdir_owned(c, "/app/releases/r1", 0755, OTHER_UID);
	mkdir_owned(c, "/app/shared", 0770, OTHER_UID);
	plant_owned(c, "/etc/sudoers.d", "/app/evil", OTHER_UID);
	plant_owned(c, "../etc", "/app/rel", OTHER_UID);
	plant_owned(c, "/", "/app/shared/var", OTHER_UID);
	assert_refused(rootfd, "/app/evil", "evil");
	assert_refused(rootfd, "/app/evil/x", "evil");
	assert_refused(rootfd, "/app/rel/sudoers.d", "rel");
	assert_refused(rootfd, "/app/shared/var/etc", "var");
	/* A link of root's in a root-owned directory below the user's:
	 * still not followed (from the first shared directory on). */
	mkdir_owned(c, "/app/rootsub", 0755, 0);
	plant(c, "/etc", "/app/rootsub/etc");
	assert_refused(rootfd, "/app/rootsub/etc/sudoers.d", "etc");
	/* A trusted link into a shared directory, then a link there. */
	plant(c, "/app", "/trusted/app");
	assert_refused(rootfd, "/trusted/app/evil", "evil");
	/* Plain directories below a shared one are fine. */
	assert_resolves_to(rootfd, c, "/app/releases/r1", "/app/releases/r1");
	assert_resolves_to(rootfd, c, "/trusted/app/releases/r1", "/app/releases/r1");

	/* current -> releases/<name>, the link agentd manages: followed to a
	 * real directory below the same deploy_to. */
	plant_owned(c, "releases/r1", "/app/current", 0);
	assert_resolves_to(rootfd, c, "/app/current", "/app/releases/r1");
	assert_int_equal(rootfs_open_parent(rootfd, "/app/current/deploy.cfg", false, 0755, &dfd, &name), 0);
	assert_string_equal(name, "deploy.cfg");
	p = R(c, "/app/releases/r1");
	assert_fd_is(dfd, p);
	free(p);
	free(name);
	close(dfd);
	/* ... but no other text, and nothing but real directories. */
	p = R(c, "/app/current");
	const char *bad[] = { "/etc/sudoers.d", "../etc", "releases/../../etc", "releases/r1/../..", "releases/",
			      "releases/link", "./releases/r1", "shared" };
	plant_owned(c, "/etc", "/app/releases/link", OTHER_UID);
	for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
		assert_int_equal(unlink(p), 0);
		plant_owned(c, bad[i], "/app/current", OTHER_UID);
		fd = rootfs_resolve(rootfd, "/app/current/deploy.cfg", false);
		assert_true(fd == -ELOOP || fd == -ENOENT);
		assert_int_equal(rootfs_open_parent(rootfd, "/app/current/deploy.cfg", true, 0755, &dfd, &name),
				 fd);
	}
	/* releases itself swapped for a link. */
	assert_int_equal(unlink(p), 0);
	plant_owned(c, "releases/r1", "/app/current", OTHER_UID);
	{
		char *rel = R(c, "/app/releases"), *moved = R(c, "/app/releases.real");

		assert_int_equal(rename(rel, moved), 0);
		plant_owned(c, "/etc", "/app/releases", OTHER_UID);
		assert_refused(rootfd, "/app/current/sudoers.d", "releases");
		assert_int_equal(unlink(rel), 0);
		assert_int_equal(rename(moved, rel), 0);
		free(rel);
		free(moved);
	}
	free(p);
	/* A name that is not "current" gets no exception. */
	plant_owned(c, "releases/r1", "/app/previous", OTHER_UID);
	assert_refused(rootfd, "/app/previous", "previous");

	/* Group- or world-writable without the sticky bit: shared too. */
	mkdir_owned(c, "/gw", 0777, 0);
	plant(c, "/etc", "/gw/etc");
	assert_refused(rootfd, "/gw/etc/sudoers.d", "etc");
	/* /tmp-like: root's links and the owner's are followed, others' not. */
	mkdir_owned(c, "/tmp", 01777, 0);
	plant(c, "/etc", "/tmp/root-link");
	plant_owned(c, "/etc", "/tmp/user-link", OTHER_UID);
	assert_resolves_to(rootfd, c, "/tmp/root-link/sudoers.d", "/etc/sudoers.d");
	assert_refused(rootfd, "/tmp/user-link/sudoers.d", "user-link");

	/* Parents are created without following anything either. */
	assert_int_equal(rootfs_open_parent(rootfd, "/app/shared/var/log/x", true, 0755, &dfd, &name), -ELOOP);
	p = R(c, "/log");
	assert_false(lexists(p));
	free(p);
	assert_int_equal(rootfs_open_parent(rootfd, "/app/shared/new/x", true, 0755, &dfd, &name), 0);
	free(name);
	close(dfd);
	/* For a path used as a string later (mount): no name may be looked
	 * up in a shared directory; the final directory may be anyone's. */
	fd = rootfs_resolve_private(rootfd, "/app", true);
	assert_true(fd >= 0);
	close(fd);
	fd = rootfs_resolve_private(rootfd, "/trusted/etc/sudoers.d", true);
	assert_true(fd >= 0);
	close(fd);
	fd = rootfs_resolve_private(rootfd, "/app/releases/r1", true);
	assert_int_equal(fd, -EPERM);
	assert_non_null(strstr(rootfs_strerror(fd), "releases"));
	assert_int_equal(rootfs_resolve_private(rootfd, "/trusted/app/shared", true), -EPERM);
	assert_int_equal(rootfs_resolve_private(rootfd, "/gw/x", true), -EPERM);
	/* Existence checks see the link, never what it points at. */
	assert_true(rootfs_exists(c->root, "/app/evil"));
	assert_false(rootfs_exists(c->root, "/app/evil/README"));
	fd = rootfs_resolve(rootfd, "/app", true);
	assert_true(rootfs_dir_shared(fd));
	close(fd);
	fd = rootfs_resolve(rootfd, "/trusted", true);
	assert_false(rootfs_dir_shared(fd));
	close(fd);
	close(rootfd);
}

static void test_rootfs_shared_openat2(void **state)
{
	rootfs_force_fallback(false);
	check_shared_dirs(*state);
}

static void test_rootfs_shared_fallback(void **state)
{
	rootfs_force_fallback(true);
	check_shared_dirs(*state);
}

/* rootfs_create_file_at: a planted symlink or file under the name is
 * replaced, never written through. */
static void test_rootfs_create_file_at(void **state)
{
	struct rctx *c = *state;
	int dfd = open(c->root, O_PATH | O_DIRECTORY | O_CLOEXEC), fd;
	char *keep = O(c, "/keep"), *got;
	struct stat st;

	spit(keep, "keep\n");
	plant(c, keep, "/name");
	fd = rootfs_create_file_at(dfd, "name", 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "new", 3), 3);
	close(fd);
	got = slurp(keep);
	assert_string_equal(got, "keep\n");
	free(got);
	got = R(c, "/name");
	assert_int_equal(lstat(got, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	free(got);
	assert_int_equal(rootfs_create_file_at(dfd, "../x", 0600), -EINVAL);
	free(keep);
	close(dfd);
}

static void test_path_is_system_dir(void **state)
{
	/* The system itself: never owned, chmodded, mounted over or removed by a recipe. */
	for (const char *const *p = (const char *const[]){ "/", "//", "/etc", "/etc/", "/etc/ssh", "/usr", "/usr/lib",
							   "/var", "/var/", "/home", "/srv", "/mnt", "/tmp", "/var/lib",
							   "/lib64/x", "/root/.ssh", "/boot", "/dev/sda", "//usr//", NULL };
	     *p; p++)
		assert_true(path_is_system_dir(*p));
	/* What recipes are for. */
	for (const char *const *p = (const char *const[]){ "/srv/www/app", "/var/www", "/mnt/shared/zodb", "/data",
							   "/home/deploy", "/opt/app", "/etcetera", "/usrdata", NULL };
	     *p; p++)
		assert_false(path_is_system_dir(*p));
	assert_true(path_is_plain("/srv/www/app-1_x.y"));
	assert_false(path_is_plain("/srv/50%"));
	assert_false(path_is_plain("/srv/a b"));
	assert_false(path_is_plain("/srv/a\"b"));
	assert_false(path_is_plain(""));
}

static void expect_normal(const char *in, const char *want)
{
	char *n = NULL;

	assert_int_equal(path_normalize(in, &n), 0);
	assert_string_equal(n, want);
	assert_true(path_is_normal(n));
	free(n);
}

/* Two spellings of one directory are one directory (design.md §2). */
static void test_path_normalize(void **state)
{
	char *n = (char *)0x1;

	expect_normal("/srv/www/shared", "/srv/www/shared");
	expect_normal("/srv/www//shared", "/srv/www/shared");
	expect_normal("/srv/www/a/", "/srv/www/a");
	expect_normal("//srv///www//a//", "/srv/www/a");
	expect_normal("/", "/");
	expect_normal("///", "/");
	expect_normal("/a.b/..c/c..", "/a.b/..c/c..");
	assert_int_equal(path_normalize("/srv/./www", &n), -EINVAL);
	assert_null(n);
	assert_int_equal(path_normalize("/srv/www/.", &n), -EINVAL);
	assert_int_equal(path_normalize("/srv/../etc", &n), -EINVAL);
	assert_int_equal(path_normalize("srv/www", &n), -EINVAL);
	assert_int_equal(path_normalize("", &n), -EINVAL);
	assert_int_equal(path_normalize(NULL, &n), -EINVAL);
	assert_int_equal(path_normalize("/a\nb", &n), -EINVAL);

	assert_true(path_is_normal("/srv/www"));
	assert_true(path_is_normal("/"));
	assert_false(path_is_normal("/srv/www/"));
	assert_false(path_is_normal("/srv//www"));
	assert_false(path_is_normal("//"));
	assert_false(path_is_normal("/srv/./www"));
	assert_false(path_is_normal("srv"));
}

/* A prefix is a whole component: /srv/www/a holds /srv/www/a/b, not /srv/www/ab. */
static void test_path_is_under(void **state)
{
	assert_true(path_is_under("/srv/www/a", "/srv/www/a"));
	assert_true(path_is_under("/srv/www/a/b", "/srv/www/a"));
	assert_true(path_is_under("/srv/www/a/b", "/srv/www/a/"));
	assert_true(path_is_under("/srv/www//a/b/", "/srv//www/a"));
	assert_true(path_is_under("/srv/www/a", "/"));
	assert_true(path_is_under("/", "/"));
	assert_false(path_is_under("/srv/www/ab", "/srv/www/a"));
	assert_false(path_is_under("/srv/www/a", "/srv/www/ab"));
	assert_false(path_is_under("/srv/www", "/srv/www/a"));
	assert_false(path_is_under("/", "/srv"));
	assert_false(path_is_under("/srv/www-a", "/srv/www"));
	assert_false(path_is_under("srv/www/a", "srv/www"));
	assert_false(path_is_under(NULL, "/"));
}

/* Elements and depth are counted on the bytes, outside strings. */
static void test_json_bounds_check(void **state)
{
	static const char ok[] = "{\"a\": [1, 2, {\"b\": null}], \"c\": \"[[[[{{{{,,,\\\"]]\", \"d\": -1.5e3, "
				 "\"e\": true}";
	size_t n = 1000;
	char *big = xmalloc(2 * n + 2);

	/* {, a, [, 1, 2, {, b, null, c, "..", d, -1.5e3, e, true: 14. */
	assert_int_equal(json_bounds_check(ok, strlen(ok), 14, 3), 0);
	assert_int_equal(json_bounds_check(ok, strlen(ok), 13, 3), -E2BIG);
	assert_int_equal(json_bounds_check(ok, strlen(ok), 100, 2), -ELOOP);
	assert_int_equal(json_bounds_check("", 0, 0, 0), 0);
	assert_int_equal(json_bounds_check("7", 1, 1, 0), 0);
	assert_int_equal(json_bounds_check("7", 1, 0, 0), -E2BIG);

	/* [1,1,1,...]: n + 1 elements. */
	big[0] = '[';
	for (size_t i = 0; i < n; i++) {
		big[1 + 2 * i] = '1';
		big[2 + 2 * i] = i + 1 < n ? ',' : ']';
	}
	assert_int_equal(json_bounds_check(big, 2 * n + 1, n + 1, 1), 0);
	assert_int_equal(json_bounds_check(big, 2 * n + 1, n, 1), -E2BIG);
	/* [[[[...: depth n. */
	memset(big, '[', n);
	assert_int_equal(json_bounds_check(big, n, SIZE_MAX, n), 0);
	assert_int_equal(json_bounds_check(big, n, SIZE_MAX, 64), -ELOOP);
	free(big);
}

static void test_str_escape_ctl(void **state)
{
	char *e = str_escape_ctl("a\nb\tc\rd\033[2J\\e\x01\x7f caf\xc3\xa9");

	assert_string_equal(e, "a\\nb\\tc\\rd\\e[2J\\\\e\\x01\\x7f caf\xc3\xa9");
	free(e);
	e = str_escape_ctl("");
	assert_string_equal(e, "");
	free(e);
	e = str_escape_ctl(NULL);
	assert_string_equal(e, "(null)");
	free(e);
}

/* A refused link's name and path, chosen by another user, are escaped in
 * the message: no newline or escape reaches the log. */
static void test_rootfs_refusal_escapes_names(void **state)
{
	struct rctx *c = *state;
	int rootfd = rootfs_open(c->root), fd;
	char *dir = R(c, "/home");
	char *link;

	assert_int_equal(mkdir(dir, 0755), 0);
	assert_int_equal(chown(dir, 65534, 65534), 0);
	link = xasprintf("%s/x\nagentd: info: FAKE\033[2J", dir);
	assert_int_equal(symlink("/", link), 0);
	fd = rootfs_resolve(rootfd, "/home/x\nagentd: info: FAKE\033[2J/etc", false);
	assert_int_equal(fd, -ELOOP);
	assert_null(strchr(rootfs_strerror(fd), '\n'));
	assert_null(strchr(rootfs_strerror(fd), '\033'));
	assert_non_null(strstr(rootfs_strerror(fd), "x\\nagentd: info: FAKE\\e[2J"));
	fd = rootfs_resolve_private(rootfd, "/home/x\nagentd: info: FAKE\033[2J", false);
	assert_int_equal(fd, -EPERM);
	assert_null(strchr(rootfs_strerror(fd), '\n'));
	(void)unlink(link);
	(void)rmdir(dir);
	free(link);
	free(dir);
	close(rootfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_write_atomic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_atomic_planted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_atomic_at, setup, teardown),
		cmocka_unit_test(test_tmp_name_random),
		cmocka_unit_test_setup_teardown(test_fd_read_all, setup, teardown),
		cmocka_unit_test(test_user_group_lookup),
		cmocka_unit_test(test_path_is_system_dir),
		cmocka_unit_test(test_path_normalize),
		cmocka_unit_test(test_path_is_under),
		cmocka_unit_test(test_json_bounds_check),
		cmocka_unit_test_setup_teardown(test_rootfs_openat2, rsetup, rteardown),
		cmocka_unit_test_setup_teardown(test_rootfs_fallback, rsetup, rteardown),
		cmocka_unit_test_setup_teardown(test_rootfs_same_answers, rsetup, rteardown),
		cmocka_unit_test_setup_teardown(test_rootfs_mount_id, rsetup, rteardown),
		cmocka_unit_test_setup_teardown(test_rootfs_shared_openat2, rsetup, rteardown),
		cmocka_unit_test_setup_teardown(test_rootfs_shared_fallback, rsetup, rteardown),
		cmocka_unit_test_setup_teardown(test_rootfs_create_file_at, rsetup, rteardown),
		cmocka_unit_test_setup_teardown(test_rootfs_refusal_escapes_names, rsetup, rteardown),
		cmocka_unit_test(test_str_escape_ctl),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* lib/util.c: atomic writes (no predictable temporary name to plant things
 * under), fd_read_all, user and group look-ups. */
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_write_atomic, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_atomic_planted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_atomic_at, setup, teardown),
		cmocka_unit_test(test_tmp_name_random),
		cmocka_unit_test_setup_teardown(test_fd_read_all, setup, teardown),
		cmocka_unit_test(test_user_group_lookup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

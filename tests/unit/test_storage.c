/* SPDX-License-Identifier: BSD-2-Clause */
/* The storage family's pure parts: fstab editing, gluster volume info
 * parsing, where an EBS volume is looked for. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <libmount.h>
#include <stdio.h>
#include <unistd.h>

#include "io/fstab.h"
#include "io/gluster_parse.h"
#include "steps/step_volume.h"
#include "util.h"

static void test_fstab_append_replace_dedupe(void **state)
{
	const char *text = "# static\nUUID=a / ext4 defaults 0 1\n\n/dev/x /data ext4 old,x-agentd 0 2\n"
			   "/dev/y /data xfs older,x-agentd 0 0\nproc /proc proc defaults 0 0\n";
	bool changed = false;
	char *out;

	(void)state;
	out = fstab_set(text, strlen(text), "/data", "UUID=b /data ext4 new,x-agentd 0 2", false, &changed);
	assert_true(changed);
	assert_string_equal(out, "# static\nUUID=a / ext4 defaults 0 1\n\nUUID=b /data ext4 new,x-agentd 0 2\n"
				 "proc /proc proc defaults 0 0\n");
	/* Setting the same line again changes nothing. */
	{
		char *again = fstab_set(out, strlen(out), "/data", "UUID=b /data ext4 new,x-agentd 0 2", false, &changed);

		assert_false(changed);
		assert_string_equal(again, out);
		free(again);
	}
	free(out);
	out = fstab_set("", 0, "/srv/a b", "x /srv/a\\040b nfs rw 0 0", false, &changed);
	assert_true(changed);
	assert_string_equal(out, "x /srv/a\\040b nfs rw 0 0\n");
	free(out);
	/* A last line without a newline is kept, and gets one. */
	out = fstab_set("a /b c d", 8, "/z", "n /z t o 0 0", false, &changed);
	assert_string_equal(out, "a /b c d\nn /z t o 0 0\n");
	free(out);
}

static void test_fstab_keeps_lines_that_are_not_agentds(void **state)
{
	const char *text = "/dev/x /data ext4 defaults 0 2\nUUID=o /data ext4 old,x-agentd 0 2\n"
			   "/dev/y /data xfs user 0 0\nUUID=p /data ext4 older,x-agentd 0 2\n";
	bool changed = false;
	char *out, *src = NULL;

	(void)state;
	assert_int_equal(fstab_find_foreign(text, strlen(text), "/data", &src), 1);
	assert_string_equal(src, "/dev/x");
	free(src);
	assert_int_equal(fstab_find_foreign(text, strlen(text), "/other", NULL), 0);
	assert_int_equal(fstab_find_foreign("U /data e a,x-agentd 0 0\n", 25, "/data", NULL), 0);
	/* agentd's first line is replaced, its later one dropped; the others stay. */
	out = fstab_set(text, strlen(text), "/data", "UUID=b /data ext4 new,x-agentd 0 2", false, &changed);
	assert_true(changed);
	assert_string_equal(out, "/dev/x /data ext4 defaults 0 2\nUUID=b /data ext4 new,x-agentd 0 2\n"
				 "/dev/y /data xfs user 0 0\n");
	free(out);
	/* Forced: every line for the mount point is agentd's to replace. */
	out = fstab_set(text, strlen(text), "/data", "UUID=b /data ext4 new,x-agentd 0 2", true, &changed);
	assert_string_equal(out, "UUID=b /data ext4 new,x-agentd 0 2\n");
	free(out);
}

static void test_fstab_parse_and_escape(void **state)
{
	struct fstab_entry e;
	char *esc;

	(void)state;
	assert_int_equal(fstab_parse_line("  # comment", 11, &e), 0);
	assert_int_equal(fstab_parse_line("   ", 3, &e), 0);
	assert_int_equal(fstab_parse_line("lonely", 6, &e), 0);
	assert_int_equal(fstab_parse_line("h:/x\t/mnt/a\\040b  nfs rw,x-agentd 0 0", 36, &e), 1);
	assert_string_equal(e.source, "h:/x");
	assert_string_equal(e.target, "/mnt/a b");
	assert_string_equal(e.fstype, "nfs");
	assert_true(fstab_has_option(e.options, "x-agentd"));
	assert_false(fstab_has_option(e.options, "x-agent"));
	assert_false(fstab_has_option(e.options, "r"));
	fstab_entry_done(&e);
	esc = fstab_escape("/a b\\c#d\te");
	assert_string_equal(esc, "/a\\040b\\134c\\043d\\011e");
	assert_int_equal(fstab_parse_line(esc, strlen(esc), &e), 0); /* one field only */
	free(esc);
	assert_int_equal(fstab_find("x /a t o\ny /b t o,x-agentd\n", 26, "/b", &e), 1);
	assert_string_equal(e.source, "y");
	fstab_entry_done(&e);
	assert_int_equal(fstab_find("x /a t o\n", 9, "/b", &e), 0);
}

/* A mount point and source agentd writes into fstab read back exactly
 * through libmount's own fstab parser (design.md §8): every byte a valid
 * path may hold, separators, '#', backslashes and non-ASCII included. */
static void test_fstab_fields_read_back_through_libmount(void **state)
{
	static const char *const targets[] = { "/srv/a b", "/srv/a\tb", "/srv/#x", "/srv/a#b", "/srv/back\\slash",
					       "/srv/\\040", "/srv/ünï ✓", "/srv/a,b=c", "/srv/$x%y;z\"'" };
	(void)state;
	for (size_t i = 0; i < sizeof(targets) / sizeof(*targets); i++) {
		char path[] = "/tmp/agentd-fstab-XXXXXX";
		int fd = mkstemp(path);
		_cleanup_free_ char *src = fstab_escape("host:/srv/exports/blob storage");
		_cleanup_free_ char *tgt = fstab_escape(targets[i]);
		_cleanup_free_ char *line = xasprintf("%s %s nfs rw,nofail,x-agentd 0 0\n", src, tgt);
		struct libmnt_table *tb;
		struct libmnt_fs *fs = NULL;
		struct libmnt_iter *itr;

		assert_true(fd >= 0);
		assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
		(void)close(fd);
		tb = mnt_new_table_from_file(path);
		assert_non_null(tb);
		itr = mnt_new_iter(MNT_ITER_FORWARD);
		if (mnt_table_next_fs(tb, itr, &fs) != 0)
			fail_msg("target %zu: libmount read no entry from: %s", i, line);
		assert_string_equal(mnt_fs_get_target(fs), targets[i]);
		assert_string_equal(mnt_fs_get_source(fs), "host:/srv/exports/blob storage");
		assert_string_equal(mnt_fs_get_options(fs), "rw,nofail,x-agentd");
		mnt_free_iter(itr);
		mnt_unref_table(tb);
		(void)unlink(path);
	}
}

static void test_gluster_info(void **state)
{
	static const char info[] = "\nVolume Name: blobs\nType: Replicate\nStatus: Started\nNumber of Bricks: 1 x 2 = 2\n"
				   "Bricks:\nBrick1: 10.0.0.1:/mnt/gluster-exports/brick\n"
				   "Brick2: 10.0.0.2:/mnt/gluster-exports/brick\nOptions Reconfigured:\n"
				   "performance.cache-size: 256MB\nnfs.disable: on\n";
	struct gluster_info i;

	(void)state;
	assert_int_equal(gluster_info_parse(info, strlen(info), &i), 0);
	assert_string_equal(i.status, "Started");
	assert_int_equal(i.n_bricks, 2);
	assert_string_equal(i.bricks[0], "10.0.0.1:/mnt/gluster-exports/brick");
	assert_string_equal(i.bricks[1], "10.0.0.2:/mnt/gluster-exports/brick");
	assert_string_equal(i.cache_size, "256MB");
	gluster_info_done(&i);
	assert_int_equal(gluster_info_parse("Volume blobs does not exist\n", 28, &i), 0);
	assert_null(i.status);
	assert_int_equal(i.n_bricks, 0);
	gluster_info_done(&i);
}

static void test_gluster_info_absent(void **state)
{
	static const char *const absent[] = {
		"Volume blobs does not exist\n",
		"volume info: failed: Volume blobs does not exist\n",
		"\nVolume blobs does not exist \r\n",
	};
	static const char *const other[] = {
		"Connection failed. Please check if gluster daemon is operational.\n",
		"Volume blobsx does not exist\n",
		"Volume other does not exist\n",
		"Error : Request timed out\n",
		"xVolume blobs does not exist\n",
		"",
	};

	(void)state;
	for (size_t k = 0; k < ELEMENTSOF(absent); k++)
		assert_true(gluster_info_says_absent(absent[k], strlen(absent[k]), "blobs"));
	for (size_t k = 0; k < ELEMENTSOF(other); k++)
		assert_false(gluster_info_says_absent(other[k], strlen(other[k]), "blobs"));
}

static void test_volume_candidates(void **state)
{
	char **c;

	(void)state;
	c = volume_candidates("vol-0123456789abcdef0", "/dev/sdf");
	assert_string_equal(c[0], "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0");
	assert_string_equal(c[1], "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0-ns-1");
	assert_string_equal(c[2], "/dev/sdf");
	assert_string_equal(c[3], "/dev/xvdf");
	assert_null(c[4]);
	for (char **p = c; *p; p++)
		free(*p);
	free(c);
	c = volume_candidates(NULL, "/dev/xvdg");
	assert_string_equal(c[0], "/dev/xvdg");
	assert_string_equal(c[1], "/dev/sdg");
	assert_null(c[2]);
	for (char **p = c; *p; p++)
		free(*p);
	free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fstab_append_replace_dedupe),
		cmocka_unit_test(test_fstab_keeps_lines_that_are_not_agentds),
		cmocka_unit_test(test_fstab_parse_and_escape),
		cmocka_unit_test(test_fstab_fields_read_back_through_libmount),
		cmocka_unit_test(test_gluster_info),
		cmocka_unit_test(test_gluster_info_absent),
		cmocka_unit_test(test_volume_candidates),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}

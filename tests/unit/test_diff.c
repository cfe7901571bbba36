/* SPDX-License-Identifier: BSD-2-Clause */
/* diff_unified: hunks compared with what GNU `diff -u` prints for the same
 * inputs (header lines aside), and random inputs checked by applying the
 * diff back to the old text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>

#include <cmocka.h>

#include "io/diff.h"
#include "util.h"

/* The diff of a and b without its two header lines; NULL when equal. */
static char *hunks(const char *a, const char *b)
{
	char *d = diff_unified("/etc/x", a, strlen(a), b, strlen(b));
	char *body;

	if (!d)
		return NULL;
	assert_true(strncmp(d, "--- /etc/x\n+++ /etc/x\n", 22) == 0);
	body = xstrdup(d + 22);
	free(d);
	return body;
}

static void check(const char *a, const char *b, const char *expect)
{
	char *h = hunks(a, b);

	assert_non_null(h);
	assert_string_equal(h, expect);
	free(h);
}

static void test_equal(void **state)
{
	assert_null(diff_unified("/x", "", 0, "", 0));
	assert_null(diff_unified("/x", "a\nb\n", 4, "a\nb\n", 4));
	assert_null(diff_unified("/x", "a\nb", 3, "a\nbXX", 3));
}

static void test_gnu_cases(void **state)
{
	check("a\nb\nc\n", "a\nB\nc\n", "@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n");
	check("", "x\ny\n", "@@ -0,0 +1,2 @@\n+x\n+y\n");
	check("x\ny\n", "", "@@ -1,2 +0,0 @@\n-x\n-y\n");
	check("a\nb", "a\nb\n", "@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n");
	check("a\nb\n", "a\nc", "@@ -1,2 +1,2 @@\n a\n-b\n+c\n\\ No newline at end of file\n");
	check("a", "b", "@@ -1 +1 @@\n-a\n\\ No newline at end of file\n+b\n\\ No newline at end of file\n");
}

static char *seq_text(int n, int x_at, int y_at)
{
	struct buf b;

	buf_init(&b);
	for (int i = 1; i <= n; i++) {
		if (i == x_at)
			buf_puts(&b, "x\n");
		else if (i == y_at)
			buf_puts(&b, "y\n");
		else
			buf_printf(&b, "%d\n", i);
	}
	return buf_steal(&b);
}

static void test_hunk_merging(void **state)
{
	char *s = seq_text(20, 0, 0), *m1 = seq_text(20, 3, 10), *m2 = seq_text(20, 3, 11);

	/* Six unchanged lines between changes: the contexts touch, one hunk. */
	check(s, m1, "@@ -1,13 +1,13 @@\n 1\n 2\n-3\n+x\n 4\n 5\n 6\n 7\n 8\n 9\n-10\n+y\n 11\n 12\n 13\n");
	/* Seven: two hunks. */
	check(s, m2,
	      "@@ -1,6 +1,6 @@\n 1\n 2\n-3\n+x\n 4\n 5\n 6\n"
	      "@@ -8,7 +8,7 @@\n 8\n 9\n 10\n-11\n+y\n 12\n 13\n 14\n");
	free(s);
	free(m1);
	free(m2);
}

static void test_binary(void **state)
{
	char *d = diff_unified("/bin/x", "a\0b", 3, "a\0c", 3);

	assert_string_equal(d, "Binary files /bin/x differ\n");
	free(d);
}

/* Applies a unified diff to a and returns the result; fails the test on a
 * malformed or inconsistent diff. */
static char *apply_diff(const char *a, size_t alen, const char *d)
{
	struct buf out;
	const char *p = d, *ap = a, *aend = a + alen;
	long aline = 1;

	buf_init(&out);
	buf_puts(&out, "");
	/* Skip the headers. */
	p = strchr(p, '\n') + 1;
	p = strchr(p, '\n') + 1;
	while (*p) {
		long os, oc = 1, ns, nc = 1;

		assert_true(strncmp(p, "@@ -", 4) == 0);
		os = strtol(p + 4, (char **)&p, 10);
		if (*p == ',')
			oc = strtol(p + 1, (char **)&p, 10);
		assert_true(strncmp(p, " +", 2) == 0);
		ns = strtol(p + 2, (char **)&p, 10);
		if (*p == ',')
			nc = strtol(p + 1, (char **)&p, 10);
		(void)ns;
		(void)nc;
		p = strchr(p, '\n') + 1;
		if (oc == 0)
			os++;
		/* Copy unchanged lines up to the hunk. */
		while (aline < os) {
			const char *nl = memchr(ap, '\n', (size_t)(aend - ap));
			size_t l = nl ? (size_t)(nl - ap) + 1 : (size_t)(aend - ap);
			buf_append(&out, ap, l);
			ap += l;
			aline++;
		}
		while (*p == ' ' || *p == '-' || *p == '+' || *p == '\\') {
			const char *nl = strchr(p, '\n');
			size_t l = (size_t)(nl - p);
			bool nonl = strncmp(nl + 1, "\\ No newline", 12) == 0;

			if (*p == '\\') {
				p = nl + 1;
				continue;
			}
			if (*p == ' ' || *p == '-') {
				/* Must match a. */
				assert_true((size_t)(aend - ap) >= l - 1 + (nonl ? 0 : 1));
				assert_memory_equal(ap, p + 1, l - 1);
				ap += l - 1 + (nonl ? 0 : 1);
				aline++;
			}
			if (*p == ' ' || *p == '+') {
				buf_append(&out, p + 1, l - 1);
				if (!nonl)
					buf_puts(&out, "\n");
			}
			p = nl + 1;
		}
	}
	buf_append(&out, ap, (size_t)(aend - ap));
	return buf_steal(&out);
}

static uint64_t rnd_state = 88172645463325252ULL;
static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

static char *random_text(int max_lines, int alphabet, size_t *ret_len)
{
	struct buf b;
	int n = (int)(rnd() % (uint64_t)(max_lines + 1));

	buf_init(&b);
	buf_puts(&b, "");
	for (int i = 0; i < n; i++)
		buf_printf(&b, "%c\n", (char)('a' + rnd() % (uint64_t)alphabet));
	if (b.len && rnd() % 5 == 0)
		b.data[--b.len] = '\0';
	*ret_len = b.len;
	return buf_steal(&b);
}

static void test_random_roundtrip(void **state)
{
	for (int i = 0; i < 3000; i++) {
		size_t alen, blen;
		int alpha = 2 + (int)(rnd() % 8);
		char *a = random_text(40, alpha, &alen), *b = random_text(40, alpha, &blen);
		char *d = diff_unified("/r", a, alen, b, blen);

		if (!d) {
			assert_int_equal(alen, blen);
			assert_memory_equal(a, b, alen);
		} else {
			char *back = apply_diff(a, alen, d);
			assert_string_equal(back, b);
			free(back);
		}
		free(d);
		free(a);
		free(b);
	}
}

static void test_minimal(void **state)
{
	/* Myers' example: the LCS is 4 lines long, D = 5. */
	char *d = hunks("a\nb\nc\na\nb\nb\na\n", "c\nb\na\nb\na\nc\n");
	int plus = 0, minus = 0;

	for (const char *p = d; p && *p; p = strchr(p, '\n') + 1) {
		if (*p == '+')
			plus++;
		else if (*p == '-')
			minus++;
	}
	assert_int_equal(plus, 2);
	assert_int_equal(minus, 3);
	free(d);
}

static void test_large_fallback(void **state)
{
	/* Under the caps but entirely different: the work budget bounds the
	 * time, and the plain diff is still correct. */
	struct buf a, b;
	char *d, *back;
	int64_t start;

	buf_init(&a);
	buf_init(&b);
	for (int i = 0; i < 40000; i++) {
		buf_printf(&a, "%llu\n", (unsigned long long)(rnd() % 100000000000ULL));
		buf_printf(&b, "%llu\n", (unsigned long long)(rnd() % 100000000000ULL));
	}
	assert_true(a.len <= DIFF_MAX_BYTES && b.len <= DIFF_MAX_BYTES);
	start = time_monotonic_usec();
	d = diff_unified("/big", a.data, a.len, b.data, b.len);
	/* About 0.1 s here; generous for valgrind and sanitizers, but far
	 * from the minutes an unbounded comparison would take. */
	assert_true(time_monotonic_usec() - start < 30000000);
	back = apply_diff(a.data, a.len, d);
	assert_string_equal(back, b.data);
	free(back);
	free(d);
	buf_free(&a);
	buf_free(&b);
}

/* What diff_unified gives for sides past a cap: the summary, exactly. */
static void assert_summary_path(const char *d, const char *path, size_t alen, size_t blen)
{
	char *want = diff_summary(path, alen, blen);

	assert_non_null(d);
	assert_string_equal(d, want);
	free(want);
}

static void assert_summary(const char *d, size_t alen, size_t blen)
{
	assert_summary_path(d, "/big", alen, blen);
}

static void test_too_large(void **state)
{
	/* Lines: DIFF_MAX_LINES is shown, one more is summarised (either side,
	 * and a last line without its '\n' counts). */
	size_t n = DIFF_MAX_LINES;
	char *nl = xmalloc(n + 2);
	char *d;

	memset(nl, '\n', n + 1);
	nl[n + 1] = '\0';
	d = diff_unified("/big", "", 0, nl, n);
	assert_non_null(d);
	assert_non_null(strstr(d, "@@ -0,0 +1,50000 @@\n+\n"));
	free(d);
	assert_summary(d = diff_unified("/big", "", 0, nl, n + 1), 0, n + 1);
	free(d);
	assert_summary(d = diff_unified("/big", nl, n + 1, "x", 1), n + 1, 1);
	free(d);
	nl[n] = 'x';
	assert_summary(d = diff_unified("/big", "", 0, nl, n + 1), 0, n + 1);
	free(d);
	free(nl);
	/* 60000 lines with two changes: past the line cap. */
	struct buf a, b;

	buf_init(&a);
	buf_init(&b);
	for (int i = 0; i < 60000; i++) {
		buf_printf(&a, "line %d\n", i);
		buf_printf(&b, i == 100 || i == 59000 ? "changed %d\n" : "line %d\n", i);
	}
	assert_summary(d = diff_unified("/big", a.data, a.len, b.data, b.len), a.len, b.len);
	free(d);
	buf_free(&a);
	buf_free(&b);

	/* Bytes: DIFF_MAX_BYTES in one line is shown, one more byte is not,
	 * either side, binary or not. */
	size_t m = DIFF_MAX_BYTES;
	char *big = xmalloc(m + 1);

	memset(big, 'a', m + 1);
	d = diff_unified("/big", big, m, "b", 1);
	assert_non_null(d);
	assert_true(strncmp(d, "--- /big\n+++ /big\n@@ -1 +1 @@\n-aaaa", 35) == 0);
	free(d);
	assert_summary(d = diff_unified("/big", big, m + 1, "b", 1), m + 1, 1);
	free(d);
	assert_summary(d = diff_unified("/big", "b", 1, big, m + 1), 1, m + 1);
	free(d);
	big[5] = '\0';
	assert_summary(d = diff_unified("/big", "b", 1, big, m + 1), 1, m + 1);
	free(d);
	free(big);
	/* Equal is equal, whatever the size. */
	big = xcalloc(m + 2, 1);
	assert_null(diff_unified("/big", big, m + 2, big, m + 2));
	free(big);

	/* The summary names the file and both sizes. */
	d = diff_summary("/etc/big.txt", 0, 8386560);
	assert_string_equal(d, "Files /etc/big.txt differ (0 bytes -> 8386560 bytes): too large to show (diffs are "
			       "shown up to 1 MiB and 50000 lines)\n");
	free(d);
}

/* break3 finding 5: 8.4 million "\n" (16 MiB as JSON) against nothing, as
 * any local user's `plan` asks for. The answer costs no memory per line: in
 * a child limited to 64 MiB of address space more than now, where 24 bytes
 * per line (200 MB) could not be allocated. Not under ASan, whose shadow
 * memory does not fit such a limit. */
static void test_huge_input_bounded(void **state)
{
	size_t n = 8386560;
	char *nl = xmalloc(n);
	char *d;

	memset(nl, '\n', n);
#if !defined(__SANITIZE_ADDRESS__)
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct rlimit rl;
		FILE *f = fopen("/proc/self/statm", "r");
		unsigned long pages = 0;

		if (!f || fscanf(f, "%lu", &pages) != 1)
			_exit(2);
		fclose(f);
		rl.rlim_cur = rl.rlim_max = pages * (unsigned long)sysconf(_SC_PAGESIZE) + (64ul << 20);
		if (setrlimit(RLIMIT_AS, &rl) < 0)
			_exit(3);
		d = diff_unified("/etc/big.txt", "", 0, nl, n);
		_exit(d && strstr(d, "too large to show") && strlen(d) < 4096 ? 0 : 1);
	}
	int status = 0;

	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
#endif
	d = diff_unified("/etc/big.txt", "", 0, nl, n);
	assert_summary_path(d, "/etc/big.txt", 0, n);
	free(d);
	/* 4 MiB of lines: under the old byte cap, over the line cap. */
	d = diff_unified("/etc/big.txt", nl, n / 2, "", 0);
	assert_summary_path(d, "/etc/big.txt", n / 2, 0);
	free(d);
	free(nl);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_equal),
		cmocka_unit_test(test_gnu_cases),
		cmocka_unit_test(test_hunk_merging),
		cmocka_unit_test(test_binary),
		cmocka_unit_test(test_random_roundtrip),
		cmocka_unit_test(test_minimal),
		cmocka_unit_test(test_large_fallback),
		cmocka_unit_test(test_too_large),
		cmocka_unit_test(test_huge_input_bounded),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}

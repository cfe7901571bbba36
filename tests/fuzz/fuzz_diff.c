/* SPDX-License-Identifier: BSD-2-Clause */
/* libFuzzer target for diff_unified: the input is split in two halves, the
 * old and the new text. Checks that equal halves give NULL, that a diff
 * always starts with its two header lines (or is the summary of a side
 * past a cap), and that every hunk header's counts match the lines that
 * follow it. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/diff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t half = size / 2;
	const char *a = (const char *)data, *b = (const char *)data + half;
	size_t alen = half, blen = size - half;
	char *d = diff_unified("/f", a, alen, b, blen);

	if (alen == blen && memcmp(a, b, alen) == 0) {
		if (d)
			abort();
		return 0;
	}
	if (!d)
		abort();
	if (strncmp(d, "Binary files ", 13) == 0) {
		if (!memchr(a, '\0', alen) && !memchr(b, '\0', blen))
			abort();
		free(d);
		return 0;
	}
	if (strncmp(d, "Files /f differ (", 17) == 0) {
		/* Only for a side past a cap. */
		size_t la = 0, lb = 0;

		for (size_t i = 0; i < alen; i++)
			la += a[i] == '\n' || i == alen - 1;
		for (size_t i = 0; i < blen; i++)
			lb += b[i] == '\n' || i == blen - 1;
		if (alen <= DIFF_MAX_BYTES && blen <= DIFF_MAX_BYTES && la <= DIFF_MAX_LINES && lb <= DIFF_MAX_LINES)
			abort();
		free(d);
		return 0;
	}
	if (strncmp(d, "--- /f\n+++ /f\n", 14) != 0)
		abort();
	/* Every hunk: old count = context + '-' lines, new = context + '+'. */
	const char *p = d + 14;
	while (*p) {
		long oc = 1, nc = 1, ro = 0, rn = 0;
		char *e;

		if (strncmp(p, "@@ -", 4) != 0)
			abort();
		(void)strtol(p + 4, &e, 10);
		if (*e == ',')
			oc = strtol(e + 1, &e, 10);
		if (strncmp(e, " +", 2) != 0)
			abort();
		(void)strtol(e + 2, &e, 10);
		if (*e == ',')
			nc = strtol(e + 1, &e, 10);
		p = strchr(e, '\n') + 1;
		while (*p == ' ' || *p == '-' || *p == '+' || *p == '\\') {
			if (*p == ' ' || *p == '-')
				ro++;
			if (*p == ' ' || *p == '+')
				rn++;
			p = strchr(p, '\n') + 1;
		}
		if (ro != oc || rn != nc)
			abort();
	}
	free(d);
	return 0;
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* Unified diffs, for the plans of the file kinds (steps/step_file.c,
 * steps/step_checked_file.c): the content a step would write against the
 * content on disk. */
#pragma once

#include <stddef.h>

/* Unified diff of a and b labelled with path ("--- path", "+++ path"), 3 lines of
 * context, as `diff -u` prints it; NULL when equal. Content with a NUL byte
 * gives "Binary files path differ"; a side over DIFF_MAX_BYTES or
 * DIFF_MAX_LINES gives diff_summary() (decided before any per-line work, so
 * a diff costs O(DIFF_MAX_BYTES) memory whatever the inputs). Used by the
 * file kinds; exposed for tests. */
#define DIFF_MAX_BYTES (1u << 20)
#define DIFF_MAX_LINES 50000u
char *diff_unified(const char *path, const char *a, size_t alen, const char *b, size_t blen);
/* "Files PATH differ (ALEN bytes -> BLEN bytes): too large to show (...)\n",
 * malloc'd: what diff_unified() gives for sides too large, for callers that
 * know a side is too large without reading it. */
char *diff_summary(const char *path, size_t alen, size_t blen);

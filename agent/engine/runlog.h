/* SPDX-License-Identifier: BSD-2-Clause */
/* Run logs: log_dir/runs/<id>.log, one per run, written by the engine
 * (design.md §7); this is their reader for the control server. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Reads at most max bytes from the end of a run log, starting at a line
 * boundary when it had to cut (nothing, when the tail is one line: its
 * start, perhaps the name of a secret, is not in it). Synchronous, but
 * bounded and local: a FIFO or a symlink planted in its place is refused
 * (-EINVAL, -ELOOP) without blocking or following it. Returns 0 with *ret
 * (malloc'd, NUL-terminated, *ret_len bytes) and *ret_truncated, or a
 * negative errno (-ENOENT: no log yet). */
int runlog_read_tail(const char *path, size_t max, char **ret, size_t *ret_len, bool *ret_truncated);

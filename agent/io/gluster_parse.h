/* SPDX-License-Identifier: BSD-2-Clause */
/* The output of `gluster volume info VOLUME` (GlusterFS 10, text form):
 * "Status: Started", "Brick1: host:/path", "performance.cache-size: 256MB".
 * Pure parsing, fuzzed (tests/fuzz/fuzz_gluster.c). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define GLUSTER_BRICKS_MAX 256

struct gluster_info {
	char *status;      /* owned, NULL when absent ("Started", "Created", "Stopped") */
	char **bricks;     /* owned, "host:/path", n_bricks of them */
	size_t n_bricks;
	char *cache_size;  /* owned, performance.cache-size when reconfigured, else NULL */
};

/* Returns 0 (a reply without any field gives an empty info). */
int gluster_info_parse(const char *text, size_t len, struct gluster_info *ret);
void gluster_info_done(struct gluster_info *i);

/* Whether the output of a failed `gluster volume info VOLUME` says that the
 * volume does not exist ("Volume blobs does not exist", possibly after
 * "volume info: failed: "): the only failure that means "absent". */
bool gluster_info_says_absent(const char *text, size_t len, const char *volume);

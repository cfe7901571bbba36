/* SPDX-License-Identifier: BSD-2-Clause */
/* libFuzzer target for the `gluster volume info` parser: never crashes,
 * bounds the bricks, and every brick is a non-empty string. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/gluster_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct gluster_info i;

	if (gluster_info_parse((const char *)data, size, &i) != 0 || i.n_bricks > GLUSTER_BRICKS_MAX)
		abort();
	for (size_t k = 0; k < i.n_bricks; k++)
		if (!i.bricks[k][0])
			abort();
	gluster_info_done(&i);
	return 0;
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* libFuzzer target for io/gzip.c, the decompression every source's
 * documents go through: whatever the input, gzip_inflate returns 0 with at
 * most the cap of output (NUL-terminated), or an error with nothing
 * allocated; and a small cap never lets more through. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/gzip.h"

#define FUZZ_CAP (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *out = NULL, *small = NULL;
	size_t len = 0, small_len = 0;
	const char *why = NULL;
	int r, k;

	r = gzip_inflate(data, size, FUZZ_CAP, &out, &len, &why);
	if (r == 0) {
		if (len > FUZZ_CAP || out[len] != '\0')
			abort();
	} else if (r != -EFBIG && r != -EBADMSG && r != -ENOMEM) {
		abort();
	} else if (r == -EBADMSG && !why) {
		abort();
	}
	/* The same input under a cap of 64 bytes: the same verdict when the
	 * output fits, -EFBIG when it does not, and the same bytes. */
	k = gzip_inflate(data, size, 64, &small, &small_len, NULL);
	if (r == 0 && len <= 64 && (k != 0 || small_len != len || memcmp(small, out, len) != 0))
		abort();
	if (r == 0 && len > 64 && k != -EFBIG)
		abort();
	if (k == 0 && r != 0)
		abort();
	free(out);
	free(small);
	return 0;
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* gzip data (RFC 1952) decompressed whole with zlib, under a cap on what
 * comes out: a stack document may arrive gzip-compressed from any source
 * (a .json.gz file, an HTTP body without Content-Encoding, EC2 user-data
 * gzipped to fit its 16 KiB limit), and a few KiB of gzip can expand to
 * gigabytes. Pure functions over memory (no I/O), so they can be fuzzed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Whether data[0..len) starts with gzip's magic bytes, 1f 8b. */
bool gzip_is(const void *data, size_t len);

/* Decompresses data[0..len), one gzip member or several concatenated (what
 * `cat a.gz b.gz` and pigz make; trailing NUL padding is ignored, as gzip(1)
 * and Python's gzip do). On success *ret_data is malloc'd and
 * NUL-terminated, *ret_len at most max bytes.
 * Returns 0; -EFBIG when the output would exceed max bytes (decompression
 * stops there, so a bomb costs at most max bytes of memory); -EBADMSG when
 * data is not whole, valid gzip (a bad header, a CRC or length mismatch,
 * truncated, other bytes after it), with *ret_reason set to a static
 * string saying which (zlib's own words where it has them); -ENOMEM when
 * zlib cannot allocate its state. ret_reason may be NULL. max must be less
 * than SIZE_MAX - 1. */
int gzip_inflate(const void *data, size_t len, size_t max, char **ret_data, size_t *ret_len,
		 const char **ret_reason);

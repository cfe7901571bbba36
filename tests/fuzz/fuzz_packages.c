/* SPDX-License-Identifier: BSD-2-Clause */
/* libFuzzer target: dpkg-query output as the packages step reads it. Any
 * input gives a subset of the wanted names, in order, without a crash. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "steps/step_packages.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const wanted[] = { "libxml2-dev", "libxslt-dev", "libc6:amd64", "a", "", NULL };
	const char **missing = packages_missing((const char *)data, size, wanted);
	size_t j = 0;

	for (size_t i = 0; missing[i]; i++) {
		while (wanted[j] && wanted[j] != missing[i])
			j++;
		assert(wanted[j]);
	}
	free(missing);
	return 0;
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* libFuzzer target for front_vcl_list_parse (the output of `varnishadm
 * vcl.list`, which decides which VCLs agentd discards). Checks that it
 * never returns the name to keep, a name without the prefix,
 * or more than 64 names, and that the array is NULL-terminated. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "steps/step_vcl.h"
#include "strv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char **names = NULL;
	size_t n = front_vcl_list_parse((const char *)data, size, "agentd_", "agentd_keep", &names);

	if (!names || n > 64 || names[n])
		abort();
	for (size_t i = 0; i < n; i++) {
		if (strncmp(names[i], "agentd_", 7) != 0 || strcmp(names[i], "agentd_keep") == 0 ||
		    strpbrk(names[i], " \t\r\n"))
			abort();
	}
	strv_free(names);
	return 0;
}

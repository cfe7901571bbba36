/* SPDX-License-Identifier: BSD-2-Clause */
/* libFuzzer target: agentd.conf parsing (config_load_buffer) and the
 * normalised output of --check-config. */
#include <stdint.h>
#include <stdlib.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config c;
	char *err = NULL;

	if (config_load_buffer((const char *)data, size, &c, &err) == 0) {
		json_t *j = config_to_json(&c);
		json_decref(j);
	}
	free(err);
	config_free(&c);
	return 0;
}

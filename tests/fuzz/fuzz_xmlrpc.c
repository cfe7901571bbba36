/* SPDX-License-Identifier: BSD-2-Clause */
/* libFuzzer target: supervisord's XML-RPC replies. Any input gives a value,
 * a fault with a message, or an error with a message; never a crash, a leak
 * or undefined behaviour. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <jansson.h>

#include "io/supervisor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *v = NULL;
	int fault = 0;
	char *err = NULL;
	int r = xmlrpc_parse_response((const char *)data, size, &v, &fault, &err);

	if (r < 0)
		assert(!v && err);
	else if (fault)
		assert(!v && err);
	else {
		assert(v && !err);
		free(json_dumps(v, JSON_ENCODE_ANY));
	}
	json_decref(v);
	free(err);
	return 0;
}

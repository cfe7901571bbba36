/* SPDX-License-Identifier: BSD-2-Clause */
/* libFuzzer target for the fstab editor: the input is an fstab; setting a
 * line for a mount point must leave exactly one line for it, which reads
 * back as what was set, and setting it again must change nothing. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/fstab.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	const char *line = "UUID=1 /fuzz\\040me ext4 defaults,nofail,x-agentd 0 2";
	struct fstab_entry e;
	bool changed;
	char *out, *again;

	if (size > FSTAB_MAX || memchr(data, '\0', size))
		return 0;
	out = fstab_set(text, size, "/fuzz me", line, true, &changed);
	if (fstab_find(out, strlen(out), "/fuzz me", &e) != 1 || strcmp(e.source, "UUID=1") != 0 ||
	    !fstab_has_option(e.options, "x-agentd"))
		abort();
	fstab_entry_done(&e);
	again = fstab_set(out, strlen(out), "/fuzz me", line, true, &changed);
	if (changed || strcmp(again, out) != 0)
		abort();
	free(again);
	free(out);
	return 0;
}

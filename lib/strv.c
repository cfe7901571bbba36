/* SPDX-License-Identifier: BSD-2-Clause */
#include <stdlib.h>

#include "strv.h"
#include "util.h"

size_t strv_length(const char *const *v)
{
	size_t n = 0;

	while (v && v[n])
		n++;
	return n;
}

char **strv_dup(const char *const *v)
{
	size_t n = strv_length(v);
	char **r;

	if (!v)
		return NULL;
	r = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		r[i] = xstrdup(v[i]);
	return r;
}

void strv_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

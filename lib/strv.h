/* SPDX-License-Identifier: BSD-2-Clause */
/* NULL-terminated string vectors (argv, env, name lists), as execve(2) takes
 * them: an array of malloc'd strings ending with NULL, itself malloc'd. */
#pragma once

#include <stddef.h>

/* The number of strings before the NULL; 0 for NULL. */
size_t strv_length(const char *const *v);
/* A deep copy (array and strings; aborts on ENOMEM like xmalloc), or NULL
 * when v is NULL. */
char **strv_dup(const char *const *v);
/* Frees each string, then the array; NULL is a no-op. */
void strv_free(char **v);

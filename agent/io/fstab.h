/* SPDX-License-Identifier: BSD-2-Clause */
/* fstab(5) text, as the storage steps keep it: one line per mount point,
 * edited in place, comments and other lines left exactly as they were.
 * Pure functions over strings (no I/O), so they can be fuzzed. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define FSTAB_MAX (1u << 20) /* a longer fstab is refused */

/* The option agentd adds to the fstab lines it owns: "x-" options are for
 * userspace tools and ignored by mount(8) and the kernel (libmount never
 * passes them on), so the marker costs nothing and tells shutdown what is
 * agentd's to unmount. */
#define FSTAB_OWNER_OPTION "x-agentd"

struct fstab_entry {
	char *source;  /* owned, unescaped */
	char *target;  /* owned, unescaped */
	char *fstype;  /* owned */
	char *options; /* owned */
};
void fstab_entry_done(struct fstab_entry *e);

/* Splits one fstab line into its fields (octal escapes like \040 decoded).
 * Returns 1 with *ret filled, 0 for a blank or comment line or a line with
 * fewer than two fields, -ENOMEM never (aborts). */
int fstab_parse_line(const char *line, size_t len, struct fstab_entry *ret);

/* Writes s escaped for a field (space, tab, newline, backslash and '#' as
 * \ooo) into a malloc'd string. */
char *fstab_escape(const char *s);

/* The first entry whose mount point is target; returns 1 and fills *ret,
 * or 0. */
int fstab_find(const char *text, size_t len, const char *target, struct fstab_entry *ret);

/* Whether text has a line for target without FSTAB_OWNER_OPTION (someone
 * else's): 1 and its source in *ret_source (malloc'd, when non-NULL), or 0. */
int fstab_find_foreign(const char *text, size_t len, const char *target, char **ret_source);

/* text with agentd's line for target replaced by line (which has no
 * newline): the first line for target that carries FSTAB_OWNER_OPTION is
 * replaced, later ones of agentd's are dropped, and line is appended when
 * there was none. Lines for target without the marker are someone else's
 * and kept as they are, unless take_foreign (then they are treated as
 * agentd's). *ret_changed says whether the result differs. Returns a
 * malloc'd NUL-terminated string. */
char *fstab_set(const char *text, size_t len, const char *target, const char *line, bool take_foreign,
		bool *ret_changed);

/* Whether the comma-separated list opts has option name (exactly). */
bool fstab_has_option(const char *opts, const char *name);

/* SPDX-License-Identifier: BSD-2-Clause */
/* The "fetch" step: a .tar.gz fetched over HTTP(S) by libcurl (optionally
 * with basic auth) and unpacked into a directory inside root, once: when the
 * directory is empty, or, with purge, when the URL differs from the one
 * recorded there (its contents are replaced). Used for
 * buildout_cache_archives (reference §3 buildout_setup step 6). */
#pragma once

#include <stdbool.h>

struct plan;
struct step;

struct fetch_step_opts {
	const char *url;
	const char *dir;       /* absolute, inside root; created when missing */
	const char *userpwd;   /* "user:password", may be NULL */
	const char *user;      /* tar runs as this user, may be NULL */
	bool purge;
	long timeout_sec;
};

struct step *plan_add_fetch(struct plan *p, const struct fetch_step_opts *o, char **ret_error);

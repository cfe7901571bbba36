/* SPDX-License-Identifier: BSD-2-Clause */
/* The "packages" step: OS packages installed only when dpkg says they are
 * missing (reference §3 buildout_setup step 1). It runs the configured
 * package_query_command with the names, reads "<name> <status>" lines, and
 * runs package_install_command with the names not "installed"; unchanged
 * (after one query) when none is missing. */
#pragma once

#include <stddef.h>

struct plan;
struct step;

struct packages_step_opts {
	const char *const *names;       /* NULL-terminated */
	const char *const *query_argv;  /* NULL-terminated; the names are appended */
	const char *const *install_argv;
	long timeout_sec;
};

struct step *plan_add_packages(struct plan *p, const struct packages_step_opts *o, char **ret_error);

/* The names of wanted (NULL-terminated) that output does not report as
 * "installed": a NULL-terminated malloc'd array of borrowed strings from
 * wanted (free the array only). Lines other than "<name> <status>" are
 * ignored (dpkg-query's complaints about unknown names). Exposed for tests
 * and the fuzzer. */
const char **packages_missing(const char *output, size_t len, const char *const *wanted);

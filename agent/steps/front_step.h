/* SPDX-License-Identifier: BSD-2-Clause */
/* Step kinds of the front-end family (agent/recipes/front.c).
 *
 * "checked-file": a config file that replaces the live one only after the
 * real binary accepted it. The content is written to a temporary file next
 * to the live one (inside root), the checker argv runs on it ("{}" in the
 * argv is replaced by the candidate's path on the host, root + path), and
 * only when the checker exits 0 is the candidate renamed over the live
 * file. A failed check fails the step with the checker's output and leaves
 * the live file, and so the running service, alone. Content equal to the
 * live file is "unchanged" and runs no checker.
 *
 * "varnish-vcl": loads a VCL file into a running varnishd under a unique
 * name (vcl.load), makes it active (vcl.use) and discards the older VCLs
 * agentd loaded (vcl.list, vcl.discard), all through the varnishadm argv. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct plan;
struct step;

struct front_file_opts {
	const char *path;          /* absolute, on the managed system */
	const char *content;
	size_t len;
	mode_t mode;
	char *const *check_argv;   /* NULL-terminated; "{}" becomes the candidate's (or the wrapper's) host path */
	/* Optional: a second temporary file whose content is this text with
	 * "{}" replaced by the candidate's host path; then "{}" in check_argv
	 * names it instead (nginx checks a main config that includes the
	 * site, not the site alone). */
	const char *wrapper;
	long timeout_sec;
};
struct step *front_add_checked_file(struct plan *p, const struct front_file_opts *o, char **ret_error);

/* varnishadm: the argv prefix (e.g. ["varnishadm", "-T", "addr", "-S", "secret"]);
 * vcl_path: the VCL on the managed system (given to varnishd as root + path);
 * name: the unique name to load it under; prefix: names starting with it
 * are agentd's and are discarded once not active. */
struct step *front_add_varnish_vcl(struct plan *p, char *const *varnishadm, const char *vcl_path, const char *name,
				   const char *prefix, long timeout_sec, char **ret_error);

/* Parses `varnishadm vcl.list` output: the names of VCLs that start with
 * prefix, are "available" (not active, not already discarded) and are not
 * keep. Returns the count and a
 * malloc'd NULL-terminated array of malloc'd names (free with
 * front_strv_free), at most 64. Exposed for tests and the fuzzer. */
size_t front_vcl_list_parse(const char *out, size_t len, const char *prefix, const char *keep, char ***ret_names);
void front_strv_free(char **v);

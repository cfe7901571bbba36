/* SPDX-License-Identifier: BSD-2-Clause */
/* A step kind of the front-end family (agent/recipes/front.c).
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
 * A checker may also be the loader (the varnish recipe: `varnishadm vcl.load
 * NAME {}` compiles the candidate in the running varnishd, which refuses a
 * bad VCL and keeps its active one, so that VCL is compiled once, issue 12).
 * When such a checker cannot check (exits fallback_status: varnishadm's 2,
 * varnishd not reachable), fallback_argv checks instead (`varnishd -C -f
 * {}`), so that a file the real binary refuses is still never written. */
#pragma once

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
	/* Optional: run instead of check_argv (same "{}") when check_argv
	 * exits with status fallback_status (> 0); check_argv's output is
	 * noted in the run's output. */
	char *const *fallback_argv;
	int fallback_status;
};
struct step *front_add_checked_file(struct plan *p, const struct front_file_opts *o, char **ret_error);

/* SPDX-License-Identifier: BSD-2-Clause */
/* A step kind of the front-end family (agent/recipes/front.c).
 *
 * "varnish-vcl": makes the VCL loaded under a unique name active (vcl.use)
 * and discards the older VCLs agentd loaded (vcl.list, vcl.discard), all
 * through the varnishadm argv. The check before it (the checked-file step
 * of the VCL) normally loaded it already with `varnishadm vcl.load`, so
 * that varnishd compiles each VCL once (issue 12); when varnishd refuses
 * the vcl.use (it does not know the name: it was not reachable at the
 * check, or this step is owed by an earlier run), the step loads the file
 * at vcl_path under that name (vcl.load) and uses it then. The step's
 * target is vcl_path. */
#pragma once

#include <stddef.h>

struct plan;
struct step;

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
 * strv_free, lib/strv.h), at most 64. Exposed for tests and the fuzzer. */
size_t front_vcl_list_parse(const char *out, size_t len, const char *prefix, const char *keep, char ***ret_names);

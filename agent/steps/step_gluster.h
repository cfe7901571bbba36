/* SPDX-License-Identifier: BSD-2-Clause */
/* Step "gluster": the shared-blobs GlusterFS volume, on the first peer
 * (reference §6 `gluster`). Runs the gluster CLI (uv_spawn, argv, never a
 * shell) one command after another:
 *   volume info V                         exists?
 *   no:  peer probe P (each other peer), volume create V [replica N]
 *        P:BRICK... force, volume start V
 *   yes: for peers whose brick is missing: peer probe, volume add-brick V
 *        replica N BRICKS force, volume heal V full; volume start V unless
 *        Started; volume set V performance.cache-size 256MB unless set.
 * "force" because the brick usually sits on the root or an EBS file system's
 * top directory, which gluster otherwise refuses. */
#pragma once

struct plan;
struct step;

struct gluster_spec {
	const char *volume;
	const char *brick;              /* brick directory as on the managed system (resolved under root) */
	const char *const *peers;       /* addresses, NULL-terminated; peers[0] is this instance */
	const char *const *command;     /* the gluster CLI argv prefix (config gluster_command) */
};

struct step *plan_add_gluster(struct plan *p, const struct gluster_spec *spec, char **ret_error);

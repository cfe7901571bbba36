/* SPDX-License-Identifier: BSD-2-Clause */
/* Step "ec2_snapshot": EBS snapshots of this instance's volumes through
 * EC2's Query API (io/ec2.h; design.md §8.1, the ebs_snapshots job).
 *
 * 1. Credentials: the stack's (aws_key/aws_secret), else the IMDS role's;
 *    region: the stack's, else the config's aws_region, else IMDS's.
 * 2. For each volume (its id given, or found at run time from its mapping
 *    name through the NVMe serial in /sys/block/<dev>/device/serial), one
 *    listing (DescribeSnapshots, Owner self, Filter volume-id, every page):
 *    a `pending` snapshot skips the volume.
 * 3. CreateSnapshot with description "<hostname>: automated snapshot of
 *    <device> (<volume id>)" and tags Name "<hostname> (<device>)",
 *    Hostname, agentd:stack, agentd:job = ebs_snapshots. With freeze, the
 *    mounted ext4/xfs file system (never "/") is frozen by a child
 *    (util-linux fsfreeze --freeze) before the call and thawed (FITHAW from
 *    agentd itself) as soon as the call returns or freeze_timeout passes,
 *    whichever comes first; a freeze child still running at the deadline is
 *    killed, and the file system thawed again when it exits.
 * 4. Prune: that volume's `completed` snapshots whose agentd:stack and
 *    agentd:job tags are ours, oldest startTime first, beyond keep (the new
 *    one counts). InvalidSnapshot.InUse (an AMI uses it) is skipped: it
 *    stays, one more than keep, and the rest go on. Snapshots without both
 *    tags are never deleted.
 *
 * Status: changed when a snapshot was created or deleted; unchanged when
 * every volume was skipped; failed naming the volume, the action and EC2's
 * Code and Message. AuthFailure and credential errors stop the step at once
 * (the other volumes would fail alike). The secret is in the step's data
 * only: never in its target, its plan line, its output or its error. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct plan;
struct step;

struct ec2_snapshot_volume {
	const char *volume_id;   /* "vol-...", or NULL: found from device at run time */
	const char *device;      /* mapping name ("/dev/sdf"), for the description and tags */
	const char *mount_point; /* may be NULL (nothing to freeze) */
};

struct ec2_snapshot_opts {
	const struct ec2_snapshot_volume *volumes;
	size_t n_volumes;
	const char *hostname;
	const char *stack_name;    /* agentd:stack; NULL: "" */
	long keep;                 /* 1..1000 */
	bool freeze;
	long freeze_timeout_sec;   /* >= 1 */
	const char *region;        /* NULL: from IMDS */
	const char *endpoint;      /* NULL: https://ec2.<region>.amazonaws.com */
	const char *imds_endpoint; /* "http://169.254.169.254" */
	const char *aws_key;       /* both or neither; neither: the IMDS role */
	const char *aws_secret;
	const char *const *fsfreeze_argv; /* NULL: {"fsfreeze"}; "--freeze MOUNTPOINT" are appended */
	long backoff_min_ms;       /* 0: io/ec2.h's default */
};

/* Returns the step (target: the volumes, "vol-a /dev/sdg ..."), or NULL
 * with *ret_error. */
/* Thaws what an agentd killed during a freeze left frozen: each mount
 * point named under state_dir/freeze (written before FIFREEZE, removed once
 * thawed) gets FITHAW (EINVAL, not frozen, is fine), is logged, and its
 * entry removed. Called once at start, before any run. */
void ec2_snapshot_thaw_left(const char *state_dir);

struct step *plan_add_ec2_snapshot(struct plan *p, const struct ec2_snapshot_opts *o, char **ret_error);

/* Which of n snapshots (all of one volume) a prune deletes to keep `keep`
 * with one new snapshot on top: indexes into v, oldest first, among the
 * `completed` ones tagged agentd:stack = stack and agentd:job = job.
 * Returns the count; *ret (malloc'd) gets the indexes. */
struct ec2_snapshot;
size_t ec2_snapshot_prune_pick(const struct ec2_snapshot *v, size_t n, const char *stack, const char *job, long keep,
			       size_t **ret);

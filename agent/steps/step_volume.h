/* SPDX-License-Identifier: BSD-2-Clause */
/* Step "volume": one EBS data volume (design.md §2 agent.volumes, ebs.devices)
 * brought to "mounted, with its fstab line".
 *
 * 1. Find the device inside root: by volume id, the udev links
 *    /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<hex> and its -ns-1
 *    form, then the NVMe serial in /sys/block/<dev>/device/serial; by mapping
 *    name, /dev/sdX and /dev/xvdX alike. A timer on the loop polls for it
 *    until device_timeout (a volume attached late appears a bit later).
 * 2. Probe it with libblkid (worker thread). A filesystem or a partition
 *    table means "not blank": it is never formatted. A blank device is
 *    formatted with mkfs_command (uv_spawn) only when "mkfs" is true.
 * 3. Mount it and keep its fstab line by UUID with nofail (mount_ensure). */
#pragma once

#include <stdbool.h>

struct plan;
struct step;

struct volume_spec {
	const char *volume_id;   /* may be NULL */
	const char *device;      /* mapping name, may be NULL (one of the two is set) */
	const char *mount_point;
	const char *fstype;      /* for mkfs; NULL: "ext4" */
	const char *options;     /* mount options; NULL: "defaults" */
	bool mkfs;
	bool force;
	long timeout_ms;         /* waiting for the device */
	const char *const *mkfs_argv; /* argv prefix; "-t FSTYPE DEVICE" are appended */
};

struct step *plan_add_volume(struct plan *p, const struct volume_spec *spec, char **ret_error);

/* The by-id names and mapping names a volume is looked for under, in order
 * (NULL-terminated, malloc'd strings in a malloc'd array). */
char **volume_candidates(const char *volume_id, const char *device);

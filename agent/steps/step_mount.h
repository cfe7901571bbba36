/* SPDX-License-Identifier: BSD-2-Clause */
/* Steps "mount" and "unmount" (design.md §6), with libmount, and the
 * blocking mount logic the "volume" step shares.
 *
 * A mount can run a helper (mount.nfs, mount.glusterfs) that waits on the
 * network, so the work is done in a libuv threadpool thread (uv_queue_work)
 * and the loop never blocks; libmount forks and waits for the helper there.
 * A helper that hangs holds that thread until it gives up on its own; the
 * step cannot be cancelled meanwhile (documented in doc/storage.md).
 *
 * The mount point is resolved inside root (lib/rootfs.h), so it cannot
 * escape it through a symlink; the fstab entry is kept in root/etc/fstab,
 * one line per mount point, marked with FSTAB_OWNER_OPTION so that an
 * unmount step only ever unmounts what agentd mounted. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

struct plan;
struct step;

struct mount_spec {
	const char *source;        /* what mount(2)/the helper gets ("host:/srv/exports", a device path) */
	dev_t devno;               /* block device source: match an existing mount by device number; 0: by source */
	const char *target;        /* the mount point as on the managed system */
	const char *fstype;
	const char *options;       /* mount options, may be NULL */
	const char *fstab_source;  /* the fstab line's source (e.g. "UUID=..."), NULL: source */
	const char *fstab_options; /* the fstab line's options (FSTAB_OWNER_OPTION is added), NULL: options */
	int fstab_pass;            /* fsck pass */
	bool force;                /* mount over a non-empty directory */
};

/* Blocking (call from a worker thread): mounts spec under root unless it is
 * already mounted there, refusing a non-empty directory without force and a
 * mount point that holds something else; then keeps the fstab line.
 * *ret_changed is set when anything changed. Returns 0, or a negative errno
 * with *ret_error (malloc'd). */
int mount_ensure(const char *root, const struct mount_spec *spec, bool *ret_changed, char **ret_error);

/* Whether target (inside root) is a mount point now; the mounted source in
 * *ret_source (malloc'd, may be NULL). Returns 1, 0, or a negative errno. */
int mount_lookup(const char *root, const char *target, char **ret_source);

/* A mount step: copies spec. Returns the step, or NULL with *ret_error when
 * the target is not a safe absolute path. */
struct step *plan_add_mount(struct plan *p, const struct mount_spec *spec, char **ret_error);
/* An unmount step: unmounts target when it is mounted and its fstab line
 * is agentd's (FSTAB_OWNER_OPTION); keeps the fstab line (the next setup
 * mounts it again) unless drop_fstab. */
struct step *plan_add_unmount(struct plan *p, const char *target, bool drop_fstab, char **ret_error);

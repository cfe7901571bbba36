/* SPDX-License-Identifier: BSD-2-Clause */
/* What the storage family offers the app recipes. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

struct plan;
struct recipe_ctx;
struct stack_app;

/* Client side of shared blobs (reference §6 `blob_mounts`), called by the
 * instances and zeoserver recipes when their section (plone_instances or
 * plone_zeoserver) has nfs_blobs or gluster_blobs true: plans the blob
 * directories, the mount of the shared storage (nothing, with a note, while
 * no server is known) and the link deploy_to/shared/var/blobstorage to the
 * mounted directory. Returns 0, or a negative errno with *ret_error. */
int storage_plan_blob_mounts(const struct recipe_ctx *ctx, const struct stack_app *app, const json_t *section,
			     struct plan *plan, char **ret_error);

/* The ZEO server's file storage (reference §7): plone_zeoserver.filestorage_dir
 * (default <ephemeral_mount_point>/shared/zodb/filestorage), mode 0700, owned
 * by the app's user and group, and the link deploy_to/shared/var/filestorage
 * to it. Called by blob_mounts for the zeoserver layer; the zeoserver recipes
 * may call it too. Returns 0, or a negative errno with *ret_error. */
int storage_plan_filestorage(const struct recipe_ctx *ctx, const struct stack_app *app, const json_t *section,
			     struct plan *plan, char **ret_error);

struct config;
struct stack;

/* What a data directory holds. Directories of one kind may nest (the
 * blobs: plone_blobs.blob_dir, the blob mount, the NFS export, the GlusterFS
 * brick); of two kinds never. */
enum storage_kind {
	STORAGE_FILESTORAGE, /* Data.fs */
	STORAGE_BLOBS,
	STORAGE_SOLR,
	STORAGE_VOLUME,      /* a volume's mount point: an app may live below it */
	STORAGE_AGENTD,      /* agentd's own: state_dir, log_dir */
	STORAGE_SUPERVISOR,  /* supervisor's program files and logs (other programs' files may be there) */
};

/* A directory whose content agentd keeps for the stack and must never
 * remove with an app's tree (storage_data_dirs). */
struct storage_dir {
	char *path;            /* owned, normal form */
	char *what;            /* owned: what it is, for messages, e.g.
	                        * "the file storage (plone_zeoserver.filestorage_dir, default)" */
	const char *json_path; /* static: the key that set it ("$.plone_solr.data_dir"), NULL for a default */
	enum storage_kind kind;
};

struct storage_dirs {
	struct storage_dir *v; /* owned */
	size_t n;
};

/* The effective data directories of stack s on its instance, defaults
 * included: every one that a recipe the stack names (any layer, any event)
 * creates, links to, exports or mounts: plone_zeoserver / plone_instances
 * filestorage_dir (default <eph>/shared/zodb/filestorage), plone_blobs.blob_dir,
 * the shared blob mount <eph>/shared/blobs, the NFS export /srv/exports, the
 * GlusterFS brick <eph>/gluster-exports, plone_solr.data_dir (default
 * <eph>/shared/solr), this instance's volume mount points (agent.volumes,
 * ebs.devices), and agentd's own directories (c's state_dir and log_dir,
 * supervisor_conf_dir, /var/log/supervisor; with c NULL, none of these).
 * <eph> is c's ephemeral_mount_point (c NULL: "/mnt"). The one
 * list both validation and an undeploy's absent step use. Free with
 * storage_dirs_free(). */
void storage_data_dirs(const struct stack *s, const struct config *c, struct storage_dirs *ret);
void storage_dirs_free(struct storage_dirs *d);

/* For the family's own files (storage.c, storage_validate.c). */
/* The family's validate hook (recipe_family.validate): agent.volumes,
 * ebs.devices, the data directories and the shared blobs. Returns 0 or
 * -EINVAL with err. */
struct stack_error;
int storage_validate(const struct stack *s, struct stack_error *err);
/* Its first part: the shape of agent.volumes (hosts, keys, types, one mount
 * point, device and volume id once per host) and of ebs.devices. */
int storage_validate_shape(const struct stack *s, struct stack_error *err);
/* A host name or address as a mount source or gluster argument:
 * [A-Za-z0-9.:_-], not starting with '-', at most 253 bytes. */
bool storage_host_is_valid(const char *s);
/* The name a device is compared by (malloc'd): /dev/sdX and /dev/xvdX are
 * one device. */
char *storage_device_key(const char *dev);
/* plone_blobs.layer, or "shared_blobs" (borrowed). */
const char *storage_blobs_layer(const struct stack *s);

/* SPDX-License-Identifier: BSD-2-Clause */
/* What the storage family offers the app recipes. */
#pragma once

#include <jansson.h>

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

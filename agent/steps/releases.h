/* SPDX-License-Identifier: BSD-2-Clause */
/* The releases of an app: the entries of its deploy_to/releases, named by
 * the release step with UTC timestamps ("20261103000000"), so that sorting
 * the names sorts them by time. Shared by the release step (pruning) and the
 * rollback step (the release before current). */
#pragma once

/* The names in the directory rfd (any fd of it, O_PATH included: it is
 * reopened as "." here, so rfd stays the caller's), without those that
 * start with "." (temporary names, "." and ".."), sorted by strcmp: oldest
 * first. Returns 0 with a malloc'd NULL-terminated vector in *ret_names
 * (strv_free; empty when there are none), or a negative errno (openat,
 * fdopendir). Names are the app user's: escape them for messages. */
int releases_list(int rfd, char ***ret_names);

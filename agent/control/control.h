/* SPDX-License-Identifier: BSD-2-Clause */
/* The control socket server (design.md §5): NDJSON requests, method table
 * with privilege flags, identity from SO_PEERCRED, limits on clients, request
 * size, idle time and output queues. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>
#include <uv.h>

#include <jansson.h>

#include "proto.h"

struct config;
struct engine;
struct control;

/* listen_fd >= 0 is a socket passed by systemd (socket activation);
 * otherwise the server creates config->socket (mode 0666: read-only methods
 * are open to every local user; privilege is checked per method). */
int control_new(uv_loop_t *loop, const struct config *config, struct engine *engine, int listen_fd,
		struct control **ret);
/* Closes the listener and every client; frees itself after the handles close. */
void control_free(struct control *c);
/* Who may call method m: PROTO_OPEN or PROTO_PRIV (also for a method that
 * does not exist, which is refused before this is asked). */
enum proto_priv control_method_priv(enum proto_method m);
/* The one place that decides what a caller sees of a plan's diffs: plan
 * is engine_plan()'s result (see plan_describe()), changed in place. For a
 * caller that is not privileged, the diff of a secret step reads "(diff
 * hidden: contains secrets)" and that of a file that is not world-readable
 * "(diff hidden: the file is not world-readable)"; then, for every caller,
 * the diffs past PLAN_DIFFS_MAX of JSON text together read
 * PLAN_DIFFS_NOTE. The members for this (diff_secret, diff_private,
 * diff_cost) are removed. */
void control_plan_view(json_t *plan, bool privileged);

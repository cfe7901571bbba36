/* SPDX-License-Identifier: BSD-2-Clause */
/* The control socket server (design.md §5): NDJSON requests, method table
 * with privilege flags, identity from SO_PEERCRED, limits on clients, request
 * size, idle time and output queues. */
#pragma once

#include <sys/types.h>
#include <uv.h>

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

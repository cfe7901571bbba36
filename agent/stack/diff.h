/* SPDX-License-Identifier: BSD-2-Clause */
/* The diff of two stack models into the triggers of design.md §3: which
 * events run, for which layer and app, after a stack change. Nothing here
 * does I/O. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "event.h"

struct stack;

/* A trigger produced by a stack change. */
struct trigger {
	enum event event;
	char *layer;            /* owned, NULL for every layer of the instance */
	char *app;              /* owned, NULL for none */
	bool use_old_stack;     /* plan against the previous stack (the layer is gone from the new one) */
};

/* Triggers that take an instance from old (NULL: first start) to new, in the
 * order they must run, per design.md §3. Returns 0 and a malloc'd array
 * (free with triggers_free) and its length, 0 triggers when nothing relevant
 * changed; -EINVAL when new is NULL. */
int stack_diff(const struct stack *old, const struct stack *new, struct trigger **ret, size_t *ret_n);
void triggers_free(struct trigger *t, size_t n);

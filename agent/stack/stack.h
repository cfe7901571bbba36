/* SPDX-License-Identifier: BSD-2-Clause */
/* The stack document: parse, validate the whole of it (design.md §2) into a
 * read-only, reference-counted model, and diff two models into the triggers
 * of design.md §3. Nothing here does I/O. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"

#define STACK_MAX_BYTES (16 * 1024 * 1024)
/* Bounds on the work one document may cause (design.md §2), checked on the
 * bytes before the JSON tree is built: every value and every object key is
 * an element, every array or object a level. A real stack (100 instances,
 * 10000 agent.files entries) stays well below both; 16 MiB of small
 * integers (8 million values, some 340 MB as a tree) does not. */
#define STACK_MAX_ELEMENTS 200000
#define STACK_MAX_DEPTH 64

/* Where validation failed: a JSON path like "$.deploy.myapp.deploy_to" or
 * "$.agent.layers.web.setup[2]", and a sentence saying what is wrong. */
struct stack_error {
	char path[512];
	char message[512];
};

struct stack_member {
	char *hostname;         /* owned */
	const char *private_ip; /* borrowed from the document, may be NULL */
	const char *private_dns_name;
	const char *public_dns_name;
	const char *ip;
	const char *status;     /* may be NULL */
	long backends;          /* -1 when absent */
	bool online;            /* status == "online" */
	bool self;              /* this is the instance the agent runs on */
};

struct stack_layer {
	char *shortname;        /* owned, valid name */
	const char *name;       /* borrowed, may be NULL */
	struct stack_member *members; /* owned, document order */
	size_t n_members;
	bool has_self;          /* this instance is a member (or listed in opsworks.instance.layers) */
};

struct stack_app {
	char *name;             /* owned, valid name (the deploy.<app> key) */
	const json_t *json;     /* borrowed: deploy.<app> */
	char *deploy_to;        /* owned, absolute; default /srv/www/<app> */
	char *user;             /* owned; default "deploy" */
	char *group;            /* owned; default "www-data" */
	long keep_releases;     /* default 5 */
};

struct stack {
	unsigned refcount;
	json_t *root;           /* owned: the whole validated document */
	char revision[17];      /* hex FNV-1a 64 of the canonical document */
	const char *name;       /* borrowed: opsworks.stack.name, may be NULL */
	char *instance;         /* owned: this instance's hostname */
	struct stack_layer *layers; /* owned: every layer, document order */
	size_t n_layers;
	char **self_layers;     /* owned: shortnames of this instance's layers, in order */
	size_t n_self_layers;
	struct stack_app *apps; /* owned: deploy.<app>, document order */
	size_t n_apps;
	const json_t *self;     /* borrowed: opsworks.instance or this instance's member entry, may be NULL */
};

/* Parses and validates data. instance is this instance's hostname (from the
 * config or gethostname()); opsworks.instance.hostname wins when present.
 * Every path-valued field is stored in its normal form (path_normalize():
 * no "//", no trailing "/"), in the model and in root, so that later code
 * compares paths with strcmp() and path_is_under() only; "." and ".."
 * components are refused. Returns 0 and a model with refcount 1, or
 * -EINVAL/-EFBIG/-E2BIG (over STACK_MAX_ELEMENTS or STACK_MAX_DEPTH)/-ENOMEM
 * and fills err (when non-NULL). */
int stack_parse(const char *data, size_t len, const char *instance, struct stack **ret, struct stack_error *err);
struct stack *stack_ref(struct stack *s);
void stack_unref(struct stack *s);

const struct stack_layer *stack_layer_find(const struct stack *s, const char *shortname);
const struct stack_app *stack_app_find(const struct stack *s, const char *name);
bool stack_has_self_layer(const struct stack *s, const char *shortname);

/* The recipe names for (layer, event): agent.layers.<layer>.<event> when the
 * layer has an entry, else the built-in default mapping for well-known
 * shortnames (reference §1), else none. Returns a malloc'd array of borrowed
 * strings (free only the array) and its length. */
const char **stack_layer_recipes(const struct stack *s, const char *layer, enum event ev, size_t *ret_n);

/* agent.recipes.<name>, or NULL. */
const json_t *stack_custom_recipe(const struct stack *s, const char *name);

/* A trigger produced by a stack change. */
struct trigger {
	enum event event;
	char *layer;            /* owned, NULL for every layer of the instance */
	char *app;              /* owned, NULL for none */
	bool use_old_stack;     /* plan against the previous stack (the layer is gone from the new one) */
};

/* Triggers that take an instance from old (NULL: first start) to new, in the
 * order they must run, per design.md §3. Returns a malloc'd array (free with
 * triggers_free) and its length; 0 triggers when nothing relevant changed. */
int stack_diff(const struct stack *old, const struct stack *new, struct trigger **ret, size_t *ret_n);
void triggers_free(struct trigger *t, size_t n);

/* The JSON handed to custom recipes on stdin: the document as is. */
char *stack_dump(const struct stack *s, size_t *ret_len);

/* Helpers for validators (stack.c, recipe validate hooks): JSON paths and
 * error messages in one style. A key made only of [A-Za-z0-9_-] is appended
 * as ".key", any other as "[\"key\"]" (JSON-quoted), so paths stay
 * unambiguous. Output is truncated to size. */
void stack_path_key(char *out, size_t size, const char *parent, const char *key);
void stack_path_index(char *out, size_t size, const char *parent, size_t i);
/* s JSON-quoted and shortened to about 80 bytes, for messages; returns out. */
const char *stack_quote(char *out, size_t size, const char *s);
/* What is wrong with p as an absolute path (path_is_safe_absolute()), to
 * follow the key's JSON path: "must be an absolute path without \"..\"
 * components ...", "... without \".\" components ...", "..., starting with
 * \"/\"", control characters, length. NULL when p is fine. Static. */
const char *stack_path_problem(const char *p);
/* Fills err (when non-NULL) and returns -EINVAL. */
int stack_error_set(struct stack_error *err, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

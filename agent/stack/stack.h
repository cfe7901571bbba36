/* SPDX-License-Identifier: BSD-2-Clause */
/* The stack document: parse and validate the document's own shape
 * (design.md §2: opsworks, deploy, the Custom JSON sections) into a
 * read-only, reference-counted model, and the queries on it. What the
 * recipes read (agent.*, ebs, the sections' values) is validated by the
 * recipe registry (recipes_validate()), which whoever loads a stack calls
 * after stack_parse(). The typed checks are in check.h, the diff of two
 * models in diff.h; both are included here for the model's users. Nothing
 * here does I/O. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"
#include "check.h"
#include "diff.h"

#define STACK_MAX_BYTES (16 * 1024 * 1024)
/* Bounds on the work one document may cause (design.md §2), checked on the
 * bytes before the JSON tree is built: every value and every object key is
 * an element, every array or object a level. A real stack (100 instances,
 * 10000 agent.files entries) stays well below both; 16 MiB of small
 * integers (8 million values, some 340 MB as a tree) does not. */
#define STACK_MAX_ELEMENTS 200000
#define STACK_MAX_DEPTH 64

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
 * An FQDN that no layer lists as a member is looked up by its first label
 * ("web1.eu-west-1.compute.internal" -> "web1"); the name found is
 * s->instance (design.md §3 Identity).
 * Every path-valued field is stored in its normal form (path_normalize():
 * no "//", no trailing "/"), in the model and in root, so that later code
 * compares paths with strcmp() and path_is_under() only; "." and ".."
 * components are refused. Returns 0 and a model with refcount 1, or
 * -EINVAL/-EFBIG/-E2BIG (over STACK_MAX_ELEMENTS or STACK_MAX_DEPTH)/-ENOMEM
 * and fills err (when non-NULL). agent.* and ebs are left to
 * recipes_validate(). */
int stack_parse(const char *data, size_t len, const char *instance, struct stack **ret, struct stack_error *err);
struct stack *stack_ref(struct stack *s);
void stack_unref(struct stack *s);

const struct stack_layer *stack_layer_find(const struct stack *s, const char *shortname);
const struct stack_app *stack_app_find(const struct stack *s, const char *name);
bool stack_has_self_layer(const struct stack *s, const char *shortname);
/* Makes layers (NULL-terminated shortnames, agentd.conf's `layers`) this
 * instance's layers, whatever the members say: for a model just loaded,
 * before it is shared. Layers the document does not have are kept (their
 * recipes come from agent.layers or the defaults). */
void stack_assign_layers(struct stack *s, const char *const *layers);
/* Whether a and b place this instance alike: the same name and the same
 * set of layers (design.md §3 Identity). */
bool stack_same_identity(const struct stack *a, const struct stack *b);

/* agent.recipes.<name>, or NULL. */
const json_t *stack_custom_recipe(const struct stack *s, const char *name);

/* The JSON handed to custom recipes on stdin: the document as is. */
char *stack_dump(const struct stack *s, size_t *ret_len);

/* A member address as rendered files may carry it: a host name or an
 * IPv4/IPv6 address, [A-Za-z0-9.:-], not starting with '-' (it would read
 * as an option), at most 253 bytes. Used by the stack's members and by the
 * registrations of the effective stack (stack/effective.c). */
bool stack_address_is_plain(const char *s);

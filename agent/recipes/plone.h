/* SPDX-License-Identifier: BSD-2-Clause */
/* What the Plone families (apps, storage, front end) share: the seeds'
 * Custom JSON sections, discovery of peers, and the client count, which
 * must be the same number wherever it is used (reference §5: the original
 * cookbook computed it twice, differently). Pure functions of the stack
 * model, no I/O beyond asking the kernel how many CPUs this process may
 * use. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

struct stack;
struct stack_member;
struct stack_layer;

#define PLONE_CLIENTS_MAX 64     /* ports 8081..8144 */
#define PLONE_CLIENT_PORT_BASE 8080

/* A top-level Custom JSON section ("plone_instances", "plone_zeoserver",
 * ...) when it is an object, else NULL. */
const json_t *plone_section(const struct stack *s, const char *key);

/* CPUs this process may run on (sched_getaffinity, like nproc), at least 1. */
long plone_cpu_count(void);

/* The number of Zope clients member m of the app layer runs:
 * plone_instances.instance_count when set; else ceil(backends × per_cpu ÷ 8)
 * when the member reports backends (for this instance, also
 * opsworks.instance.backends); else ceil(CPUs × per_cpu), where CPUs is this
 * machine's count for this instance and, for other members, their "cpus"
 * key when the stack gives one, else this machine's count (the members of a
 * layer are alike); at least 1, at most PLONE_CLIENTS_MAX. per_cpu is
 * plone_instances.per_cpu (default 2, may be fractional). m NULL means this
 * instance. */
long plone_client_count(const struct stack *s, const struct stack_member *m);

/* This instance's member entry in layer, or NULL. */
const struct stack_member *plone_self_member(const struct stack *s, const char *layer);

/* "First" as the cookbook meant it: the first member of layer, in document
 * order, that is online or is this instance; NULL when none. */
const struct stack_member *plone_first_online_or_self(const struct stack *s, const char *layer);

/* The address other machines reach m at. Private addresses are preferred
 * (the cookbook preferred public DNS, which sends traffic out and back in):
 * private_ip, then private_dns_name, then ip, then public_dns_name, then the
 * hostname. */
const char *plone_member_address(const struct stack_member *m);

/* Whether layer runs, for any event, a built-in recipe whose name (without
 * "plone_buildout::") starts with prefix ("zeoserver-", "instances-") or,
 * with exact, is prefix ("enable_pack"): agent.layers.<layer> when the
 * stack has it, else the default mapping (names.c). */
bool plone_layer_runs(const struct stack *s, const char *layer, const char *prefix, bool exact);
/* Whether one of this instance's layers runs such a recipe. */
bool plone_self_runs(const struct stack *s, const char *prefix, bool exact);
/* Whether RelStorage packing is on for the stack (design.md §8.1):
 * plone_instances.enable_relstorage, and relstorage.enable_pack or a layer
 * of the stack that runs the enable_pack recipe (db_packing in the seeds,
 * whose recipe turned relstorage.enable_pack on). */
bool plone_relstorage_packs(const struct stack *s);

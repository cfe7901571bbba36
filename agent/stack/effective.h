/* SPDX-License-Identifier: BSD-2-Clause */
/* The effective stack of an etcd source (design.md §9): PREFIX/stack with
 * each layer's "instances" completed from the registrations whose "layers"
 * name it; a registration wins over a static member of the same hostname.
 * Pure: no I/O, no etcd. */
#pragma once

#include <jansson.h>
#include <stdbool.h>

/* A registration is a few hundred bytes; a value over this is not one (it
 * is left out unread). */
#define STACK_REGISTRATION_MAX (64 * 1024)

/* stack: the parsed PREFIX/stack document (borrowed). registrations: an
 * object hostname → registration value (borrowed, §9's shape). Only the
 * member fields of design.md §2 (private_ip, private_dns_name,
 * public_dns_name, ip, status, backends, aws_instance_id,
 * availability_zone, instance_type) are copied into the layers, never
 * "agent": an agent's state changing is not a membership change. A
 * registration that is not an object, names a layer the stack lacks, or
 * whose hostname is not a valid name is left out and named in
 * *ret_warnings (a malloc'd "; "-joined text, NULL when none). Returns a
 * new document (new reference), or NULL when stack is not an object. */
json_t *stack_effective(const json_t *stack, const json_t *registrations, char **ret_warnings);
/* What is wrong with the registration reg of host (the last part of its
 * key, raw from etcd) against stack (PREFIX/stack or an effective stack:
 * only its layers' names are read; NULL: the layers are not checked), as stack_effective judges it: a
 * malloc'd text without the hostname ("\"private_ip\" must be a host name
 * or an IP address", "the stack has no layer \"x\""), or NULL when it is a
 * member of every layer it names. *ret_left_out: it is in no layer (an
 * invalid hostname or value, or only layers the stack lacks), else it is
 * a member of the layers that exist. Pure, like stack_effective (issue 12
 * follow-up #9: `fleet` and status name what is left out). */
char *stack_registration_problem(const json_t *stack, const char *host, const json_t *reg, bool *ret_left_out);
/* Whether stack_effective(stack, regs) is the same document whether host's
 * registration in regs is a or b (either NULL: host has none), every
 * other registration alike, and neither has a problem
 * (stack_registration_problem: the warnings are the same too). Costs
 * O(layers), not a rebuild: a static member that registers with its own
 * address, or the re-put of a lost lease's key, changes nothing for the
 * others (issue 12: 1000 agents each rebuilt a 1000-member stack 1000 times
 * at start). false when unsure. */
bool stack_registration_same_effect(const json_t *stack, const char *host, const json_t *a, const json_t *b);

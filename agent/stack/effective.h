/* SPDX-License-Identifier: BSD-2-Clause */
/* The effective stack of an etcd source (design.md §9): PREFIX/stack with
 * each layer's "instances" completed from the registrations whose "layers"
 * name it; a registration wins over a static member of the same hostname.
 * Pure: no I/O, no etcd. */
#pragma once

#include <jansson.h>

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

/* SPDX-License-Identifier: BSD-2-Clause */
/* The `metrics` method's result as Prometheus text exposition format 0.0.4
 * (https://prometheus.io/docs/instrumenting/exposition_formats/): what
 * agentd writes to metrics_file and `agentctl metrics` prints, from one
 * JSON tree, so the file and the method always agree. */
#pragma once

#include <jansson.h>

#include "util.h"

/* Appends the families of result to out. result is
 *   {"metrics": [{"name", "type" ("counter"|"gauge"|"histogram"), "help",
 *                 "samples": [{"name", "labels": {NAME: VALUE, ...}, "value": N}]}]}
 * (other members ignored). Each family gets its # HELP and # TYPE lines;
 * help texts escape backslash and newline, label values backslash, double
 * quote and newline (label names are the caller's, [a-z_]); a value is
 * printed as the shortest decimal that reads back as the same double, an
 * integer as an integer, +Inf, -Inf and NaN by those names. A member of the
 * wrong type is skipped, never printed half. */
void metrics_text(const json_t *result, struct buf *out);

/* One value as metrics_text prints it (a JSON integer or real; the real's
 * infinities and NaN by name) into out (>= 32 bytes). */
void metrics_format_value(const json_t *v, char *out, size_t n);

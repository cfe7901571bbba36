/* SPDX-License-Identifier: BSD-2-Clause */
/* agentd.conf: JSON, every key known, every type checked (design.md §4). */
#pragma once

#include <jansson.h>
#include <stdbool.h>

struct config {
	char *source;            /* file://, http://, https://, imds:, etcd:// */
	char *instance;          /* NULL: gethostname() */
	long poll_interval;      /* seconds */
	char *root;
	char *state_dir;
	char *log_dir;
	char *socket;
	char *admin_group;
	long run_timeout;        /* seconds, whole run */
	long history;            /* runs kept */
	char *supervisor_socket;
	char *supervisor_conf_dir;
	char *imds_endpoint;     /* "http://169.254.169.254", overridable for tests */
	long retry_min;          /* seconds, first retry of a failed change */
	long retry_max;          /* seconds, backoff cap */
	long step_output_max;    /* bytes of one step's output kept in the run log */
};

/* Fills defaults, then applies the file. On error returns a negative errno
 * and a malloc'd message naming the key in *ret_error. */
int config_load(const char *path, struct config *ret, char **ret_error);
/* The same from memory (used by the fuzzer and tests). */
int config_load_buffer(const char *data, size_t len, struct config *ret, char **ret_error);
void config_defaults(struct config *c);
/* The normalised configuration as JSON (new reference). */
json_t *config_to_json(const struct config *c);
void config_free(struct config *c);

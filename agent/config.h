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
	double settle;           /* seconds of quiet a burst of stack changes waits for (design.md §3 Settling); 0: off */
	double settle_max;       /* seconds a burst waits at most, from its first change */
	long lease_ttl;          /* seconds: the etcd lease of this instance's registration (design.md §9) */
	long watch_timeout;      /* seconds of silence after which an etcd watch stream is checked, and re-opened when it
	                          * missed anything or its endpoint does not answer (half-open connections hang) */
	char *etcd_ca;           /* PEM files for etcd+https:// (TLS with a client certificate), NULL: none */
	char *etcd_cert;
	char *etcd_key;
	char *ec2_endpoint;      /* EC2 Query API endpoint (design.md §8.1), NULL: https://ec2.<region>.amazonaws.com */
	char *aws_region;        /* NULL: the stack's ebs_snapshots.region, else IMDS's placement/region */
	/* Prometheus text format written after each run and source change
	 * (design.md §4), a path on the host like state_dir (not under root);
	 * NULL: none. Default the node exporter's textfile directory on
	 * Debian: /var/lib/prometheus/node-exporter/agentd.prom. */
	char *metrics_file;
	char **layers;           /* this instance's layers (NULL-terminated), NULL: from the stack (design.md §3 Identity) */
	/* The recipe families' keys (tools, paths, timeouts), kept by name
	 * with their defaults filled in: see config_keys in config.c and the
	 * accessors below. Owned. */
	json_t *extra;
};

/* A recipe family's key: declared once in config.c's family table, read with
 * the accessors below. */
enum config_type {
	CONFIG_STRING,      /* non-empty string */
	CONFIG_PATH,        /* absolute path without "." or ".." components */
	CONFIG_INT,
	CONFIG_ARGV,        /* non-empty array of non-empty strings: a command, never run through a shell */
	CONFIG_STRING_OR_NULL,
	CONFIG_ARGV_OR_NULL,
};

/* The value of a family key; the key must be declared (abort otherwise: a
 * programming error). Strings are borrowed from c. */
const char *config_string(const struct config *c, const char *key);
long config_int(const struct config *c, const char *key);
/* A NULL-terminated malloc'd array of borrowed strings (free the array
 * only), or NULL when the key is null. */
const char **config_argv(const struct config *c, const char *key);

/* Fills defaults, then applies the file. On error returns a negative errno
 * and a malloc'd message naming the key in *ret_error. */
int config_load(const char *path, struct config *ret, char **ret_error);
/* The same from memory (used by the fuzzer and tests). */
int config_load_buffer(const char *data, size_t len, struct config *ret, char **ret_error);
void config_defaults(struct config *c);
/* The normalised configuration as JSON (new reference). */
json_t *config_to_json(const struct config *c);
void config_free(struct config *c);

/* SPDX-License-Identifier: BSD-2-Clause */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "log.h"
#include "strv.h"
#include "util.h"

enum key_type { KEY_STRING, KEY_STRING_OR_NULL, KEY_INT, KEY_SECONDS, KEY_NAMES_OR_NULL };

struct key {
	const char *name;
	enum key_type type;
	size_t offset;
	long min, max;    /* KEY_INT, KEY_SECONDS */
	bool path;        /* KEY_STRING: must be an absolute path */
};

/* Bounds on agentd.conf's JSON (json_bounds_check): far above any real config. */
#define CONFIG_MAX_ELEMENTS 10000
#define CONFIG_MAX_DEPTH 16

#define S(n, p) { #n, KEY_STRING, offsetof(struct config, n), 0, 0, p }
#define SN(n) { #n, KEY_STRING_OR_NULL, offsetof(struct config, n), 0, 0, false }
/* null, or an absolute path. */
#define PN(n) { #n, KEY_STRING_OR_NULL, offsetof(struct config, n), 0, 0, true }
#define I(n, lo, hi) { #n, KEY_INT, offsetof(struct config, n), lo, hi, false }
/* A number of seconds, integer or not (0.2): a double. */
#define T(n, lo, hi) { #n, KEY_SECONDS, offsetof(struct config, n), lo, hi, false }
/* null, or an array of at most hi names (name_is_valid), no two alike: a strv. */
#define NV(n, hi) { #n, KEY_NAMES_OR_NULL, offsetof(struct config, n), 0, hi, false }
static const struct key keys[] = {
	S(source, false),
	SN(instance),
	I(poll_interval, 1, 86400),
	S(root, true),
	S(state_dir, true),
	S(log_dir, true),
	S(socket, true),
	S(admin_group, false),
	I(run_timeout, 1, 7 * 86400),
	I(history, 1, 10000),
	S(supervisor_socket, true),
	S(supervisor_conf_dir, true),
	S(imds_endpoint, false),
	I(retry_min, 1, 86400),
	I(retry_max, 1, 7 * 86400),
	I(step_output_max, 1024, 1024L * 1024 * 1024),
	T(settle, 0, 3600),
	T(settle_max, 0, 86400),
	NV(layers, 256),
	I(lease_ttl, 2, 3600),
	I(watch_timeout, 1, 3600),
	PN(etcd_ca),
	PN(etcd_cert),
	PN(etcd_key),
	SN(ec2_endpoint),
	SN(aws_region),
	PN(metrics_file),
};
#undef PN
#undef NV
#undef T
#undef S
#undef SN
#undef I

/* The recipe families' keys. Each family keeps its own block; values are
 * read with config_string() / config_int() / config_argv(). */
struct family_key {
	const char *name;
	enum config_type type;
	const char *def;          /* JSON text of the default */
	long min, max;            /* CONFIG_INT */
};

static const struct family_key family_keys[] = {
	/* Shared by several families. */
	{ "ephemeral_mount_point", CONFIG_PATH, "\"/mnt\"" },
	{ "package_query_command", CONFIG_ARGV, "[\"dpkg-query\", \"-W\", \"-f=${Package} ${db:Status-Status}\\n\"]" },
	{ "package_install_command", CONFIG_ARGV,
	  "[\"apt-get\", \"install\", \"-y\", \"-q\", \"--no-install-recommends\"]" },

	/* Apps: buildout, supervisord (agent/recipes/apps*.c). */
	{ "buildout_command", CONFIG_ARGV_OR_NULL, "null" },
	{ "supervisor_timeout", CONFIG_INT, "30", 1, 3600 },
	{ "buildout_timeout", CONFIG_INT, "3600", 1, 86400 },

	/* Storage: EBS volumes, NFS, GlusterFS (agent/recipes/storage*.c). */
	{ "device_timeout", CONFIG_INT, "60", 0, 3600 },
	{ "exportfs_command", CONFIG_ARGV, "[\"exportfs\", \"-ra\"]" },
	{ "gluster_command", CONFIG_ARGV, "[\"gluster\", \"--mode=script\"]" },
	{ "mkfs_command", CONFIG_ARGV, "[\"mkfs\"]" },

	/* Front end: haproxy, varnish, nginx (agent/recipes/front*.c). */
	{ "haproxy_command", CONFIG_ARGV, "[\"haproxy\"]" },
	{ "haproxy_reload_command", CONFIG_ARGV, "[\"systemctl\", \"reload-or-restart\", \"haproxy\"]" },
	{ "varnishd_command", CONFIG_ARGV, "[\"varnishd\"]" },
	{ "varnishadm_command", CONFIG_ARGV, "[\"varnishadm\"]" },
	{ "varnish_restart_command", CONFIG_ARGV, "[\"systemctl\", \"restart\", \"varnish\"]" },
	{ "nginx_command", CONFIG_ARGV, "[\"nginx\"]" },
	{ "nginx_reload_command", CONFIG_ARGV, "[\"systemctl\", \"reload-or-restart\", \"nginx\"]" },
	{ "haproxy_config", CONFIG_PATH, "\"/etc/haproxy/haproxy.cfg\"" },
	{ "haproxy_bind", CONFIG_STRING, "\":8080\"" },
	{ "haproxy_address", CONFIG_STRING, "\"127.0.0.1:8080\"" },
	{ "haproxy_maxconn", CONFIG_INT, "80000", 1, 10000000 },
	{ "haproxy_stats_socket", CONFIG_STRING_OR_NULL, "\"/run/haproxy/admin.sock\"" },
	{ "varnish_vcl", CONFIG_PATH, "\"/etc/varnish/default.vcl\"" },
	{ "varnish_address", CONFIG_STRING, "\"127.0.0.1:6081\"" },
	{ "nginx_site", CONFIG_PATH, "\"/etc/nginx/sites-available/instances\"" },
	{ "nginx_sites_enabled", CONFIG_PATH, "\"/etc/nginx/sites-enabled\"" },
	{ "nginx_listen", CONFIG_STRING, "\"80\"" },
	{ "front_check_timeout", CONFIG_INT, "60", 1, 3600 },

	/* Maintenance (agent/recipes/maintenance.c, zodb.c, system.c; design.md §8.1). */
	{ "freeze_timeout", CONFIG_INT, "30", 1, 3600 },
	{ "reboot_command", CONFIG_ARGV, "[\"systemctl\", \"reboot\"]" },
	{ "logrotate_dir", CONFIG_PATH, "\"/etc/logrotate.d\"" },
	{ "apt_conf_dir", CONFIG_PATH, "\"/etc/apt/apt.conf.d\"" },
};

static const struct family_key *family_key_find(const char *name)
{
	for (size_t i = 0; i < ELEMENTSOF(family_keys); i++)
		if (strcmp(family_keys[i].name, name) == 0)
			return &family_keys[i];
	return NULL;
}

static bool string_ok(const json_t *v)
{
	return json_is_string(v) && json_string_length(v) > 0 &&
	       strlen(json_string_value(v)) == json_string_length(v);
}

/* Checks v against k; returns NULL or a static description of what it must be. */
static const char *family_value_check(const struct family_key *k, const json_t *v)
{
	switch (k->type) {
	case CONFIG_STRING_OR_NULL:
		if (json_is_null(v))
			return NULL;
		/* fall through */
	case CONFIG_STRING:
		return string_ok(v) ? NULL : "a non-empty string";
	case CONFIG_PATH:
		return string_ok(v) && path_is_safe_absolute(json_string_value(v))
			       ? NULL
			       : "an absolute path without \".\" or \"..\" components";
	case CONFIG_INT:
		return json_is_integer(v) && json_integer_value(v) >= k->min && json_integer_value(v) <= k->max
			       ? NULL
			       : "an integer in range";
	case CONFIG_ARGV_OR_NULL:
		if (json_is_null(v))
			return NULL;
		/* fall through */
	case CONFIG_ARGV: {
		size_t i;
		json_t *e;
		if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > 256)
			return "a command: a non-empty array of non-empty strings";
		json_array_foreach(v, i, e) if (!string_ok(e)) return "a command: a non-empty array of non-empty strings";
		return NULL;
	}
	}
	return "valid";
}

static const json_t *family_value(const struct config *c, const char *key)
{
	const struct family_key *k = family_key_find(key);
	const json_t *v;

	if (!k) {
		log_error("BUG: configuration key \"%s\" is not declared", key);
		abort();
	}
	v = c->extra ? json_object_get(c->extra, key) : NULL;
	return v;
}

const char *config_string(const struct config *c, const char *key)
{
	return json_string_value(family_value(c, key));
}

long config_int(const struct config *c, const char *key)
{
	return (long)json_integer_value(family_value(c, key));
}

const char **config_argv(const struct config *c, const char *key)
{
	const json_t *v = family_value(c, key);
	const char **argv;
	size_t i;
	json_t *e;

	if (!json_is_array(v))
		return NULL;
	argv = xcalloc(json_array_size(v) + 1, sizeof(char *));
	json_array_foreach(v, i, e) argv[i] = json_string_value(e);
	return argv;
}

void config_defaults(struct config *c)
{
	memset(c, 0, sizeof(*c));
	c->source = xstrdup("file:///etc/agentd/stack.json");
	c->instance = NULL;
	c->poll_interval = 60;
	c->root = xstrdup("/");
	c->state_dir = xstrdup("/var/lib/agentd");
	c->log_dir = xstrdup("/var/log/agentd");
	c->socket = xstrdup("/run/agentd/agentd.sock");
	c->admin_group = xstrdup("agentd");
	c->run_timeout = 3600;
	c->history = 50;
	c->supervisor_socket = xstrdup("/var/run/supervisor.sock");
	c->supervisor_conf_dir = xstrdup("/etc/supervisor/conf.d");
	c->imds_endpoint = xstrdup("http://169.254.169.254");
	c->retry_min = 10;
	c->retry_max = 600;
	c->step_output_max = 4 * 1024 * 1024;
	c->settle = 0.2;
	c->settle_max = 5;
	c->lease_ttl = 10;
	c->watch_timeout = 60;
	c->metrics_file = xstrdup("/var/lib/prometheus/node-exporter/agentd.prom");
	c->extra = json_object();
	for (size_t i = 0; i < ELEMENTSOF(family_keys); i++) {
		json_t *v = json_loads(family_keys[i].def, JSON_DECODE_ANY, NULL);
		if (!v) {
			log_error("BUG: bad default for configuration key \"%s\"", family_keys[i].name);
			abort();
		}
		json_object_set_new(c->extra, family_keys[i].name, v);
	}
}

static bool names_contain(char *const *v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], s) == 0)
			return true;
	return false;
}

/* A KEY_NAMES_OR_NULL value into *field (a strv, NULL for null). */
static int config_names(const struct key *k, const json_t *v, char ***field, char **ret_error)
{
	size_t i, n;
	json_t *e;

	strv_free(*field);
	*field = NULL;
	if (json_is_null(v))
		return 0;
	n = json_array_size(v);
	if (!json_is_array(v) || n > (size_t)k->max) {
		*ret_error = xasprintf("key \"%s\" must be null or an array of at most %ld names", k->name, k->max);
		return -EINVAL;
	}
	*field = xcalloc(n + 1, sizeof(char *));
	json_array_foreach(v, i, e) {
		const char *s = json_string_value(e);
		if (!s || strlen(s) != json_string_length(e) || !name_is_valid(s) ||
		    names_contain(*field, i, s)) {
			*ret_error = xasprintf("key \"%s\"[%zu] must be a layer shortname of [A-Za-z0-9_.-], given once",
					       k->name, i);
			return -EINVAL;
		}
		(*field)[i] = xstrdup(s);
	}
	return 0;
}

static int config_apply(struct config *c, json_t *root, char **ret_error)
{
	const char *name;
	json_t *v;
	int r;

	if (!json_is_object(root)) {
		*ret_error = xstrdup("the configuration must be a JSON object");
		return -EINVAL;
	}
	json_object_foreach(root, name, v) {
		const struct key *k = NULL;
		for (size_t i = 0; i < ELEMENTSOF(keys); i++)
			if (strcmp(keys[i].name, name) == 0)
				k = &keys[i];
		if (!k) {
			const struct family_key *fk = family_key_find(name);
			const char *want;
			if (!fk) {
				*ret_error = xasprintf("unknown key \"%s\"", name);
				return -EINVAL;
			}
			want = family_value_check(fk, v);
			if (want) {
				if (fk->type == CONFIG_INT)
					*ret_error = xasprintf("key \"%s\" must be an integer between %ld and %ld", name,
							       fk->min, fk->max);
				else
					*ret_error = xasprintf("key \"%s\" must be %s%s", name, want,
							       fk->type == CONFIG_STRING_OR_NULL ||
									       fk->type == CONFIG_ARGV_OR_NULL
								       ? " or null"
								       : "");
				return -EINVAL;
			}
			if (fk->type == CONFIG_PATH) {
				/* Kept in normal form, like the stack's paths: "/mnt/" is "/mnt". */
				_cleanup_free_ char *n = NULL;
				if (path_normalize(json_string_value(v), &n) == 0) {
					json_object_set_new(c->extra, name, json_string(n));
					continue;
				}
			}
			json_object_set(c->extra, name, v);
			continue;
		}
		if (k->type == KEY_NAMES_OR_NULL) {
			char ***field = (char ***)((char *)c + k->offset);
			r = config_names(k, v, field, ret_error);
			if (r < 0)
				return r;
			continue;
		}
		if (k->type == KEY_SECONDS) {
			double d = json_number_value(v);
			if (!json_is_number(v) || !(d >= (double)k->min && d <= (double)k->max)) {
				*ret_error = xasprintf("key \"%s\" must be a number of seconds between %ld and %ld", name,
						       k->min, k->max);
				return -EINVAL;
			}
			*(double *)((char *)c + k->offset) = d;
			continue;
		}
		if (k->type == KEY_INT) {
			if (!json_is_integer(v)) {
				*ret_error = xasprintf("key \"%s\" must be an integer", name);
				return -EINVAL;
			}
			json_int_t n = json_integer_value(v);
			if (n < k->min || n > k->max) {
				*ret_error = xasprintf("key \"%s\" must be between %ld and %ld, got %lld", name, k->min,
						       k->max, (long long)n);
				return -EINVAL;
			}
			*(long *)((char *)c + k->offset) = (long)n;
			continue;
		}
		char **field = (char **)((char *)c + k->offset);
		if (json_is_null(v) && k->type == KEY_STRING_OR_NULL) {
			free(*field);
			*field = NULL;
			continue;
		}
		if (!json_is_string(v) || json_string_length(v) == 0 || strlen(json_string_value(v)) != json_string_length(v)) {
			*ret_error = xasprintf("key \"%s\" must be a non-empty string%s", name,
					       k->type == KEY_STRING_OR_NULL ? " or null" : "");
			return -EINVAL;
		}
		if (k->path && !path_is_safe_absolute(json_string_value(v))) {
			*ret_error = xasprintf("key \"%s\" must be an absolute path without \".\" or \"..\" components", name);
			return -EINVAL;
		}
		free(*field);
		*field = NULL;
		if (k->path)
			(void)path_normalize(json_string_value(v), field);
		if (!*field)
			*field = xstrdup(json_string_value(v));
	}
	if (c->instance && !name_is_valid(c->instance)) {
		*ret_error = xasprintf("key \"instance\" must match [A-Za-z0-9_.-]+");
		return -EINVAL;
	}
	if (c->retry_max < c->retry_min) {
		*ret_error = xstrdup("key \"retry_max\" must not be smaller than \"retry_min\"");
		return -EINVAL;
	}
	return 0;
}

int config_load_buffer(const char *data, size_t len, struct config *ret, char **ret_error)
{
	json_error_t jerr;
	json_t *root;
	int r;

	config_defaults(ret);
	/* A config is a few dozen keys: its tree is bounded before it is built
	 * (1 MiB of small integers would be half a million values). */
	r = json_bounds_check(data, len, CONFIG_MAX_ELEMENTS, CONFIG_MAX_DEPTH);
	if (r < 0) {
		*ret_error = r == -E2BIG ? xasprintf("more than %d elements (values and keys)", CONFIG_MAX_ELEMENTS)
					 : xasprintf("arrays and objects nested deeper than %d levels", CONFIG_MAX_DEPTH);
		return -EINVAL;
	}
	root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		*ret_error = xasprintf("line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
		return -EINVAL;
	}
	r = config_apply(ret, root, ret_error);
	json_decref(root);
	return r;
}

int config_load(const char *path, struct config *ret, char **ret_error)
{
	_cleanup_free_ char *data = NULL, *err = NULL;
	size_t len;
	int r;

	/* The configuration may be a symlink (to a managed copy), but it must
	 * end at a regular file: a FIFO or a device would hang or flood us. */
	r = file_read_regular(AT_FDCWD, path, FILE_READ_FOLLOW, 1024 * 1024, &data, &len);
	if (r < 0) {
		config_defaults(ret);
		*ret_error = xasprintf("%s: %s", path, file_read_strerror(r));
		return r;
	}
	r = config_load_buffer(data, len, ret, &err);
	if (r < 0) {
		*ret_error = xasprintf("%s: %s", path, err);
		return r;
	}
	return 0;
}

json_t *config_to_json(const struct config *c)
{
	json_t *o = json_object();

	for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
		const struct key *k = &keys[i];
		if (k->type == KEY_INT)
			json_object_set_new(o, k->name, json_integer(*(const long *)((const char *)c + k->offset)));
		else if (k->type == KEY_NAMES_OR_NULL) {
			char *const *names = *(char **const *)((const char *)c + k->offset);
			json_t *a = names ? json_array() : json_null();
			for (size_t j = 0; names && names[j]; j++)
				json_array_append_new(a, json_string(names[j]));
			json_object_set_new(o, k->name, a);
		} else if (k->type == KEY_SECONDS) {
			/* Whole seconds as integers, as they are written ("settle_max": 5). */
			double d = *(const double *)((const char *)c + k->offset);
			json_object_set_new(o, k->name, d == (double)(long)d ? json_integer((long)d) : json_real(d));
		} else {
			const char *s = *(char *const *)((const char *)c + k->offset);
			json_object_set_new(o, k->name, s ? json_string(s) : json_null());
		}
	}
	if (c->extra)
		json_object_update(o, c->extra);
	return o;
}

void config_free(struct config *c)
{
	for (size_t i = 0; i < ELEMENTSOF(keys); i++)
		if (keys[i].type == KEY_NAMES_OR_NULL) {
			char ***field = (char ***)((char *)c + keys[i].offset);
			strv_free(*field);
			*field = NULL;
		} else if (keys[i].type != KEY_INT && keys[i].type != KEY_SECONDS) {
			char **field = (char **)((char *)c + keys[i].offset);
			free(*field);
			*field = NULL;
		}
	json_decref(c->extra);
	c->extra = NULL;
}

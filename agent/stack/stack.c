/* SPDX-License-Identifier: BSD-2-Clause */
/* The stack document (design.md §2): one pass that validates the whole of it
 * and builds the model, and the diff of two models into triggers (§3).
 *
 * Conventions of the validator: a JSON null counts as an absent key (OpsWorks
 * prints null for unset fields such as scm.revision or a member's ip); every
 * error names the JSON path of the offending field; a value is quoted in a
 * message only when its key does not look like a secret. */
#include "stack.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "recipes/recipe.h"
#include "util.h"

#define PATH_SIZE sizeof(((struct stack_error *)0)->path)

/* ---- paths and messages ------------------------------------------------ */

/* A bounded string builder over a caller's buffer; silently truncates. */
struct sbuf {
	char *p;
	size_t size;
	size_t len;
};

static void sb_init(struct sbuf *b, char *p, size_t size)
{
	b->p = p;
	b->size = size;
	b->len = 0;
	if (size > 0)
		p[0] = '\0';
}

static void sb_putc(struct sbuf *b, char c)
{
	if (b->len + 1 < b->size) {
		b->p[b->len++] = c;
		b->p[b->len] = '\0';
	}
}

static void sb_puts(struct sbuf *b, const char *s)
{
	for (; *s; s++)
		sb_putc(b, *s);
}

/* Appends s as a JSON string, at most max bytes of it, then "..." inside the
 * quotes when shortened. */
static void sb_quote(struct sbuf *b, const char *s, size_t max)
{
	static const char hex[] = "0123456789abcdef";
	size_t i;

	sb_putc(b, '"');
	for (i = 0; s[i] && i < max; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\') {
			sb_putc(b, '\\');
			sb_putc(b, (char)c);
		} else if (c < 0x20 || c == 0x7f) {
			sb_puts(b, "\\u00");
			sb_putc(b, hex[c >> 4]);
			sb_putc(b, hex[c & 0xf]);
		} else {
			sb_putc(b, (char)c);
		}
	}
	if (s[i])
		sb_puts(b, "...");
	sb_putc(b, '"');
}

static bool key_is_plain(const char *k)
{
	if (!*k)
		return false;
	for (; *k; k++)
		if (!isalnum((unsigned char)*k) && *k != '_' && *k != '-')
			return false;
	return true;
}

void stack_path_key(char *out, size_t size, const char *parent, const char *key)
{
	struct sbuf b;

	sb_init(&b, out, size);
	sb_puts(&b, parent);
	if (key_is_plain(key)) {
		sb_putc(&b, '.');
		sb_puts(&b, key);
	} else {
		sb_putc(&b, '[');
		sb_quote(&b, key, 128);
		sb_putc(&b, ']');
	}
}

void stack_path_index(char *out, size_t size, const char *parent, size_t i)
{
	char num[24];
	struct sbuf b;
	size_t k = sizeof(num) - 1;

	num[k] = '\0';
	do {
		num[--k] = (char)('0' + i % 10);
		i /= 10;
	} while (i > 0);
	sb_init(&b, out, size);
	sb_puts(&b, parent);
	sb_putc(&b, '[');
	sb_puts(&b, num + k);
	sb_putc(&b, ']');
}

const char *stack_quote(char *out, size_t size, const char *s)
{
	struct sbuf b;

	sb_init(&b, out, size);
	sb_quote(&b, s ? s : "", 80);
	return out;
}

int stack_error_set(struct stack_error *err, const char *path, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return -EINVAL;
	(void)snprintf(err->path, sizeof(err->path), "%s", path);
	va_start(ap, fmt);
	(void)vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static const char *type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
		return "an integer";
	case JSON_REAL:
		return "a number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	case JSON_NULL:
	default:
		return "null";
	}
}

static int type_error(struct stack_error *err, const char *path, const char *want, const json_t *v)
{
	return stack_error_set(err, path, "must be %s, got %s", want, type_name(v));
}

/* ---- typed field checks -------------------------------------------------- */

/* The value of key, or NULL when absent or null. */
static json_t *opt(const json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_null(v) ? NULL : v;
}

static bool has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

static bool has_space_or_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* ", got \"value\"" unless the key looks like it holds a secret. */
static const char *got(char *out, size_t size, const char *key, const char *value)
{
	struct sbuf b;

	sb_init(&b, out, size);
	if (key_is_secret(key))
		return out;
	sb_puts(&b, ", got ");
	sb_quote(&b, value, 80);
	return out;
}

static int check_object(struct stack_error *err, const char *parent, const json_t *obj, const char *key,
			json_t **ret)
{
	char path[PATH_SIZE];
	json_t *v = opt(obj, key);

	*ret = v;
	if (!v || json_is_object(v))
		return 0;
	stack_path_key(path, sizeof(path), parent, key);
	return type_error(err, path, "an object", v);
}

static int check_string(struct stack_error *err, const char *parent, const json_t *obj, const char *key,
			const char **ret)
{
	char path[PATH_SIZE];
	json_t *v = opt(obj, key);

	if (ret)
		*ret = NULL;
	if (!v)
		return 0;
	if (!json_is_string(v)) {
		stack_path_key(path, sizeof(path), parent, key);
		return type_error(err, path, "a string", v);
	}
	if (ret)
		*ret = json_string_value(v);
	return 0;
}

/* A string without control characters. */
static int check_text(struct stack_error *err, const char *parent, const json_t *obj, const char *key,
		      const char **ret)
{
	char path[PATH_SIZE];
	const char *s = NULL;
	int r;

	r = check_string(err, parent, obj, key, &s);
	if (r < 0)
		return r;
	if (s && has_control(s)) {
		stack_path_key(path, sizeof(path), parent, key);
		return stack_error_set(err, path, "must not contain control characters");
	}
	if (ret)
		*ret = s;
	return 0;
}

static int check_name(struct stack_error *err, const char *parent, const json_t *obj, const char *key,
		      const char **ret)
{
	char path[PATH_SIZE], g[128];
	const char *s = NULL;
	int r;

	r = check_string(err, parent, obj, key, &s);
	if (r < 0)
		return r;
	if (s && !name_is_valid(s)) {
		stack_path_key(path, sizeof(path), parent, key);
		return stack_error_set(err, path, "must be a name of [A-Za-z0-9_.-] without \"..\"%s",
				       got(g, sizeof(g), key, s));
	}
	if (ret)
		*ret = s;
	return 0;
}

/* Whether the path s has the component c ("." or ".."). */
static bool has_component(const char *s, const char *c)
{
	size_t l = strlen(c);

	for (const char *p = s; *p;) {
		size_t n;

		p += strspn(p, "/");
		n = strcspn(p, "/");
		if (n == l && strncmp(p, c, l) == 0)
			return true;
		p += n;
	}
	return false;
}

const char *stack_path_problem(const char *p)
{
	if (!p)
		return "must be an absolute path";
	if (path_is_safe_absolute(p))
		return NULL;
	if (has_component(p, ".."))
		return "must be an absolute path without \"..\" components";
	if (has_component(p, "."))
		return "must be an absolute path without \".\" components (\"/a/b\", not \"/a/./b\")";
	if (p[0] != '/')
		return "must be an absolute path, starting with \"/\"";
	if (strlen(p) >= PATH_MAX)
		return "must be an absolute path shorter than PATH_MAX bytes";
	return "must be an absolute path without control characters";
}

static int check_abs_path(struct stack_error *err, const char *parent, const json_t *obj, const char *key,
			  const char **ret)
{
	char path[PATH_SIZE], g[128];
	const char *s = NULL;
	int r;

	r = check_string(err, parent, obj, key, &s);
	if (r < 0)
		return r;
	if (s && !path_is_safe_absolute(s)) {
		stack_path_key(path, sizeof(path), parent, key);
		return stack_error_set(err, path, "%s%s", stack_path_problem(s), got(g, sizeof(g), key, s));
	}
	if (ret)
		*ret = s;
	return 0;
}

static int check_bool(struct stack_error *err, const char *parent, const json_t *obj, const char *key)
{
	char path[PATH_SIZE];
	json_t *v = opt(obj, key);

	if (!v || json_is_boolean(v))
		return 0;
	stack_path_key(path, sizeof(path), parent, key);
	return type_error(err, path, "a boolean", v);
}

static int check_int(struct stack_error *err, const char *parent, const json_t *obj, const char *key, long min,
		     long max, long *ret)
{
	char path[PATH_SIZE];
	json_t *v = opt(obj, key);
	json_int_t i;

	if (!v)
		return 0;
	stack_path_key(path, sizeof(path), parent, key);
	if (!json_is_integer(v))
		return type_error(err, path, "an integer", v);
	i = json_integer_value(v);
	if (i < min || i > max) {
		if (max == LONG_MAX)
			return stack_error_set(err, path, "must be at least %ld, got %" JSON_INTEGER_FORMAT, min, i);
		return stack_error_set(err, path, "must be between %ld and %ld, got %" JSON_INTEGER_FORMAT, min, max,
				       i);
	}
	if (ret)
		*ret = (long)i;
	return 0;
}

/* An array whose every element has type t (JSON_STRING or JSON_OBJECT). */
static int check_array_of(struct stack_error *err, const char *parent, const json_t *obj, const char *key,
			  json_type t)
{
	char path[PATH_SIZE], ipath[PATH_SIZE];
	json_t *v = opt(obj, key), *e;
	size_t i;

	if (!v)
		return 0;
	stack_path_key(path, sizeof(path), parent, key);
	if (!json_is_array(v))
		return type_error(err, path, t == JSON_STRING ? "an array of strings" : "an array of objects", v);
	json_array_foreach(v, i, e) {
		if (json_typeof(e) != t) {
			stack_path_index(ipath, sizeof(ipath), path, i);
			return type_error(err, ipath, t == JSON_STRING ? "a string" : "an object", e);
		}
	}
	return 0;
}

/* Keys of obj that are not in allowed[] are errors naming the key. */
static int check_known_keys(struct stack_error *err, const char *path, const json_t *obj,
			    const char *const *allowed)
{
	const char *k;
	json_t *v;
	char q[256];

	json_object_foreach((json_t *)obj, k, v) {
		size_t i;

		for (i = 0; allowed[i]; i++)
			if (strcmp(allowed[i], k) == 0)
				break;
		if (!allowed[i])
			return stack_error_set(err, path, "unknown key %s", stack_quote(q, sizeof(q), k));
	}
	return 0;
}

/* ---- normal forms of paths ------------------------------------------------ */

/* Two spellings of one directory ("/srv/www/a/", "/srv/www//a") must be one
 * directory wherever paths are compared: the overlap of two apps' deploy_to,
 * the absent step's protected paths, "agent.volumes wins for the same mount
 * point", mount tables, fstab, exports. So every path-valued field is
 * rewritten to its normal form here, once, before validation reads it, and
 * the revision, the saved stack and every recipe see only that form. A value
 * that has none (relative, "." or "..", not a string) is left alone for its
 * validator to refuse with its JSON path. */

static void norm_path_value(json_t *v)
{
	_cleanup_free_ char *n = NULL;

	if (!json_is_string(v) || path_normalize(json_string_value(v), &n) < 0)
		return;
	if (strcmp(n, json_string_value(v)) != 0)
		(void)json_string_set(v, n);
}

static void norm_path_key(json_t *obj, const char *key)
{
	norm_path_value(json_object_get(obj, key));
}

/* A path relative to deploy_to: without its trailing slashes ("var/cache/"
 * is "var/cache"); doubled slashes and dot components are the validator's. */
static void norm_rel_path_key(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);
	const char *s = json_string_value(v);
	size_t n;

	if (!s || s[0] == '/')
		return;
	n = strlen(s);
	while (n > 0 && s[n - 1] == '/')
		n--;
	if (n > 0 && n < strlen(s)) {
		_cleanup_free_ char *t = xstrndup(s, n);
		(void)json_string_set(v, t);
	}
}

/* ebs.devices is keyed by device path: the keys are rewritten too (in their
 * order), and two spellings of one device are one device listed twice. */
static int norm_ebs_devices(json_t *root, struct stack_error *err)
{
	json_t *ebs = json_object_get(root, "ebs");
	json_t *devices = json_object_get(ebs, "devices"), *v, *n;
	bool all_normal = true;
	const char *k;
	char q[256], q2[256];

	if (!json_is_object(devices))
		return 0;
	json_object_foreach(devices, k, v) {
		norm_path_key(v, "mount_point");
		if (path_is_safe_absolute(k) && !path_is_normal(k))
			all_normal = false;
	}
	if (all_normal)
		return 0;
	n = json_object();
	json_object_foreach(devices, k, v) {
		_cleanup_free_ char *nk = NULL;
		const char *key = path_normalize(k, &nk) == 0 ? nk : k;

		if (json_object_get(n, key)) {
			json_decref(n);
			return stack_error_set(err, "$.ebs.devices", "device %s is listed twice (also as %s)",
					       stack_quote(q, sizeof(q), k), stack_quote(q2, sizeof(q2), key));
		}
		(void)json_object_set(n, key, v);
	}
	(void)json_object_set_new(ebs, "devices", n);
	return 0;
}

static int normalize_paths(json_t *root, struct stack_error *err)
{
	static const char *const data_dirs[][2] = {
		{ "plone_blobs", "blob_dir" },
		{ "plone_solr", "data_dir" },
		{ "plone_zeoserver", "filestorage_dir" },
		{ "plone_instances", "filestorage_dir" },
	};
	json_t *agent = json_object_get(root, "agent"), *v, *e, *list;
	const char *k;
	size_t i;

	json_object_foreach(json_object_get(root, "deploy"), k, v) {
		json_t *scm = json_object_get(v, "scm");
		const char *type = json_string_value(json_object_get(scm, "scm_type"));

		norm_path_key(v, "deploy_to");
		if (type && strcmp(type, "local") == 0)
			norm_path_key(scm, "repository");
		json_array_foreach(json_object_get(v, "buildout_cache_archives"), i, e)
			norm_rel_path_key(e, "path");
	}
	json_object_foreach(json_object_get(agent, "recipes"), k, v) {
		json_t *argv0 = json_array_get(json_object_get(v, "command"), 0);

		norm_path_key(v, "cwd");
		norm_path_key(v, "creates");
		if (json_is_string(argv0) && json_string_value(argv0)[0] == '/')
			norm_path_value(argv0);
	}
	json_object_foreach(json_object_get(agent, "volumes"), k, list)
		json_array_foreach(list, i, e) {
			norm_path_key(e, "device");
			norm_path_key(e, "mount_point");
		}
	json_object_foreach(json_object_get(agent, "files"), k, list)
		json_array_foreach(list, i, e)
			norm_path_key(e, "path");
	for (i = 0; i < ELEMENTSOF(data_dirs); i++)
		norm_path_key(json_object_get(root, data_dirs[i][0]), data_dirs[i][1]);
	return norm_ebs_devices(root, err);
}

/* ---- the model ------------------------------------------------------------ */

static void stack_free(struct stack *s)
{
	for (size_t i = 0; i < s->n_layers; i++) {
		for (size_t j = 0; j < s->layers[i].n_members; j++)
			free(s->layers[i].members[j].hostname);
		free(s->layers[i].members);
		free(s->layers[i].shortname);
	}
	free(s->layers);
	for (size_t i = 0; i < s->n_self_layers; i++)
		free(s->self_layers[i]);
	free(s->self_layers);
	for (size_t i = 0; i < s->n_apps; i++) {
		free(s->apps[i].name);
		free(s->apps[i].deploy_to);
		free(s->apps[i].user);
		free(s->apps[i].group);
	}
	free(s->apps);
	free(s->instance);
	json_decref(s->root);
	free(s);
}

struct stack *stack_ref(struct stack *s)
{
	if (s)
		s->refcount++;
	return s;
}

void stack_unref(struct stack *s)
{
	if (!s)
		return;
	if (--s->refcount == 0)
		stack_free(s);
}

static bool strv_contains(char *const *v, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(v[i], s) == 0)
			return true;
	return false;
}

static void self_layer_add(struct stack *s, const char *shortname, size_t cap)
{
	if (strv_contains(s->self_layers, s->n_self_layers, shortname))
		return;
	if (!s->self_layers)
		s->self_layers = xcalloc(cap ? cap : 1, sizeof(char *));
	s->self_layers[s->n_self_layers++] = xstrdup(shortname);
}

/* The first four are addresses (see parse_member). */
static const char *const member_string_keys[] = {
	"private_ip", "private_dns_name", "public_dns_name", "ip", "status", "aws_instance_id",
	"availability_zone", "instance_type", "elastic_ip", NULL,
};

/* A host name or an IPv4/IPv6 address: [A-Za-z0-9.:-], not starting with '-'
 * (it would read as an option), at most 253 bytes. */
static bool address_is_plain(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 253 || s[0] == '-')
		return false;
	for (const char *c = s; *c; c++)
		if (!isalnum((unsigned char)*c) && *c != '.' && *c != ':' && *c != '-')
			return false;
	return true;
}

static int parse_member(struct stack_error *err, const char *path, const char *hostname, json_t *m,
			struct stack_member *ret)
{
	int r;

	if (!json_is_object(m))
		return type_error(err, path, "an object", m);
	for (size_t i = 0; member_string_keys[i]; i++) {
		const char *v = NULL;
		r = check_string(err, path, m, member_string_keys[i], &v);
		if (r < 0)
			return r;
		/* Addresses become hosts in configs (haproxy, deploy.cfg, fstab)
		 * and arguments of tools (mount, gluster): nothing but a host. */
		if (v && *v && i < 4 && !address_is_plain(v)) {
			char apath[PATH_SIZE], q[256];
			stack_path_key(apath, sizeof(apath), path, member_string_keys[i]);
			return stack_error_set(err, apath, "must be a host name or an IP address, got %s",
					       stack_quote(q, sizeof(q), v));
		}
	}
	ret->backends = -1;
	r = check_int(err, path, m, "backends", 0, LONG_MAX, &ret->backends);
	if (r < 0)
		return r;
	ret->hostname = xstrdup(hostname);
	ret->private_ip = json_string_value(opt(m, "private_ip"));
	ret->private_dns_name = json_string_value(opt(m, "private_dns_name"));
	ret->public_dns_name = json_string_value(opt(m, "public_dns_name"));
	ret->ip = json_string_value(opt(m, "ip"));
	ret->status = json_string_value(opt(m, "status"));
	ret->online = ret->status && strcmp(ret->status, "online") == 0;
	return 0;
}

static int parse_layer(struct stack_error *err, const char *path, const char *shortname, json_t *l,
		       struct stack_layer *ret)
{
	char ipath[PATH_SIZE], mpath[PATH_SIZE], q[256];
	json_t *instances, *m;
	const char *host;
	int r;

	if (!json_is_object(l))
		return type_error(err, path, "an object", l);
	ret->shortname = xstrdup(shortname);
	r = check_string(err, path, l, "name", &ret->name);
	if (r < 0)
		return r;
	r = check_object(err, path, l, "instances", &instances);
	if (r < 0 || !instances)
		return r;
	stack_path_key(ipath, sizeof(ipath), path, "instances");
	ret->members = xcalloc(json_object_size(instances) + 1, sizeof(struct stack_member));
	json_object_foreach(instances, host, m) {
		if (!name_is_valid(host))
			return stack_error_set(err, ipath, "invalid hostname %s: must be [A-Za-z0-9_.-] without \"..\"",
					       stack_quote(q, sizeof(q), host));
		stack_path_key(mpath, sizeof(mpath), ipath, host);
		r = parse_member(err, mpath, host, m, &ret->members[ret->n_members]);
		if (r < 0)
			return r;
		ret->n_members++;
	}
	return 0;
}

static int parse_instance(struct stack_error *err, const char *path, json_t *inst, const char **ret_hostname)
{
	int r;

	if (!json_is_object(inst))
		return type_error(err, path, "an object", inst);
	r = check_name(err, path, inst, "hostname", ret_hostname);
	if (r < 0)
		return r;
	for (size_t i = 0; member_string_keys[i]; i++) {
		r = check_string(err, path, inst, member_string_keys[i], NULL);
		if (r < 0)
			return r;
	}
	r = check_string(err, path, inst, "region", NULL);
	if (r < 0)
		return r;
	r = check_int(err, path, inst, "backends", 0, LONG_MAX, NULL);
	if (r < 0)
		return r;
	return check_array_of(err, path, inst, "layers", JSON_STRING);
}

static int parse_opsworks(struct stack *s, const char *instance, struct stack_error *err)
{
	char path[PATH_SIZE], lpath[PATH_SIZE], q[256];
	json_t *ow, *stk, *inst, *layers, *l, *e;
	const char *hostname = NULL, *shortname;
	size_t i;
	int r;

	r = check_object(err, "$", s->root, "opsworks", &ow);
	if (r < 0)
		return r;
	if (ow) {
		r = check_object(err, "$.opsworks", ow, "stack", &stk);
		if (r < 0)
			return r;
		if (stk) {
			r = check_string(err, "$.opsworks.stack", stk, "name", &s->name);
			if (r < 0)
				return r;
		}
	}
	inst = opt(ow, "instance");
	if (inst) {
		r = parse_instance(err, "$.opsworks.instance", inst, &hostname);
		if (r < 0)
			return r;
	}
	s->instance = xstrdup(hostname ? hostname : instance ? instance : "");

	r = check_object(err, "$.opsworks", ow, "layers", &layers);
	if (r < 0)
		return r;
	if (layers) {
		s->layers = xcalloc(json_object_size(layers) + 1, sizeof(struct stack_layer));
		json_object_foreach(layers, shortname, l) {
			if (!name_is_valid(shortname))
				return stack_error_set(err, "$.opsworks.layers",
						       "invalid layer shortname %s: must be [A-Za-z0-9_.-] without \"..\"",
						       stack_quote(q, sizeof(q), shortname));
			stack_path_key(lpath, sizeof(lpath), "$.opsworks.layers", shortname);
			r = parse_layer(err, lpath, shortname, l, &s->layers[s->n_layers]);
			s->n_layers++; /* counted even on error, so stack_free sees what was allocated */
			if (r < 0)
				return r;
		}
	}

	/* Which layers are ours: OpsWorks' own list when it is there, else the
	 * layers that list this instance as a member, in any status. */
	if (inst && opt(inst, "layers")) {
		json_t *list = opt(inst, "layers");

		json_array_foreach(list, i, e) {
			if (!name_is_valid(json_string_value(e))) {
				stack_path_index(path, sizeof(path), "$.opsworks.instance.layers", i);
				return stack_error_set(err, path, "invalid layer shortname %s",
						       stack_quote(q, sizeof(q), json_string_value(e)));
			}
			self_layer_add(s, json_string_value(e), json_array_size(list));
		}
	} else {
		for (i = 0; i < s->n_layers; i++)
			for (size_t j = 0; j < s->layers[i].n_members; j++)
				if (strcmp(s->layers[i].members[j].hostname, s->instance) == 0)
					self_layer_add(s, s->layers[i].shortname, s->n_layers);
	}

	s->self = inst;
	for (i = 0; i < s->n_layers; i++) {
		struct stack_layer *layer = &s->layers[i];

		layer->has_self = strv_contains(s->self_layers, s->n_self_layers, layer->shortname);
		for (size_t j = 0; j < layer->n_members; j++) {
			layer->members[j].self = strcmp(layer->members[j].hostname, s->instance) == 0;
			if (layer->members[j].self && !s->self)
				s->self = json_object_get(json_object_get(opt(layers, layer->shortname), "instances"),
							  layer->members[j].hostname);
		}
	}
	return 0;
}

static int parse_scm(struct stack_error *err, const char *parent, json_t *app)
{
	static const char *const types[] = { "git", "archive", "local", NULL };
	char path[PATH_SIZE], g[128];
	const char *type = NULL, *repo = NULL, *rev = NULL;
	json_t *scm;
	int r;

	r = check_object(err, parent, app, "scm", &scm);
	if (r < 0 || !scm)
		return r;
	stack_path_key(path, sizeof(path), parent, "scm");
	r = check_string(err, path, scm, "scm_type", &type);
	if (r < 0)
		return r;
	if (type) {
		size_t i;

		for (i = 0; types[i]; i++)
			if (strcmp(types[i], type) == 0)
				break;
		if (!types[i]) {
			char tpath[PATH_SIZE];

			stack_path_key(tpath, sizeof(tpath), path, "scm_type");
			return stack_error_set(err, tpath, "must be \"git\", \"archive\" or \"local\"%s",
					       got(g, sizeof(g), "scm_type", type));
		}
	}
	/* A repository URL may carry credentials: it is never quoted back. */
	r = check_text(err, path, scm, "repository", &repo);
	if (r < 0)
		return r;
	if (repo && repo[0] == '-') {
		char rpath[PATH_SIZE];

		stack_path_key(rpath, sizeof(rpath), path, "repository");
		return stack_error_set(err, rpath, "must not start with \"-\"");
	}
	r = check_string(err, path, scm, "revision", &rev);
	if (r < 0)
		return r;
	if (rev && (rev[0] == '-' || has_space_or_control(rev))) {
		char rpath[PATH_SIZE];

		stack_path_key(rpath, sizeof(rpath), path, "revision");
		return stack_error_set(err, rpath, "must not start with \"-\" or contain whitespace%s",
				       got(g, sizeof(g), "revision", rev));
	}
	return 0;
}

static int check_string_values(struct stack_error *err, const char *parent, const json_t *obj, const char *key)
{
	char path[PATH_SIZE], vpath[PATH_SIZE];
	const char *k;
	json_t *env, *v;
	int r;

	r = check_object(err, parent, obj, key, &env);
	if (r < 0 || !env)
		return r;
	stack_path_key(path, sizeof(path), parent, key);
	json_object_foreach(env, k, v) {
		if (!json_is_string(v)) {
			stack_path_key(vpath, sizeof(vpath), path, k);
			return type_error(err, vpath, "a string", v);
		}
	}
	return 0;
}

static int parse_app(struct stack_error *err, const char *path, const char *name, json_t *app,
		     struct stack_app *ret)
{
	const char *deploy_to = NULL, *user = NULL, *group = NULL;
	int r;

	if (!json_is_object(app))
		return type_error(err, path, "an object", app);
	ret->name = xstrdup(name);
	ret->json = app;
	if ((r = check_abs_path(err, path, app, "deploy_to", &deploy_to)) < 0 ||
	    (r = check_name(err, path, app, "user", &user)) < 0 ||
	    (r = check_name(err, path, app, "group", &group)) < 0)
		return r;
	ret->keep_releases = 5;
	if ((r = check_int(err, path, app, "keep_releases", 1, 100, &ret->keep_releases)) < 0 ||
	    (r = parse_scm(err, path, app)) < 0 || (r = check_string_values(err, path, app, "environment")) < 0 ||
	    (r = check_string(err, path, app, "application", NULL)) < 0 ||
	    (r = check_array_of(err, path, app, "os_packages", JSON_STRING)) < 0 ||
	    (r = check_array_of(err, path, app, "buildout_extends", JSON_STRING)) < 0 ||
	    (r = check_array_of(err, path, app, "buildout_parts_to_include", JSON_STRING)) < 0 ||
	    (r = check_array_of(err, path, app, "buildout_init_commands", JSON_OBJECT)) < 0 ||
	    (r = check_string(err, path, app, "buildout_additional_config", NULL)) < 0 ||
	    (r = check_array_of(err, path, app, "buildout_cache_archives", JSON_OBJECT)) < 0 ||
	    (r = check_bool(err, path, app, "always_build_on_deploy")) < 0)
		return r;
	if (deploy_to && (!path_is_plain(deploy_to) || path_is_system_dir(deploy_to))) {
		char dpath[PATH_SIZE], q[256];
		/* It is owned, chmodded and, at undeploy, removed; and it is
		 * written into supervisor program files and deploy.cfg. */
		stack_path_key(dpath, sizeof(dpath), path, "deploy_to");
		return stack_error_set(err, dpath,
				       "must be a directory of its own made of [A-Za-z0-9_./-], not a system directory "
				       "such as /, /etc, /usr, /var or /srv, got %s",
				       stack_quote(q, sizeof(q), deploy_to));
	}
	ret->deploy_to = deploy_to ? xstrdup(deploy_to) : xasprintf("/srv/www/%s", name);
	ret->user = xstrdup(user ? user : "deploy");
	ret->group = xstrdup(group ? group : "www-data");
	return 0;
}

static int parse_deploy(struct stack *s, struct stack_error *err)
{
	char path[PATH_SIZE], q[256];
	json_t *deploy, *app;
	const char *name;
	int r;

	r = check_object(err, "$", s->root, "deploy", &deploy);
	if (r < 0 || !deploy)
		return r;
	s->apps = xcalloc(json_object_size(deploy) + 1, sizeof(struct stack_app));
	json_object_foreach(deploy, name, app) {
		if (!name_is_valid(name))
			return stack_error_set(err, "$.deploy", "invalid app name %s: must be [A-Za-z0-9_.-] without \"..\"",
					       stack_quote(q, sizeof(q), name));
		stack_path_key(path, sizeof(path), "$.deploy", name);
		r = parse_app(err, path, name, app, &s->apps[s->n_apps]);
		s->n_apps++;
		if (r < 0)
			return r;
	}
	/* An app's tree is removed at its undeploy: it must not hold another's.
	 * Both are in normal form, compared a whole component at a time. */
	for (size_t i = 0; i < s->n_apps; i++)
		for (size_t j = 0; j < s->n_apps; j++) {
			const char *a = s->apps[i].deploy_to, *b = s->apps[j].deploy_to;
			if (i == j || !path_is_under(b, a))
				continue;
			char apath[PATH_SIZE];
			stack_path_key(apath, sizeof(apath), "$.deploy", s->apps[j].name);
			stack_path_key(path, sizeof(path), apath, "deploy_to");
			return stack_error_set(err, path, "%s is %s the deploy_to of app %s", b,
					       strcmp(a, b) != 0 ? "inside" : "the same as", s->apps[i].name);
		}
	return 0;
}

static int parse_agent_layers(const json_t *root, struct stack_error *err, json_t *layers)
{
	char lpath[PATH_SIZE], epath[PATH_SIZE], rpath[PATH_SIZE], q[256];
	const char *shortname, *evname;
	json_t *l, *list, *e;
	size_t i;

	if (!json_is_object(layers))
		return type_error(err, "$.agent.layers", "an object", layers);
	json_object_foreach(layers, shortname, l) {
		if (!name_is_valid(shortname))
			return stack_error_set(err, "$.agent.layers",
					       "invalid layer shortname %s: must be [A-Za-z0-9_.-] without \"..\"",
					       stack_quote(q, sizeof(q), shortname));
		stack_path_key(lpath, sizeof(lpath), "$.agent.layers", shortname);
		if (!json_is_object(l))
			return type_error(err, lpath, "an object", l);
		json_object_foreach(l, evname, list) {
			if (event_from_string(evname) == EVENT_INVALID)
				return stack_error_set(err, lpath,
						       "unknown event %s, expected setup, configure, deploy, undeploy or shutdown",
						       stack_quote(q, sizeof(q), evname));
			stack_path_key(epath, sizeof(epath), lpath, evname);
			if (json_is_null(list))
				continue;
			if (!json_is_array(list))
				return type_error(err, epath, "an array of recipe names", list);
			json_array_foreach(list, i, e) {
				stack_path_index(rpath, sizeof(rpath), epath, i);
				if (!json_is_string(e))
					return type_error(err, rpath, "a recipe name", e);
				if (!recipe_name_known(root, json_string_value(e)))
					return stack_error_set(err, rpath, "unknown recipe %s",
							       stack_quote(q, sizeof(q), json_string_value(e)));
			}
		}
	}
	return 0;
}

static int parse_agent_recipes(struct stack_error *err, json_t *recipes)
{
	char q[256];
	const char *name;
	json_t *def;
	int r;

	if (!json_is_object(recipes))
		return type_error(err, "$.agent.recipes", "an object", recipes);
	json_object_foreach(recipes, name, def) {
		if (!name_is_valid(name))
			return stack_error_set(err, "$.agent.recipes",
					       "invalid recipe name %s: must be [A-Za-z0-9_.-] without \"..\"",
					       stack_quote(q, sizeof(q), name));
		if (recipe_canonical_name(name))
			return stack_error_set(err, "$.agent.recipes", "custom recipe %s shadows a built-in recipe",
					       stack_quote(q, sizeof(q), name));
		r = recipe_custom_validate(def, name, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static bool volume_id_is_valid(const char *s)
{
	size_t n;

	if (strncmp(s, "vol-", 4) != 0)
		return false;
	s += 4;
	n = strlen(s);
	if (n < 8 || n > 17)
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s) && !(*s >= 'a' && *s <= 'f'))
			return false;
	return true;
}

static int parse_volume(struct stack_error *err, const char *path, json_t *v)
{
	static const char *const keys[] = { "volume_id", "device", "mount_point", "fstype", "mkfs", "options",
					    "force", NULL };
	char fpath[PATH_SIZE], g[128];
	const char *volume_id = NULL, *device = NULL, *mount_point = NULL, *fstype = NULL, *options = NULL;
	int r;

	if (!json_is_object(v))
		return type_error(err, path, "an object", v);
	if ((r = check_known_keys(err, path, v, keys)) < 0 ||
	    (r = check_string(err, path, v, "volume_id", &volume_id)) < 0 ||
	    (r = check_abs_path(err, path, v, "device", &device)) < 0 ||
	    (r = check_abs_path(err, path, v, "mount_point", &mount_point)) < 0 ||
	    (r = check_string(err, path, v, "fstype", &fstype)) < 0 ||
	    (r = check_bool(err, path, v, "mkfs")) < 0 || (r = check_string(err, path, v, "options", &options)) < 0 ||
	    (r = check_bool(err, path, v, "force")) < 0)
		return r;
	if (volume_id && !volume_id_is_valid(volume_id)) {
		stack_path_key(fpath, sizeof(fpath), path, "volume_id");
		return stack_error_set(err, fpath, "must look like \"vol-\" and 8 to 17 hex digits%s",
				       got(g, sizeof(g), "volume_id", volume_id));
	}
	if (!mount_point) {
		stack_path_key(fpath, sizeof(fpath), path, "mount_point");
		return stack_error_set(err, fpath, "is required");
	}
	/* The device can be found from the volume id (NVMe serial), so one of
	 * the two is enough. */
	if (!device && !volume_id)
		return stack_error_set(err, path, "needs \"device\" or \"volume_id\"");
	if (fstype && strcmp(fstype, "xfs") != 0 && strcmp(fstype, "ext4") != 0) {
		stack_path_key(fpath, sizeof(fpath), path, "fstype");
		return stack_error_set(err, fpath, "must be \"xfs\" or \"ext4\"%s", got(g, sizeof(g), "fstype", fstype));
	}
	if (options && (options[0] == '\0' || has_space_or_control(options))) {
		stack_path_key(fpath, sizeof(fpath), path, "options");
		return stack_error_set(err, fpath, "must be a non-empty mount option list without whitespace");
	}
	return 0;
}

/* Two volumes of one host on one mount point, or one device (or volume id)
 * twice, would fight each run: the second mount hides the first, or mkfs runs
 * on a device that is mounted. Paths are in normal form here. */
static int check_volume_unique(struct stack_error *err, const char *path, const json_t *list, size_t i)
{
	static const char *const keys[] = { "mount_point", "device", "volume_id" };
	const json_t *v = json_array_get(list, i);
	char fpath[PATH_SIZE], q[256];

	for (size_t j = 0; j < i; j++)
		for (size_t k = 0; k < ELEMENTSOF(keys); k++) {
			const char *a = json_string_value(json_object_get(v, keys[k]));
			const char *b = json_string_value(json_object_get(json_array_get(list, j), keys[k]));

			if (!a || !b || strcmp(a, b) != 0)
				continue;
			stack_path_key(fpath, sizeof(fpath), path, keys[k]);
			return stack_error_set(err, fpath, "%s is also the %s of volume %zu of this host",
					       stack_quote(q, sizeof(q), a), keys[k], j);
		}
	return 0;
}

static int parse_agent_volumes(struct stack_error *err, json_t *volumes)
{
	char hpath[PATH_SIZE], vpath[PATH_SIZE], q[256];
	const char *host;
	json_t *list, *v;
	size_t i;
	int r;

	if (!json_is_object(volumes))
		return type_error(err, "$.agent.volumes", "an object", volumes);
	json_object_foreach(volumes, host, list) {
		if (!name_is_valid(host))
			return stack_error_set(err, "$.agent.volumes",
					       "invalid hostname %s: must be [A-Za-z0-9_.-] without \"..\"",
					       stack_quote(q, sizeof(q), host));
		stack_path_key(hpath, sizeof(hpath), "$.agent.volumes", host);
		if (!json_is_array(list))
			return type_error(err, hpath, "an array of volumes", list);
		json_array_foreach(list, i, v) {
			stack_path_index(vpath, sizeof(vpath), hpath, i);
			r = parse_volume(err, vpath, v);
			if (r < 0)
				return r;
			r = check_volume_unique(err, vpath, list, i);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static int parse_agent(struct stack *s, struct stack_error *err)
{
	static const char *const keys[] = { "layers", "recipes", "volumes", "files", NULL };
	json_t *agent, *v;
	int r;

	r = check_object(err, "$", s->root, "agent", &agent);
	if (r < 0 || !agent)
		return r;
	/* agent.files is validated by its own recipe. */
	r = check_known_keys(err, "$.agent", agent, keys);
	if (r < 0)
		return r;
	if ((v = opt(agent, "recipes")) && (r = parse_agent_recipes(err, v)) < 0)
		return r;
	if ((v = opt(agent, "layers")) && (r = parse_agent_layers(s->root, err, v)) < 0)
		return r;
	if ((v = opt(agent, "volumes")) && (r = parse_agent_volumes(err, v)) < 0)
		return r;
	return 0;
}

static int parse_ebs(struct stack *s, struct stack_error *err)
{
	char dpath[PATH_SIZE], q[256], q2[256];
	json_t *ebs, *devices, *d, *o;
	const char *dev, *other, *mount_point = NULL;
	int r;

	r = check_object(err, "$", s->root, "ebs", &ebs);
	if (r < 0 || !ebs)
		return r;
	r = check_object(err, "$.ebs", ebs, "devices", &devices);
	if (r < 0 || !devices)
		return r;
	json_object_foreach(devices, dev, d) {
		if (!path_is_safe_absolute(dev))
			return stack_error_set(err, "$.ebs.devices", "device %s %s", stack_quote(q, sizeof(q), dev),
					       stack_path_problem(dev));
		stack_path_key(dpath, sizeof(dpath), "$.ebs.devices", dev);
		if (!json_is_object(d))
			return type_error(err, dpath, "an object", d);
		if ((r = check_abs_path(err, dpath, d, "mount_point", &mount_point)) < 0 ||
		    (r = check_string(err, dpath, d, "fstype", NULL)) < 0)
			return r;
		if (!mount_point) {
			char mpath[PATH_SIZE];

			stack_path_key(mpath, sizeof(mpath), dpath, "mount_point");
			return stack_error_set(err, mpath, "is required");
		}
		/* One mount point for two devices: the second hides the first. */
		json_object_foreach(devices, other, o) {
			char mpath[PATH_SIZE];

			if (o == d)
				break;
			if (!json_is_string(json_object_get(o, "mount_point")) ||
			    strcmp(json_string_value(json_object_get(o, "mount_point")), mount_point) != 0)
				continue;
			stack_path_key(mpath, sizeof(mpath), dpath, "mount_point");
			return stack_error_set(err, mpath, "%s is also the mount point of device %s",
					       stack_quote(q, sizeof(q), mount_point), stack_quote(q2, sizeof(q2), other));
		}
	}
	return 0;
}

static int parse_custom(struct stack *s, struct stack_error *err)
{
	/* Custom JSON the built-in recipes read; their own validate hooks check
	 * inside, here only that each is an object. */
	static const char *const objects[] = { "plone_instances", "plone_zeoserver", "plone_blobs",
					       "plone_solr",      "ebs_snapshots",   "apt",
					       NULL };
	json_t *v;
	int r;

	for (size_t i = 0; objects[i]; i++) {
		r = check_object(err, "$", s->root, objects[i], &v);
		if (r < 0)
			return r;
	}
	return 0;
}

static void stack_set_revision(struct stack *s)
{
	char *canon;
	size_t n;

	n = json_dumpb(s->root, NULL, 0, JSON_COMPACT | JSON_SORT_KEYS);
	canon = xmalloc(n ? n : 1);
	n = json_dumpb(s->root, canon, n, JSON_COMPACT | JSON_SORT_KEYS);
	(void)snprintf(s->revision, sizeof(s->revision), "%016" PRIx64, hash_fnv1a64(canon, n, HASH_FNV_SEED));
	free(canon);
}

int stack_parse(const char *data, size_t len, const char *instance, struct stack **ret, struct stack_error *err)
{
	struct stack_error dummy;
	json_error_t jerr;
	struct stack *s;
	json_t *root;
	int r;

	if (!err)
		err = &dummy;
	memset(err, 0, sizeof(*err));
	*ret = NULL;
	if (len > STACK_MAX_BYTES) {
		(void)stack_error_set(err, "$", "document is %zu bytes, over the limit of %d bytes (16 MiB)", len,
				      STACK_MAX_BYTES);
		return -EFBIG;
	}
	/* Bounded before jansson builds anything: a tree costs some 40 bytes a
	 * value, so bytes alone do not bound memory. */
	r = json_bounds_check(data ? data : "", len, STACK_MAX_ELEMENTS, STACK_MAX_DEPTH);
	if (r == -E2BIG) {
		(void)stack_error_set(err, "$", "document has more than %d elements (values and keys), the limit",
				      STACK_MAX_ELEMENTS);
		return r;
	}
	if (r == -ELOOP) {
		(void)stack_error_set(err, "$", "document nests arrays and objects deeper than %d levels, the limit",
				      STACK_MAX_DEPTH);
		return -E2BIG;
	}
	root = json_loadb(data ? data : "", len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!root) {
		r = json_error_code(&jerr) == json_error_out_of_memory ? -ENOMEM : -EINVAL;
		/* jansson quotes the input near the error ("invalid escape near
		 * '\"hunter2\q'"), which may be a secret: keep only its words. */
		char text[JSON_ERROR_TEXT_LENGTH];
		char *near;
		snprintf(text, sizeof(text), "%s", jerr.text);
		if ((near = strstr(text, " near ")))
			*near = '\0';
		(void)stack_error_set(err, "$", "%s at line %d, column %d", text, jerr.line, jerr.column);
		return r;
	}
	if (!json_is_object(root)) {
		r = type_error(err, "$", "an object", root);
		json_decref(root);
		return r;
	}

	r = normalize_paths(root, err);
	if (r < 0) {
		json_decref(root);
		return r;
	}

	s = xcalloc(1, sizeof(*s));
	s->refcount = 1;
	s->root = root;
	if ((r = parse_opsworks(s, instance, err)) < 0 || (r = parse_deploy(s, err)) < 0 ||
	    (r = parse_agent(s, err)) < 0 || (r = parse_ebs(s, err)) < 0 || (r = parse_custom(s, err)) < 0) {
		stack_unref(s);
		return r;
	}
	stack_set_revision(s);
	*ret = s;
	return 0;
}

/* ---- queries ------------------------------------------------------------- */

const struct stack_layer *stack_layer_find(const struct stack *s, const char *shortname)
{
	if (!s || !shortname)
		return NULL;
	for (size_t i = 0; i < s->n_layers; i++)
		if (strcmp(s->layers[i].shortname, shortname) == 0)
			return &s->layers[i];
	return NULL;
}

const struct stack_app *stack_app_find(const struct stack *s, const char *name)
{
	if (!s || !name)
		return NULL;
	for (size_t i = 0; i < s->n_apps; i++)
		if (strcmp(s->apps[i].name, name) == 0)
			return &s->apps[i];
	return NULL;
}

bool stack_has_self_layer(const struct stack *s, const char *shortname)
{
	return s && shortname && strv_contains(s->self_layers, s->n_self_layers, shortname);
}

const char **stack_layer_recipes(const struct stack *s, const char *layer, enum event ev, size_t *ret_n)
{
	const json_t *entry = json_object_get(json_object_get(json_object_get(s->root, "agent"), "layers"), layer);
	const char *evname = event_to_string(ev);
	const char **v;
	size_t n = 0;

	if (json_is_object(entry)) {
		const json_t *list = evname ? json_object_get(entry, evname) : NULL;
		size_t i;
		json_t *e;

		v = xcalloc(json_array_size(list) + 1, sizeof(char *));
		json_array_foreach(list, i, e) v[n++] = json_string_value(e);
	} else {
		const char *const *def = layer ? recipe_default_mapping(layer, ev) : NULL;
		size_t m = 0;

		while (def && def[m])
			m++;
		v = xcalloc(m + 1, sizeof(char *));
		for (; n < m; n++)
			v[n] = def[n];
	}
	*ret_n = n;
	return v;
}

const json_t *stack_custom_recipe(const struct stack *s, const char *name)
{
	const json_t *recipes = json_object_get(json_object_get(s->root, "agent"), "recipes");

	return name ? json_object_get(recipes, name) : NULL;
}

char *stack_dump(const struct stack *s, size_t *ret_len)
{
	char *d = json_dumps(s->root, JSON_COMPACT);

	if (!d)
		d = xstrdup("{}");
	if (ret_len)
		*ret_len = strlen(d);
	return d;
}

/* ---- diff ----------------------------------------------------------------- */

struct tlist {
	struct trigger *v;
	size_t n;
	size_t cap;
};

static bool streq_null(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

static void tl_add(struct tlist *t, enum event ev, const char *layer, const char *app, bool use_old)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->v[i].event == ev && streq_null(t->v[i].layer, layer) && streq_null(t->v[i].app, app))
			return;
	if (t->n == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 8;
		t->v = xrealloc(t->v, t->cap * sizeof(*t->v));
	}
	t->v[t->n++] = (struct trigger){
		.event = ev,
		.layer = layer ? xstrdup(layer) : NULL,
		.app = app ? xstrdup(app) : NULL,
		.use_old_stack = use_old,
	};
}

/* Members that count for configuration: online peers, and always ourselves. */
static size_t counted_members(const struct stack_layer *l, const struct stack_member **v)
{
	size_t n = 0;

	for (size_t i = 0; i < l->n_members; i++)
		if (l->members[i].online || l->members[i].self)
			v[n++] = &l->members[i];
	return n;
}

static int member_cmp(const void *a, const void *b)
{
	const struct stack_member *x = *(const struct stack_member *const *)a;
	const struct stack_member *y = *(const struct stack_member *const *)b;

	return strcmp(x->hostname, y->hostname);
}

static bool layer_peers_changed(const struct stack_layer *a, const struct stack_layer *b)
{
	const struct stack_member **va, **vb;
	size_t na, nb;
	bool changed = false;

	va = xcalloc(a->n_members + 1, sizeof(*va));
	vb = xcalloc(b->n_members + 1, sizeof(*vb));
	na = counted_members(a, va);
	nb = counted_members(b, vb);
	if (na != nb) {
		changed = true;
		goto out;
	}
	qsort(va, na, sizeof(*va), member_cmp);
	qsort(vb, nb, sizeof(*vb), member_cmp);
	for (size_t i = 0; i < na && !changed; i++)
		changed = strcmp(va[i]->hostname, vb[i]->hostname) != 0 ||
			  !streq_null(va[i]->private_ip, vb[i]->private_ip) ||
			  !streq_null(va[i]->private_dns_name, vb[i]->private_dns_name) ||
			  !streq_null(va[i]->public_dns_name, vb[i]->public_dns_name) || !streq_null(va[i]->ip, vb[i]->ip) ||
			  va[i]->backends != vb[i]->backends;
out:
	free(va);
	free(vb);
	return changed;
}

static bool membership_changed(const struct stack *old, const struct stack *new)
{
	for (size_t i = 0; i < new->n_layers; i++) {
		const struct stack_layer *o = stack_layer_find(old, new->layers[i].shortname);

		if (!o || layer_peers_changed(o, &new->layers[i]))
			return true;
	}
	for (size_t i = 0; i < old->n_layers; i++)
		if (!stack_layer_find(new, old->layers[i].shortname))
			return true;
	return false;
}

static bool value_changed(const json_t *a, const json_t *b)
{
	if (!a || !b)
		return a != b;
	return !json_equal((json_t *)a, (json_t *)b);
}

/* Keys of a and b, except those in skip[], whose values differ. */
static bool object_changed_except(const json_t *a, const json_t *b, const char *const *skip)
{
	const json_t *objs[2] = { a, b };
	const char *k;
	json_t *v;

	for (size_t o = 0; o < 2; o++) {
		json_object_foreach((json_t *)objs[o], k, v) {
			size_t i;

			for (i = 0; skip[i]; i++)
				if (strcmp(skip[i], k) == 0)
					break;
			if (skip[i])
				continue;
			if (value_changed(json_object_get(a, k), json_object_get(b, k)))
				return true;
		}
	}
	return false;
}

/* Whether something other than membership and apps changed: Custom JSON,
 * agent, ebs, opsworks.stack, ... OpsWorks' per-command bookkeeping
 * (opsworks.activity, sent_at, deployment) changes on every command and is
 * not a change of the stack. */
static bool other_changed(const struct stack *old, const struct stack *new)
{
	static const char *const top_skip[] = { "opsworks", "deploy", NULL };
	static const char *const ow_skip[] = { "layers", "instance", "activity", "sent_at", "deployment", NULL };
	const json_t *oa = json_object_get(old->root, "opsworks"), *ob = json_object_get(new->root, "opsworks");

	if (object_changed_except(old->root, new->root, top_skip))
		return true;
	if (json_is_object(oa) && json_is_object(ob))
		return object_changed_except(oa, ob, ow_skip);
	return json_is_object(oa) != json_is_object(ob);
}

int stack_diff(const struct stack *old, const struct stack *new, struct trigger **ret, size_t *ret_n)
{
	struct tlist t = { 0 };
	size_t remaining = 0;

	*ret = NULL;
	*ret_n = 0;
	if (!new)
		return -EINVAL;

	if (!old) {
		tl_add(&t, EVENT_SETUP, NULL, NULL, false);
		tl_add(&t, EVENT_CONFIGURE, NULL, NULL, false);
		for (size_t i = 0; i < new->n_apps; i++)
			tl_add(&t, EVENT_DEPLOY, NULL, new->apps[i].name, false);
		if (new->n_apps == 0)
			tl_add(&t, EVENT_DEPLOY, NULL, NULL, false);
		goto done;
	}
	if (strcmp(old->instance, new->instance) == 0 && json_equal(old->root, new->root))
		return 0;

	/* Layers the instance joined run their whole lifecycle on their own. */
	for (size_t i = 0; i < new->n_self_layers; i++) {
		const char *l = new->self_layers[i];

		if (stack_has_self_layer(old, l)) {
			remaining++;
			continue;
		}
		tl_add(&t, EVENT_SETUP, l, NULL, false);
		tl_add(&t, EVENT_CONFIGURE, l, NULL, false);
		for (size_t j = 0; j < new->n_apps; j++)
			tl_add(&t, EVENT_DEPLOY, l, new->apps[j].name, false);
		if (new->n_apps == 0)
			tl_add(&t, EVENT_DEPLOY, l, NULL, false);
	}
	/* Layers it left are torn down with the recipes of the old document,
	 * where the layer still exists. */
	for (size_t i = 0; i < old->n_self_layers; i++) {
		const char *l = old->self_layers[i];

		if (stack_has_self_layer(new, l))
			continue;
		tl_add(&t, EVENT_UNDEPLOY, l, NULL, true);
		tl_add(&t, EVENT_SHUTDOWN, l, NULL, true);
	}

	/* Events for every layer (layer NULL) only make sense when the instance
	 * keeps at least one of its layers: joined layers were handled in full
	 * above, and with no layer left there is nothing to run. */
	if (remaining == 0)
		goto done;

	if (membership_changed(old, new) ||
	    value_changed(json_object_get(json_object_get(old->root, "opsworks"), "instance"),
			  json_object_get(json_object_get(new->root, "opsworks"), "instance")) ||
	    other_changed(old, new))
		tl_add(&t, EVENT_CONFIGURE, NULL, NULL, false);

	for (size_t i = 0; i < new->n_apps; i++) {
		const struct stack_app *o = stack_app_find(old, new->apps[i].name);

		if (!o || value_changed(o->json, new->apps[i].json))
			tl_add(&t, EVENT_DEPLOY, NULL, new->apps[i].name, false);
	}
	for (size_t i = 0; i < old->n_apps; i++)
		if (!stack_app_find(new, old->apps[i].name))
			tl_add(&t, EVENT_UNDEPLOY, NULL, old->apps[i].name, true);

done:
	*ret = t.v;
	*ret_n = t.n;
	return 0;
}

void triggers_free(struct trigger *t, size_t n)
{
	if (!t)
		return;
	for (size_t i = 0; i < n; i++) {
		free(t[i].layer);
		free(t[i].app);
	}
	free(t);
}

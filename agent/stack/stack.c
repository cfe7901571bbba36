/* SPDX-License-Identifier: BSD-2-Clause */
/* The stack document (design.md §2): one pass that validates the document's
 * own shape and builds the model, and the queries on it. The recipes'
 * keys are the registry's (recipes_validate()), the diff is diff.c's.
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
#include <stdio.h>
#include <string.h>

#include "util.h"

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

bool stack_address_is_plain(const char *s)
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
		return check_type_error(err, path, "an object", m);
	for (size_t i = 0; member_string_keys[i]; i++) {
		const char *v = NULL;
		r = check_string(err, path, m, member_string_keys[i], &v);
		if (r < 0)
			return r;
		/* Addresses become hosts in configs (haproxy, deploy.cfg, fstab)
		 * and arguments of tools (mount, gluster): nothing but a host. */
		if (v && *v && i < 4 && !stack_address_is_plain(v)) {
			char apath[CHECK_PATH_SIZE], q[256];
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
	ret->private_ip = json_string_value(check_get(m, "private_ip"));
	ret->private_dns_name = json_string_value(check_get(m, "private_dns_name"));
	ret->public_dns_name = json_string_value(check_get(m, "public_dns_name"));
	ret->ip = json_string_value(check_get(m, "ip"));
	ret->status = json_string_value(check_get(m, "status"));
	ret->online = ret->status && strcmp(ret->status, "online") == 0;
	return 0;
}

static int parse_layer(struct stack_error *err, const char *path, const char *shortname, json_t *l,
		       struct stack_layer *ret)
{
	char ipath[CHECK_PATH_SIZE], mpath[CHECK_PATH_SIZE];
	json_t *instances, *m;
	const char *host;
	int r;

	if (!json_is_object(l))
		return check_type_error(err, path, "an object", l);
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
		if ((r = check_key_name(err, ipath, "hostname", host)) < 0)
			return r;
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
		return check_type_error(err, path, "an object", inst);
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

static bool stack_lists_member(const struct stack *s, const char *hostname)
{
	for (size_t i = 0; i < s->n_layers; i++)
		for (size_t j = 0; j < s->layers[i].n_members; j++)
			if (strcmp(s->layers[i].members[j].hostname, hostname) == 0)
				return true;
	return false;
}

static void stack_fallback_first_label(struct stack *s)
{
	const char *dot = strchr(s->instance, '.');
	char *label;

	if (!dot || dot == s->instance || stack_lists_member(s, s->instance))
		return;
	label = xstrndup(s->instance, (size_t)(dot - s->instance));
	if (stack_lists_member(s, label)) {
		free(s->instance);
		s->instance = label;
	} else
		free(label);
}

static int parse_opsworks(struct stack *s, const char *instance, struct stack_error *err)
{
	char path[CHECK_PATH_SIZE], lpath[CHECK_PATH_SIZE], q[256];
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
	inst = check_get(ow, "instance");
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
			if ((r = check_key_name(err, "$.opsworks.layers", "layer shortname", shortname)) < 0)
				return r;
			stack_path_key(lpath, sizeof(lpath), "$.opsworks.layers", shortname);
			r = parse_layer(err, lpath, shortname, l, &s->layers[s->n_layers]);
			s->n_layers++; /* counted even on error, so stack_free sees what was allocated */
			if (r < 0)
				return r;
		}
	}

	/* A host name given as an FQDN (web1.eu-west-1.compute.internal) that
	 * no layer lists is looked up by its first label (web1), as OpsWorks
	 * hostnames are short (design.md §3 Identity). */
	if (!hostname)
		stack_fallback_first_label(s);

	/* Which layers are ours: OpsWorks' own list when it is there, else the
	 * layers that list this instance as a member, in any status. */
	if (inst && check_get(inst, "layers")) {
		json_t *list = check_get(inst, "layers");

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
				s->self = json_object_get(json_object_get(check_get(layers, layer->shortname), "instances"),
							  layer->members[j].hostname);
		}
	}
	return 0;
}

static int parse_scm(struct stack_error *err, const char *parent, json_t *app)
{
	static const char *const types[] = { "git", "archive", "local", NULL };
	char path[CHECK_PATH_SIZE], g[128];
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
			char tpath[CHECK_PATH_SIZE];

			stack_path_key(tpath, sizeof(tpath), path, "scm_type");
			return stack_error_set(err, tpath, "must be \"git\", \"archive\" or \"local\"%s",
					       check_got(g, sizeof(g), "scm_type", type));
		}
	}
	/* A repository URL may carry credentials: it is never quoted back. */
	r = check_text(err, path, scm, "repository", &repo);
	if (r < 0)
		return r;
	if (repo && repo[0] == '-') {
		char rpath[CHECK_PATH_SIZE];

		stack_path_key(rpath, sizeof(rpath), path, "repository");
		return stack_error_set(err, rpath, "must not start with \"-\"");
	}
	r = check_string(err, path, scm, "revision", &rev);
	if (r < 0)
		return r;
	if (rev && (rev[0] == '-' || check_has_space_or_control(rev))) {
		char rpath[CHECK_PATH_SIZE];

		stack_path_key(rpath, sizeof(rpath), path, "revision");
		return stack_error_set(err, rpath, "must not start with \"-\" or contain whitespace%s",
				       check_got(g, sizeof(g), "revision", rev));
	}
	return 0;
}

static int check_string_values(struct stack_error *err, const char *parent, const json_t *obj, const char *key)
{
	char path[CHECK_PATH_SIZE], vpath[CHECK_PATH_SIZE];
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
			return check_type_error(err, vpath, "a string", v);
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
		return check_type_error(err, path, "an object", app);
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
		char dpath[CHECK_PATH_SIZE], q[256];
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
	char path[CHECK_PATH_SIZE];
	json_t *deploy, *app;
	const char *name;
	int r;

	r = check_object(err, "$", s->root, "deploy", &deploy);
	if (r < 0 || !deploy)
		return r;
	s->apps = xcalloc(json_object_size(deploy) + 1, sizeof(struct stack_app));
	json_object_foreach(deploy, name, app) {
		if ((r = check_key_name(err, "$.deploy", "app name", name)) < 0)
			return r;
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
			char apath[CHECK_PATH_SIZE];
			stack_path_key(apath, sizeof(apath), "$.deploy", s->apps[j].name);
			stack_path_key(path, sizeof(path), apath, "deploy_to");
			return stack_error_set(err, path, "%s is %s the deploy_to of app %s", b,
					       strcmp(a, b) != 0 ? "inside" : "the same as", s->apps[i].name);
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
		r = check_type_error(err, "$", "an object", root);
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
	    (r = parse_custom(s, err)) < 0) {
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

void stack_assign_layers(struct stack *s, const char *const *layers)
{
	size_t n = 0;

	while (layers[n])
		n++;
	for (size_t i = 0; i < s->n_self_layers; i++)
		free(s->self_layers[i]);
	free(s->self_layers);
	s->self_layers = NULL;
	s->n_self_layers = 0;
	for (size_t i = 0; i < n; i++)
		self_layer_add(s, layers[i], n);
	for (size_t i = 0; i < s->n_layers; i++)
		s->layers[i].has_self = strv_contains(s->self_layers, s->n_self_layers, s->layers[i].shortname);
}

bool stack_same_identity(const struct stack *a, const struct stack *b)
{
	if (strcmp(a->instance, b->instance) != 0 || a->n_self_layers != b->n_self_layers)
		return false;
	for (size_t i = 0; i < a->n_self_layers; i++)
		if (!strv_contains(b->self_layers, b->n_self_layers, a->self_layers[i]))
			return false;
	return true;
}

bool stack_has_self_layer(const struct stack *s, const char *shortname)
{
	return s && shortname && strv_contains(s->self_layers, s->n_self_layers, shortname);
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

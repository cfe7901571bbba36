/* SPDX-License-Identifier: BSD-2-Clause */
/* Validation of what the storage family reads (design.md §2): the shape of
 * agent.volumes and ebs.devices, the data directories of the Plone sections
 * and the shared blobs, and what the volume, mount and gluster steps would
 * make of them (one device or volume once, data directories apart, no
 * system directory). The family's validate hook, once per stack. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "storage.h"
#include "config.h"
#include "plone.h"
#include "recipe.h"
#include "stack/stack.h"
#include "util.h"

/* ---- the shape of agent.volumes and ebs.devices ---- */

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

static int validate_volume(struct stack_error *err, const char *path, json_t *v)
{
	static const char *const keys[] = { "volume_id", "device", "mount_point", "fstype", "mkfs", "options",
					    "force", NULL };
	char fpath[CHECK_PATH_SIZE], g[128];
	const char *volume_id = NULL, *device = NULL, *mount_point = NULL, *fstype = NULL, *options = NULL;
	int r;

	if (!json_is_object(v))
		return check_type_error(err, path, "an object", v);
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
				       check_got(g, sizeof(g), "volume_id", volume_id));
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
		return stack_error_set(err, fpath, "must be \"xfs\" or \"ext4\"%s", check_got(g, sizeof(g), "fstype", fstype));
	}
	/* The options are written into fstab as they are; libmount reads a
	 * backslash there as the start of an octal escape ("\\040" is a space),
	 * so one would not read back (design.md §8). */
	if (options && (options[0] == '\0' || check_has_space_or_control(options) || strchr(options, '\\'))) {
		stack_path_key(fpath, sizeof(fpath), path, "options");
		return stack_error_set(err, fpath,
				       "must be a non-empty mount option list without whitespace or backslashes");
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
	char fpath[CHECK_PATH_SIZE], q[256];

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

static int validate_agent_volumes(struct stack_error *err, const json_t *volumes)
{
	char hpath[CHECK_PATH_SIZE], vpath[CHECK_PATH_SIZE];
	const char *host;
	json_t *list, *v;
	size_t i;
	int r;

	if (!json_is_object(volumes))
		return check_type_error(err, "$.agent.volumes", "an object", volumes);
	json_object_foreach((json_t *)volumes, host, list) {
		if ((r = check_key_name(err, "$.agent.volumes", "hostname", host)) < 0)
			return r;
		stack_path_key(hpath, sizeof(hpath), "$.agent.volumes", host);
		if (!json_is_array(list))
			return check_type_error(err, hpath, "an array of volumes", list);
		json_array_foreach(list, i, v) {
			stack_path_index(vpath, sizeof(vpath), hpath, i);
			r = validate_volume(err, vpath, v);
			if (r < 0)
				return r;
			r = check_volume_unique(err, vpath, list, i);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

static int validate_ebs_shape(const struct stack *s, struct stack_error *err)
{
	char dpath[CHECK_PATH_SIZE], q[256], q2[256];
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
			return check_type_error(err, dpath, "an object", d);
		if ((r = check_abs_path(err, dpath, d, "mount_point", &mount_point)) < 0 ||
		    (r = check_string(err, dpath, d, "fstype", NULL)) < 0)
			return r;
		if (!mount_point) {
			char mpath[CHECK_PATH_SIZE];

			stack_path_key(mpath, sizeof(mpath), dpath, "mount_point");
			return stack_error_set(err, mpath, "is required");
		}
		/* One mount point for two devices: the second hides the first. */
		json_object_foreach(devices, other, o) {
			char mpath[CHECK_PATH_SIZE];

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

/* ---- what the recipes make of them ---- */

/* s: not empty, not starting with '-', at most 253 bytes of ASCII letters,
 * digits and the characters of extra. */
static bool chars_ok(const char *s, const char *extra)
{
	if (!*s || *s == '-' || strlen(s) > 253)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      strchr(extra, *s)))
			return false;
	return true;
}

bool storage_host_is_valid(const char *s)
{
	return chars_ok(s, ".-:_");
}

static bool network_is_valid(const char *s)
{
	return chars_ok(s, ".-:/*_");
}

static bool layer_name_is_valid(const char *s)
{
	return name_is_valid(s);
}

/* The addresses of the blob layer's members become mount sources and
 * gluster CLI arguments: they must look like host names or addresses (no
 * leading '-', no spaces), so that no stack value can pass for an option. */
static int validate_blob_layer(const struct stack *s, struct stack_error *err)
{
	static const char *const keys[] = { "private_ip", "private_dns_name", "ip", "public_dns_name" };
	const struct stack_layer *l = stack_layer_find(s, storage_blobs_layer(s));
	char path[512], lpath[256], ipath[384];

	for (size_t i = 0; l && i < l->n_members; i++) {
		const struct stack_member *m = &l->members[i];
		const char *v[] = { m->private_ip, m->private_dns_name, m->ip, m->public_dns_name };

		bool any = false;

		for (size_t k = 0; k < ELEMENTSOF(keys); k++) {
			any = any || (v[k] && *v[k]);
			if (!v[k] || !*v[k] || storage_host_is_valid(v[k])) /* OpsWorks writes "" for none */
				continue;
			stack_path_key(lpath, sizeof(lpath), "$.opsworks.layers", l->shortname);
			stack_path_key(ipath, sizeof(ipath), lpath, "instances");
			stack_path_key(lpath, sizeof(lpath), ipath, m->hostname);
			stack_path_key(path, sizeof(path), lpath, keys[k]);
			return stack_error_set(err, path, "must be a host name or address (layer %s holds the shared blobs)",
					       l->shortname);
		}
		/* No address at all: its hostname is the address used. */
		if (!any && (!m->hostname || !storage_host_is_valid(m->hostname))) {
			stack_path_key(lpath, sizeof(lpath), "$.opsworks.layers", l->shortname);
			stack_path_key(ipath, sizeof(ipath), lpath, "instances");
			stack_path_key(path, sizeof(path), ipath, m->hostname ? m->hostname : "");
			return stack_error_set(err, path,
					       "has no address and its hostname is not a valid host name, which would "
					       "be used instead (layer %s holds the shared blobs)",
					       l->shortname);
		}
	}
	return 0;
}

/* Directories the storage recipes create, chmod or mount over must never
 * be the system's own (/, /etc, /usr, /var, ...). */
static int validate_not_system(struct stack_error *err, const char *path, const char *dir)
{
	if (path_is_system_dir(dir))
		return stack_error_set(err, path, "must not be a system directory (%s)", dir);
	return 0;
}

/* The name a device is compared by (malloc'd): /dev/sdX and /dev/xvdX are
 * one device, as volume_candidates() finds them (a Xen kernel renames the
 * first); paths are in normal form already (stack.c). */
char *storage_device_key(const char *dev)
{
	if (dev && strncmp(dev, "/dev/sd", 7) == 0)
		return xasprintf("/dev/xvd%s", dev + 7);
	return xstrdup(dev ? dev : "");
}

struct vol_ref {
	char *dev;          /* owned: storage_device_key() */
	const char *device; /* borrowed, as written (normal form) */
	const char *volume_id, *mount_point, *host;
	bool ebs;           /* from ebs.devices */
	char path[640];     /* its JSON path */
};

/* One device, or one EBS volume id, is one volume: listed twice (agent.volumes
 * and ebs.devices, /dev/sdf and /dev//sdf or /dev/xvdf) it would be mounted
 * at two places, or formatted while mounted. Only the one case the planner
 * merges is allowed: ebs.devices naming the device and mount point of an
 * agent.volumes entry of this instance (agent.volumes wins). */
static int validate_volumes_unique(const struct stack *s, struct stack_error *err)
{
	const json_t *vols = json_object_get(json_object_get(s->root, "agent"), "volumes");
	const json_t *devices = json_object_get(json_object_get(s->root, "ebs"), "devices");
	const json_t *list, *v;
	const char *key;
	struct vol_ref *refs;
	size_t n = 0, total = json_object_size(devices), i;
	char hpath[512];
	int r = 0;

	json_object_foreach((json_t *)vols, key, list)
		total += json_array_size(list);
	refs = xcalloc(total + 1, sizeof(*refs));
	json_object_foreach((json_t *)vols, key, list) {
		stack_path_key(hpath, sizeof(hpath), "$.agent.volumes", key);
		json_array_foreach(list, i, v) {
			struct vol_ref *e = &refs[n++];

			e->device = json_string_value(json_object_get(v, "device"));
			e->dev = e->device ? storage_device_key(e->device) : NULL;
			e->volume_id = json_string_value(json_object_get(v, "volume_id"));
			e->mount_point = json_string_value(json_object_get(v, "mount_point"));
			e->host = key;
			stack_path_index(e->path, sizeof(e->path), hpath, i);
		}
	}
	json_object_foreach((json_t *)devices, key, v) {
		struct vol_ref *e = &refs[n++];

		e->device = key;
		e->dev = storage_device_key(key);
		e->mount_point = json_string_value(json_object_get(v, "mount_point"));
		e->host = s->instance;
		e->ebs = true;
		stack_path_key(e->path, sizeof(e->path), "$.ebs.devices", key);
	}
	for (i = 0; i < n && r == 0; i++)
		for (size_t j = 0; j < i && r == 0; j++) {
			const struct vol_ref *a = &refs[i], *b = &refs[j];
			bool same_host = a->host && b->host && strcmp(a->host, b->host) == 0;

			if (a->volume_id && b->volume_id && strcmp(a->volume_id, b->volume_id) == 0)
				r = stack_error_set(err, a->path,
						    "volume %s is also %s: one EBS volume attaches to one instance, at "
						    "one mount point",
						    a->volume_id, b->path);
			else if (same_host && a->dev && b->dev && strcmp(a->dev, b->dev) == 0 &&
				 !(a->ebs != b->ebs && a->mount_point && b->mount_point &&
				   strcmp(a->mount_point, b->mount_point) == 0))
				r = stack_error_set(err, a->path,
						    "device %s is also the device of %s (%s, mounted on %s): one "
						    "device cannot be mounted at two places",
						    a->device, b->path, b->device,
						    b->mount_point ? b->mount_point : "?");
		}
	for (i = 0; i < n; i++)
		free(refs[i].dev);
	free(refs);
	return r;
}

/* agent.volumes and ebs.devices: their shape is checked above; here, what
 * the volume recipes make of them. */
static int validate_volumes(const struct stack *s, struct stack_error *err)
{
	const json_t *agent = json_object_get(s->root, "agent");
	const json_t *vols = json_is_object(agent) ? json_object_get(agent, "volumes") : NULL;
	const json_t *ebs = json_object_get(s->root, "ebs");
	const json_t *devices = json_is_object(ebs) ? json_object_get(ebs, "devices") : NULL;
	const json_t *list, *v, *mp, *fs;
	const char *key;
	char hpath[512], vpath[640], path[768];
	size_t i;
	int r;

	if (json_is_object(vols))
		json_object_foreach((json_t *)vols, key, list) {
			stack_path_key(hpath, sizeof(hpath), "$.agent.volumes", key);
			json_array_foreach(list, i, v) {
				mp = json_object_get(v, "mount_point");
				if (!json_is_string(mp))
					continue;
				stack_path_index(vpath, sizeof(vpath), hpath, i);
				stack_path_key(path, sizeof(path), vpath, "mount_point");
				if ((r = validate_not_system(err, path, json_string_value(mp))) < 0)
					return r;
			}
		}
	if (json_is_object(devices))
		json_object_foreach((json_t *)devices, key, v) {
			stack_path_key(vpath, sizeof(vpath), "$.ebs.devices", key);
			mp = json_object_get(v, "mount_point");
			if (json_is_string(mp)) {
				stack_path_key(path, sizeof(path), vpath, "mount_point");
				if ((r = validate_not_system(err, path, json_string_value(mp))) < 0)
					return r;
			}
			fs = json_object_get(v, "fstype");
			if (fs && (!json_is_string(fs) || (strcmp(json_string_value(fs), "xfs") != 0 &&
							   strcmp(json_string_value(fs), "ext4") != 0))) {
				stack_path_key(path, sizeof(path), vpath, "fstype");
				return stack_error_set(err, path, "must be \"xfs\" or \"ext4\"");
			}
		}
	return 0;
}

/* A data directory's name in messages: its key, or what it is. */
static const char *dir_name(const struct storage_dir *d)
{
	return d->json_path ? d->json_path + 2 : d->what;
}

static const char *relation(const char *a, const char *b)
{
	return strcmp(a, b) == 0 ? "is the same directory as" : path_is_under(a, b) ? "is inside" : "holds";
}

/* The data directories are one thing each: blobs (exported over NFS when
 * shared), the file storage (Data.fs, never shared) and Solr's index. One
 * inside another would export Data.fs with the blobs or chown one to the
 * other's owner. Nor may one be, hold or lie inside an app's tree: it would
 * be chowned to the app's user, and removed with the app at its undeploy.
 * The directories are the effective ones (storage_data_dirs), defaults
 * included: deploy_to "/mnt/shared" holds the default file storage
 * /mnt/shared/zodb/filestorage. Paths are in normal form (stack.c), compared
 * a whole component at a time. An app may live below a volume's mount point. */
static int validate_data_dirs_apart(const struct stack *s, struct stack_error *err)
{
	_cleanup_(storage_dirs_free) struct storage_dirs d = { 0 };
	char apath[384], path[512];

	storage_data_dirs(s, recipes_config(), &d);
	for (size_t i = 0; i < d.n; i++) {
		const struct storage_dir *a = &d.v[i];

		if (a->kind == STORAGE_VOLUME)
			continue;
		for (size_t j = 0; j < i; j++) {
			const struct storage_dir *b = &d.v[j];

			/* Two defaults are apart by construction; one kind may nest. */
			if (b->kind == STORAGE_VOLUME || a->kind == b->kind || (!a->json_path && !b->json_path) ||
			    !(path_is_under(a->path, b->path) || path_is_under(b->path, a->path)))
				continue;
			if (a->json_path)
				return stack_error_set(err, a->json_path, "%s %s %s (%s)", a->path,
						       relation(a->path, b->path), dir_name(b), b->path);
			return stack_error_set(err, b->json_path, "%s %s %s (%s)", b->path, relation(b->path, a->path),
					       dir_name(a), a->path);
		}
		for (size_t k = 0; k < s->n_apps; k++) {
			const struct stack_app *app = &s->apps[k];

			if (!path_is_under(app->deploy_to, a->path) && !path_is_under(a->path, app->deploy_to))
				continue;
			if (a->json_path)
				return stack_error_set(err, a->json_path, "%s %s the deploy_to of app %s (%s)", a->path,
						       strcmp(a->path, app->deploy_to) == 0	 ? "is"
						       : path_is_under(app->deploy_to, a->path) ? "holds"
												 : "is inside",
						       app->name, app->deploy_to);
			stack_path_key(apath, sizeof(apath), "$.deploy", app->name);
			stack_path_key(path, sizeof(path), apath, "deploy_to");
			return stack_error_set(err, path,
					       "%s %s %s (%s): an undeploy of app %s would remove it, or the "
					       "data would be chowned to the app's user",
					       app->deploy_to, relation(app->deploy_to, a->path), a->what, a->path,
					       app->name);
		}
	}
	return 0;
}

/* filestorage_dir, nfs_blobs and gluster_blobs of plone_instances and
 * plone_zeoserver. */
static int validate_sections(const struct stack *s, struct stack_error *err)
{
	static const char *const sections[] = { "plone_instances", "plone_zeoserver" };
	char parent[64], path[CHECK_PATH_SIZE];
	int r;

	for (size_t k = 0; k < ELEMENTSOF(sections); k++) {
		const json_t *sec = json_object_get(s->root, sections[k]);
		const json_t *fs = json_object_get(sec, "filestorage_dir");

		if (!json_is_object(sec))
			continue;
		(void)snprintf(parent, sizeof(parent), "$.%s", sections[k]);
		stack_path_key(path, sizeof(path), parent, "filestorage_dir");
		if ((r = check_abs_path_ok(err, path, fs)) < 0 ||
		    (fs && (r = validate_not_system(err, path, json_string_value(fs))) < 0) ||
		    (r = check_flag(err, parent, sec, "nfs_blobs")) < 0 ||
		    (r = check_flag(err, parent, sec, "gluster_blobs")) < 0)
			return r;
	}
	return 0;
}

/* plone_blobs: where the shared blobs live and who serves them. */
static int validate_blobs(const struct stack *s, struct stack_error *err)
{
	const json_t *b = json_object_get(s->root, "plone_blobs"), *v, *e;
	char path[CHECK_PATH_SIZE];
	size_t i;
	int r;

	if (!b)
		return 0;
	if (!json_is_object(b))
		return stack_error_set(err, "$.plone_blobs", "must be an object");
	v = json_object_get(b, "blob_dir");
	if ((r = check_abs_path_ok(err, "$.plone_blobs.blob_dir", v)) < 0 ||
	    (v && (r = validate_not_system(err, "$.plone_blobs.blob_dir", json_string_value(v))) < 0))
		return r;
	if ((r = check_string_ok(err, "$.plone_blobs", b, "host", storage_host_is_valid,
				 "must be a host name or address")) < 0 ||
	    (r = check_string_ok(err, "$.plone_blobs", b, "network", network_is_valid,
				 "must be an exports(5) client: address, network/prefix or host name")) < 0 ||
	    (r = check_string_ok(err, "$.plone_blobs", b, "layer", layer_name_is_valid,
				 "must be a layer shortname ([A-Za-z0-9_.-])")) < 0)
		return r;
	v = json_object_get(b, "servers");
	if (v && !json_is_array(v))
		return stack_error_set(err, "$.plone_blobs.servers", "must be an array of host names or addresses");
	json_array_foreach(v, i, e) {
		stack_path_index(path, sizeof(path), "$.plone_blobs.servers", i);
		if (!json_is_string(e) || !storage_host_is_valid(json_string_value(e)))
			return stack_error_set(err, path, "must be a host name or address");
	}
	return 0;
}

int storage_validate_shape(const struct stack *s, struct stack_error *err)
{
	const json_t *volumes = check_get(check_get(s->root, "agent"), "volumes");
	int r;

	if (volumes && (r = validate_agent_volumes(err, volumes)) < 0)
		return r;
	return validate_ebs_shape(s, err);
}

int storage_validate(const struct stack *s, struct stack_error *err)
{
	int r;

	if ((r = storage_validate_shape(s, err)) < 0 || (r = validate_sections(s, err)) < 0 ||
	    (r = validate_volumes(s, err)) < 0 ||
	    (r = validate_volumes_unique(s, err)) < 0 || (r = validate_data_dirs_apart(s, err)) < 0 ||
	    (r = validate_blobs(s, err)) < 0)
		return r;
	return validate_blob_layer(s, err);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* Storage: EBS data volumes, NFS and GlusterFS shared blobs (issue 4;
 * reference §6, design.md §2). Planners only: the work is done by the
 * "volume", "mount", "unmount" and "gluster" steps. */
#include "storage.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "steps/plan.h"
#include "stack/stack.h"
#include "steps/step_gluster.h"
#include "steps/step_mount.h"
#include "steps/step_volume.h"
#include "plone.h"
#include "recipe.h"
#include "util.h"

#define NFS_EXPORT_DIR "/srv/exports"
#define NFS_EXPORTS_FILE "/etc/exports.d/agentd-blobs.exports"
#define GLUSTER_VOLUME "blobs"
/* What the cookbook mounted with (reference §6), less the fstab-only words:
 * "auto" is the default and Ubuntu's "nobootwait" is spelled "nofail" in
 * the fstab line. */
#define NFS_MOUNT_OPTIONS "rw,noatime,nodiratime,_netdev"
#define GLUSTER_MOUNT_OPTIONS "rw,direct-io-mode=disable"


static const json_t *blobs_section(const struct stack *s)
{
	return plone_section(s, "plone_blobs");
}

static const char *blobs_string(const struct stack *s, const char *key)
{
	const json_t *v = json_object_get(blobs_section(s), key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

const char *storage_blobs_layer(const struct stack *s)
{
	const char *l = blobs_string(s, "layer");

	return l ? l : "shared_blobs";
}

/* The n-th online member of the blob layer (document order), or NULL. */
static const struct stack_member *blobs_online_member(const struct stack *s, size_t n)
{
	const struct stack_layer *l = stack_layer_find(s, storage_blobs_layer(s));

	for (size_t i = 0; l && i < l->n_members; i++)
		if (l->members[i].online && n-- == 0)
			return &l->members[i];
	return NULL;
}

/* plone_blobs.servers[i], or NULL. */
static const char *blobs_server(const struct stack *s, size_t i)
{
	const json_t *v = json_array_get(json_object_get(blobs_section(s), "servers"), i);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

static char *eph_path(const struct recipe_ctx *ctx, const char *sub)
{
	const char *eph = config_string(ctx->config, "ephemeral_mount_point");

	if (!eph || strcmp(eph, "/") == 0)
		eph = "";
	return xasprintf("%s%s", eph, sub);
}

/* EBS volumes. */

static int plan_one_volume(const struct recipe_ctx *ctx, struct plan *plan, const struct volume_spec *spec,
			   char **ret_error)
{
	if (!plan_add_dir(plan, spec->mount_point, (mode_t)-1, NULL, NULL, ret_error))
		return -EINVAL;
	if (!plan_add_volume(plan, spec, ret_error))
		return -EINVAL;
	return 0;
}

static int plan_volumes(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	const json_t *root = ctx->stack->root;
	const json_t *vols = json_object_get(json_object_get(json_object_get(root, "agent"), "volumes"),
					     ctx->stack->instance);
	const json_t *devices = json_object_get(json_object_get(root, "ebs"), "devices");
	_cleanup_free_ const char **mkfs = config_argv(ctx->config, "mkfs_command");
	long timeout_ms = config_int(ctx->config, "device_timeout") * 1000;
	const json_t *v;
	const char *dev;
	size_t i;
	int r;

	json_array_foreach(vols, i, v) {
		struct volume_spec spec = {
			.volume_id = json_string_value(json_object_get(v, "volume_id")),
			.device = json_string_value(json_object_get(v, "device")),
			.mount_point = json_string_value(json_object_get(v, "mount_point")),
			.fstype = json_string_value(json_object_get(v, "fstype")),
			.options = json_string_value(json_object_get(v, "options")),
			.mkfs = json_is_true(json_object_get(v, "mkfs")),
			.force = json_is_true(json_object_get(v, "force")),
			.timeout_ms = timeout_ms,
			.mkfs_argv = mkfs,
		};

		if ((r = plan_one_volume(ctx, plan, &spec, ret_error)) < 0)
			return r;
	}
	/* OpsWorks' own form: this instance's volumes by device name. OpsWorks
	 * formatted a blank volume with xfs; so do we, and never one that has a
	 * filesystem. agent.volumes wins for the same mount point. */
	json_object_foreach((json_t *)devices, dev, v) {
		const char *mp = json_string_value(json_object_get(v, "mount_point"));
		const json_t *o;
		bool dup = false;

		_cleanup_free_ char *dk = storage_device_key(dev);

		/* The same mount point, or the same device (validation allows
		 * only both at once): one volume, agent.volumes' entry. */
		json_array_foreach(vols, i, o) {
			_cleanup_free_ char *ok = storage_device_key(json_string_value(json_object_get(o, "device")));

			dup = dup || (mp && json_is_string(json_object_get(o, "mount_point")) &&
				      strcmp(mp, json_string_value(json_object_get(o, "mount_point"))) == 0) ||
			      (json_is_string(json_object_get(o, "device")) && strcmp(dk, ok) == 0);
		}
		if (dup)
			continue;
		struct volume_spec spec = {
			.device = dev,
			.mount_point = mp,
			.fstype = json_is_string(json_object_get(v, "fstype")) ? json_string_value(json_object_get(v, "fstype"))
										 : "xfs",
			.mkfs = true,
			.timeout_ms = timeout_ms,
			.mkfs_argv = mkfs,
		};
		if ((r = plan_one_volume(ctx, plan, &spec, ret_error)) < 0)
			return r;
	}
	return 0;
}

static int storage_plan_before(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	if (ctx->event != EVENT_SETUP && ctx->event != EVENT_CONFIGURE)
		return 0;
	return plan_volumes(ctx, plan, ret_error);
}

/* Shared blobs, client side. */

struct blob_mount {
	bool gluster;
	char *source;  /* owned, NULL: no server known */
	char *options; /* owned */
	char *why;     /* owned, when source is NULL */
};

static void blob_mount_done(struct blob_mount *b)
{
	free(b->source);
	free(b->options);
	free(b->why);
}

static void blob_mount_find(const struct stack *s, const json_t *section, struct blob_mount *ret)
{
	const char *host = blobs_string(s, "host"), *backup = NULL;
	const struct stack_member *m;

	*ret = (struct blob_mount){ .gluster = !json_is_true(json_object_get(section, "nfs_blobs")) };
	if (ret->gluster) {
		/* host, else servers[0], else the first online member; the backup
		 * volfile server is the next one. */
		if (!host && (host = blobs_server(s, 0)))
			backup = blobs_server(s, 1);
		if (!host && (m = blobs_online_member(s, 0))) {
			host = plone_member_address(m);
			backup = (m = blobs_online_member(s, 1)) ? plone_member_address(m) : NULL;
		} else if (host && !backup) {
			backup = blobs_server(s, 1);
			if (!backup && (m = blobs_online_member(s, 0)) && strcmp(plone_member_address(m), host) != 0)
				backup = plone_member_address(m);
		}
	} else if (!host && (m = blobs_online_member(s, 0)))
		host = plone_member_address(m);
	if (!host) {
		ret->why = xasprintf("no online member in layer %s and no plone_blobs.host: shared blobs are not "
				     "mounted yet; the next configure mounts them",
				     storage_blobs_layer(s));
		return;
	}
	/* A member's address may fall back to its hostname, which validation
	 * cannot always vouch for: never build a mount source or option from a
	 * word that could pass for an option. */
	if (!storage_host_is_valid(host) || (backup && !storage_host_is_valid(backup))) {
		ret->why = xasprintf("the shared blobs server address in layer %s is not a valid host name or "
				     "address: shared blobs are not mounted",
				     storage_blobs_layer(s));
		return;
	}
	if (ret->gluster) {
		ret->source = xasprintf("%s:/%s", host, GLUSTER_VOLUME);
		ret->options = backup ? xasprintf("%s,backupvolfile-server=%s", GLUSTER_MOUNT_OPTIONS, backup)
				      : xstrdup(GLUSTER_MOUNT_OPTIONS);
	} else {
		ret->source = xasprintf("%s:%s", host, NFS_EXPORT_DIR);
		ret->options = xstrdup(NFS_MOUNT_OPTIONS);
	}
}

int storage_plan_blob_mounts(const struct recipe_ctx *ctx, const struct stack_app *app, const json_t *section,
			     struct plan *plan, char **ret_error)
{
	_cleanup_free_ char *blobs = eph_path(ctx, "/shared/blobs");
	_cleanup_free_ char *store = eph_path(ctx, "/shared/blobs/blobstorage");
	_cleanup_free_ char *link = xasprintf("%s/shared/var/blobstorage", app->deploy_to);
	_cleanup_free_ char *fstab_opts = NULL;
	struct blob_mount b;
	struct mount_spec spec;
	int r = -EINVAL;

	blob_mount_find(ctx->stack, section, &b);
	if (!b.source) {
		plan_add_note(plan, blobs, b.why);
		blob_mount_done(&b);
		return 0;
	}
	fstab_opts = xasprintf("%s,nofail", b.options);
	spec = (struct mount_spec){
		.source = b.source,
		.target = blobs,
		.fstype = b.gluster ? "glusterfs" : "nfs",
		.options = b.options,
		.fstab_options = fstab_opts,
		.fstab_pass = 0,
	};
	if (plan_add_dir(plan, blobs, 0750, NULL, NULL, ret_error) && plan_add_mount(plan, &spec, ret_error) &&
	    plan_add_dir(plan, store, 0750, NULL, NULL, ret_error) && plan_add_link(plan, link, store, ret_error))
		r = 0;
	blob_mount_done(&b);
	return r;
}

int storage_plan_filestorage(const struct recipe_ctx *ctx, const struct stack_app *app, const json_t *section,
			     struct plan *plan, char **ret_error)
{
	const json_t *d = json_object_get(section, "filestorage_dir");
	_cleanup_free_ char *dir = json_is_string(d) ? xstrdup(json_string_value(d))
						    : eph_path(ctx, "/shared/zodb/filestorage");
	_cleanup_free_ char *link = xasprintf("%s/shared/var/filestorage", app->deploy_to);

	if (!plan_add_dir(plan, dir, 0700, app->user, app->group, ret_error) ||
	    !plan_add_link(plan, link, dir, ret_error))
		return -EINVAL;
	return 0;
}

/* The section blob_mounts reads for a layer: plone_zeoserver for the
 * zeoserver layer, else plone_instances. */
static const char *blob_mounts_section(const char *layer)
{
	return layer && strcmp(layer, "zeoserver") == 0 ? "plone_zeoserver" : "plone_instances";
}

/* Which section (plone_instances, plone_zeoserver) a layer's recipes use,
 * from the recipes it runs at setup. */
static const char *layer_blob_section(const struct stack *s, const char *layer)
{
	size_t n = 0;
	_cleanup_free_ const char **names = recipes_layer_recipes(s, layer, EVENT_SETUP, &n);
	const char *section = NULL;

	for (size_t i = 0; i < n && !section; i++) {
		const char *c = recipe_canonical_name(names[i]);

		if (c && strncmp(c, "instances-", 10) == 0)
			section = "plone_instances";
		else if (c && strncmp(c, "zeoserver-", 10) == 0)
			section = "plone_zeoserver";
		else if (c && strcmp(c, "blob_mounts") == 0)
			section = blob_mounts_section(layer);
	}
	return section;
}

/* The recipe blob_mounts on its own (the cookbook's included recipe): for
 * layers that do not run the instances or zeoserver recipes of agentd, e.g.
 * an app deployed by custom recipes that still wants the shared blobs. */
static int blob_mounts_plan(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	const char *name = blob_mounts_section(ctx->layer);
	const json_t *section = plone_section(ctx->stack, name);
	const json_t *app_name = json_object_get(section, "app_name");
	const char *app = json_is_string(app_name) ? json_string_value(app_name)
			  : strcmp(name, "plone_zeoserver") == 0 ? "zeoserver"
								 : "plone_instances";
	const struct stack_app *a = stack_app_find(ctx->stack, app);

	if (ctx->event != EVENT_SETUP && ctx->event != EVENT_CONFIGURE && ctx->event != EVENT_DEPLOY) {
		plan_add_note(plan, "blob_mounts", "nothing to do for this event");
		return 0;
	}
	if (a && strcmp(name, "plone_zeoserver") == 0) {
		int r = storage_plan_filestorage(ctx, a, section, plan, ret_error);

		if (r < 0)
			return r;
	}
	if (!(json_is_true(json_object_get(section, "nfs_blobs")) ||
	      json_is_true(json_object_get(section, "gluster_blobs")))) {
		plan_add_note(plan, "blob_mounts", "neither nfs_blobs nor gluster_blobs is set");
		return 0;
	}
	if (!a) {
		_cleanup_free_ char *m = xasprintf("no app deploy.%s: nowhere to link the blobs", app);

		plan_add_note(plan, "blob_mounts", m);
		return 0;
	}
	return storage_plan_blob_mounts(ctx, a, section, plan, ret_error);
}

/* At shutdown, after the layer's services stopped: unmount the shared
 * blobs the layer's recipes mounted (only when the fstab line is agentd's). */
static int storage_plan_after_layer(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	const char *name;
	const json_t *section;
	_cleanup_free_ char *blobs = NULL;

	if (ctx->event != EVENT_SHUTDOWN || !ctx->layer)
		return 0;
	name = layer_blob_section(ctx->stack, ctx->layer);
	section = name ? plone_section(ctx->stack, name) : NULL;
	if (!section || !(json_is_true(json_object_get(section, "nfs_blobs")) ||
			  json_is_true(json_object_get(section, "gluster_blobs"))))
		return 0;
	blobs = eph_path(ctx, "/shared/blobs");
	return plan_add_unmount(plan, blobs, false, ret_error) ? 0 : -EINVAL;
}

/* Shared blobs, server side: NFS. */

static const char *self_private_ip(const struct recipe_ctx *ctx)
{
	const struct stack_member *m = ctx->layer ? plone_self_member(ctx->stack, ctx->layer) : NULL;
	const json_t *ip = json_object_get(ctx->stack->self, "private_ip");

	if (m && m->private_ip)
		return m->private_ip;
	return json_is_string(ip) ? json_string_value(ip) : NULL;
}

static int nfs_blobs_plan(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	static const char nfs_common[] = "# Written by agentd (nfs_blobs): fixed ports for statd.\n"
					 "STATDOPTS=\"--port 32765 --outgoing-port 32766\"\n"
					 "NEED_STATD=yes\n";
	const char *network = blobs_string(ctx->stack, "network"), *ip;
	_cleanup_free_ char *net = NULL, *exports = NULL;
	_cleanup_free_ const char **exportfs = config_argv(ctx->config, "exportfs_command");
	struct exec_step_opts o = { .argv = (char *const *)exportfs, .timeout_sec = 60 };
	struct step *s;

	if (!network) {
		ip = self_private_ip(ctx);
		if (!ip) {
			*ret_error = xasprintf("no plone_blobs.network and no private_ip for this instance: cannot "
					       "say whom to export %s to",
					       NFS_EXPORT_DIR);
			return -EINVAL;
		}
		network = net = xasprintf("%s/8", ip);
	}
	exports = xasprintf("# Written by agentd (nfs_blobs).\n%s %s(rw,sync,no_subtree_check,no_root_squash)\n",
			    NFS_EXPORT_DIR, network);
	if (!plan_add_dir(plan, NFS_EXPORT_DIR, 0750, NULL, NULL, ret_error) ||
	    !plan_add_dir(plan, NFS_EXPORT_DIR "/blobstorage", 0750, NULL, NULL, ret_error) ||
	    !plan_add_dir(plan, NFS_EXPORT_DIR "/tmp", 01777, NULL, NULL, ret_error) ||
	    !plan_add_file(plan, "/etc/default/nfs-common", nfs_common, strlen(nfs_common), 0644, NULL, NULL,
			   ret_error) ||
	    !(s = plan_add_file(plan, NFS_EXPORTS_FILE, exports, strlen(exports), 0644, NULL, NULL, ret_error)))
		return -EINVAL;
	s->id = xstrdup("storage-exports");
	if (!(s = plan_add_exec(plan, "exportfs", &o, ret_error)))
		return -EINVAL;
	step_only_if_changed(s, "storage-exports");
	return 0;
}

/* Shared blobs, server side: GlusterFS. */

static int gluster_plan(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	_cleanup_free_ char *brick_dir = eph_path(ctx, "/gluster-exports");
	_cleanup_free_ char *brick = eph_path(ctx, "/gluster-exports/brick");
	const struct stack_layer *l = ctx->layer ? stack_layer_find(ctx->stack, ctx->layer) : NULL;
	const char *self = self_private_ip(ctx);
	const char **peers;
	size_t n = 0, cap = 8;
	const json_t *servers = json_object_get(blobs_section(ctx->stack), "servers"), *v;
	size_t i;
	int r = 0;

	peers = xcalloc(cap + 1, sizeof(char *));
	/* Peers: plone_blobs.servers, or the layer's online members plus this
	 * instance, in document order. */
	if (json_array_size(servers) > 0) {
		json_array_foreach(servers, i, v) {
			if (n == cap)
				peers = xrealloc(peers, ((cap *= 2) + 1) * sizeof(char *));
			peers[n++] = json_string_value(v);
		}
	} else
		for (i = 0; l && i < l->n_members; i++)
			if (l->members[i].online || l->members[i].self) {
				if (n == cap)
					peers = xrealloc(peers, ((cap *= 2) + 1) * sizeof(char *));
				peers[n++] = plone_member_address(&l->members[i]);
			}
	peers[n] = NULL;
	for (i = 0; i < n; i++)
		if (!peers[i] || !storage_host_is_valid(peers[i])) {
			*ret_error = xasprintf("GlusterFS peer %zu of layer %s has no valid address", i + 1,
					       ctx->layer ? ctx->layer : "?");
			r = -EINVAL;
			goto out;
		}
	if (!self || n == 0) {
		plan_add_note(plan, "gluster", "this instance has no private_ip in the layer: no GlusterFS peer");
		goto out;
	}
	if (!plan_add_dir(plan, brick_dir, 0755, NULL, NULL, ret_error) ||
	    /* Its mode is the volume root's: clients set it (blob_mounts makes it 0750). */
	    !plan_add_dir(plan, brick, (mode_t)-1, NULL, NULL, ret_error)) {
		r = -EINVAL;
		goto out;
	}
	/* Only the first peer configures the volume, as the cookbook did; the
	 * others only provide their brick directory. */
	if (strcmp(peers[0], self) != 0) {
		plan_add_note(plan, "gluster", "not the first GlusterFS peer: the first one manages the volume");
		goto out;
	}
	{
		_cleanup_free_ const char **command = config_argv(ctx->config, "gluster_command");
		struct gluster_spec spec = {
			.volume = GLUSTER_VOLUME,
			.brick = brick,
			.peers = peers,
			.command = command,
		};
		if (!plan_add_gluster(plan, &spec, ret_error))
			r = -EINVAL;
	}
out:
	free(peers);
	return r;
}

/* Effective data directories. */

/* Whether a layer of s runs, at any event, a built-in recipe named name, or
 * (prefix true) whose name starts with name. */
static bool stack_names_recipe(const struct stack *s, const char *name, bool prefix)
{
	const json_t *agent_layers = json_object_get(json_object_get(s->root, "agent"), "layers");
	size_t n_layers = s->n_layers + json_object_size(agent_layers);
	const char *layer, *k;
	void *it = json_object_iter((json_t *)agent_layers);

	for (size_t i = 0; i < n_layers; i++) {
		if (i < s->n_layers)
			layer = s->layers[i].shortname;
		else {
			layer = json_object_iter_key(it);
			it = json_object_iter_next((json_t *)agent_layers, it);
		}
		for (int ev = 0; layer && ev < _EVENT_MAX; ev++) {
			size_t n = 0;
			_cleanup_free_ const char **names = recipes_layer_recipes(s, layer, (enum event)ev, &n);

			for (size_t j = 0; j < n; j++) {
				k = names[j] ? recipe_canonical_name(names[j]) : NULL;
				if (k && (prefix ? strncmp(k, name, strlen(name)) == 0 : strcmp(k, name) == 0))
					return true;
			}
		}
	}
	return false;
}

static void dirs_add(struct storage_dirs *d, const char *path, enum storage_kind kind, const char *json_path,
		     char *what)
{
	_cleanup_free_ char *n = NULL;

	if (!path || path_normalize(path, &n) < 0) {
		free(what);
		return;
	}
	d->v = xrealloc(d->v, (d->n + 1) * sizeof(*d->v));
	d->v[d->n++] = (struct storage_dir){ .path = n, .what = what, .json_path = json_path, .kind = kind };
	n = NULL;
}

/* A key's value, else the default <eph><sub> when the recipes that would
 * use it are in the stack. */
static void dirs_add_key(struct storage_dirs *d, const struct stack *s, const char *eph, const char *section,
			 const char *key, const char *json_path, const char *sub, bool used, enum storage_kind kind,
			 const char *what)
{
	const char *v = json_string_value(json_object_get(plone_section(s, section), key));
	_cleanup_free_ char *def = NULL;

	if (v)
		dirs_add(d, v, kind, json_path, xasprintf("%s (%s.%s)", what, section, key));
	else if (sub && used) {
		def = xasprintf("%s%s", eph, sub);
		dirs_add(d, def, kind, NULL, xasprintf("%s (%s.%s, default)", what, section, key));
	}
}

void storage_data_dirs(const struct stack *s, const struct config *c, struct storage_dirs *ret)
{
	const char *eph = c ? config_string(c, "ephemeral_mount_point") : "/mnt";
	const json_t *mine, *v;
	const char *k;
	bool shared = false;
	size_t i;

	*ret = (struct storage_dirs){ 0 };
	if (!s)
		return;
	if (!eph || strcmp(eph, "/") == 0)
		eph = "";
	dirs_add_key(ret, s, eph, "plone_blobs", "blob_dir", "$.plone_blobs.blob_dir", NULL, false, STORAGE_BLOBS,
		     "the blob storage");
	/* The ZEO file storage: by the zeoserver recipes, by blob_mounts on
	 * the zeoserver layer, and by the instances recipes of a single box
	 * whose parts include zeoserver. */
	dirs_add_key(ret, s, eph, "plone_zeoserver", "filestorage_dir", "$.plone_zeoserver.filestorage_dir",
		     "/shared/zodb/filestorage",
		     stack_names_recipe(s, "zeoserver-", true) || stack_names_recipe(s, "instances-", true) ||
			     stack_names_recipe(s, "blob_mounts", false),
		     STORAGE_FILESTORAGE, "the file storage");
	dirs_add_key(ret, s, eph, "plone_instances", "filestorage_dir", "$.plone_instances.filestorage_dir", NULL,
		     false, STORAGE_FILESTORAGE, "the file storage");
	dirs_add_key(ret, s, eph, "plone_solr", "data_dir", "$.plone_solr.data_dir", "/shared/solr",
		     stack_names_recipe(s, "solr-", true), STORAGE_SOLR, "Solr's index");
	shared = json_is_true(json_object_get(plone_section(s, "plone_instances"), "nfs_blobs")) ||
		 json_is_true(json_object_get(plone_section(s, "plone_instances"), "gluster_blobs")) ||
		 json_is_true(json_object_get(plone_section(s, "plone_zeoserver"), "nfs_blobs")) ||
		 json_is_true(json_object_get(plone_section(s, "plone_zeoserver"), "gluster_blobs"));
	if (shared) {
		_cleanup_free_ char *p = xasprintf("%s/shared/blobs", eph);
		dirs_add(ret, p, STORAGE_BLOBS, NULL, xstrdup("the shared blobs' mount point"));
	}
	if (stack_names_recipe(s, "nfs_blobs", false))
		dirs_add(ret, NFS_EXPORT_DIR, STORAGE_BLOBS, NULL, xstrdup("the NFS export of the shared blobs"));
	if (stack_names_recipe(s, "gluster", false)) {
		_cleanup_free_ char *p = xasprintf("%s/gluster-exports", eph);
		dirs_add(ret, p, STORAGE_BLOBS, NULL, xstrdup("the GlusterFS brick of the shared blobs"));
	}
	/* agentd's own state and logs, and supervisor's programs and logs
	 * (apps.c's SUPERVISOR_LOG_DIR): an app's tree holding them would take
	 * them with it at its undeploy. */
	if (c) {
		dirs_add(ret, c->state_dir, STORAGE_AGENTD, NULL, xstrdup("agentd's state_dir"));
		dirs_add(ret, c->log_dir, STORAGE_AGENTD, NULL, xstrdup("agentd's log_dir"));
		dirs_add(ret, c->supervisor_conf_dir, STORAGE_SUPERVISOR, NULL,
			 xstrdup("supervisor's program files (supervisor_conf_dir)"));
		dirs_add(ret, "/var/log/supervisor", STORAGE_SUPERVISOR, NULL, xstrdup("supervisor's logs"));
	}
	/* This instance's volumes; ebs.devices lists only this instance's. */
	mine = json_object_get(json_object_get(json_object_get(s->root, "agent"), "volumes"), s->instance);
	json_array_foreach(mine, i, v)
		dirs_add(ret, json_string_value(json_object_get(v, "mount_point")), STORAGE_VOLUME, NULL,
			 xstrdup("a mount point of agent.volumes"));
	json_object_foreach((json_t *)json_object_get(json_object_get(s->root, "ebs"), "devices"), k, v)
		dirs_add(ret, json_string_value(json_object_get(v, "mount_point")), STORAGE_VOLUME, NULL,
			 xstrdup("a mount point of ebs.devices"));
}

void storage_dirs_free(struct storage_dirs *d)
{
	for (size_t i = 0; d && i < d->n; i++) {
		free(d->v[i].path);
		free(d->v[i].what);
	}
	if (d) {
		free(d->v);
		*d = (struct storage_dirs){ 0 };
	}
}

/* What each storage recipe writes or manages as a whole (recipe.owns). */
static void storage_owns(const struct stack *s, const struct config *c, const char *layer, const char *name,
			 struct recipe_paths *ret)
{
	const char *eph = config_string(c, "ephemeral_mount_point");
	_cleanup_free_ char *p = NULL;

	if (!eph || strcmp(eph, "/") == 0)
		eph = "";
	if (strcmp(name, "nfs_blobs") == 0) {
		recipe_paths_add(ret, NFS_EXPORT_DIR, true, xstrdup("the NFS export of the shared blobs"));
		recipe_paths_add(ret, NFS_EXPORTS_FILE, false, xstrdup("the exports file of recipe nfs_blobs"));
		recipe_paths_add(ret, "/etc/default/nfs-common", false,
				 xstrdup("statd's ports, set by recipe nfs_blobs"));
	} else if (strcmp(name, "gluster") == 0) {
		p = xasprintf("%s/gluster-exports", eph);
		recipe_paths_add(ret, p, true, xstrdup("the GlusterFS brick of the shared blobs"));
	} else if (strcmp(name, "blob_mounts") == 0) {
		p = xasprintf("%s/shared/blobs", eph);
		recipe_paths_add(ret, p, true, xstrdup("the shared blobs' mount point"));
		recipe_paths_add(ret, "/etc/fstab", false,
				 xstrdup("the fstab recipe blob_mounts keeps the shared blobs' mount in"));
	}
}

static const struct recipe recipes_storage[] = {
	{ "nfs_blobs", nfs_blobs_plan, storage_owns },
	{ "gluster", gluster_plan, storage_owns },
	{ "blob_mounts", blob_mounts_plan, storage_owns },
	{ NULL, NULL, NULL },
};

const struct recipe_family family_storage = {
	.name = "storage",
	.recipes = recipes_storage,
	.plan_before = storage_plan_before,
	.plan_after_layer = storage_plan_after_layer,
	.validate = storage_validate,
};

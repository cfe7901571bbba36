/* SPDX-License-Identifier: BSD-2-Clause */
/* Recipe names: which names exist, and the default recipes of the
 * well-known layer shortnames (reference §1). Kept apart from the planners so
 * validation links without the executor. */
#include <string.h>

#include "recipe.h"
#include "stack/stack.h"
#include "util.h"

#define PREFIX "plone_buildout::"

/* Every built-in name, planned or not yet implemented. A name listed here but
 * without a planner in a family table plans one "skipped" note saying so. */
static const char *const builtin_names[] = {
	"instances-setup", "instances-configure", "instances-deploy", "instances-undeploy", "instances-stop",
	"instances-start", "instances-restart", "instances-rebuild", "instances-develop-up",
	"instances-celerybeat", "zeoserver-setup", "zeoserver-configure", "zeoserver-deploy",
	"zeoserver-undeploy", "zeoserver-stop", "zeoserver-start", "zeoserver-restart", "solr-setup",
	"solr-configure", "solr-deploy", "solr-undeploy", "solr-stop", "solr-start", "solr-restart",
	"nfs_blobs", "gluster", "blob_mounts", "haproxy", "varnish", "nginx", "nginx-ssl", "varnish-restart", "varnish-purge",
	"ebs_snapshots", "enable_pack", "certonly-webroot", "files",
	/* Maintenance jobs (design.md §8.1): planned for event maintenance. */
	"zeopack", "backup", "zodbpack", "zodbpack-prepack", "zodbpack-pack", "reboot", NULL,
};

const char *recipe_canonical_name(const char *name)
{
	if (strncmp(name, PREFIX, strlen(PREFIX)) == 0)
		name += strlen(PREFIX);
	for (size_t i = 0; builtin_names[i]; i++)
		if (strcmp(builtin_names[i], name) == 0)
			return builtin_names[i];
	return NULL;
}

bool recipe_name_known(const json_t *root, const char *name)
{
	const json_t *custom = json_object_get(json_object_get(root, "agent"), "recipes");

	if (!name)
		return false;
	if (json_is_object(custom) && json_object_get(custom, name))
		return true;
	return recipe_canonical_name(name) != NULL;
}

struct default_map {
	const char *layer;
	const char *const *events[_EVENT_MAX];
};

#define R(...) ((const char *const[]){ __VA_ARGS__, NULL })
static const struct default_map default_maps[] = {
	{ "plone_instances",
	  { [EVENT_SETUP] = R("instances-setup"), [EVENT_CONFIGURE] = R("instances-configure"),
	    [EVENT_DEPLOY] = R("instances-deploy"), [EVENT_UNDEPLOY] = R("instances-undeploy"),
	    [EVENT_SHUTDOWN] = R("instances-stop") } },
	{ "zeoserver",
	  { [EVENT_SETUP] = R("zeoserver-setup"), [EVENT_CONFIGURE] = R("zeoserver-configure"),
	    [EVENT_DEPLOY] = R("zeoserver-deploy"), [EVENT_UNDEPLOY] = R("zeoserver-undeploy"),
	    [EVENT_SHUTDOWN] = R("zeoserver-stop") } },
	{ "shared_blobs", { [EVENT_SETUP] = R("nfs_blobs"), [EVENT_CONFIGURE] = R("nfs_blobs") } },
	{ "lb",
	  { [EVENT_SETUP] = R("haproxy", "varnish", "nginx"), [EVENT_CONFIGURE] = R("haproxy", "varnish", "nginx"),
	    [EVENT_DEPLOY] = R("haproxy") } },
	{ "ebs_snapshots", { [EVENT_CONFIGURE] = R("ebs_snapshots") } },
	{ "db_packing",
	  { [EVENT_SETUP] = R("enable_pack"), [EVENT_CONFIGURE] = R("enable_pack"), [EVENT_DEPLOY] = R("enable_pack") } },
	{ "solr",
	  { [EVENT_SETUP] = R("solr-setup"), [EVENT_CONFIGURE] = R("solr-configure"), [EVENT_DEPLOY] = R("solr-deploy"),
	    [EVENT_UNDEPLOY] = R("solr-undeploy"), [EVENT_SHUTDOWN] = R("solr-stop") } },
};
#undef R

const char *const *recipe_default_mapping(const char *layer, enum event ev)
{
	if (ev < 0 || ev >= _EVENT_MAX)
		return NULL;
	for (size_t i = 0; i < ELEMENTSOF(default_maps); i++)
		if (strcmp(default_maps[i].layer, layer) == 0)
			return default_maps[i].events[ev];
	return NULL;
}

const char **recipes_layer_recipes(const struct stack *s, const char *layer, enum event ev, size_t *ret_n)
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

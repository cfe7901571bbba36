/* SPDX-License-Identifier: BSD-2-Clause */
/* The built-in "files" recipe: the files listed for a layer in
 * agent.files.<layer> = [{"path", "content", "mode", "owner", "group",
 * "secret"}], written atomically only when they differ; "mode" defaults to
 * 0644, and to 0600 for a secret file. It is the smallest
 * useful built-in: a demo, a benchmark, and a way to ship a config file
 * without writing a recipe. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "recipe.h"
#include "storage.h"
#include "steps/plan.h"
#include "stack/stack.h"
#include "util.h"

#define FILES_MAX 10000

static int files_error(struct stack_error *err, const char *path, const char *msg)
{
	/* Paths are bounded by name_is_valid() (255 bytes) and short keys; a
	 * longer one is cut rather than overflowing. */
	size_t n = strlen(path);
	if (n >= sizeof(err->path))
		n = sizeof(err->path) - 1;
	memcpy(err->path, path, n);
	err->path[n] = '\0';
	snprintf(err->message, sizeof(err->message), "%s", msg);
	return -EINVAL;
}

/* The mode of a file entry. Without "mode", 0644, or 0600 for a file marked
 * secret: its content is hidden from unprivileged callers of the control
 * socket, so it must not be world-readable on disk either. An explicit mode
 * is the operator's and is honoured as written, also on a secret file (0640
 * with the app's group is the usual way to share one with a service). */
static int parse_mode(const json_t *v, bool secret, mode_t *ret)
{
	const char *s;
	size_t n;
	long m = 0;

	if (!v) {
		*ret = secret ? 0600 : 0644;
		return 0;
	}
	/* A JSON number is refused, not read: 644 is decimal to JSON and
	 * would give mode 01204 (cfn-init users lost permissions that way,
	 * design.md §8). Only 3 or 4 octal digits, nothing around them:
	 * strtol() would also take " 644", "+644" and "-0". */
	if (!json_is_string(v))
		return -EINVAL;
	s = json_string_value(v);
	n = strlen(s);
	if (n != json_string_length(v) || n < 3 || n > 4 || strspn(s, "01234567") != n)
		return -EINVAL;
	for (size_t i = 0; i < n; i++)
		m = m * 8 + (s[i] - '0');
	*ret = (mode_t)m;
	return 0;
}

/* One file entry, for the conflict check below. */
struct file_ref {
	const char *path;  /* normal form (stack.c normalised it) */
	const char *layer;
	size_t index;      /* in its layer's list */
	size_t order;      /* in the document */
};

/* Orders paths so that a directory's descendants follow it at once: as
 * strcmp, but with '/' before every other byte ("/a", "/a/b", "/a-b"). */
static int file_ref_cmp(const void *x, const void *y)
{
	const struct file_ref *a = x, *b = y;
	const unsigned char *p = (const unsigned char *)a->path, *q = (const unsigned char *)b->path;

	for (; *p && *p == *q; p++, q++)
		;
	if (*p != *q) {
		int cp = *p == '/' ? 1 : *p ? *p + 1 : 0, cq = *q == '/' ? 1 : *q ? *q + 1 : 0;
		return cp - cq;
	}
	return a->order < b->order ? -1 : a->order > b->order;
}

/* Whether one instance may run the files recipe of both layers: the same
 * layer, a member listed in both, or this instance in both. */
static bool layers_meet(const struct stack *s, const char *a, const char *b)
{
	const struct stack_layer *la, *lb;

	if (strcmp(a, b) == 0 || (stack_has_self_layer(s, a) && stack_has_self_layer(s, b)))
		return true;
	la = stack_layer_find(s, a);
	lb = stack_layer_find(s, b);
	for (size_t i = 0; la && lb && i < la->n_members; i++)
		for (size_t j = 0; j < lb->n_members; j++)
			if (strcmp(la->members[i].hostname, lb->members[j].hostname) == 0)
				return true;
	return false;
}

/* The same file twice (any spelling: paths are in normal form here), or a
 * file below another file, for one instance: each run would write one
 * content then the other, report changed=2 and never settle, or fail. */
static int files_check_conflicts(const struct stack *stack, const json_t *files, size_t total,
				 struct stack_error *err)
{
	struct file_ref *v = xcalloc(total + 1, sizeof(*v));
	const char *layer;
	json_t *list, *f;
	size_t n = 0, i;
	int r = 0;

	json_object_foreach((json_t *)files, layer, list)
		json_array_foreach(list, i, f) {
			v[n] = (struct file_ref){ .path = json_string_value(json_object_get(f, "path")),
						  .layer = layer, .index = i, .order = n };
			n++;
		}
	qsort(v, n, sizeof(*v), file_ref_cmp);
	for (i = 0; i < n && r == 0; i++)
		for (size_t j = i + 1; j < n && path_is_under(v[j].path, v[i].path); j++) {
			char path[600], msg[sizeof(err->message)];

			if (!layers_meet(stack, v[i].layer, v[j].layer))
				continue;
			snprintf(path, sizeof(path), "$.agent.files.%s[%zu].path", v[j].layer, v[j].index);
			snprintf(msg, sizeof(msg), "%s %s $.agent.files.%s[%zu]%s", v[j].path,
				 strcmp(v[i].path, v[j].path) == 0 ? "is the same file as" : "is inside the file of",
				 v[i].layer, v[i].index,
				 strcmp(v[i].layer, v[j].layer) == 0 ? "" : " (an instance may be in both layers)");
			r = files_error(err, path, msg);
			break;
		}
	free(v);
	return r;
}

/* Appends what agentd writes for a layer that may share an instance with
 * layer: the built-in recipes' files and trees (recipe.owns), each with the
 * layer it comes from. */
static void owned_for_layer(const struct stack *s, const struct config *c, const char *layer,
			    struct recipe_paths *ret)
{
	const json_t *agent_layers = json_object_get(json_object_get(s->root, "agent"), "layers");
	const char *other;
	json_t *v;

	for (size_t i = 0; i < s->n_layers; i++)
		if (!json_object_get(agent_layers, s->layers[i].shortname) &&
		    layers_meet(s, layer, s->layers[i].shortname))
			recipes_owned_paths(s, c, s->layers[i].shortname, ret);
	json_object_foreach((json_t *)agent_layers, other, v)
		if (layers_meet(s, layer, other))
			recipes_owned_paths(s, c, other, ret);
}

/* A file agentd writes in another way too: one the built-in recipes of a
 * layer that meets this one write (haproxy.cfg, the VCL, the nginx site,
 * supervisor program files, /etc/default/nfs-common, the exports file,
 * fstab), or a file inside a tree agentd manages (an app's deploy_to, a data
 * directory, agentd's state_dir and log_dir). Two writers would flip its
 * content every run, or write into an app's tree as root. supervisor's
 * directories may hold other programs' files: only the apps' own program
 * files are refused there. Paths are in normal form. */
static int files_check_owned(const struct stack *s, const json_t *files, struct stack_error *err)
{
	const struct config *c = recipes_config();
	_cleanup_(storage_dirs_free) struct storage_dirs dd = { 0 };
	struct recipe_paths all = { 0 };
	const char *layer;
	json_t *list, *f;
	size_t i, base;
	int r = 0;

	for (i = 0; i < s->n_apps; i++)
		recipe_paths_add(&all, s->apps[i].deploy_to, true,
				 xasprintf("the deploy_to of app %s", s->apps[i].name));
	storage_data_dirs(s, c, &dd);
	for (i = 0; i < dd.n; i++)
		if (dd.v[i].kind != STORAGE_VOLUME && dd.v[i].kind != STORAGE_SUPERVISOR)
			recipe_paths_add(&all, dd.v[i].path, true, xstrdup(dd.v[i].what));
	base = all.n;
	json_object_foreach((json_t *)files, layer, list) {
		for (size_t k = base; k < all.n; k++) {
			free(all.v[k].path);
			free(all.v[k].what);
		}
		all.n = base;
		if (json_array_size(list) > 0)
			owned_for_layer(s, c, layer, &all);
		json_array_foreach(list, i, f) {
			const char *fp = json_string_value(json_object_get(f, "path"));

			for (size_t k = 0; fp && k < all.n && r == 0; k++) {
				const struct recipe_path *o = &all.v[k];
				char path[600], msg[sizeof(err->message)];

				if (!(path_is_under(fp, o->path) && (o->tree || strcmp(fp, o->path) == 0)) &&
				    !path_is_under(o->path, fp))
					continue;
				snprintf(path, sizeof(path), "$.agent.files.%s[%zu].path", layer, i);
				const char *rel = strcmp(fp, o->path) == 0	     ? "is"
						  : path_is_under(fp, o->path) ? "is inside"
										 : "holds";

				snprintf(msg, sizeof(msg), "%s %s %s (%s): agentd writes it already; two writers would "
					 "change it back and forth every run",
					 fp, rel, o->what, o->path);
				r = files_error(err, path, msg);
			}
			if (r < 0)
				goto out;
		}
	}
out:
	recipe_paths_free(&all);
	return r;
}

static int files_validate(const struct stack *stack, struct stack_error *err)
{
	const json_t *files = json_object_get(json_object_get(stack->root, "agent"), "files");
	const char *layer;
	json_t *list;
	char path[600];
	size_t total = 0;
	int r;

	if (!files)
		return 0;
	if (!json_is_object(files))
		return files_error(err, "$.agent.files", "must be an object of layer shortname to a list of files");
	json_object_foreach((json_t *)files, layer, list) {
		size_t i;
		json_t *f;

		if (!name_is_valid(layer))
			return files_error(err, "$.agent.files", "layer names must match [A-Za-z0-9_.-]+");
		snprintf(path, sizeof(path), "$.agent.files.%s", layer);
		if (!json_is_array(list))
			return files_error(err, path, "must be a list of files");
		json_array_foreach(list, i, f) {
			const char *k;
			json_t *v;
			mode_t mode;

			snprintf(path, sizeof(path), "$.agent.files.%s[%zu]", layer, i);
			if (++total > FILES_MAX)
				return files_error(err, path, "too many files (at most 10000)");
			if (!json_is_object(f))
				return files_error(err, path, "must be an object");
			json_object_foreach(f, k, v) {
				char kp[700];
				snprintf(kp, sizeof(kp), "%s.%s", path, k);
				if (strcmp(k, "path") == 0) {
					if (!json_is_string(v) || stack_path_problem(json_string_value(v)))
						return files_error(err, kp,
								   json_is_string(v)
									   ? stack_path_problem(json_string_value(v))
									   : "must be an absolute path");
					if (!path_is_normal(json_string_value(v)))
						return files_error(err, kp, "must be an absolute path in normal form, "
									    "without \".\" components");
					if (strcmp(json_string_value(v), "/") == 0)
						return files_error(err, kp, "must be a file, not \"/\"");
				} else if (strcmp(k, "content") == 0) {
					if (!json_is_string(v))
						return files_error(err, kp, "must be a string");
				} else if (strcmp(k, "mode") == 0) {
					if (parse_mode(v, false, &mode) < 0)
						return files_error(err, kp,
								   json_is_number(v)
									   ? "must be an octal string like \"0644\", "
									     "not a number (JSON reads 644 as decimal)"
									   : "must be an octal string like \"0644\" "
									     "(3 or 4 digits 0-7)");
				} else if (strcmp(k, "owner") == 0 || strcmp(k, "group") == 0) {
					if (!json_is_string(v) || !name_is_valid(json_string_value(v)))
						return files_error(err, kp, "must be a user or group name");
				} else if (strcmp(k, "secret") == 0) {
					if (!json_is_boolean(v))
						return files_error(err, kp, "must be true or false");
				} else
					return files_error(err, kp, "unknown key");
			}
			if (!json_object_get(f, "path") || !json_object_get(f, "content"))
				return files_error(err, path, "needs \"path\" and \"content\"");
		}
	}
	r = files_check_conflicts(stack, files, total, err);
	return r < 0 ? r : files_check_owned(stack, files, err);
}

static int files_plan(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	const json_t *files = json_object_get(json_object_get(ctx->stack->root, "agent"), "files");
	const json_t *list = json_object_get(files, ctx->layer);
	size_t i;
	json_t *f;

	if (!list || json_array_size(list) == 0) {
		plan_add_note(plan, "files", "no files listed for this layer in agent.files");
		return 0;
	}
	json_array_foreach((json_t *)list, i, f) {
		const json_t *content = json_object_get(f, "content");
		bool secret = json_is_true(json_object_get(f, "secret"));
		mode_t mode;
		struct step *s;

		(void)parse_mode(json_object_get(f, "mode"), secret, &mode);
		s = plan_add_file(plan, json_string_value(json_object_get(f, "path")), json_string_value(content),
				  json_string_length(content), mode, json_string_value(json_object_get(f, "owner")),
				  json_string_value(json_object_get(f, "group")), ret_error);
		if (!s)
			return -EINVAL;
		s->secret = secret;
	}
	return 0;
}

static const struct recipe recipes_files[] = {
	{ "files", files_plan },
	{ NULL, NULL, NULL },
};

const struct recipe_family family_files = { .name = "files", .recipes = recipes_files, .validate = files_validate };

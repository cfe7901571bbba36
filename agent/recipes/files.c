/* SPDX-License-Identifier: BSD-2-Clause */
/* The built-in "files" recipe: the files listed for a layer in
 * agent.files.<layer> = [{"path", "content", "mode", "owner", "group",
 * "secret"}], written atomically only when they differ. It is the smallest
 * useful built-in: a demo, a benchmark, and a way to ship a config file
 * without writing a recipe. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "recipe.h"
#include "../plan.h"
#include "../stack.h"
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

static int parse_mode(const json_t *v, mode_t *ret)
{
	long m;

	if (!v) {
		*ret = 0644;
		return 0;
	}
	if (json_is_integer(v))
		m = (long)json_integer_value(v);
	else if (json_is_string(v)) {
		char *end;
		const char *s = json_string_value(v);
		m = strtol(s, &end, 8);
		if (!*s || *end)
			return -EINVAL;
	} else
		return -EINVAL;
	if (m < 0 || m > 07777)
		return -EINVAL;
	*ret = (mode_t)m;
	return 0;
}

static int files_validate(const struct stack *stack, struct stack_error *err)
{
	const json_t *files = json_object_get(json_object_get(stack->root, "agent"), "files");
	const char *layer;
	json_t *list;
	char path[600];
	size_t total = 0;

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
					if (!json_is_string(v) || !path_is_safe_absolute(json_string_value(v)))
						return files_error(err, kp, "must be an absolute path without \"..\"");
				} else if (strcmp(k, "content") == 0) {
					if (!json_is_string(v))
						return files_error(err, kp, "must be a string");
				} else if (strcmp(k, "mode") == 0) {
					if (parse_mode(v, &mode) < 0)
						return files_error(err, kp, "must be an octal string like \"0644\"");
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
	return 0;
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
		mode_t mode;
		struct step *s;

		(void)parse_mode(json_object_get(f, "mode"), &mode);
		s = plan_add_file(plan, json_string_value(json_object_get(f, "path")), json_string_value(content),
				  json_string_length(content), mode, json_string_value(json_object_get(f, "owner")),
				  json_string_value(json_object_get(f, "group")), ret_error);
		if (!s)
			return -EINVAL;
		s->secret = json_is_true(json_object_get(f, "secret"));
	}
	return 0;
}

static const struct recipe recipes_files[] = {
	{ "files", files_plan, files_validate },
	{ NULL, NULL, NULL },
};

const struct recipe_family family_files = { .name = "files", .recipes = recipes_files };

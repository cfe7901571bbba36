/* SPDX-License-Identifier: BSD-2-Clause */
/* Validation of a custom recipe definition, agent.recipes.<name>
 * (design.md §2), and of agent.rolling (§9), whose health command is an
 * argv checked the same way. The argv is exec'd directly, never through a shell, so the
 * checks are about what execve and the executor can take: bounded sizes, no
 * control characters, and paths that cannot climb out with "..". Argument
 * and environment values may hold secrets and are never quoted back. */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "cron.h"
#include "recipe.h"
#include "stack/stack.h"
#include "util.h"

#define CUSTOM_MAX_ARGS 256
#define CUSTOM_MAX_ARG_BYTES 4096
#define CUSTOM_MAX_ENV_KEY 128
#define CUSTOM_MAX_TIMEOUT 86400
#define ROLLING_MAX_PARALLEL 1000
#define ROLLING_HEALTH_PATH_MAX 1024
#define CUSTOM_MAX_SPLAY 86400
#define CUSTOM_MAX_LAYERS 256

/* A scheduled custom recipe (design.md §8.1): "schedule" (5-field cron,
 * UTC), "splay" (seconds) and "layers" (the layers whose instances run
 * it; default every instance). */
static int check_schedule(const json_t *def, const char *base, struct stack_error *err)
{
	char path[CHECK_PATH_SIZE], epath[CHECK_PATH_SIZE], q[256];
	const json_t *v;
	size_t i;
	json_t *e;
	int r;

	if ((v = json_object_get(def, "schedule"))) {
		_cleanup_free_ char *msg = NULL;
		struct cron c;

		stack_path_key(path, sizeof(path), base, "schedule");
		if (!json_is_string(v))
			return check_type_error(err, path, "a cron expression (a string)", v);
		if (cron_parse(json_string_value(v), &c, &msg) < 0)
			return stack_error_set(err, path, "%s", msg);
	}
	if ((r = check_int_ok(err, base, def, "splay", 0, CUSTOM_MAX_SPLAY,
			      "must be an integer number of seconds from 0 to 86400")) < 0)
		return r;
	if ((v = json_object_get(def, "layers"))) {
		stack_path_key(path, sizeof(path), base, "layers");
		if (!json_is_array(v))
			return check_type_error(err, path, "an array of layer shortnames", v);
		if (json_array_size(v) > CUSTOM_MAX_LAYERS)
			return stack_error_set(err, path, "has more than %d layers", CUSTOM_MAX_LAYERS);
		json_array_foreach(v, i, e) {
			stack_path_index(epath, sizeof(epath), path, i);
			if (!json_is_string(e))
				return check_type_error(err, epath, "a layer shortname", e);
			if (check_name_problem(json_string_value(e)))
				return stack_error_set(err, epath, "%s, got %s", check_name_problem(json_string_value(e)),
						       stack_quote(q, sizeof(q), json_string_value(e)));
		}
	}
	if ((json_object_get(def, "splay") || json_object_get(def, "layers")) && !json_object_get(def, "schedule")) {
		stack_path_key(path, sizeof(path), base, json_object_get(def, "splay") ? "splay" : "layers");
		return stack_error_set(err, path, "needs \"schedule\" beside it");
	}
	return 0;
}

static const char *const custom_keys[] = {
	"command", "user", "cwd", "environment", "timeout", "creates", "description", "singleton", "schedule", "splay",
	"layers", NULL,
};

static bool env_key_is_valid(const char *k)
{
	size_t n = strlen(k);

	if (n == 0 || n > CUSTOM_MAX_ENV_KEY)
		return false;
	if (!isalpha((unsigned char)k[0]) && k[0] != '_')
		return false;
	for (size_t i = 1; i < n; i++)
		if (!isalnum((unsigned char)k[i]) && k[i] != '_')
			return false;
	/* isalpha is locale-dependent; keep to ASCII. */
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)k[i] >= 0x80)
			return false;
	return true;
}

static int check_command(const json_t *cmd, const char *path, struct stack_error *err)
{
	char epath[CHECK_PATH_SIZE], q[256];
	const char *argv0;
	size_t i;
	json_t *e;

	if (!cmd)
		return stack_error_set(err, path, "is required");
	if (!json_is_array(cmd))
		return stack_error_set(err, path, "must be an array of strings (the argv)");
	if (json_array_size(cmd) == 0)
		return stack_error_set(err, path, "must not be empty");
	if (json_array_size(cmd) > CUSTOM_MAX_ARGS)
		return stack_error_set(err, path, "has %zu arguments, at most %d are allowed", json_array_size(cmd),
				       CUSTOM_MAX_ARGS);
	json_array_foreach(cmd, i, e) {
		stack_path_index(epath, sizeof(epath), path, i);
		if (!json_is_string(e))
			return stack_error_set(err, epath, "must be a string");
		if (json_string_length(e) > CUSTOM_MAX_ARG_BYTES)
			return stack_error_set(err, epath, "is %zu bytes, at most %d are allowed", json_string_length(e),
					       CUSTOM_MAX_ARG_BYTES);
		if (check_has_control(json_string_value(e), json_string_length(e)))
			return stack_error_set(err, epath, "must not contain control characters");
	}

	argv0 = json_string_value(json_array_get(cmd, 0));
	stack_path_index(epath, sizeof(epath), path, 0);
	if (argv0[0] == '\0')
		return stack_error_set(err, epath, "must not be empty");
	if (argv0[0] == '/' && stack_path_problem(argv0))
		return stack_error_set(err, epath, "%s, got %s", stack_path_problem(argv0),
				       stack_quote(q, sizeof(q), argv0));
	if (argv0[0] != '/' && strchr(argv0, '/') != NULL)
		return stack_error_set(err, epath, "must be an absolute path or a program name without \"/\", got %s",
				       stack_quote(q, sizeof(q), argv0));
	return 0;
}

static int check_environment(const json_t *env, const char *path, struct stack_error *err)
{
	char vpath[CHECK_PATH_SIZE], q[256];
	const char *k;
	json_t *v;

	if (!json_is_object(env))
		return stack_error_set(err, path, "must be an object of strings");
	json_object_foreach((json_t *)env, k, v) {
		if (!env_key_is_valid(k))
			return stack_error_set(err, path,
					       "invalid variable name %s: must match [A-Za-z_][A-Za-z0-9_]*, at most %d bytes",
					       stack_quote(q, sizeof(q), k), CUSTOM_MAX_ENV_KEY);
		stack_path_key(vpath, sizeof(vpath), path, k);
		if (!json_is_string(v))
			return stack_error_set(err, vpath, "must be a string");
		if (strlen(json_string_value(v)) != json_string_length(v))
			return stack_error_set(err, vpath, "must not contain NUL");
	}
	return 0;
}

int recipe_custom_validate(const json_t *def, const char *name, struct stack_error *err)
{
	char base[CHECK_PATH_SIZE], path[CHECK_PATH_SIZE], q[256];
	const char *k;
	json_t *v;
	int r;

	stack_path_key(base, sizeof(base), "$.agent.recipes", name);
	if (!json_is_object(def))
		return stack_error_set(err, base, "must be an object with at least \"command\"");
	if ((k = check_unknown_key(def, custom_keys)))
		return stack_error_set(err, base,
				       "unknown key %s, expected command, user, cwd, environment, timeout, "
				       "creates, description, singleton, schedule, splay or layers",
				       stack_quote(q, sizeof(q), k));

	stack_path_key(path, sizeof(path), base, "command");
	r = check_command(json_object_get(def, "command"), path, err);
	if (r < 0)
		return r;
	if ((r = check_string_is(err, base, def, "user", check_name_problem)) < 0 ||
	    (r = check_string_is(err, base, def, "cwd", stack_path_problem)) < 0 ||
	    (r = check_string_is(err, base, def, "creates", stack_path_problem)) < 0)
		return r;
	if ((v = json_object_get(def, "environment"))) {
		stack_path_key(path, sizeof(path), base, "environment");
		r = check_environment(v, path, err);
		if (r < 0)
			return r;
	}
	if ((v = json_object_get(def, "timeout"))) {
		stack_path_key(path, sizeof(path), base, "timeout");
		if (!json_is_integer(v))
			return stack_error_set(err, path, "must be an integer number of seconds");
		if (json_integer_value(v) < 1 || json_integer_value(v) > CUSTOM_MAX_TIMEOUT)
			return stack_error_set(err, path, "must be between 1 and %d seconds, got %" JSON_INTEGER_FORMAT,
					       CUSTOM_MAX_TIMEOUT, json_integer_value(v));
	}
	if ((v = json_object_get(def, "description")) && !json_is_string(v)) {
		stack_path_key(path, sizeof(path), base, "description");
		return stack_error_set(err, path, "must be a string");
	}
	if ((r = check_schedule(def, base, err)) < 0)
		return r;
	/* A stack-wide job: with an etcd source one instance at a time runs it
	 * (the lock locks/<name>, design.md §9 Singletons). */
	return check_flag(err, base, def, "singleton");
}

/* agent.rolling.<app>.health (design.md §9). */
static int check_health(const json_t *h, const char *path, struct stack_error *err)
{
	static const char *const keys[] = { "path", "command", "timeout", NULL };
	char sub[CHECK_PATH_SIZE], q[256];
	const json_t *p = json_object_get(h, "path");
	int r;

	if (!json_is_object(h))
		return check_type_error(err, path, "an object with \"path\" or \"command\"", h);
	if ((r = check_known_keys(err, path, h, keys)) < 0)
		return r;
	if (!p && !json_object_get(h, "command"))
		return stack_error_set(err, path, "needs \"path\" (built-in apps) or \"command\" (custom recipes)");
	if (p) {
		stack_path_key(sub, sizeof(sub), path, "path");
		if (!json_is_string(p))
			return check_type_error(err, sub, "a string", p);
		if (json_string_value(p)[0] != '/' || json_string_length(p) > ROLLING_HEALTH_PATH_MAX ||
		    check_has_space_or_control(json_string_value(p)))
			return stack_error_set(err, sub,
					       "must be an HTTP path that starts with \"/\", without spaces or control "
					       "characters, at most %d bytes, got %s",
					       ROLLING_HEALTH_PATH_MAX, stack_quote(q, sizeof(q), json_string_value(p)));
	}
	if (json_object_get(h, "command")) {
		stack_path_key(sub, sizeof(sub), path, "command");
		if ((r = check_command(json_object_get(h, "command"), sub, err)) < 0)
			return r;
	}
	return check_int_ok(err, path, h, "timeout", 1, CUSTOM_MAX_TIMEOUT,
			    "must be an integer number of seconds from 1 to 86400");
}

int recipe_rolling_validate(const json_t *rolling, struct stack_error *err)
{
	static const char *const keys[] = { "max_parallel", "health", NULL };
	char base[CHECK_PATH_SIZE], path[CHECK_PATH_SIZE];
	const char *app;
	json_t *v, *h;
	int r;

	if (!json_is_object(rolling))
		return check_type_error(err, "$.agent.rolling", "an object of apps", rolling);
	json_object_foreach((json_t *)rolling, app, v) {
		if ((r = check_key_name(err, "$.agent.rolling", "app name", app)) < 0)
			return r;
		stack_path_key(base, sizeof(base), "$.agent.rolling", app);
		if (!json_is_object(v))
			return check_type_error(err, base, "an object with \"max_parallel\"", v);
		if ((r = check_known_keys(err, base, v, keys)) < 0)
			return r;
		if (!json_object_get(v, "max_parallel")) {
			stack_path_key(path, sizeof(path), base, "max_parallel");
			return stack_error_set(err, path, "is required");
		}
		if ((r = check_int_ok(err, base, v, "max_parallel", 1, ROLLING_MAX_PARALLEL,
				      "must be an integer from 1 to 1000")) < 0)
			return r;
		if ((h = json_object_get(v, "health"))) {
			stack_path_key(path, sizeof(path), base, "health");
			if ((r = check_health(h, path, err)) < 0)
				return r;
		}
	}
	return 0;
}

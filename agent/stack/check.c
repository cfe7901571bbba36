/* SPDX-License-Identifier: BSD-2-Clause */
/* Typed checks of stack JSON, JSON paths and messages (check.h): the one
 * place that turns "this value is wrong" into an error with its path. */
#include "check.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

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

int check_type_error(struct stack_error *err, const char *path, const char *want, const json_t *v)
{
	return stack_error_set(err, path, "must be %s, got %s", want, type_name(v));
}

/* ---- typed field checks -------------------------------------------------- */

/* The value of key, or NULL when absent or null. */
json_t *check_get(const json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	return json_is_null(v) ? NULL : v;
}

bool check_has_control(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return true;
	return false;
}

bool check_has_space_or_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* ", got \"value\"" unless the key looks like it holds a secret. */
const char *check_got(char *out, size_t size, const char *key, const char *value)
{
	struct sbuf b;

	sb_init(&b, out, size);
	if (key_is_secret(key))
		return out;
	sb_puts(&b, ", got ");
	sb_quote(&b, value, 80);
	return out;
}

int check_object(struct stack_error *err, const char *parent, const json_t *obj, const char *key, json_t **ret)
{
	char path[CHECK_PATH_SIZE];
	json_t *v = check_get(obj, key);

	*ret = v;
	if (!v || json_is_object(v))
		return 0;
	stack_path_key(path, sizeof(path), parent, key);
	return check_type_error(err, path, "an object", v);
}

int check_string(struct stack_error *err, const char *parent, const json_t *obj, const char *key,
		 const char **ret)
{
	char path[CHECK_PATH_SIZE];
	json_t *v = check_get(obj, key);

	if (ret)
		*ret = NULL;
	if (!v)
		return 0;
	if (!json_is_string(v)) {
		stack_path_key(path, sizeof(path), parent, key);
		return check_type_error(err, path, "a string", v);
	}
	if (ret)
		*ret = json_string_value(v);
	return 0;
}

/* A string without control characters. */
int check_text(struct stack_error *err, const char *parent, const json_t *obj, const char *key, const char **ret)
{
	char path[CHECK_PATH_SIZE];
	const char *s = NULL;
	int r;

	r = check_string(err, parent, obj, key, &s);
	if (r < 0)
		return r;
	if (s && check_has_control(s, strlen(s))) {
		stack_path_key(path, sizeof(path), parent, key);
		return stack_error_set(err, path, "must not contain control characters");
	}
	if (ret)
		*ret = s;
	return 0;
}

const char *check_name_problem(const char *s)
{
	return name_is_valid(s) ? NULL : "must be a name of [A-Za-z0-9_.-] without \"..\"";
}

/* s (the value of key under parent) against problem(): its words and what
 * it got. */
static int problem_error(struct stack_error *err, const char *parent, const char *key, const char *s,
			 const char *(*problem)(const char *))
{
	char path[CHECK_PATH_SIZE], g[128];
	const char *p = problem(s);

	if (!p)
		return 0;
	stack_path_key(path, sizeof(path), parent, key);
	return stack_error_set(err, path, "%s%s", p, check_got(g, sizeof(g), key, s));
}

/* check_string() and then problem(). */
static int string_with(struct stack_error *err, const char *parent, const json_t *obj, const char *key,
		       const char *(*problem)(const char *), const char **ret)
{
	const char *s = NULL;
	int r;

	r = check_string(err, parent, obj, key, &s);
	if (r < 0)
		return r;
	if (s && (r = problem_error(err, parent, key, s, problem)) < 0)
		return r;
	if (ret)
		*ret = s;
	return 0;
}

int check_name(struct stack_error *err, const char *parent, const json_t *obj, const char *key, const char **ret)
{
	return string_with(err, parent, obj, key, check_name_problem, ret);
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

int check_abs_path(struct stack_error *err, const char *parent, const json_t *obj, const char *key,
		   const char **ret)
{
	return string_with(err, parent, obj, key, stack_path_problem, ret);
}

int check_bool(struct stack_error *err, const char *parent, const json_t *obj, const char *key)
{
	char path[CHECK_PATH_SIZE];
	json_t *v = check_get(obj, key);

	if (!v || json_is_boolean(v))
		return 0;
	stack_path_key(path, sizeof(path), parent, key);
	return check_type_error(err, path, "a boolean", v);
}

int check_int(struct stack_error *err, const char *parent, const json_t *obj, const char *key, long min, long max,
	      long *ret)
{
	char path[CHECK_PATH_SIZE];
	json_t *v = check_get(obj, key);
	json_int_t i;

	if (!v)
		return 0;
	stack_path_key(path, sizeof(path), parent, key);
	if (!json_is_integer(v))
		return check_type_error(err, path, "an integer", v);
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
int check_array_of(struct stack_error *err, const char *parent, const json_t *obj, const char *key, json_type t)
{
	char path[CHECK_PATH_SIZE], ipath[CHECK_PATH_SIZE];
	json_t *v = check_get(obj, key), *e;
	size_t i;

	if (!v)
		return 0;
	stack_path_key(path, sizeof(path), parent, key);
	if (!json_is_array(v))
		return check_type_error(err, path, t == JSON_STRING ? "an array of strings" : "an array of objects", v);
	json_array_foreach(v, i, e) {
		if (json_typeof(e) != t) {
			stack_path_index(ipath, sizeof(ipath), path, i);
			return check_type_error(err, ipath, t == JSON_STRING ? "a string" : "an object", e);
		}
	}
	return 0;
}

const char *check_unknown_key(const json_t *obj, const char *const *allowed)
{
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)obj, k, v) {
		size_t i;

		for (i = 0; allowed[i]; i++)
			if (strcmp(allowed[i], k) == 0)
				break;
		if (!allowed[i])
			return k;
	}
	return NULL;
}

int check_known_keys(struct stack_error *err, const char *path, const json_t *obj, const char *const *allowed)
{
	const char *k = check_unknown_key(obj, allowed);
	char q[256];

	return k ? stack_error_set(err, path, "unknown key %s", stack_quote(q, sizeof(q), k)) : 0;
}

int check_key_name(struct stack_error *err, const char *path, const char *what, const char *key)
{
	char q[256];

	if (name_is_valid(key))
		return 0;
	return stack_error_set(err, path, "invalid %s %s: must be [A-Za-z0-9_.-] without \"..\"", what,
			       stack_quote(q, sizeof(q), key));
}

int check_string_ok(struct stack_error *err, const char *parent, const json_t *obj, const char *key,
		    bool (*ok)(const char *), const char *msg)
{
	const json_t *v = json_object_get(obj, key);
	char path[CHECK_PATH_SIZE];

	if (!v)
		return 0;
	if (json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v) && ok(json_string_value(v)))
		return 0;
	stack_path_key(path, sizeof(path), parent, key);
	return stack_error_set(err, path, "%s", msg);
}

int check_string_is(struct stack_error *err, const char *parent, const json_t *obj, const char *key,
		    const char *(*problem)(const char *))
{
	const json_t *v = json_object_get(obj, key);
	char path[CHECK_PATH_SIZE];

	if (!v)
		return 0;
	if (json_is_string(v))
		return problem_error(err, parent, key, json_string_value(v), problem);
	stack_path_key(path, sizeof(path), parent, key);
	return stack_error_set(err, path, "must be a string");
}

int check_flag(struct stack_error *err, const char *parent, const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);
	char path[CHECK_PATH_SIZE];

	if (!v || json_is_boolean(v))
		return 0;
	stack_path_key(path, sizeof(path), parent, key);
	return stack_error_set(err, path, "must be true or false");
}

int check_int_ok(struct stack_error *err, const char *parent, const json_t *obj, const char *key, long min,
		 long max, const char *msg)
{
	const json_t *v = json_object_get(obj, key);
	char path[CHECK_PATH_SIZE];

	if (!v || (json_is_integer(v) && json_integer_value(v) >= min && json_integer_value(v) <= max))
		return 0;
	stack_path_key(path, sizeof(path), parent, key);
	return stack_error_set(err, path, "%s", msg);
}

int check_abs_path_ok(struct stack_error *err, const char *path, const json_t *v)
{
	const char *problem = v ? stack_path_problem(json_string_value(v)) : NULL;

	return problem ? stack_error_set(err, path, "%s", problem) : 0;
}

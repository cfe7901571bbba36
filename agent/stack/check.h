/* SPDX-License-Identifier: BSD-2-Clause */
/* Typed checks of stack JSON for every validator (the stack's own parse,
 * the registry, the families' validate hooks): each one checks a value's
 * type and a predicate, builds the JSON path of the offending field and
 * formats the message, so that every error of design.md §2 reads alike.
 *
 * Conventions: parent is the JSON path of obj ("$.deploy.app"); key is
 * appended by stack_path_key(). Every check returns 0 when the value passes
 * (or is absent), else -EINVAL with err filled (when err is non-NULL).
 * Checks named check_<type> read key with check_get() (a JSON null counts as
 * absent) and say what they got ("must be a string, got an integer"); the
 * check_*_ok checks read key with json_object_get() (a null is a wrong
 * value) and give the caller's message alone. Nothing here does I/O. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Where validation failed: a JSON path like "$.deploy.myapp.deploy_to" or
 * "$.agent.layers.web.setup[2]", and a sentence saying what is wrong. */
struct stack_error {
	char path[512];
	char message[512];
};

#define CHECK_PATH_SIZE sizeof(((struct stack_error *)0)->path)

/* JSON paths: a key made only of [A-Za-z0-9_-] is appended as ".key", any
 * other as "[\"key\"]" (JSON-quoted), so paths stay unambiguous. Output is
 * truncated to size. */
void stack_path_key(char *out, size_t size, const char *parent, const char *key);
void stack_path_index(char *out, size_t size, const char *parent, size_t i);
/* s JSON-quoted and shortened to about 80 bytes, for messages; returns out. */
const char *stack_quote(char *out, size_t size, const char *s);
/* What is wrong with p as an absolute path (path_is_safe_absolute()), to
 * follow the key's JSON path: "must be an absolute path without \"..\"
 * components ...", "... without \".\" components ...", "..., starting with
 * \"/\"", control characters, length; "must be an absolute path" for NULL.
 * NULL when p is fine. Static strings. */
const char *stack_path_problem(const char *p);
/* Fills err (when non-NULL) with path and the message; returns -EINVAL. */
int stack_error_set(struct stack_error *err, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The value of key in obj, or NULL when absent or null (OpsWorks prints null
 * for unset fields). */
json_t *check_get(const json_t *obj, const char *key);
/* Whether the n bytes at s hold a control character (below 0x20, NUL
 * included, or DEL). */
bool check_has_control(const char *s, size_t n);
/* Whether s holds a space or a control character. */
bool check_has_space_or_control(const char *s);
/* ", got \"value\"" (value quoted and shortened) for messages, or "" when
 * key looks like it holds a secret (key_is_secret()); returns out. */
const char *check_got(char *out, size_t size, const char *key, const char *value);
/* "must be <want>, got <the type of v>" at path, e.g. "must be an object,
 * got an array". Returns -EINVAL. */
int check_type_error(struct stack_error *err, const char *path, const char *want, const json_t *v);

/* Typed fields, null counting as absent. ret (may be NULL) gets the value,
 * or NULL (ret untouched for check_int) when absent. */
int check_object(struct stack_error *err, const char *parent, const json_t *obj, const char *key, json_t **ret);
int check_string(struct stack_error *err, const char *parent, const json_t *obj, const char *key,
		 const char **ret);
/* A string without control characters: "must not contain control characters". */
int check_text(struct stack_error *err, const char *parent, const json_t *obj, const char *key, const char **ret);
/* A name_is_valid() string: "must be a name of [A-Za-z0-9_.-] without
 * \"..\", got \"x\"". */
int check_name(struct stack_error *err, const char *parent, const json_t *obj, const char *key, const char **ret);
/* A path_is_safe_absolute() string: stack_path_problem()'s words, and what it got. */
int check_abs_path(struct stack_error *err, const char *parent, const json_t *obj, const char *key,
		   const char **ret);
int check_bool(struct stack_error *err, const char *parent, const json_t *obj, const char *key);
/* An integer from min to max: "must be at least <min>, got <i>" when max is
 * LONG_MAX, else "must be between <min> and <max>, got <i>". */
int check_int(struct stack_error *err, const char *parent, const json_t *obj, const char *key, long min, long max,
	      long *ret);
/* An array whose every element has type t (JSON_STRING or JSON_OBJECT):
 * "must be an array of strings, got ..." at the key, "must be a string,
 * got ..." at the element. */
int check_array_of(struct stack_error *err, const char *parent, const json_t *obj, const char *key, json_type t);
/* Keys of obj (at path) that are not in allowed[] (NULL-terminated):
 * "unknown key \"k\"" at path. */
int check_known_keys(struct stack_error *err, const char *path, const json_t *obj, const char *const *allowed);

/* The first key of obj not in allowed[] (NULL-terminated), or NULL. */
const char *check_unknown_key(const json_t *obj, const char *const *allowed);
/* An object key that names something (what: "hostname", "layer shortname",
 * ...): name_is_valid(), else "invalid <what> \"k\": must be
 * [A-Za-z0-9_.-] without \"..\"" at path (the object's). */
int check_key_name(struct stack_error *err, const char *path, const char *what, const char *key);
/* What is wrong with s as a name (name_is_valid()): "must be a name of
 * [A-Za-z0-9_.-] without \"..\"", or NULL. Static. */
const char *check_name_problem(const char *s);

/* Checks with the caller's message, null being a wrong value. */
/* key absent, or a string without NUL for which ok() holds; else msg. */
int check_string_ok(struct stack_error *err, const char *parent, const json_t *obj, const char *key,
		    bool (*ok)(const char *), const char *msg);
/* key absent, or a string for which problem() gives NULL; else "must be a
 * string", or problem()'s words and what it got (check_got()), e.g. "must be
 * an absolute path, got \"x\"". */
int check_string_is(struct stack_error *err, const char *parent, const json_t *obj, const char *key,
		    const char *(*problem)(const char *));
/* key absent, or true or false; else "must be true or false". */
int check_flag(struct stack_error *err, const char *parent, const json_t *obj, const char *key);
/* key absent, or an integer from min to max; else msg. */
int check_int_ok(struct stack_error *err, const char *parent, const json_t *obj, const char *key, long min,
		 long max, const char *msg);
/* v (at path) absent, or a string stack_path_problem() accepts; else its
 * words ("must be an absolute path" for a value that is no string). */
int check_abs_path_ok(struct stack_error *err, const char *path, const json_t *v);

/* SPDX-License-Identifier: BSD-2-Clause */
/* The effective stack of an etcd source (design.md §9): PREFIX/stack with
 * the layers' members completed from the registrations. Only the path to
 * each layer's "instances" is copied (root, opsworks, layers, each layer,
 * its instances): the rest of the document is shared with the input by
 * reference, so that a membership change on a large stack costs little. */
#include "effective.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stack/stack.h"
#include "util.h"

/* The member fields a registration may set (design.md §2), addresses
 * first: they become hosts in configs and arguments of tools, so they are
 * plain host names or IP addresses, as stack.c requires of static members.
 * Checked here too, so that one bad registration is left out instead of
 * making every agent's stack invalid. */
static const char *const member_strings[] = {
	"private_ip", "private_dns_name", "public_dns_name", "ip",
	"status", "aws_instance_id", "availability_zone", "instance_type", NULL,
};
#define MEMBER_ADDRESSES 4

static bool text_is_clean(const char *s)
{
	for (const unsigned char *c = (const unsigned char *)s; *c; c++)
		if (*c < 0x20 || *c == 0x7f)
			return false;
	return strlen(s) <= 1024;
}

/* The member entry of registration reg (a new object), or NULL with the
 * offending key and what it must be (static texts) when a field is not
 * what design.md §2 allows. */
static json_t *member_of(const json_t *reg, const char **ret_key, const char **ret_want)
{
	json_t *m = json_object(), *v;

	for (size_t i = 0; member_strings[i]; i++) {
		v = json_object_get(reg, member_strings[i]);
		if (!v || json_is_null(v))
			continue;
		if (!json_is_string(v) || json_string_length(v) != strlen(json_string_value(v)) ||
		    !text_is_clean(json_string_value(v)) ||
		    (i < MEMBER_ADDRESSES && *json_string_value(v) && !stack_address_is_plain(json_string_value(v)))) {
			*ret_key = member_strings[i];
			*ret_want = i < MEMBER_ADDRESSES ? "a host name or an IP address"
							 : "a string without control characters";
			json_decref(m);
			return NULL;
		}
		json_object_set(m, member_strings[i], v);
	}
	v = json_object_get(reg, "backends");
	if (v && !json_is_null(v)) {
		if (!json_is_integer(v) || json_integer_value(v) < 0) {
			*ret_key = "backends";
			*ret_want = "an integer of at least 0";
			json_decref(m);
			return NULL;
		}
		json_object_set(m, "backends", v);
	}
	return m;
}

/* "layers": an array of names; else NULL. */
static const json_t *layers_of(const json_t *reg)
{
	const json_t *a = json_object_get(reg, "layers"), *v;
	size_t i;

	if (!json_is_array(a))
		return NULL;
	json_array_foreach(a, i, v)
		if (!json_is_string(v) || !name_is_valid(json_string_value(v)))
			return NULL;
	return a;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void warn(struct buf *w, const char *fmt, ...) _printf_(2, 3);
static void warn(struct buf *w, const char *fmt, ...)
{
	va_list ap;
	_cleanup_free_ char *s = NULL;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	if (!s)
		return;
	if (w->len)
		buf_puts(w, "; ");
	buf_puts(w, s);
}

/* A shallow copy of o[key] put back into o (o itself a copy), when it is an
 * object; NULL otherwise. */
static json_t *own_object(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key), *c;

	if (!json_is_object(v))
		return NULL;
	c = json_copy(v);
	json_object_set_new(o, key, c);
	return c;
}

/* out's opsworks.layers with every layer and its instances owned by out
 * (shallow copies), so that members can be added and removed; NULL when the
 * stack has no layers object. */
static json_t *own_layers(json_t *out)
{
	json_t *opsworks = own_object(out, "opsworks"), *layers, *l;
	const char *name;

	if (!opsworks || !(layers = own_object(opsworks, "layers")))
		return NULL;
	json_object_foreach(layers, name, l) {
		json_t *lc;
		if (!json_is_object(l))
			continue;
		lc = json_copy(l);
		/* An "instances" that is not an object stays: stack_parse names it. */
		if (json_is_object(json_object_get(lc, "instances")))
			json_object_set_new(lc, "instances", json_copy(json_object_get(lc, "instances")));
		json_object_set_new(layers, name, lc);
	}
	return layers;
}

/* Why reg cannot be a member at all (malloc'd, without the hostname), or
 * NULL. */
static char *reg_invalid(const char *host, const json_t *reg)
{
	const char *key = NULL, *want = NULL;
	json_t *member;

	if (!name_is_valid(host))
		return xstrdup("its hostname is not a name of [A-Za-z0-9_.-]");
	if (!json_is_object(reg))
		return xstrdup("not a JSON object");
	if (!layers_of(reg))
		return xstrdup("\"layers\" must be an array of layer names");
	if (!(member = member_of(reg, &key, &want)))
		return xasprintf("\"%s\" must be %s", key, want);
	json_decref(member);
	return NULL;
}

char *stack_registration_problem(const json_t *stack, const char *host, const json_t *reg, bool *ret_left_out)
{
	const json_t *layers = json_object_get(json_object_get(stack, "opsworks"), "layers"), *n;
	char *why = reg_invalid(host, reg);
	struct buf missing;
	size_t i, found = 0;

	*ret_left_out = true;
	if (why)
		return why;
	*ret_left_out = false;
	if (!stack)
		return NULL;
	buf_init(&missing);
	json_array_foreach(layers_of(reg), i, n) {
		const char *name = json_string_value(n);
		if (json_is_object(json_object_get(layers, name)))
			found++;
		else
			buf_printf(&missing, "%s\"%s\"", missing.len ? ", " : "", name);
	}
	*ret_left_out = found == 0 && json_array_size(layers_of(reg)) > 0;
	if (!missing.len) {
		buf_free(&missing);
		return NULL;
	}
	why = xasprintf("the stack has no layer %s%s", missing.data, *ret_left_out ? "" : " (in the others)");
	buf_free(&missing);
	return why;
}

/* Puts one registration into layers: the host leaves the layers its static
 * entry named (the registration wins), then joins the layers it names. */
static void add_registration(json_t *layers, const char *host, const json_t *reg, struct buf *w)
{
	const json_t *names = layers_of(reg), *n;
	const char *key = NULL, *want = NULL, *lname;
	_cleanup_free_ char *why = reg_invalid(host, reg), *ehost = str_escape_ctl(host);
	json_t *member, *l;
	size_t i;

	if (why) {
		warn(w, "registration \"%.64s\" left out: %s", ehost, why);
		return;
	}
	member = member_of(reg, &key, &want);
	if (layers)
		json_object_foreach(layers, lname, l) {
			json_t *inst = json_object_get(l, "instances");
			if (json_is_object(inst))
				(void)json_object_del(inst, host);
		}
	json_array_foreach(names, i, n) {
		const char *name = json_string_value(n);
		json_t *inst;
		l = layers ? json_object_get(layers, name) : NULL;
		if (!json_is_object(l)) {
			warn(w, "registration \"%s\": the stack has no layer \"%s\"", host, name);
			continue;
		}
		inst = json_object_get(l, "instances");
		if (!inst || json_is_null(inst)) {
			inst = json_object();
			json_object_set_new(l, "instances", inst);
		}
		if (json_is_object(inst))
			json_object_set(inst, host, member);
	}
	json_decref(member);
}

/* The entry stack_effective gives host in layer l (named lname) when its
 * registration is reg (NULL: none), as a new reference, or NULL when host
 * is no member of l. Mirrors add_registration for one host and one layer:
 * hosts do not touch each other's entries. */
static json_t *entry_with(const json_t *l, const char *lname, const char *host, const json_t *reg)
{
	const json_t *inst = json_object_get(l, "instances"), *n;
	const char *key, *want;
	_cleanup_free_ char *why = reg ? reg_invalid(host, reg) : NULL;
	size_t i;

	if (!reg || why)
		return json_is_object(inst) ? json_incref(json_object_get(inst, host)) : NULL;
	if (inst && !json_is_null(inst) && !json_is_object(inst))
		return NULL;
	json_array_foreach(layers_of(reg), i, n)
		if (strcmp(json_string_value(n), lname) == 0)
			return member_of(reg, &key, &want);
	return NULL;
}

bool stack_registration_same_effect(const json_t *stack, const char *host, const json_t *a, const json_t *b)
{
	const json_t *layers = json_object_get(json_object_get(stack, "opsworks"), "layers"), *l;
	const char *lname;
	bool same = true, left_out;
	char *why;

	if (!json_is_object(stack))
		return false;
	for (int k = 0; k < 2; k++) {
		const json_t *reg = k ? b : a;
		if (!reg)
			continue;
		why = stack_registration_problem(stack, host, reg, &left_out);
		free(why);
		if (why)
			return false;
	}
	if (!json_is_object(layers))
		return true;
	json_object_foreach((json_t *)layers, lname, l) {
		json_t *ea, *eb;

		if (!json_is_object(l))
			continue;
		ea = entry_with(l, lname, host, a);
		eb = entry_with(l, lname, host, b);
		same = (!ea && !eb) || (ea && eb && json_equal(ea, eb));
		json_decref(ea);
		json_decref(eb);
		if (!same)
			break;
	}
	return same;
}

json_t *stack_effective(const json_t *stack, const json_t *registrations, char **ret_warnings)
{
	struct buf w;
	json_t *out, *layers;
	const char **hosts;
	const char *host;
	json_t *reg;
	size_t n = 0;

	if (ret_warnings)
		*ret_warnings = NULL;
	if (!json_is_object(stack))
		return NULL;
	out = json_copy((json_t *)stack);
	if (!json_is_object(registrations) || json_object_size(registrations) == 0)
		return out;
	buf_init(&w);
	layers = own_layers(out);
	/* In hostname order: the same registrations give the same warnings. */
	hosts = xcalloc(json_object_size(registrations) + 1, sizeof(*hosts));
	json_object_foreach((json_t *)registrations, host, reg)
		hosts[n++] = host;
	qsort(hosts, n, sizeof(*hosts), cmp_str);
	for (size_t i = 0; i < n; i++)
		add_registration(layers, hosts[i], json_object_get(registrations, hosts[i]), &w);
	free(hosts);
	if (ret_warnings && w.len)
		*ret_warnings = buf_steal(&w);
	buf_free(&w);
	return out;
}

/* SPDX-License-Identifier: BSD-2-Clause */
#include "plone.h"

#include <math.h>
#include <sched.h>
#include <string.h>

#include "recipe.h"
#include "stack/stack.h"
#include "util.h"

const json_t *plone_section(const struct stack *s, const char *key)
{
	const json_t *v = json_object_get(s->root, key);
	return json_is_object(v) ? v : NULL;
}

long plone_cpu_count(void)
{
	cpu_set_t set;
	int n;

	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return 1;
	n = CPU_COUNT(&set);
	return n > 0 ? n : 1;
}

static double per_cpu(const struct stack *s)
{
	const json_t *v = json_object_get(plone_section(s, "plone_instances"), "per_cpu");
	double d = json_is_number(v) ? json_number_value(v) : 2.0;
	return d > 0 && d <= PLONE_CLIENTS_MAX ? d : 2.0;
}

static long clamp_clients(double n)
{
	/* ceil() of a product like 4 × 0.25 must not round 1.0000000001 up to 2. */
	double c = ceil(n - 1e-9);
	if (!(c >= 1))
		return 1;
	if (c > PLONE_CLIENTS_MAX)
		return PLONE_CLIENTS_MAX;
	return (long)c;
}

/* The "cpus" key of m's entry in its layer, when the stack gives one. */
static long member_cpus(const struct stack *s, const struct stack_member *m)
{
	const json_t *layers = json_object_get(json_object_get(s->root, "opsworks"), "layers");
	const char *name;
	const json_t *layer;

	json_object_foreach((json_t *)layers, name, layer) {
		const json_t *v = json_object_get(json_object_get(json_object_get(layer, "instances"), m->hostname),
						  "cpus");
		if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= 4096)
			return (long)json_integer_value(v);
	}
	return 0;
}

long plone_client_count(const struct stack *s, const struct stack_member *m)
{
	const json_t *count = json_object_get(plone_section(s, "plone_instances"), "instance_count");
	bool self = !m || m->self;
	long backends = m ? m->backends : -1;
	long cpus;

	if (json_is_integer(count) && json_integer_value(count) > 0)
		return clamp_clients((double)json_integer_value(count));
	if (self && backends <= 0) {
		const json_t *b = json_object_get(s->self, "backends");
		if (json_is_integer(b))
			backends = (long)json_integer_value(b);
	}
	if (backends > 0)
		return clamp_clients((double)backends * per_cpu(s) / 8.0);
	cpus = self ? 0 : member_cpus(s, m);
	if (cpus <= 0)
		cpus = plone_cpu_count();
	return clamp_clients((double)cpus * per_cpu(s));
}

const struct stack_member *plone_self_member(const struct stack *s, const char *layer)
{
	const struct stack_layer *l = stack_layer_find(s, layer);

	for (size_t i = 0; l && i < l->n_members; i++)
		if (l->members[i].self)
			return &l->members[i];
	return NULL;
}

const struct stack_member *plone_first_online_or_self(const struct stack *s, const char *layer)
{
	const struct stack_layer *l = stack_layer_find(s, layer);

	for (size_t i = 0; l && i < l->n_members; i++)
		if (l->members[i].online || l->members[i].self)
			return &l->members[i];
	return NULL;
}

const char *plone_member_address(const struct stack_member *m)
{
	if (m->private_ip && *m->private_ip)
		return m->private_ip;
	if (m->private_dns_name && *m->private_dns_name)
		return m->private_dns_name;
	if (m->ip && *m->ip)
		return m->ip;
	if (m->public_dns_name && *m->public_dns_name)
		return m->public_dns_name;
	return m->hostname;
}

bool plone_layer_runs(const struct stack *s, const char *layer, const char *prefix, bool exact)
{
	bool found = false;

	for (int ev = 0; ev < _EVENT_MAX && !found; ev++) {
		size_t n;
		_cleanup_free_ const char **v = recipes_layer_recipes(s, layer, (enum event)ev, &n);

		for (size_t i = 0; i < n && !found; i++) {
			const char *c = v[i] ? recipe_canonical_name(v[i]) : NULL;
			found = c && (exact ? strcmp(c, prefix) == 0 : strncmp(c, prefix, strlen(prefix)) == 0);
		}
	}
	return found;
}

bool plone_self_runs(const struct stack *s, const char *prefix, bool exact)
{
	for (size_t i = 0; i < s->n_self_layers; i++)
		if (plone_layer_runs(s, s->self_layers[i], prefix, exact))
			return true;
	return false;
}

bool plone_relstorage_packs(const struct stack *s)
{
	const json_t *pi = plone_section(s, "plone_instances");

	if (!json_is_true(json_object_get(pi, "enable_relstorage")))
		return false;
	if (json_is_true(json_object_get(json_object_get(pi, "relstorage"), "enable_pack")))
		return true;
	for (size_t i = 0; i < s->n_layers; i++)
		if (plone_layer_runs(s, s->layers[i].shortname, "enable_pack", true))
			return true;
	return false;
}

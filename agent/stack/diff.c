/* SPDX-License-Identifier: BSD-2-Clause */
/* Two stack models to the triggers of design.md §3 (diff.h). */
#include "diff.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "stack.h"
#include "util.h"
struct tlist {
	struct trigger *v;
	size_t n;
	size_t cap;
};

static bool streq_null(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

static void tl_add(struct tlist *t, enum event ev, const char *layer, const char *app, bool use_old)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->v[i].event == ev && streq_null(t->v[i].layer, layer) && streq_null(t->v[i].app, app))
			return;
	if (t->n == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 8;
		t->v = xrealloc(t->v, t->cap * sizeof(*t->v));
	}
	t->v[t->n++] = (struct trigger){
		.event = ev,
		.layer = layer ? xstrdup(layer) : NULL,
		.app = app ? xstrdup(app) : NULL,
		.use_old_stack = use_old,
	};
}

/* Members that count for configuration: online peers, and always ourselves. */
static size_t counted_members(const struct stack_layer *l, const struct stack_member **v)
{
	size_t n = 0;

	for (size_t i = 0; i < l->n_members; i++)
		if (l->members[i].online || l->members[i].self)
			v[n++] = &l->members[i];
	return n;
}

static int member_cmp(const void *a, const void *b)
{
	const struct stack_member *x = *(const struct stack_member *const *)a;
	const struct stack_member *y = *(const struct stack_member *const *)b;

	return strcmp(x->hostname, y->hostname);
}

static bool layer_peers_changed(const struct stack_layer *a, const struct stack_layer *b)
{
	const struct stack_member **va, **vb;
	size_t na, nb;
	bool changed = false;

	va = xcalloc(a->n_members + 1, sizeof(*va));
	vb = xcalloc(b->n_members + 1, sizeof(*vb));
	na = counted_members(a, va);
	nb = counted_members(b, vb);
	if (na != nb) {
		changed = true;
		goto out;
	}
	qsort(va, na, sizeof(*va), member_cmp);
	qsort(vb, nb, sizeof(*vb), member_cmp);
	for (size_t i = 0; i < na && !changed; i++)
		changed = strcmp(va[i]->hostname, vb[i]->hostname) != 0 ||
			  !streq_null(va[i]->private_ip, vb[i]->private_ip) ||
			  !streq_null(va[i]->private_dns_name, vb[i]->private_dns_name) ||
			  !streq_null(va[i]->public_dns_name, vb[i]->public_dns_name) || !streq_null(va[i]->ip, vb[i]->ip) ||
			  va[i]->backends != vb[i]->backends;
out:
	free(va);
	free(vb);
	return changed;
}

static bool membership_changed(const struct stack *old, const struct stack *new)
{
	for (size_t i = 0; i < new->n_layers; i++) {
		const struct stack_layer *o = stack_layer_find(old, new->layers[i].shortname);

		if (!o || layer_peers_changed(o, &new->layers[i]))
			return true;
	}
	for (size_t i = 0; i < old->n_layers; i++)
		if (!stack_layer_find(new, old->layers[i].shortname))
			return true;
	return false;
}

static bool value_changed(const json_t *a, const json_t *b)
{
	if (!a || !b)
		return a != b;
	return !json_equal((json_t *)a, (json_t *)b);
}

/* Keys of a and b, except those in skip[], whose values differ. */
static bool object_changed_except(const json_t *a, const json_t *b, const char *const *skip)
{
	const json_t *objs[2] = { a, b };
	const char *k;
	json_t *v;

	for (size_t o = 0; o < 2; o++) {
		json_object_foreach((json_t *)objs[o], k, v) {
			size_t i;

			for (i = 0; skip[i]; i++)
				if (strcmp(skip[i], k) == 0)
					break;
			if (skip[i])
				continue;
			if (value_changed(json_object_get(a, k), json_object_get(b, k)))
				return true;
		}
	}
	return false;
}

/* Whether something other than membership and apps changed: Custom JSON,
 * agent, ebs, opsworks.stack, ... OpsWorks' per-command bookkeeping
 * (opsworks.activity, sent_at, deployment) changes on every command and is
 * not a change of the stack. */
static bool other_changed(const struct stack *old, const struct stack *new)
{
	static const char *const top_skip[] = { "opsworks", "deploy", NULL };
	static const char *const ow_skip[] = { "layers", "instance", "activity", "sent_at", "deployment", NULL };
	const json_t *oa = json_object_get(old->root, "opsworks"), *ob = json_object_get(new->root, "opsworks");

	if (object_changed_except(old->root, new->root, top_skip))
		return true;
	if (json_is_object(oa) && json_is_object(ob))
		return object_changed_except(oa, ob, ow_skip);
	return json_is_object(oa) != json_is_object(ob);
}

int stack_diff(const struct stack *old, const struct stack *new, struct trigger **ret, size_t *ret_n)
{
	struct tlist t = { 0 };
	size_t remaining = 0;

	*ret = NULL;
	*ret_n = 0;
	if (!new)
		return -EINVAL;

	if (!old) {
		tl_add(&t, EVENT_SETUP, NULL, NULL, false);
		tl_add(&t, EVENT_CONFIGURE, NULL, NULL, false);
		for (size_t i = 0; i < new->n_apps; i++)
			tl_add(&t, EVENT_DEPLOY, NULL, new->apps[i].name, false);
		if (new->n_apps == 0)
			tl_add(&t, EVENT_DEPLOY, NULL, NULL, false);
		goto done;
	}
	if (stack_same_identity(old, new) && json_equal(old->root, new->root))
		return 0;

	/* Layers the instance joined run their whole lifecycle on their own. */
	for (size_t i = 0; i < new->n_self_layers; i++) {
		const char *l = new->self_layers[i];

		if (stack_has_self_layer(old, l)) {
			remaining++;
			continue;
		}
		tl_add(&t, EVENT_SETUP, l, NULL, false);
		tl_add(&t, EVENT_CONFIGURE, l, NULL, false);
		for (size_t j = 0; j < new->n_apps; j++)
			tl_add(&t, EVENT_DEPLOY, l, new->apps[j].name, false);
		if (new->n_apps == 0)
			tl_add(&t, EVENT_DEPLOY, l, NULL, false);
	}
	/* Layers it left are torn down with the recipes of the old document,
	 * where the layer still exists. */
	for (size_t i = 0; i < old->n_self_layers; i++) {
		const char *l = old->self_layers[i];

		if (stack_has_self_layer(new, l))
			continue;
		tl_add(&t, EVENT_UNDEPLOY, l, NULL, true);
		tl_add(&t, EVENT_SHUTDOWN, l, NULL, true);
	}

	/* Events for every layer (layer NULL) only make sense when the instance
	 * keeps at least one of its layers: joined layers were handled in full
	 * above, and with no layer left there is nothing to run. */
	if (remaining == 0)
		goto done;

	if (membership_changed(old, new) ||
	    value_changed(json_object_get(json_object_get(old->root, "opsworks"), "instance"),
			  json_object_get(json_object_get(new->root, "opsworks"), "instance")) ||
	    other_changed(old, new))
		tl_add(&t, EVENT_CONFIGURE, NULL, NULL, false);

	for (size_t i = 0; i < new->n_apps; i++) {
		const struct stack_app *o = stack_app_find(old, new->apps[i].name);

		if (!o || value_changed(o->json, new->apps[i].json))
			tl_add(&t, EVENT_DEPLOY, NULL, new->apps[i].name, false);
	}
	for (size_t i = 0; i < old->n_apps; i++)
		if (!stack_app_find(new, old->apps[i].name))
			tl_add(&t, EVENT_UNDEPLOY, NULL, old->apps[i].name, true);

done:
	*ret = t.v;
	*ret_n = t.n;
	return 0;
}

void triggers_free(struct trigger *t, size_t n)
{
	if (!t)
		return;
	for (size_t i = 0; i < n; i++) {
		free(t[i].layer);
		free(t[i].app);
	}
	free(t);
}

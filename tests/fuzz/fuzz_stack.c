/* SPDX-License-Identifier: BSD-2-Clause */
/* libFuzzer target: any input either fails validation cleanly or gives a
 * model that diffs against a fixed good stack both ways, dumps, and frees
 * without leaks or undefined behaviour. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "recipes/recipe.h"
#include "stack/stack.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char good_doc[] =
	"{\"opsworks\":{\"stack\":{\"name\":\"prod\"},\"layers\":{"
	"\"plone_instances\":{\"name\":\"Plone\",\"instances\":{"
	"\"app1\":{\"private_ip\":\"10.0.0.1\",\"status\":\"online\",\"backends\":4},"
	"\"app2\":{\"private_ip\":\"10.0.0.2\",\"status\":\"online\"}}},"
	"\"lb\":{\"instances\":{\"lb1\":{\"private_ip\":\"10.0.1.1\",\"status\":\"online\"}}}}},"
	"\"deploy\":{\"plone_instances\":{\"scm\":{\"scm_type\":\"git\",\"repository\":\"https://example.com/x.git\","
	"\"revision\":\"main\"}},\"zeoserver\":{}},"
	"\"agent\":{\"layers\":{\"lb\":{\"setup\":[\"haproxy\",\"hook\"]}},"
	"\"recipes\":{\"hook\":{\"command\":[\"/usr/local/bin/hook\"]}}},"
	"\"plone_instances\":{\"app_name\":\"plone_instances\"}}";

static struct stack *good;

static void diff_and_free(const struct stack *old, const struct stack *new)
{
	struct trigger *t = NULL;
	size_t n = 0;
	int r = stack_diff(old, new, &t, &n);

	assert(r == 0);
	for (size_t i = 0; i < n; i++)
		assert(t[i].event >= 0 && t[i].event < _EVENT_MAX);
	triggers_free(t, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct stack_error err;
	struct stack *s = NULL;
	const char **v;
	char *dump;
	size_t n;

	if (!good) {
		int r = recipes_stack_load(good_doc, strlen(good_doc), "app1", &good, &err);

		assert(r == 0);
	}
	if (recipes_stack_load((const char *)data, size, "app1", &s, &err) < 0) {
		assert(!s);
		assert(memchr(err.path, '\0', sizeof(err.path)) && err.path[0] == '$');
		assert(memchr(err.message, '\0', sizeof(err.message)));
		return 0;
	}
	diff_and_free(good, s);
	diff_and_free(s, good);
	diff_and_free(NULL, s);
	diff_and_free(s, s);
	for (size_t i = 0; i < s->n_layers; i++) {
		v = recipes_layer_recipes(s, s->layers[i].shortname, EVENT_SETUP, &n);
		free(v);
	}
	dump = stack_dump(s, &n);
	free(dump);
	stack_unref(s);
	return 0;
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* libFuzzer target: the state.json reader (engine_state_parse) and the
 * typed run records made from it (run_from_json). Besides not crashing,
 * what it returns must hold the promises the engine relies on: run ids in
 * 1..ENGINE_RUN_ID_MAX and unique, next_run_id in range, revisions as 16
 * hex digits, instance names valid, retry counts and times clamped; every record it keeps makes
 * a typed record, which written back and read again is the same. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "engine/internal.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
	if (!ok)
		abort();
}

static int is_rev(const json_t *v)
{
	const char *s = json_string_value(v);
	if (!s || strlen(s) != 16)
		return 0;
	for (size_t i = 0; i < 16; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *o = NULL, *rec, *v, *seen;
	char *err = NULL;
	const char *k;
	size_t i;

	if (engine_state_parse((const char *)data, size, 10000, &o, &err) < 0) {
		check(o == NULL && err != NULL);
		free(err);
		return 0;
	}
	check(json_is_object(o) && json_is_array(json_object_get(o, "runs")));
	v = json_object_get(o, "next_run_id");
	check(json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) <= ENGINE_RUN_ID_MAX);
	seen = json_object();
	json_array_foreach(json_object_get(o, "runs"), i, rec) {
		char key[32];
		json_int_t id = json_integer_value(json_object_get(rec, "id"));
		check(id >= 1 && id <= ENGINE_RUN_ID_MAX);
		snprintf(key, sizeof(key), "%lld", (long long)id);
		check(json_object_get(seen, key) == NULL);
		json_object_set_new(seen, key, json_true());
		check(json_is_string(json_object_get(rec, "event")) && json_is_string(json_object_get(rec, "status")));
		if ((v = json_object_get(rec, "_stack")))
			check(is_rev(v));
		v = json_object_get(rec, "changed");
		check(json_is_integer(v) && json_integer_value(v) >= 0);
		struct run *r = run_from_json(rec);
		check(r != NULL && r->id == id && r->changed >= 0);
		check(!r->stack || is_rev(json_object_get(rec, "_stack")));
		json_t *w = run_to_json(r, RUN_VIEW_FILE);
		struct run *r2 = run_from_file(w);
		check(r2 != NULL && r2->id == r->id && r2->status == r->status && r2->req.event == r->req.event);
		json_t *w2 = run_to_json(r2, RUN_VIEW_FILE);
		check(json_equal(w, w2));
		json_decref(w);
		json_decref(w2);
		run_free(r);
		run_free(r2);
	}
	json_decref(seen);
	json_object_foreach(json_object_get(o, "failed"), k, rec) {
		json_int_t c = json_integer_value(json_object_get(rec, "count"));
		check(c >= 1 && c <= 1000000);
		check(json_integer_value(json_object_get(rec, "next_retry")) >= 0);
		if ((v = json_object_get(rec, "stack")))
			check(is_rev(v));
	}
	json_object_foreach(json_object_get(o, "last_success"), k, rec)
		check(is_rev(json_object_get(rec, "revision")));
	if ((v = json_object_get(o, "applied_revision")))
		check(is_rev(v));
	if ((v = json_object_get(o, "stack_revision")))
		check(is_rev(v));
	/* The names a stack is loaded as: valid names, never a path. */
	if ((v = json_object_get(o, "instance")))
		check(json_is_string(v) && name_is_valid(json_string_value(v)) && json_string_length(v) <= 255);
	if ((v = json_object_get(o, "applied_instance")))
		check(json_is_string(v) && name_is_valid(json_string_value(v)) && json_string_length(v) <= 255);
	if ((v = json_object_get(o, "applied_layers"))) {
		json_t *l;
		check(json_is_array(v) && json_array_size(v) <= 256);
		json_array_foreach(v, i, l)
			check(json_is_string(l) && name_is_valid(json_string_value(l)));
	}
	json_decref(o);
	return 0;
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* Run records and state.json as JSON: the one place that reads and writes
 * them. What is read is checked member by member (issue 9: numbers that
 * reach kill(), names that reach paths), within the bounds of what agentd
 * writes (internal.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"
#include "log.h"
#include "stack/stack.h"
#include "util.h"

/* What state.json may hold with `history` finished runs (see the bounds in
 * internal.h): its elements and its bytes. An older agentd kept the steps
 * of the running run and of one finished run in it: twice a run file. */
static long state_history_clamp(long history)
{
	return history < 1 ? 1 : history > 10000 ? 10000 : history;
}

static size_t state_max_elements(long history)
{
	return ((size_t)state_history_clamp(history) + RUN_QUEUE_MAX) * RUN_REC_ELEMENTS + 2 * RUN_FILE_MAX_ELEMENTS +
	       (size_t)ENGINE_KEYS_MAX * 3 * ENGINE_KEY_ENTRY_ELEMENTS + 64;
}

size_t state_max_bytes(long history)
{
	size_t n = ((size_t)state_history_clamp(history) + RUN_QUEUE_MAX) * RUN_REC_MAX_BYTES + 2 * RUN_FILE_MAX_BYTES +
		   (size_t)ENGINE_KEYS_MAX * 3 * ENGINE_KEY_ENTRY_MAX_BYTES + 4096;
	return n < STATE_MAX_BYTES ? n : STATE_MAX_BYTES;
}

/* A text for a run record: at most RUN_TEXT_MAX bytes, cut at a character
 * boundary (never inside a UTF-8 sequence); NULL gives null. */
json_t *run_text_json(const char *s)
{
	size_t n;

	if (!s)
		return json_null();
	n = strlen(s);
	if (n > RUN_TEXT_MAX) {
		n = RUN_TEXT_MAX;
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
	}
	return json_stringn(s, n) ?: json_string("(not UTF-8)");
}

/* ------------------------------------------------------------ run records */

json_t *run_to_json(const struct run *r, enum run_view view)
{
	bool private = view == RUN_VIEW_STATE || view == RUN_VIEW_FILE;
	json_t *o = json_object();

	json_object_set_new(o, "id", json_integer(r->id));
	json_object_set_new(o, "event", json_string(event_to_string(r->req.event)));
	json_object_set_new(o, "layer", json_string_or_null(r->req.layer));
	json_object_set_new(o, "app", json_string_or_null(r->req.app));
	json_object_set_new(o, "trigger", json_string(trigger_to_string(r->req.trigger)));
	/* Waiting for a fleet lock or slot (§5, §9): the public views say so
	 * and for what; state_dir keeps "running". */
	if (r->waiting_for && r->status == RUN_RUNNING && !private) {
		json_object_set_new(o, "status", json_string("waiting"));
		json_object_set(o, "waiting_for", r->waiting_for);
	} else
		json_object_set_new(o, "status", json_string(run_status_to_string(r->status)));
	json_object_set_new(o, "queued", json_string_or_null(r->queued));
	json_object_set_new(o, "started", json_string_or_null(r->started));
	json_object_set_new(o, "finished", json_string_or_null(r->finished));
	json_object_set_new(o, "changed", json_integer(r->changed));
	if (r->stack_revision)
		json_object_set_new(o, "stack_revision", json_string(r->stack_revision));
	if (r->duration_ms >= 0)
		json_object_set_new(o, "duration_ms", json_real(r->duration_ms));
	if (r->error)
		json_object_set_new(o, "error", run_text_json(r->error));
	if (r->steps_omitted >= 0)
		json_object_set_new(o, "steps_omitted", json_integer(r->steps_omitted));
	if (r->steps_error)
		json_object_set_new(o, "steps_error", json_string(r->steps_error));
	if (r->steps && (view == RUN_VIEW_FILE || view == RUN_VIEW_PUBLIC_STEPS ||
			 (view == RUN_VIEW_STATE && !run_is_pending(r))))
		json_object_set(o, "steps", r->steps);
	else if (view == RUN_VIEW_FILE || view == RUN_VIEW_PUBLIC_STEPS)
		json_object_set_new(o, "steps", json_array());
	/* A run of a named plan (rollback; the scheduler's jobs later) says
	 * which, as design.md §5's runs do. */
	if (r->req.recipe && !private)
		json_object_set_new(o, "recipe", json_string(r->req.recipe));
	if (!private)
		return o;
	if (r->stack)
		json_object_set_new(o, "_stack", json_string(r->stack));
	if (r->req.recipe)
		json_object_set_new(o, "_recipe", json_string(r->req.recipe));
	if (r->front)
		json_object_set_new(o, "_front", json_true());
	if (r->requeued && view == RUN_VIEW_STATE)
		json_object_set_new(o, "_requeued", json_true());
	if (r->switched)
		json_object_set_new(o, "_switched", json_true());
	if (r->has_pgid) {
		json_object_set_new(o, "_pgid", json_integer(r->pgid));
		json_object_set_new(o, "_pgid_start", json_integer(r->pgid_start));
	}
	return o;
}

static const char *obj_str(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static char *obj_strdup(const json_t *o, const char *k)
{
	const char *s = obj_str(o, k);
	return s ? xstrdup(s) : NULL;
}

struct run *run_from_json(const json_t *c)
{
	struct run_request req = {
		.event = event_from_string(obj_str(c, "event")),
		.trigger = trigger_from_string(obj_str(c, "trigger")),
		.layer = (char *)obj_str(c, "layer"),
		.app = (char *)obj_str(c, "app"),
		.recipe = (char *)obj_str(c, "_recipe"),
	};
	int status = run_status_from_string(obj_str(c, "status"));
	struct run *r;
	json_t *v;

	if (req.event == EVENT_INVALID || req.trigger == TRIGGER_INVALID || status < 0)
		return NULL;
	/* An older agentd switched the link itself and queued the restart. */
	if (!req.recipe && json_is_true(json_object_get(c, "_rollback_restart")))
		req.recipe = (char *)RUN_RECIPE_RESTART;
	r = run_new((long)json_integer_value(json_object_get(c, "id")), &req, obj_str(c, "_stack"));
	r->status = (enum run_status)status;
	r->queued = obj_strdup(c, "queued");
	r->started = obj_strdup(c, "started");
	r->finished = obj_strdup(c, "finished");
	r->changed = (long)json_integer_value(json_object_get(c, "changed"));
	if ((v = json_object_get(c, "duration_ms")))
		r->duration_ms = json_number_value(v);
	r->error = obj_strdup(c, "error");
	r->stack_revision = obj_strdup(c, "stack_revision");
	if ((v = json_object_get(c, "steps")))
		r->steps = json_incref(v);
	if ((v = json_object_get(c, "steps_omitted")))
		r->steps_omitted = (long)json_integer_value(v);
	r->steps_error = obj_strdup(c, "steps_error");
	if (json_is_integer(json_object_get(c, "_pgid"))) {
		/* A start time that is not a number is kept as INT64_MIN: the
		 * group is then not signalled, and the log says why. */
		v = json_object_get(c, "_pgid_start");
		r->has_pgid = true;
		r->pgid = json_integer_value(json_object_get(c, "_pgid"));
		r->pgid_start = json_is_integer(v) ? json_integer_value(v) : INT64_MIN;
	}
	r->front = json_is_true(json_object_get(c, "_front"));
	r->requeued = json_is_true(json_object_get(c, "_requeued"));
	r->switched = json_is_true(json_object_get(c, "_switched"));
	return r;
}

/* ------------------------------------------------------- reading state.json */

/* A stack revision as stack.c makes it: 16 lowercase hex digits. It names a
 * file in state_dir/stacks, so nothing else may pass. */
bool revision_is_valid(const char *r)
{
	if (!r || strlen(r) != 16)
		return false;
	for (size_t i = 0; i < 16; i++)
		if (!((r[i] >= '0' && r[i] <= '9') || (r[i] >= 'a' && r[i] <= 'f')))
			return false;
	return true;
}

static bool json_revision_is_valid(const json_t *v)
{
	return json_is_string(v) && revision_is_valid(json_string_value(v));
}

/* An integer member in [min, max], else false. */
static bool json_int_in(const json_t *v, json_int_t min, json_int_t max, json_int_t *ret)
{
	if (!json_is_integer(v))
		return false;
	json_int_t x = json_integer_value(v);
	if (x < min || x > max)
		return false;
	if (ret)
		*ret = x;
	return true;
}

static bool json_name_or_null(const json_t *v)
{
	return json_is_null(v) || (json_is_string(v) && name_is_valid(json_string_value(v)));
}

/* Whether member k of a run record with value v is kept: what a step, a
 * path or a kill() will use must be in range; what is only shown is
 * dropped when it has the wrong type. */
static bool state_run_member_ok(const char *k, const json_t *v)
{
	if (!strcmp(k, "id") || !strcmp(k, "event") || !strcmp(k, "trigger") || !strcmp(k, "status") ||
	    !strcmp(k, "layer") || !strcmp(k, "app") || !strcmp(k, "_stack"))
		return true;
	if (!strcmp(k, "changed") || !strcmp(k, "steps_omitted"))
		return json_int_in(v, 0, INT32_MAX, NULL);
	if (!strcmp(k, "duration_ms"))
		return json_is_number(v) && json_number_value(v) >= 0;
	if (!strcmp(k, "queued") || !strcmp(k, "started") || !strcmp(k, "finished"))
		return json_is_string(v) || json_is_null(v);
	if (!strcmp(k, "error") || !strcmp(k, "stack_revision") || !strcmp(k, "steps_error"))
		return json_is_string(v);
	if (!strcmp(k, "_recipe"))
		return json_is_string(v) && name_is_valid(json_string_value(v));
	if (!strcmp(k, "steps"))
		return json_is_array(v);
	if (!strcmp(k, "_front") || !strcmp(k, "_rollback_restart") || !strcmp(k, "_requeued") || !strcmp(k, "_switched"))
		return json_is_boolean(v);
	/* Range-checked where it is used, by exec_kill_recorded_group, which
	 * also says why it signals nothing. */
	if (!strcmp(k, "_pgid") || !strcmp(k, "_pgid_start"))
		return json_is_integer(v);
	return false;
}

/* A run record from disk, checked member by member. Returns a new record,
 * or NULL to drop it. */
static json_t *state_clean_run(const json_t *rec)
{
	json_t *o;
	const char *k;
	json_t *v;

	if (!json_is_object(rec) || !json_int_in(json_object_get(rec, "id"), 1, ENGINE_RUN_ID_MAX, NULL) ||
	    event_from_string(obj_str(rec, "event")) == EVENT_INVALID ||
	    trigger_from_string(obj_str(rec, "trigger")) == TRIGGER_INVALID ||
	    run_status_from_string(obj_str(rec, "status")) < 0 || !json_name_or_null(json_object_get(rec, "layer")) ||
	    !json_name_or_null(json_object_get(rec, "app")))
		return NULL;
	/* _stack names a file to load: a bad one makes the record useless. */
	if (json_object_get(rec, "_stack") && !json_revision_is_valid(json_object_get(rec, "_stack")))
		return NULL;

	o = json_object();
	json_object_foreach((json_t *)rec, k, v)
		if (state_run_member_ok(k, v))
			json_object_set(o, k, v);
	if (!json_object_get(o, "changed"))
		json_object_set_new(o, "changed", json_integer(0));
	return o;
}

static char *fail_key(const char *event, const char *layer, const char *app, const char *recipe)
{
	if (recipe && str_eq(event, "maintenance"))
		return xasprintf("%s///%s", event, recipe);
	return xasprintf("%s/%s/%s", event, layer ? layer : "", app ? app : "");
}

/* A member clamped into [min, max], def when it is not an integer. */
static json_int_t json_int_clamped(const json_t *v, json_int_t def, json_int_t min, json_int_t max)
{
	json_int_t x = json_is_integer(v) ? json_integer_value(v) : def;
	return x < min ? min : x > max ? max : x;
}

/* An entry of "failed", or NULL to drop it. Its key is made again from its
 * members, which the engine matches on. */
static json_t *state_clean_failure(const json_t *f, char **ret_key)
{
	json_t *o, *v;
	json_int_t x;

	if (!json_is_object(f) || event_from_string(obj_str(f, "event")) == EVENT_INVALID ||
	    !json_name_or_null(json_object_get(f, "layer")) || !json_name_or_null(json_object_get(f, "app")))
		return NULL;
	if ((v = json_object_get(f, "stack")) && !json_revision_is_valid(v))
		return NULL;
	o = json_object();
	json_object_set(o, "event", json_object_get(f, "event"));
	json_object_set_new(o, "layer", json_string_or_null(obj_str(f, "layer")));
	json_object_set_new(o, "app", json_string_or_null(obj_str(f, "app")));
	if (v)
		json_object_set(o, "stack", v);
	/* A maintenance job's failure (engine.c): retried as that job. */
	if (str_eq(obj_str(o, "event"), "maintenance") && json_name_or_null(json_object_get(f, "recipe")) &&
	    obj_str(f, "recipe"))
		json_object_set_new(o, "recipe", json_string(obj_str(f, "recipe")));
	if (json_int_in(json_object_get(f, "run"), 1, ENGINE_RUN_ID_MAX, &x))
		json_object_set_new(o, "run", json_integer(x));
	/* count drives the backoff: a huge one only means "at the maximum". */
	json_object_set_new(o, "count", json_integer(json_int_clamped(json_object_get(f, "count"), 1, 1,
								      ENGINE_FAIL_COUNT_MAX)));
	/* A time in microseconds; 0 means no retry. The engine also pulls a
	 * far-future retry in to retry_max from now. */
	json_object_set_new(o, "next_retry", json_integer(json_int_clamped(json_object_get(f, "next_retry"), 0, 0,
									   ENGINE_TIME_USEC_MAX)));
	*ret_key = fail_key(obj_str(o, "event"), obj_str(o, "layer"), obj_str(o, "app"), obj_str(o, "recipe"));
	return o;
}

static bool hex16_is_valid(const char *h)
{
	if (!h || strlen(h) != 16)
		return false;
	for (size_t i = 0; i < 16; i++)
		if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f') || (h[i] >= 'A' && h[i] <= 'F')))
			return false;
	return true;
}

/* The run records of in, checked, at most one per id: (runs, dropped). */
static json_t *state_clean_runs(const json_t *in, size_t *ret_dropped)
{
	json_t *runs = json_array(), *seen = json_object(), *rec;
	size_t i;

	*ret_dropped = 0;
	json_array_foreach(in, i, rec) {
		json_t *c = json_array_size(runs) < ENGINE_RUNS_MAX ? state_clean_run(rec) : NULL;
		char idk[24];
		if (c) {
			/* Ids are unique: a second record with an id is dropped. */
			snprintf(idk, sizeof(idk), "%lld", (long long)json_integer_value(json_object_get(c, "id")));
			if (json_object_get(seen, idk)) {
				json_decref(c);
				c = NULL;
			} else
				json_object_set_new(seen, idk, json_true());
		}
		if (c)
			json_array_append_new(runs, c);
		else
			(*ret_dropped)++;
	}
	json_decref(seen);
	return runs;
}

static json_t *state_clean_maps(const json_t *in, json_t *o)
{
	json_t *failed = json_object(), *hashes = json_object(), *last = json_object(), *v, *x;
	const char *k;
	json_int_t id;

	json_object_foreach(json_object_get(in, "failed"), k, x) {
		_cleanup_free_ char *key = NULL;
		json_t *c = json_object_size(failed) < ENGINE_KEYS_MAX ? state_clean_failure(x, &key) : NULL;
		if (c)
			json_object_set_new(failed, key, c);
	}
	json_object_foreach(json_object_get(in, "input_hashes"), k, x)
		if (json_is_string(x) && hex16_is_valid(json_string_value(x)) && strlen(k) <= ENGINE_KEY_MAX_BYTES &&
		    json_object_size(hashes) < ENGINE_KEYS_MAX)
			json_object_set(hashes, k, x);
	json_object_foreach(json_object_get(in, "last_success"), k, x) {
		if (!json_is_object(x) || !json_revision_is_valid(json_object_get(x, "revision")) ||
		    json_object_size(last) >= ENGINE_KEYS_MAX)
			continue;
		v = json_object();
		json_object_set(v, "revision", json_object_get(x, "revision"));
		if (json_int_in(json_object_get(x, "run"), 1, ENGINE_RUN_ID_MAX, &id))
			json_object_set_new(v, "run", json_integer(id));
		if (json_is_string(json_object_get(x, "finished")))
			json_object_set(v, "finished", json_object_get(x, "finished"));
		json_object_set_new(last, k, v);
	}
	json_object_set_new(o, "failed", failed);
	json_object_set_new(o, "input_hashes", hashes);
	json_object_set_new(o, "last_success", last);
	return o;
}

int engine_state_parse(const char *data, size_t len, long history, json_t **ret, char **ret_error)
{
	json_error_t jerr;
	json_t *in, *o, *v;
	json_int_t x;
	size_t dropped;

	*ret = NULL;
	if (len > state_max_bytes(history)) {
		*ret_error = xasprintf("larger than %zu bytes", state_max_bytes(history));
		return -EFBIG;
	}
	/* Before parsing: what agentd writes with this history never has
	 * more elements or depth, and a file that does would take memory far
	 * beyond its bytes. */
	if (json_bounds_check(data, len, state_max_elements(history), STATE_JSON_MAX_DEPTH) < 0) {
		*ret_error = xasprintf("more than %zu JSON elements or %d levels", state_max_elements(history),
				       STATE_JSON_MAX_DEPTH);
		return -EFBIG;
	}
	in = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!in) {
		*ret_error = xasprintf("line %d: %s", jerr.line, jerr.text);
		return -EINVAL;
	}
	if (!json_is_object(in) || !json_int_in(json_object_get(in, "version"), STATE_VERSION, STATE_VERSION, NULL) ||
	    !json_is_array(json_object_get(in, "runs"))) {
		json_decref(in);
		*ret_error = xstrdup("unexpected content");
		return -EINVAL;
	}

	/* Records we cannot make sense of are dropped, not trusted: a state
	 * file edited by hand or by another version must not crash us, and
	 * none of its numbers may reach a kill(), a path or an id unchecked. */
	o = json_object();
	json_object_set_new(o, "runs", state_clean_runs(json_object_get(in, "runs"), &dropped));
	json_object_set_new(o, "dropped_runs", json_integer((json_int_t)dropped));
	/* 0: absent or out of range; the engine then takes the highest id it
	 * can find on disk, plus one. */
	if (!json_int_in(json_object_get(in, "next_run_id"), 1, ENGINE_RUN_ID_MAX, &x))
		x = 0;
	json_object_set_new(o, "next_run_id", json_integer(x));
	state_clean_maps(in, o);
	if ((v = json_object_get(in, "paused")) && json_is_string(v)) {
		/* A reason is a line for status: cut a long one at a character
		 * boundary (never inside a UTF-8 sequence). */
		const char *p = json_string_value(v);
		size_t n = json_string_length(v);
		if (n > 1024) {
			n = 1024;
			while (n > 0 && ((unsigned char)p[n] & 0xc0) == 0x80)
				n--;
		}
		json_object_set_new(o, "paused", json_stringn(p, n));
	}
	if ((v = json_object_get(in, "applied_revision")) && json_revision_is_valid(v))
		json_object_set(o, "applied_revision", v);
	if ((v = json_object_get(in, "stack_revision")) && json_revision_is_valid(v))
		json_object_set(o, "stack_revision", v);
	/* Names as agentd.conf's `instance` allows them, and a host name's. */
	for (size_t i = 0; i < 2; i++) {
		const char *k = i ? "applied_instance" : "instance";
		if ((v = json_object_get(in, k)) && json_is_string(v) && json_string_length(v) <= 255 &&
		    strlen(json_string_value(v)) == json_string_length(v) && name_is_valid(json_string_value(v)))
			json_object_set(o, k, v);
	}
	if ((v = json_object_get(in, "applied_layers")) && json_is_array(v) && json_array_size(v) <= 256) {
		json_t *l = json_array(), *name;
		size_t i;
		json_array_foreach(v, i, name)
			if (json_is_string(name) && strlen(json_string_value(name)) == json_string_length(name) &&
			    name_is_valid(json_string_value(name)))
				json_array_append(l, name);
		json_object_set_new(o, "applied_layers", l);
	}
	json_decref(in);
	*ret = o;
	return 0;
}

struct run *run_from_file(const json_t *full)
{
	json_t *c = state_clean_run(full);
	struct run *r = c ? run_from_json(c) : NULL;

	json_decref(c);
	return r;
}

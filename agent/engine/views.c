/* SPDX-License-Identifier: BSD-2-Clause */
/* Read-only views of the engine for the control server: status, runs, one
 * run with its steps. */
#include <unistd.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "internal.h"
#include "log.h"
#include "proto.h"
#include "source/source.h"
#include "stack/stack.h"
#include "util.h"

static json_t *json_time(int64_t usec)
{
	char buf[40];
	if (usec <= 0)
		return json_null();
	time_format_rfc3339(usec, buf, sizeof(buf));
	return json_string(buf);
}

/* ----------------------------------------------------------------- views */

static json_t *last_run_json(const struct run *last)
{
	if (!last)
		return json_null();
	return json_pack("{s:I, s:s, s:o, s:o, s:s, s:o, s:o, s:I}", "id", (json_int_t)last->id, "event",
			 run_event(last), "layer", json_string_or_null(last->req.layer), "app",
			 json_string_or_null(last->req.app), "status", run_status_to_string(last->status), "started",
			 json_string_or_null(last->started), "finished", json_string_or_null(last->finished), "changed",
			 (json_int_t)last->changed);
}

static json_t *source_status_json(struct engine *e)
{
	const struct stack *s = e->current;
	json_t *src = json_object();

	json_object_set_new(src, "url", json_string(e->source_url));
	json_object_set_new(src, "last_fetch", json_time(e->source ? e->source->last_fetch_usec : 0));
	if (e->source)
		source_status(e->source, src);
	json_object_set_new(src, "last_change", json_time(e->last_change_usec));
	json_object_set_new(src, "error", json_string_or_null(e->source_error));
	json_object_set_new(src, "error_path", json_string_or_null(e->source_error_path));
	json_object_set_new(src, "stack_revision", json_string_or_null(s ? s->revision : NULL));
	json_object_set_new(src, "applied_revision", json_string_or_null(e->applied ? e->applied->revision : NULL));
	return src;
}

const char *engine_state_name(const struct engine *e)
{
	if (e->active)
		return "running";
	if (e->paused)
		return "paused";
	if (engine_unassigned(e))
		return "unassigned";
	if (json_object_size(e->failed) > 0)
		return "failed";
	return "idle";
}

json_t *engine_status(struct engine *e)
{
	json_t *o = json_object(), *layers = json_array(), *queue = json_array(), *failed = json_array();
	const struct stack *s = e->current;
	const struct run *last = NULL;
	const char *state, *k;
	char *why = engine_unassigned_reason(e);
	json_t *v;

	if (s)
		for (size_t j = 0; j < s->n_self_layers; j++)
			json_array_append_new(layers, json_string(s->self_layers[j]));
	/* The queue in the order it will run: oldest first. */
	for (size_t j = e->runs.n; j-- > 0;)
		if (e->runs.v[j]->status == RUN_QUEUED)
			json_array_append_new(queue, run_to_json(e->runs.v[j], RUN_VIEW_PUBLIC));
	for (size_t j = 0; j < e->runs.n && !last; j++)
		if (!run_is_pending(e->runs.v[j]))
			last = e->runs.v[j];
	json_object_foreach(e->failed, k, v) {
		json_t *f = json_deep_copy(v);
		json_object_del(f, "stack");
		json_array_append_new(failed, f);
	}
	state = engine_state_name(e);

	json_object_set_new(o, "instance", json_string(s ? s->instance : e->instance));
	json_object_set_new(o, "layers", layers);
	json_object_set_new(o, "state", json_string(state));
	/* Why the instance is in no layer (design.md §3 Identity); absent
	 * when it has a layer. */
	if (why)
		json_object_set_new(o, "warning", json_string(why));
	free(why);
	/* The revision the last runs applied: another than the stack's while
	 * a change waits (paused, settling). */
	json_object_set_new(o, "applied_revision", json_string_or_null(e->applied ? e->applied->revision : NULL));
	json_object_set_new(o, "current_run", e->active ? run_to_json(e->active->rec, RUN_VIEW_PUBLIC) : json_null());
	json_object_set_new(o, "last_run", last_run_json(last));
	json_object_set_new(o, "source", source_status_json(e));
	json_object_set_new(o, "queue", queue);
	json_object_set_new(o, "failed", failed);
	json_object_set_new(o, "paused", json_string_or_null(e->paused));
	/* Why state_dir cannot be written (runs wait meanwhile), or null. */
	json_object_set_new(o, "state_error", json_string_or_null(e->state_error));
	json_object_set_new(o, "uptime", json_real((double)(time_monotonic_usec() - e->start_mono) / 1e6));
	json_object_set_new(o, "version", json_string(AGENTD_VERSION));
	json_object_set_new(o, "pid", json_integer(getpid()));
	return o;
}

json_t *engine_runs(struct engine *e, long n)
{
	json_t *list = json_array();

	for (size_t i = 0; i < e->runs.n; i++) {
		if (n > 0 && (long)i >= n)
			break;
		json_array_append_new(list, run_to_json(e->runs.v[i], RUN_VIEW_PUBLIC));
	}
	return json_pack("{s:o}", "runs", list);
}

json_t *engine_run_info(struct engine *e, long id)
{
	struct run *rec = run_list_find(&e->runs, id);
	json_t *o;

	if (!rec)
		return NULL;
	o = run_to_json(rec, RUN_VIEW_PUBLIC_STEPS);
	/* A finished run: its steps are in its file. */
	if (!rec->steps && rec->status != RUN_QUEUED)
		state_read_run_steps(e, id, o);
	return o;
}

const char *engine_stack_revision(struct engine *e)
{
	return e->current ? e->current->revision : NULL;
}

long engine_last_run_id(struct engine *e)
{
	/* The newest run that has started. */
	for (size_t i = 0; i < e->runs.n; i++)
		if (e->runs.v[i]->status != RUN_QUEUED)
			return e->runs.v[i]->id;
	return 0;
}

char *engine_run_log_path(struct engine *e, long id)
{
	return xasprintf("%s/runs/%ld.log", e->config->log_dir, id);
}

size_t engine_run_plan_size(struct engine *e, long id)
{
	return e->active && e->active->id == id ? e->active->plan.n_steps : 0;
}

bool engine_run_is_active(struct engine *e, long id)
{
	struct run *rec = run_list_find(&e->runs, id);
	return rec && run_is_pending(rec);
}

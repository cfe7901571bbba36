/* SPDX-License-Identifier: BSD-2-Clause */
/* Stack documents from the source: parsed and validated, saved in
 * state_dir, and turned into queued runs by diffing the applied stack
 * against the new one (design.md §3). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "internal.h"
#include "log.h"
#include "recipes/recipe.h"
#include "stack/stack.h"
#include "strv.h"
#include "util.h"

/* ---------------------------------------------------------------- stacks */

static void set_source_error(struct engine *e, const char *msg, const char *path)
{
	free(e->source_error);
	free(e->source_error_path);
	e->source_error = msg ? xstrdup(msg) : NULL;
	e->source_error_path = path ? xstrdup(path) : NULL;
	e->source_error_fetch = false;
	if (msg)
		engine_metrics_source_error(e);
}

/* Whether a queued run or a failure names a layer or app the current stack
 * no longer has (runs tied to an older stack keep theirs). */
static bool vanished(const struct engine *e, const char *layer, const char *app, const char *stack)
{
	if (stack)
		return false;
	return (layer && !stack_has_self_layer(e->current, layer)) || (app && !stack_app_find(e->current, app));
}

/* Queued runs for a layer or app that is gone cannot run: they end here as
 * cancelled (status failed, not retried), and failures of such runs are
 * forgotten, so that nothing retries forever. */
static void drop_vanished(struct engine *e)
{
	void *tmp;
	const char *k;
	json_t *f;

	for (size_t i = 0; i < e->runs.n; i++) {
		struct run *rec = e->runs.v[i];
		if (rec->status != RUN_QUEUED || !vanished(e, rec->req.layer, rec->req.app, rec->stack))
			continue;
		rec->status = RUN_FAILED;
		free(rec->finished);
		rec->finished = engine_now();
		run_set_str(&rec->error, "cancelled: its layer or app is no longer in the stack");
		log_info("Run %ld cancelled: its layer or app is no longer in the stack", rec->id);
		engine_emit(e, json_pack("{s:s, s:I, s:s, s:i}", "event", "run-finished", "run", (json_int_t)rec->id, "status",
				  "failed", "changed", 0));
	}
	json_object_foreach_safe(e->failed, tmp, k, f)
		if (vanished(e, json_string_value(json_object_get(f, "layer")), json_string_value(json_object_get(f, "app")),
			     json_string_value(json_object_get(f, "stack"))))
			json_object_del(e->failed, k);
	engine_arm_retry(e);
}

/* Queues what it takes to go from the applied stack to the current one. */
void engine_apply_current(struct engine *e)
{
	struct trigger *t = NULL;
	size_t n = 0;
	int r;

	if (e->paused || !e->current)
		return;
	/* The same document with the same identity: nothing to do. Another
	 * identity (instance, host name) may give other layers. */
	if (e->applied && strcmp(e->applied->revision, e->current->revision) == 0 &&
	    stack_same_identity(e->applied, e->current))
		return;
	r = stack_diff(e->first_start ? NULL : e->applied, e->current, &t, &n);
	if (r < 0) {
		log_error_errno(r, "Failed to compare stacks: %m");
		return;
	}
	for (size_t i = 0; i < n; i++)
		engine_enqueue(e, t[i].event, t[i].layer, t[i].app, e->first_start ? TRIGGER_BOOT : TRIGGER_STACK_CHANGE,
			t[i].use_old_stack && e->applied ? e->applied->revision : NULL);
	triggers_free(t, n);
	drop_vanished(e);
	/* Runs for layers this instance left under another name plan against
	 * the stack as it was applied then: kept while it differs. */
	stack_unref(e->previous);
	e->previous = e->applied && !stack_same_identity(e->applied, e->current) ? e->applied : NULL;
	if (!e->previous)
		stack_unref(e->applied);
	e->applied = stack_ref(e->current);
	free(e->applied_instance);
	e->applied_instance = xstrdup(e->instance);
	strv_free(e->applied_layers);
	e->applied_layers = e->config->layers ? strv_dup((const char *const *)e->config->layers) : NULL;
	e->first_start = false;
	state_gc_stacks(e);
	engine_persist(e);
	engine_fleet_publish(e);
	engine_kick(e);
}

static void on_document(struct engine *e, const char *data, size_t len)
{
	struct stack_error err = { 0 };
	struct stack *s = NULL;
	uint64_t h = hash_fnv1a64(data, len, HASH_FNV_SEED);
	int r;

	if (e->have_raw_hash && h == e->last_raw_hash && !e->source_error)
		return;
	e->last_raw_hash = h;
	e->have_raw_hash = true;

	r = engine_stack_load(e, data, len, e->instance, (const char *const *)e->config->layers, &s, &err);
	if (r < 0) {
		_cleanup_free_ char *msg = NULL;
		if (r == -EFBIG)
			msg = xasprintf("stack rejected: larger than %d bytes", STACK_MAX_BYTES);
		else
			msg = xasprintf("stack rejected at %s: %s", err.path[0] ? err.path : "$", err.message);
		if (!str_eq(e->source_error, msg))
			log_error("%s (source %s); keeping the last good stack %s", msg, e->source_url,
				  e->current ? e->current->revision : "(none)");
		set_source_error(e, msg, err.path[0] ? err.path : "$");
		stack_unref(s);
		return;
	}
	set_source_error(e, NULL, NULL);
	if (e->current && strcmp(e->current->revision, s->revision) == 0) {
		stack_unref(s);
		return;
	}
	if ((r = state_save_stack(e, s)) < 0) {
		/* Without the stack on disk a restart could not finish what we
		 * queue; better to wait until state_dir takes writes again, and
		 * then fetch the document again (on_state_retry). */
		_cleanup_free_ char *what = state_stack_path(e, s->revision);
		set_source_error(e, "cannot save the stack in state_dir (see the log)", NULL);
		e->stack_save_failed = true;
		state_write_failed(e, what, r);
		stack_unref(s);
		return;
	}
	log_info("New stack %s (%s)", s->revision, str_or_empty(s->name));
	stack_unref(e->current);
	e->current = s;
	e->last_change_usec = time_now_usec();
	engine_check_identity(e);
	if (e->paused)
		engine_persist(e);
	engine_stack_changed(e);
	engine_schedule_stack(e); /* the jobs of the new stack (design.md §8.1) */
}

void engine_on_document(void *userdata, const char *data, size_t len)
{
	struct engine *e = userdata;

	on_document(e, data, len);
	engine_metrics_write(e); /* a new stack, or a refused one */
}

/* The change's runs are queued at once (status shows them, and they
 * coalesce with those of the changes that follow); settling decides when
 * runs of stack changes may start: at once after a quiet period, else when
 * the burst has settled (engine_settling). */
void engine_stack_changed(struct engine *e)
{
	int64_t now = time_monotonic_usec();
	int64_t at = settle_change(&e->settle, now, (int64_t)(e->config->settle * 1e6),
				   (int64_t)(e->config->settle_max * 1e6));

	if (at > 0) {
		e->settle_until = at;
		log_debug("Stack %s: its runs wait for the stack to settle (%.0f ms)", e->current->revision,
			  (double)(at > now ? at - now : 0) / 1000.0);
	}
	engine_apply_current(e);
}

bool engine_unassigned(const struct engine *e)
{
	return e->current && e->current->n_self_layers == 0;
}

char *engine_unassigned_reason(const struct engine *e)
{
	const struct stack *s = e->current;

	if (!engine_unassigned(e))
		return NULL;
	if (e->config->layers)
		return xasprintf("instance \"%s\" is in no layer: \"layers\" in agentd.conf is empty", s->instance);
	if (json_object_get(json_object_get(s->root, "opsworks"), "instance"))
		return xasprintf("instance \"%s\" (opsworks.instance) lists no layer: nothing runs here", s->instance);
	if (!str_eq(s->instance, e->instance))
		return xasprintf("instance \"%s\" (host name \"%s\") is in no layer of the stack: nothing runs here; "
				 "set \"instance\" in agentd.conf to this instance's name in the stack",
				 s->instance, e->instance);
	return xasprintf("instance \"%s\" is in no layer of the stack%s: nothing runs here; set \"instance\" in "
			 "agentd.conf to this instance's name in the stack",
			 s->instance, strchr(s->instance, '.') ? " (nor is its first label)" : "");
}

void engine_check_identity(struct engine *e)
{
	_cleanup_free_ char *why = engine_unassigned_reason(e);

	if (why && !e->unassigned_logged)
		log_warn("Unassigned: %s", why);
	else if (!why && e->unassigned_logged && e->current)
		log_info("Instance \"%s\" is in %zu layer(s) of the stack", e->current->instance,
			 e->current->n_self_layers);
	e->unassigned_logged = why != NULL;
}

void engine_on_source_error(void *userdata, const char *message)
{
	struct engine *e = userdata;

	/* The first fetch error after a document hides how that document
	 * fared: remember it for a 304 that confirms the document later. */
	if (!e->source_error_fetch)
		e->raw_ok = !e->source_error;
	if (!str_eq(e->source_error, message))
		log_error("Stack source: %s", message);
	set_source_error(e, message, NULL);
	e->source_error_fetch = true;
	/* The next document is parsed even if it has the same bytes as before:
	 * the error must clear. */
	e->have_raw_hash = false;
	engine_metrics_write(e);
}

/* The source's last document is still current (HTTP 304). An error of
 * fetching is over if that document was accepted; a rejected one must be
 * parsed again to say why (returns false: the source sends it again). */
bool engine_on_source_unchanged(void *userdata)
{
	struct engine *e = userdata;

	if (!e->source_error_fetch)
		return true; /* no error, or the verdict on that very document */
	if (!e->raw_ok)
		return false;
	log_info("Stack source: answering again; the stack is unchanged");
	set_source_error(e, NULL, NULL);
	engine_metrics_write(e);
	return true;
}

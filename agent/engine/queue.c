/* SPDX-License-Identifier: BSD-2-Clause */
/* Run records in memory and the queue's rules (run.h): what joins what,
 * what runs next. No loop, no disk: the engine persists and starts. */
#include "run.h"

#include <errno.h>
#include <string.h>

#include "log.h"
#include "util.h"

const char *run_status_to_string(enum run_status s)
{
	static const char *const names[] = {
		[RUN_QUEUED] = "queued",   [RUN_RUNNING] = "running",         [RUN_SUCCESS] = "success",
		[RUN_FAILED] = "failed",   [RUN_INTERRUPTED] = "interrupted",
	};
	return (size_t)s < ELEMENTSOF(names) ? names[s] : "failed";
}

int run_status_from_string(const char *s)
{
	for (int i = RUN_QUEUED; s && i <= RUN_INTERRUPTED; i++)
		if (strcmp(s, run_status_to_string((enum run_status)i)) == 0)
			return i;
	return -1;
}

void run_set_str(char **field, const char *s)
{
	char *c = s ? xstrdup(s) : NULL;
	free(*field);
	*field = c;
}

void run_set_text(char **field, const char *s)
{
	size_t n;

	if (!s) {
		run_set_str(field, NULL);
		return;
	}
	n = strlen(s);
	if (n > RUN_TEXT_MAX) {
		n = RUN_TEXT_MAX;
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
	}
	free(*field);
	*field = xstrndup(s, n);
}

void run_request_copy(struct run_request *dst, const struct run_request *src)
{
	dst->event = src->event;
	dst->trigger = src->trigger;
	dst->layer = src->layer ? xstrdup(src->layer) : NULL;
	dst->app = src->app ? xstrdup(src->app) : NULL;
	dst->recipe = src->recipe ? xstrdup(src->recipe) : NULL;
}

void run_request_done(struct run_request *r)
{
	free(r->layer);
	free(r->app);
	free(r->recipe);
	r->layer = r->app = r->recipe = NULL;
}

struct run *run_new(long id, const struct run_request *req, const char *stack)
{
	struct run *r = xcalloc(1, sizeof(*r));

	r->id = id;
	run_request_copy(&r->req, req);
	r->status = RUN_QUEUED;
	r->stack = stack ? xstrdup(stack) : NULL;
	r->duration_ms = -1;
	r->steps_omitted = -1;
	return r;
}

void run_free(struct run *r)
{
	if (!r)
		return;
	run_request_done(&r->req);
	free(r->stack);
	free(r->queued);
	free(r->started);
	free(r->finished);
	free(r->error);
	free(r->stack_revision);
	json_decref(r->steps);
	json_decref(r->waiting_for);
	free(r->steps_error);
	free(r);
}

void run_list_insert_front(struct run_list *l, struct run *r)
{
	l->v = xrealloc(l->v, (l->n + 1) * sizeof(*l->v));
	memmove(l->v + 1, l->v, l->n * sizeof(*l->v));
	l->v[0] = r;
	l->n++;
}

struct run *run_list_take(struct run_list *l, size_t i)
{
	struct run *r = l->v[i];

	memmove(l->v + i, l->v + i + 1, (l->n - i - 1) * sizeof(*l->v));
	l->n--;
	return r;
}

struct run *run_list_find(const struct run_list *l, long id)
{
	for (size_t i = 0; i < l->n; i++)
		if (l->v[i]->id == id)
			return l->v[i];
	return NULL;
}

void run_list_clear(struct run_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		run_free(l->v[i]);
	free(l->v);
	l->v = NULL;
	l->n = 0;
}

static bool str_eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

struct run *queue_join(const struct run_list *l, const struct run_request *req, const char *stack)
{
	if (req->recipe)
		return NULL;
	for (size_t i = 0; i < l->n; i++) {
		struct run *r = l->v[i];
		if (r->status != RUN_QUEUED || r->req.recipe)
			continue;
		if (r->req.event != req->event || !str_eq(r->req.app, req->app) || !str_eq(r->stack, stack))
			continue;
		if (r->req.layer && !str_eq(r->req.layer, req->layer))
			continue;
		/* An operator's request joins only another operator's request: a
		 * queued boot or retry run waits while paused, and a retry would
		 * make the operator's run retry on its own. */
		if ((req->trigger == TRIGGER_CTL) != (r->req.trigger == TRIGGER_CTL))
			continue;
		return r;
	}
	return NULL;
}

size_t queue_count(const struct run_list *l)
{
	size_t n = 0;

	for (size_t i = 0; i < l->n; i++)
		n += l->v[i]->status == RUN_QUEUED;
	return n;
}

struct run *queue_add(struct run_list *l, long *next_id, const struct run_request *req, const char *stack,
		      bool fresh, const char *now, int *ret_r)
{
	const char *evs = event_to_string(req->event);
	struct run *r = fresh ? NULL : queue_join(l, req, stack);

	*ret_r = 0;
	if (r)
		return r;
	/* The queue stays within what state.json's reader accepts. Triggers
	 * coalesce above, so only a flood of distinct requests gets here. */
	if (queue_count(l) >= RUN_QUEUE_MAX) {
		log_error("The queue is full (%d runs): not queueing %s", RUN_QUEUE_MAX, evs);
		*ret_r = -ENOSPC;
		return NULL;
	}
	/* Ids are never given twice and never wrap: when they run out (only a
	 * doctored state could get here), nothing more is queued. */
	if (*next_id < 1 || *next_id > RUN_ID_MAX) {
		log_error("No run id left (next would be %ld): not queueing %s", *next_id, evs);
		*ret_r = -ERANGE;
		return NULL;
	}
	r = run_new((*next_id)++, req, stack);
	r->queued = now ? xstrdup(now) : NULL;
	r->changed = 0;
	run_list_insert_front(l, r);
	log_info("Queued run %ld: %s%s%s%s%s%s%s (%s)", r->id, evs, req->layer ? " layer " : "",
		 req->layer ? req->layer : "", req->app ? " app " : "", req->app ? req->app : "",
		 req->recipe ? " recipe " : "", req->recipe ? req->recipe : "", trigger_to_string(req->trigger));
	return r;
}

/* Whether the rollback step of a run's recorded steps finished: the link
 * went back already. */
static bool rollback_step_done(const struct run *r)
{
	size_t i;
	json_t *s;

	json_array_foreach(r->steps, i, s) {
		const char *st = json_string_value(json_object_get(s, "status"));
		if (str_eq(json_string_value(json_object_get(s, "kind")), RUN_RECIPE_ROLLBACK) &&
		    (str_eq(st, "changed") || str_eq(st, "unchanged")))
			return true;
	}
	return false;
}

struct run *queue_requeue(struct run_list *l, long *next_id, const struct run *interrupted, const char *now,
			  int *ret_r)
{
	struct run_request req = interrupted->req;
	struct run *r;

	if (!req.recipe)
		req.trigger = TRIGGER_RETRY;
	else if (str_eq(req.recipe, RUN_RECIPE_ROLLBACK) && (interrupted->switched || rollback_step_done(interrupted)))
		req.recipe = (char *)RUN_RECIPE_RESTART;
	r = queue_add(l, next_id, &req, interrupted->stack, req.recipe != NULL, now, ret_r);
	if (r)
		r->front = true;
	return r;
}

bool queue_held_by_setup(const struct run *r, const json_t *failed)
{
	const char *k;
	json_t *f;

	if (r->req.trigger == TRIGGER_CTL || r->req.recipe ||
	    (r->req.event != EVENT_CONFIGURE && r->req.event != EVENT_DEPLOY))
		return false;
	/* A boot's runs are for every layer; a joined layer's for that one. */
	if (r->req.trigger != TRIGGER_BOOT && !r->req.layer)
		return false;
	json_object_foreach((json_t *)failed, k, f) {
		const char *layer = json_string_value(json_object_get(f, "layer"));
		if (!str_eq(json_string_value(json_object_get(f, "event")), "setup"))
			continue;
		/* A boot waits for every setup; a joined layer for its own
		 * (a failed setup of every layer, say an operator's, would
		 * not be cleared by the layer's own setup succeeding). */
		if (r->req.trigger == TRIGGER_BOOT || str_eq(layer, r->req.layer))
			return true;
	}
	return false;
}

struct run *queue_next(const struct run_list *l, bool paused, const json_t *failed, bool settling)
{
	struct run *best = NULL;

	for (size_t i = 0; i < l->n; i++) {
		struct run *r = l->v[i];
		if (r->status != RUN_QUEUED)
			continue;
		if (paused && r->req.trigger != TRIGGER_CTL)
			continue;
		if (failed && queue_held_by_setup(r, failed))
			continue;
		if (settling && r->req.trigger == TRIGGER_STACK_CHANGE)
			continue;
		if (!best || (r->front && !best->front) || (r->front == best->front && r->id < best->id))
			best = r;
	}
	return best;
}

int64_t settle_change(struct settle *s, int64_t now, int64_t settle, int64_t settle_max)
{
	int64_t at, cap;

	if (settle <= 0)
		return 0;
	/* Quiet since the last run of a change: the leading edge. */
	if (s->first == 0 && (s->mark == 0 || now - s->mark >= settle))
		return 0;
	if (s->first == 0)
		s->first = now;
	at = now + settle;
	cap = s->first + (settle_max > 0 ? settle_max : 0);
	if (cap < at)
		at = cap;
	/* 0 means "at once, leading edge": a trailing edge is never 0. */
	return at > 0 ? at : 1;
}

void settle_applied(struct settle *s, int64_t now)
{
	s->mark = now;
	s->first = 0;
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* Steps and their executor (plan.h, design.md §6).
 *
 * The executor walks the steps in order. A step's apply may finish at once
 * (file, dir, link, absent, note) or later (exec): in both cases it calls
 * plan_step_done() exactly once. Synchronous steps are run back to back in
 * a loop within one loop iteration, without recursion; an asynchronous step
 * resumes the loop from its completion callback.
 *
 * Paths: file, dir, link and absent steps (and exec's cwd and unless_exists)
 * never use a path joined under root as a string. They open the parent of
 * their path inside root (rootfs_open_parent: a symlink resolved as if root
 * were "/", and none followed in or below a directory another user can
 * write, see rootfs.h) and act relative to that fd on the final component
 * only, with calls that do not follow it; metadata is changed through an fd
 * of the object itself, never by path, and in a directory another user can
 * write a file is never adopted as it is: it is written anew. */
#include "plan.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>

#include "io/exec.h"
#include "log.h"
#include "rootfs.h"
#include "step_util.h"
#include "strv.h"
#include "util.h"

struct plan_exec {
	uv_loop_t *loop;           /* borrowed */
	struct plan *p;            /* borrowed */
	struct step_env env;       /* copy; root borrowed */
	struct plan_exec_cbs cbs;
	void *userdata;
	uv_timer_t timer;          /* starts the run, and defers on_done */

	size_t cur;                /* index of the current step */
	int64_t step_start;
	size_t out_len;            /* output bytes of the current step passed on */
	bool out_truncated;
	bool out_last_nl;          /* the last byte passed on was '\n' */

	bool in_apply;             /* inside ops->apply() */
	bool done_sync;            /* plan_step_done() was called inside apply */
	bool waiting;              /* an asynchronous step is in flight */
	bool cancelled;
	bool skipped_by_cancel;    /* a step did not run because of the cancel */
	bool failed;
	bool finishing;            /* on_done is scheduled */
};

const char *step_status_to_string(enum step_status s)
{
	switch (s) {
	case STEP_PENDING:
		return "pending";
	case STEP_UNCHANGED:
		return "unchanged";
	case STEP_CHANGED:
		return "changed";
	case STEP_FAILED:
		return "failed";
	case STEP_SKIPPED:
		return "skipped";
	}
	return "unknown";
}

/* --- note --- */

static int note_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			 char **ret_error)
{
	*ret_action = "none";
	return 0;
}

static void note_apply(struct step *s, struct plan_exec *x)
{
	plan_step_done(x, STEP_SKIPPED, NULL);
}

static const struct step_ops note_ops = {
	.kind = "note",
	.describe = note_describe,
	.apply = note_apply,
};

struct step *plan_add_note(struct plan *p, const char *target, const char *message)
{
	struct step *s = plan_add(p, &note_ops, target, NULL);

	s->message = xstrdup_or_null(message);
	return s;
}

/* The conditional note keeps its message in its data and shows it only
 * when it runs or is described: its unless_exists guard keeps both from
 * happening while the path exists. */
static int note_cond_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			      char **ret_error)
{
	free(s->message);
	s->message = xstrdup(s->data);
	*ret_action = "none";
	return 0;
}

static void note_cond_apply(struct step *s, struct plan_exec *x)
{
	free(s->message);
	s->message = xstrdup(s->data);
	plan_step_done(x, STEP_SKIPPED, NULL);
}

static const struct step_ops note_cond_ops = {
	.kind = "note",
	.describe = note_cond_describe,
	.apply = note_cond_apply,
	.free_data = free,
};

struct step *plan_add_note_unless_exists(struct plan *p, const char *target, const char *message, const char *path)
{
	struct step *s = plan_add(p, &note_cond_ops, target, xstrdup(message));

	s->unless_exists = xstrdup(path);
	return s;
}

/* --- plan --- */

void plan_init(struct plan *p, const char *root)
{
	*p = (struct plan){ .root = root };
}

static void step_free(struct step *s)
{
	if (!s)
		return;
	free(s->target);
	free(s->recipe);
	free(s->layer);
	free(s->id);
	strv_free(s->only_if_changed);
	free(s->unless_exists);
	free(s->only_if_exists);
	free(s->error);
	free(s->message);
	if (s->ops && s->ops->free_data)
		s->ops->free_data(s->data);
	free(s);
}

void plan_free(struct plan *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_steps; i++)
		step_free(p->steps[i]);
	free(p->steps);
	p->steps = NULL;
	p->n_steps = 0;
	free(p->gate.name);
	free(p->gate.job);
	p->gate = (struct plan_gate){ 0 };
}

void plan_set_gate(struct plan *p, enum plan_gate_kind kind, const char *name, unsigned slots, bool keep_on_failure,
		   const char *job)
{
	free(p->gate.name);
	free(p->gate.job);
	p->gate = (struct plan_gate){
		.kind = kind,
		.name = xstrdup_or_null(name),
		.slots = kind == PLAN_GATE_MUTEX ? 1 : slots,
		.keep_on_failure = keep_on_failure,
		.job = xstrdup_or_null(job),
	};
}

json_t *plan_gate_json(const struct plan_gate *g)
{
	json_t *o;

	if (!g || g->kind == PLAN_GATE_NONE || !g->name)
		return NULL;
	o = json_pack("{s:s, s:I}", g->kind == PLAN_GATE_MUTEX ? "lock" : "semaphore", g->name, "slots",
		      (json_int_t)g->slots);
	if (o && g->job)
		json_object_set_new(o, "job", json_string(g->job));
	return o;
}

struct step *plan_add(struct plan *p, const struct step_ops *ops, const char *target, void *data)
{
	struct step *s = xcalloc(1, sizeof(*s));

	s->ops = ops;
	s->target = xstrdup(target ? target : "");
	s->data = data;
	s->status = STEP_PENDING;
	/* The array grows in powers of two: capacity is implied by n_steps. */
	if ((p->n_steps & (p->n_steps - 1)) == 0)
		p->steps = xrealloc(p->steps, (p->n_steps ? p->n_steps * 2 : 1) * sizeof(*p->steps));
	p->steps[p->n_steps++] = s;
	return s;
}

void step_only_if_changed(struct step *s, const char *id)
{
	size_t n = 0;

	while (s->only_if_changed && s->only_if_changed[n])
		n++;
	s->only_if_changed = xrealloc(s->only_if_changed, (n + 2) * sizeof(char *));
	s->only_if_changed[n] = xstrdup(id);
	s->only_if_changed[n + 1] = NULL;
}

void step_only_if_exists(struct step *s, const char *path)
{
	free(s->only_if_exists);
	s->only_if_exists = xstrdup(path);
}

/* --- executor --- */

static void on_done_timer_closed(uv_handle_t *h)
{
	free(h->data);
}

static void on_finish(uv_timer_t *t)
{
	struct plan_exec *x = t->data;

	for (size_t i = 0; i < x->p->n_steps; i++)
		x->p->steps[i]->env = NULL;
	if (x->cbs.on_done)
		x->cbs.on_done(x->userdata, x->failed || x->skipped_by_cancel);
	uv_close((uv_handle_t *)&x->timer, on_done_timer_closed);
}

/* The step memory's key for a guarded step's owed work (see step_finish). */
static char *owed_key(const struct step *s)
{
	return xasprintf("%s/%s/%s/%s", s->layer ? s->layer : "", s->recipe ? s->recipe : "", s->ops->kind,
			 s->target ? s->target : "");
}

static bool pending_get(struct plan_exec *x, const struct step *s)
{
	_cleanup_free_ char *key = NULL;

	if (!x->env.memory)
		return false;
	key = owed_key(s);
	return x->env.memory->owed_get(x->env.memory->userdata, key);
}

static void pending_set(struct plan_exec *x, const struct step *s, bool on)
{
	_cleanup_free_ char *key = NULL;

	if (!x->env.memory || (!on && !pending_get(x, s)))
		return;
	key = owed_key(s);
	x->env.memory->owed_set(x->env.memory->userdata, key, on);
}

static void step_finish(struct plan_exec *x)
{
	struct step *s = x->p->steps[x->cur];

	s->duration_us = time_monotonic_usec() - x->step_start;
	if (s->status == STEP_FAILED)
		x->failed = true;
	/* A change owes the steps guarded on it their work (a reload after a
	 * config was replaced) until they succeed: remembered outside this
	 * execution, so that a reload that failed, or never ran because the
	 * run failed or agentd was killed, runs at the next execution even
	 * though the config no longer changes then. */
	if (s->status == STEP_CHANGED && s->id)
		for (size_t i = x->cur + 1; i < x->p->n_steps; i++) {
			const struct step *t = x->p->steps[i];
			for (size_t k = 0; t->only_if_changed && t->only_if_changed[k]; k++)
				if (strcmp(t->only_if_changed[k], s->id) == 0) {
					pending_set(x, t, true);
					break;
				}
		}
	if ((s->status == STEP_CHANGED || s->status == STEP_UNCHANGED) && s->only_if_changed && s->only_if_changed[0])
		pending_set(x, s, false);
	if (x->cbs.on_step_done)
		x->cbs.on_step_done(x->userdata, s, x->cur);
	x->cur++;
}

static bool guard_only_if_changed(struct plan_exec *x, const struct step *s)
{
	for (size_t i = 0; s->only_if_changed[i]; i++)
		if (plan_exec_step_changed(x, s->only_if_changed[i]))
			return true;
	return false;
}

/* Runs steps until one goes asynchronous or the plan ends. Never recursive:
 * a synchronous plan_step_done() only sets a flag for this loop. */
static void plan_run(struct plan_exec *x)
{
	while (x->cur < x->p->n_steps) {
		struct step *s = x->p->steps[x->cur];

		x->step_start = time_monotonic_usec();
		if (x->failed || x->cancelled) {
			/* After a failure the run failed anyway; after a cancel,
			 * the run is incomplete only if a step is left out. */
			if (!x->failed)
				x->skipped_by_cancel = true;
			s->status = STEP_SKIPPED;
			step_finish(x);
			continue;
		}
		s->env = &x->env;
		x->out_len = 0;
		x->out_truncated = false;
		x->out_last_nl = true;
		if (x->cbs.on_step_start)
			x->cbs.on_step_start(x->userdata, s, x->cur);
		if (s->unless_exists && rootfs_exists(x->env.root, s->unless_exists)) {
			s->status = STEP_UNCHANGED;
			step_finish(x);
			continue;
		}
		if (s->only_if_exists && s->guard_converged && !rootfs_exists(x->env.root, s->only_if_exists)) {
			s->status = STEP_UNCHANGED;
			step_finish(x);
			continue;
		}
		if ((s->only_if_exists && !rootfs_exists(x->env.root, s->only_if_exists)) ||
		    (s->only_if_changed && s->only_if_changed[0] && !guard_only_if_changed(x, s) && !pending_get(x, s))) {
			s->status = STEP_SKIPPED;
			step_finish(x);
			continue;
		}
		x->in_apply = true;
		x->done_sync = false;
		s->ops->apply(s, x);
		x->in_apply = false;
		if (!x->done_sync) {
			x->waiting = true;
			return;
		}
		step_finish(x);
	}
	x->finishing = true;
	(void)uv_timer_start(&x->timer, on_finish, 0, 0);
}

static void on_start(uv_timer_t *t)
{
	plan_run(t->data);
}

int plan_execute(uv_loop_t *loop, struct plan *p, const struct step_env *env, const struct plan_exec_cbs *cbs,
		 void *userdata, struct plan_exec **ret)
{
	struct plan_exec *x;

	if (!loop || !p)
		return -EINVAL;
	for (size_t i = 0; i < p->n_steps; i++) {
		struct step *s = p->steps[i];

		if (!s->ops || !s->ops->apply)
			return -EINVAL;
		s->status = STEP_PENDING;
		free(s->error);
		s->error = NULL;
		s->duration_us = 0;
	}
	x = xcalloc(1, sizeof(*x));
	x->loop = loop;
	x->p = p;
	if (env)
		x->env = *env;
	if (!x->env.loop)
		x->env.loop = loop;
	if (!x->env.root)
		x->env.root = p->root ? p->root : "/";
	if (cbs)
		x->cbs = *cbs;
	x->userdata = userdata;
	(void)uv_timer_init(loop, &x->timer);
	x->timer.data = x;
	(void)uv_timer_start(&x->timer, on_start, 0, 0);
	if (ret)
		*ret = x;
	return 0;
}

void plan_execute_cancel(struct plan_exec *x, bool hard)
{
	if (!x || x->finishing)
		return;
	x->cancelled = true;
	if (x->waiting && x->cur < x->p->n_steps) {
		struct step *s = x->p->steps[x->cur];

		if ((hard || s->stop_cancels) && s->ops->cancel)
			s->ops->cancel(s);
	}
}

void plan_step_output(struct plan_exec *x, const char *data, size_t len)
{
	size_t max = x->env.output_max;

	if (len == 0 || x->out_truncated)
		return;
	if (max > 0 && x->out_len + len > max) {
		size_t keep = max - x->out_len;
		char note[96];
		int n;

		if (keep > 0 && x->cbs.on_output)
			x->cbs.on_output(x->userdata, x->p->steps[x->cur], data, keep);
		if (keep > 0)
			x->out_last_nl = data[keep - 1] == '\n';
		x->out_len = max;
		x->out_truncated = true;
		n = snprintf(note, sizeof(note), "%s[output truncated after %zu bytes]\n", x->out_last_nl ? "" : "\n",
			     max);
		if (x->cbs.on_output)
			x->cbs.on_output(x->userdata, x->p->steps[x->cur], note, (size_t)n);
		return;
	}
	x->out_len += len;
	x->out_last_nl = data[len - 1] == '\n';
	if (x->cbs.on_output)
		x->cbs.on_output(x->userdata, x->p->steps[x->cur], data, len);
}

void plan_step_done(struct plan_exec *x, enum step_status status, const char *error_fmt, ...)
{
	struct step *s;

	if (!x || x->cur >= x->p->n_steps || (!x->in_apply && !x->waiting) || (x->in_apply && x->done_sync)) {
		log_error("plan_step_done() called twice or outside a step; ignored");
		return;
	}
	s = x->p->steps[x->cur];
	s->status = status;
	free(s->error);
	s->error = NULL;
	if (error_fmt) {
		va_list ap;

		va_start(ap, error_fmt);
		if (vasprintf(&s->error, error_fmt, ap) < 0)
			s->error = NULL;
		va_end(ap);
	}
	if (status == STEP_FAILED && !s->error)
		s->error = xstrdup("failed");
	if (x->in_apply) {
		x->done_sync = true;
		return;
	}
	x->waiting = false;
	step_finish(x);
	plan_run(x);
}

void plan_step_spawned(struct plan_exec *x, const struct exec *proc)
{
	struct step *s = plan_exec_current(x);

	if (s && proc && x->cbs.on_spawn && exec_pgid(proc) > 0)
		x->cbs.on_spawn(x->userdata, s, exec_pgid(proc));
}

const struct step_env *plan_exec_env(struct plan_exec *x)
{
	return &x->env;
}

struct step *plan_exec_current(struct plan_exec *x)
{
	return x->cur < x->p->n_steps ? x->p->steps[x->cur] : NULL;
}

bool plan_exec_step_changed(struct plan_exec *x, const char *id)
{
	if (!id)
		return false;
	for (size_t i = 0; i < x->cur && i < x->p->n_steps; i++) {
		const struct step *s = x->p->steps[i];

		if (s->id && strcmp(s->id, id) == 0 && s->status == STEP_CHANGED)
			return true;
	}
	return false;
}

/* --- dry run --- */

/* Diffs of files in other encodings are not valid UTF-8, which JSON
 * strings must be: such bytes are shown as '?'. */
static json_t *json_string_lossy(const char *s)
{
	json_t *j = json_string(s);
	char *c;

	if (j)
		return j;
	c = xstrdup(s);
	for (char *q = c; *q; q++)
		if ((unsigned char)*q >= 0x80)
			*q = '?';
	j = json_string(c);
	free(c);
	return j;
}

/* Bytes s takes as a JSON string's content, at most: escapes counted, and
 * bytes past ASCII as \uXXXX would make them (3 bytes each at most). */
static size_t json_text_cost(const char *s)
{
	size_t n = 0;

	for (const unsigned char *q = (const unsigned char *)s; *q; q++)
		if (*q == '"' || *q == '\\' || *q == '\n' || *q == '\t' || *q == '\r' || *q == '\b' || *q == '\f')
			n += 2;
		else if (*q < 0x20)
			n += 6;
		else if (*q >= 0x80)
			n += 3;
		else
			n++;
	return n;
}


json_t *plan_describe(struct plan *p, const struct step_env *env)
{
	json_t *steps = json_array();
	bool *will_change = xcalloc(p->n_steps + 1, sizeof(bool));
	struct step_env e = { 0 };
	size_t diffs_cost = 0, open_cost = 0;
	const char *root;

	if (env)
		e = *env;
	if (!e.root)
		e.root = p->root ? p->root : "/";
	root = e.root;

	for (size_t i = 0; i < p->n_steps; i++) {
		struct step *s = p->steps[i];
		const char *action = NULL;
		_cleanup_free_ char *diff = NULL, *error = NULL;
		bool guarded = false;
		json_t *o;
		int r = 0;

		if ((s->unless_exists && rootfs_exists(root, s->unless_exists)) ||
		    (s->only_if_exists && !rootfs_exists(root, s->only_if_exists)))
			guarded = true;
		if (!guarded && s->only_if_changed && s->only_if_changed[0]) {
			bool any = false;

			for (size_t k = 0; s->only_if_changed[k] && !any; k++)
				for (size_t j = 0; j < i && !any; j++)
					any = will_change[j] && p->steps[j]->id &&
					      strcmp(p->steps[j]->id, s->only_if_changed[k]) == 0;
			guarded = !any;
		}
		s->diff_private = false;
		if (guarded)
			action = "none";
		else if (s->ops->describe)
			r = s->ops->describe(s, &e, &action, &diff, &error);
		else
			action = "run";
		if (r < 0 && !action)
			action = "fail";
		if (!action)
			action = "none";
		will_change[i] = r >= 0 && strcmp(action, "none") != 0;

		o = json_pack("{s:s, s:s, s:o, s:o, s:s}", "kind", s->ops->kind, "target", s->target, "recipe",
			      s->recipe ? json_string(s->recipe) : json_null(), "layer",
			      s->layer ? json_string(s->layer) : json_null(), "action", action);
		if (!o)
			continue;
		if (diff) {
			/* Who sees which diff, and the cap on what each sees,
			 * are control's (control_plan_view()). Kept here is
			 * every diff that fits the cap for a privileged caller
			 * (every diff counts) or for the others (only diffs of
			 * steps neither secret nor private count: the others
			 * see a short note for those), so that a plan holds at
			 * most twice PLAN_DIFFS_MAX of diffs. */
			_cleanup_free_ char *note = xasprintf(PLAN_DIFFS_NOTE, PLAN_DIFFS_MAX >> 20);
			bool hidden = s->secret || s->diff_private;
			size_t cost = json_text_cost(diff);
			bool all_fit = cost <= PLAN_DIFFS_MAX - diffs_cost;
			bool open_fit = !hidden && cost <= PLAN_DIFFS_MAX - open_cost;
			size_t add = all_fit ? cost : strlen(note);

			diffs_cost += add < PLAN_DIFFS_MAX - diffs_cost ? add : PLAN_DIFFS_MAX - diffs_cost;
			add = open_fit ? cost : hidden ? 0 : strlen(note);
			open_cost += add < PLAN_DIFFS_MAX - open_cost ? add : PLAN_DIFFS_MAX - open_cost;
			if (!all_fit && !open_fit) {
				free(diff);
				diff = note;
				note = NULL;
			}
			json_object_set_new(o, "diff", json_string_lossy(diff));
			json_object_set_new(o, "diff_cost", json_integer((json_int_t)cost));
			if (s->secret)
				json_object_set_new(o, "diff_secret", json_true());
			if (s->diff_private)
				json_object_set_new(o, "diff_private", json_true());
		}
		if (r < 0)
			json_object_set_new(o, "error", json_string_lossy(error ? error : strerror(-r)));
		if (s->message)
			json_object_set_new(o, "message", json_string_lossy(s->message));
		json_array_append_new(steps, o);
	}
	free(will_change);
	json_t *out = json_pack("{s:o}", "steps", steps), *gate = plan_gate_json(&p->gate);
	if (out && gate)
		json_object_set_new(out, "gate", gate);
	else
		json_decref(gate);
	return out;
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* What callers that are not privileged see of free text (run output,
 * errors, messages, diffs, a pause reason): lines of files marked
 * "secret": true, of every stack revision a run in history may have used
 * (the "needles"), and the value of NAME=VALUE / NAME: VALUE pairs whose
 * name looks secret, become "***"; when the secrets cannot all be tracked,
 * run output is hidden behind a marker (fail closed). Live output is
 * redacted a whole line at a time (held until its newline or the end of
 * its step), never a chunk at a time: a name and its value may come in
 * different reads. */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "control.h"
#include "control_int.h"
#include "stack/stack.h"
#include "steps/plan.h"

#define CONTROL_MAX_HELD_LINE (1024 * 1024) /* an output line held for redaction; longer ones are hidden */
#define CONTROL_MAX_NEEDLES 4096 /* lines of secret files looked for in free text */
#define CONTROL_MAX_NEEDLE_BYTES (4 * 1024 * 1024) /* their bytes; past either, output is hidden */
#define CONTROL_MIN_NEEDLE 4     /* shorter lines ("}", "") are not hidden: see needle_add() */
#define CONTROL_EXTRA_REVS 16    /* revisions kept beyond one per run of `history` */

static void needle_rev_free(struct needle_rev *nr);

void redact_init(struct control *ctl, const struct config *config)
{
	ctl->max_revs = (config && config->history > 0 ? (size_t)config->history : 50) + CONTROL_EXTRA_REVS;
	ctl->needle_revs = xcalloc(ctl->max_revs, sizeof(*ctl->needle_revs));
	buf_init(&ctl->held);
}

void redact_free(struct control *ctl)
{
	buf_free(&ctl->held);
	for (size_t i = 0; i < ctl->n_needle_revs; i++)
		needle_rev_free(&ctl->needle_revs[i]);
	free(ctl->needle_revs);
	ctl->needle_revs = NULL;
	ctl->n_needle_revs = 0;
}

static void needle_rev_free(struct needle_rev *nr)
{
	for (size_t i = 0; i < nr->n; i++)
		free(nr->needles[i]);
	free(nr->needles);
	memset(nr, 0, sizeof(*nr));
}

struct needle_fill {
	struct control *ctl;
	struct needle_rev *nr;
};

/* Lines of a secret string, trimmed, as needles. Lines shorter than
 * CONTROL_MIN_NEEDLE are not hidden ("}", "", a 3-byte word would blank out
 * ordinary text everywhere); there is no upper bound per line (a long
 * one-line token is searched as a substring), only the totals, past which
 * needles_overflow makes run output hidden entirely (fail closed). */
static void needle_add(const char *s, size_t len, void *userdata)
{
	struct needle_fill *f = userdata;
	struct control *ctl = f->ctl;
	struct needle_rev *nr = f->nr;
	const char *end = s + len;

	while (s < end) {
		const char *nl = s;
		const char *a = s, *b;

		/* A NUL ends a piece too: output shows it as U+FFFD. */
		while (nl < end && *nl != '\n' && *nl != '\0')
			nl++;
		b = nl;
		s = nl < end ? nl + 1 : end;
		while (a < b && (*a == ' ' || *a == '\t'))
			a++;
		while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r'))
			b--;
		if (b - a < CONTROL_MIN_NEEDLE)
			continue;
		if (ctl->needle_count >= CONTROL_MAX_NEEDLES ||
		    ctl->needle_bytes + (size_t)(b - a) > CONTROL_MAX_NEEDLE_BYTES) {
			ctl->needles_overflow = true;
			return;
		}
		nr->needles = xrealloc(nr->needles, sizeof(char *) * (nr->n + 1));
		nr->needles[nr->n++] = xstrndup(a, (size_t)(b - a));
		nr->bytes += (size_t)(b - a);
		ctl->needle_count++;
		ctl->needle_bytes += (size_t)(b - a);
	}
}

static struct needle_rev *needle_rev_find(struct control *ctl, const char *rev)
{
	for (size_t i = 0; i < ctl->n_needle_revs; i++)
		if (strcmp(ctl->needle_revs[i].rev, rev) == 0)
			return &ctl->needle_revs[i];
	return NULL;
}

/* Whether a run in history, the current stack or the applied one names rev. */
static bool needle_rev_named(const json_t *runs, const char *cur, const char *applied, const char *rev)
{
	size_t i;
	json_t *r;

	if ((cur && strcmp(cur, rev) == 0) || (applied && strcmp(applied, rev) == 0))
		return true;
	json_array_foreach(json_object_get(runs, "runs"), i, r)
		if (json_is_string(json_object_get(r, "stack_revision")) &&
		    strcmp(json_string_value(json_object_get(r, "stack_revision")), rev) == 0)
			return true;
	return false;
}

/* Adds rev's needles, from doc (the stack, secrets included) or else from
 * its saved copy in state_dir; a revision neither gives is kept as unknown.
 * Makes room by dropping revisions nothing names any more; with none to
 * drop, needles_overflow (fail closed). */
static void needle_rev_add(struct control *ctl, const char *rev, json_t *doc, const json_t *runs, const char *cur,
			   const char *applied)
{
	_cleanup_free_ char *path = NULL, *data = NULL;
	struct needle_rev *nr;
	struct needle_fill f;
	json_t *loaded = NULL;
	size_t len;

	if (!rev || strlen(rev) != 16 || needle_rev_find(ctl, rev))
		return;
	if (ctl->n_needle_revs >= ctl->max_revs) {
		size_t w = 0;

		for (size_t i = 0; i < ctl->n_needle_revs; i++) {
			if (needle_rev_named(runs, cur, applied, ctl->needle_revs[i].rev)) {
				ctl->needle_revs[w++] = ctl->needle_revs[i];
				continue;
			}
			ctl->needle_count -= ctl->needle_revs[i].n;
			ctl->needle_bytes -= ctl->needle_revs[i].bytes;
			needle_rev_free(&ctl->needle_revs[i]);
		}
		for (size_t i = w; i < ctl->n_needle_revs; i++)
			memset(&ctl->needle_revs[i], 0, sizeof(ctl->needle_revs[i]));
		ctl->n_needle_revs = w;
		if (w >= ctl->max_revs) {
			ctl->needles_overflow = true;
			return;
		}
	}
	ctl->needles_gen++;
	nr = &ctl->needle_revs[ctl->n_needle_revs++];
	memcpy(nr->rev, rev, 17);
	if (!doc && ctl->config && ctl->config->state_dir) {
		path = xasprintf("%s/stacks/%s.json", ctl->config->state_dir, rev);
		/* The same bounds as any stack: a saved copy that passes them
		 * costs no more than the stack did when it was current. */
		if (file_read_regular(AT_FDCWD, path, 0, STACK_MAX_BYTES, &data, &len) == 0 &&
		    json_bounds_check(data, len, STACK_MAX_ELEMENTS, STACK_MAX_DEPTH) == 0)
			doc = loaded = json_loadb(data, len, 0, NULL);
	}
	if (!doc) {
		nr->unknown = true;
		return;
	}
	f = (struct needle_fill){ .ctl = ctl, .nr = nr };
	proto_secret_strings(doc, needle_add, &f);
	json_decref(loaded);
}

/* Keeps the needles of every revision whose runs may show up: the current
 * stack's, and those of the runs in history (the applied stack's too), read
 * from state_dir when they were not seen while current. Called when the
 * current revision changes, and for the first time: a revision current
 * since then is already kept, so later runs need no reading. */
void needles_update(struct control *ctl)
{
	const char *rev = engine_stack_revision(ctl->engine);
	json_t *doc, *runs, *st, *r;
	const char *applied;
	size_t i;

	if (!rev)
		rev = "";
	if (ctl->needles_synced && strcmp(rev, ctl->needles_rev) == 0)
		return;
	if (ctl->needles_overflow) {
		/* Past the caps once is not past them for good: with a new
		 * revision, start again from what the runs in history name, so
		 * that output shows again once the secrets fit. */
		for (size_t k = 0; k < ctl->n_needle_revs; k++)
			needle_rev_free(&ctl->needle_revs[k]);
		memset(ctl->needle_revs, 0, ctl->n_needle_revs * sizeof(*ctl->needle_revs));
		ctl->n_needle_revs = 0;
		ctl->needle_count = 0;
		ctl->needle_bytes = 0;
		ctl->needles_overflow = false;
		ctl->needles_synced = false;
		ctl->needles_gen++;
	}
	runs = engine_runs(ctl->engine, 0);
	st = engine_status(ctl->engine);
	applied = json_string_value(json_object_get(st, "applied_revision"));
	if (rev[0]) {
		doc = engine_stack_json(ctl->engine);
		needle_rev_add(ctl, rev, doc, runs, rev, applied);
		json_decref(doc);
	}
	if (!ctl->needles_synced) {
		needle_rev_add(ctl, applied, NULL, runs, rev, applied);
		json_array_foreach(json_object_get(runs, "runs"), i, r)
			needle_rev_add(ctl, json_string_value(json_object_get(r, "stack_revision")), NULL, runs, rev,
				       applied);
	}
	json_decref(runs);
	json_decref(st);
	snprintf(ctl->needles_rev, sizeof(ctl->needles_rev), "%s", rev);
	ctl->needles_synced = true;
}

/* Whether the output of a run of stack revision rev (NULL: unknown) cannot
 * be redacted with certainty for unprivileged callers: too many secrets to
 * track, or a revision whose secrets we never saw. */
bool needles_unsure(struct control *ctl, const char *rev)
{
	struct needle_rev *nr;

	needles_update(ctl);
	if (ctl->needles_overflow)
		return true;
	if (!rev)
		return false; /* a run that never started has no output */
	nr = needle_rev_find(ctl, rev);
	if (!nr && strlen(rev) == 16) {
		/* A revision not seen while current (a retry against a failed
		 * run's saved stack): read its saved copy now. */
		json_t *runs = engine_runs(ctl->engine, 0), *st = engine_status(ctl->engine);

		needle_rev_add(ctl, rev, NULL, runs, engine_stack_revision(ctl->engine),
			       json_string_value(json_object_get(st, "applied_revision")));
		json_decref(runs);
		json_decref(st);
		if (ctl->needles_overflow)
			return true;
		nr = needle_rev_find(ctl, rev);
	}
	return !nr || nr->unknown;
}

const char control_hidden_marker[] =
	"[agentd: output hidden: the contents of secret files cannot all be tracked]\n";

static char *replace_all(const char *text, const char *needle)
{
	size_t n = strlen(needle);
	const char *p, *hit;
	struct buf b;

	buf_init(&b);
	for (p = text; (hit = strstr(p, needle)); p = hit + n) {
		buf_append(&b, p, (size_t)(hit - p));
		buf_puts(&b, "***");
	}
	buf_puts(&b, p);
	return buf_steal(&b);
}

/* Text for an unprivileged caller: lines of secret files (of every stack
 * revision kept, see needles_update), then the values of secret-looking
 * assignments, become "***"; when the secrets cannot all be tracked, the
 * whole text is replaced by a marker. Returns a malloc'd string. */
char *control_redact_text(struct control *ctl, const char *text)
{
	_cleanup_free_ char *scrubbed = NULL;

	needles_update(ctl);
	if (ctl->needles_overflow)
		return xstrdup(control_hidden_marker);
	for (size_t r = 0; r < ctl->n_needle_revs; r++) {
		const struct needle_rev *nr = &ctl->needle_revs[r];

		for (size_t i = 0; i < nr->n; i++) {
			const char *cur = scrubbed ? scrubbed : text;
			char *next;

			if (!strstr(cur, nr->needles[i]))
				continue;
			next = replace_all(cur, nr->needles[i]);
			free(scrubbed);
			scrubbed = next;
		}
	}
	return proto_redact_text(scrubbed ? scrubbed : text);
}

/* Free text that may quote a file, a command's output or a secret (step
 * errors and messages, plan diffs, a pause reason) goes through
 * control_redact_text() for unprivileged callers, at any depth of doc (after
 * control_plan_view() for a plan's diffs). */
void redact_texts(struct control *ctl, json_t *doc)
{
	static const char *const keys[] = { "error", "message", "diff", "reason" };
	const char *k;
	json_t *v;
	size_t i;

	if (json_is_object(doc)) {
		json_object_foreach(doc, k, v)
		{
			bool text = false;

			for (size_t j = 0; j < ELEMENTSOF(keys); j++)
				text = text || strcmp(k, keys[j]) == 0;
			if (text && json_is_string(v)) {
				_cleanup_free_ char *red = control_redact_text(ctl, json_string_value(v));
				json_object_set_new(doc, k, json_string(red));
			} else
				redact_texts(ctl, v);
		}
	} else if (json_is_array(doc)) {
		json_array_foreach(doc, i, v) redact_texts(ctl, v);
	}
}

/* Output events carry raw process output, which need not be UTF-8 (and the
 * engine may build them without checking): rebuilt here as valid JSON text.
 * Only for privileged callers: the others get whole lines, redacted, from
 * held_feed(). */
json_t *output_event(const json_t *ev)
{
	json_t *data = json_object_get(ev, "data");
	json_t *text = proto_string_lossy(json_string_value(data), json_string_length(data));
	json_t *out;

	out = json_deep_copy(ev);
	json_object_set_new(out, "data", text ? text : json_string(""));
	return out;
}

/* Whether c is an unprivileged follower of run: its output comes redacted,
 * a line at a time, from the held line machinery below. */
static bool client_follows_redacted(const struct client *c, long run)
{
	return !c->closing && !c->privileged && c->stream != STREAM_NONE && c->stream_run == run;
}

/* Sends data (len bytes of run output, redacted here unless it is our own
 * marker) to every unprivileged follower of run. Called inside engine
 * callbacks (in_engine_cb is raised). */
static void held_send(struct control *ctl, long run, const char *data, size_t len, bool redact)
{
	json_auto_t *ev = NULL;
	json_t *text;
	bool any = false;

	for (struct client *c = ctl->clients; c && !any; c = c->next)
		any = client_follows_redacted(c, run);
	if (!any || len == 0)
		return;
	if (redact && needles_unsure(ctl, NULL)) {
		if (ctl->marker_run == run)
			return;
		ctl->marker_run = run;
		data = control_hidden_marker;
		len = strlen(control_hidden_marker);
		redact = false;
	}
	text = proto_string_lossy(data, len);
	if (redact) {
		_cleanup_free_ char *red = control_redact_text(ctl, json_string_value(text));
		json_decref(text);
		text = json_string(red);
	}
	ev = json_pack("{s:s, s:I, s:o}", "event", "output", "run", (json_int_t)run, "data",
		       text ? text : json_string(""));
	/* client_send() may drop clients (output caps): they stay on the
	 * list until their handles are closed. */
	for (struct client *c = ctl->clients; c; c = c->next)
		if (client_follows_redacted(c, run))
			client_send(c, ev);
}

static void held_send_marker(struct control *ctl, long run, bool newline)
{
	char msg[128];
	int n = snprintf(msg, sizeof(msg), "[agentd: a line longer than %d bytes, hidden while it was written]%s",
			 CONTROL_MAX_HELD_LINE, newline ? "\n" : "");

	held_send(ctl, run, msg, (size_t)n, false);
}

static void held_reset(struct control *ctl, long run)
{
	ctl->held_run = run;
	ctl->held_overflow = false;
	if (ctl->held.cap > 64 * 1024)
		buf_free(&ctl->held); /* a long line: give its memory back */
	else
		buf_reset(&ctl->held);
}

static void held_append(struct control *ctl, const char *data, size_t len)
{
	if (ctl->held_overflow || len == 0)
		return;
	if (ctl->held.len + len > CONTROL_MAX_HELD_LINE) {
		/* Never sent in pieces (a piece could end inside an
		 * assignment): hidden from here to its newline. */
		held_reset(ctl, ctl->held_run);
		ctl->held_overflow = true;
		return;
	}
	buf_append(&ctl->held, data, len);
}

/* One chunk of run output, as the engine read it: whatever completes lines
 * goes out redacted, the incomplete last line is held. */
static void held_feed(struct control *ctl, long run, const char *data, size_t len)
{
	const char *last_nl = len ? memrchr(data, '\n', len) : NULL;
	size_t head;

	if (ctl->held_run != run)
		held_reset(ctl, run);
	if (!last_nl) {
		held_append(ctl, data, len);
		return;
	}
	head = (size_t)(last_nl - data) + 1;
	if (ctl->held_overflow) {
		const char *nl = memchr(data, '\n', head);
		size_t skip = (size_t)(nl - data) + 1;

		held_send_marker(ctl, run, true);
		held_send(ctl, run, data + skip, head - skip, true);
		held_reset(ctl, run);
	} else if (ctl->held.len > 0) {
		buf_append(&ctl->held, data, head);
		held_send(ctl, run, ctl->held.data, ctl->held.len, true);
		held_reset(ctl, run);
	} else
		held_send(ctl, run, data, head, true);
	held_append(ctl, data + head, len - head);
}

/* The step or the run ended: its last line is complete as it is. */
void held_flush(struct control *ctl, long run)
{
	if (ctl->held_run != run)
		return;
	if (ctl->held_overflow)
		held_send_marker(ctl, run, false);
	else if (ctl->held.len > 0)
		held_send(ctl, run, ctl->held.data, ctl->held.len, true);
	held_reset(ctl, 0);
}

/* Our own watch, always on: it sees every chunk of every run's output. */
void redact_on_event(void *userdata, const json_t *ev)
{
	struct control *ctl = userdata;
	const char *name = json_string_value(json_object_get(ev, "event"));
	json_t *run = json_object_get(ev, "run");
	json_t *data = json_object_get(ev, "data");

	if (ctl->freeing || !name || !json_is_integer(run))
		return;
	ctl->in_engine_cb++;
	control_housekeeping_arm(ctl);
	/* A run's stack is current (or saved) when it starts, and its saved
	 * copy goes once it ends: take its secrets now, so that its output can
	 * be redacted later rather than hidden as unknown. */
	if (strcmp(name, "run-started") == 0)
		needles_update(ctl);
	if (strcmp(name, "output") == 0)
		held_feed(ctl, (long)json_integer_value(run), json_string_value(data), json_string_length(data));
	else
		held_flush(ctl, (long)json_integer_value(run));
	if (strcmp(name, "run-finished") == 0)
		ctl->trim_due = true; /* the run's stack and buffers are gone by the next housekeeping */
	ctl->in_engine_cb--;
}

/* What a caller that is not privileged may not learn through a plan's diff:
 * a secret file's content, or one it could not read itself. */
static const char diff_hidden_secret[] = "(diff hidden: contains secrets)";
static const char diff_hidden_private[] = "(diff hidden: the file is not world-readable)";

void control_plan_view(json_t *plan, bool privileged)
{
	_cleanup_free_ char *note = xasprintf(PLAN_DIFFS_NOTE, PLAN_DIFFS_MAX >> 20);
	size_t used = 0, i;
	json_t *st;

	json_array_foreach(json_object_get(plan, "steps"), i, st)
	{
		bool secret = json_is_true(json_object_get(st, "diff_secret"));
		bool private = json_is_true(json_object_get(st, "diff_private"));
		json_int_t cost = json_integer_value(json_object_get(st, "diff_cost"));
		const char *shown = NULL;
		size_t add;

		(void)json_object_del(st, "diff_secret");
		(void)json_object_del(st, "diff_private");
		(void)json_object_del(st, "diff_cost");
		if (!json_object_get(st, "diff"))
			continue;
		if (!privileged && secret)
			shown = diff_hidden_secret;
		else if (!privileged && private)
			shown = diff_hidden_private;
		add = shown ? strlen(shown) : cost > 0 ? (size_t)cost : 0;
		if (add > PLAN_DIFFS_MAX - used) {
			shown = note;
			add = strlen(note);
		}
		used += add < PLAN_DIFFS_MAX - used ? add : PLAN_DIFFS_MAX - used;
		if (shown)
			json_object_set_new(st, "diff", json_string(shown));
	}
}

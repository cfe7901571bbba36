/* SPDX-License-Identifier: BSD-2-Clause */
/* The engine: stack versions in, runs out (design.md §3, §7).
 *
 * State lives in state_dir:
 *   stacks/<revision>.json  every stack a run may still need (content-addressed)
 *   state.json              one file, written atomically, holding the
 *                           revision of the current and the applied stack,
 *                           the run records (queued, running and finished,
 *                           newest first), failures, exec input hashes
 *                           and the pause reason.
 * The queue is simply the records whose status is "queued": a new stack's
 * triggers and the stack they came from are committed by one rename, so a
 * crash at any point either loses nothing or repeats a diff whose triggers
 * coalesce with the ones already queued.
 *
 * "applied" is the stack whose triggers have been queued; "current" is the
 * newest valid stack. They differ only while paused. */
#include "engine.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "config.h"
#include "io/exec.h"
#include "io/http.h"
#include "log.h"
#include "steps/plan.h"
#include "proto.h"
#include "recipes/recipe.h"
#include "recipes/apps.h"
#include "rootfs.h"
#include "source/source.h"
#include "stack/stack.h"
#include "util.h"


#define STATE_VERSION 1
/* Bounds of what agentd writes to state_dir, and so of what it reads back.
 * Memory follows the number of JSON elements, not the bytes (a file of
 * small integers takes ~50 bytes per byte), so both are checked before a
 * file is parsed (json_bounds_check), and a writer keeps within them:
 *   - a run record keeps at most RUN_STEPS_MAX steps, of at most
 *     RUN_STEPS_MAX_BYTES as JSON, and texts (a step's target, error and
 *     message, the run's error) of at most RUN_TEXT_MAX bytes; the run
 *     log has everything, the record counts what it left out in
 *     "steps_omitted";
 *   - state.json holds `history` finished runs, at most ENGINE_QUEUE_MAX
 *     queued ones and the running one (with its steps), and at most
 *     ENGINE_KEYS_MAX entries in each of failed, input_hashes and
 *     last_success. */
#define RUN_STEPS_MAX 4096
#define RUN_STEPS_MAX_BYTES (6u << 20)
#define RUN_TEXT_MAX 1024
#define RUN_STEP_ELEMENTS 24        /* a step: the object, 10 keys, 10 values */
#define RUN_REC_ELEMENTS 48         /* a record without its steps: the object, 22 keys, 22 values */
#define RUN_REC_MAX_BYTES (8u << 10) /* names of 255, texts of RUN_TEXT_MAX, JSON escapes included */
/* runs/<id>.json: one record with its steps. */
#define RUN_FILE_MAX_ELEMENTS ((size_t)RUN_STEPS_MAX * RUN_STEP_ELEMENTS + RUN_REC_ELEMENTS)
#define RUN_FILE_MAX_BYTES ((size_t)RUN_STEPS_MAX_BYTES + RUN_REC_MAX_BYTES)
#define ENGINE_QUEUE_MAX 256
#define ENGINE_KEYS_MAX 2048
#define ENGINE_KEY_MAX_BYTES 512    /* of an input hash's key */
#define ENGINE_KEY_ENTRY_ELEMENTS 16 /* a failure: key, object, 7 keys, 7 values */
#define ENGINE_KEY_ENTRY_MAX_BYTES (2u << 10)
#define STATE_JSON_MAX_DEPTH 8      /* state, runs, record, steps, step: 5 */
/* Beyond any history (config allows 10000): the cap of the old reader. */
#define STATE_MAX_BYTES (64u << 20)
#define ENGINE_RUNS_MAX (10000 + ENGINE_QUEUE_MAX + 1)
#define ENGINE_FAIL_COUNT_MAX 1000000
/* On SIGTERM, how long a state.json that cannot be written is tried again
 * before agentd exits anyway (each run's result is also in its log, which
 * the next start reads: see run_log_result). Below systemd's stop timeout. */
#define STOP_STATE_RETRY_USEC (5 * 1000000)
#define STOP_STATE_RETRY_MS 250
#define ENGINE_TIME_USEC_MAX INT64_C(253402300799000000) /* 9999-12-31 */

struct active {
	json_t *rec;                /* borrowed from e->runs */
	long id;
	struct stack *stack;        /* owned ref: what the run plans against */
	struct plan plan;
	struct plan_exec *x;        /* NULL once done */
	int log_fd;
	int64_t started_mono;
	uv_timer_t timeout;
	bool timed_out;
	bool no_retry;              /* retrying cannot help: the run's stack, layer or app is gone */
	bool killed;                /* its step was terminated by a second SIGTERM */
	size_t changed;
	uint64_t log_key;           /* random, in the log's first and result lines: output cannot fake a result */
	size_t steps_bytes;         /* of the steps kept in rec, as JSON */
	size_t steps_omitted;       /* steps left out of rec (over RUN_STEPS_MAX or RUN_STEPS_MAX_BYTES) */
};

struct engine {
	uv_loop_t *loop;               /* borrowed */
	const struct config *config;   /* borrowed */
	struct http *http;             /* owned */
	struct step_memory memory;     /* input hashes and owed work, kept in state.json */
	struct source *source;         /* owned */

	struct stack *current;         /* owned ref, newest valid stack */
	struct stack *applied;         /* owned ref, the stack whose triggers were queued */
	char *instance;                /* owned: the configured or system host name */
	char *source_url;              /* owned: config->source with credentials hidden, for status and logs */
	bool first_start;              /* no state: the first valid stack runs setup */

	uint64_t last_raw_hash;        /* of the last document seen, to skip re-parsing */
	bool have_raw_hash;
	bool source_error_fetch;       /* source_error is an error of fetching (on_source_error) */
	bool raw_ok;                   /* the last document was accepted (kept across fetch errors, for a 304 after them) */
	char *source_error;            /* owned: the last fetch or validation error, NULL when fine */
	char *source_error_path;       /* owned: its JSON path, when a validation error */
	int64_t last_change_usec;

	json_t *runs;                  /* owned: array of run records, newest first */
	long next_id;
	json_t *failed;                /* owned: object "event/layer/app" -> {run, count, next_retry} */
	json_t *input_hashes;          /* owned: object key -> hex */
	json_t *last_success;          /* owned: object "event/layer" -> {revision, run} */
	char *paused;                  /* owned: reason ("" when none given), NULL when not paused */

	struct active *active;         /* owned, NULL when idle */
	uv_timer_t kick;               /* starts the next run from a clean stack */
	uv_timer_t retry;              /* the next retry of a failed change */
	uv_timer_t state_retry;        /* the next try to write state_dir after a failure */
	char *state_error;             /* owned: why state_dir cannot be written, NULL when fine */
	unsigned state_failures;       /* writes failed in a row, for the backoff */
	bool stack_save_failed;        /* a new stack could not be saved: fetch it again once state_dir takes writes */
	int64_t start_mono;

	struct engine_watch *watchers;
	bool stopping;
	int64_t stop_deadline;         /* monotonic usec: the end of the state retries at a stop, 0 before */
	void (*stop_done)(void *userdata);
	void *stop_userdata;
	unsigned closing;
	bool freed_on_close;
};

static void engine_kick(struct engine *e);
static void engine_stop_finish(struct engine *e);
static bool revision_is_valid(const char *r);
static int engine_persist(struct engine *e);
static bool rec_status_is(const json_t *rec, const char *status);
static bool str_eq(const char *a, const char *b);
static const char *rec_str(const json_t *rec, const char *k);

/* ---------------------------------------------------------------- helpers */

static const char *str_or_empty(const char *s)
{
	return s ? s : "";
}

static json_t *json_string_or_null(const char *s)
{
	return s ? json_string(s) : json_null();
}

/* A text for a run record: at most RUN_TEXT_MAX bytes, cut at a character
 * boundary (never inside a UTF-8 sequence); NULL gives null. */
static json_t *json_text_capped(const char *s)
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

/* What state.json may hold with `history` finished runs (see the bounds at
 * the top): its elements and its bytes. */
static long state_history_clamp(long history)
{
	return history < 1 ? 1 : history > 10000 ? 10000 : history;
}

/* Steps are in state.json for the running run, and for one finished run
 * whose run file could not be written (engine_finish_run): twice. */
static size_t state_max_elements(long history)
{
	return ((size_t)state_history_clamp(history) + ENGINE_QUEUE_MAX) * RUN_REC_ELEMENTS + 2 * RUN_FILE_MAX_ELEMENTS +
	       (size_t)ENGINE_KEYS_MAX * 3 * ENGINE_KEY_ENTRY_ELEMENTS + 64;
}

static size_t state_max_bytes(long history)
{
	size_t n = ((size_t)state_history_clamp(history) + ENGINE_QUEUE_MAX) * RUN_REC_MAX_BYTES + 2 * RUN_FILE_MAX_BYTES +
		   (size_t)ENGINE_KEYS_MAX * 3 * ENGINE_KEY_ENTRY_MAX_BYTES + 4096;
	return n < STATE_MAX_BYTES ? n : STATE_MAX_BYTES;
}

static void now_rfc3339(char *out, size_t n)
{
	time_format_rfc3339(time_now_usec(), out, n);
}

static json_t *json_time(int64_t usec)
{
	char buf[40];
	if (usec <= 0)
		return json_null();
	time_format_rfc3339(usec, buf, sizeof(buf));
	return json_string(buf);
}

static char *state_path(const struct engine *e, const char *name)
{
	return xasprintf("%s/%s", e->config->state_dir, name);
}

static char *stack_file_path(const struct engine *e, const char *rev)
{
	return xasprintf("%s/stacks/%s.json", e->config->state_dir, rev);
}

/* A finished run's steps live in their own file, not in memory or state.json. */
static char *run_file_path(const struct engine *e, long id)
{
	return xasprintf("%s/runs/%ld.json", e->config->state_dir, id);
}

static char *fail_key(const char *event, const char *layer, const char *app)
{
	return xasprintf("%s/%s/%s", event, str_or_empty(layer), str_or_empty(app));
}

static void emit(struct engine *e, json_t *ev /* stolen */)
{
	struct engine_watch *w, *next;

	for (w = e->watchers; w; w = next) {
		next = w->next;
		w->on_event(w->userdata, ev);
	}
	json_decref(ev);
}

void engine_watch_add(struct engine *e, struct engine_watch *w)
{
	w->next = e->watchers;
	e->watchers = w;
}

void engine_watch_remove(struct engine *e, struct engine_watch *w)
{
	for (struct engine_watch **p = &e->watchers; *p; p = &(*p)->next)
		if (*p == w) {
			*p = w->next;
			w->next = NULL;
			return;
		}
}

static void notify_status(struct engine *e)
{
	if (e->active)
		(void)sd_notifyf(0, "STATUS=running %s (run %ld)",
				 json_string_value(json_object_get(e->active->rec, "event")), e->active->id);
	else if (e->paused)
		(void)sd_notifyf(0, "STATUS=paused: %s", e->paused);
	else if (json_object_size(e->failed) > 0)
		(void)sd_notify(0, "STATUS=failed (see agentctl status)");
	else
		(void)sd_notify(0, "STATUS=idle");
}

/* ------------------------------------------------------------ persistence */

/* Moves an unusable file of state_dir (state.json, a saved stack) aside to
 * "<path>.corrupt", for a post-mortem and so that the next write can replace
 * it (a directory there would block every write). Logged once per entry:
 * the entry is gone from its place afterwards. */
static void state_move_aside(struct engine *e, const char *path)
{
	_cleanup_free_ char *bad = xasprintf("%s.corrupt", path);

	(void)e;
	if (rename(path, bad) == 0) {
		log_error("Moved %s aside to %s", path, bad);
		return;
	}
	free(bad);
	bad = xasprintf("%s.corrupt.%lld", path, (long long)time_now_usec());
	if (rename(path, bad) < 0)
		log_error_errno(-errno, "Failed to move %s aside: %m", path);
	else
		log_error("Moved %s aside to %s", path, bad);
}

static int save_stack(struct engine *e, const struct stack *s)
{
	_cleanup_free_ char *path = stack_file_path(e, s->revision), *data = NULL;
	struct stat st;
	size_t len;
	int r;

	/* Content-addressed: a regular file by that name is this stack. Anything
	 * else there (a directory, a FIFO, a link) is not ours: it is moved
	 * aside, reported once, and the stack written in its place (a rename
	 * cannot replace a directory, which would block this stack for good). */
	if (lstat(path, &st) == 0) {
		if (S_ISREG(st.st_mode))
			return 0;
		state_move_aside(e, path);
	}
	data = stack_dump(s, &len);
	r = file_write_atomic(path, data, len, 0600, (uid_t)-1, (gid_t)-1);
	if (r < 0)
		return r; /* logged by the caller, once */
	return 0;
}

static struct stack *load_stack(struct engine *e, const char *rev)
{
	_cleanup_free_ char *path = stack_file_path(e, rev), *data = NULL;
	struct stack_error err = { 0 };
	struct stack *s = NULL;
	size_t len;
	int r;

	if (!revision_is_valid(rev))
		return NULL;
	r = file_read_regular(AT_FDCWD, path, 0, STACK_MAX_BYTES, &data, &len);
	if (r < 0) {
		log_warn("Saved stack %s cannot be read: %s", path, file_read_strerror(r));
		return NULL;
	}
	r = recipes_stack_load(data, len, e->instance, &s, &err);
	if (r < 0) {
		log_warn("Saved stack %s no longer validates at %s: %s", path, err.path, err.message);
		return NULL;
	}
	return s;
}

/* Removes saved stacks nothing refers to any more. */
static void gc_stacks(struct engine *e)
{
	_cleanup_free_ char *dir = state_path(e, "stacks");
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char rev[17];
		bool keep = false;
		size_t i;
		json_t *rec;

		if (strlen(de->d_name) != 21 || strcmp(de->d_name + 16, ".json") != 0)
			continue;
		memcpy(rev, de->d_name, 16);
		rev[16] = '\0';
		if ((e->current && strcmp(rev, e->current->revision) == 0) ||
		    (e->applied && strcmp(rev, e->applied->revision) == 0))
			keep = true;
		json_array_foreach(e->runs, i, rec) {
			const char *r = json_string_value(json_object_get(rec, "_stack"));
			if (r && strcmp(r, rev) == 0 && (rec_status_is(rec, "queued") || rec_status_is(rec, "running")))
				keep = true;
		}
		/* A failed run tied to an old stack is retried against it. */
		const char *k;
		json_t *f;
		json_object_foreach(e->failed, k, f)
			if (str_eq(json_string_value(json_object_get(f, "stack")), rev))
				keep = true;
		if (!keep)
			(void)unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
}

static void on_state_retry(uv_timer_t *t);

/* state_dir could not be written: say so in status and try again later,
 * with a backoff (1 s doubling to 10 s). Nothing is lost meanwhile: the
 * records stay in memory, and runs wait (see engine_start_run). */
static void state_write_failed(struct engine *e, const char *what, int r)
{
	char *msg = xasprintf("cannot write %s: %s", what, strerror(-r));
	uint64_t delay = 1000;

	if (!str_eq(e->state_error, msg))
		log_error("%s; keeping it in memory and trying again", msg);
	free(e->state_error);
	e->state_error = msg;
	for (unsigned i = 0; i < e->state_failures && delay < 10000; i++)
		delay *= 2;
	if (delay > 10000)
		delay = 10000;
	if (e->state_failures < 100)
		e->state_failures++;
	if (!e->stopping && !uv_is_active((uv_handle_t *)&e->state_retry))
		(void)uv_timer_start(&e->state_retry, on_state_retry, delay, 0);
}

/* Writes state.json. On failure the state stays dirty in memory and the
 * write is tried again on a timer (and at every later transition, which
 * writes the whole state anyway). Returns 0 or a negative errno. */
static int engine_persist(struct engine *e)
{
	_cleanup_free_ char *path = state_path(e, "state.json"), *data = NULL;
	json_t *o = json_object();
	int r;

	json_object_set_new(o, "version", json_integer(STATE_VERSION));
	json_object_set_new(o, "instance", json_string(e->instance));
	json_object_set_new(o, "stack_revision", json_string_or_null(e->current ? e->current->revision : NULL));
	json_object_set_new(o, "applied_revision", json_string_or_null(e->applied ? e->applied->revision : NULL));
	json_object_set_new(o, "next_run_id", json_integer(e->next_id));
	json_object_set(o, "runs", e->runs);
	json_object_set(o, "failed", e->failed);
	json_object_set(o, "input_hashes", e->input_hashes);
	json_object_set(o, "last_success", e->last_success);
	json_object_set_new(o, "paused", json_string_or_null(e->paused));
	data = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	r = data ? file_write_atomic(path, data, strlen(data), 0600, (uid_t)-1, (gid_t)-1) : -ENOMEM;
	if (r < 0) {
		state_write_failed(e, path, r);
		return r;
	}
	if (e->state_error && !e->stack_save_failed) {
		log_info("State written to %s again", path);
		free(e->state_error);
		e->state_error = NULL;
		e->state_failures = 0;
		(void)uv_timer_stop(&e->state_retry);
	}
	return 0;
}

static void on_state_retry(uv_timer_t *t)
{
	struct engine *e = t->data;

	if (e->stopping || engine_persist(e) < 0)
		return;
	if (e->stack_save_failed) {
		/* Fetch the document again: its stack is saved this time, or
		 * the failure re-arms this timer. */
		e->stack_save_failed = false;
		free(e->state_error);
		e->state_error = NULL;
		e->state_failures = 0;
		engine_reload(e);
	}
	/* A run that waited for its start to be recorded can start now. */
	engine_kick(e);
}

/* A stack revision as stack.c makes it: 16 lowercase hex digits. It names a
 * file in state_dir/stacks, so nothing else may pass. */
static bool revision_is_valid(const char *r)
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

/* A run record from disk, checked member by member: what a step, a path or
 * a kill() will use must be in range; what is only shown is dropped when it
 * has the wrong type. Returns a new record, or NULL to drop it. */
static json_t *state_clean_run(const json_t *rec)
{
	static const char *const statuses[] = { "queued", "running", "success", "failed", "interrupted" };
	json_t *o;
	const char *k;
	json_t *v;
	bool known = false;

	if (!json_is_object(rec) || !json_int_in(json_object_get(rec, "id"), 1, ENGINE_RUN_ID_MAX, NULL) ||
	    event_from_string(rec_str(rec, "event")) == EVENT_INVALID ||
	    trigger_from_string(rec_str(rec, "trigger")) == TRIGGER_INVALID || !rec_str(rec, "status") ||
	    !json_name_or_null(json_object_get(rec, "layer")) || !json_name_or_null(json_object_get(rec, "app")))
		return NULL;
	for (size_t j = 0; j < ELEMENTSOF(statuses); j++)
		known |= strcmp(rec_str(rec, "status"), statuses[j]) == 0;
	if (!known)
		return NULL;
	/* _stack names a file to load: a bad one makes the record useless. */
	if (json_object_get(rec, "_stack") && !json_revision_is_valid(json_object_get(rec, "_stack")))
		return NULL;

	o = json_object();
	json_object_foreach((json_t *)rec, k, v) {
		bool keep;
		if (!strcmp(k, "id") || !strcmp(k, "event") || !strcmp(k, "trigger") || !strcmp(k, "status") ||
		    !strcmp(k, "layer") || !strcmp(k, "app") || !strcmp(k, "_stack"))
			keep = true;
		else if (!strcmp(k, "changed") || !strcmp(k, "steps_omitted"))
			keep = json_int_in(v, 0, INT32_MAX, NULL);
		else if (!strcmp(k, "duration_ms"))
			keep = json_is_number(v) && json_number_value(v) >= 0;
		else if (!strcmp(k, "queued") || !strcmp(k, "started") || !strcmp(k, "finished"))
			keep = json_is_string(v) || json_is_null(v);
		else if (!strcmp(k, "error") || !strcmp(k, "stack_revision") || !strcmp(k, "steps_error"))
			keep = json_is_string(v);
		else if (!strcmp(k, "steps"))
			keep = json_is_array(v);
		else if (!strcmp(k, "_front") || !strcmp(k, "_rollback_restart") || !strcmp(k, "_requeued"))
			keep = json_is_boolean(v);
		else if (!strcmp(k, "_pgid") || !strcmp(k, "_pgid_start"))
			/* Range-checked where it is used, by exec_kill_recorded_group,
			 * which also says why it signals nothing. */
			keep = json_is_integer(v);
		else
			keep = false;
		if (keep)
			json_object_set(o, k, v);
	}
	if (!json_object_get(o, "changed"))
		json_object_set_new(o, "changed", json_integer(0));
	return o;
}

/* An entry of "failed", or NULL to drop it. Its key is made again from its
 * members, which the engine matches on. */
static json_t *state_clean_failure(const json_t *f, char **ret_key)
{
	json_t *o, *v;
	json_int_t x;

	if (!json_is_object(f) || event_from_string(json_string_value(json_object_get(f, "event"))) == EVENT_INVALID ||
	    !json_name_or_null(json_object_get(f, "layer")) || !json_name_or_null(json_object_get(f, "app")))
		return NULL;
	if ((v = json_object_get(f, "stack")) && !json_revision_is_valid(v))
		return NULL;
	o = json_object();
	json_object_set(o, "event", json_object_get(f, "event"));
	json_object_set_new(o, "layer", json_string_or_null(json_string_value(json_object_get(f, "layer"))));
	json_object_set_new(o, "app", json_string_or_null(json_string_value(json_object_get(f, "app"))));
	if (v)
		json_object_set(o, "stack", v);
	if (json_int_in(json_object_get(f, "run"), 1, ENGINE_RUN_ID_MAX, &x))
		json_object_set_new(o, "run", json_integer(x));
	/* count drives the backoff: a huge one only means "at the maximum". */
	x = 1;
	if (json_is_integer(json_object_get(f, "count")))
		x = json_integer_value(json_object_get(f, "count"));
	json_object_set_new(o, "count", json_integer(x < 1 ? 1 : x > ENGINE_FAIL_COUNT_MAX ? ENGINE_FAIL_COUNT_MAX : x));
	/* A time in microseconds; 0 means no retry. The engine also pulls a
	 * far-future retry in to retry_max from now. */
	x = 0;
	if (json_is_integer(json_object_get(f, "next_retry")))
		x = json_integer_value(json_object_get(f, "next_retry"));
	json_object_set_new(o, "next_retry", json_integer(x < 0 ? 0 : x > ENGINE_TIME_USEC_MAX ? ENGINE_TIME_USEC_MAX : x));
	*ret_key = fail_key(json_string_value(json_object_get(o, "event")), json_string_value(json_object_get(o, "layer")),
			    json_string_value(json_object_get(o, "app")));
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

int engine_state_parse(const char *data, size_t len, long history, json_t **ret, char **ret_error)
{
	json_error_t jerr;
	json_t *in, *o, *v, *runs, *seen;
	json_int_t x;
	size_t i;
	json_t *rec;
	const char *k;
	size_t dropped = 0;
	int r;

	*ret = NULL;
	if (len > state_max_bytes(history)) {
		*ret_error = xasprintf("larger than %zu bytes", state_max_bytes(history));
		return -EFBIG;
	}
	/* Before parsing: what agentd writes with this history never has
	 * more elements or depth, and a file that does would take memory far
	 * beyond its bytes. */
	r = json_bounds_check(data, len, state_max_elements(history), STATE_JSON_MAX_DEPTH);
	if (r < 0) {
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

	o = json_object();
	/* Records we cannot make sense of are dropped, not trusted: a state
	 * file edited by hand or by another version must not crash us, and
	 * none of its numbers may reach a kill(), a path or an id unchecked. */
	runs = json_array();
	seen = json_object();
	json_array_foreach(json_object_get(in, "runs"), i, rec) {
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
			dropped++;
	}
	json_decref(seen);
	json_object_set_new(o, "runs", runs);
	json_object_set_new(o, "dropped_runs", json_integer((json_int_t)dropped));

	/* 0: absent or out of range; the engine then takes the highest id it
	 * can find on disk, plus one. */
	x = 0;
	if (!json_int_in(json_object_get(in, "next_run_id"), 1, ENGINE_RUN_ID_MAX, &x))
		x = 0;
	json_object_set_new(o, "next_run_id", json_integer(x));

	json_t *failed = json_object();
	if ((v = json_object_get(in, "failed")) && json_is_object(v)) {
		json_t *f;
		json_object_foreach(v, k, f) {
			_cleanup_free_ char *key = NULL;
			json_t *c = json_object_size(failed) < ENGINE_KEYS_MAX ? state_clean_failure(f, &key) : NULL;
			if (c)
				json_object_set_new(failed, key, c);
		}
	}
	json_object_set_new(o, "failed", failed);

	json_t *hashes = json_object();
	if ((v = json_object_get(in, "input_hashes")) && json_is_object(v)) {
		json_t *h;
		json_object_foreach(v, k, h)
			if (json_is_string(h) && hex16_is_valid(json_string_value(h)) &&
			    strlen(k) <= ENGINE_KEY_MAX_BYTES && json_object_size(hashes) < ENGINE_KEYS_MAX)
				json_object_set(hashes, k, h);
	}
	json_object_set_new(o, "input_hashes", hashes);

	json_t *last = json_object();
	if ((v = json_object_get(in, "last_success")) && json_is_object(v)) {
		json_t *l;
		json_object_foreach(v, k, l) {
			if (!json_is_object(l) || !json_revision_is_valid(json_object_get(l, "revision")) ||
			    json_object_size(last) >= ENGINE_KEYS_MAX)
				continue;
			json_t *c = json_object();
			json_object_set(c, "revision", json_object_get(l, "revision"));
			if (json_int_in(json_object_get(l, "run"), 1, ENGINE_RUN_ID_MAX, &x))
				json_object_set_new(c, "run", json_integer(x));
			if (json_is_string(json_object_get(l, "finished")))
				json_object_set(c, "finished", json_object_get(l, "finished"));
			json_object_set_new(last, k, c);
		}
	}
	json_object_set_new(o, "last_success", last);

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
	json_decref(in);
	*ret = o;
	return 0;
}

/* The highest run id named by a file "<id><suffix>" in dir, or 0. Logs and
 * step files outlive a state.json that was lost or could not be written:
 * their ids are taken, too. */
static long max_id_in_dir(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t sl = strlen(suffix);
	long best = 0;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		char num[32];
		long id;
		if (n <= sl || n - sl >= sizeof(num) || strcmp(de->d_name + n - sl, suffix) != 0)
			continue;
		memcpy(num, de->d_name, n - sl);
		num[n - sl] = '\0';
		if (parse_long(num, 1, ENGINE_RUN_ID_MAX, &id) == 0 && id > best)
			best = id;
	}
	closedir(d);
	return best;
}


static void engine_load_state(struct engine *e)
{
	_cleanup_free_ char *path = state_path(e, "state.json"), *data = NULL, *err = NULL;
	json_t *o, *v;
	size_t len;
	int r;

	r = file_read_regular(AT_FDCWD, path, 0, state_max_bytes(e->config->history), &data, &len);
	if (r == -ENOENT) {
		log_info("No saved state in %s: first start on this instance", e->config->state_dir);
		e->first_start = true;
		return;
	}
	if (r == -EBADFD || r == -EISDIR || r == -ELOOP || r == -EFBIG) {
		/* A FIFO, device, directory or symlink is not our file, and
		 * was read without waiting on it: report, keep it for a look,
		 * and start as on a first start. */
		log_error("Saved state %s is %s: treating this as a first start", path, file_read_strerror(r));
		state_move_aside(e, path);
		e->first_start = true;
		return;
	}
	if (r < 0) {
		log_error_errno(r, "Saved state %s cannot be read (%m): treating this as a first start", path);
		e->first_start = true;
		return;
	}
	r = engine_state_parse(data, len, e->config->history, &o, &err);
	if (r < 0) {
		log_error("Saved state %s is corrupt (%s): treating this as a first start", path, err);
		/* Keep the bad file for a post-mortem instead of overwriting it. */
		state_move_aside(e, path);
		e->first_start = true;
		return;
	}

	if (json_integer_value(json_object_get(o, "dropped_runs")) > 0)
		log_warn("Dropped %lld unreadable run records from %s",
			 (long long)json_integer_value(json_object_get(o, "dropped_runs")), path);
	json_decref(e->runs);
	e->runs = json_incref(json_object_get(o, "runs"));
	e->next_id = (long)json_integer_value(json_object_get(o, "next_run_id"));
	if (e->next_id == 0)
		log_warn("%s has no usable next_run_id: continuing after the highest run id found", path);
	json_object_update(e->failed, json_object_get(o, "failed"));
	{
		/* A retry time far in the future (a clock that jumped, or an
		 * edit) would never come: retry_max from now at the latest. */
		int64_t latest = time_now_usec() + (int64_t)e->config->retry_max * 1000000;
		const char *k;
		json_t *f;
		json_object_foreach(e->failed, k, f)
			if (json_integer_value(json_object_get(f, "next_retry")) > latest)
				json_object_set_new(f, "next_retry", json_integer(latest));
	}
	json_object_update(e->input_hashes, json_object_get(o, "input_hashes"));
	json_object_update(e->last_success, json_object_get(o, "last_success"));
	if ((v = json_object_get(o, "paused")))
		e->paused = xstrdup(json_string_value(v));

	if ((v = json_object_get(o, "applied_revision")))
		e->applied = load_stack(e, json_string_value(v));
	if ((v = json_object_get(o, "stack_revision"))) {
		if (e->applied && strcmp(e->applied->revision, json_string_value(v)) == 0)
			e->current = stack_ref(e->applied);
		else
			e->current = load_stack(e, json_string_value(v));
	}
	/* State without a usable applied stack: the first good document will be
	 * diffed against nothing, which is a first start. */
	e->first_start = !e->applied;
	json_decref(o);
}

/* Ids only grow, and are never given twice: past every id in state.json,
 * every run log in log_dir and every step file in state_dir. */
static void engine_fix_next_id(struct engine *e)
{
	_cleanup_free_ char *logs = xasprintf("%s/runs", e->config->log_dir), *files = state_path(e, "runs");
	long m;
	size_t i;
	json_t *rec;

	if (e->next_id < 1)
		e->next_id = 1;
	json_array_foreach(e->runs, i, rec) {
		long id = (long)json_integer_value(json_object_get(rec, "id"));
		if (id >= e->next_id)
			e->next_id = id + 1;
	}
	if ((m = max_id_in_dir(logs, ".log")) >= e->next_id)
		e->next_id = m + 1;
	if ((m = max_id_in_dir(files, ".json")) >= e->next_id)
		e->next_id = m + 1;
}

/* --------------------------------------------------------------- history */

static json_t *run_find(struct engine *e, long id)
{
	size_t i;
	json_t *rec;

	json_array_foreach(e->runs, i, rec)
		if (json_integer_value(json_object_get(rec, "id")) == id)
			return rec;
	return NULL;
}

static bool rec_status_is(const json_t *rec, const char *status)
{
	const char *s = json_string_value(json_object_get(rec, "status"));
	return s && strcmp(s, status) == 0;
}

/* Drops the oldest finished records beyond the configured history. */
static void trim_history(struct engine *e)
{
	size_t finished = 0;

	for (size_t i = 0; i < json_array_size(e->runs);) {
		json_t *rec = json_array_get(e->runs, i);
		if (rec_status_is(rec, "queued") || rec_status_is(rec, "running")) {
			i++;
			continue;
		}
		if (++finished > (size_t)e->config->history) {
			long id = (long)json_integer_value(json_object_get(rec, "id"));
			_cleanup_free_ char *log = engine_run_log_path(e, id), *steps = run_file_path(e, id);
			(void)unlink(log);
			(void)unlink(steps);
			json_array_remove(e->runs, i);
			continue;
		}
		i++;
	}
}

static const char *rec_str(const json_t *rec, const char *k)
{
	return json_string_value(json_object_get(rec, k));
}

static bool str_eq(const char *a, const char *b)
{
	if (!a || !b)
		return a == b;
	return strcmp(a, b) == 0;
}

/* Queues a run, or returns the id of a queued one that already covers it:
 * the same event and app, for the same layer or for every layer, planned
 * against the same stack. A burst of triggers gives one run. */
static long enqueue_ex(struct engine *e, enum event ev, const char *layer, const char *app,
		       enum trigger_kind trig, const char *stack_rev, bool fresh)
{
	const char *evs = event_to_string(ev);
	size_t i;
	json_t *rec;

	json_array_foreach(e->runs, i, rec) {
		if (fresh || !rec_status_is(rec, "queued"))
			continue;
		/* The restart after a rollback is not a deploy: nothing joins it. */
		if (json_is_true(json_object_get(rec, "_rollback_restart")))
			continue;
		if (!str_eq(rec_str(rec, "event"), evs) || !str_eq(rec_str(rec, "app"), app) ||
		    !str_eq(rec_str(rec, "_stack"), stack_rev))
			continue;
		if (rec_str(rec, "layer") && !str_eq(rec_str(rec, "layer"), layer))
			continue;
		/* An operator's request joins only another operator's request: a
		 * queued boot or retry run waits while paused, and a retry would
		 * make the operator's run retry on its own. */
		if ((trig == TRIGGER_CTL) != str_eq(rec_str(rec, "trigger"), "ctl"))
			continue;
		return (long)json_integer_value(json_object_get(rec, "id"));
	}

	/* The queue stays within what state.json's reader accepts. Triggers
	 * coalesce above, so only a flood of distinct requests gets here. */
	{
		size_t queued = 0;
		json_array_foreach(e->runs, i, rec)
			queued += rec_status_is(rec, "queued");
		if (queued >= ENGINE_QUEUE_MAX) {
			log_error("The queue is full (%d runs): not queueing %s", ENGINE_QUEUE_MAX, evs);
			return 0;
		}
	}
	/* Ids are never given twice and never wrap: when they run out (only a
	 * doctored state could get here), nothing more is queued. */
	if (e->next_id < 1 || e->next_id > ENGINE_RUN_ID_MAX) {
		log_error("No run id left (next would be %ld): not queueing %s", e->next_id, evs);
		return 0;
	}
	long id = e->next_id++;
	rec = json_object();
	json_object_set_new(rec, "id", json_integer(id));
	json_object_set_new(rec, "event", json_string(evs));
	json_object_set_new(rec, "layer", json_string_or_null(layer));
	json_object_set_new(rec, "app", json_string_or_null(app));
	json_object_set_new(rec, "trigger", json_string(trigger_to_string(trig)));
	json_object_set_new(rec, "status", json_string("queued"));
	json_object_set_new(rec, "queued", json_time(time_now_usec()));
	json_object_set_new(rec, "started", json_null());
	json_object_set_new(rec, "finished", json_null());
	json_object_set_new(rec, "changed", json_integer(0));
	if (stack_rev)
		json_object_set_new(rec, "_stack", json_string(stack_rev));
	json_array_insert_new(e->runs, 0, rec);
	log_info("Queued run %ld: %s%s%s%s%s (%s)", id, evs, layer ? " layer " : "", str_or_empty(layer),
		 app ? " app " : "", str_or_empty(app), trigger_to_string(trig));
	return id;
}

static long enqueue(struct engine *e, enum event ev, const char *layer, const char *app, enum trigger_kind trig,
		    const char *stack_rev)
{
	return enqueue_ex(e, ev, layer, app, trig, stack_rev, false);
}


/* Marks a queued run to go before the others: an interrupted event runs
 * again before what was queued after it (setup before configure). */
static void queue_to_front(struct engine *e, long id)
{
	json_t *rec = run_find(e, id);
	if (rec)
		json_object_set_new(rec, "_front", json_true());
}

/* Queues an interrupted run again, ahead of the others; a restart after a
 * rollback stays one (queued as a full deploy it would deploy the stack's
 * source again and undo the rollback). */
static void requeue_interrupted(struct engine *e, json_t *rec)
{
	bool restart = json_is_true(json_object_get(rec, "_rollback_restart"));
	long id = enqueue_ex(e, event_from_string(rec_str(rec, "event")), rec_str(rec, "layer"), rec_str(rec, "app"),
			     restart ? TRIGGER_CTL : TRIGGER_RETRY, rec_str(rec, "_stack"), restart);

	if (restart)
		json_object_set_new(run_find(e, id), "_rollback_restart", json_true());
	queue_to_front(e, id);
}

/* The next queued record: interrupted events first, then the oldest, or
 * NULL. Retries and stack changes wait while paused. */
static json_t *next_queued(struct engine *e)
{
	json_t *best = NULL;
	long best_id = 0;
	size_t i;
	json_t *rec;

	json_array_foreach(e->runs, i, rec) {
		if (!rec_status_is(rec, "queued"))
			continue;
		if (e->paused && !str_eq(rec_str(rec, "trigger"), "ctl"))
			continue;
		long id = (long)json_integer_value(json_object_get(rec, "id"));
		bool front = json_is_true(json_object_get(rec, "_front"));
		bool best_front = best && json_is_true(json_object_get(best, "_front"));
		if (!best || (front && !best_front) || (front == best_front && id < best_id)) {
			best = rec;
			best_id = id;
		}
	}
	return best;
}

/* ------------------------------------------------------------ failures */

static int64_t retry_delay_usec(struct engine *e, long count)
{
	int64_t d = (int64_t)e->config->retry_min * 1000000;
	for (long i = 1; i < count && d < (int64_t)e->config->retry_max * 1000000; i++)
		d *= 2;
	if (d > (int64_t)e->config->retry_max * 1000000)
		d = (int64_t)e->config->retry_max * 1000000;
	return d;
}

static void on_retry(uv_timer_t *t);

static void arm_retry(struct engine *e)
{
	int64_t now = time_now_usec(), next = 0;
	const char *k;
	json_t *v;

	json_object_foreach(e->failed, k, v) {
		int64_t at = (int64_t)json_integer_value(json_object_get(v, "next_retry"));
		if (at > 0 && (next == 0 || at < next))
			next = at;
	}
	if (next == 0 || e->stopping) {
		(void)uv_timer_stop(&e->retry);
		return;
	}
	(void)uv_timer_start(&e->retry, on_retry, next > now ? (uint64_t)(next - now) / 1000 : 0, 0);
}

static void on_retry(uv_timer_t *t)
{
	struct engine *e = t->data;
	int64_t now = time_now_usec();
	const char *k;
	json_t *v;
	bool queued = false;

	json_object_foreach(e->failed, k, v) {
		int64_t at = (int64_t)json_integer_value(json_object_get(v, "next_retry"));
		if (at <= 0 || at > now + 1000)
			continue;
		enum event ev = event_from_string(json_string_value(json_object_get(v, "event")));
		if (ev == EVENT_INVALID)
			continue;
		enqueue(e, ev, json_string_value(json_object_get(v, "layer")), json_string_value(json_object_get(v, "app")),
			TRIGGER_RETRY, json_string_value(json_object_get(v, "stack")));
		json_object_set_new(v, "next_retry", json_integer(0));
		queued = true;
	}
	if (queued) {
		engine_persist(e);
		engine_kick(e);
	}
	arm_retry(e);
}

static void record_failure(struct engine *e, const json_t *rec, bool retry)
{
	_cleanup_free_ char *key = fail_key(rec_str(rec, "event"), rec_str(rec, "layer"), rec_str(rec, "app"));
	json_t *f = json_object_get(e->failed, key);
	long count = f ? (long)json_integer_value(json_object_get(f, "count")) + 1 : 1;

	if (!f && json_object_size(e->failed) >= ENGINE_KEYS_MAX) {
		/* Within what state.json's reader accepts: only a stack with
		 * thousands of apps failing at once gets here. */
		log_error("Not recording the failure of run %lld for a retry: %d failures are recorded already",
			  (long long)json_integer_value(json_object_get(rec, "id")), ENGINE_KEYS_MAX);
		return;
	}
	f = json_object();
	json_object_set_new(f, "event", json_string(rec_str(rec, "event")));
	json_object_set_new(f, "layer", json_string_or_null(rec_str(rec, "layer")));
	json_object_set_new(f, "app", json_string_or_null(rec_str(rec, "app")));
	json_object_set_new(f, "run", json_integer(json_integer_value(json_object_get(rec, "id"))));
	json_object_set_new(f, "count", json_integer(count));
	if (rec_str(rec, "_stack"))
		json_object_set_new(f, "stack", json_string(rec_str(rec, "_stack")));
	json_object_set_new(f, "next_retry",
			    json_integer(retry ? time_now_usec() + retry_delay_usec(e, count) : 0));
	json_object_set_new(e->failed, key, f);
	arm_retry(e);
}

/* A success of an event clears the failures it covers: the same event for
 * the same app, and for the same layer unless it ran for every layer. */
static void clear_failures_for(struct engine *e, const json_t *rec)
{
	const char *ev = rec_str(rec, "event"), *layer = rec_str(rec, "layer"), *app = rec_str(rec, "app");
	void *tmp;
	const char *k;
	json_t *v;

	json_object_foreach_safe(e->failed, tmp, k, v) {
		if (!str_eq(json_string_value(json_object_get(v, "event")), ev))
			continue;
		if (!str_eq(json_string_value(json_object_get(v, "app")), app))
			continue;
		if (layer && !str_eq(json_string_value(json_object_get(v, "layer")), layer))
			continue;
		json_object_del(e->failed, k);
	}
	arm_retry(e);
}

/* ----------------------------------------------------------------- runs */

static void active_log(struct active *a, const char *data, size_t len)
{
	while (a->log_fd >= 0 && len > 0) {
		ssize_t w = write(a->log_fd, data, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			log_warn_errno(-errno, "Failed to write the log of run %ld: %m", a->id);
			return;
		}
		data += w;
		len -= (size_t)w;
	}
}

static void active_logf(struct active *a, const char *fmt, ...) _printf_(2, 3);
static void active_logf(struct active *a, const char *fmt, ...)
{
	_cleanup_free_ char *s = NULL;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&s, fmt, ap);
	va_end(ap);
	if (n >= 0)
		active_log(a, s, (size_t)n);
}

static json_t *step_json(const struct step *s, size_t index)
{
	json_t *o = json_object();
	json_object_set_new(o, "index", json_integer((json_int_t)index));
	json_object_set_new(o, "kind", json_string(s->ops->kind));
	/* Texts are cut to RUN_TEXT_MAX: the record must stay within what
	 * its reader accepts; the run log has them whole. */
	json_object_set_new(o, "target", json_text_capped(s->target));
	json_object_set_new(o, "recipe", json_text_capped(s->recipe));
	json_object_set_new(o, "layer", json_text_capped(s->layer));
	json_object_set_new(o, "status", json_string(step_status_to_string(s->status)));
	json_object_set_new(o, "duration_ms", json_real((double)s->duration_us / 1000.0));
	if (s->error)
		json_object_set_new(o, "error", json_text_capped(s->error));
	if (s->message)
		json_object_set_new(o, "message", json_text_capped(s->message));
	return o;
}

static void on_step_start(void *userdata, struct step *s, size_t index)
{
	struct engine *e = userdata;
	struct active *a = e->active;
	json_t *ev;

	log_set_context(a->id, rec_str(a->rec, "event"), s->layer, s->target);
	active_logf(a, "==> [%zu/%zu] %s %s (%s)\n", index + 1, a->plan.n_steps, s->ops->kind, str_or_empty(s->target),
		    str_or_empty(s->recipe));
	ev = json_pack("{s:s, s:I, s:I, s:s, s:s?, s:s?}", "event", "step-started", "run", (json_int_t)a->id, "index",
		       (json_int_t)index, "kind", s->ops->kind, "target", s->target, "recipe", s->recipe);
	emit(e, ev);
}

static void on_output(void *userdata, struct step *s, const char *data, size_t len)
{
	struct engine *e = userdata;
	struct active *a = e->active;

	active_log(a, data, len);
	if (e->watchers) {
		json_t *ev = json_object();
		json_object_set_new(ev, "event", json_string("output"));
		json_object_set_new(ev, "run", json_integer(a->id));
		json_object_set_new(ev, "data", proto_string_lossy(data, len));
		emit(e, ev);
	}
}

static void on_step_done(void *userdata, struct step *s, size_t index)
{
	struct engine *e = userdata;
	struct active *a = e->active;
	json_t *steps = json_object_get(a->rec, "steps"), *ev;

	json_object_del(a->rec, "_pgid");
	json_object_del(a->rec, "_pgid_start");
	if (s->status == STEP_CHANGED)
		a->changed++;
	{
		/* The record keeps the first steps, within the bounds its reader
		 * checks (RUN_STEPS_MAX, RUN_STEPS_MAX_BYTES); the rest are
		 * counted. The run log has them all. */
		json_t *sj = step_json(s, index);
		char *d = json_dumps(sj, JSON_COMPACT);
		size_t n = d ? strlen(d) + 1 : 0;
		free(d);
		if (n > 0 && json_array_size(steps) < RUN_STEPS_MAX && a->steps_bytes + n <= RUN_STEPS_MAX_BYTES) {
			a->steps_bytes += n;
			json_array_append_new(steps, sj);
		} else {
			json_decref(sj);
			a->steps_omitted++;
			json_object_set_new(a->rec, "steps_omitted", json_integer((json_int_t)a->steps_omitted));
		}
	}
	active_logf(a, "<== %s%s%s (%.1f ms)\n", step_status_to_string(s->status), s->error || s->message ? ": " : "",
		    s->error ? s->error : str_or_empty(s->message), (double)s->duration_us / 1000.0);
	if (s->status == STEP_FAILED)
		log_error("Step %s %s failed: %s", s->ops->kind, str_or_empty(s->target), str_or_empty(s->error));
	ev = step_json(s, index);
	json_object_set_new(ev, "event", json_string("step-finished"));
	json_object_set_new(ev, "run", json_integer(a->id));
	emit(e, ev);
}

static void on_spawn(void *userdata, struct step *s, int pgid)
{
	struct engine *e = userdata;
	uint64_t start;

	/* The start time (field 22 of /proc/PID/stat) tells this group's
	 * leader from a later process that reused its pid. */
	if (exec_proc_stat(pgid, NULL, &start) < 0 || start == 0 || start > INT64_MAX)
		return;
	json_object_set_new(e->active->rec, "_pgid", json_integer(pgid));
	json_object_set_new(e->active->rec, "_pgid_start", json_integer((json_int_t)start));
	/* If we are killed now, the next start ends this process group. */
	(void)engine_persist(e);
}

/* A run found "running" at start had a step's process group perhaps still
 * alive, orphaned by our death: end it before the event runs again, so two
 * copies of a recipe never run at once. The numbers come from state.json:
 * exec_kill_recorded_group checks them (range, not our group, same leader). */
static void kill_orphan(const json_t *rec)
{
	json_t *pg = json_object_get(rec, "_pgid"), *st = json_object_get(rec, "_pgid_start");
	long long id = (long long)json_integer_value(json_object_get(rec, "id"));
	int r;

	if (!pg)
		return;
	if (!json_is_integer(pg) || !json_is_integer(st)) {
		log_warn("Run %lld: the recorded process group is not a number; not signalling anything", id);
		return;
	}
	r = exec_kill_recorded_group(json_integer_value(pg), json_integer_value(st), SIGKILL);
	if (r == 0)
		log_warn("Killed process group %lld left running by the interrupted run %lld",
			 (long long)json_integer_value(pg), id);
	else if (r == -EINVAL || r == -EPERM)
		log_warn("Run %lld: recorded process group %lld is %s; not signalling it", id,
			 (long long)json_integer_value(pg), r == -EPERM ? "agentd's own" : "out of range");
	else if (r != -ESRCH)
		log_warn_errno(r, "Failed to kill process group %lld of run %lld: %m", (long long)json_integer_value(pg), id);
}

static bool input_hash_get(void *userdata, const char *key, uint64_t *ret)
{
	struct engine *e = userdata;
	const char *v = json_string_value(json_object_get(e->input_hashes, key));
	if (!v)
		return false;
	*ret = strtoull(v, NULL, 16);
	return true;
}

static void input_hash_set(void *userdata, const char *key, uint64_t hash)
{
	struct engine *e = userdata;
	char hex[17];

	/* Within what state.json's reader accepts: a hash not kept only means
	 * its step runs again next time. */
	if (!json_object_get(e->input_hashes, key) &&
	    (strlen(key) > ENGINE_KEY_MAX_BYTES || json_object_size(e->input_hashes) >= ENGINE_KEYS_MAX)) {
		log_debug("Not keeping the input hash of %s: over the bounds of state.json", key);
		return;
	}
	snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)hash);
	json_object_set_new(e->input_hashes, key, json_string(hex));
}

/* Owed work of guarded steps lives in input_hashes under "pending:" keys. */
static bool owed_get(void *userdata, const char *key)
{
	struct engine *e = userdata;
	_cleanup_free_ char *k = xasprintf("pending:%s", key);

	return json_object_get(e->input_hashes, k) != NULL;
}

static void owed_set(void *userdata, const char *key, bool owed)
{
	struct engine *e = userdata;
	_cleanup_free_ char *k = xasprintf("pending:%s", key);

	/* Kept only while owed, and saved at once, so that a kill before the
	 * reload does not lose it. */
	if (owed && (json_object_get(e->input_hashes, k) ||
		     (strlen(k) <= ENGINE_KEY_MAX_BYTES && json_object_size(e->input_hashes) < ENGINE_KEYS_MAX)))
		json_object_set_new(e->input_hashes, k, json_string("0000000000000001"));
	else if (owed)
		log_warn("Cannot record the work owed by %s: over the bounds of state.json", key);
	else
		json_object_del(e->input_hashes, k);
	engine_persist(e);
}

static void on_timeout_closed(uv_handle_t *h)
{
	struct active *a = h->data;
	free(a);
}

static void engine_finish_run(struct engine *e, const char *status, const char *error)
{
	struct active *a = e->active;
	json_t *rec = a->rec;
	bool interrupted = strcmp(status, "interrupted") == 0;
	bool failed = strcmp(status, "failed") == 0;
	char ts[40];

	now_rfc3339(ts, sizeof(ts));
	json_object_set_new(rec, "status", json_string(status));
	json_object_set_new(rec, "finished", json_string(ts));
	json_object_set_new(rec, "changed", json_integer((json_int_t)a->changed));
	json_object_set_new(rec, "duration_ms",
			    json_real((double)(time_monotonic_usec() - a->started_mono) / 1000.0));
	if (error)
		json_object_set_new(rec, "error", json_text_capped(error));
	{
		/* The result line, last in the log (log_dir, maybe another disk):
		 * if state.json cannot take it before we exit, the next start
		 * takes the result from here (run_log_result). One line: the
		 * error's newlines become spaces. */
		_cleanup_free_ char *err1 = xstrdup(str_or_empty(json_string_value(json_object_get(rec, "error"))));
		for (char *c = err1; *c; c++)
			if (*c == '\n' || *c == '\r')
				*c = ' ';
		active_logf(a, "=== run %ld finished: key=%016llx status=%s changed=%zu finished=%s%s%s\n", a->id,
			    (unsigned long long)a->log_key, status, a->changed, ts, error ? " error=" : "", error ? err1 : "");
	}

	if (failed) {
		/* Runs asked for by an operator are not retried on their own. */
		bool retry = !str_eq(rec_str(rec, "trigger"), "ctl") && !a->no_retry;
		record_failure(e, rec, retry);
		log_error("Run %ld (%s) failed: %s", a->id, rec_str(rec, "event"), str_or_empty(error));
	} else if (interrupted) {
		/* Stopped by SIGTERM: run the event again on the next start. */
		json_object_set_new(rec, "_requeued", json_true());
		requeue_interrupted(e, rec);
		log_warn("Run %ld (%s) interrupted; queued again", a->id, rec_str(rec, "event"));
	} else if (json_is_true(json_object_get(rec, "_rollback_restart"))) {
		/* Only the services restarted: no deploy succeeded, and a failed
		 * one the operator rolled back from stays failed. */
		log_info("Run %ld (restart after rollback) succeeded", a->id);
	} else {
		_cleanup_free_ char *k = xasprintf("%s/%s", rec_str(rec, "event"), str_or_empty(rec_str(rec, "layer")));
		clear_failures_for(e, rec);
		if (json_object_get(e->last_success, k) || json_object_size(e->last_success) < ENGINE_KEYS_MAX)
			json_object_set_new(e->last_success, k,
				    json_pack("{s:s, s:I, s:s}", "revision", a->stack->revision, "run", (json_int_t)a->id,
					      "finished", ts));
		log_info("Run %ld (%s) succeeded: %zu of %zu steps changed", a->id, rec_str(rec, "event"), a->changed,
			 a->plan.n_steps);
	}
	log_set_context(0, NULL, NULL, NULL);

	json_t *ev = json_pack("{s:s, s:I, s:s, s:I}", "event", "run-finished", "run", (json_int_t)a->id, "status",
			       status, "changed", (json_int_t)a->changed);
	if (a->log_fd >= 0)
		(void)close(a->log_fd);
	a->log_fd = -1;
	plan_free(&a->plan);
	stack_unref(a->stack);
	e->active = NULL;
	uv_timer_stop(&a->timeout);
	uv_close((uv_handle_t *)&a->timeout, on_timeout_closed);

	/* The steps go to the run's own file: memory and state.json stay
	 * small however many runs the history keeps. */
	{
		_cleanup_free_ char *path = run_file_path(e, json_integer_value(json_object_get(rec, "id")));
		json_t *full = json_deep_copy(rec);
		json_object_del(full, "_requeued");
		char *data = json_dumps(full, JSON_COMPACT);
		if (data && strlen(data) > RUN_FILE_MAX_BYTES) {
			/* Not expected (on_step_done keeps the steps within
			 * bounds), but the reader would refuse it: the record
			 * without its steps, then. */
			free(data);
			json_object_set_new(full, "steps_omitted",
					    json_integer((json_int_t)json_array_size(json_object_get(full, "steps")) +
							 json_integer_value(json_object_get(full, "steps_omitted"))));
			json_object_set_new(full, "steps", json_array());
			data = json_dumps(full, JSON_COMPACT);
		}
		int r2 = data ? file_write_atomic(path, data, strlen(data), 0600, (uid_t)-1, (gid_t)-1) : -ENOMEM;
		if (r2 < 0) {
			/* The steps stay in the record, and so in state.json; but
			 * only this run's: the bounds of state.json allow the
			 * steps of one finished run beside the running one. */
			size_t j;
			json_t *other;
			log_warn_errno(r2, "Failed to save the steps of run %s: %m", path);
			json_array_foreach(e->runs, j, other)
				if (other != rec && json_object_get(other, "steps") && !rec_status_is(other, "running") &&
				    !rec_status_is(other, "queued")) {
					json_object_del(other, "steps");
					json_object_set_new(other, "steps_error",
							    json_string("its steps were lost: state_dir was full"));
				}
		} else
			json_object_del(rec, "steps");
		free(data);
		json_decref(full);
	}
	trim_history(e);
	gc_stacks(e);
	engine_persist(e);
	notify_status(e);
	emit(e, ev);

	if (e->stopping) {
		engine_stop_finish(e);
		return;
	}
	engine_kick(e);
}

static void on_plan_done(void *userdata, bool failed)
{
	struct engine *e = userdata;
	struct active *a = e->active;
	_cleanup_free_ char *error = NULL;

	a->x = NULL;
	if (a->timed_out)
		error = xasprintf("run timed out after %ld s", e->config->run_timeout);
	else if (failed) {
		for (size_t i = 0; i < a->plan.n_steps; i++) {
			struct step *s = a->plan.steps[i];
			if (s->status == STEP_FAILED) {
				error = xasprintf("step %zu (%s %s) failed: %s", i + 1, s->ops->kind, str_or_empty(s->target),
						  str_or_empty(s->error));
				break;
			}
		}
	}
	if (e->stopping && failed && (!error || a->killed))
		engine_finish_run(e, "interrupted", a->killed ? "agentd was stopped during the run; its step was terminated"
							      : "agentd was stopped during the run");
	else
		engine_finish_run(e, failed || a->timed_out ? "failed" : "success", error);
}

static void on_run_timeout(uv_timer_t *t)
{
	struct active *a = t->data;
	a->timed_out = true;
	if (a->x)
		plan_execute_cancel(a->x, true);
}

/* Builds the plan for (ev, layer, app) against s into plan. */
static int build_plan(struct engine *e, struct stack *s, enum event ev, const char *layer, const char *app, long run_id,
		      struct plan *plan, char **ret_error)
{
	const char *const *layers;
	size_t n_layers;
	const char *one[1];
	/* For an undeploy: what the stack not planned against still places here. */
	const struct stack *other = s != e->current ? e->current : e->applied;

	plan_init(plan, e->config->root);
	if (layer) {
		if (!stack_has_self_layer(s, layer) && !stack_layer_find(s, layer)) {
			*ret_error = xasprintf("layer \"%s\" is not in the stack", layer);
			return -ENOENT;
		}
		if (!stack_has_self_layer(s, layer)) {
			*ret_error = xasprintf("instance \"%s\" is not a member of layer \"%s\"", s->instance, layer);
			return -ENOENT;
		}
		one[0] = layer;
		layers = one;
		n_layers = 1;
	} else {
		layers = (const char *const *)s->self_layers;
		n_layers = s->n_self_layers;
	}
	if (app && !stack_app_find(s, app)) {
		*ret_error = xasprintf("app \"%s\" is not in the stack's deploy section", app);
		return -ENOENT;
	}

	/* Family hooks before the layers (EBS volumes at setup and configure). */
	{
		struct recipe_ctx ctx = {
			.stack = s, .config = e->config, .event = ev, .layer = NULL, .app = app, .run_id = run_id,
			.other_stack = other,
		};
		_cleanup_free_ char *err = NULL;
		int r = recipes_plan_before(&ctx, plan, &err);
		if (r < 0) {
			*ret_error = xasprintf("planning %s: %s", event_to_string(ev), err ? err : strerror(-r));
			return r;
		}
	}

	for (size_t i = 0; i < n_layers; i++) {
		size_t n_names = 0;
		_cleanup_free_ const char **names = recipes_layer_recipes(s, layers[i], ev, &n_names);
		for (size_t j = 0; j < n_names; j++) {
			struct recipe_ctx ctx = {
				.stack = s,
				.config = e->config,
				.event = ev,
				.layer = layers[i],
				.app = app,
				.run_id = run_id,
				.name = names[j],
				.other_stack = other,
			};
			_cleanup_free_ char *err = NULL;
			int r = recipe_plan(&ctx, plan, &err);
			if (r < 0) {
				*ret_error = xasprintf("planning recipe %s for layer %s: %s", names[j], layers[i],
						       err ? err : strerror(-r));
				return r;
			}
		}
		/* Family hooks after the layer's recipes (unmounts at shutdown). */
		struct recipe_ctx ctx = {
			.stack = s, .config = e->config, .event = ev, .layer = layers[i], .app = app, .run_id = run_id,
			.other_stack = other,
		};
		_cleanup_free_ char *err = NULL;
		int r = recipes_plan_after_layer(&ctx, plan, &err);
		if (r < 0) {
			*ret_error = xasprintf("planning layer %s: %s", layers[i], err ? err : strerror(-r));
			return r;
		}
	}
	return 0;
}

/* Opens a run's log for writing: never through a symlink, never blocking on
 * a FIFO or device planted in its place (O_NONBLOCK), a regular file only.
 * Returns the fd or -1 (logged: the run goes on without its log file). */
static int run_log_open(const char *path)
{
	struct stat st;
	int fd;

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY, 0640);
	if (fd < 0) {
		log_warn_errno(-errno, "Failed to open %s: %m", path);
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		log_warn("Not writing the run log %s: not a regular file", path);
		(void)close(fd);
		return -1;
	}
	return fd;
}

static void engine_start_run(struct engine *e, json_t *rec)
{
	struct active *a;
	_cleanup_free_ char *log_path = NULL, *error = NULL;
	const char *srev = rec_str(rec, "_stack");
	enum event ev = event_from_string(rec_str(rec, "event"));
	char ts[40];
	int r;

	/* The run is on disk as "running" (with next_run_id past it) before
	 * anything runs: its id is taken for good, and a restart knows it ran.
	 * While state_dir takes no writes, the run waits in the queue; the
	 * retry of the write starts it (on_state_retry). */
	now_rfc3339(ts, sizeof(ts));
	json_object_set_new(rec, "status", json_string("running"));
	json_object_set_new(rec, "started", json_string(ts));
	if (engine_persist(e) < 0) {
		json_object_set_new(rec, "status", json_string("queued"));
		json_object_set_new(rec, "started", json_null());
		log_warn("Run %lld waits: its start cannot be recorded in %s",
			 (long long)json_integer_value(json_object_get(rec, "id")), e->config->state_dir);
		return;
	}

	a = xcalloc(1, sizeof(*a));
	a->rec = rec;
	a->id = (long)json_integer_value(json_object_get(rec, "id"));
	a->log_fd = -1;
	a->started_mono = time_monotonic_usec();
	if (srev && (!e->applied || strcmp(srev, e->applied->revision) != 0) &&
	    (!e->current || strcmp(srev, e->current->revision) != 0))
		a->stack = load_stack(e, srev);
	else if (srev && e->applied && strcmp(srev, e->applied->revision) == 0)
		a->stack = stack_ref(e->applied);
	else
		a->stack = stack_ref(e->current);
	(void)uv_timer_init(e->loop, &a->timeout);
	a->timeout.data = a;
	e->active = a;

	json_object_set_new(rec, "steps", json_array());

	log_path = engine_run_log_path(e, a->id);
	a->log_fd = run_log_open(log_path);
	if (getrandom(&a->log_key, sizeof(a->log_key), GRND_NONBLOCK) != sizeof(a->log_key))
		a->log_key = ((uint64_t)random() << 32) ^ (uint64_t)random() ^ (uint64_t)time_now_usec();
	active_logf(a, "=== run %ld: %s layer=%s app=%s trigger=%s stack=%s started %s key=%016llx\n", a->id,
		    rec_str(rec, "event"), rec_str(rec, "layer") ? rec_str(rec, "layer") : "(all)",
		    str_or_empty(rec_str(rec, "app")), rec_str(rec, "trigger"), a->stack ? a->stack->revision : "-", ts,
		    (unsigned long long)a->log_key);

	log_set_context(a->id, rec_str(rec, "event"), rec_str(rec, "layer"), NULL);
	log_info("Run %ld started: %s (%s)", a->id, rec_str(rec, "event"), rec_str(rec, "trigger"));
	notify_status(e);
	emit(e, json_pack("{s:s, s:I, s:s, s:s?, s:s?, s:s}", "event", "run-started", "run", (json_int_t)a->id, "kind",
			  rec_str(rec, "event"), "layer", rec_str(rec, "layer"), "app", rec_str(rec, "app"), "trigger",
			  rec_str(rec, "trigger")));

	if (!a->stack) {
		plan_init(&a->plan, e->config->root);
		a->no_retry = true;
		engine_finish_run(e, "failed", "the stack this run needs is no longer available");
		return;
	}
	json_object_set_new(rec, "stack_revision", json_string(a->stack->revision));
	if (json_is_true(json_object_get(rec, "_rollback_restart"))) {
		/* The restart that follows `agentctl rollback APP`: only the app's services. */
		plan_init(&a->plan, e->config->root);
		r = apps_plan_restart(a->stack, e->config, rec_str(rec, "app"), &a->plan, &error);
	} else
		r = build_plan(e, a->stack, ev, rec_str(rec, "layer"), rec_str(rec, "app"), a->id, &a->plan, &error);
	if (r < 0) {
		/* A layer or app that is not in the stack will not appear by retrying. */
		a->no_retry = r == -ENOENT;
		engine_finish_run(e, "failed", error);
		return;
	}

	struct step_env env = {
		.loop = e->loop,
		.http = e->http,
		.root = e->config->root,
		.run_id = a->id,
		.output_max = (size_t)e->config->step_output_max,
		.memory = &e->memory,
	};
	static const struct plan_exec_cbs cbs = {
		.on_step_start = on_step_start,
		.on_output = on_output,
		.on_step_done = on_step_done,
		.on_done = on_plan_done,
		.on_spawn = on_spawn,
	};
	(void)uv_timer_start(&a->timeout, on_run_timeout, (uint64_t)e->config->run_timeout * 1000, 0);
	r = plan_execute(e->loop, &a->plan, &env, &cbs, e, &a->x);
	if (r < 0) {
		_cleanup_free_ char *msg = xasprintf("cannot execute the plan: %s", strerror(-r));
		engine_finish_run(e, "failed", msg);
	}
}

static void on_kick(uv_timer_t *t)
{
	struct engine *e = t->data;
	json_t *rec;

	if (e->active || e->stopping || !e->current)
		return;
	rec = next_queued(e);
	if (rec)
		engine_start_run(e, rec);
}

/* Starts the next run from a fresh loop iteration, never from inside a
 * callback of the run that just ended. */
static void engine_kick(struct engine *e)
{
	if (!e->stopping)
		(void)uv_timer_start(&e->kick, on_kick, 0, 0);
}

/* ---------------------------------------------------------------- stacks */

static void set_source_error(struct engine *e, const char *msg, const char *path)
{
	free(e->source_error);
	free(e->source_error_path);
	e->source_error = msg ? xstrdup(msg) : NULL;
	e->source_error_path = path ? xstrdup(path) : NULL;
	e->source_error_fetch = false;
}

/* Whether a queued run or a failure names a layer or app the current stack
 * no longer has (runs tied to an older stack keep theirs). */
static bool vanished(const struct engine *e, const json_t *o)
{
	const char *layer = json_string_value(json_object_get(o, "layer"));
	const char *app = json_string_value(json_object_get(o, "app"));

	if (json_object_get(o, "_stack") || json_object_get(o, "stack"))
		return false;
	return (layer && !stack_has_self_layer(e->current, layer)) || (app && !stack_app_find(e->current, app));
}

/* Queued runs for a layer or app that is gone cannot run: they end here as
 * cancelled (status failed, not retried), and failures of such runs are
 * forgotten, so that nothing retries forever. */
static void drop_vanished(struct engine *e)
{
	size_t i;
	json_t *rec;
	void *tmp;
	const char *k;

	json_array_foreach(e->runs, i, rec) {
		char ts[40];
		if (!rec_status_is(rec, "queued") || !vanished(e, rec))
			continue;
		now_rfc3339(ts, sizeof(ts));
		json_object_set_new(rec, "status", json_string("failed"));
		json_object_set_new(rec, "finished", json_string(ts));
		json_object_set_new(rec, "error", json_string("cancelled: its layer or app is no longer in the stack"));
		log_info("Run %lld cancelled: its layer or app is no longer in the stack",
			 (long long)json_integer_value(json_object_get(rec, "id")));
		emit(e, json_pack("{s:s, s:O, s:s, s:i}", "event", "run-finished", "run", json_object_get(rec, "id"),
				  "status", "failed", "changed", 0));
	}
	json_object_foreach_safe(e->failed, tmp, k, rec)
		if (vanished(e, rec))
			json_object_del(e->failed, k);
	arm_retry(e);
}

/* Queues what it takes to go from the applied stack to the current one. */
static void engine_apply_current(struct engine *e)
{
	struct trigger *t = NULL;
	size_t n = 0;
	int r;

	if (e->paused || !e->current)
		return;
	if (e->applied && strcmp(e->applied->revision, e->current->revision) == 0)
		return;
	r = stack_diff(e->first_start ? NULL : e->applied, e->current, &t, &n);
	if (r < 0) {
		log_error_errno(r, "Failed to compare stacks: %m");
		return;
	}
	for (size_t i = 0; i < n; i++)
		enqueue(e, t[i].event, t[i].layer, t[i].app, e->first_start ? TRIGGER_BOOT : TRIGGER_STACK_CHANGE,
			t[i].use_old_stack && e->applied ? e->applied->revision : NULL);
	triggers_free(t, n);
	drop_vanished(e);
	stack_unref(e->applied);
	e->applied = stack_ref(e->current);
	e->first_start = false;
	gc_stacks(e);
	engine_persist(e);
	engine_kick(e);
}

static void on_document(void *userdata, const char *data, size_t len)
{
	struct engine *e = userdata;
	struct stack_error err = { 0 };
	struct stack *s = NULL;
	uint64_t h = hash_fnv1a64(data, len, HASH_FNV_SEED);
	int r;

	if (e->have_raw_hash && h == e->last_raw_hash && !e->source_error)
		return;
	e->last_raw_hash = h;
	e->have_raw_hash = true;

	r = recipes_stack_load(data, len, e->instance, &s, &err);
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
	if ((r = save_stack(e, s)) < 0) {
		/* Without the stack on disk a restart could not finish what we
		 * queue; better to wait until state_dir takes writes again, and
		 * then fetch the document again (on_state_retry). */
		_cleanup_free_ char *what = stack_file_path(e, s->revision);
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
	if (e->paused)
		engine_persist(e);
	engine_apply_current(e);
}

static void on_source_error(void *userdata, const char *message)
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
}

/* The source's last document is still current (HTTP 304). An error of
 * fetching is over if that document was accepted; a rejected one must be
 * parsed again to say why (returns false: the source sends it again). */
static bool on_source_unchanged(void *userdata)
{
	struct engine *e = userdata;

	if (!e->source_error_fetch)
		return true; /* no error, or the verdict on that very document */
	if (!e->raw_ok)
		return false;
	log_info("Stack source: answering again; the stack is unchanged");
	set_source_error(e, NULL, NULL);
	return true;
}

/* ------------------------------------------------------------- lifecycle */

/* The pid of the process holding a flock() on the inode (dev, ino), from
 * /proc/locks, or 0 when none is found. It names the holder even when
 * state_dir/lock, which holds the pid as text, was deleted. */
static long lock_holder_pid(dev_t dev, ino_t ino)
{
	_cleanup_free_ char *data = NULL;
	char want[64];
	long pid = 0;

	snprintf(want, sizeof(want), " %02x:%02x:%llu ", major(dev), minor(dev), (unsigned long long)ino);
	if (file_read_all("/proc/locks", 4u << 20, &data, NULL) < 0)
		return 0;
	for (char *line = data, *next; line && *line; line = next) {
		char *p, num[24];
		size_t n;
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		/* "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; a blocked
		 * waiter's line starts with "1: ->" and is skipped. */
		if (strstr(line, "->") || !strstr(line, " FLOCK ") || !(p = strstr(line, want)))
			continue;
		/* The pid is the word before the device. */
		while (p > line && p[-1] == ' ')
			p--;
		char *w = p;
		while (w > line && w[-1] != ' ')
			w--;
		n = (size_t)(p - w);
		if (n == 0 || n >= sizeof(num))
			continue;
		memcpy(num, w, n);
		num[n] = '\0';
		if (parse_long(num, 1, INT32_MAX, &pid) == 0)
			break;
		pid = 0;
	}
	return pid;
}

int engine_lock_state_dir(const char *state_dir, char **ret_error)
{
	_cleanup_free_ char *path = xasprintf("%s/lock", state_dir), *data = NULL;
	char buf[32];
	struct stat st;
	ssize_t n;
	int dfd, fd, r;

	if ((r = mkdir_p(state_dir, 0700)) < 0) {
		*ret_error = xasprintf("cannot create %s: %s", state_dir, strerror(-r));
		return r;
	}
	/* The lock is on the directory itself: a file in it can be deleted or
	 * swapped (and a second agentd would then lock a new file), the
	 * directory we opened cannot. flock() belongs to this open file
	 * description alone, is not passed on across exec (O_CLOEXEC), and
	 * the kernel drops it when we exit, however we exit. A symlink to
	 * state_dir or another spelling of it names the same inode. */
	dfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOCTTY);
	if (dfd < 0) {
		r = -errno;
		*ret_error = xasprintf("cannot open %s: %s", state_dir, strerror(-r));
		return r;
	}
	if (flock(dfd, LOCK_EX | LOCK_NB) < 0) {
		long pid = 0;
		r = -errno;
		if (r != -EWOULDBLOCK) {
			*ret_error = xasprintf("cannot lock %s: %s", state_dir, strerror(-r));
			(void)close(dfd);
			return r;
		}
		/* Held: name the holder, touching nothing (no O_CREAT here). */
		if (file_read_regular(AT_FDCWD, path, 0, sizeof(buf) - 1, &data, NULL) == 0) {
			data[strcspn(data, "\n")] = '\0';
			if (parse_long(data, 1, INT32_MAX, &pid) < 0)
				pid = 0;
		}
		if (pid == 0 && fstat(dfd, &st) == 0)
			pid = lock_holder_pid(st.st_dev, st.st_ino);
		if (pid > 0)
			*ret_error = xasprintf("%s is in use by another agentd (pid %ld)", state_dir, pid);
		else
			*ret_error = xasprintf("%s is in use by another agentd", state_dir);
		(void)close(dfd);
		return -EBUSY;
	}
	/* Ours. The pid goes into state_dir/lock for the message of a second
	 * agentd; it is not the lock, so nothing about it stops us. A
	 * directory, FIFO or symlink in its place (O_NOFOLLOW, O_NONBLOCK: no
	 * hang) is moved aside once; a full disk only costs the pid. */
	for (int attempt = 0;; attempt++) {
		fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY, 0600);
		if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
			break;
		r = fd < 0 ? -errno : -EBADFD;
		if (fd >= 0)
			(void)close(fd);
		fd = -1;
		if (attempt > 0 || r == -ENOSPC || r == -EDQUOT || r == -EROFS) {
			log_warn_errno(r, "Cannot record our pid in %s: %m", path);
			break;
		}
		_cleanup_free_ char *bad = xasprintf("%s.corrupt", path);
		if (rename(path, bad) < 0) {
			log_warn_errno(-errno, "Cannot record our pid in %s, nor move it aside: %m", path);
			break;
		}
		log_error("Moved %s (not a regular file) aside to %s", path, bad);
	}
	if (fd >= 0) {
		n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
		if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)n, 0) != n)
			log_warn_errno(-errno, "Failed to write our pid into %s: %m", path);
		(void)close(fd);
	}
	return dfd;
}

/* The value of " name=VALUE" in line (up to the next space, or to the end
 * of the line when last), copied into out (size n), or false. */
static bool log_field(const char *line, const char *name, bool last, char *out, size_t n)
{
	_cleanup_free_ char *pat = xasprintf(" %s=", name);
	const char *p = strstr(line, pat), *end;

	if (!p)
		return false;
	p += strlen(pat);
	end = last ? p + strlen(p) : p + strcspn(p, " ");
	if ((size_t)(end - p) >= n)
		return false;
	memcpy(out, p, (size_t)(end - p));
	out[end - p] = '\0';
	return true;
}

/* A run recorded as "running" whose log ends with its result line: the run
 * finished, and state.json could not be written before agentd went (a full
 * disk). Takes status, finished, changed and error from that line into rec
 * and returns true; false when the log has no result (the run was cut
 * short). The line counts only as the last line of the log and with the key
 * of the log's first line, which a step's output cannot know. */
static bool run_log_result(struct engine *e, json_t *rec)
{
	long id = (long)json_integer_value(json_object_get(rec, "id"));
	_cleanup_free_ char *path = engine_run_log_path(e, id), *prefix = NULL;
	_cleanup_close_ int fd = -1;
	char head[4096], tail[RUN_TEXT_MAX * 2 + 1024], key[24], want_key[24], status[16], changed[16], finished[48];
	char *line, *err;
	struct stat st;
	ssize_t n;
	off_t off;
	long ch;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size < 2)
		return false;
	n = pread(fd, head, sizeof(head) - 1, 0);
	if (n <= 0)
		return false;
	head[n] = '\0';
	head[strcspn(head, "\n")] = '\0';
	if (!log_field(head, "key", true, want_key, sizeof(want_key)))
		return false;
	off = st.st_size > (off_t)(sizeof(tail) - 1) ? st.st_size - (off_t)(sizeof(tail) - 1) : 0;
	n = pread(fd, tail, sizeof(tail) - 1, off);
	if (n < 2 || tail[n - 1] != '\n')
		return false;
	tail[n - 1] = '\0';
	line = strrchr(tail, '\n');
	line = line ? line + 1 : (off == 0 ? tail : NULL);
	if (!line)
		return false;
	prefix = xasprintf("=== run %ld finished:", id);
	if (strncmp(line, prefix, strlen(prefix)) != 0 || memchr(line, '\0', (size_t)(tail + n - 1 - line)))
		return false;
	/* The error is last and may hold anything: cut it off before reading
	 * the other fields. */
	err = strstr(line, " error=");
	if (err)
		*err = '\0';
	if (!log_field(line, "key", false, key, sizeof(key)) || strcmp(key, want_key) != 0 ||
	    !log_field(line, "status", false, status, sizeof(status)) ||
	    !log_field(line, "changed", false, changed, sizeof(changed)) ||
	    !log_field(line, "finished", false, finished, sizeof(finished)) ||
	    parse_long(changed, 0, INT32_MAX, &ch) < 0 || (strcmp(status, "success") != 0 && strcmp(status, "failed") != 0))
		return false;
	for (const char *c = finished; *c; c++)
		if (!strchr("0123456789-:.TZ+", *c))
			return false;
	json_object_set_new(rec, "status", json_string(status));
	json_object_set_new(rec, "finished", json_string(finished));
	json_object_set_new(rec, "changed", json_integer(ch));
	if (err)
		json_object_set_new(rec, "error", json_text_capped(err + strlen(" error=")));
	return true;
}

int engine_new(uv_loop_t *loop, const struct config *config, struct engine **ret)
{
	struct engine *e = xcalloc(1, sizeof(*e));
	char host[256];

	e->loop = loop;
	e->memory = (struct step_memory){ input_hash_get, input_hash_set, owed_get, owed_set, e };
	e->config = config;
	e->source_url = source_url_redact(config->source);
	e->runs = json_array();
	e->failed = json_object();
	e->input_hashes = json_object();
	e->last_success = json_object();
	e->next_id = 1;
	e->start_mono = time_monotonic_usec();
	if (config->instance)
		e->instance = xstrdup(config->instance);
	else if (gethostname(host, sizeof(host)) == 0) {
		host[sizeof(host) - 1] = '\0';
		e->instance = xstrdup(host);
	} else
		e->instance = xstrdup("localhost");
	(void)uv_timer_init(loop, &e->kick);
	(void)uv_timer_init(loop, &e->retry);
	(void)uv_timer_init(loop, &e->state_retry);
	e->kick.data = e->retry.data = e->state_retry.data = e;
	*ret = e;
	return 0;
}

int engine_start(struct engine *e)
{
	_cleanup_free_ char *stacks = state_path(e, "stacks"), *runs = xasprintf("%s/runs", e->config->log_dir);
	_cleanup_free_ char *run_files = state_path(e, "runs");
	_cleanup_free_ char *err = NULL;
	size_t i;
	json_t *rec;
	bool changed = false;
	int r;

	if ((r = mkdir_p(stacks, 0700)) < 0)
		return log_error_errno(r, "Failed to create %s: %m", stacks);
	if ((r = mkdir_p(runs, 0750)) < 0)
		return log_error_errno(r, "Failed to create %s: %m", runs);
	if ((r = mkdir_p(run_files, 0700)) < 0)
		return log_error_errno(r, "Failed to create %s: %m", run_files);

	engine_load_state(e);
	engine_fix_next_id(e);
	/* A state file may hold more finished runs than history allows. */
	trim_history(e);

	/* A run that was running when we died did not finish: say so, and run
	 * its event again. */
	json_array_foreach(e->runs, i, rec) {
		if (!rec_status_is(rec, "running"))
			continue;
		char ts[40];
		if (run_log_result(e, rec)) {
			/* It finished; only its record was not written. */
			_cleanup_free_ char *steps = run_file_path(e, (long)json_integer_value(json_object_get(rec, "id")));
			struct stat st;
			json_object_del(rec, "_pgid");
			json_object_del(rec, "_pgid_start");
			if (lstat(steps, &st) == 0 && S_ISREG(st.st_mode))
				json_object_del(rec, "steps");
			if (rec_status_is(rec, "failed"))
				record_failure(e, rec, !str_eq(rec_str(rec, "trigger"), "ctl"));
			else if (!json_is_true(json_object_get(rec, "_rollback_restart"))) {
				_cleanup_free_ char *k = xasprintf("%s/%s", rec_str(rec, "event"), str_or_empty(rec_str(rec, "layer")));
				const char *rev = rec_str(rec, "stack_revision") ?: rec_str(rec, "_stack");
				clear_failures_for(e, rec);
				if (rev && revision_is_valid(rev))
					json_object_set_new(e->last_success, k,
							    json_pack("{s:s, s:I, s:s}", "revision", rev, "run",
								      json_integer_value(json_object_get(rec, "id")), "finished",
								      rec_str(rec, "finished")));
			}
			log_warn("Run %lld (%s) finished (%s) but was still recorded as running: its result was taken "
				 "from its log", (long long)json_integer_value(json_object_get(rec, "id")),
				 rec_str(rec, "event"), rec_str(rec, "status"));
			changed = true;
			continue;
		}
		kill_orphan(rec);
		json_object_del(rec, "_pgid");
		json_object_del(rec, "_pgid_start");
		now_rfc3339(ts, sizeof(ts));
		json_object_set_new(rec, "status", json_string("interrupted"));
		json_object_set_new(rec, "finished", json_string(ts));
		json_object_set_new(rec, "error", json_string("agentd stopped during the run"));
		log_warn("Run %lld (%s) was interrupted; queueing it again",
			 (long long)json_integer_value(json_object_get(rec, "id")), rec_str(rec, "event"));
		changed = true;
	}
	if (changed) {
		/* enqueue() inserts at the front of e->runs: collect first. */
		json_t *again = json_array();
		json_array_foreach(e->runs, i, rec)
			if (rec_status_is(rec, "interrupted") && !json_object_get(rec, "_requeued")) {
				json_object_set_new(rec, "_requeued", json_true());
				json_array_insert(again, 0, rec);
			}
		json_array_foreach(again, i, rec)
			requeue_interrupted(e, rec);
		json_decref(again);
	}
	/* Written at every start, changed or not: it records what was
	 * reconciled above, and it probes state_dir, so that status says at
	 * once when it takes no writes (state_error, retried on a timer),
	 * not only at the first run. */
	engine_persist(e);

	if ((r = http_new(e->loop, &e->http)) < 0)
		return log_error_errno(r, "Failed to set up the HTTP client: %m");
	static const struct source_callbacks cbs = { on_document, on_source_error, on_source_unchanged };
	r = source_new(e->loop, e->config, e->http, &cbs, e, &e->source, &err);
	if (r < 0) {
		log_error("%s", err);
		return r;
	}
	arm_retry(e);
	notify_status(e);
	r = source_start(e->source);
	if (r < 0)
		return log_error_errno(r, "Failed to start the stack source %s: %m", e->source_url);
	/* Queued work from before a restart goes on with the stack we saved. */
	engine_kick(e);
	return 0;
}

void engine_stop_now(struct engine *e)
{
	if (e->stopping && e->stop_deadline && uv_is_active((uv_handle_t *)&e->state_retry)) {
		/* Asked twice: one last try of state.json, then go. */
		(void)uv_timer_stop(&e->state_retry);
		e->stop_deadline = time_monotonic_usec();
		engine_stop_finish(e);
		return;
	}
	if (e->stopping && e->active && e->active->x) {
		log_warn("Stopping now: terminating the current step of run %ld", e->active->id);
		e->active->killed = true;
		plan_execute_cancel(e->active->x, true);
	}
}

static void on_stop_retry(uv_timer_t *t)
{
	engine_stop_finish(t->data);
}

/* The last step of a stop: state.json must hold what happened (a run's
 * result above all). When it cannot be written (a full disk), it is tried
 * again every STOP_STATE_RETRY_MS for STOP_STATE_RETRY_USEC, while status
 * still answers; then agentd goes anyway, saying so: each run's result is
 * also the last line of its log, which the next start reads. */
static void engine_stop_finish(struct engine *e)
{
	void (*done)(void *);

	if (!e->stop_done || e->closing)
		return;
	if (e->state_error && engine_persist(e) < 0) {
		int64_t now = time_monotonic_usec();
		if (e->stop_deadline == 0) {
			e->stop_deadline = now + STOP_STATE_RETRY_USEC;
			log_warn("Stopping, but %s: trying again for %d s before exiting", e->state_error,
				 STOP_STATE_RETRY_USEC / 1000000);
		}
		if (now < e->stop_deadline) {
			(void)uv_timer_start(&e->state_retry, on_stop_retry, STOP_STATE_RETRY_MS, 0);
			return;
		}
		log_error("Exiting without having written state.json (%s): the result of a run finished since is the "
			  "last line of its log in %s/runs, and the next start takes it from there",
			  e->state_error, e->config->log_dir);
	}
	(void)uv_timer_stop(&e->state_retry);
	done = e->stop_done;
	e->stop_done = NULL;
	done(e->stop_userdata);
}

void engine_stop(struct engine *e, void (*done)(void *userdata), void *userdata)
{
	e->stopping = true;
	e->stop_done = done;
	e->stop_userdata = userdata;
	(void)uv_timer_stop(&e->kick);
	(void)uv_timer_stop(&e->retry);
	(void)uv_timer_stop(&e->state_retry);
	if (e->source) {
		source_free(e->source);
		e->source = NULL;
	}
	if (e->active && e->active->x) {
		log_info("Stopping: letting the current step of run %ld finish", e->active->id);
		plan_execute_cancel(e->active->x, false);
		return;
	}
	engine_stop_finish(e);
}

static void on_engine_closed(uv_handle_t *h)
{
	struct engine *e = h->data;
	if (--e->closing == 0)
		free(e);
}

void engine_free(struct engine *e)
{
	if (!e)
		return;
	if (e->source)
		source_free(e->source);
	if (e->http)
		http_free(e->http);
	stack_unref(e->current);
	stack_unref(e->applied);
	json_decref(e->runs);
	json_decref(e->failed);
	json_decref(e->input_hashes);
	json_decref(e->last_success);
	free(e->paused);
	free(e->instance);
	free(e->source_url);
	free(e->source_error);
	free(e->source_error_path);
	free(e->state_error);
	e->closing = 3;
	uv_close((uv_handle_t *)&e->kick, on_engine_closed);
	uv_close((uv_handle_t *)&e->retry, on_engine_closed);
	uv_close((uv_handle_t *)&e->state_retry, on_engine_closed);
}

/* ----------------------------------------------------------------- views */

static json_t *rec_public(const json_t *rec, bool with_steps)
{
	json_t *o = json_object();
	const char *k;
	json_t *v;

	json_object_foreach((json_t *)rec, k, v) {
		if (k[0] == '_' || (!with_steps && strcmp(k, "steps") == 0))
			continue;
		json_object_set(o, k, v);
	}
	if (with_steps && !json_object_get(o, "steps"))
		json_object_set_new(o, "steps", json_array());
	return o;
}

json_t *engine_status(struct engine *e)
{
	json_t *o = json_object(), *layers = json_array(), *queue = json_array(), *src, *failed = json_array();
	const struct stack *s = e->current;
	json_t *last = NULL;
	size_t i;
	json_t *rec;
	const char *state;

	if (s)
		for (size_t j = 0; j < s->n_self_layers; j++)
			json_array_append_new(layers, json_string(s->self_layers[j]));

	/* The queue in the order it will run: oldest first. */
	for (size_t j = json_array_size(e->runs); j-- > 0;) {
		rec = json_array_get(e->runs, j);
		if (rec_status_is(rec, "queued"))
			json_array_append_new(queue, rec_public(rec, false));
	}
	json_array_foreach(e->runs, i, rec) {
		if (!rec_status_is(rec, "queued") && !rec_status_is(rec, "running")) {
			last = rec;
			break;
		}
	}
	const char *k;
	json_t *v;
	json_object_foreach(e->failed, k, v) {
		json_t *f = json_deep_copy(v);
		json_object_del(f, "stack");
		json_array_append_new(failed, f);
	}

	if (e->active)
		state = "running";
	else if (e->paused)
		state = "paused";
	else if (json_object_size(e->failed) > 0)
		state = "failed";
	else
		state = "idle";

	json_object_set_new(o, "instance", json_string(s ? s->instance : e->instance));
	json_object_set_new(o, "layers", layers);
	json_object_set_new(o, "state", json_string(state));
	json_object_set_new(o, "current_run", e->active ? rec_public(e->active->rec, false) : json_null());
	if (last)
		json_object_set_new(o, "last_run",
				    json_pack("{s:O, s:O, s:O, s:O, s:O, s:O, s:O, s:O}", "id", json_object_get(last, "id"),
					      "event", json_object_get(last, "event"), "layer", json_object_get(last, "layer"),
					      "app", json_object_get(last, "app"), "status", json_object_get(last, "status"),
					      "started", json_object_get(last, "started"), "finished",
					      json_object_get(last, "finished"), "changed", json_object_get(last, "changed")));
	else
		json_object_set_new(o, "last_run", json_null());

	src = json_object();
	json_object_set_new(src, "url", json_string(e->source_url));
	json_object_set_new(src, "last_fetch", json_time(e->source ? e->source->last_fetch_usec : 0));
	if (e->source)
		source_status(e->source, src);
	json_object_set_new(src, "last_change", json_time(e->last_change_usec));
	json_object_set_new(src, "error", json_string_or_null(e->source_error));
	json_object_set_new(src, "error_path", json_string_or_null(e->source_error_path));
	json_object_set_new(src, "stack_revision", json_string_or_null(s ? s->revision : NULL));
	json_object_set_new(src, "applied_revision", json_string_or_null(e->applied ? e->applied->revision : NULL));
	json_object_set_new(o, "source", src);
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
	size_t i;
	json_t *rec;

	json_array_foreach(e->runs, i, rec) {
		if (n > 0 && (long)i >= n)
			break;
		json_array_append_new(list, rec_public(rec, false));
	}
	return json_pack("{s:o}", "runs", list);
}

json_t *engine_run_info(struct engine *e, long id)
{
	json_t *rec = run_find(e, id), *o;

	if (!rec)
		return NULL;
	o = rec_public(rec, true);
	if (!json_object_get(rec, "steps") && !rec_status_is(rec, "queued")) {
		/* A finished run: its steps are in its file. Reading a small local
		 * file here is bounded and does not wait on anything remote; its
		 * bounds are those its writer keeps (RUN_FILE_MAX_*), checked
		 * before parsing, since any local user may ask. A file beyond them
		 * is not agentd's: the reply says so in steps_error. */
		_cleanup_free_ char *path = run_file_path(e, id), *data = NULL, *err = NULL;
		size_t len;
		json_t *full = NULL;
		int r = file_read_regular(AT_FDCWD, path, 0, RUN_FILE_MAX_BYTES, &data, &len);
		if (r == -EFBIG)
			err = xasprintf("%s is larger than %zu bytes", path, (size_t)RUN_FILE_MAX_BYTES);
		else if (r < 0 && r != -ENOENT)
			err = xasprintf("%s cannot be read: %s", path, file_read_strerror(r));
		else if (r == 0 && json_bounds_check(data, len, RUN_FILE_MAX_ELEMENTS, STATE_JSON_MAX_DEPTH) < 0)
			err = xasprintf("%s has more than %zu JSON elements or %d levels", path,
					(size_t)RUN_FILE_MAX_ELEMENTS, STATE_JSON_MAX_DEPTH);
		else if (r == 0 && !(full = json_loadb(data, len, 0, NULL)))
			err = xasprintf("%s is not valid JSON", path);
		if (json_is_array(json_object_get(full, "steps")))
			json_object_set(o, "steps", json_object_get(full, "steps"));
		else if (full && !err)
			err = xasprintf("%s has no steps", path);
		json_decref(full);
		if (err) {
			log_warn("Steps of run %ld not shown: %s", id, err);
			json_object_set_new(o, "steps_error", json_string(err));
		}
	}
	return o;
}

json_t *engine_stack_json(struct engine *e, bool privileged)
{
	if (!e->current)
		return NULL;
	/* No copy: a 16 MiB document read by many users at once must not be
	 * duplicated per reader; the redacted view shares what it does not
	 * hide (secret keys, and files marked "secret": true). */
	return privileged ? json_incref(e->current->root) : proto_redact_shared(e->current->root);
}

const char *engine_stack_revision(struct engine *e)
{
	return e->current ? e->current->revision : NULL;
}

long engine_last_run_id(struct engine *e)
{
	size_t i;
	json_t *rec;

	/* The newest run that has started. */
	json_array_foreach(e->runs, i, rec)
		if (!rec_status_is(rec, "queued"))
			return (long)json_integer_value(json_object_get(rec, "id"));
	return 0;
}

char *engine_run_log_path(struct engine *e, long id)
{
	return xasprintf("%s/runs/%ld.log", e->config->log_dir, id);
}

bool engine_run_is_active(struct engine *e, long id)
{
	json_t *rec = run_find(e, id);
	return rec && (rec_status_is(rec, "queued") || rec_status_is(rec, "running"));
}

/* --------------------------------------------------------------- actions */

int engine_request_run(struct engine *e, enum event ev, const char *layer, const char *app, enum trigger_kind trig,
		       long *ret_id, char **ret_error)
{
	if (e->stopping) {
		*ret_error = xstrdup("agentd is stopping");
		return -EBUSY;
	}
	if (!e->current) {
		*ret_error = xstrdup("no valid stack yet: nothing to run");
		return -ENOENT;
	}
	if (layer && !stack_has_self_layer(e->current, layer)) {
		*ret_error = xasprintf("instance \"%s\" is not a member of layer \"%s\"", e->current->instance, layer);
		return -ENOENT;
	}
	if (app && !stack_app_find(e->current, app)) {
		*ret_error = xasprintf("app \"%s\" is not in the stack's deploy section", app);
		return -ENOENT;
	}
	long first_new = e->next_id;
	*ret_id = enqueue(e, ev, layer, app, trig, NULL);
	if (*ret_id == 0) {
		*ret_error = xstrdup(e->next_id > ENGINE_RUN_ID_MAX ? "no run id left" : "the queue is full");
		return -ERANGE;
	}
	if (engine_persist(e) < 0 && *ret_id >= first_new) {
		/* The operator learns now that the run is not recorded, rather
		 * than find it gone after a restart. Its id stays spent. */
		json_t *rec;
		size_t i;
		json_array_foreach(e->runs, i, rec)
			if (json_integer_value(json_object_get(rec, "id")) == *ret_id) {
				json_array_remove(e->runs, i);
				break;
			}
		*ret_error = xasprintf("the run cannot be recorded: %s", e->state_error);
		*ret_id = 0;
		return -EIO;
	}
	engine_kick(e);
	return 0;
}

int engine_plan(struct engine *e, enum event ev, const char *layer, const char *app, bool privileged, json_t **ret,
		char **ret_error)
{
	struct plan plan;
	int r;

	if (!e->current) {
		*ret_error = xstrdup("no valid stack yet: nothing to plan");
		return -ENOENT;
	}
	r = build_plan(e, e->current, ev, layer, app, 0, &plan, ret_error);
	if (r < 0) {
		plan_free(&plan);
		return r;
	}
	struct step_env env = {
		.loop = e->loop,
		.http = e->http,
		.root = e->config->root,
		.run_id = 0,
		.output_max = (size_t)e->config->step_output_max,
	};
	json_t *o = plan_describe(&plan, &env, !privileged);
	json_object_set_new(o, "event", json_string(event_to_string(ev)));
	json_object_set_new(o, "layer", json_string_or_null(layer));
	json_object_set_new(o, "app", json_string_or_null(app));
	json_object_set_new(o, "stack_revision", json_string(e->current->revision));
	/* Any local user may ask for a plan, and a plan holds a copy of each
	 * file's content (up to the stack's 16 MiB): give a large one back to
	 * the kernel now, rather than keep that peak for good. */
	bool large = plan_content_bytes(&plan) >= (1u << 20);
	plan_free(&plan);
	if (large)
		(void)malloc_trim(0);
	*ret = o;
	return 0;
}

void engine_reload(struct engine *e)
{
	e->have_raw_hash = false;
	if (e->source)
		source_reload(e->source);
}

int engine_pause(struct engine *e, const char *reason, char **ret_error)
{
	free(e->paused);
	e->paused = xstrdup(reason ? reason : "");
	log_info("Paused%s%s", reason && *reason ? ": " : "", reason ? reason : "");
	engine_persist(e);
	notify_status(e);
	return 0;
}

int engine_resume(struct engine *e, char **ret_error)
{
	if (!e->paused) {
		*ret_error = xstrdup("not paused");
		return -EINVAL;
	}
	free(e->paused);
	e->paused = NULL;
	log_info("Resumed");
	engine_persist(e);
	engine_apply_current(e);
	engine_kick(e);
	notify_status(e);
	return 0;
}

int engine_clear_failed(struct engine *e, char **ret_error)
{
	json_object_clear(e->failed);
	arm_retry(e);
	engine_persist(e);
	notify_status(e);
	return 0;
}

static int release_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int engine_rollback(struct engine *e, const char *app, json_t **ret, char **ret_error)
{
	const struct stack_app *a;
	_cleanup_close_ int rootfd = -1, dfd = -1, rfd = -1, lfd = -1, tfd = -1;
	_cleanup_free_ char *target = NULL, *ecur = NULL, *eprev = NULL;
	char cur[4096], tmp[NAME_MAX + 1];
	char **names = NULL;
	size_t n = 0;
	ssize_t len;
	struct stat st;
	DIR *d;
	struct dirent *de;
	int r = 0;

	if (!e->current || !(a = stack_app_find(e->current, app))) {
		*ret_error = xasprintf("app \"%s\" is not in the stack's deploy section", app);
		return -ENOENT;
	}
	if (e->active) {
		*ret_error = xstrdup("a run is in progress; try again when it has finished");
		return -EBUSY;
	}
	/* deploy_to is resolved inside root like every step's path: a symlink
	 * planted in it cannot take the switch elsewhere. deploy_to, releases
	 * and everything in them are the app user's: every name read there is
	 * escaped in messages, and nothing there is followed but by the
	 * rootfs rule. */
	rootfd = rootfs_open(e->config->root);
	if (rootfd >= 0)
		dfd = rootfs_resolve(rootfd, a->deploy_to, true);
	if (dfd >= 0)
		rfd = openat(dfd, ROOTFS_MANAGED_LINK_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (rfd < 0) {
		*ret_error = xasprintf("%s has no releases directory under %s", app, a->deploy_to);
		return -ENOENT;
	}
	/* current must be agentd's link: "releases/<name>", a plain name. */
	lfd = openat(dfd, ROOTFS_MANAGED_LINK, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	len = lfd < 0 || fstat(lfd, &st) < 0 || !S_ISLNK(st.st_mode) ? -1 : readlinkat(lfd, "", cur, sizeof(cur) - 1);
	if (len < 0) {
		*ret_error = xasprintf("%s has no current release (%s/current is not a symlink)", app, a->deploy_to);
		return -ENOENT;
	}
	cur[len] = '\0';
	ecur = str_escape_ctl(cur);
	{
		const char *nm = cur + strlen(ROOTFS_MANAGED_LINK_DIR "/");

		if (strncmp(cur, ROOTFS_MANAGED_LINK_DIR "/", strlen(ROOTFS_MANAGED_LINK_DIR "/")) != 0 || !*nm ||
		    strchr(nm, '/') || strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0) {
			*ret_error = xasprintf("refusing to roll back %s: %s/current points to \"%s\", not to "
					       "releases/<name>",
					       app, a->deploy_to, ecur);
			return -EINVAL;
		}
	}
	d = fdopendir(rfd);
	if (!d) {
		*ret_error = xasprintf("cannot list the releases of %s: %s", app, strerror(errno));
		return -errno;
	}
	rfd = -1; /* owned by d now */
	while ((de = readdir(d)))
		if (de->d_name[0] != '.') {
			names = xrealloc(names, (n + 1) * sizeof(char *));
			names[n++] = xstrdup(de->d_name);
		}
	closedir(d);
	qsort(names, n, sizeof(char *), release_cmp);

	/* Release names are timestamps: the previous one sorts just before the current. */
	const char *cur_name = cur + strlen(ROOTFS_MANAGED_LINK_DIR "/");
	_cleanup_free_ char *ecur_name = str_escape_ctl(cur_name);
	ssize_t idx = -1;
	for (size_t i = 0; i < n; i++)
		if (strcmp(names[i], cur_name) == 0)
			idx = (ssize_t)i;
	if (idx <= 0) {
		*ret_error = xasprintf("%s has no release before %s", app, ecur_name);
		r = -ENOENT;
		goto out;
	}
	eprev = str_escape_ctl(names[idx - 1]);
	/* Relative, as the link step writes it: the same on the host and under a test root. */
	target = xasprintf(ROOTFS_MANAGED_LINK_DIR "/%s", names[idx - 1]);
	/* The target must be what "current" may name (rootfs.h): a real
	 * directory, checked on fds with deploy_to as the root, so a link the
	 * user planted under a release's name (-> /etc/sudoers.d) is refused. */
	tfd = rootfs_resolve(dfd, target, true);
	if (tfd < 0) {
		*ret_error = xasprintf("refusing to roll back %s to %s: %s", app, eprev, rootfs_strerror(tfd));
		r = tfd == -ELOOP ? -ELOOP : -ENOENT;
		goto out;
	}
	/* The new link under a name nobody can predict, made exclusively
	 * (symlinkat fails on anything there), then renamed over current. */
	for (int attempt = 0;; attempt++) {
		tmp_name_random(ROOTFS_MANAGED_LINK, tmp, sizeof(tmp));
		if (symlinkat(target, dfd, tmp) == 0)
			break;
		if (errno != EEXIST || attempt >= 16) {
			r = -errno;
			*ret_error = xasprintf("cannot switch %s/current: %s", a->deploy_to, strerror(-r));
			goto out;
		}
	}
	if (renameat(dfd, tmp, dfd, ROOTFS_MANAGED_LINK) < 0) {
		r = -errno;
		*ret_error = xasprintf("cannot switch %s/current: %s", a->deploy_to, strerror(-r));
		(void)unlinkat(dfd, tmp, 0);
		goto out;
	}
	log_info("Rolled back %s from %s to %s", app, ecur_name, eprev);
	*ret = json_pack("{s:s, s:s, s:s}", "app", app, "from", ecur_name, "to", eprev);
	/* A Plone app's services run the code of current: restart them, in a
	 * run of their own (recorded as a deploy of the app, trigger ctl, with
	 * only the restart steps), so the restart is in the history and log. */
	if (apps_is_family_app(e->current, app)) {
		long id = enqueue_ex(e, EVENT_DEPLOY, NULL, app, TRIGGER_CTL, e->current->revision, true);
		json_object_set_new(run_find(e, id), "_rollback_restart", json_true());
		json_object_set_new(*ret, "restart_run", json_integer(id));
		engine_persist(e);
		engine_kick(e);
	}
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return r;
}

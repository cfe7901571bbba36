/* SPDX-License-Identifier: BSD-2-Clause */
/* state_dir (design.md §3, §7):
 *   stacks/<revision>.json  every stack a run may still need (content-addressed)
 *   state.json              one file, written atomically, holding the
 *                           revision of the current and the applied stack
 *                           (and the name and `layers` it was applied as),
 *                           the run records without their steps (queued,
 *                           running and finished, newest first), failures,
 *                           exec input hashes and the pause reason.
 *   runs/<id>.json          a run's record with its steps: written at each
 *                           step transition of the running run and once at
 *                           its end, so that state.json, written only when
 *                           a run is queued, starts or ends, stays small.
 * Run records are typed (run.h) in memory; record.c alone reads and
 * writes them as JSON. */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "recipes/recipe.h"
#include "stack/stack.h"
#include "strv.h"
#include "util.h"

char *state_path(const struct engine *e, const char *name)
{
	return xasprintf("%s/%s", e->config->state_dir, name);
}

char *state_stack_path(const struct engine *e, const char *rev)
{
	return xasprintf("%s/stacks/%s.json", e->config->state_dir, rev);
}

char *run_file_path(const struct engine *e, long id)
{
	return xasprintf("%s/runs/%ld.json", e->config->state_dir, id);
}

/* ------------------------------------------------------------- stacks */

/* Moves an unusable file of state_dir (state.json, a saved stack) aside to
 * "<path>.corrupt", for a post-mortem and so that the next write can replace
 * it (a directory there would block every write). Logged once per entry:
 * the entry is gone from its place afterwards. */
void state_move_aside(struct engine *e, const char *path)
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

int state_save_stack(struct engine *e, const struct stack *s)
{
	_cleanup_free_ char *path = state_stack_path(e, s->revision), *data = NULL;
	struct stat st;
	size_t len;

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
	/* A failure is logged by the caller, once. */
	return file_write_atomic(path, data, len, 0600, (uid_t)-1, (gid_t)-1);
}

struct stack *state_load_stack(struct engine *e, const char *rev)
{
	return state_load_stack_as(e, rev, e->instance, (const char *const *)e->config->layers);
}

int engine_stack_load(struct engine *e, const char *data, size_t len, const char *instance,
		      const char *const *layers, struct stack **ret, struct stack_error *err)
{
	int r = recipes_stack_load(data, len, instance, ret, err);

	(void)e;
	if (r == 0 && layers)
		stack_assign_layers(*ret, layers);
	return r;
}

struct stack *state_load_stack_as(struct engine *e, const char *rev, const char *instance,
				  const char *const *layers)
{
	_cleanup_free_ char *path = state_stack_path(e, rev), *data = NULL;
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
	r = engine_stack_load(e, data, len, instance, layers, &s, &err);
	if (r < 0) {
		log_warn("Saved stack %s no longer validates at %s: %s", path, err.path, err.message);
		return NULL;
	}
	return s;
}

/* Whether a saved stack is still needed: current, applied, a queued or
 * running run's, or a failure's (a failed run tied to an old stack is
 * retried against it). */
static bool stack_needed(struct engine *e, const char *rev)
{
	const char *k;
	json_t *f;

	if ((e->current && strcmp(rev, e->current->revision) == 0) ||
	    (e->applied && strcmp(rev, e->applied->revision) == 0))
		return true;
	for (size_t i = 0; i < e->runs.n; i++)
		if (str_eq(e->runs.v[i]->stack, rev) && run_is_pending(e->runs.v[i]))
			return true;
	json_object_foreach(e->failed, k, f)
		if (str_eq(json_string_value(json_object_get(f, "stack")), rev))
			return true;
	return false;
}

void state_gc_stacks(struct engine *e)
{
	_cleanup_free_ char *dir = state_path(e, "stacks");
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char rev[17];

		if (strlen(de->d_name) != 21 || strcmp(de->d_name + 16, ".json") != 0)
			continue;
		memcpy(rev, de->d_name, 16);
		rev[16] = '\0';
		if (!stack_needed(e, rev))
			(void)unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
}

/* ------------------------------------------------------------ writing */

/* state_dir could not be written: say so in status and try again later,
 * with a backoff (1 s doubling to 10 s). Nothing is lost meanwhile: the
 * records stay in memory, and runs wait (see engine_start_run). */
void state_write_failed(struct engine *e, const char *what, int r)
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
		(void)uv_timer_start(&e->state_retry, engine_on_state_retry, delay, 0);
}

static void persist_count(struct engine *e, unsigned *counter, int64_t since, const char *what)
{
	int64_t d = time_monotonic_usec() - since;

	(*counter)++;
	e->persist_usec += d;
	log_debug("Wrote %s in %.2f ms (%u state.json and %u run file writes so far, %.1f ms in all)", what,
		  (double)d / 1000.0, e->persists, e->run_file_writes, (double)e->persist_usec / 1000.0);
}

int engine_persist(struct engine *e)
{
	_cleanup_free_ char *path = state_path(e, "state.json"), *data = NULL;
	json_t *o = json_object(), *runs = json_array();
	int64_t t0 = time_monotonic_usec();
	int r;

	for (size_t i = 0; i < e->runs.n; i++)
		json_array_append_new(runs, run_to_json(e->runs.v[i], RUN_VIEW_STATE));
	json_object_set_new(o, "version", json_integer(STATE_VERSION));
	json_object_set_new(o, "instance", json_string(e->instance));
	json_object_set_new(o, "stack_revision", json_string_or_null(e->current ? e->current->revision : NULL));
	json_object_set_new(o, "applied_revision", json_string_or_null(e->applied ? e->applied->revision : NULL));
	json_object_set_new(o, "applied_instance", json_string(e->applied_instance ? e->applied_instance : e->instance));
	if (e->applied_layers) {
		json_t *l = json_array();
		for (size_t i = 0; e->applied_layers[i]; i++)
			json_array_append_new(l, json_string(e->applied_layers[i]));
		json_object_set_new(o, "applied_layers", l);
	}
	json_object_set_new(o, "next_run_id", json_integer(e->next_id));
	json_object_set_new(o, "runs", runs);
	json_object_set(o, "failed", e->failed);
	json_object_set(o, "input_hashes", e->input_hashes);
	json_object_set(o, "last_success", e->last_success);
	json_object_set_new(o, "paused", json_string_or_null(e->paused));
	data = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	r = data ? file_write_atomic(path, data, strlen(data), 0600, (uid_t)-1, (gid_t)-1) : -ENOMEM;
	persist_count(e, &e->persists, t0, "state.json");
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

/* Writes rec with its steps to runs/<id>.json. Within what the reader
 * accepts (RUN_FILE_MAX_BYTES): beyond, the record without its steps. */
static int run_file_write(struct engine *e, const struct run *rec)
{
	_cleanup_free_ char *path = run_file_path(e, rec->id);
	json_t *full = run_to_json(rec, RUN_VIEW_FILE);
	char *data = json_dumps(full, JSON_COMPACT);
	int r;

	if (data && strlen(data) > RUN_FILE_MAX_BYTES) {
		/* Not expected (on_step_done keeps the steps within bounds). */
		free(data);
		json_object_set_new(full, "steps_omitted",
				    json_integer((json_int_t)json_array_size(json_object_get(full, "steps")) +
						 (rec->steps_omitted > 0 ? rec->steps_omitted : 0)));
		json_object_set_new(full, "steps", json_array());
		data = json_dumps(full, JSON_COMPACT);
	}
	r = data ? file_write_atomic(path, data, strlen(data), 0600, (uid_t)-1, (gid_t)-1) : -ENOMEM;
	free(data);
	json_decref(full);
	return r;
}

void engine_persist_active(struct engine *e)
{
	struct active *a = e->active;
	int64_t t0 = time_monotonic_usec();
	int r;

	if (!a)
		return;
	/* The steps so far go to the run's own file, at most once a second:
	 * rewritten at every step, a long run's file costs the square of its
	 * steps, and they are a convenience (its log has every step). */
	if (a->snapshot_mono == 0 || t0 - a->snapshot_mono >= RUN_SNAPSHOT_USEC) {
		a->snapshot_mono = t0;
		r = run_file_write(e, a->rec);
		persist_count(e, &e->run_file_writes, t0, "the running run's file");
		/* Not fatal: the record and its steps are in memory. */
		if (r < 0)
			log_debug("Failed to write the file of run %ld: %s", a->id, strerror(-r));
	}
	/* state.json: the record without its steps, with the step's group. */
	(void)engine_persist(e);
}

void state_save_finished_run(struct engine *e, struct run *rec)
{
	int r = run_file_write(e, rec);

	if (r < 0) {
		/* The steps stay in the record, and so in state.json; but only
		 * this run's: the bounds of state.json allow the steps of one
		 * finished run beside the running one. */
		log_warn_errno(r, "Failed to save the steps of run %ld: %m", rec->id);
		for (size_t j = 0; j < e->runs.n; j++) {
			struct run *o = e->runs.v[j];
			if (o != rec && o->steps && !run_is_pending(o)) {
				json_decref(o->steps);
				o->steps = NULL;
				run_set_str(&o->steps_error, "its steps were lost: state_dir was full");
			}
		}
		return;
	}
	json_decref(rec->steps);
	rec->steps = NULL;
}

void state_read_run_steps(struct engine *e, long id, json_t *o)
{
	/* A finished run: its steps are in its file. Reading a small local
	 * file here is bounded and does not wait on anything remote; its
	 * bounds are those its writer keeps (RUN_FILE_MAX_*), checked before
	 * parsing, since any local user may ask. A file beyond them is not
	 * agentd's: the reply says so in steps_error. */
	_cleanup_free_ char *path = run_file_path(e, id), *data = NULL, *err = NULL;
	size_t len;
	json_t *full = NULL;
	int r = file_read_regular(AT_FDCWD, path, 0, RUN_FILE_MAX_BYTES, &data, &len);

	if (r == -EFBIG)
		err = xasprintf("%s is larger than %zu bytes", path, (size_t)RUN_FILE_MAX_BYTES);
	else if (r < 0 && r != -ENOENT)
		err = xasprintf("%s cannot be read: %s", path, file_read_strerror(r));
	else if (r == 0 && json_bounds_check(data, len, RUN_FILE_MAX_ELEMENTS, STATE_JSON_MAX_DEPTH) < 0)
		err = xasprintf("%s has more than %zu JSON elements or %d levels", path, (size_t)RUN_FILE_MAX_ELEMENTS,
				STATE_JSON_MAX_DEPTH);
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

/* The running run's file, at a start after agentd died during the run: its
 * steps and process group are newer than its entry in state.json. */
static void state_load_running_file(struct engine *e, struct run *r)
{
	_cleanup_free_ char *path = run_file_path(e, r->id), *data = NULL;
	json_t *full;
	struct run *f;
	size_t len;

	if (file_read_regular(AT_FDCWD, path, 0, RUN_FILE_MAX_BYTES, &data, &len) < 0 ||
	    json_bounds_check(data, len, RUN_FILE_MAX_ELEMENTS, STATE_JSON_MAX_DEPTH) < 0 ||
	    !(full = json_loadb(data, len, 0, NULL)))
		return;
	f = run_from_file(full);
	json_decref(full);
	if (f && f->id == r->id && f->status == RUN_RUNNING) {
		if (f->steps) {
			json_decref(r->steps);
			r->steps = json_incref(f->steps);
		}
		if (f->has_pgid) {
			r->has_pgid = true;
			r->pgid = f->pgid;
			r->pgid_start = f->pgid_start;
		}
	}
	run_free(f);
}

/* ------------------------------------------------------------ loading */

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

/* Reads state.json into data; false (with first_start set) when there is
 * none to use. */
static bool state_read(struct engine *e, const char *path, json_t **ret)
{
	_cleanup_free_ char *data = NULL, *err = NULL;
	size_t len;
	int r;

	r = file_read_regular(AT_FDCWD, path, 0, state_max_bytes(e->config->history), &data, &len);
	e->first_start = true;
	if (r == -ENOENT) {
		log_info("No saved state in %s: first start on this instance", e->config->state_dir);
		return false;
	}
	if (r == -EBADFD || r == -EISDIR || r == -ELOOP || r == -EFBIG) {
		/* A FIFO, device, directory or symlink is not our file, and
		 * was read without waiting on it: report, keep it for a look,
		 * and start as on a first start. */
		log_error("Saved state %s is %s: treating this as a first start", path, file_read_strerror(r));
		state_move_aside(e, path);
		return false;
	}
	if (r < 0) {
		log_error_errno(r, "Saved state %s cannot be read (%m): treating this as a first start", path);
		return false;
	}
	r = engine_state_parse(data, len, e->config->history, ret, &err);
	if (r < 0) {
		log_error("Saved state %s is corrupt (%s): treating this as a first start", path, err);
		/* Keep the bad file for a post-mortem instead of overwriting it. */
		state_move_aside(e, path);
		return false;
	}
	return true;
}

static void state_load_runs(struct engine *e, const json_t *runs)
{
	size_t i;
	json_t *c;

	json_array_foreach(runs, i, c) {
		struct run *r = run_from_json(c);
		if (!r)
			continue;
		/* Appended: the list keeps the file's order, newest first. */
		run_list_insert_front(&e->runs, r);
		if (r->status == RUN_RUNNING)
			state_load_running_file(e, r);
	}
	/* insert_front reversed it. */
	for (size_t a = 0, b = e->runs.n ? e->runs.n - 1 : 0; a < b; a++, b--) {
		struct run *t = e->runs.v[a];
		e->runs.v[a] = e->runs.v[b];
		e->runs.v[b] = t;
	}
}

/* Two strvs of agentd.conf's `layers` (NULL: from the stack) alike. */
static bool names_equal(char *const *a, char *const *b)
{
	size_t i;

	if (!a || !b)
		return a == b;
	for (i = 0; a[i] && b[i]; i++)
		if (strcmp(a[i], b[i]) != 0)
			return false;
	return !a[i] && !b[i];
}

void state_load(struct engine *e)
{
	_cleanup_free_ char *path = state_path(e, "state.json");
	json_t *o, *v;
	const char *k;
	json_t *f;

	if (!state_read(e, path, &o))
		return;
	if (json_integer_value(json_object_get(o, "dropped_runs")) > 0)
		log_warn("Dropped %lld unreadable run records from %s",
			 (long long)json_integer_value(json_object_get(o, "dropped_runs")), path);
	state_load_runs(e, json_object_get(o, "runs"));
	e->next_id = (long)json_integer_value(json_object_get(o, "next_run_id"));
	if (e->next_id == 0)
		log_warn("%s has no usable next_run_id: continuing after the highest run id found", path);
	json_object_update(e->failed, json_object_get(o, "failed"));
	/* A retry time far in the future (a clock that jumped, or an edit)
	 * would never come: retry_max from now at the latest. */
	int64_t latest = time_now_usec() + (int64_t)e->config->retry_max * 1000000;
	json_object_foreach(e->failed, k, f)
		if (json_integer_value(json_object_get(f, "next_retry")) > latest)
			json_object_set_new(f, "next_retry", json_integer(latest));
	json_object_update(e->input_hashes, json_object_get(o, "input_hashes"));
	json_object_update(e->last_success, json_object_get(o, "last_success"));
	if ((v = json_object_get(o, "paused")))
		e->paused = xstrdup(json_string_value(v));

	/* The applied stack as it was applied: under the name this instance
	 * had then (an older agentd wrote only "instance"), so that another
	 * name now (`instance`, the host name) diffs as layers added and
	 * removed (design.md §3 Identity). */
	if ((v = json_object_get(o, "applied_instance")) || (v = json_object_get(o, "instance")))
		e->applied_instance = xstrdup(json_string_value(v));
	if ((v = json_object_get(o, "applied_layers"))) {
		size_t i;
		json_t *l;
		e->applied_layers = xcalloc(json_array_size(v) + 1, sizeof(char *));
		json_array_foreach(v, i, l)
			e->applied_layers[i] = xstrdup(json_string_value(l));
	}
	if ((v = json_object_get(o, "applied_revision")))
		e->applied = state_load_stack_as(e, json_string_value(v),
						 e->applied_instance ? e->applied_instance : e->instance,
						 (const char *const *)e->applied_layers);
	if ((v = json_object_get(o, "stack_revision"))) {
		if (e->applied && strcmp(e->applied->revision, json_string_value(v)) == 0 &&
		    str_eq(e->applied_instance ? e->applied_instance : e->instance, e->instance) &&
		    names_equal(e->applied_layers, e->config->layers))
			e->current = stack_ref(e->applied);
		else
			e->current = state_load_stack(e, json_string_value(v));
	}
	/* State without a usable applied stack: the first good document will be
	 * diffed against nothing, which is a first start. */
	e->first_start = !e->applied;
	json_decref(o);
}

void state_fix_next_id(struct engine *e)
{
	_cleanup_free_ char *logs = xasprintf("%s/runs", e->config->log_dir), *files = state_path(e, "runs");
	long m;

	/* Ids only grow, and are never given twice: past every id in
	 * state.json, every run log in log_dir and every run file. */
	if (e->next_id < 1)
		e->next_id = 1;
	for (size_t i = 0; i < e->runs.n; i++)
		if (e->runs.v[i]->id >= e->next_id)
			e->next_id = e->runs.v[i]->id + 1;
	if ((m = max_id_in_dir(logs, ".log")) >= e->next_id)
		e->next_id = m + 1;
	if ((m = max_id_in_dir(files, ".json")) >= e->next_id)
		e->next_id = m + 1;
}

void state_trim_history(struct engine *e)
{
	size_t finished = 0;

	for (size_t i = 0; i < e->runs.n;) {
		struct run *r = e->runs.v[i];
		if (run_is_pending(r)) {
			i++;
			continue;
		}
		if (++finished > (size_t)e->config->history) {
			_cleanup_free_ char *log = engine_run_log_path(e, r->id), *steps = run_file_path(e, r->id);
			(void)unlink(log);
			(void)unlink(steps);
			run_free(run_list_take(&e->runs, i));
			continue;
		}
		i++;
	}
}

/* ------------------------------------------------------- step memory */

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

/* Owed work of guarded steps is kept in state.json's input_hashes under
 * "pending:" keys (the format of older versions). */
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

void state_memory_init(struct engine *e)
{
	e->memory = (struct step_memory){ input_hash_get, input_hash_set, owed_get, owed_set, e };
}

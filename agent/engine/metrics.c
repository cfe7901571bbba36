/* SPDX-License-Identifier: BSD-2-Clause */
/* Metrics (design.md §4 metrics_file, issue 14): the figures of the
 * `metrics` method, and the same as Prometheus text exposition format
 * (lib/metrics.c) written atomically to metrics_file after each run and
 * each change of the source, for the node exporter's textfile collector.
 *
 * What counts since when:
 *   - agentd_runs_total, agentd_source_errors_total and the histogram
 *     agentd_step_duration_seconds count since agentd started (counters
 *     start again at 0 after a restart, which Prometheus' rate() and
 *     increase() take as a reset); every event and final status of
 *     agentd_runs_total is there from the start, at 0;
 *   - agentd_last_run_timestamp_seconds and
 *     agentd_last_success_timestamp_seconds start from the run history
 *     kept in state_dir (the finished runs' "finished" times), then follow
 *     every run: a restart does not lose them; an event that never ran
 *     (in the history) has no sample;
 *   - agentd_maintenance_last_success_timestamp_seconds is the scheduler's
 *     last success of each job of this instance (state_dir/schedule.json);
 *     a job that never succeeded has no sample.
 * Nothing in the figures is secret: names of events, steps' kinds, jobs,
 * revisions (hashes). The file is 0644 like node exporter's own. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "config.h"
#include "internal.h"
#include "log.h"
#include "metrics.h"
#include "schedule.h"
#include "stack/stack.h"
#include "util.h"

/* Upper bounds of agentd_step_duration_seconds' buckets, seconds: a file
 * step takes a millisecond, a buildout minutes, a backup an hour. */
static const double step_buckets[] = { 0.001, 0.01, 0.1, 1, 10, 60, 600, 3600 };
#define N_BUCKETS ELEMENTSOF(step_buckets)
/* Distinct step kinds counted at most (there are about twenty). */
#define KINDS_MAX 64

/* The final statuses a run is counted under. */
static const enum run_status counted[] = { RUN_SUCCESS, RUN_FAILED, RUN_INTERRUPTED };
#define N_COUNTED ELEMENTSOF(counted)

struct kind_hist {
	char *kind;                 /* owned */
	uint64_t buckets[N_BUCKETS]; /* observations <= the bound (not cumulative here) */
	uint64_t count;
	uint64_t sum_us;            /* microseconds: the sum is printed as the decimal it is */
};

struct metrics {
	bool seeded;                       /* timestamps taken from the history */
	uint64_t runs[_EVENT_MAX][N_COUNTED];
	int64_t last_run_ms[_EVENT_MAX];   /* ms since the epoch, 0: none */
	int64_t last_success_ms[_EVENT_MAX];
	uint64_t source_errors;
	struct kind_hist kinds[KINDS_MAX];
	size_t n_kinds;
	char *written;                     /* owned: the text last written, NULL: none */
	char *write_error;                 /* owned: why the last write failed, NULL: it did not */
};

/* A record's time ("2024-05-01T12:00:00.123Z", time_format_rfc3339) in
 * milliseconds since the epoch; 0 when it is not one. */
static int64_t rfc3339_ms(const char *s)
{
	struct tm tm = { 0 };
	int ms = 0, n = 0;
	time_t t;

	if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
			 &tm.tm_sec, &n) != 6)
		return 0;
	if (s[n] == '.' && sscanf(s + n, ".%3d", &ms) != 1)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	t = timegm(&tm);
	return t > 0 && ms >= 0 && ms < 1000 ? (int64_t)t * 1000 + ms : 0;
}

static int counted_index(enum run_status s)
{
	for (size_t i = 0; i < N_COUNTED; i++)
		if (counted[i] == s)
			return (int)i;
	return -1;
}

/* A finished run's times into m (the newest wins). */
static void note_times(struct metrics *m, const struct run *rec)
{
	int64_t t = rfc3339_ms(rec->finished);
	int ev = (int)rec->req.event;

	if (ev < 0 || ev >= _EVENT_MAX || counted_index(rec->status) < 0 || t <= 0)
		return;
	if (t > m->last_run_ms[ev])
		m->last_run_ms[ev] = t;
	if (rec->status == RUN_SUCCESS && t > m->last_success_ms[ev])
		m->last_success_ms[ev] = t;
}

static struct metrics *metrics_get(struct engine *e)
{
	struct metrics *m = e->metrics;

	if (!m)
		m = e->metrics = xcalloc(1, sizeof(*m));
	if (!m->seeded) {
		for (size_t i = 0; i < e->runs.n; i++)
			note_times(m, e->runs.v[i]);
		m->seeded = true;
	}
	return m;
}

void engine_metrics_step(struct engine *e, const struct step *s)
{
	struct metrics *m = metrics_get(e);
	struct kind_hist *h = NULL;
	double sec = (double)s->duration_us / 1e6;

	/* A skipped step did not run: it has no duration. */
	if (s->status == STEP_SKIPPED || s->status == STEP_PENDING)
		return;
	for (size_t i = 0; i < m->n_kinds && !h; i++)
		if (strcmp(m->kinds[i].kind, s->ops->kind) == 0)
			h = &m->kinds[i];
	if (!h) {
		if (m->n_kinds >= KINDS_MAX)
			return;
		h = &m->kinds[m->n_kinds++];
		h->kind = xstrdup(s->ops->kind);
	}
	for (size_t i = 0; i < N_BUCKETS; i++)
		if (sec <= step_buckets[i]) {
			h->buckets[i]++;
			break;
		}
	h->count++;
	h->sum_us += s->duration_us > 0 ? (uint64_t)s->duration_us : 0;
}

void engine_metrics_run_done(struct engine *e, const struct run *rec)
{
	struct metrics *m = metrics_get(e);
	int i = counted_index(rec->status);

	if (i < 0 || (int)rec->req.event < 0 || rec->req.event >= _EVENT_MAX)
		return;
	m->runs[rec->req.event][i]++;
	note_times(m, rec);
}

void engine_metrics_source_error(struct engine *e)
{
	metrics_get(e)->source_errors++;
}

/* ------------------------------------------------------------ the figures */

static json_t *family(json_t *list, const char *name, const char *type, const char *help)
{
	json_t *samples = json_array();

	json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:o}", "name", name, "type", type, "help", help,
					      "samples", samples));
	return samples;
}

/* Appends {"name", "labels", "value"}; labels and value are stolen. */
static void sample(json_t *samples, const char *name, json_t *labels, json_t *value)
{
	json_array_append_new(samples, json_pack("{s:s, s:o, s:o}", "name", name, "labels", labels ? labels : json_object(),
						 "value", value));
}

static json_t *seconds_of_ms(int64_t ms)
{
	return json_real((double)ms / 1000.0);
}

static void runs_families(struct metrics *m, json_t *list)
{
	json_t *total = family(list, "agentd_runs_total", "counter",
			       "Runs finished since agentd started, by event and final status.");
	json_t *last = family(list, "agentd_last_run_timestamp_seconds", "gauge",
			      "When the last run of each event finished, whatever its status (Unix time).");
	json_t *ok = family(list, "agentd_last_success_timestamp_seconds", "gauge",
			    "When the last successful run of each event finished (Unix time).");

	for (int ev = 0; ev < _EVENT_MAX; ev++) {
		const char *name = event_to_string((enum event)ev);
		for (size_t i = 0; i < N_COUNTED; i++)
			sample(total, "agentd_runs_total",
			       json_pack("{s:s, s:s}", "event", name, "status", run_status_to_string(counted[i])),
			       json_integer((json_int_t)m->runs[ev][i]));
		if (m->last_run_ms[ev])
			sample(last, "agentd_last_run_timestamp_seconds", json_pack("{s:s}", "event", name),
			       seconds_of_ms(m->last_run_ms[ev]));
		if (m->last_success_ms[ev])
			sample(ok, "agentd_last_success_timestamp_seconds", json_pack("{s:s}", "event", name),
			       seconds_of_ms(m->last_success_ms[ev]));
	}
}

static void state_families(struct engine *e, struct metrics *m, json_t *list)
{
	static const char *const states[] = { "idle", "running", "failed", "paused", "unassigned" };
	const char *now = engine_state_name(e);
	json_t *st = family(list, "agentd_state", "gauge",
			    "The agent's state as agentctl status shows it: 1 for the current one, 0 for the others.");
	json_t *info = family(list, "agentd_stack_info", "gauge",
			      "The current stack's revision and the revision the last runs applied (empty: none yet).");
	json_t *err = family(list, "agentd_source_errors_total", "counter",
			     "Fetches and documents of the stack source that failed or were refused, since agentd started.");
	json_t *cur = family(list, "agentd_source_error", "gauge",
			     "1 while the stack source's last fetch or document failed (the last good stack stays), else 0.");

	for (size_t i = 0; i < ELEMENTSOF(states); i++)
		sample(st, "agentd_state", json_pack("{s:s}", "state", states[i]), json_integer(strcmp(now, states[i]) == 0));
	if (e->current)
		sample(info, "agentd_stack_info",
		       json_pack("{s:s, s:s}", "revision", e->current->revision, "applied",
				 e->applied ? e->applied->revision : ""),
		       json_integer(1));
	sample(err, "agentd_source_errors_total", NULL, json_integer((json_int_t)m->source_errors));
	sample(cur, "agentd_source_error", NULL, json_integer(e->source_error != NULL));
}

static void step_family(struct metrics *m, json_t *list)
{
	json_t *h = family(list, "agentd_step_duration_seconds", "histogram",
			   "How long the steps of runs took since agentd started, by kind (skipped steps not counted).");

	for (size_t k = 0; k < m->n_kinds; k++) {
		const struct kind_hist *kh = &m->kinds[k];
		uint64_t cum = 0;
		char le[32];

		for (size_t i = 0; i < N_BUCKETS; i++) {
			cum += kh->buckets[i];
			(void)snprintf(le, sizeof(le), "%g", step_buckets[i]);
			sample(h, "agentd_step_duration_seconds_bucket", json_pack("{s:s, s:s}", "kind", kh->kind, "le", le),
			       json_integer((json_int_t)cum));
		}
		sample(h, "agentd_step_duration_seconds_bucket", json_pack("{s:s, s:s}", "kind", kh->kind, "le", "+Inf"),
		       json_integer((json_int_t)kh->count));
		sample(h, "agentd_step_duration_seconds_sum", json_pack("{s:s}", "kind", kh->kind),
		       json_real((double)kh->sum_us / 1e6));
		sample(h, "agentd_step_duration_seconds_count", json_pack("{s:s}", "kind", kh->kind),
		       json_integer((json_int_t)kh->count));
	}
}

static void jobs_family(struct engine *e, json_t *list)
{
	json_t *jobs = family(list, "agentd_maintenance_last_success_timestamp_seconds", "gauge",
			      "When each maintenance job of this instance last succeeded (Unix time).");
	const char *name;
	int64_t sec;

	for (size_t i = 0; e->schedule && schedule_job_last_success(e->schedule, i, &name, &sec); i++)
		if (sec > 0)
			sample(jobs, "agentd_maintenance_last_success_timestamp_seconds", json_pack("{s:s}", "job", name),
			       json_integer(sec));
}

json_t *engine_metrics(struct engine *e)
{
	struct metrics *m = metrics_get(e);
	json_t *list = json_array();

	runs_families(m, list);
	state_families(e, m, list);
	step_family(m, list);
	jobs_family(e, list);
	return json_pack("{s:o, s:o, s:o}", "metrics", list, "file", json_string_or_null(e->config->metrics_file),
			 "file_error", json_string_or_null(m->write_error));
}

/* -------------------------------------------------------------- the file */

void engine_metrics_write(struct engine *e)
{
	const char *path = e->config->metrics_file;
	struct metrics *m;
	struct buf text;
	json_t *all;
	int r;

	if (!path)
		return;
	m = metrics_get(e);
	all = engine_metrics(e);
	buf_init(&text);
	metrics_text(all, &text);
	json_decref(all);
	if (m->written && strcmp(m->written, text.data) == 0) {
		buf_free(&text);
		return; /* nothing changed since the last write */
	}
	r = file_write_atomic(path, text.data, text.len, 0644, (uid_t)-1, (gid_t)-1);
	if (r < 0) {
		_cleanup_free_ char *why = xasprintf("%s: %s", path, strerror(-r));
		/* Said once per cause: the runs go on without the file. */
		if (!str_eq(m->write_error, why))
			log_warn("Metrics file %s cannot be written (%s); runs go on without it (metrics_file in "
				 "agentd.conf, null turns it off)",
				 path, strerror(-r));
		free(m->write_error);
		m->write_error = xstrdup(why);
		free(m->written);
		m->written = NULL;
		buf_free(&text);
		return;
	}
	if (m->write_error)
		log_info("Metrics file %s written again", path);
	free(m->write_error);
	m->write_error = NULL;
	free(m->written);
	m->written = buf_steal(&text);
}

void engine_metrics_free(struct engine *e)
{
	struct metrics *m = e->metrics;

	if (!m)
		return;
	/* Present while this agentd runs: a stopped agentd (removed package,
	 * stopped service) leaves no figures that look current, so an alert
	 * on their absence fires. Only a file this agentd wrote goes (a second
	 * agentd refused at the state_dir lock wrote none). A crash leaves it:
	 * systemd's restart rewrites it. */
	if (m->written && e->config->metrics_file && unlink(e->config->metrics_file) < 0 && errno != ENOENT)
		log_warn("Metrics file %s cannot be removed: %s", e->config->metrics_file, strerror(errno));
	for (size_t i = 0; i < m->n_kinds; i++)
		free(m->kinds[i].kind);
	free(m->written);
	free(m->write_error);
	free(m);
	e->metrics = NULL;
}

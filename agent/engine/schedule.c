/* SPDX-License-Identifier: BSD-2-Clause */
/* The maintenance scheduler (design.md §8.1; schedule.h says what it
 * promises). Times are whole seconds since the epoch, UTC, as cron gives
 * them; the clock is ops->now_usec.
 *
 * Catch-up follows systemd's Persistent=true: a job is due when the latest
 * due time at or before now (cron_prev + offset) is later than its anchor,
 * max(baseline, last success, the due time it last asked a run for). Down
 * across ten due times, that is still one due time later than the anchor:
 * one run. The due time asked for is kept on disk, so a run that failed is
 * not asked again at the next start (the engine's retries handle a
 * failure), and a job never seen before anchors at "now": it waits for its
 * next due time.
 *
 * Wake-ups: one uv_timer, armed for the earliest next due time of all jobs
 * (no periodic tick); a timerfd on CLOCK_REALTIME with
 * TFD_TIMER_CANCEL_ON_SET, never due, wakes the loop only when the wall
 * clock is set (an NTP step, a resume), so a jump forward catches up at
 * once instead of when the monotonic timer ends.
 *
 * Pause (agentctl pause, like puppet agent --disable) holds scheduled jobs
 * the way it holds every automatic run: a job that falls due while paused
 * is queued once (status shows it in "queue"), the queue starts no run
 * that is not an operator's (queue_next), and it runs once at resume. An
 * operator's `run maintenance --recipe` still runs while paused. */
#include "schedule.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "cron.h"
#include "internal.h"
#include "log.h"
#include "recipes/recipe.h"
#include "stack/stack.h"
#include "util.h"

#define SCHEDULE_VERSION 1
#define SCHEDULE_JOBS_MAX 512
#define SCHEDULE_NAME_MAX 255
#define SCHEDULE_FILE_MAX_BYTES (256u << 10)
#define SCHEDULE_ENTRY_ELEMENTS 16 /* a job: key, object, 6 keys, 6 values */
#define SCHEDULE_TIME_MAX INT64_C(253402300799) /* 9999-12-31T23:59:59Z */
/* A stamp later than now by more than this is not trusted (written while
 * the clock was ahead): systemd's timers do the same with a stamp file in
 * the future. */
#define SCHEDULE_FUTURE_SEC 60
/* A due time found passed by more than this was missed (agentd was down,
 * the clock was set): its catch-up waits for the job's offset first. */
#define SCHEDULE_LATE_SEC 60

struct sjob {
	char *name, *schedule, *source, *lock; /* owned */
	long splay, offset;
	struct cron cron;
	bool cron_ok;
	int64_t baseline;      /* first seen with this schedule and splay */
	int64_t requested;     /* the due time a run was last asked for, 0: none */
	int64_t last_success;  /* 0: none */
	long last_run;         /* the run of last_success, 0: none */
	int64_t catch_up;      /* a missed due time's run waits until then, 0: none */
};

struct schedule {
	uv_loop_t *loop;
	uv_timer_t timer;
	uv_poll_t clock_poll;
	int clock_fd;          /* -1: no clock watch */
	unsigned closing;
	char *path;            /* owned */
	const struct schedule_ops *ops;
	void *userdata;
	char *instance;        /* owned */
	struct sjob *v;        /* owned */
	size_t n;
	json_t *loaded;        /* owned: the file's jobs until the first schedule_set_jobs */
	int64_t next_due;      /* what the timer is armed for, -1: none */
};

long schedule_offset(const char *instance, const char *job, long splay)
{
	uint64_t h = hash_fnv1a64(instance, strlen(instance) + 1, HASH_FNV_SEED);

	if (splay <= 0)
		return 0;
	h = hash_fnv1a64(job, strlen(job), h);
	return (long)(h % (uint64_t)(splay + 1));
}

static int64_t now_sec(const struct schedule *s)
{
	int64_t u = s->ops->now_usec(s->userdata);
	return u >= 0 ? u / 1000000 : -((-u + 999999) / 1000000);
}

static void rfc3339(int64_t sec, char *buf, size_t n)
{
	time_format_rfc3339(sec * 1000000, buf, n);
}

/* ------------------------------------------------------------ the file */

static bool int_in(const json_t *v, int64_t min, int64_t max, int64_t *ret)
{
	if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max)
		return false;
	*ret = json_integer_value(v);
	return true;
}

/* What is wrong with the optional stamp key of x (absent is fine), kept in
 * c when it checks. */
static const char *stamp_problem(const json_t *x, json_t *c, const char *key, int64_t min, int64_t max)
{
	const json_t *v = json_object_get(x, key);
	int64_t t;

	if (!v)
		return NULL;
	if (!int_in(v, min, max, &t))
		return json_is_integer(v) ? "out of range" : "not an integer";
	json_object_set_new(c, key, json_integer(t));
	return NULL;
}

/* Why the entry x of the file is not what agentd writes (NULL: it is),
 * its checked keys into c. */
static const char *entry_problem(const char *k, const json_t *x, json_t *c, const char **ret_key)
{
	static const struct {
		const char *key;
		int64_t min, max;
	} keys[] = { { "splay", 0, 86400 }, { "requested", 0, SCHEDULE_TIME_MAX },
		     { "last_success", 0, SCHEDULE_TIME_MAX }, { "last_run", 1, ENGINE_RUN_ID_MAX } };
	const char *why;
	int64_t t;

	*ret_key = NULL;
	if (!json_is_object(x))
		return "not an object";
	if (strlen(k) > SCHEDULE_NAME_MAX)
		return "a name too long";
	*ret_key = "schedule";
	if (!json_is_string(json_object_get(x, "schedule")))
		return "not a string";
	*ret_key = "baseline";
	if (!int_in(json_object_get(x, "baseline"), 0, SCHEDULE_TIME_MAX, &t))
		return json_is_integer(json_object_get(x, "baseline")) ? "out of range" : "not an integer";
	json_object_set(c, "schedule", json_object_get(x, "schedule"));
	json_object_set_new(c, "baseline", json_integer(t));
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		*ret_key = keys[i].key;
		if ((why = stamp_problem(x, c, keys[i].key, keys[i].min, keys[i].max)))
			return why;
	}
	return NULL;
}

/* The file's jobs, checked: name -> {schedule, splay, baseline, requested,
 * last_success, last_run}. A file that is not what agentd writes (not
 * JSON, another version, "jobs" not an object) is taken as none, and an
 * entry that does not check is dropped, with a warning naming the file and
 * the first fault (design.md §7: corrupt state is reported, then reset). */
static json_t *schedule_load(const char *path)
{
	_cleanup_free_ char *data = NULL, *first = NULL;
	json_t *in, *out = json_object(), *x, *jobs;
	json_error_t jerr;
	const char *k;
	size_t len, bad = 0;
	int64_t version;
	int r;

	r = file_read_regular(AT_FDCWD, path, 0, SCHEDULE_FILE_MAX_BYTES, &data, &len);
	if (r == -ENOENT)
		return out;
	if (r < 0) {
		log_warn("Schedule state %s cannot be read (%s): every job starts afresh", path, file_read_strerror(r));
		return out;
	}
	if (json_bounds_check(data, len, (size_t)SCHEDULE_JOBS_MAX * SCHEDULE_ENTRY_ELEMENTS + 8, 4) < 0 ||
	    !(in = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr)) || !json_is_object(in)) {
		log_warn("Schedule state %s is not what agentd writes: every job starts afresh", path);
		return out;
	}
	jobs = json_object_get(in, "jobs");
	if (!int_in(json_object_get(in, "version"), SCHEDULE_VERSION, SCHEDULE_VERSION, &version) || !json_is_object(jobs)) {
		log_warn("Schedule state %s is not what agentd writes (%s): every job starts afresh", path,
			 !json_is_integer(json_object_get(in, "version")) ? "no integer \"version\""
			 : json_integer_value(json_object_get(in, "version")) != SCHEDULE_VERSION
				 ? "another \"version\" than 1"
				 : "\"jobs\" is not an object");
		json_decref(in);
		return out;
	}
	json_object_foreach(jobs, k, x) {
		json_t *c = json_object();
		const char *key = NULL, *why = json_object_size(out) >= SCHEDULE_JOBS_MAX ? "too many jobs" : NULL;

		if (!why)
			why = entry_problem(k, x, c, &key);
		if (!why) {
			json_object_set_new(out, k, c);
			continue;
		}
		json_decref(c);
		if (!bad++) {
			_cleanup_free_ char *name = str_escape_ctl(k);
			first = xasprintf("job \"%s\"%s%s: %s", name, key ? " key " : "", key ? key : "", why);
		}
	}
	if (bad)
		log_warn("Schedule state %s is not what agentd writes (%s%s): %zu job%s start%s afresh", path, first,
			 bad > 1 ? ", and more" : "", bad, bad == 1 ? "" : "s", bad == 1 ? "s" : "");
	json_decref(in);
	return out;
}

static void schedule_write(struct schedule *s)
{
	json_t *jobs = json_object(), *o;
	_cleanup_free_ char *data = NULL;
	int r;

	for (size_t i = 0; i < s->n; i++) {
		const struct sjob *j = &s->v[i];
		o = json_pack("{s:s, s:I, s:I}", "schedule", j->schedule, "splay", (json_int_t)j->splay, "baseline",
			      (json_int_t)j->baseline);
		if (j->requested)
			json_object_set_new(o, "requested", json_integer(j->requested));
		if (j->last_success)
			json_object_set_new(o, "last_success", json_integer(j->last_success));
		if (j->last_run)
			json_object_set_new(o, "last_run", json_integer(j->last_run));
		json_object_set_new(jobs, j->name, o);
	}
	o = json_pack("{s:i, s:o}", "version", SCHEDULE_VERSION, "jobs", jobs);
	data = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	r = data ? file_write_atomic(s->path, data, strlen(data), 0600, (uid_t)-1, (gid_t)-1) : -ENOMEM;
	if (r < 0)
		log_warn("Failed to write the schedule state %s (kept in memory, written again at the next change): %s",
			 s->path, strerror(-r));
}

/* ------------------------------------------------------------- the check */

static void on_timer(uv_timer_t *t)
{
	schedule_check(t->data);
}

/* The due time of j at or before now, and the next one after it (-1:
 * none). */
static int64_t job_due(const struct sjob *j, int64_t now, int64_t *ret_next)
{
	int64_t p = cron_prev(&j->cron, now - j->offset), n = cron_next(&j->cron, now - j->offset);

	if (ret_next)
		*ret_next = n >= 0 ? n + j->offset : -1;
	return p >= 0 ? p + j->offset : -1;
}

static int64_t max3(int64_t a, int64_t b, int64_t c)
{
	int64_t m = a > b ? a : b;
	return m > c ? m : c;
}

/* Stamps later than now (+ SCHEDULE_FUTURE_SEC) were written while the
 * clock was ahead, and would hold the job's catch-up until the clock
 * reached them: a last success or due time asked for in the future is
 * dropped, a baseline in the future becomes now, said once (the stamp is
 * gone after). Returns whether anything changed. */
static bool sjob_distrust_future(struct sjob *j, int64_t now)
{
	int64_t limit = now + SCHEDULE_FUTURE_SEC;
	char a[40], b[40], c[40];

	if (j->baseline <= limit && j->requested <= limit && j->last_success <= limit)
		return false;
	rfc3339(j->baseline, a, sizeof(a));
	rfc3339(j->requested, b, sizeof(b));
	rfc3339(j->last_success, c, sizeof(c));
	log_warn("Maintenance job %s has times in the future in its schedule state (baseline %s, asked for %s, "
		 "last success %s; the clock was ahead?): not trusted, the job is checked from now",
		 j->name, a, j->requested ? b : "-", j->last_success ? c : "-");
	if (j->baseline > limit)
		j->baseline = now;
	if (j->requested > limit)
		j->requested = 0;
	if (j->last_success > limit) {
		j->last_success = 0;
		j->last_run = 0;
	}
	return true;
}

/* Whether job j, due at due (later than its anchor), is asked for now: at
 * once when the due time has just come (the timer), else (missed: agentd
 * was down, or the clock was set) at the moment the miss was seen plus the
 * job's offset, so that a fleet back from an outage does not catch up all
 * at once (systemd: Persistent=true is still delayed by
 * RandomizedDelaySec). */
static bool sjob_ready(struct sjob *j, int64_t due, int64_t now)
{
	char buf[40];

	if (now - due <= SCHEDULE_LATE_SEC)
		return true;
	if (!j->catch_up) {
		j->catch_up = now + j->offset;
		if (j->offset > 0) {
			rfc3339(j->catch_up, buf, sizeof(buf));
			log_info("Maintenance job %s missed a due time: caught up at %s (its offset, %lds)", j->name, buf,
				 j->offset);
		}
	}
	return now >= j->catch_up;
}

void schedule_check(struct schedule *s)
{
	int64_t now = now_sec(s), next = -1, now_usec;
	bool dirty = false;

	for (size_t i = 0; i < s->n; i++) {
		struct sjob *j = &s->v[i];
		int64_t n, due;

		if (!j->cron_ok)
			continue;
		dirty |= sjob_distrust_future(j, now);
		due = job_due(j, now, &n);
		if (due >= 0 && due > max3(j->baseline, j->requested, j->last_success)) {
			/* A run already waiting or running stands for this due
			 * time: never two of one job in the queue. */
			if (s->ops->pending(s->userdata, j->name) ||
			    (sjob_ready(j, due, now) && s->ops->request(s->userdata, j->name) == 0)) {
				j->requested = due;
				j->catch_up = 0;
				dirty = true;
			}
		} else
			j->catch_up = 0;
		if (j->catch_up > now && (n < 0 || j->catch_up < n))
			n = j->catch_up;
		if (n >= 0 && (next < 0 || n < next))
			next = n;
	}
	if (dirty)
		schedule_write(s);
	s->next_due = next;
	if (next < 0 || s->closing) {
		(void)uv_timer_stop(&s->timer);
		return;
	}
	/* The loop's cached time could be older than now: from the real now,
	 * or the timer fires early and only arms itself again. */
	uv_update_time(s->loop);
	now_usec = s->ops->now_usec(s->userdata);
	(void)uv_timer_start(&s->timer, on_timer, (uint64_t)((next * 1000000 - now_usec) / 1000) + 1, 0);
}

/* --------------------------------------------------------- the clock watch */

static int clock_watch_arm(int fd)
{
	/* Never due: only TFD_TIMER_CANCEL_ON_SET matters. */
	struct itimerspec its = { .it_value = { .tv_sec = (time_t)SCHEDULE_TIME_MAX } };
	return timerfd_settime(fd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &its, NULL) < 0 ? -errno : 0;
}

static void on_clock_set(uv_poll_t *p, int status, int events)
{
	struct schedule *s = p->data;
	uint64_t n;

	(void)events;
	if (status < 0)
		return;
	/* ECANCELED: the clock was set. Read it to clear, then arm again. */
	if (read(s->clock_fd, &n, sizeof(n)) < 0 && errno != ECANCELED && errno != EAGAIN)
		return;
	(void)clock_watch_arm(s->clock_fd);
	log_info("The wall clock was set: checking the schedule");
	schedule_check(s);
}

static void clock_watch_start(struct schedule *s)
{
	s->clock_fd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
	if (s->clock_fd < 0 || clock_watch_arm(s->clock_fd) < 0 ||
	    uv_poll_init(s->loop, &s->clock_poll, s->clock_fd) < 0) {
		log_debug("No watch of the wall clock (%m): the schedule notices a jump at its next due time");
		if (s->clock_fd >= 0)
			(void)close(s->clock_fd);
		s->clock_fd = -1;
		return;
	}
	s->clock_poll.data = s;
	(void)uv_poll_start(&s->clock_poll, UV_READABLE, on_clock_set);
}

/* ----------------------------------------------------------- life cycle */

int schedule_new(uv_loop_t *loop, const char *state_path, const struct schedule_ops *ops, void *userdata,
		 struct schedule **ret)
{
	struct schedule *s = xcalloc(1, sizeof(*s));

	s->loop = loop;
	s->path = xstrdup(state_path);
	s->ops = ops;
	s->userdata = userdata;
	s->instance = xstrdup("");
	s->next_due = -1;
	s->loaded = schedule_load(state_path);
	(void)uv_timer_init(loop, &s->timer);
	s->timer.data = s;
	clock_watch_start(s);
	*ret = s;
	return 0;
}

static void sjob_done(struct sjob *j)
{
	free(j->name);
	free(j->schedule);
	free(j->source);
	free(j->lock);
}

static void on_closed(uv_handle_t *h)
{
	struct schedule *s = h->data;

	if (--s->closing > 0)
		return;
	for (size_t i = 0; i < s->n; i++)
		sjob_done(&s->v[i]);
	free(s->v);
	json_decref(s->loaded);
	free(s->instance);
	free(s->path);
	free(s);
}

void schedule_free(struct schedule *s)
{
	if (!s)
		return;
	s->closing = 1;
	(void)uv_timer_stop(&s->timer);
	if (s->clock_fd >= 0) {
		s->closing++;
		(void)uv_poll_stop(&s->clock_poll);
		uv_close((uv_handle_t *)&s->clock_poll, on_closed);
	}
	uv_close((uv_handle_t *)&s->timer, on_closed);
	if (s->clock_fd >= 0)
		(void)close(s->clock_fd); /* libuv leaves the descriptor to its owner */
}

/* What was known of job name: from the jobs so far, else from the file. */
static void sjob_restore(struct schedule *s, struct sjob *j, int64_t now)
{
	const json_t *f;
	int64_t t;

	for (size_t i = 0; i < s->n; i++) {
		const struct sjob *o = &s->v[i];
		if (strcmp(o->name, j->name) != 0)
			continue;
		j->last_success = o->last_success;
		j->last_run = o->last_run;
		if (strcmp(o->schedule, j->schedule) == 0 && o->splay == j->splay) {
			j->baseline = o->baseline;
			j->requested = o->requested;
			j->catch_up = o->catch_up;
		}
		return;
	}
	f = json_object_get(s->loaded, j->name);
	if (f) {
		if (int_in(json_object_get(f, "last_success"), 0, SCHEDULE_TIME_MAX, &t))
			j->last_success = t;
		if (int_in(json_object_get(f, "last_run"), 1, ENGINE_RUN_ID_MAX, &t))
			j->last_run = (long)t;
		if (str_eq(json_string_value(json_object_get(f, "schedule")), j->schedule) &&
		    int_in(json_object_get(f, "splay"), 0, 86400, &t) && t == j->splay) {
			j->baseline = json_integer_value(json_object_get(f, "baseline"));
			if (int_in(json_object_get(f, "requested"), 0, SCHEDULE_TIME_MAX, &t))
				j->requested = t;
		}
	}
	if (!j->baseline) {
		/* First seen (or another schedule): wait for the next due time. */
		j->baseline = now;
		j->requested = 0;
	}
	(void)sjob_distrust_future(j, now);
}

void schedule_set_jobs(struct schedule *s, const char *instance, const struct recipe_jobs *jobs)
{
	int64_t now = now_sec(s);
	struct sjob *v = xcalloc(jobs->n + 1, sizeof(*v));
	size_t n = 0;

	free(s->instance);
	s->instance = xstrdup(instance);
	for (size_t i = 0; i < jobs->n && n < SCHEDULE_JOBS_MAX; i++) {
		const struct recipe_job *rj = &jobs->v[i];
		struct sjob *j = &v[n++];
		_cleanup_free_ char *err = NULL;

		j->name = xstrdup(rj->name);
		j->schedule = xstrdup(rj->schedule ? rj->schedule : "");
		j->source = rj->source ? xstrdup(rj->source) : NULL;
		j->lock = rj->lock ? xstrdup(rj->lock) : NULL;
		j->splay = rj->splay < 0 ? 0 : rj->splay > 86400 ? 86400 : rj->splay;
		j->offset = schedule_offset(instance, j->name, j->splay);
		j->cron_ok = cron_parse(j->schedule, &j->cron, &err) == 0;
		if (!j->cron_ok) /* validation refuses these: a family's bug */
			log_error("Maintenance job %s is not scheduled: %s", j->name, err);
		sjob_restore(s, j, now);
	}
	for (size_t i = 0; i < s->n; i++)
		sjob_done(&s->v[i]);
	free(s->v);
	s->v = v;
	s->n = n;
	json_decref(s->loaded);
	s->loaded = NULL;
	schedule_write(s);
	schedule_check(s);
}

void schedule_success(struct schedule *s, const char *job, long run_id, int64_t finished_usec)
{
	for (size_t i = 0; i < s->n; i++) {
		struct sjob *j = &s->v[i];
		if (strcmp(j->name, job) != 0)
			continue;
		j->last_success = finished_usec / 1000000;
		j->last_run = run_id;
		schedule_write(s);
		return;
	}
}

bool schedule_job_last_success(const struct schedule *s, size_t i, const char **ret_name, int64_t *ret_sec)
{
	if (i >= s->n)
		return false;
	*ret_name = s->v[i].name;
	*ret_sec = s->v[i].last_success;
	return true;
}

int64_t schedule_next_due(const struct schedule *s)
{
	return s->next_due;
}

json_t *schedule_json(const struct schedule *s)
{
	json_t *jobs = json_array();
	int64_t now = now_sec(s);
	char buf[40];

	for (size_t i = 0; i < s->n; i++) {
		const struct sjob *j = &s->v[i];
		int64_t next = -1;
		json_t *o;

		if (j->cron_ok)
			(void)job_due(j, now, &next);
		if (j->catch_up && (next < 0 || j->catch_up < next))
			next = j->catch_up; /* a missed due time's run, waiting for the offset */
		o = json_pack("{s:s, s:s, s:I, s:I, s:o, s:o}", "name", j->name, "schedule", j->schedule, "splay",
			      (json_int_t)j->splay, "offset", (json_int_t)j->offset, "source",
			      json_string_or_null(j->source), "lock", json_string_or_null(j->lock));
		if (j->last_success) {
			rfc3339(j->last_success, buf, sizeof(buf));
			json_object_set_new(o, "last_success", json_string(buf));
		} else
			json_object_set_new(o, "last_success", json_null());
		json_object_set_new(o, "last_success_run", j->last_run ? json_integer(j->last_run) : json_null());
		if (next >= 0) {
			rfc3339(next, buf, sizeof(buf));
			json_object_set_new(o, "next_run", json_string(buf));
		} else
			json_object_set_new(o, "next_run", json_null());
		json_array_append_new(jobs, o);
	}
	return json_pack("{s:o}", "jobs", jobs);
}

/* ------------------------------------------------------- the engine's side */

static int64_t engine_clock(void *userdata)
{
	(void)userdata;
	return time_now_usec();
}

static bool engine_job_pending(void *userdata, const char *job)
{
	const struct engine *e = userdata;

	for (size_t i = 0; i < e->runs.n; i++) {
		const struct run *r = e->runs.v[i];
		if (run_is_pending(r) && r->req.event == EVENT_MAINTENANCE && str_eq(r->req.recipe, job))
			return true;
	}
	return false;
}

static int engine_job_request(void *userdata, const char *job)
{
	struct engine *e = userdata;
	_cleanup_free_ char *err = NULL;
	long id = 0;
	int r;

	r = engine_request_run(e, EVENT_MAINTENANCE, NULL, NULL, job, TRIGGER_SCHEDULE, &id, &err);
	if (r < 0)
		log_warn("Maintenance job %s is due but cannot be queued: %s", job, err ? err : strerror(-r));
	else
		log_info("Maintenance job %s is due: run %ld%s", job, id, e->paused ? " (held while paused)" : "");
	return r;
}

static const struct schedule_ops engine_schedule_ops = { engine_clock, engine_job_pending, engine_job_request };

void engine_schedule_start(struct engine *e)
{
	_cleanup_free_ char *path = state_path(e, "schedule.json");

	if (schedule_new(e->loop, path, &engine_schedule_ops, e, &e->schedule) < 0)
		return;
	engine_schedule_stack(e);
}

void engine_schedule_stack(struct engine *e)
{
	struct recipe_jobs jobs = { 0 };

	if (!e->schedule || !e->current || e->stopping)
		return;
	recipes_jobs(e->current, e->config, &jobs);
	schedule_set_jobs(e->schedule, e->current->instance, &jobs);
	recipe_jobs_free(&jobs);
}

void engine_schedule_run_done(struct engine *e, const struct run *rec)
{
	if (e->schedule && rec->status == RUN_SUCCESS && rec->req.event == EVENT_MAINTENANCE && rec->req.recipe)
		schedule_success(e->schedule, rec->req.recipe, rec->id, time_now_usec());
}

void engine_schedule_stop(struct engine *e)
{
	schedule_free(e->schedule);
	e->schedule = NULL;
}

static json_t *member_or_null(const json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return v ? json_incref(v) : json_null();
}

/* The newest run of job: {"id", "status", "started", "finished"}, or null. */
static json_t *job_last_run(const struct engine *e, const char *job)
{
	for (size_t i = 0; i < e->runs.n; i++) {
		const struct run *r = e->runs.v[i];
		if (r->req.event != EVENT_MAINTENANCE || !str_eq(r->req.recipe, job))
			continue;
		json_t *o = run_to_json(r, RUN_VIEW_PUBLIC);
		json_t *l = json_pack("{s:o, s:o, s:o, s:o}", "id", member_or_null(o, "id"), "status",
				      member_or_null(o, "status"), "started", member_or_null(o, "started"), "finished",
				      member_or_null(o, "finished"));
		json_decref(o);
		return l;
	}
	return json_null();
}

json_t *engine_schedule(struct engine *e)
{
	json_t *o = e->schedule ? schedule_json(e->schedule) : json_pack("{s:[]}", "jobs"), *j;
	size_t i;

	json_array_foreach(json_object_get(o, "jobs"), i, j) {
		const char *name = json_string_value(json_object_get(j, "name"));
		const char *lock = json_string_value(json_object_get(j, "lock"));
		json_object_set_new(j, "last_run", job_last_run(e, name));
		json_object_set_new(j, "holds_lock", json_boolean(lock && engine_gate_held(e, lock)));
	}
	json_object_set_new(o, "paused", json_boolean(e->paused != NULL));
	return o;
}

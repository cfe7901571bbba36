/* SPDX-License-Identifier: BSD-2-Clause */
/* file:// — the stack in a local file, watched with inotify (uv_fs_event on
 * directories, so that editors that write a temporary file and rename it
 * over the old one are seen).
 *
 * The path is watched through its symlinks (design.md §4): a Kubernetes
 * ConfigMap swaps its "..data" link in the directory above the file,
 * Capistrano swaps "current", and /etc/agentd may link into /srv. The path
 * is resolved the way the kernel does it, one component at a time
 * (file_resolve), and every directory that holds a link on the way is
 * watched for that link's name, as is the directory that holds the file
 * itself (or the first missing component). An event for one of those names,
 * or a watched directory removed or replaced, re-resolves the path, re-arms
 * the watches when the chain changed, and reads the file: a swap is seen as
 * fast as a rename. A watch that cannot be armed is retried by a short
 * timer; a slow safety poll (poll_interval) catches anything a watch could
 * miss.
 *
 * The file is read on libuv's thread pool (uv_queue_work), one read at a
 * time, so that the loop keeps serving while up to 16 MiB come in (5-20 ms
 * measured for 16 MiB from the page cache, more from a slow disk); a gzip
 * file is decompressed there too (source_gunzip). A change seen during a
 * read asks for one more read after it. Only the first read, in start, is
 * done in place: the loop serves nothing yet, and the stack is then in force
 * before the daemon says it is ready. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "source.h"
#include "config.h"
#include "stack/stack.h"
#include "util.h"

#define FILE_DEBOUNCE_MS 5
#define FILE_REARM_MS 500
#define FILE_MAX_LINKS 40 /* the kernel's MAXSYMLINKS: more is ELOOP for open() too */
#define FILE_MAX_SPOTS (FILE_MAX_LINKS + 2)

struct file_source;

/* One watched directory and the entries in it on the way to the file. */
struct file_watch {
	uv_fs_event_t h;             /* data points here */
	struct file_source *f;       /* borrowed: owner */
	char *dir;                   /* owned: resolved (no symlink in it) */
	char *names[FILE_MAX_SPOTS]; /* owned */
	size_t n_names;
	dev_t dev;                   /* of dir when armed (0: stat failed) */
	ino_t ino;
	bool open;                   /* the handle was initialised: it must be closed */
	bool armed;
	struct file_watch *next;     /* owned */
};

struct file_source {
	struct source *s;          /* borrowed: owner */
	char *path;                /* owned */
	char *url;                 /* owned: s->url, for the thread, which may outlive s */
	struct file_watch *watches; /* owned; each freed in its close callback once dropped */
	uv_timer_t debounce;
	uv_timer_t poll;           /* safety poll and re-arm */
	bool watching;             /* every watch the path needs is armed */
	int last_errno;            /* last read error reported, so it is reported once */
	unsigned pending;          /* open handles and a read under way: f is freed at 0 once stopped */
	bool stopped;

	/* The read on the thread pool. The thread touches only path, url
	 * and the results; the loop reads them once the work is done. */
	uv_work_t work;
	bool reading;              /* work queued or running */
	bool read_again;           /* asked for while reading: one more read after it */
	char *read_data;           /* owned: result of the thread's read */
	size_t read_len;
	int read_errno;            /* 0 or the negative errno of the read */
	char *read_error;          /* owned: the message of a gzip error, may be NULL */
};

/* ---------------------------------------------------------------- reading */

/* The path may be a symlink (a ConfigMap's ..data swap), followed; but what
 * it names must be a regular file, opened without waiting (a FIFO would block
 * in open() for good) and read with a cap. A gzip file is decompressed, with
 * the same cap on the document; its errors come back in *ret_error. Runs on
 * the thread pool: touches only path and url. */
static int file_read(const char *path, const char *url, char **ret_data, size_t *ret_len, char **ret_error)
{
	_cleanup_free_ char *data = NULL;
	char *doc = NULL;
	size_t len = 0, doc_len = 0;
	int r;

	*ret_data = NULL;
	*ret_len = 0;
	*ret_error = NULL;
	r = file_read_regular(AT_FDCWD, path, FILE_READ_FOLLOW, STACK_MAX_BYTES, &data, &len);
	if (r < 0)
		return r;
	r = source_gunzip(url, data, len, &doc, &doc_len, ret_error);
	if (r < 0)
		return r;
	if (doc) {
		*ret_data = doc;
		*ret_len = doc_len;
	} else {
		*ret_data = data;
		*ret_len = len;
		data = NULL;
	}
	return 0;
}

/* Reports a read's outcome to the engine; data and error are borrowed. */
static void file_read_result(struct file_source *f, int r, const char *data, size_t len, const char *error)
{
	if (r < 0) {
		if (error)
			source_fail(f->s, "%s", error);
		else if (r == -EFBIG)
			source_fail(f->s, "%s: larger than %d bytes", f->s->url, STACK_MAX_BYTES);
		else if (r != f->last_errno)
			source_fail(f->s, "%s: %s", f->s->url, file_read_strerror(r));
		else
			f->s->last_fetch_usec = time_now_usec();
		f->last_errno = r;
		return;
	}
	f->last_errno = 0;
	source_deliver(f->s, data, len);
}

static void file_free(struct file_source *f)
{
	free(f->path);
	free(f->url);
	free(f->read_data);
	free(f->read_error);
	free(f);
}

/* A handle closed or the read ended; frees f after stop once all did. */
static void file_release(struct file_source *f)
{
	if (--f->pending == 0 && f->stopped)
		file_free(f);
}

static void work_read(uv_work_t *w)
{
	struct file_source *f = w->data;

	f->read_errno = file_read(f->path, f->url, &f->read_data, &f->read_len, &f->read_error);
}

static void file_read_now(struct file_source *f);

static void on_read_done(uv_work_t *w, int status)
{
	struct file_source *f = w->data;
	_cleanup_free_ char *data = f->read_data, *error = f->read_error;
	size_t len = f->read_len;
	int r = status < 0 ? status : f->read_errno;

	f->read_data = f->read_error = NULL;
	f->reading = false;
	if (f->stopped) {
		file_release(f);
		return;
	}
	f->pending--;
	/* The file changed while it was read: read it again, after this
	 * result, which the engine hears first (both, in order). */
	if (f->read_again) {
		f->read_again = false;
		file_read_now(f);
	}
	file_read_result(f, r, data, len, error);
}

/* Reads the file on the thread pool; the result comes from the loop. */
static void file_read_now(struct file_source *f)
{
	int r;

	if (f->stopped)
		return;
	if (f->reading) {
		f->read_again = true;
		return;
	}
	f->work.data = f;
	f->read_data = f->read_error = NULL;
	f->read_errno = 0;
	r = uv_queue_work(f->s->loop, &f->work, work_read, on_read_done);
	if (r < 0) {
		/* Never for a valid loop and callback; read in place rather
		 * than miss a change. */
		_cleanup_free_ char *data = NULL, *error = NULL;
		size_t len = 0;
		r = file_read(f->path, f->url, &data, &len, &error);
		file_read_result(f, r, data, len, error);
		return;
	}
	f->reading = true;
	f->pending++;
}

/* ---------------------------------------------------------------- the chain of links */

struct file_spot {
	char *dir;  /* owned: a resolved directory */
	char *name; /* owned: an entry in it the path goes through */
};

static void spots_add(struct file_spot *spots, size_t *n, const char *dir, const char *name)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp(spots[i].dir, dir) == 0 && strcmp(spots[i].name, name) == 0)
			return;
	if (*n == FILE_MAX_SPOTS)
		return;
	spots[*n].dir = xstrdup(dir);
	spots[*n].name = xstrdup(name);
	(*n)++;
}

static void spots_free(struct file_spot *spots, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(spots[i].dir);
		free(spots[i].name);
	}
}

static char *path_child(const char *dir, const char *name)
{
	return strcmp(dir, "/") == 0 ? xasprintf("/%s", name) : xasprintf("%s/%s", dir, name);
}

/* dir's parent, in place; "/" stays "/". dir has no symlink in it, so the
 * parent by text is the real one. */
static void path_up(char *dir)
{
	char *slash = strrchr(dir, '/');

	if (slash == dir)
		dir[1] = '\0';
	else if (slash)
		*slash = '\0';
}

static char *link_read(const char *path)
{
	char target[PATH_MAX];
	ssize_t n = readlink(path, target, sizeof(target) - 1);

	if (n <= 0)
		return NULL;
	target[n] = '\0';
	return xstrdup(target);
}

/* Walks path the way the kernel resolves it, one component at a time, and
 * lists in spots[0..*n) the directory entries the file depends on: every
 * symlink on the way (with the directory that holds it) and the last entry
 * reached (the file itself, or the first component that is missing or not
 * a directory). Follows at most FILE_MAX_LINKS links. */
static void file_resolve(const char *path, struct file_spot *spots, size_t *n)
{
	_cleanup_free_ char *todo = xstrdup(path), *cur = xstrdup("/");
	const char *p = todo;
	unsigned links = 0;

	for (;;) {
		_cleanup_free_ char *name = NULL, *full = NULL, *target = NULL;
		struct stat st;
		size_t len;
		bool last;

		p += strspn(p, "/");
		if (!*p)
			return;
		len = strcspn(p, "/");
		name = xstrndup(p, len);
		p += len;
		last = p[strspn(p, "/")] == '\0';
		if (strcmp(name, ".") == 0)
			continue;
		if (strcmp(name, "..") == 0) {
			path_up(cur);
			continue;
		}
		full = path_child(cur, name);
		if (lstat(full, &st) < 0 || (!S_ISLNK(st.st_mode) && (last || !S_ISDIR(st.st_mode)))) {
			spots_add(spots, n, cur, name);
			return;
		}
		if (!S_ISLNK(st.st_mode)) {
			free(cur);
			cur = full;
			full = NULL;
			continue;
		}
		spots_add(spots, n, cur, name);
		if (++links > FILE_MAX_LINKS || !(target = link_read(full)))
			return;
		/* The rest of the path now goes through the link's target,
		 * relative to the link's directory unless absolute. */
		char *next = xasprintf("%s/%s", target, p);
		if (target[0] == '/') {
			free(cur);
			cur = xstrdup("/");
		}
		free(todo);
		todo = next;
		p = todo;
	}
}

/* ---------------------------------------------------------------- watches */

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status);

static void watch_free(struct file_watch *w)
{
	free(w->dir);
	for (size_t i = 0; i < w->n_names; i++)
		free(w->names[i]);
	free(w);
}

static void on_watch_closed(uv_handle_t *h)
{
	struct file_watch *w = h->data;
	struct file_source *f = w->f;

	watch_free(w);
	file_release(f);
}

/* Closes every watch; each is freed in its close callback. */
static void file_drop_watches(struct file_source *f)
{
	struct file_watch *w = f->watches;

	f->watches = NULL;
	while (w) {
		struct file_watch *next = w->next;
		w->armed = false;
		w->next = NULL;
		if (w->open)
			uv_close((uv_handle_t *)&w->h, on_watch_closed);
		else
			watch_free(w);
		w = next;
	}
	f->watching = false;
}

/* The directories to watch for spots, one watch each, not yet armed. */
static struct file_watch *watches_for(struct file_source *f, const struct file_spot *spots, size_t n)
{
	struct file_watch *list = NULL, **tail = &list;

	for (size_t i = 0; i < n; i++) {
		struct file_watch *w = list;
		struct stat st;

		while (w && strcmp(w->dir, spots[i].dir) != 0)
			w = w->next;
		if (!w) {
			w = xcalloc(1, sizeof(*w));
			w->f = f;
			w->dir = xstrdup(spots[i].dir);
			if (stat(w->dir, &st) == 0) {
				w->dev = st.st_dev;
				w->ino = st.st_ino;
			}
			*tail = w;
			tail = &w->next;
		}
		w->names[w->n_names++] = xstrdup(spots[i].name);
	}
	return list;
}

static bool watches_equal(const struct file_watch *a, const struct file_watch *b)
{
	for (; a && b; a = a->next, b = b->next) {
		if (!a->armed || strcmp(a->dir, b->dir) != 0 || a->dev != b->dev || a->ino != b->ino ||
		    a->n_names != b->n_names)
			return false;
		for (size_t i = 0; i < a->n_names; i++)
			if (strcmp(a->names[i], b->names[i]) != 0)
				return false;
	}
	return !a && !b;
}

/* Resolves the path again and arms the watches its chain of links needs,
 * unless the ones armed are those already. Sets f->watching; returns the
 * error of the first watch that could not be armed, or 0. */
static int file_rewatch(struct file_source *f)
{
	struct file_spot spots[FILE_MAX_SPOTS];
	struct file_watch *want;
	size_t n = 0;
	int first = 0;

	file_resolve(f->path, spots, &n);
	want = watches_for(f, spots, n);
	spots_free(spots, n);
	if (f->watching && watches_equal(f->watches, want)) {
		while (want) {
			struct file_watch *next = want->next;
			watch_free(want);
			want = next;
		}
		return 0;
	}
	file_drop_watches(f);
	f->watches = want;
	for (struct file_watch *w = want; w; w = w->next) {
		int r = uv_fs_event_init(f->s->loop, &w->h);
		if (r < 0) {
			/* Never for a valid loop; the handle is not open. */
			first = first ? first : r;
			continue;
		}
		f->pending++;
		w->open = true;
		w->h.data = w;
		r = uv_fs_event_start(&w->h, on_fs_event, w->dir, 0);
		w->armed = r == 0;
		if (r < 0 && !first)
			first = r;
	}
	f->watching = first == 0;
	return first;
}

/* The watched directory was removed or replaced: the inotify watch is on
 * an inode the path no longer reaches. */
static bool watch_dir_changed(const struct file_watch *w)
{
	struct stat st;

	if (stat(w->dir, &st) < 0)
		return true;
	return st.st_dev != w->dev || st.st_ino != w->ino;
}

static bool watch_has_name(const struct file_watch *w, const char *name)
{
	for (size_t i = 0; i < w->n_names; i++)
		if (strcmp(w->names[i], name) == 0)
			return true;
	return false;
}

static void on_poll(uv_timer_t *t);

static void file_schedule_poll(struct file_source *f)
{
	uint64_t delay = f->watching ? source_next_delay_ms(f->s->config->poll_interval, 0) : FILE_REARM_MS;
	(void)uv_timer_start(&f->poll, on_poll, delay, 0);
}

/* Something on the way to the file changed: the chain is resolved again
 * (a swapped link leads elsewhere) and the file read. */
static void on_debounce(uv_timer_t *t)
{
	struct file_source *f = t->data;

	(void)file_rewatch(f);
	file_read_now(f);
	if (!f->watching)
		file_schedule_poll(f); /* re-arm soon */
}

static void file_schedule_check(struct file_source *f)
{
	(void)uv_timer_start(&f->debounce, on_debounce, FILE_DEBOUNCE_MS, 0);
}

static void on_poll(uv_timer_t *t)
{
	struct file_source *f = t->data;
	bool was = f->watching;

	if (file_rewatch(f) == 0 && !was)
		log_info("watching %s again", f->path);
	file_read_now(f);
	file_schedule_poll(f);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
	struct file_watch *w = h->data;
	struct file_source *f = w->f;

	if (!w->armed || f->stopped)
		return;
	if (status < 0) {
		(void)uv_fs_event_stop(&w->h);
		w->armed = false;
		f->watching = false;
		file_schedule_check(f);
		return;
	}
	/* Events of other entries of a busy directory (/etc) cost one
	 * comparison; the directory's own removal or move comes as a rename
	 * named after the directory. */
	if (!filename || watch_has_name(w, filename) || ((events & UV_RENAME) && watch_dir_changed(w)))
		file_schedule_check(f);
}

/* ---------------------------------------------------------------- source_ops */

static int file_start(struct source *s)
{
	struct file_source *f = xcalloc(1, sizeof(*f));
	_cleanup_free_ char *data = NULL, *error = NULL;
	size_t len = 0;
	int r;

	f->s = s;
	s->data = f;
	f->path = xstrdup(s->url + strlen("file://"));
	f->url = xstrdup(s->url);
	(void)uv_timer_init(s->loop, &f->debounce);
	(void)uv_timer_init(s->loop, &f->poll);
	f->pending = 2;
	f->debounce.data = f->poll.data = f;

	r = file_rewatch(f);
	if (r < 0)
		log_warn("cannot watch the way to %s yet (%s); retrying", f->path, uv_strerror(r));
	/* In place: see the top of this file. */
	r = file_read(f->path, f->url, &data, &len, &error);
	file_read_result(f, r, data, len, error);
	file_schedule_poll(f);
	return 0;
}

static void file_reload(struct source *s)
{
	file_read_now(s->data);
}

static void on_closed(uv_handle_t *h)
{
	file_release(h->data);
}

static void file_stop(struct source *s)
{
	struct file_source *f = s->data;

	if (!f)
		return;
	s->data = NULL;
	f->stopped = true;
	if (f->reading)
		/* Its callback runs either way (UV_ECANCELED when it had not
		 * started) and releases f. */
		(void)uv_cancel((uv_req_t *)&f->work);
	file_drop_watches(f);
	uv_close((uv_handle_t *)&f->debounce, on_closed);
	uv_close((uv_handle_t *)&f->poll, on_closed);
}

const struct source_ops source_file_ops = {
	.scheme = "file",
	.start = file_start,
	.reload = file_reload,
	.stop = file_stop,
	.free_data = NULL,
};

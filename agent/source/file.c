/* SPDX-License-Identifier: BSD-2-Clause */
/* file:// — the stack in a local file, watched with inotify (uv_fs_event on
 * the directory, so that editors that write a temporary file and rename it
 * over the old one are seen). When the directory itself is removed or
 * replaced, the watch is re-armed by a short retry timer; a slow safety poll
 * (poll_interval) catches anything a watch could miss.
 *
 * The file is read on libuv's thread pool (uv_queue_work), one read at a
 * time, so that the loop keeps serving while up to 16 MiB come in (5-20 ms
 * measured for 16 MiB from the page cache, more from a slow disk); a change
 * seen during a read asks for one more read after it. Only the first read, in
 * start, is done in place: the loop serves nothing yet, and the stack is then
 * in force before the daemon says it is ready. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"
#include "source.h"
#include "config.h"
#include "stack/stack.h"
#include "util.h"

#define FILE_DEBOUNCE_MS 5
#define FILE_REARM_MS 500

struct file_source {
	struct source *s;          /* borrowed: owner */
	char *path;                /* owned */
	char *dir;                 /* owned */
	char *base;                /* owned */
	uv_fs_event_t watch;
	uv_timer_t debounce;
	uv_timer_t poll;           /* safety poll and re-arm */
	bool watching;
	dev_t dir_dev;
	ino_t dir_ino;
	int last_errno;            /* last read error reported, so it is reported once */
	unsigned closing;          /* handles (and a read) still closing */
	bool stopped;

	/* The read on the thread pool. The thread touches only path and the
	 * three results; the loop reads them once the work is done. */
	uv_work_t work;
	bool reading;              /* work queued or running */
	bool read_again;           /* asked for while reading: one more read after it */
	char *read_data;           /* owned: result of the thread's read */
	size_t read_len;
	int read_errno;            /* 0 or the negative errno of the read */
};

/* The path may be a symlink (a ConfigMap's ..data swap), followed; but what
 * it names must be a regular file, opened without waiting (a FIFO would block
 * in open() for good) and read with a cap. */
static int file_read(const struct file_source *f, char **ret_data, size_t *ret_len)
{
	return file_read_regular(AT_FDCWD, f->path, FILE_READ_FOLLOW, STACK_MAX_BYTES, ret_data, ret_len);
}

/* Reports a read's outcome to the engine; data is borrowed. */
static void file_read_result(struct file_source *f, int r, const char *data, size_t len)
{
	if (r < 0) {
		if (r == -EFBIG)
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
	free(f->dir);
	free(f->base);
	free(f->read_data);
	free(f);
}

/* One handle closed or the read ended after stop. */
static void file_release(struct file_source *f)
{
	if (--f->closing == 0)
		file_free(f);
}

static void work_read(uv_work_t *w)
{
	struct file_source *f = w->data;

	f->read_errno = file_read(f, &f->read_data, &f->read_len);
}

static void file_read_now(struct file_source *f);

static void on_read_done(uv_work_t *w, int status)
{
	struct file_source *f = w->data;
	_cleanup_free_ char *data = f->read_data;
	size_t len = f->read_len;
	int r = status < 0 ? status : f->read_errno;

	f->read_data = NULL;
	f->reading = false;
	if (f->stopped) {
		file_release(f);
		return;
	}
	/* The file changed while it was read: read it again, after this
	 * result, which the engine hears first (both, in order). */
	if (f->read_again) {
		f->read_again = false;
		file_read_now(f);
	}
	file_read_result(f, r, data, len);
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
	f->read_data = NULL;
	f->read_errno = 0;
	r = uv_queue_work(f->s->loop, &f->work, work_read, on_read_done);
	if (r < 0) {
		/* Never for a valid loop and callback; read in place rather
		 * than miss a change. */
		_cleanup_free_ char *data = NULL;
		size_t len = 0;
		r = file_read(f, &data, &len);
		file_read_result(f, r, data, len);
		return;
	}
	f->reading = true;
}

static void on_debounce(uv_timer_t *t)
{
	file_read_now(t->data);
}

static void file_schedule_read(struct file_source *f)
{
	(void)uv_timer_start(&f->debounce, on_debounce, FILE_DEBOUNCE_MS, 0);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status);

static int file_arm_watch(struct file_source *f)
{
	struct stat st;
	int r;

	if (f->watching) {
		(void)uv_fs_event_stop(&f->watch);
		f->watching = false;
	}
	if (stat(f->dir, &st) < 0)
		return -errno;
	r = uv_fs_event_start(&f->watch, on_fs_event, f->dir, 0);
	if (r < 0)
		return r;
	f->watching = true;
	f->dir_dev = st.st_dev;
	f->dir_ino = st.st_ino;
	return 0;
}

/* The directory was removed or replaced: the inotify watch is dead. */
static bool file_dir_changed(struct file_source *f)
{
	struct stat st;

	if (stat(f->dir, &st) < 0)
		return true;
	return st.st_dev != f->dir_dev || st.st_ino != f->dir_ino;
}

static void on_poll(uv_timer_t *t);

static void file_schedule_poll(struct file_source *f)
{
	uint64_t delay = f->watching ? source_next_delay_ms(f->s->config->poll_interval, 0) : FILE_REARM_MS;
	(void)uv_timer_start(&f->poll, on_poll, delay, 0);
}

static void on_poll(uv_timer_t *t)
{
	struct file_source *f = t->data;

	if (!f->watching || file_dir_changed(f)) {
		if (file_arm_watch(f) == 0)
			log_info("watching %s again", f->dir);
	}
	file_read_now(f);
	file_schedule_poll(f);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
	struct file_source *f = h->data;

	if (status < 0 || file_dir_changed(f)) {
		(void)uv_fs_event_stop(&f->watch);
		f->watching = false;
		file_schedule_read(f);
		file_schedule_poll(f); /* re-arm soon */
		return;
	}
	if (!filename || strcmp(filename, f->base) == 0)
		file_schedule_read(f);
}

static int file_start(struct source *s)
{
	struct file_source *f = xcalloc(1, sizeof(*f));
	const char *p = s->url + strlen("file://");
	const char *slash = strrchr(p, '/');
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int r;

	f->s = s;
	s->data = f;
	f->path = xstrdup(p);
	f->dir = slash == p ? xstrdup("/") : xstrndup(p, (size_t)(slash - p));
	f->base = xstrdup(slash + 1);
	(void)uv_fs_event_init(s->loop, &f->watch);
	(void)uv_timer_init(s->loop, &f->debounce);
	(void)uv_timer_init(s->loop, &f->poll);
	f->watch.data = f->debounce.data = f->poll.data = f;

	r = file_arm_watch(f);
	if (r < 0)
		log_warn("cannot watch %s yet (%s); retrying", f->dir, uv_strerror(r));
	/* In place: see the top of this file. */
	r = file_read(f, &data, &len);
	file_read_result(f, r, data, len);
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
	f->closing = 3;
	if (f->reading) {
		/* Its callback runs either way (UV_ECANCELED when it had not
		 * started) and releases f. */
		f->closing++;
		(void)uv_cancel((uv_req_t *)&f->work);
	}
	uv_close((uv_handle_t *)&f->watch, on_closed);
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

/* SPDX-License-Identifier: BSD-2-Clause */
/* file:// — the stack in a local file, watched with inotify (uv_fs_event on
 * the directory, so that editors that write a temporary file and rename it
 * over the old one are seen). When the directory itself is removed or
 * replaced, the watch is re-armed by a short retry timer; a slow safety poll
 * (poll_interval) catches anything a watch could miss. The file is read
 * synchronously: it is local and capped at 16 MiB. */
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
	unsigned closing;          /* handles still closing */
};

static void file_read_now(struct file_source *f)
{
	_cleanup_free_ char *data = NULL;
	size_t len = 0;
	int r;

	/* The path may be a symlink (a ConfigMap's ..data swap), followed; but
	 * what it names must be a regular file, opened without waiting (a
	 * FIFO would block the loop in open() for good) and read with a cap. */
	r = file_read_regular(AT_FDCWD, f->path, FILE_READ_FOLLOW, STACK_MAX_BYTES, &data, &len);
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
	file_read_now(f);
	file_schedule_poll(f);
	return 0;
}

static void file_reload(struct source *s)
{
	file_read_now(s->data);
}

static void on_closed(uv_handle_t *h)
{
	struct file_source *f = h->data;
	if (--f->closing == 0) {
		free(f->path);
		free(f->dir);
		free(f->base);
		free(f);
	}
}

static void file_stop(struct source *s)
{
	struct file_source *f = s->data;

	if (!f)
		return;
	s->data = NULL;
	f->closing = 3;
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

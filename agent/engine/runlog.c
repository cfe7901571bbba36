/* SPDX-License-Identifier: BSD-2-Clause */
/* Run logs (log_dir/runs/<id>.log): opening one for a run, writing it, and
 * reading back its keyed result line, which carries a result that
 * state_dir could not take (a full disk) across a restart. */
#include "runlog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "log.h"
#include "util.h"

int runlog_open(const char *path)
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

void runlog_write(int fd, long id, const char *data, size_t len)
{
	while (fd >= 0 && len > 0) {
		ssize_t w = write(fd, data, len);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			log_warn_errno(-errno, "Failed to write the log of run %ld: %m", id);
			return;
		}
		data += w;
		len -= (size_t)w;
	}
}

char *runlog_result_line(long id, uint64_t key, const char *status, size_t changed, const char *finished,
			 const char *error)
{
	/* One line: the error's newlines become spaces. */
	_cleanup_free_ char *err1 = xstrdup(error ? error : "");

	for (char *c = err1; *c; c++)
		if (*c == '\n' || *c == '\r')
			*c = ' ';
	return xasprintf("=== run %ld finished: key=%016llx status=%s changed=%zu finished=%s%s%s\n", id,
			 (unsigned long long)key, status, changed, finished, error ? " error=" : "", error ? err1 : "");
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

/* The last line of the log open on fd (size size) into tail (n bytes), if
 * the log ends with a newline; NULL when it has none. */
static char *last_line(int fd, off_t size, char *tail, size_t n)
{
	off_t off = size > (off_t)(n - 1) ? size - (off_t)(n - 1) : 0;
	ssize_t got = pread(fd, tail, n - 1, off);
	char *line;

	if (got < 2 || tail[got - 1] != '\n')
		return NULL;
	tail[got - 1] = '\0';
	line = strrchr(tail, '\n');
	line = line ? line + 1 : (off == 0 ? tail : NULL);
	/* A NUL in the line: not a line agentd wrote. */
	if (line && memchr(line, '\0', (size_t)(tail + got - 1 - line)))
		return NULL;
	return line;
}

bool runlog_result(const char *path, struct run *rec)
{
	_cleanup_free_ char *prefix = NULL;
	_cleanup_close_ int fd = -1;
	char head[4096], tail[RUN_TEXT_MAX * 2 + 1024], key[24], want_key[24], status[16], changed[16], finished[48];
	char *line, *err;
	struct stat st;
	ssize_t n;
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
	line = last_line(fd, st.st_size, tail, sizeof(tail));
	prefix = xasprintf("=== run %ld finished:", rec->id);
	if (!line || strncmp(line, prefix, strlen(prefix)) != 0)
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
	rec->status = strcmp(status, "success") == 0 ? RUN_SUCCESS : RUN_FAILED;
	run_set_str(&rec->finished, finished);
	rec->changed = ch;
	if (err)
		run_set_text(&rec->error, err + strlen(" error="));
	return true;
}

int runlog_read_tail(const char *path, size_t max, char **ret, size_t *ret_len, bool *ret_truncated)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *data = NULL;
	struct stat st;
	size_t want, got = 0;
	off_t off;

	*ret = NULL;
	*ret_len = 0;
	*ret_truncated = false;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	want = (size_t)st.st_size > max ? max : (size_t)st.st_size;
	off = st.st_size - (off_t)want;
	data = xmalloc(want + 1);
	while (got < want) {
		ssize_t r = pread(fd, data + got, want - got, off + (off_t)got);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	if (off > 0) {
		/* Cut at a line boundary: a line's start may hold a secret's name. */
		char *nl = memchr(data, '\n', got);
		size_t skip = nl ? (size_t)(nl - data) + 1 : got;

		memmove(data, data + skip, got - skip);
		got -= skip;
		*ret_truncated = true;
	}
	data[got] = '\0';
	*ret = data;
	*ret_len = got;
	data = NULL;
	return 0;
}

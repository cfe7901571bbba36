/* SPDX-License-Identifier: BSD-2-Clause */
/* One agentd per state_dir (design.md §3): the lock, taken by main.c before
 * any state is read. */
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

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

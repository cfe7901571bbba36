/* SPDX-License-Identifier: BSD-2-Clause */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

static void oom(void)
{
	static const char msg[] = "agentd: out of memory\n";
	(void)!write(STDERR_FILENO, msg, sizeof(msg) - 1);
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		oom();
	return p;
}

void *xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);
	if (!p)
		oom();
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q)
		oom();
	return q;
}

char *xstrdup(const char *s)
{
	char *p;
	if (!s)
		return NULL;
	p = strdup(s);
	if (!p)
		oom();
	return p;
}

char *xstrndup(const char *s, size_t n)
{
	char *p = strndup(s, n);
	if (!p)
		oom();
	return p;
}

char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&p, fmt, ap);
	va_end(ap);
	if (r < 0)
		oom();
	return p;
}

void buf_init(struct buf *b)
{
	b->data = NULL;
	b->len = b->cap = 0;
}

void buf_free(struct buf *b)
{
	free(b->data);
	buf_init(b);
}

void buf_reset(struct buf *b)
{
	b->len = 0;
	if (b->data)
		b->data[0] = '\0';
}

static void buf_reserve(struct buf *b, size_t extra)
{
	size_t need = b->len + extra + 1;
	if (need <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < need)
		cap *= 2;
	b->data = xrealloc(b->data, cap);
	b->cap = cap;
}

void buf_append(struct buf *b, const void *data, size_t len)
{
	buf_reserve(b, len);
	if (len)
		memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
}

void buf_puts(struct buf *b, const char *s)
{
	buf_append(b, s, strlen(s));
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	buf_reserve(b, (size_t)n);
	va_start(ap, fmt);
	(void)vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

char *buf_steal(struct buf *b)
{
	char *p = b->data ? b->data : xstrdup("");
	buf_init(b);
	return p;
}

int parse_long(const char *s, long min, long max, long *ret)
{
	char *end;
	long v;

	if (!s || !*s || isspace((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno == ERANGE)
		return -ERANGE;
	if (*end)
		return -EINVAL;
	if (v < min || v > max)
		return -ERANGE;
	*ret = v;
	return 0;
}

int64_t time_now_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t time_monotonic_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void time_format_rfc3339(int64_t usec, char *out, size_t n)
{
	time_t t = (time_t)(usec / 1000000);
	struct tm tm;
	char tmp[32];

	gmtime_r(&t, &tm);
	strftime(tmp, sizeof(tmp), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, n, "%s.%03dZ", tmp, (int)((usec / 1000) % 1000));
}

bool name_is_valid(const char *s)
{
	size_t n;

	if (!s)
		return false;
	n = strlen(s);
	if (n == 0 || n > 255)
		return false;
	if (strstr(s, ".."))
		return false;
	if (strcmp(s, ".") == 0)
		return false;
	for (const char *p = s; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '_' && *p != '.' && *p != '-')
			return false;
	return true;
}

bool path_is_system_dir(const char *p)
{
	static const char *const trees[] = { "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
					     "/proc", "/root", "/run", "/sbin", "/sys", "/usr" };
	static const char *const exact[] = { "/var", "/home", "/srv", "/mnt", "/opt", "/tmp", "/var/lib", "/var/log" };
	char buf[PATH_MAX];
	size_t n;

	if (!p || !*p)
		return true;
	/* Without trailing and doubled slashes. */
	n = 0;
	for (const char *c = p; *c && n < sizeof(buf) - 1; c++)
		if (!(*c == '/' && n > 0 && buf[n - 1] == '/'))
			buf[n++] = *c;
	while (n > 1 && buf[n - 1] == '/')
		n--;
	buf[n] = '\0';
	if (strcmp(buf, "/") == 0)
		return true;
	for (size_t i = 0; i < ELEMENTSOF(exact); i++)
		if (strcmp(buf, exact[i]) == 0)
			return true;
	for (size_t i = 0; i < ELEMENTSOF(trees); i++) {
		size_t l = strlen(trees[i]);
		if (strncmp(buf, trees[i], l) == 0 && (buf[l] == '\0' || buf[l] == '/'))
			return true;
	}
	return false;
}

bool path_is_plain(const char *p)
{
	if (!p || !*p)
		return false;
	for (const char *c = p; *c; c++)
		if (!isalnum((unsigned char)*c) && *c != '_' && *c != '.' && *c != '/' && *c != '-')
			return false;
	return true;
}

bool path_is_safe_absolute(const char *p)
{
	const char *c;

	if (!p || p[0] != '/' || strlen(p) >= PATH_MAX)
		return false;
	c = p;
	while (*c) {
		const char *e;
		size_t n;

		while (*c == '/')
			c++;
		if (!*c)
			break;
		e = strchr(c, '/');
		n = e ? (size_t)(e - c) : strlen(c);
		if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return false;
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)c[i] < 0x20 || c[i] == 0x7f)
				return false;
		c += n;
	}
	return true;
}

int path_normalize(const char *p, char **ret)
{
	struct buf b;
	const char *c;

	*ret = NULL;
	if (!p || p[0] != '/')
		return -EINVAL;
	if (strlen(p) >= PATH_MAX)
		return -ENAMETOOLONG;
	if (!path_is_safe_absolute(p))
		return -EINVAL;
	buf_init(&b);
	for (c = p; *c;) {
		size_t n;

		c += strspn(c, "/");
		n = strcspn(c, "/");
		if (n == 0)
			break;
		buf_puts(&b, "/");
		buf_append(&b, c, n);
		c += n;
	}
	if (b.len == 0)
		buf_puts(&b, "/");
	*ret = buf_steal(&b);
	return 0;
}

bool path_is_normal(const char *p)
{
	size_t n;

	if (!path_is_safe_absolute(p))
		return false;
	n = strlen(p);
	return strstr(p, "//") == NULL && (n == 1 || p[n - 1] != '/');
}

bool path_is_under(const char *path, const char *dir)
{
	const char *a = path, *d = dir;

	if (!path || !dir || path[0] != '/' || dir[0] != '/')
		return false;
	/* Walk both a component at a time: every component of dir must equal
	 * the same component of path. */
	for (;;) {
		size_t na, nd;

		d += strspn(d, "/");
		a += strspn(a, "/");
		nd = strcspn(d, "/");
		if (nd == 0)
			return true;
		na = strcspn(a, "/");
		if (na != nd || memcmp(a, d, nd) != 0)
			return false;
		a += na;
		d += nd;
	}
}

int json_bounds_check(const char *data, size_t len, size_t max_elements, size_t max_depth)
{
	size_t elements = 0, depth = 0;
	bool in_string = false, escaped = false, value_may_start = true;

	for (size_t i = 0; i < len; i++) {
		char c = data[i];

		if (in_string) {
			if (escaped)
				escaped = false;
			else if (c == '\\')
				escaped = true;
			else if (c == '"')
				in_string = false;
			continue;
		}
		switch (c) {
		case ' ':
		case '\t':
		case '\n':
		case '\r':
			continue;
		case '[':
		case '{':
			if (++depth > max_depth)
				return -ELOOP;
			elements++;
			value_may_start = true;
			break;
		case ']':
		case '}':
			if (depth > 0)
				depth--;
			value_may_start = false;
			break;
		case ',':
		case ':':
			value_may_start = true;
			break;
		case '"':
			in_string = true;
			elements++;
			value_may_start = false;
			break;
		default:
			/* The first byte of a number, true, false or null. */
			if (value_may_start)
				elements++;
			value_may_start = false;
			break;
		}
		if (elements > max_elements)
			return -E2BIG;
	}
	return 0;
}

int path_join_under(const char *root, const char *path, char **ret)
{
	struct buf b;
	const char *c;

	if (!root || !*root || !path)
		return -EINVAL;
	if (strlen(path) >= PATH_MAX)
		return -ENAMETOOLONG;

	buf_init(&b);
	buf_puts(&b, root);
	while (b.len > 1 && b.data[b.len - 1] == '/')
		b.data[--b.len] = '\0';

	c = path;
	while (*c) {
		const char *e;
		size_t n;

		while (*c == '/')
			c++;
		if (!*c)
			break;
		e = strchr(c, '/');
		n = e ? (size_t)(e - c) : strlen(c);
		if (n == 2 && c[0] == '.' && c[1] == '.') {
			buf_free(&b);
			return -EINVAL;
		}
		if (!(n == 1 && c[0] == '.')) {
			if (!(b.len == 1 && b.data[0] == '/'))
				buf_puts(&b, "/");
			buf_append(&b, c, n);
		}
		c += n;
	}
	*ret = buf_steal(&b);
	return 0;
}

int mkdir_p(const char *path, mode_t mode)
{
	_cleanup_free_ char *p = xstrdup(path);
	size_t n = strlen(p);

	for (size_t i = 1; i <= n; i++) {
		if (p[i] != '/' && p[i] != '\0')
			continue;
		char saved = p[i];
		p[i] = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST)
			return -errno;
		p[i] = saved;
	}
	struct stat st;
	if (stat(path, &st) < 0)
		return -errno;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	return 0;
}

void tmp_name_random(const char *name, char *out, size_t n)
{
	uint64_t rnd;
	ssize_t got;

	do
		got = getrandom(&rnd, sizeof(rnd), GRND_NONBLOCK);
	while (got < 0 && errno == EINTR);
	if (got != (ssize_t)sizeof(rnd)) {
		/* No entropy yet (early boot): still unpredictable enough to
		 * avoid collisions; O_EXCL keeps it safe either way. */
		rnd = (uint64_t)time_monotonic_usec() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)out;
		rnd *= UINT64_C(0x9e3779b97f4a7c15);
	}
	(void)snprintf(out, n, ".#%.200s.%016" PRIx64, name, rnd);
}

int file_write_atomic_at(int dirfd, const char *name, const void *data, size_t len, mode_t mode, uid_t uid,
			 gid_t gid)
{
	_cleanup_close_ int fd = -1, sfd = -1;
	char tmp[NAME_MAX + 1];
	const char *p = data;
	size_t left = len;
	int r;

	if (!name || !*name || strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
		return -EINVAL;
	/* A fresh name, created exclusively: whatever another user planted
	 * under a name (a file, a symlink, a hard link) makes us pick another
	 * name, never write through it. */
	for (int attempt = 0;; attempt++) {
		tmp_name_random(name, tmp, sizeof(tmp));
		fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 07777);
		if (fd >= 0)
			break;
		if (errno != EEXIST || attempt >= 16)
			return -errno;
	}
	while (left > 0) {
		ssize_t w = write(fd, p, left);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			r = -errno;
			goto fail;
		}
		p += w;
		left -= (size_t)w;
	}
	if (fchmod(fd, mode & 07777) < 0) {
		r = -errno;
		goto fail;
	}
	if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) < 0) {
		r = -errno;
		goto fail;
	}
	/* fchown() clears set-user-ID and set-group-ID bits: put them back. */
	if ((mode & 06000) && (uid != (uid_t)-1 || gid != (gid_t)-1) && fchmod(fd, mode & 07777) < 0) {
		r = -errno;
		goto fail;
	}
	if (fsync(fd) < 0) {
		r = -errno;
		goto fail;
	}
	if (renameat(dirfd, tmp, dirfd, name) < 0) {
		r = -errno;
		goto fail;
	}
	/* dirfd may be an O_PATH descriptor, which fsync() refuses. */
	sfd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sfd >= 0)
		(void)fsync(sfd);
	return 0;
fail:
	(void)unlinkat(dirfd, tmp, 0);
	return r;
}

int file_write_atomic(const char *path, const void *data, size_t len, mode_t mode, uid_t uid, gid_t gid)
{
	_cleanup_free_ char *dir = NULL;
	_cleanup_close_ int dfd = -1;
	const char *slash, *name;

	slash = strrchr(path, '/');
	dir = slash ? (slash == path ? xstrdup("/") : xstrndup(path, (size_t)(slash - path))) : xstrdup(".");
	name = slash ? slash + 1 : path;
	dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -errno;
	return file_write_atomic_at(dfd, name, data, len, mode, uid, gid);
}

int fd_read_all(int fd, size_t max, char **ret_data, size_t *ret_len)
{
	struct buf b;
	char chunk[65536];

	buf_init(&b);
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int r = -errno;
			buf_free(&b);
			return r;
		}
		if (n == 0)
			break;
		if (b.len + (size_t)n > max) {
			buf_free(&b);
			return -EFBIG;
		}
		buf_append(&b, chunk, (size_t)n);
	}
	if (ret_len)
		*ret_len = b.len;
	*ret_data = buf_steal(&b);
	return 0;
}

int file_read_all(const char *path, size_t max, char **ret_data, size_t *ret_len)
{
	_cleanup_close_ int fd = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return fd_read_all(fd, max, ret_data, ret_len);
}

static size_t pw_buf_size(int name)
{
	long sz = sysconf(name);

	return sz > 0 ? (size_t)sz : 16384;
}

int user_lookup(const char *name, uid_t *ret_uid, gid_t *ret_gid)
{
	size_t n = pw_buf_size(_SC_GETPW_R_SIZE_MAX);
	_cleanup_free_ char *b = xmalloc(n);
	struct passwd pw, *res = NULL;
	int r;

	if (!name || !*name)
		return -EINVAL;
	while ((r = getpwnam_r(name, &pw, b, n, &res)) == ERANGE && n < (1u << 20)) {
		n *= 2;
		b = xrealloc(b, n);
	}
	if (r != 0)
		return -r;
	if (!res)
		return -ENOENT;
	if (ret_uid)
		*ret_uid = pw.pw_uid;
	if (ret_gid)
		*ret_gid = pw.pw_gid;
	return 0;
}

int group_lookup(const char *name, gid_t *ret_gid)
{
	size_t n = pw_buf_size(_SC_GETGR_R_SIZE_MAX);
	_cleanup_free_ char *b = xmalloc(n);
	struct group gr, *res = NULL;
	int r;

	if (!name || !*name)
		return -EINVAL;
	while ((r = getgrnam_r(name, &gr, b, n, &res)) == ERANGE && n < (1u << 20)) {
		n *= 2;
		b = xrealloc(b, n);
	}
	if (r != 0)
		return -r;
	if (!res)
		return -ENOENT;
	if (ret_gid)
		*ret_gid = gr.gr_gid;
	return 0;
}

uint64_t hash_fnv1a64(const void *data, size_t len, uint64_t seed)
{
	const unsigned char *p = data;
	uint64_t h = seed;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

bool key_is_secret(const char *key)
{
	static const char *const words[] = { "password", "secret", "token", "key" };
	size_t n;

	if (!key)
		return false;
	n = strlen(key);
	for (size_t w = 0; w < ELEMENTSOF(words); w++) {
		size_t m = strlen(words[w]);
		for (size_t i = 0; i + m <= n; i++)
			if (strncasecmp(key + i, words[w], m) == 0)
				return true;
	}
	return false;
}

int file_read_regular(int dirfd, const char *path, int flags, size_t max, char **ret_data, size_t *ret_len)
{
	_cleanup_close_ int fd = -1;
	struct stat st;

	/* O_NONBLOCK: opening a FIFO for reading must not wait for a writer,
	 * and opening a device must not wait for carrier or the like. It does
	 * not change how a regular file is read. */
	fd = openat(dirfd, path,
		    O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | ((flags & FILE_READ_FOLLOW) ? 0 : O_NOFOLLOW));
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (!S_ISREG(st.st_mode))
		return -EBADFD;
	/* st_size is 0 for /proc files, which are read to EOF under the same cap. */
	if (st.st_size < 0 || (uint64_t)st.st_size > max)
		return -EFBIG;
	return fd_read_all(fd, max, ret_data, ret_len);
}

const char *file_read_strerror(int r)
{
	switch (r) {
	case -EBADFD:
		return "not a regular file";
	case -ELOOP:
		return "a symbolic link (not followed here)";
	case -EFBIG:
		return "too large";
	default:
		return strerror(r < 0 ? -r : r);
	}
}

char *str_escape_ctl(const char *s)
{
	struct buf b;

	if (!s)
		return xstrdup("(null)");
	buf_init(&b);
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		switch (*p) {
		case '\n':
			buf_puts(&b, "\\n");
			break;
		case '\t':
			buf_puts(&b, "\\t");
			break;
		case '\r':
			buf_puts(&b, "\\r");
			break;
		case '\033':
			buf_puts(&b, "\\e");
			break;
		case '\\':
			buf_puts(&b, "\\\\");
			break;
		default:
			if (*p < 0x20 || *p == 0x7f)
				buf_printf(&b, "\\x%02x", *p);
			else
				buf_append(&b, p, 1);
		}
	}
	return buf_steal(&b);
}

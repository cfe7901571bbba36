/* SPDX-License-Identifier: BSD-2-Clause */
/* Small utilities shared by agentd and agentctl: cleanup attributes, growable
 * buffers, safe number parsing, time stamps, names and paths under a root,
 * and atomic file writes. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>

#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

static inline void freep(void *p) { free(*(void **)p); }
static inline void closep(int *fd);
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)

#include <unistd.h>
static inline void closep(int *fd) {
	if (*fd >= 0)
		(void)close(*fd);
}

/* Allocation failure is not something a 2 MiB daemon can recover from in a
 * useful way; these abort with a message instead of returning NULL. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
char *xasprintf(const char *fmt, ...) _printf_(1, 2);

/* A growable byte buffer, always NUL-terminated after its data. */
struct buf {
	char *data; /* owned */
	size_t len;
	size_t cap;
};
void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reset(struct buf *b);
void buf_append(struct buf *b, const void *data, size_t len);
void buf_puts(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...) _printf_(2, 3);
/* Takes the data out of the buffer; the caller owns it; the buffer is empty. */
char *buf_steal(struct buf *b);

/* Strict integer parsing: the whole string, in range, else -EINVAL/-ERANGE. */
int parse_long(const char *s, long min, long max, long *ret);

/* Wall clock as an RFC 3339 UTC string with milliseconds into out (>= 32 bytes). */
void time_format_rfc3339(int64_t usec, char *out, size_t n);
int64_t time_now_usec(void);      /* CLOCK_REALTIME */
int64_t time_monotonic_usec(void); /* CLOCK_MONOTONIC */

/* A name that may become a path component or a user name:
 * [A-Za-z0-9_.-]+, not "." or "..", no "..", at most 255 bytes. */
bool name_is_valid(const char *s);

/* An absolute path with no "." or ".." components, no empty components
 * other than a trailing one, no NUL, at most PATH_MAX bytes. */
bool path_is_safe_absolute(const char *p);

/* The normal form of an absolute path (design.md §2): doubled slashes
 * collapsed, a trailing slash dropped ("/" stays "/"). Paths are compared in
 * this form only, so two spellings of one directory are one directory.
 * Returns 0 and a malloc'd string, or -EINVAL when p is not absolute, has a
 * "." or ".." component or a control character, or -ENAMETOOLONG at PATH_MAX
 * bytes or more. */
int path_normalize(const char *p, char **ret);
/* Whether p is already in that form (and valid). */
bool path_is_normal(const char *p);

/* Whether path lies in dir, comparing whole components: dir itself or
 * anything below it ("/srv/www/a" holds "/srv/www/a/b", not "/srv/www/ab";
 * "/" holds everything). Doubled and trailing slashes are ignored, so either
 * argument may be any spelling; "." and ".." are not resolved (normalise and
 * refuse them first). */
bool path_is_under(const char *path, const char *dir);

/* Whether p (a safe absolute path) is a directory of the operating system
 * that a recipe must never own, chmod, mount over or remove: "/" itself, or
 * /bin, /boot, /dev, /etc, /lib*, /proc, /root, /run, /sbin, /sys, /usr,
 * /var and /home themselves or anything under the first eleven. Paths
 * under /var (e.g. /var/www) and /home are allowed, /var and /home not. */
bool path_is_system_dir(const char *p);

/* Characters that are safe in a path written into a config file line
 * (supervisor programs, fstab, buildout): [A-Za-z0-9_./-]. */
bool path_is_plain(const char *p);

/* A cheap pass over a JSON text before a parser builds its tree, so that a
 * document's memory is bounded by what it holds, not only by its bytes (a
 * 16 MiB array of small integers is 8 million values). Counts, outside
 * strings, every value and every object key (an element), and the nesting
 * of arrays and objects. Returns 0, -E2BIG when there are more than
 * max_elements elements, or -ELOOP when nesting goes deeper than max_depth.
 * It does not validate: the parser still does. */
int json_bounds_check(const char *data, size_t len, size_t max_elements, size_t max_depth);

/* Joins path under root. path may be absolute ("/srv/www" under root
 * "/tmp/r" gives "/tmp/r/srv/www") or relative; ".." components are refused
 * with -EINVAL. Symlinks are not resolved here. */
int path_join_under(const char *root, const char *path, char **ret);

/* Writes data to name in the directory dirfd (which may be an O_PATH
 * descriptor) atomically: a new temporary file with a random name in the
 * same directory, created with O_CREAT|O_EXCL|O_NOFOLLOW (so nothing
 * planted there can be written through), write, fchmod/fchown, fsync,
 * renameat over name, fsync of the directory. name is one path component.
 * uid/gid of -1 keep the default. Returns 0 or a negative errno. */
int file_write_atomic_at(int dirfd, const char *name, const void *data, size_t len, mode_t mode, uid_t uid,
			 gid_t gid);
/* The same for a path: its directory is opened (following symlinks: for
 * agentd's own files, not for paths under a managed root). */
int file_write_atomic(const char *path, const void *data, size_t len, mode_t mode, uid_t uid, gid_t gid);

/* A temporary name for name in its directory: ".#<name>.<16 random hex
 * digits>" (name cut to 200 bytes), into out (>= NAME_MAX + 1 bytes).
 * Create it exclusively and pick another on EEXIST. */
void tmp_name_random(const char *name, char *out, size_t n);

/* Reads all of fd (to EOF), refusing more than max bytes (-EFBIG). *ret_data
 * is NUL-terminated and never NULL on success; ret_len may be NULL. */
int fd_read_all(int fd, size_t max, char **ret_data, size_t *ret_len);
/* Reads a whole file, refusing files over max bytes (-EFBIG). */
int file_read_all(const char *path, size_t max, char **ret_data, size_t *ret_len);

/* User and group names to ids (getpwnam_r/getgrnam_r, growing the buffer
 * as needed). Returns 0, -ENOENT for an unknown name, or another negative
 * errno when the lookup itself failed. ret_* may be NULL. */
int user_lookup(const char *name, uid_t *ret_uid, gid_t *ret_gid);
int group_lookup(const char *name, gid_t *ret_gid);

/* mkdir -p with mode for the directories it creates. */
int mkdir_p(const char *path, mode_t mode);

/* 64-bit FNV-1a; used to name stack revisions, not for security. */
uint64_t hash_fnv1a64(const void *data, size_t len, uint64_t seed);
#define HASH_FNV_SEED UINT64_C(0xcbf29ce484222325)

/* True if a JSON object key names a secret: matches password|secret|token|key
 * case-insensitively anywhere in the key. */
bool key_is_secret(const char *key);

/* Reads a whole regular file without ever blocking on it: path (relative
 * to dirfd, or absolute; dirfd may be AT_FDCWD) is opened with
 * O_NONBLOCK|O_NOCTTY|O_CLOEXEC, and O_NOFOLLOW unless flags has
 * FILE_READ_FOLLOW (for paths an operator may legitimately make a symlink:
 * the configuration, a file:// stack). It must be a regular file and at most
 * max bytes. Returns 0, -EISDIR (a directory), -EBADFD (a FIFO, socket or
 * device: anything else that is not a regular file), -ELOOP (a symlink
 * without FILE_READ_FOLLOW), -EFBIG (over max), or another negative errno
 * from open/read. *ret_data is NUL-terminated; ret_len may be NULL. */
#define FILE_READ_FOLLOW 0x1
int file_read_regular(int dirfd, const char *path, int flags, size_t max, char **ret_data, size_t *ret_len);
/* Words for an error of file_read_regular ("not a regular file" for
 * -EBADFD, ...; strerror otherwise). Static string. */
const char *file_read_strerror(int r);

/* s with its control characters written C-style (\n, \t, \r, \e, \xNN for
 * the others and DEL) and "\" doubled, for a name, link text or path read
 * from disk that goes into a message: another user chose it, and a raw
 * newline or escape would forge lines in the journal, on a terminal or in
 * `agentctl show`. Other bytes (UTF-8 included) are kept. NULL gives
 * "(null)". Returns a malloc'd string. */
char *str_escape_ctl(const char *s);

/* SPDX-License-Identifier: BSD-2-Clause */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

static const char *log_ident = "agentd";
static enum log_level log_max = LOG_LEVEL_INFO;
static bool log_journal;
static long ctx_run_id;
static char ctx_event[32], ctx_layer[256], ctx_step[512];

/* The journal is used when stderr is the stream systemd connected to it
 * (JOURNAL_STREAM names stderr's device and inode). */
static bool stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2)
		return false;
	if (fstat(STDERR_FILENO, &st) < 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_open(const char *ident, bool verbose)
{
	log_ident = ident;
	log_max = verbose ? LOG_LEVEL_DEBUG : LOG_LEVEL_INFO;
	log_journal = stderr_is_journal();
}

void log_set_level(enum log_level level)
{
	log_max = level;
}

static void copy_field(char *dst, size_t n, const char *src)
{
	if (!src)
		dst[0] = '\0';
	else
		snprintf(dst, n, "%s", src);
}

void log_set_context(long run_id, const char *event, const char *layer, const char *step)
{
	ctx_run_id = run_id;
	copy_field(ctx_event, sizeof(ctx_event), event);
	copy_field(ctx_layer, sizeof(ctx_layer), layer);
	copy_field(ctx_step, sizeof(ctx_step), step);
}

static void log_emit(enum log_level level, const char *file, int line, const char *msg)
{
	static const char *const names[] = {
		[LOG_LEVEL_ERROR] = "error", [LOG_LEVEL_WARN] = "warning",
		[LOG_LEVEL_INFO] = "info",   [LOG_LEVEL_DEBUG] = "debug",
	};

	if (log_journal) {
		char run[32] = "";
		if (ctx_run_id > 0)
			snprintf(run, sizeof(run), "RUN_ID=%ld", ctx_run_id);
		/* Empty "FIELD=" strings are valid and simply carry no value. */
		(void)sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", (int)level, "SYSLOG_IDENTIFIER=%s", log_ident,
				      "CODE_FILE=%s", file, "CODE_LINE=%d", line, "%s", run[0] ? run : "RUN_ID=",
				      "EVENT=%s", ctx_event, "LAYER=%s", ctx_layer, "STEP=%s", ctx_step, NULL);
		return;
	}
	if (ctx_run_id > 0)
		fprintf(stderr, "%s: %s: [run %ld%s%s%s%s] %s\n", log_ident, names[level], ctx_run_id,
			ctx_event[0] ? " " : "", ctx_event, ctx_step[0] ? " " : "", ctx_step, msg);
	else
		fprintf(stderr, "%s: %s: %s\n", log_ident, names[level], msg);
}

void log_write(enum log_level level, const char *file, int line, const char *fmt, ...)
{
	int saved = errno;
	char msg[2048];
	va_list ap;

	if (level > log_max) {
		errno = saved;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_emit(level, file, line, msg);
	errno = saved;
}

int log_errno_internal(enum log_level level, int r, const char *file, int line, const char *fmt, ...)
{
	int saved = errno;
	char msg[2048];
	va_list ap;

	if (level <= log_max) {
		errno = r < 0 ? -r : r;
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
		log_emit(level, file, line, msg);
	}
	errno = saved;
	return r;
}

void log_force_stderr(void)
{
	log_journal = false;
}

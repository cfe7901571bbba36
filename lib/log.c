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
/* The context in effect (a run's, while its own code runs), or none. */
static const struct log_context *log_ctx;

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

void log_context_set(struct log_context *ctx, long run_id, const char *event, const char *layer, const char *step)
{
	ctx->run_id = run_id;
	copy_field(ctx->event, sizeof(ctx->event), event);
	copy_field(ctx->layer, sizeof(ctx->layer), layer);
	copy_field(ctx->step, sizeof(ctx->step), step);
}

const struct log_context *log_context_use(const struct log_context *ctx)
{
	const struct log_context *prev = log_ctx;

	log_ctx = ctx;
	return prev;
}

static void log_emit(enum log_level level, const char *file, int line, const char *msg)
{
	static const char *const names[] = {
		[LOG_LEVEL_ERROR] = "error", [LOG_LEVEL_WARN] = "warning",
		[LOG_LEVEL_INFO] = "info",   [LOG_LEVEL_DEBUG] = "debug",
	};

	static const struct log_context none;
	const struct log_context *c = log_ctx ? log_ctx : &none;

	if (log_journal) {
		char run[32] = "";
		if (c->run_id > 0)
			snprintf(run, sizeof(run), "RUN_ID=%ld", c->run_id);
		/* Empty "FIELD=" strings are valid and simply carry no value. */
		(void)sd_journal_send("MESSAGE=%s", msg, "PRIORITY=%d", (int)level, "SYSLOG_IDENTIFIER=%s", log_ident,
				      "CODE_FILE=%s", file, "CODE_LINE=%d", line, "%s", run[0] ? run : "RUN_ID=",
				      "EVENT=%s", c->event, "LAYER=%s", c->layer, "STEP=%s", c->step, NULL);
		return;
	}
	if (c->run_id > 0)
		fprintf(stderr, "%s: %s: [run %ld%s%s%s%s] %s\n", log_ident, names[level], c->run_id,
			c->event[0] ? " " : "", c->event, c->step[0] ? " " : "", c->step, msg);
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

/* SPDX-License-Identifier: BSD-2-Clause */
/* One logging API for agentd and agentctl. Under systemd (JOURNAL_STREAM set
 * and matching stderr) lines go to the journal with structured fields;
 * otherwise to stderr. Every function preserves errno. */
#pragma once

#include <errno.h>
#include <stdbool.h>

#include "util.h"

enum log_level { LOG_LEVEL_ERROR = 3, LOG_LEVEL_WARN = 4, LOG_LEVEL_INFO = 6, LOG_LEVEL_DEBUG = 7 };

void log_open(const char *ident, bool verbose);
/* Forces plain stderr even under systemd (agentd -d). */
void log_force_stderr(void);
void log_set_level(enum log_level level);
/* The structured context of a run's lines (RUN_ID=, EVENT=, LAYER=,
 * STEP=): kept by its owner (the engine's running run) and in effect only
 * while that run's own code runs, so that a line logged for anything else
 * meanwhile (a control client, the stack source) carries none of it. */
struct log_context {
	long run_id;            /* 0: none */
	char event[32];
	char layer[256];
	char step[512];
};
/* Fills ctx; NULL strings are empty fields. The strings are copied. */
void log_context_set(struct log_context *ctx, long run_id, const char *event, const char *layer, const char *step);
/* Makes ctx (borrowed; NULL: none) the context of the lines logged from
 * now on, and returns the one it replaces, to be given back with
 * log_context_use when the run's code returns. */
const struct log_context *log_context_use(const struct log_context *ctx);

void log_write(enum log_level level, const char *file, int line, const char *fmt, ...) _printf_(4, 5);

#define log_debug(...) log_write(LOG_LEVEL_DEBUG, __FILE__, __LINE__, __VA_ARGS__)
#define log_info(...) log_write(LOG_LEVEL_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define log_warn(...) log_write(LOG_LEVEL_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define log_error(...) log_write(LOG_LEVEL_ERROR, __FILE__, __LINE__, __VA_ARGS__)

/* Logs with errno set from r (a negative errno, so %m works) and returns r. */
int log_errno_internal(enum log_level level, int r, const char *file, int line, const char *fmt, ...)
	_printf_(5, 6);
#define log_error_errno(r, ...) log_errno_internal(LOG_LEVEL_ERROR, (r), __FILE__, __LINE__, __VA_ARGS__)
#define log_warn_errno(r, ...) log_errno_internal(LOG_LEVEL_WARN, (r), __FILE__, __LINE__, __VA_ARGS__)

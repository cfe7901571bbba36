/* SPDX-License-Identifier: BSD-2-Clause */
/* agentctl's output (output.c): text printers, one per verb, which return
 * the command's exit code, and the JSON form. */
#pragma once

#include <stdbool.h>

#include <jansson.h>

/* Exit codes (design.md §5). */
#define EXIT_FAILED 1
#define EXIT_USAGE 2
#define EXIT_UNREACHABLE 3
#define EXIT_DENIED 4

int print_status(const json_t *r);
int print_runs(const json_t *r);
int print_show(const json_t *r);
int print_plan(const json_t *r);
int print_version(const json_t *r);
int print_queued(const json_t *r);
int print_log(const json_t *r);
int print_log_follow(const json_t *r);
int print_run_result(const json_t *r);
int print_generic(const json_t *r);
int print_resumed(const json_t *r);
int print_cleared(const json_t *r);
int print_reloaded(const json_t *r);
int print_fleet(const json_t *r);
int print_schedule(const json_t *r);
int print_metrics(const json_t *r);
int print_pushed(const json_t *r);
/* `stack --revision`, from the status result: see output.c. */
int print_stack_revision(const json_t *r);
void print_event(const json_t *ev);

/* Prints the result of method: as JSON (the stack document itself for
 * "stack"; {"stack_mod_revision", "stack_revision"} for `stack --revision`;
 * for "version" the daemon's result plus "agentctl_version" and
 * "agentctl_protocol", with a warning on stderr when the versions differ)
 * when json, else through print (NULL: nothing). Returns the exit
 * code: a run waited for that did not succeed fails the command in both
 * forms. */
int output_result(const char *method, const json_t *result, int (*print)(const json_t *result), bool json);

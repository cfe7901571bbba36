/* SPDX-License-Identifier: BSD-2-Clause */
/* The require step kind: a precondition on the managed system. It changes
 * nothing; it is "unchanged" when its path exists as the step comes to run
 * (resolved inside root, the final component not followed: lstat), and
 * "failed" with "<path> does not exist: <why>" when it does not, so the
 * steps after it are skipped and the run says which file was missing
 * (e.g. a buildout script a maintenance job runs, before the app was
 * deployed). A plan shows action "none", or "fail" with the same words. */
#pragma once

#include "plan.h"

/* path: absolute on the managed system, without ".."; why: the rest of the
 * sentence (copied). Returns the step, or NULL with *ret_error. */
struct step *plan_add_require(struct plan *p, const char *path, const char *why, char **ret_error);

/* SPDX-License-Identifier: BSD-2-Clause */
/* The "release" step: one code deploy of an app (design.md §8). When the
 * source recorded in deploy_to/current/.agentd-source differs from the
 * stack's, it checks the code out into deploy_to/releases/<UTC timestamp>,
 * links the shared dirs in, writes deploy.cfg, builds it (bootstrap when
 * bin/buildout is missing, then buildout), and only when all that worked
 * records the source, switches `current` atomically and prunes old releases
 * to keep_releases. A failed build removes its release and leaves `current`
 * (and the running services) alone. Unchanged, with no fork, when the
 * source is the same. */
#pragma once

#include <stddef.h>
#include <sys/types.h>

struct plan;
struct step;

enum release_scm { RELEASE_GIT, RELEASE_LOCAL, RELEASE_ARCHIVE };

struct release_step_opts {
	const char *deploy_to;             /* absolute, inside root */
	enum release_scm scm;
	const char *repository;            /* git: URL; local: directory inside root; archive: http(s) URL */
	const char *revision;              /* git only, may be NULL */
	const char *userpwd;               /* archive basic auth "user:password", may be NULL */
	const char *source_key;            /* what identifies this source (recorded in .agentd-source) */
	const char *user, *group;          /* owner of the release; commands run as user */
	const char *const *shared;         /* NULL-terminated dir names linked to ../../shared/<name> */
	const char *deploy_cfg;            /* content of deploy.cfg */
	const char *const *bootstrap_argv; /* may be NULL: run when bin/buildout is missing */
	const char *const *build_argv;     /* buildout, relative to the release dir */
	const char *const *env;            /* "K=V" for the commands */
	long keep;                         /* releases kept, the new one included */
	long timeout_sec;                  /* per command */
};

struct step *plan_add_release(struct plan *p, const struct release_step_opts *o, char **ret_error);

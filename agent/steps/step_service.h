/* SPDX-License-Identifier: BSD-2-Clause */
/* The "service" step: a supervisord program driven over XML-RPC
 * (agent/supervisor.h). Never supervisorctl, never a fork. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct plan;
struct step;

enum service_action {
	SERVICE_UPDATE,  /* reloadConfig; add/replace/remove the app's groups; start what is not running
			  * (STOPPED, EXITED, FATAL; BACKOFF is stopped first): changed */
	SERVICE_START,   /* unchanged when RUNNING */
	SERVICE_STOP,
	SERVICE_RESTART, /* wait delay when it was running, then stop + start */
};

/* A program file the plan writes before the update step: a plan compares it
 * with the disk, since the run's reloadConfig would see its group changed. */
struct service_conf {
	const char *path;            /* on the managed system */
	const char *content;
};

struct service_step_opts {
	enum service_action action;
	const char *socket;          /* supervisord's unix socket (a host path) */
	long timeout_ms;             /* per XML-RPC call */
	long start_timeout_ms;       /* 0: timeout_ms. How long a program this step starts, restarts or adds
				      * may stay STARTING: it must reach RUNNING (supervisord's startsecs)
				      * or the step fails, naming it with its state, supervisord's
				      * description and the last line of its stderr log (the run log gets
				      * the log's last 2 KiB); one left STARTING or in BACKOFF is stopped */
	/* start, stop, restart: */
	const char *name;            /* the program (= its group) */
	long delay_sec;              /* restart: rolling-restart delay */
	const struct step *update;   /* restart: borrowed (same plan); a program that step just added is not
				      * restarted a second time */
	/* update: */
	const char *const *programs; /* NULL-terminated: the app's programs that must exist and run */
	const char *app;             /* the app's groups: those in programs, and those whose program file
				      * starts with the marker line "; agentd app=<app>"; others (another
				      * app whose name starts the same, an admin's own) are never touched */
	const char *conf_dir;        /* may be NULL: program files here (inside root) marked as the app's
				      * that are not in programs are removed first (a client count that
				      * went down) */
	const struct service_conf *confs; /* may be NULL: n_confs program files the plan writes (copied) */
	size_t n_confs;
};

struct step *plan_add_service(struct plan *p, const struct service_step_opts *o, char **ret_error);

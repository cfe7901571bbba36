/* SPDX-License-Identifier: BSD-2-Clause */
/* Lifecycle events and what triggered a run (design.md §3, §5). */
#pragma once

enum event {
	EVENT_SETUP,
	EVENT_CONFIGURE,
	EVENT_DEPLOY,
	EVENT_UNDEPLOY,
	EVENT_SHUTDOWN,
	/* One maintenance job (design.md §8.1): never triggered by a stack
	 * change and never in agent.layers; its run names the job in recipe. */
	EVENT_MAINTENANCE,
	_EVENT_MAX,
	EVENT_INVALID = -1,
};

enum trigger_kind {
	TRIGGER_BOOT,         /* first start on this instance */
	TRIGGER_STACK_CHANGE, /* a new stack version */
	TRIGGER_CTL,          /* agentctl run */
	TRIGGER_RETRY,        /* a failed or interrupted run again */
	TRIGGER_SCHEDULE,     /* a maintenance job due (design.md §8.1) */
	_TRIGGER_MAX,
	TRIGGER_INVALID = -1,
};

const char *event_to_string(enum event e);
enum event event_from_string(const char *s);
const char *trigger_to_string(enum trigger_kind t);
enum trigger_kind trigger_from_string(const char *s);

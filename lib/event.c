/* SPDX-License-Identifier: BSD-2-Clause */
#include "event.h"

#include <string.h>

static const char *const event_names[_EVENT_MAX] = {
	[EVENT_SETUP] = "setup",       [EVENT_CONFIGURE] = "configure", [EVENT_DEPLOY] = "deploy",
	[EVENT_UNDEPLOY] = "undeploy", [EVENT_SHUTDOWN] = "shutdown",
	[EVENT_MAINTENANCE] = "maintenance",
};

static const char *const trigger_names[_TRIGGER_MAX] = {
	[TRIGGER_BOOT] = "boot", [TRIGGER_STACK_CHANGE] = "stack-change", [TRIGGER_CTL] = "ctl",
	[TRIGGER_RETRY] = "retry", [TRIGGER_SCHEDULE] = "schedule",
};

const char *event_to_string(enum event e)
{
	return e >= 0 && e < _EVENT_MAX ? event_names[e] : NULL;
}

enum event event_from_string(const char *s)
{
	for (int i = 0; s && i < _EVENT_MAX; i++)
		if (strcmp(s, event_names[i]) == 0)
			return (enum event)i;
	return EVENT_INVALID;
}

const char *trigger_to_string(enum trigger_kind t)
{
	return t >= 0 && t < _TRIGGER_MAX ? trigger_names[t] : NULL;
}

enum trigger_kind trigger_from_string(const char *s)
{
	for (int i = 0; s && i < _TRIGGER_MAX; i++)
		if (strcmp(s, trigger_names[i]) == 0)
			return (enum trigger_kind)i;
	return TRIGGER_INVALID;
}

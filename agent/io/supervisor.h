/* SPDX-License-Identifier: BSD-2-Clause */
/* supervisord's XML-RPC interface over its unix socket (POST /RPC2), on the
 * loop through agent/http.h. Replies are parsed with libxml2 into JSON
 * values (string, int, boolean, double, array, struct -> object; nil and
 * dateTime as strings). */
#pragma once

#include <jansson.h>
#include <stddef.h>

struct http;
struct http_request;

/* Fault codes of supervisor's rpcinterface (supervisor/xmlrpc.py Faults). */
enum {
	SUPERVISOR_BAD_NAME = 10,
	SUPERVISOR_NO_FILE = 20,
	SUPERVISOR_FAILED = 30,
	SUPERVISOR_SPAWN_ERROR = 50,
	SUPERVISOR_ABNORMAL_TERMINATION = 40,
	SUPERVISOR_ALREADY_STARTED = 60,
	SUPERVISOR_NOT_RUNNING = 70,
	SUPERVISOR_ALREADY_ADDED = 90,
	SUPERVISOR_STILL_RUNNING = 91,
};

/* result is borrowed for the call; on failure result is NULL and error says
 * why; fault is the XML-RPC faultCode, or 0 for a transport or parse error. */
typedef void (*supervisor_cb)(void *userdata, const json_t *result, int fault, const char *error);

/* Calls method with params (a JSON array of strings, integers and booleans;
 * NULL for none). Returns 0 or a negative errno (cb is then not called). */
int supervisor_call(struct http *h, const char *socket, const char *method, const json_t *params, long timeout_ms,
		    supervisor_cb cb, void *userdata, struct http_request **ret);

/* The same call, blocking for at most timeout_ms (libcurl's easy interface):
 * for a step's describe, which must answer at once (steps/plan.h) and asks
 * supervisord read-only questions on its local socket. Returns 0 with
 * *ret_result (new reference) for a normal reply; 0 with *ret_fault > 0 and
 * *ret_error ("supervisord METHOD: fault: ...", malloc'd) for a fault; a
 * negative errno with *ret_error for anything else (-ETIMEDOUT when the
 * time ran out, -ECONNREFUSED when supervisord could not be reached). */
int supervisor_call_sync(const char *socket, const char *method, const json_t *params, long timeout_ms,
			 json_t **ret_result, int *ret_fault, char **ret_error);

/* Building and parsing, exposed for tests and the fuzzer. */
char *xmlrpc_build_call(const char *method, const json_t *params);
/* Returns 0 with *ret_value (new reference) for a normal reply; 0 with
 * *ret_fault > 0 and *ret_error for a fault; a negative errno with *ret_error
 * (malloc'd) for anything that is not a well-formed methodResponse. */
int xmlrpc_parse_response(const char *body, size_t len, json_t **ret_value, int *ret_fault, char **ret_error);

/* SPDX-License-Identifier: BSD-2-Clause */
/* The memory floor for tests/bench/run: a process that links and initialises
 * the same five libraries as agentd, then does nothing. Whatever agentd uses
 * above this process's RSS is agentd's own; the libraries' share (libcurl's
 * TLS and protocol libraries above all) is not something agentd can shed. */
#include <stdio.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>
#include <libmount.h>
#include <systemd/sd-daemon.h>
#include <uv.h>

int main(void)
{
	uv_loop_t *loop = uv_default_loop();
	CURLM *multi;
	json_t *o;
	struct libmnt_context *cxt;
	int booted;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return 1;
	multi = curl_multi_init();
	o = json_object();
	booted = sd_booted();
	cxt = mnt_new_context();
	if (!loop || !multi || !o || !cxt)
		return 1;
	/* Tell the bench we are initialised; it reads /proc/PID/smaps_rollup
	 * while we sleep, then kills us. */
	printf("ready %d\n", booted);
	fflush(stdout);
	for (;;)
		pause();
}

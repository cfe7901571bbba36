/* SPDX-License-Identifier: BSD-2-Clause */
/* libFuzzer target: EC2's XML replies (io/ec2.c) and IMDS's role
 * credentials. Any input gives snapshots, an error code, a snapshot id or
 * credentials, or an error with a message; never a crash, a leak or
 * undefined behaviour. */
#include <assert.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "io/ec2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *body = (const char *)data;
	struct ec2_snapshots s = { 0 };
	struct ec2_creds c;
	char *next = NULL, *err = NULL, *code = NULL, *msg = NULL, *id = NULL;

	if (ec2_parse_snapshots(body, size, &s, &next, &err) < 0)
		assert(err && !next);
	for (size_t i = 0; i < s.n; i++) {
		assert(s.v[i].id && s.v[i].state);
		(void)ec2_snapshot_tag(&s.v[i], "agentd:stack");
	}
	ec2_snapshots_free(&s);
	free(next);
	free(err);
	err = NULL;
	if (ec2_parse_error(body, size, &code, &msg) == 0)
		assert(code);
	free(code);
	free(msg);
	if (ec2_parse_create_snapshot(body, size, &id, &err) < 0)
		assert(err && !id);
	free(id);
	free(err);
	err = NULL;
	if (ec2_parse_role_creds(body, size, &c, &err) == 0)
		assert(c.key && c.secret);
	else
		assert(err && !c.key);
	ec2_creds_clear(&c);
	free(err);
	return 0;
}

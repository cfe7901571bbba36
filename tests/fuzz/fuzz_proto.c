/* SPDX-License-Identifier: BSD-2-Clause */
/* libFuzzer target for the control protocol as the server sees it: bytes
 * arrive in arbitrary chunks through proto_reader, each line is parsed as a
 * request, redacted, re-encoded, and run output is redacted as text. Checks
 * that lines stay within the cap, that a redacted document keeps no value
 * under a secret key, and that every encoded reply is one line. */
#include <assert.h>
#include <stdbool.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* where: 0 root, 1 $.agent, 2 $.agent.files, 3 a layer's list, 4 its
 * entry, 5 anywhere else. Only an agent.files entry marked secret keeps its
 * path, mode, owner and group; any other object so marked hides all. */
static void check_redacted_at(const json_t *v, int where)
{
	const char *k;
	json_t *x;
	size_t i;

	if (json_is_object(v)) {
		bool secret = json_is_true(json_object_get(v, "secret"));

		json_object_foreach((json_t *)v, k, x)
		{
			bool kept = strcmp(k, "secret") == 0 && json_is_boolean(x);
			bool desc = where == 4 && (!strcmp(k, "path") || !strcmp(k, "mode") || !strcmp(k, "owner") ||
						   !strcmp(k, "group"));
			int next = where == 0 && !strcmp(k, "agent")   ? 1
				   : where == 1 && !strcmp(k, "files") ? 2
				   : where == 2			       ? 3
									       : 5;

			if (!kept && (key_is_secret(k) || (secret && !desc)))
				assert(json_is_string(x) && strcmp(json_string_value(x), "***") == 0);
			else
				check_redacted_at(x, next);
		}
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, x) check_redacted_at(x, where == 3 ? 4 : 5);
	}
}

static void check_redacted(const json_t *v)
{
	check_redacted_at(v, 0);
}

/* Redacted text is the input line by line: each line unchanged, or cut
 * after a separator and ended by "***" (the rest of a line after a secret
 * name is hidden whole); and redacting again changes nothing. */
static void check_redacted_text(const char *in, const char *out)
{
	char *again = proto_redact_text(out);

	assert(again && strcmp(again, out) == 0);
	free(again);
	for (;;) {
		const char *ie = strchr(in, '\n'), *oe = strchr(out, '\n');
		size_t il = ie ? (size_t)(ie - in) : strlen(in), ol = oe ? (size_t)(oe - out) : strlen(out);

		assert(!ie == !oe);
		if (!(il == ol && memcmp(in, out, il) == 0)) {
			assert(ol >= 3 && memcmp(out + ol - 3, "***", 3) == 0);
			assert(ol - 3 <= il && memcmp(in, out, ol - 3) == 0);
		}
		if (!ie)
			break;
		in = ie + 1;
		out = oe + 1;
	}
}

static void check_one_line(const json_t *v)
{
	size_t len = 0;
	char *line = proto_encode_line(v, &len);

	assert(line);
	assert(len > 0 && line[len - 1] == '\n');
	assert(memchr(line, '\n', len - 1) == NULL);
	free(line);
}

static void count_secret(const char *str, size_t len, void *userdata)
{
	assert(str && strlen(str) >= len);
	(*(size_t *)userdata)++;
}

static void handle_line(const char *line)
{
	json_error_t jerr;
	json_t *req = json_loads(line, JSON_REJECT_DUPLICATES, &jerr), *red, *shared, *reply;
	char *text;
	size_t n_secret = 0;

	if (req && json_is_object(req)) {
		const char *name = json_string_value(json_object_get(req, "method"));
		enum proto_method m = proto_method_from_string(name);
		if (m != PROTO_METHOD_INVALID)
			assert(strcmp(proto_method_to_string(m), name) == 0);
		red = proto_redact(req);
		assert(red);
		check_redacted(red);
		check_one_line(red);
		/* The copy-free redaction that serves `stack` must hide exactly
		 * what the copying one hides. */
		shared = proto_redact_shared(req);
		assert(shared && json_equal(shared, red));
		json_decref(shared);
		proto_secret_strings(req, count_secret, &n_secret);
		json_decref(red);
	}
	json_decref(req);

	/* The line as if it were run output shown to an unprivileged caller. */
	text = proto_redact_text(line);
	assert(text);
	check_redacted_text(line, text);
	reply = proto_reply_ok(json_pack("{s:s, s:o}", "output", text, "raw", proto_string_lossy(line, strlen(line))));
	assert(reply);
	check_one_line(reply);
	json_decref(reply);
	free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_reader r;
	size_t off = 0;
	/* A small cap so that overlong lines are exercised with small inputs. */
	size_t max = size > 0 ? 16 + data[0] * 4 : 64;

	proto_reader_init(&r, max);
	while (off < size) {
		/* Chunk sizes from the input itself: 1..16 bytes. */
		size_t chunk = (size_t)(data[off] % 16) + 1;
		char *line = NULL;
		int ret;

		if (chunk > size - off)
			chunk = size - off;
		proto_reader_feed(&r, (const char *)data + off, chunk);
		off += chunk;
		assert(r.cap <= 2 * (max + 1) + 4096 + 16 * 2);
		while ((ret = proto_reader_next(&r, &line)) != 0) {
			assert(ret == 1 || ret == -EMSGSIZE || ret == -EBADMSG);
			if (ret == 1) {
				assert(strlen(line) < max);
				handle_line(line);
				free(line);
			}
		}
	}
	proto_reader_free(&r);
	return 0;
}

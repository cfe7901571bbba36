/* SPDX-License-Identifier: BSD-2-Clause */
/* Source selection and the helpers every source shares. */
#include "source.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "io/gzip.h"
#include "io/http.h"
#include "log.h"
#include "stack/stack.h"
#include "util.h"

int source_new(uv_loop_t *loop, const struct config *config, struct http *http, const struct source_callbacks *cbs,
	       void *userdata, struct source **ret, char **ret_error)
{
	static const struct {
		const char *prefix;
		const struct source_ops *ops;
	} schemes[] = {
		{ "file://", &source_file_ops },
		{ "http://", &source_http_ops },
		{ "https://", &source_http_ops },
		{ "imds:", &source_imds_ops },
		{ "etcd://", &source_etcd_ops },
		{ "etcd+https://", &source_etcd_ops },
	};
	const struct source_ops *ops = NULL;
	struct source *s;

	for (size_t i = 0; i < ELEMENTSOF(schemes); i++)
		if (strncmp(config->source, schemes[i].prefix, strlen(schemes[i].prefix)) == 0)
			ops = schemes[i].ops;
	if (!ops) {
		_cleanup_free_ char *shown = source_url_redact(config->source);
		*ret_error = xasprintf("source \"%s\": unsupported scheme (file://, http://, https://, imds:, etcd://, "
				       "etcd+https://)", shown);
		return -EINVAL;
	}
	if (ops == &source_file_ops && !path_is_safe_absolute(config->source + strlen("file://"))) {
		*ret_error = xasprintf("source \"%s\": file:// needs an absolute path", config->source);
		return -EINVAL;
	}

	s = xcalloc(1, sizeof(*s));
	s->ops = ops;
	s->loop = loop;
	s->config = config;
	s->http = http;
	s->url = xstrdup(config->source);
	s->cbs = *cbs;
	s->userdata = userdata;
	*ret = s;
	return 0;
}

char *source_url_redact(const char *url)
{
	return http_url_redact(url);
}

int source_start(struct source *s)
{
	return s->ops->start(s);
}

void source_reload(struct source *s)
{
	s->ops->reload(s);
}

void source_free(struct source *s)
{
	if (!s)
		return;
	s->ops->stop(s);
	if (s->ops->free_data)
		s->ops->free_data(s->data);
	free(s->url);
	free(s);
}

void source_deliver(struct source *s, const char *data, size_t len)
{
	s->last_fetch_usec = time_now_usec();
	s->cbs.on_document(s->userdata, data, len);
}

bool source_unchanged(struct source *s)
{
	s->last_fetch_usec = time_now_usec();
	return s->cbs.on_unchanged ? s->cbs.on_unchanged(s->userdata) : true;
}

int source_gunzip(const char *what, const char *data, size_t len, char **ret_data, size_t *ret_len,
		  char **ret_error)
{
	const char *reason = NULL;
	int r;

	*ret_data = NULL;
	*ret_len = 0;
	*ret_error = NULL;
	if (!gzip_is(data, len))
		return 0;
	r = gzip_inflate(data, len, STACK_MAX_BYTES, ret_data, ret_len, &reason);
	if (r == -EFBIG)
		*ret_error = xasprintf("%s: gzip-compressed document larger than %d bytes once decompressed "
				       "(%zu bytes compressed); refused",
				       what, STACK_MAX_BYTES, len);
	else if (r == -EBADMSG)
		*ret_error = xasprintf("%s: starts like gzip data but does not decompress: %s", what,
				       reason ? reason : "invalid gzip data");
	else if (r < 0)
		*ret_error = xasprintf("%s: decompressing gzip data: %s", what, strerror(-r));
	return r;
}

void source_fail(struct source *s, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	s->last_fetch_usec = time_now_usec();
	s->cbs.on_error(s->userdata, msg);
}

uint64_t source_next_delay_ms(long interval_sec, unsigned failures)
{
	uint64_t base = (uint64_t)(interval_sec > 0 ? interval_sec : 1) * 1000;
	uint64_t jitter;

	if (failures > 0) {
		/* 1 s, 2 s, 4 s ... capped at the poll interval: an endpoint that
		 * comes back is noticed quickly, a dead one is not hammered. */
		uint64_t b = failures > 20 ? base : (uint64_t)1000 << (failures - 1);
		if (b < base)
			base = b;
	}
	jitter = base / 10;
	if (jitter == 0)
		return base;
	/* ±10%: agents of one stack do not poll in lockstep. */
	return base - jitter + ((uint64_t)random() % (2 * jitter + 1));
}

void source_status(struct source *s, json_t *o)
{
	if (s->ops->status)
		s->ops->status(s, o);
}

void source_set_agent(struct source *s, const json_t *agent)
{
	if (s && s->ops->set_agent)
		s->ops->set_agent(s, agent);
}

/* The other etcd accessors of source.h are in etcd.c, beside the state
 * they read. */

/* SPDX-License-Identifier: BSD-2-Clause */
#include "gluster_parse.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

void gluster_info_done(struct gluster_info *i)
{
	if (!i)
		return;
	free(i->status);
	for (size_t k = 0; k < i->n_bricks; k++)
		free(i->bricks[k]);
	free(i->bricks);
	free(i->cache_size);
	*i = (struct gluster_info){ 0 };
}

/* The value after "key: " on line l (n bytes), trimmed, or NULL. */
static char *value_of(const char *l, size_t n, const char *key)
{
	size_t k = strlen(key);

	if (n < k + 1 || strncmp(l, key, k) != 0 || l[k] != ':')
		return NULL;
	l += k + 1;
	n -= k + 1;
	while (n > 0 && (*l == ' ' || *l == '\t'))
		l++, n--;
	while (n > 0 && (l[n - 1] == ' ' || l[n - 1] == '\t' || l[n - 1] == '\r'))
		n--;
	return xstrndup(l, n);
}

static bool is_brick_key(const char *l, size_t n)
{
	size_t i = 5;

	if (n < 7 || strncmp(l, "Brick", 5) != 0 || l[i] < '0' || l[i] > '9')
		return false;
	while (i < n && l[i] >= '0' && l[i] <= '9')
		i++;
	return i < n && l[i] == ':';
}

int gluster_info_parse(const char *text, size_t len, struct gluster_info *ret)
{
	size_t i = 0;

	*ret = (struct gluster_info){ 0 };
	while (i < len) {
		const char *l = text + i, *nl = memchr(l, '\n', len - i);
		size_t n = nl ? (size_t)(nl - l) : len - i;
		char *v;

		i += n + (nl ? 1 : 0);
		while (n > 0 && (*l == ' ' || *l == '\t'))
			l++, n--;
		if (is_brick_key(l, n)) {
			const char *c = memchr(l, ':', n);

			if (ret->n_bricks >= GLUSTER_BRICKS_MAX)
				continue;
			v = value_of(c, n - (size_t)(c - l), "");
			if (!v || !*v) {
				free(v);
				continue;
			}
			ret->bricks = xrealloc(ret->bricks, (ret->n_bricks + 1) * sizeof(char *));
			ret->bricks[ret->n_bricks++] = v;
		} else if ((v = value_of(l, n, "Status"))) {
			free(ret->status);
			ret->status = v;
		} else if ((v = value_of(l, n, "performance.cache-size"))) {
			free(ret->cache_size);
			ret->cache_size = v;
		}
	}
	return 0;
}

bool gluster_info_says_absent(const char *text, size_t len, const char *volume)
{
	_cleanup_free_ char *want = xasprintf("Volume %s does not exist", volume);
	size_t i = 0, w = strlen(want);

	while (i < len) {
		const char *l = text + i, *nl = memchr(l, '\n', len - i);
		size_t n = nl ? (size_t)(nl - l) : len - i;

		i += n + (nl ? 1 : 0);
		while (n > 0 && (l[n - 1] == ' ' || l[n - 1] == '\t' || l[n - 1] == '\r'))
			n--;
		/* The whole line, or its end after "...: " (the CLI's prefix). */
		if (n >= w && memcmp(l + n - w, want, w) == 0 &&
		    (n == w || (n >= w + 2 && l[n - w - 1] == ' ' && l[n - w - 2] == ':')))
			return true;
	}
	return false;
}

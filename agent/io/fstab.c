/* SPDX-License-Identifier: BSD-2-Clause */
#include "fstab.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

void fstab_entry_done(struct fstab_entry *e)
{
	if (!e)
		return;
	free(e->source);
	free(e->target);
	free(e->fstype);
	free(e->options);
	*e = (struct fstab_entry){ 0 };
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

/* Decodes one field of n bytes: \ooo octal escapes as getmntent does. */
static char *field_unescape(const char *p, size_t n)
{
	char *out = xmalloc(n + 1), *o = out;

	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\\' && i + 3 < n && p[i + 1] >= '0' && p[i + 1] <= '3' && p[i + 2] >= '0' &&
		    p[i + 2] <= '7' && p[i + 3] >= '0' && p[i + 3] <= '7') {
			*o++ = (char)(((p[i + 1] - '0') << 6) | ((p[i + 2] - '0') << 3) | (p[i + 3] - '0'));
			i += 3;
		} else
			*o++ = p[i];
	}
	*o = '\0';
	return out;
}

int fstab_parse_line(const char *line, size_t len, struct fstab_entry *ret)
{
	const char *f[4] = { 0 };
	size_t fl[4] = { 0 }, nf = 0, i = 0;

	while (i < len && is_blank(line[i]))
		i++;
	if (i == len || line[i] == '#')
		return 0;
	while (i < len && nf < 4) {
		size_t start = i;

		while (i < len && !is_blank(line[i]))
			i++;
		f[nf] = line + start;
		fl[nf] = i - start;
		nf++;
		while (i < len && is_blank(line[i]))
			i++;
	}
	if (nf < 2)
		return 0;
	*ret = (struct fstab_entry){
		.source = field_unescape(f[0], fl[0]),
		.target = field_unescape(f[1], fl[1]),
		.fstype = nf > 2 ? xstrndup(f[2], fl[2]) : xstrdup(""),
		.options = nf > 3 ? xstrndup(f[3], fl[3]) : xstrdup(""),
	};
	return 1;
}

char *fstab_escape(const char *s)
{
	struct buf b;

	buf_init(&b);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == ' ' || c == '\t' || c == '\n' || c == '\\' || c == '#' || c == '\r')
			buf_printf(&b, "\\%03o", c);
		else
			buf_append(&b, s, 1);
	}
	buf_append(&b, "", 1);
	return buf_steal(&b);
}

/* Calls fn for each line (without its newline); stops when fn returns
 * nonzero and returns that. */
static int for_each_line(const char *text, size_t len, int (*fn)(void *u, const char *l, size_t n, bool nl),
			 void *u)
{
	size_t i = 0;

	while (i < len) {
		const char *nl = memchr(text + i, '\n', len - i);
		size_t n = nl ? (size_t)(nl - (text + i)) : len - i;
		int r = fn(u, text + i, n, nl != NULL);

		if (r)
			return r;
		i += n + (nl ? 1 : 0);
	}
	return 0;
}

struct find_ctx {
	const char *target;
	struct fstab_entry *ret;
};

static int find_line(void *u, const char *l, size_t n, bool nl)
{
	struct find_ctx *c = u;
	struct fstab_entry e;

	(void)nl;
	if (fstab_parse_line(l, n, &e) <= 0)
		return 0;
	if (strcmp(e.target, c->target) == 0) {
		*c->ret = e;
		return 1;
	}
	fstab_entry_done(&e);
	return 0;
}

int fstab_find(const char *text, size_t len, const char *target, struct fstab_entry *ret)
{
	struct find_ctx c = { target, ret };

	return for_each_line(text, len, find_line, &c);
}

struct foreign_ctx {
	const char *target;
	char **ret_source;
};

static int foreign_line(void *u, const char *l, size_t n, bool nl)
{
	struct foreign_ctx *c = u;
	struct fstab_entry e;
	int r = 0;

	(void)nl;
	if (fstab_parse_line(l, n, &e) <= 0)
		return 0;
	if (strcmp(e.target, c->target) == 0 && !fstab_has_option(e.options, FSTAB_OWNER_OPTION)) {
		if (c->ret_source)
			*c->ret_source = xstrdup(e.source);
		r = 1;
	}
	fstab_entry_done(&e);
	return r;
}

int fstab_find_foreign(const char *text, size_t len, const char *target, char **ret_source)
{
	struct foreign_ctx c = { target, ret_source };

	return for_each_line(text, len, foreign_line, &c);
}

struct set_ctx {
	const char *target;
	const char *line;
	bool take_foreign;
	struct buf out;
	bool replaced;
};

static int set_line(void *u, const char *l, size_t n, bool nl)
{
	struct set_ctx *c = u;
	struct fstab_entry e;
	bool match = false;

	(void)nl;
	if (fstab_parse_line(l, n, &e) > 0) {
		match = strcmp(e.target, c->target) == 0 &&
			(c->take_foreign || fstab_has_option(e.options, FSTAB_OWNER_OPTION));
		fstab_entry_done(&e);
	}
	if (!match) {
		buf_append(&c->out, l, n);
		buf_append(&c->out, "\n", 1);
	} else if (!c->replaced) {
		buf_puts(&c->out, c->line);
		buf_append(&c->out, "\n", 1);
		c->replaced = true;
	}
	return 0;
}

char *fstab_set(const char *text, size_t len, const char *target, const char *line, bool take_foreign,
		bool *ret_changed)
{
	struct set_ctx c = { .target = target, .line = line, .take_foreign = take_foreign };
	char *out;
	size_t out_len;

	buf_init(&c.out);
	(void)for_each_line(text, len, set_line, &c);
	if (!c.replaced) {
		buf_puts(&c.out, line);
		buf_append(&c.out, "\n", 1);
	}
	out_len = c.out.len;
	buf_append(&c.out, "", 1);
	out = buf_steal(&c.out);
	if (ret_changed)
		*ret_changed = out_len != len || memcmp(out, text, len) != 0;
	return out;
}

bool fstab_has_option(const char *opts, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = opts; p && *p;) {
		const char *comma = strchr(p, ',');
		size_t l = comma ? (size_t)(comma - p) : strlen(p);

		if (l == n && strncmp(p, name, n) == 0)
			return true;
		p = comma ? comma + 1 : NULL;
	}
	return false;
}

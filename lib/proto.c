/* SPDX-License-Identifier: BSD-2-Clause */
/* The control protocol shared by agentd and agentctl: the method names,
 * reply builders, NDJSON framing with a size cap, and the
 * redaction of secrets for unprivileged callers. */
#include "proto.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "util.h"

static const struct {
	const char *name;
	bool streams; /* may send event lines before the final reply */
} proto_methods[_PROTO_METHOD_MAX] = {
	[PROTO_METHOD_VERSION] = { "version", false },
	[PROTO_METHOD_STATUS] = { "status", false },
	[PROTO_METHOD_STACK] = { "stack", false },
	[PROTO_METHOD_RUNS] = { "runs", false },
	[PROTO_METHOD_RUN_INFO] = { "run-info", false },
	[PROTO_METHOD_LOG] = { "log", true },
	[PROTO_METHOD_PLAN] = { "plan", false },
	[PROTO_METHOD_RUN] = { "run", true },
	[PROTO_METHOD_RELOAD] = { "reload", false },
	[PROTO_METHOD_PAUSE] = { "pause", false },
	[PROTO_METHOD_RESUME] = { "resume", false },
	[PROTO_METHOD_CLEAR_FAILED] = { "clear-failed", false },
	[PROTO_METHOD_ROLLBACK] = { "rollback", false },
	[PROTO_METHOD_FLEET] = { "fleet", false },
	[PROTO_METHOD_STACK_PUSH] = { "stack-push", false },
	[PROTO_METHOD_SCHEDULE] = { "schedule", false },
	[PROTO_METHOD_METRICS] = { "metrics", false },
};

const char *proto_method_to_string(enum proto_method m)
{
	return m >= 0 && m < _PROTO_METHOD_MAX ? proto_methods[m].name : NULL;
}

enum proto_method proto_method_from_string(const char *name)
{
	for (int i = 0; name && i < _PROTO_METHOD_MAX; i++)
		if (strcmp(proto_methods[i].name, name) == 0)
			return (enum proto_method)i;
	return PROTO_METHOD_INVALID;
}

bool proto_method_streams(enum proto_method m)
{
	return m >= 0 && m < _PROTO_METHOD_MAX && proto_methods[m].streams;
}

json_t *proto_reply_ok(json_t *result)
{
	if (!result)
		result = json_object();
	return json_pack("{s:b, s:o}", "ok", 1, "result", result);
}

json_t *proto_reply_error(const char *code, const char *fmt, ...)
{
	va_list ap;
	char *msg;
	json_t *v;
	int n;

	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		msg = NULL;
	v = json_pack("{s:b, s:{s:s, s:o}}", "ok", 0, "error", "code", code, "message",
		      msg ? proto_string_lossy(msg, strlen(msg)) : json_string("out of memory"));
	free(msg);
	return v;
}

const char *proto_error_code_from_errno(int r)
{
	switch (r) {
	case -ENOENT:
		return PROTO_E_NOT_FOUND;
	case -EBUSY:
		return PROTO_E_BUSY;
	case -EINVAL:
		return PROTO_E_INVALID_PARAMS;
	case -EPERM:
	case -EACCES:
		return PROTO_E_PERMISSION;
	default:
		return PROTO_E_FAILED;
	}
}

char *proto_encode_line(const json_t *v, size_t *ret_len)
{
	char *s, *line;
	size_t n;

	/* Compact output never contains a raw newline: jansson escapes control
	 * characters inside strings, so one value is exactly one line. */
	s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!s)
		return NULL;
	n = strlen(s);
	line = xmalloc(n + 2);
	memcpy(line, s, n);
	line[n] = '\n';
	line[n + 1] = '\0';
	free(s);
	if (ret_len)
		*ret_len = n + 1;
	return line;
}

/* ---- framing ---- */

void proto_reader_init(struct proto_reader *r, size_t max)
{
	*r = (struct proto_reader){ .max = max ? max : PROTO_MAX_REQUEST };
}

void proto_reader_free(struct proto_reader *r)
{
	if (!r)
		return;
	free(r->buf);
	r->buf = NULL;
	r->start = r->len = r->cap = 0;
	r->overflow = false;
}

size_t proto_reader_pending(const struct proto_reader *r)
{
	return r->len - r->start;
}

bool proto_reader_ready(const struct proto_reader *r)
{
	size_t avail = r->len - r->start;

	return avail > 0 && (avail >= r->max || memchr(r->buf + r->start, '\n', avail));
}

static void reader_append(struct proto_reader *r, const char *data, size_t n)
{
	if (n == 0)
		return;
	/* Compact consumed bytes away before growing, so a long-lived
	 * connection does not creep. */
	if (r->start > 0 && r->len + n > r->cap) {
		memmove(r->buf, r->buf + r->start, r->len - r->start);
		r->len -= r->start;
		r->start = 0;
	}
	if (r->len + n > r->cap) {
		size_t cap = r->cap ? r->cap : 4096;
		while (cap < r->len + n)
			cap *= 2;
		r->buf = xrealloc(r->buf, cap);
		r->cap = cap;
	}
	memcpy(r->buf + r->len, data, n);
	r->len += n;
}

/* Length of the unterminated line at the end of the buffer. */
static size_t reader_partial(const struct proto_reader *r)
{
	size_t i = r->len;

	while (i > r->start && r->buf[i - 1] != '\n')
		i--;
	return r->len - i;
}

/* An overlong line is kept as its first max + 1 bytes (enough to know that
 * it is too long) while overflow is set; its newline, when it comes, is
 * appended so that proto_reader_next() reports it in order with the lines
 * around it. If next() has already reported it (dropping the bytes), the
 * newline is dropped too: the buffer then has no partial line. */
void proto_reader_feed(struct proto_reader *r, const char *data, size_t len)
{
	while (len > 0) {
		const char *nl = memchr(data, '\n', len);
		size_t chunk = nl ? (size_t)(nl - data) + 1 : len;
		size_t partial;

		if (r->overflow) {
			if (!nl)
				return;
			if (reader_partial(r) > 0)
				reader_append(r, "\n", 1);
			r->overflow = false;
			data += chunk;
			len -= chunk;
			continue;
		}

		partial = reader_partial(r);
		if (partial + chunk > r->max) {
			size_t keep = r->max + 1 > partial ? r->max + 1 - partial : 0;
			if (keep > chunk)
				keep = chunk;
			reader_append(r, data, keep);
			r->overflow = true;
			/* Leave data pointing at the rest of this line; the
			 * overflow branch finds its newline. */
			data += keep;
			len -= keep;
			if (keep == chunk && nl) {
				/* The newline itself fell within the kept bytes:
				 * the line is complete (and too long). */
				r->overflow = false;
			}
			continue;
		}
		reader_append(r, data, chunk);
		data += chunk;
		len -= chunk;
	}
}

int proto_reader_next(struct proto_reader *r, char **ret_line)
{
	const char *p = r->buf + r->start;
	size_t avail = r->len - r->start;
	const char *nl;
	size_t n;

	*ret_line = NULL;
	if (avail == 0)
		return 0;
	nl = memchr(p, '\n', avail);
	if (!nl) {
		if (avail < r->max)
			return 0;
		/* Even with its newline this line is already too long:
		 * report it now and drop the rest of it as it arrives. */
		r->start = r->len = 0;
		r->overflow = true;
		return -EMSGSIZE;
	}
	n = (size_t)(nl - p) + 1;
	r->start += n;
	if (r->start == r->len)
		r->start = r->len = 0;
	if (n > r->max)
		return -EMSGSIZE;
	n--; /* the newline */
	if (memchr(p, '\0', n))
		return -EBADMSG;
	if (n > 0 && p[n - 1] == '\r')
		n--;
	/* p stays valid: nothing moved the buffer since. */
	*ret_line = xstrndup(p, n);
	return 1;
}

/* ---- redaction ---- */

/* Where in a stack document an object is: only an entry of
 * agent.files.<layer>[] keeps the members that describe it visible when it
 * is marked secret; any other object marked so hides every member (fail
 * closed: we cannot tell what else in Custom JSON is a value). */
enum where {
	AT_ROOT,
	AT_AGENT,      /* $.agent */
	AT_FILES,      /* $.agent.files */
	AT_FILE_LIST,  /* $.agent.files.<layer> */
	AT_FILE_ENTRY, /* $.agent.files.<layer>[i] */
	AT_OTHER,
};

static enum where where_member(enum where w, const char *k)
{
	if (w == AT_ROOT && strcmp(k, "agent") == 0)
		return AT_AGENT;
	if (w == AT_AGENT && strcmp(k, "files") == 0)
		return AT_FILES;
	if (w == AT_FILES)
		return AT_FILE_LIST;
	return AT_OTHER;
}

static enum where where_element(enum where w)
{
	return w == AT_FILE_LIST ? AT_FILE_ENTRY : AT_OTHER;
}

/* Members of a secret agent.files entry that describe it rather than hold
 * its value (the file's path, mode and owner): shown as they are. */
static bool key_is_descriptive(const char *k)
{
	static const char *const keys[] = { "secret", "path", "mode", "owner", "group" };

	for (size_t i = 0; i < ELEMENTSOF(keys); i++)
		if (strcmp(k, keys[i]) == 0)
			return true;
	return false;
}

bool proto_object_is_secret(const json_t *v)
{
	return json_is_object(v) && json_is_true(json_object_get(v, "secret"));
}

/* Whether member k = v (of an object marked secret or not, at w) is shown
 * as "***". The mark itself, "secret": true or false, is shown: it is the
 * operator's flag, not a value, and says why the rest is hidden. */
static bool member_hidden(const char *k, const json_t *v, bool secret_object, enum where w)
{
	if (strcmp(k, "secret") == 0 && json_is_boolean(v))
		return false;
	return key_is_secret(k) || (secret_object && !(w == AT_FILE_ENTRY && key_is_descriptive(k)));
}

static json_t *redact_copy(const json_t *v, enum where w)
{
	if (json_is_object(v)) {
		bool secret = proto_object_is_secret(v);
		json_t *o = json_object();
		const char *k;
		json_t *x;

		json_object_foreach((json_t *)v, k, x)
		{
			json_t *c = member_hidden(k, x, secret, w) ? json_string("***")
								   : redact_copy(x, where_member(w, k));
			json_object_set_new(o, k, c);
		}
		return o;
	}
	if (json_is_array(v)) {
		json_t *a = json_array();
		size_t i;
		json_t *x;

		json_array_foreach(v, i, x) json_array_append_new(a, redact_copy(x, where_element(w)));
		return a;
	}
	return json_deep_copy(v);
}

json_t *proto_redact(const json_t *v)
{
	if (!v)
		return NULL;
	return redact_copy(v, AT_ROOT);
}

/* NULL when nothing at or below v is secret, else the redacted copy, new
 * only along the way to the secrets. One pass: the members seen before the
 * first secret are shared once it is found. */
static json_t *redact_shared_inner(json_t *v, enum where w)
{
	json_t *out = NULL, *x, *c;
	const char *k;
	size_t i;

	if (json_is_object(v)) {
		bool secret = proto_object_is_secret(v);

		json_object_foreach(v, k, x)
		{
			c = member_hidden(k, x, secret, w) ? json_string("***")
							   : redact_shared_inner(x, where_member(w, k));
			if (c && !out) {
				const char *k2;
				json_t *x2;

				out = json_object();
				json_object_foreach(v, k2, x2)
				{
					if (strcmp(k2, k) == 0)
						break;
					json_object_set(out, k2, x2);
				}
			}
			if (out)
				json_object_set_new(out, k, c ? c : json_incref(x));
		}
		return out;
	}
	if (json_is_array(v)) {
		json_array_foreach(v, i, x)
		{
			c = redact_shared_inner(x, where_element(w));
			if (c && !out) {
				out = json_array();
				for (size_t j = 0; j < i; j++)
					json_array_append(out, json_array_get(v, j));
			}
			if (out)
				json_array_append_new(out, c ? c : json_incref(x));
		}
	}
	return out;
}

json_t *proto_redact_shared(json_t *v)
{
	json_t *out;

	if (!v)
		return NULL;
	out = redact_shared_inner(v, AT_ROOT);
	return out ? out : json_incref(v);
}

/* Every string and number below v (v included): numbers as JSON writes
 * them, since that is how a file or a command would print them too. */
static void strings_below(const json_t *v, void (*fn)(const char *s, size_t len, void *userdata), void *userdata)
{
	const char *k;
	json_t *x;
	size_t i;

	if (json_is_string(v))
		fn(json_string_value(v), json_string_length(v), userdata);
	else if (json_is_number(v)) {
		char *d = json_dumps(v, JSON_ENCODE_ANY);

		if (d)
			fn(d, strlen(d), userdata);
		free(d);
	} else if (json_is_object(v)) {
		json_object_foreach((json_t *)v, k, x) strings_below(x, fn, userdata);
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, x) strings_below(x, fn, userdata);
	}
}

static void secret_strings(const json_t *v, enum where w, void (*fn)(const char *s, size_t len, void *userdata),
			   void *userdata)
{
	const char *k;
	json_t *x;
	size_t i;

	if (json_is_object(v)) {
		bool secret = proto_object_is_secret(v);

		json_object_foreach((json_t *)v, k, x)
		{
			if (member_hidden(k, x, secret, w))
				strings_below(x, fn, userdata);
			else
				secret_strings(x, where_member(w, k), fn, userdata);
		}
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, x) secret_strings(x, where_element(w), fn, userdata);
	}
}

void proto_secret_strings(const json_t *v, void (*fn)(const char *s, size_t len, void *userdata), void *userdata)
{
	secret_strings(v, AT_ROOT, fn, userdata);
}

static bool is_ident(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
	       c == '-' || c == '.';
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Skips what may sit between a name and its separator, or a separator and
 * its value: blanks, quotes, and the same escaped (\t, \" as a program that
 * prints JSON or C strings writes them). */
static size_t skip_filler(const char *s, size_t j)
{
	for (;;) {
		if (is_blank(s[j]) || s[j] == '"' || s[j] == '\'')
			j++;
		else if (s[j] == '\\' && (s[j + 1] == 't' || s[j + 1] == '"' || s[j + 1] == '\''))
			j += 2;
		else
			return j;
	}
}

/* At s[i], a secret word followed by the rest of its name, closing quotes,
 * [..] subscripts, blanks, then a separator ('=', ':', so "=>", ":=", "=="
 * too, or "->"), or a command line option ("--password VALUE")? Returns
 * the index just past the separator, or 0 when this is not an assignment. */
static size_t secret_value_at(const char *s, size_t i)
{
	static const char *const words[] = { "password", "secret", "token", "key" };
	size_t j = 0;

	for (size_t w = 0; w < ELEMENTSOF(words); w++) {
		size_t m = strlen(words[w]);
		if (strncasecmp(s + i, words[w], m) == 0) {
			j = i + m;
			break;
		}
	}
	if (j == 0)
		return 0;
	while (is_ident(s[j]))
		j++;
	if (s[j] == '>' && s[j - 1] == '-')
		return j + 1; /* "secret-> value": the '-' was taken as part of the name */
	if (i > 0 && s[i - 1] == '-' && is_blank(s[j])) {
		/* An option and its argument: --password VALUE. */
		size_t k = j;
		while (is_blank(s[k]))
			k++;
		if (s[k] && s[k] != '\n' && s[k] != '-')
			return j;
	}
	j = skip_filler(s, j);
	while (s[j] == '[') {
		/* password[prod]=, key["a b"]: */
		while (s[j] && s[j] != ']' && s[j] != '\n')
			j++;
		if (s[j] != ']')
			return 0;
		j = skip_filler(s, j + 1);
	}
	if (s[j] == '-' && s[j + 1] == '>')
		return j + 2;
	if (s[j] != '=' && s[j] != ':')
		return 0;
	return j + 1;
}

/* Once a secret-named key is followed by a separator, everything after it
 * up to the end of the line is hidden: where a value ends (escaped quotes,
 * several words, nested objects, arrays) cannot be told for every syntax,
 * and guessing short leaks the rest. */
char *proto_redact_text(const char *s)
{
	struct buf b;
	size_t i = 0, copied = 0;

	buf_init(&b);
	if (!s)
		return buf_steal(&b);
	while (s[i]) {
		size_t v = secret_value_at(s, i), end;

		if (v == 0) {
			i++;
			continue;
		}
		while (is_blank(s[v]))
			v++;
		end = v;
		while (s[end] && s[end] != '\n')
			end++;
		buf_append(&b, s + copied, v - copied);
		if (end > v)
			buf_puts(&b, "***");
		copied = i = end;
	}
	buf_append(&b, s + copied, i - copied);
	return buf_steal(&b);
}

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0. Strict
 * like jansson: no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_valid_len(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];
	size_t len;
	uint32_t cp;

	if (c == 0)
		return 0;
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF) {
		len = 2;
		cp = c & 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		len = 3;
		cp = c & 0x0F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4;
		cp = c & 0x07;
	} else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3F);
	}
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
	    (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return len;
}

json_t *proto_string_lossy(const char *data, size_t len)
{
	const unsigned char *p = (const unsigned char *)data;
	struct buf b;
	size_t i = 0, good = 0;
	json_t *v;

	if (!data)
		return json_string("");
	/* The common case, valid text, costs one pass and no copy. */
	while (i < len) {
		size_t l = utf8_valid_len(p + i, len - i);
		if (l == 0)
			break;
		i += l;
	}
	if (i == len)
		return json_stringn(data, len);

	buf_init(&b);
	i = 0;
	while (i < len) {
		size_t l = utf8_valid_len(p + i, len - i);
		if (l == 0) {
			buf_append(&b, data + good, i - good);
			buf_puts(&b, "\xEF\xBF\xBD");
			i++;
			good = i;
			continue;
		}
		i += l;
	}
	buf_append(&b, data + good, i - good);
	v = json_stringn(b.data, b.len);
	buf_free(&b);
	return v;
}

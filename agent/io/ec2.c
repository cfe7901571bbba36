/* SPDX-License-Identifier: BSD-2-Clause */
/* EC2's Query API: form encoding, signed calls with retries, XML replies
 * (see ec2.h). IMDS role credentials and region are in ec2_imds.c. */
#include "ec2.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <libxml/parser.h>
#include <libxml/tree.h>

#include "io/http.h"
#include "util.h"
#include "io/xml.h"

#define EC2_DEFAULT_TIMEOUT_MS 30000

void ec2_creds_clear(struct ec2_creds *c)
{
	if (!c)
		return;
	free(c->key);
	if (c->secret)
		explicit_bzero(c->secret, strlen(c->secret));
	free(c->secret);
	if (c->token)
		explicit_bzero(c->token, strlen(c->token));
	free(c->token);
	*c = (struct ec2_creds){ 0 };
}

void ec2_creds_copy(struct ec2_creds *dst, const struct ec2_creds *src)
{
	*dst = (struct ec2_creds){
		.key = src->key ? xstrdup(src->key) : NULL,
		.secret = src->secret ? xstrdup(src->secret) : NULL,
		.token = src->token ? xstrdup(src->token) : NULL,
		.expiration = src->expiration,
	};
}

char *ec2_endpoint_for(const char *configured, const char *region)
{
	size_t n;

	if (configured) {
		n = strlen(configured);
		while (n > 0 && configured[n - 1] == '/')
			n--;
		return xstrndup(configured, n);
	}
	return xasprintf("https://ec2.%s.amazonaws.com", region);
}

static void form_encode(struct buf *b, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
		    *p == '_' || *p == '.' || *p == '~') {
			buf_append(b, p, 1);
		} else {
			char e[3] = { '%', hex[*p >> 4], hex[*p & 15] };
			buf_append(b, e, 3);
		}
	}
}

void ec2_form_add(struct buf *b, const char *key, const char *value)
{
	if (b->len)
		buf_puts(b, "&");
	form_encode(b, key);
	buf_puts(b, "=");
	form_encode(b, value ? value : "");
}


/* Parses body as data: no network, no entity substitution (no
 * XML_PARSE_NOENT), no DTD at all (EC2 sends none; one could define
 * entities that expand without bound), libxml2's own depth and size limits
 * (no XML_PARSE_HUGE). */
static int xml_read(const char *body, size_t len, xmlDoc **ret, char **ret_error)
{
	xmlDoc *doc;

	*ret = NULL;
	if (!body || len == 0) {
		*ret_error = xstrdup("the reply is empty");
		return -EBADMSG;
	}
	if (len > EC2_REPLY_MAX) {
		*ret_error = xasprintf("the reply is larger than %u bytes", EC2_REPLY_MAX);
		return -EFBIG;
	}
	if (!xml_load()) {
		const char *why = xml_load_error();
		*ret_error = xasprintf("cannot load libxml2.so.2 to read EC2's reply: %s", why ? why : "a symbol is missing");
		return -ENOSYS;
	}
	doc = xml_lib.read_memory(body, (int)len, "ec2.xml", NULL,
			      XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	if (!doc) {
		*ret_error = xstrdup("the reply is not well-formed XML");
		return -EBADMSG;
	}
	if (doc->intSubset || doc->extSubset) {
		xml_lib.free_doc(doc);
		*ret_error = xstrdup("the reply has a DTD");
		return -EBADMSG;
	}
	*ret = doc;
	return 0;
}

static xmlNode *first_element(xmlNode *n)
{
	while (n && n->type != XML_ELEMENT_NODE)
		n = n->next;
	return n;
}

static bool is(const xmlNode *n, const char *name)
{
	return n && n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0;
}

static xmlNode *child(xmlNode *n, const char *name)
{
	for (xmlNode *c = n ? first_element(n->children) : NULL; c; c = first_element(c->next))
		if (is(c, name))
			return c;
	return NULL;
}

/* The text of n, at most EC2_TEXT_MAX bytes and without control
 * characters (they are replaced by '?'), or NULL. */
static char *text(xmlNode *n)
{
	xmlChar *t;
	char *s;

	if (!n)
		return NULL;
	t = xml_lib.content(n);
	if (!t)
		return xstrdup("");
	s = xstrndup((const char *)t, EC2_TEXT_MAX);
	(*xml_lib.free)(t);
	for (char *p = s; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return s;
}

int ec2_parse_error(const char *body, size_t len, char **ret_code, char **ret_message)
{
	_cleanup_free_ char *err = NULL;
	xmlDoc *doc;
	xmlNode *e;
	int r = -EBADMSG;

	*ret_code = *ret_message = NULL;
	if (xml_read(body, len, &doc, &err) < 0)
		return -EBADMSG;
	/* <Response><Errors><Error>; some services answer <ErrorResponse><Error>. */
	e = child(child(xml_lib.root(doc), "Errors"), "Error");
	if (!e)
		e = child(xml_lib.root(doc), "Error");
	if (e && child(e, "Code")) {
		*ret_code = text(child(e, "Code"));
		*ret_message = text(child(e, "Message"));
		r = 0;
	}
	xml_lib.free_doc(doc);
	return r;
}

int64_t ec2_parse_time(const char *s)
{
	struct tm tm = { 0 };
	int y, mo, d, h, mi, sec, n = 0;
	time_t t;

	if (!s || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 19)
		return -1;
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
		return -1;
	s += n;
	if (*s == '.')
		for (s++; *s >= '0' && *s <= '9'; s++)
			;
	if (strcmp(s, "Z") != 0 && strcmp(s, "+00:00") != 0)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	return t == (time_t)-1 ? -1 : (int64_t)t;
}

static void snapshot_free(struct ec2_snapshot *s)
{
	free(s->id);
	free(s->volume_id);
	free(s->state);
	free(s->start_time);
	for (size_t i = 0; i < s->n_tags; i++) {
		free(s->tags[i].key);
		free(s->tags[i].value);
	}
	free(s->tags);
}

void ec2_snapshots_free(struct ec2_snapshots *s)
{
	for (size_t i = 0; s && i < s->n; i++)
		snapshot_free(&s->v[i]);
	if (s) {
		free(s->v);
		*s = (struct ec2_snapshots){ 0 };
	}
}

const char *ec2_snapshot_tag(const struct ec2_snapshot *s, const char *key)
{
	for (size_t i = 0; i < s->n_tags; i++)
		if (strcmp(s->tags[i].key, key) == 0)
			return s->tags[i].value;
	return NULL;
}

static int snapshot_item(xmlNode *item, struct ec2_snapshot *ret, char **ret_error)
{
	xmlNode *tags = child(item, "tagSet");

	*ret = (struct ec2_snapshot){ .start = -1 };
	ret->id = text(child(item, "snapshotId"));
	ret->state = text(child(item, "status"));
	if (!ret->id || !ret->state || !*ret->id) {
		snapshot_free(ret);
		*ret_error = xstrdup("a snapshot in the reply has no snapshotId or status");
		return -EBADMSG;
	}
	ret->volume_id = text(child(item, "volumeId"));
	ret->start_time = text(child(item, "startTime"));
	ret->start = ec2_parse_time(ret->start_time);
	for (xmlNode *t = tags ? first_element(tags->children) : NULL; t; t = first_element(t->next)) {
		if (!is(t, "item") || !child(t, "key"))
			continue;
		if (ret->n_tags >= EC2_TAGS_MAX) {
			snapshot_free(ret);
			*ret_error = xasprintf("a snapshot in the reply has more than %d tags", EC2_TAGS_MAX);
			return -E2BIG;
		}
		ret->tags = xrealloc(ret->tags, (ret->n_tags + 1) * sizeof(*ret->tags));
		ret->tags[ret->n_tags].key = text(child(t, "key"));
		ret->tags[ret->n_tags].value = child(t, "value") ? text(child(t, "value")) : xstrdup("");
		ret->n_tags++;
	}
	return 0;
}

int ec2_parse_snapshots(const char *body, size_t len, struct ec2_snapshots *ret, char **ret_next, char **ret_error)
{
	xmlNode *root, *set;
	xmlDoc *doc;
	int r;

	*ret_next = NULL;
	*ret_error = NULL;
	if ((r = xml_read(body, len, &doc, ret_error)) < 0)
		return r;
	root = xml_lib.root(doc);
	set = child(root, "snapshotSet");
	if (!is(root, "DescribeSnapshotsResponse") || !set) {
		*ret_error = xstrdup("the reply is no DescribeSnapshotsResponse with a snapshotSet");
		r = -EBADMSG;
		goto out;
	}
	for (xmlNode *it = first_element(set->children); it; it = first_element(it->next)) {
		if (!is(it, "item"))
			continue;
		if (ret->n >= EC2_SNAPSHOTS_MAX) {
			*ret_error = xasprintf("more than %d snapshots", EC2_SNAPSHOTS_MAX);
			r = -E2BIG;
			goto out;
		}
		ret->v = xrealloc(ret->v, (ret->n + 1) * sizeof(*ret->v));
		if ((r = snapshot_item(it, &ret->v[ret->n], ret_error)) < 0)
			goto out;
		ret->n++;
	}
	*ret_next = text(child(root, "nextToken"));
	if (*ret_next && !**ret_next) {
		free(*ret_next);
		*ret_next = NULL;
	}
	r = 0;
out:
	xml_lib.free_doc(doc);
	return r;
}

int ec2_parse_create_snapshot(const char *body, size_t len, char **ret_id, char **ret_error)
{
	xmlNode *root;
	xmlDoc *doc;
	int r;

	*ret_id = NULL;
	*ret_error = NULL;
	if ((r = xml_read(body, len, &doc, ret_error)) < 0)
		return r;
	root = xml_lib.root(doc);
	*ret_id = is(root, "CreateSnapshotResponse") ? text(child(root, "snapshotId")) : NULL;
	xml_lib.free_doc(doc);
	if (!*ret_id || strncmp(*ret_id, "snap-", 5) != 0) {
		free(*ret_id);
		*ret_id = NULL;
		*ret_error = xstrdup("the reply is no CreateSnapshotResponse with a snapshotId");
		return -EBADMSG;
	}
	return 0;
}

/* Whether s holds a control character: a value that goes into a header. */
static bool has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

int ec2_parse_role_creds(const char *body, size_t len, struct ec2_creds *ret, char **ret_error)
{
	json_t *o = json_loadb(body ? body : "", body ? len : 0, JSON_REJECT_DUPLICATES, NULL);
	const char *code, *key, *secret, *token, *exp;
	int r = -EBADMSG;

	*ret = (struct ec2_creds){ 0 };
	code = json_string_value(json_object_get(o, "Code"));
	key = json_string_value(json_object_get(o, "AccessKeyId"));
	secret = json_string_value(json_object_get(o, "SecretAccessKey"));
	token = json_string_value(json_object_get(o, "Token"));
	exp = json_string_value(json_object_get(o, "Expiration"));
	if (!json_is_object(o))
		*ret_error = xstrdup("the role's credentials are not a JSON object");
	else if (code && strcmp(code, "Success") != 0)
		*ret_error = xasprintf("the role's credentials say Code \"%.64s\"", code);
	else if (!key || !secret || !*key || !*secret || strlen(key) > 256 || strlen(secret) > 256 ||
		 has_ctl(key) || has_ctl(secret) || (token && (strlen(token) > 8192 || has_ctl(token))))
		*ret_error = xstrdup("the role's credentials lack a well-formed AccessKeyId or SecretAccessKey");
	else if (exp && ec2_parse_time(exp) < 0)
		*ret_error = xstrdup("the role's credentials have an Expiration that is no ISO 8601 UTC time");
	else {
		ret->key = xstrdup(key);
		ret->secret = xstrdup(secret);
		ret->token = token && *token ? xstrdup(token) : NULL;
		ret->expiration = exp ? ec2_parse_time(exp) : 0;
		r = 0;
	}
	json_decref(o);
	return r;
}

/* ---- Calls. */

struct ec2_call {
	uv_loop_t *loop;
	struct http *http;       /* borrowed */
	char *endpoint, *region, *action, *form; /* owned */
	struct ec2_creds creds;  /* owned copy */
	long timeout_ms, backoff_min_ms;
	ec2_done_cb cb;
	void *userdata;
	struct http_request *req;
	uv_timer_t *timer;       /* owned until closed; for backoff */
	unsigned attempts;
};

static void on_timer_closed(uv_handle_t *h)
{
	free(h);
}

static void call_free(struct ec2_call *c)
{
	if (c->req)
		http_request_cancel(c->req);
	if (c->timer) {
		uv_timer_stop(c->timer);
		uv_close((uv_handle_t *)c->timer, on_timer_closed);
	}
	free(c->endpoint);
	free(c->region);
	free(c->action);
	free(c->form);
	ec2_creds_clear(&c->creds);
	free(c);
}

void ec2_call_cancel(struct ec2_call *c)
{
	if (c)
		call_free(c);
}

static bool code_is_throttle(const char *code, long status)
{
	if (!code)
		return false;
	return strcmp(code, "RequestLimitExceeded") == 0 || strcmp(code, "Throttling") == 0 ||
	       ((strcmp(code, "InternalError") == 0 || strcmp(code, "ServiceUnavailable") == 0 ||
		 strcmp(code, "Unavailable") == 0) &&
		status >= 500);
}

static void call_send(struct ec2_call *c);

static void on_backoff(uv_timer_t *t)
{
	call_send(t->data);
}

static void call_finish(struct ec2_call *c, const struct ec2_reply *rep)
{
	c->cb(c->userdata, rep);
	call_free(c);
}

static void on_http_done(void *userdata, const struct http_response *r)
{
	struct ec2_call *c = userdata;
	_cleanup_free_ char *code = NULL, *message = NULL, *error = NULL;
	struct ec2_reply rep = { .http_status = r->status, .attempts = c->attempts, .body = r->body,
				 .body_len = r->body_len };

	c->req = NULL;
	if (r->error) {
		error = xasprintf("%s: %s", c->action, r->error);
		rep.r = -EIO;
		rep.error = error;
		return call_finish(c, &rep);
	}
	if (r->status >= 200 && r->status < 300)
		return call_finish(c, &rep);
	if (ec2_parse_error(r->body, r->body_len, &code, &message) < 0) {
		error = xasprintf("%s: HTTP %ld without an EC2 error in the reply", c->action, r->status);
		rep.r = -EPROTO;
		rep.error = error;
		return call_finish(c, &rep);
	}
	if (code_is_throttle(code, r->status) && c->attempts < EC2_ATTEMPTS_MAX) {
		/* Full jitter (AWS's "Exponential Backoff And Jitter"): the
		 * token bucket is the account's, shared by the fleet. */
		uint64_t cap = (uint64_t)c->backoff_min_ms << (c->attempts - 1);
		if (cap > EC2_BACKOFF_MAX_MS)
			cap = EC2_BACKOFF_MAX_MS;
		if (!c->timer) {
			c->timer = xcalloc(1, sizeof(*c->timer));
			(void)uv_timer_init(c->loop, c->timer);
			c->timer->data = c;
		}
		(void)uv_timer_start(c->timer, on_backoff, cap / 2 + (uint64_t)random() % (cap / 2 + 1), 0);
		return;
	}
	if (code_is_throttle(code, r->status))
		error = xasprintf("%s: %s: %s (gave up after %u attempts)", c->action, code, message ? message : "",
				  c->attempts);
	else
		error = xasprintf("%s: %s: %s", c->action, code, message ? message : "");
	rep.r = -EPROTO;
	rep.code = code;
	rep.message = message;
	rep.error = error;
	call_finish(c, &rep);
}

static void call_send(struct ec2_call *c)
{
	_cleanup_free_ char *url = xasprintf("%s/", c->endpoint), *provider = xasprintf("aws:amz:%s:ec2", c->region);
	_cleanup_free_ char *token_header = NULL;
	struct buf body;
	const char *headers[3] = { "Content-Type: application/x-www-form-urlencoded; charset=utf-8", NULL, NULL };
	int r;

	buf_init(&body);
	ec2_form_add(&body, "Action", c->action);
	ec2_form_add(&body, "Version", EC2_API_VERSION);
	if (c->form && *c->form)
		buf_printf(&body, "&%s", c->form);
	if (c->creds.token) {
		token_header = xasprintf("X-Amz-Security-Token: %s", c->creds.token);
		headers[1] = token_header;
	}
	struct http_options o = {
		.method = "POST",
		.url = url,
		.headers = headers,
		.body = body.data,
		.body_len = body.len,
		.timeout_ms = c->timeout_ms,
		.max_body = EC2_REPLY_MAX,
		.aws_sigv4 = provider,
		.aws_key = c->creds.key,
		.aws_secret = c->creds.secret,
	};
	c->attempts++;
	r = http_request_start(c->http, &o, on_http_done, c, &c->req);
	buf_free(&body);
	if (token_header)
		explicit_bzero(token_header, strlen(token_header));
	if (r < 0) {
		_cleanup_free_ char *error = xasprintf("%s: cannot start the request: %s", c->action, strerror(-r));
		struct ec2_reply rep = { .r = -EIO, .error = error, .attempts = c->attempts };
		c->req = NULL;
		call_finish(c, &rep);
	}
}

/* The first attempt starts from the loop, never inside ec2_call(). */
static void on_start(uv_timer_t *t)
{
	call_send(t->data);
}

int ec2_call(uv_loop_t *loop, struct http *http, const struct ec2_target *t, const char *action, const char *form,
	     ec2_done_cb cb, void *userdata, struct ec2_call **ret)
{
	struct ec2_call *c;

	if (!loop || !http || !t || !t->endpoint || !t->region || !t->creds || !t->creds->key || !t->creds->secret ||
	    !action || !cb)
		return -EINVAL;
	c = xcalloc(1, sizeof(*c));
	c->loop = loop;
	c->http = http;
	c->endpoint = xstrdup(t->endpoint);
	c->region = xstrdup(t->region);
	c->action = xstrdup(action);
	c->form = form ? xstrdup(form) : NULL;
	ec2_creds_copy(&c->creds, t->creds);
	c->timeout_ms = t->timeout_ms > 0 ? t->timeout_ms : EC2_DEFAULT_TIMEOUT_MS;
	c->backoff_min_ms = t->backoff_min_ms > 0 ? t->backoff_min_ms : EC2_BACKOFF_MIN_MS;
	c->cb = cb;
	c->userdata = userdata;
	c->timer = xcalloc(1, sizeof(*c->timer));
	(void)uv_timer_init(loop, c->timer);
	c->timer->data = c;
	(void)uv_timer_start(c->timer, on_start, 0, 0);
	if (ret)
		*ret = c;
	return 0;
}

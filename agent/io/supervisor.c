/* SPDX-License-Identifier: BSD-2-Clause */
#include "supervisor.h"

#include <curl/curl.h>
#include <errno.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <string.h>

#include "http.h"
#include "util.h"
#include "io/xml.h"

#define XMLRPC_DEPTH_MAX 32
#define XMLRPC_REPLY_MAX (4 * 1024 * 1024)


static void xml_escape(struct buf *b, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<': buf_puts(b, "&lt;"); break;
		case '>': buf_puts(b, "&gt;"); break;
		case '&': buf_puts(b, "&amp;"); break;
		case '"': buf_puts(b, "&quot;"); break;
		default: buf_append(b, s, 1);
		}
	}
}

char *xmlrpc_build_call(const char *method, const json_t *params)
{
	struct buf b;
	size_t i;
	json_t *v;

	buf_init(&b);
	buf_puts(&b, "<?xml version=\"1.0\"?>\n<methodCall><methodName>");
	xml_escape(&b, method);
	buf_puts(&b, "</methodName><params>");
	json_array_foreach((json_t *)params, i, v) {
		buf_puts(&b, "<param><value>");
		if (json_is_string(v)) {
			buf_puts(&b, "<string>");
			xml_escape(&b, json_string_value(v));
			buf_puts(&b, "</string>");
		} else if (json_is_boolean(v))
			buf_printf(&b, "<boolean>%d</boolean>", json_is_true(v) ? 1 : 0);
		else if (json_is_integer(v))
			buf_printf(&b, "<int>%lld</int>", (long long)json_integer_value(v));
		buf_puts(&b, "</value></param>");
	}
	buf_puts(&b, "</params></methodCall>\n");
	return buf_steal(&b);
}

static xmlNode *first_element(xmlNode *n)
{
	for (; n; n = n->next)
		if (n->type == XML_ELEMENT_NODE)
			return n;
	return NULL;
}

static bool is(const xmlNode *n, const char *name)
{
	return n && n->type == XML_ELEMENT_NODE && strcmp((const char *)n->name, name) == 0;
}

static char *node_text(xmlNode *n)
{
	xmlChar *t = xml_lib.content(n);
	char *s = xstrdup(t ? (const char *)t : "");
	(*xml_lib.free)(t);
	return s;
}

static json_t *value_to_json(xmlNode *value, int depth);

static json_t *typed_to_json(xmlNode *t, int depth)
{
	_cleanup_free_ char *text = NULL;
	long l;

	if (is(t, "array")) {
		xmlNode *data = first_element(t->children);
		json_t *a = json_array();
		if (!is(data, "data")) {
			json_decref(a);
			return NULL;
		}
		for (xmlNode *v = first_element(data->children); v; v = first_element(v->next)) {
			json_t *j = value_to_json(v, depth + 1);
			if (!j) {
				json_decref(a);
				return NULL;
			}
			json_array_append_new(a, j);
		}
		return a;
	}
	if (is(t, "struct")) {
		json_t *o = json_object();
		for (xmlNode *m = first_element(t->children); m; m = first_element(m->next)) {
			xmlNode *name = NULL, *val = NULL;
			json_t *j;
			if (!is(m, "member"))
				goto bad;
			for (xmlNode *c = first_element(m->children); c; c = first_element(c->next)) {
				if (is(c, "name"))
					name = c;
				else if (is(c, "value"))
					val = c;
			}
			if (!name || !val || !(j = value_to_json(val, depth + 1)))
				goto bad;
			text = node_text(name);
			json_object_set_new(o, text, j);
			free(text);
			text = NULL;
			continue;
		bad:
			json_decref(o);
			return NULL;
		}
		return o;
	}
	text = node_text(t);
	if (is(t, "string") || is(t, "dateTime.iso8601") || is(t, "base64"))
		return json_string(text);
	if (is(t, "int") || is(t, "i4") || is(t, "i8"))
		return parse_long(text, -(1L << 62), 1L << 62, &l) == 0 ? json_integer(l) : NULL;
	if (is(t, "boolean"))
		return strcmp(text, "1") == 0 ? json_true() : strcmp(text, "0") == 0 ? json_false() : NULL;
	if (is(t, "double")) {
		char *end;
		double d = strtod(text, &end);
		return *text && !*end ? json_real(d) : NULL;
	}
	if (is(t, "nil"))
		return json_null();
	return NULL;
}

static json_t *value_to_json(xmlNode *value, int depth)
{
	xmlNode *t;

	if (!is(value, "value") || depth > XMLRPC_DEPTH_MAX)
		return NULL;
	t = first_element(value->children);
	if (!t) {
		/* A value with no type element is a string. */
		char *s = node_text(value);
		json_t *j = json_string(s);
		free(s);
		return j;
	}
	return typed_to_json(t, depth);
}

int xmlrpc_parse_response(const char *body, size_t len, json_t **ret_value, int *ret_fault, char **ret_error)
{
	xmlDoc *doc;
	xmlNode *root, *n;
	json_t *v = NULL;
	int r = -EBADMSG;

	*ret_value = NULL;
	*ret_fault = 0;
	*ret_error = NULL;
	if (len > XMLRPC_REPLY_MAX || len > INT32_MAX) {
		*ret_error = xstrdup("XML-RPC reply too large");
		return -EFBIG;
	}
	if (!xml_load()) {
		const char *why = xml_load_error();
		*ret_error = xasprintf("cannot load libxml2.so.2 to read the XML-RPC reply: %s",
				       why ? why : "a symbol is missing");
		return -ENOSYS;
	}
	/* No network, no entity expansion, no DTD loading: the reply is data. */
	doc = xml_lib.read_memory(body, (int)len, "reply.xml", NULL,
			    XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR | XML_PARSE_NOWARNING);
	if (!doc) {
		*ret_error = xstrdup("XML-RPC reply is not well-formed XML");
		return -EBADMSG;
	}
	root = xml_lib.root(doc);
	if (doc->intSubset || doc->extSubset) {
		/* supervisord never sends a DTD; one could define entities that expand without bound. */
		*ret_error = xstrdup("XML-RPC reply has a DTD");
		goto out;
	}
	if (!is(root, "methodResponse")) {
		*ret_error = xstrdup("XML-RPC reply has no methodResponse");
		goto out;
	}
	n = first_element(root->children);
	if (is(n, "params")) {
		xmlNode *param = first_element(n->children);
		if (is(param, "param") && (v = value_to_json(first_element(param->children), 0))) {
			*ret_value = v;
			r = 0;
		} else
			*ret_error = xstrdup("XML-RPC reply has a malformed value");
	} else if (is(n, "fault")) {
		v = value_to_json(first_element(n->children), 0);
		const json_t *code = json_object_get(v, "faultCode");
		const json_t *str = json_object_get(v, "faultString");
		if (json_is_integer(code) && json_integer_value(code) > 0 && json_integer_value(code) < 100000) {
			*ret_fault = (int)json_integer_value(code);
			*ret_error = xstrdup(json_is_string(str) ? json_string_value(str) : "fault");
			r = 0;
		} else
			*ret_error = xstrdup("XML-RPC fault without a faultCode");
		json_decref(v);
	} else
		*ret_error = xstrdup("XML-RPC reply has neither params nor fault");
out:
	xml_lib.free_doc(doc);
	return r;
}

struct call {
	supervisor_cb cb;
	void *userdata;
	char *method; /* owned */
};

static void cb_reply(void *userdata, const struct http_response *resp)
{
	struct call *c = userdata;
	json_t *v = NULL;
	int fault = 0;
	char *err = NULL;

	if (resp->error)
		err = xasprintf("supervisord %s: %s", c->method, resp->error);
	else if (resp->status != 200)
		err = xasprintf("supervisord %s: HTTP status %ld", c->method, resp->status);
	else if (xmlrpc_parse_response(resp->body, resp->body_len, &v, &fault, &err) < 0) {
		char *e = xasprintf("supervisord %s: %s", c->method, err);
		free(err);
		err = e;
	}
	c->cb(c->userdata, err && !fault ? NULL : v, fault, err);
	json_decref(v);
	free(err);
	free(c->method);
	free(c);
}

int supervisor_call(struct http *h, const char *socket, const char *method, const json_t *params, long timeout_ms,
		    supervisor_cb cb, void *userdata, struct http_request **ret)
{
	static const char *const headers[] = { "Content-Type: text/xml", NULL };
	_cleanup_free_ char *body = xmlrpc_build_call(method, params);
	struct http_options o = {
		.method = "POST",
		.url = "http://localhost/RPC2",
		.headers = headers,
		.body = body,
		.body_len = strlen(body),
		.timeout_ms = timeout_ms,
		.unix_socket = socket,
		.no_proxy = true,
		.max_body = XMLRPC_REPLY_MAX,
	};
	struct call *c = xcalloc(1, sizeof(*c));
	int r;

	c->cb = cb;
	c->userdata = userdata;
	c->method = xstrdup(method);
	r = http_request_start(h, &o, cb_reply, c, ret);
	if (r < 0) {
		free(c->method);
		free(c);
	}
	return r;
}

struct sync_body {
	struct buf b;
	bool too_big;
};

static size_t sync_write(char *data, size_t size, size_t n, void *userdata)
{
	struct sync_body *sb = userdata;

	if (sb->b.len + size * n > XMLRPC_REPLY_MAX) {
		sb->too_big = true;
		return 0;
	}
	buf_append(&sb->b, data, size * n);
	return size * n;
}

int supervisor_call_sync(const char *socket, const char *method, const json_t *params, long timeout_ms,
			 json_t **ret_result, int *ret_fault, char **ret_error)
{
	_cleanup_free_ char *body = xmlrpc_build_call(method, params);
	struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: text/xml");
	struct sync_body sb = { .too_big = false };
	CURL *c = curl_easy_init();
	CURLcode rc;
	long status = 0;
	int r;

	*ret_result = NULL;
	*ret_fault = 0;
	*ret_error = NULL;
	if (!c || !headers) {
		curl_slist_free_all(headers);
		if (c)
			curl_easy_cleanup(c);
		*ret_error = xasprintf("supervisord %s: %s", method, strerror(ENOMEM));
		return -ENOMEM;
	}
	buf_init(&sb.b);
	curl_easy_setopt(c, CURLOPT_URL, "http://localhost/RPC2");
	curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, socket);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sync_write);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &sb);
	rc = curl_easy_perform(c);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	curl_slist_free_all(headers);
	if (rc != CURLE_OK) {
		r = rc == CURLE_OPERATION_TIMEDOUT ? -ETIMEDOUT : sb.too_big ? -EFBIG : -ECONNREFUSED;
		*ret_error = sb.too_big ? xasprintf("supervisord %s: reply over %d bytes", method, XMLRPC_REPLY_MAX)
					: xasprintf("supervisord %s: %s", method, curl_easy_strerror(rc));
	} else if (status != 200) {
		r = -EPROTO;
		*ret_error = xasprintf("supervisord %s: HTTP status %ld", method, status);
	} else {
		char *err = NULL;

		r = xmlrpc_parse_response(sb.b.data ? sb.b.data : "", sb.b.len, ret_result, ret_fault, &err);
		if (r < 0 || *ret_fault) {
			*ret_error = xasprintf("supervisord %s: %s%s", method, *ret_fault ? "fault: " : "", err);
			free(err);
		}
	}
	buf_free(&sb.b);
	return r < 0 ? r : 0;
}

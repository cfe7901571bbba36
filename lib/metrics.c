/* SPDX-License-Identifier: BSD-2-Clause */
#include "metrics.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* s with backslash and newline escaped, and double quote too when quote. */
static void append_escaped(struct buf *out, const char *s, bool quote)
{
	for (; *s; s++) {
		if (*s == '\\')
			buf_puts(out, "\\\\");
		else if (*s == '\n')
			buf_puts(out, "\\n");
		else if (*s == '"' && quote)
			buf_puts(out, "\\\"");
		else
			buf_append(out, s, 1);
	}
}

void metrics_format_value(const json_t *v, char *out, size_t n)
{
	double d;

	if (json_is_integer(v)) {
		(void)snprintf(out, n, "%lld", (long long)json_integer_value(v));
		return;
	}
	d = json_number_value(v);
	if (isnan(d))
		(void)snprintf(out, n, "NaN");
	else if (isinf(d))
		(void)snprintf(out, n, "%sInf", d > 0 ? "+" : "-");
	else {
		/* The shortest of 15, 16, 17 digits that reads back exactly. */
		for (int prec = 15; prec <= 17; prec++) {
			(void)snprintf(out, n, "%.*g", prec, d);
			if (strtod(out, NULL) == d)
				break;
		}
	}
}

static void sample_text(const json_t *s, struct buf *out)
{
	const char *name = json_string_value(json_object_get(s, "name"));
	const json_t *labels = json_object_get(s, "labels"), *v = json_object_get(s, "value"), *lv;
	const char *k;
	char num[40];
	bool first = true;

	if (!name || !json_is_number(v))
		return;
	buf_puts(out, name);
	json_object_foreach((json_t *)labels, k, lv) {
		if (!json_is_string(lv))
			continue;
		buf_printf(out, "%s%s=\"", first ? "{" : ",", k);
		append_escaped(out, json_string_value(lv), true);
		buf_puts(out, "\"");
		first = false;
	}
	if (!first)
		buf_puts(out, "}");
	metrics_format_value(v, num, sizeof(num));
	buf_printf(out, " %s\n", num);
}

void metrics_text(const json_t *result, struct buf *out)
{
	const json_t *f, *s;
	size_t i, j;

	json_array_foreach(json_object_get(result, "metrics"), i, f) {
		const char *name = json_string_value(json_object_get(f, "name"));
		const char *type = json_string_value(json_object_get(f, "type"));
		const char *help = json_string_value(json_object_get(f, "help"));

		if (!name || !type)
			continue;
		buf_printf(out, "# HELP %s ", name);
		append_escaped(out, help ? help : "", false);
		buf_printf(out, "\n# TYPE %s %s\n", name, type);
		json_array_foreach(json_object_get(f, "samples"), j, s) sample_text(s, out);
	}
}

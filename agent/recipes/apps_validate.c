/* SPDX-License-Identifier: BSD-2-Clause */
/* Validation of what the apps family reads (design.md §2): nothing from
 * the stack reaches a command line, a supervisor program or a path unless
 * it is plainly data. Commands are argv (no shell) anyway; these checks make
 * a hostile or mistyped value an error with its JSON path before anything
 * runs, instead of an odd failure later. */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "apps.h"
#include "recipe.h"
#include "config.h"
#include "plone.h"
#include "stack/stack.h"

/* Characters that mean something to a shell, to supervisord's config
 * parser (%, ;) or to buildout's (${, newlines). */
static bool has_meta(const char *s)
{
	for (; *s; s++)
		if (iscntrl((unsigned char)*s) || strchr(";|&$`<>(){}[]'\"\\*?!#~%^ \t", *s))
			return true;
	return false;
}

/* A host, host:port or (with space) a list of them, as written into
 * deploy.cfg: [A-Za-z0-9.:_-]. */
static bool host_ok(const char *h, bool list)
{
	/* Spaces at either end would be stripped from deploy.cfg. */
	if (!*h || h[0] == ' ' || h[strlen(h) - 1] == ' ')
		return false;
	for (; *h; h++)
		if (!isalnum((unsigned char)*h) && !strchr(".:_-", *h) && !(list && *h == ' '))
			return false;
	return true;
}

/* What zc.buildout would not give back of s as an option value of
 * deploy.cfg, or as one line of a multi-line value (design.md §8). Its
 * parser (zc/buildout/configparser.py) ends a value at a newline, strips
 * each line's leading and trailing whitespace, and then substitutes every
 * "${section:option}"; it knows no quoting, so these are refused rather
 * than escaped ("$${" stays "$${" in the zc.buildout of Debian 12). NULL
 * when s reads back as written. */
static const char *cfg_value_problem(const char *s)
{
	size_t n = strlen(s);

	if (check_has_control(s, n))
		return "must not contain control characters (newlines, tabs): it is one line of deploy.cfg";
	if (n && (isspace((unsigned char)s[0]) || isspace((unsigned char)s[n - 1])))
		return "must not begin or end with a space: buildout strips it from deploy.cfg";
	if (strstr(s, "${"))
		return "must not contain \"${\": buildout would substitute it in deploy.cfg";
	return NULL;
}

static bool cfg_value_ok(const char *s)
{
	return !cfg_value_problem(s);
}

/* What supervisord would not give back of s written as KEY="s" in the
 * environment= line of a program file (design.md §8). Its reader
 * (supervisor/options.py, datatypes.dict_of_key_value_pairs) first takes
 * ";" or "#" after whitespace for a comment that ends the line (Python's
 * configparser; "x ;y" then leaves an unclosed quote and the whole conf.d
 * fails to load), then splits the line with a non-POSIX shlex, which has
 * no escapes: a '"' ends the value, and quotes at either end are stripped
 * from it. A "%" is written "%%" (apps.c) and reads back as one. A byte of
 * a UTF-8 character before ";" or "#" is refused too: Python's isspace()
 * takes U+00A0 and the other Unicode spaces. NULL when s reads back. */
static const char *supervisor_env_problem(const char *s)
{
	size_t n = strlen(s);

	if (check_has_control(s, n))
		return "must not contain control characters";
	if (strchr(s, '"'))
		return "must not contain a double quote (supervisord's environment= has no escape for it)";
	if (n && (s[0] == '\'' || s[n - 1] == '\''))
		return "must not begin or end with a single quote (supervisord strips it)";
	for (size_t i = 1; i < n; i++)
		if ((s[i] == ';' || s[i] == '#') && (s[i - 1] == ' ' || (unsigned char)s[i - 1] >= 0x80))
			return "must not have \";\" or \"#\" after a space (supervisord reads the rest of the line "
			       "as a comment)";
	return NULL;
}

/* Whether the n bytes at l are an option line as zc.buildout's parser
 * reads one (configparser.py option_start): a name without blanks or
 * "{}[]=:", blanks, an optional "+" or "-", then "=" at once. */
static bool cfg_option_line(const char *l, size_t n)
{
	size_t i = 0;

	if (n >= 2 && l[0] == '=' && l[1] == '>')
		return true; /* "=> part" */
	while (i < n && !isspace((unsigned char)l[i]) && !strchr("{}[]=:", l[i]))
		i++;
	if (i == 0)
		return false;
	while (i < n && isspace((unsigned char)l[i]))
		i++;
	if (i < n && (l[i] == '+' || l[i] == '-') && (i + 1 < n && l[i + 1] == '='))
		i++;
	return i < n && l[i] == '=';
}

/* Whether the n bytes at l are a section header as zc.buildout reads one
 * (configparser.py section_header): "[", a name without blanks or
 * "#[]:;{}", "]", then blanks or a comment. A conditional section
 * ("[name: python expression]", evaluated by buildout) is not taken. */
static bool cfg_section_line(const char *l, size_t n)
{
	size_t i = 1, name;

	while (i < n && isspace((unsigned char)l[i]))
		i++;
	name = i;
	while (i < n && !isspace((unsigned char)l[i]) && !strchr("#[]:;{}", l[i]))
		i++;
	if (i == name)
		return false;
	while (i < n && isspace((unsigned char)l[i]))
		i++;
	if (i >= n || l[i] != ']')
		return false;
	for (i++; i < n && isspace((unsigned char)l[i]); i++)
		;
	return i == n || l[i] == '#' || l[i] == ';';
}

/* buildout_additional_config is raw buildout text appended to deploy.cfg
 * after the [buildout] options: every line must be one zc.buildout's
 * parser reads (a comment, a section header, an option, or the
 * continuation of an option of this text), else the parse of the whole
 * file fails at deploy time, or a first indented line would silently
 * extend agentd's own last option. Returns the 1-based number of the
 * first line that is not, or 0. A CR is a line end to Python's reader,
 * other control characters but tab and newline are no text. */
static size_t cfg_text_bad_line(const char *s)
{
	bool option = false;
	size_t no = 0;

	for (const char *l = s; *l;) {
		size_t n = strcspn(l, "\n");
		bool blank = true;

		no++;
		for (size_t i = 0; i < n; i++) {
			if (((unsigned char)l[i] < 0x20 && l[i] != '\t') || l[i] == 0x7f)
				return no;
			blank &= isspace((unsigned char)l[i]) != 0;
		}
		if (blank) {
			/* A blank line continues a value that began empty; harmless. */
		} else if (l[0] == '#' || l[0] == ';') {
			/* a comment */
		} else if (isspace((unsigned char)l[0])) {
			if (!option)
				return no;
		} else if (l[0] == '[') {
			if (!cfg_section_line(l, n))
				return no;
			option = false;
		} else if (cfg_option_line(l, n)) {
			option = true;
		} else {
			return no;
		}
		l += n;
		if (*l == '\n')
			l++;
	}
	return 0;
}

/* Every string member of obj (a database section) is one line of deploy.cfg. */
static int check_lines(const json_t *obj, const char *base, struct stack_error *err)
{
	const char *k, *problem;
	json_t *v;
	char p[CHECK_PATH_SIZE];

	json_object_foreach((json_t *)obj, k, v)
		if (json_is_string(v) && (json_string_length(v) != strlen(json_string_value(v)) ||
					  (problem = cfg_value_problem(json_string_value(v))) != NULL)) {
			stack_path_key(p, sizeof(p), base, k);
			return stack_error_set(err, p, "%s",
					       json_string_length(v) != strlen(json_string_value(v))
						       ? "must not contain control characters (NUL)"
						       : problem);
		}
	return 0;
}

/* A relative path inside the release: safe components, no "..", not absolute. */
static bool rel_path_ok(const char *p)
{
	if (!*p || *p == '/' || has_meta(p))
		return false;
	for (const char *c = p; *c;) {
		size_t n = strcspn(c, "/");
		if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return false;
		c += n;
		if (*c == '/')
			c++;
	}
	return true;
}

/* A cache archive's directory under deploy_to: not agentd's release tree
 * (current, releases) nor shared itself, whose entries are links agentd
 * makes and a purge would empty. */
static bool cache_path_ok(const char *p)
{
	size_t n = strcspn(p, "/");

	if ((n == 7 && strncmp(p, "current", 7) == 0) || (n == 8 && strncmp(p, "releases", 8) == 0))
		return false;
	return strcmp(p, "shared") != 0 && strcmp(p, "shared/") != 0;
}

static bool git_url_ok(const char *u)
{
	/* git runs commands for ext:: and fd:: "transports"; a leading '-' would be an option. */
	if (!*u || u[0] == '-' || has_meta(u) || strncmp(u, "ext::", 5) == 0 || strncmp(u, "fd::", 4) == 0 ||
	    strstr(u, "::"))
		return false;
	return true;
}

static bool revision_ok(const char *r)
{
	if (!*r || r[0] == '-' || strstr(r, "..") || strlen(r) > 255)
		return false;
	for (; *r; r++)
		if (!isalnum((unsigned char)*r) && !strchr("_./-", *r))
			return false;
	return true;
}

static bool args_ok(const char *a)
{
	for (; *a; a++)
		if (!isalnum((unsigned char)*a) && !strchr("_./:=,@+- ", *a))
			return false;
	return true;
}

static bool env_key_ok(const char *k)
{
	if (!*k || isdigit((unsigned char)*k))
		return false;
	for (; *k; k++)
		if (!isalnum((unsigned char)*k) && *k != '_')
			return false;
	return true;
}

#define APPS_LIST_MAX 64
#define APPS_NAME_MAX 64

/* Whether an init command's name is one of the services the kinds serving
 * app add themselves (apps_services()): the two would be one program. */
static bool name_is_kinds_own(const struct stack *s, const char *app, const char *name)
{
	if (strcmp(apps_app_name(s, APP_INSTANCES), app) == 0) {
		const json_t *pi = plone_section(s, "plone_instances");
		size_t n = strspn(name + (strncmp(name, "client", 6) == 0 ? 6 : 0), "0123456789");
		if (strncmp(name, "client", 6) == 0 && n > 0 && name[6 + n] == '\0')
			return true;
		if (json_is_true(json_object_get(pi, "enable_celery")) &&
		    (strcmp(name, "celery") == 0 || strcmp(name, "celerybeat") == 0))
			return true;
	}
	if (strcmp(apps_app_name(s, APP_ZEOSERVER), app) == 0 && strcmp(name, "zeoserver") == 0)
		return true;
	return strcmp(apps_app_name(s, APP_SOLR), app) == 0 && strcmp(name, "solr") == 0;
}

/* deploy.<app>.scm: what git, tar and the local copy are given. */
static int check_scm(const struct stack_app *app, const char *base, struct stack_error *err)
{
	const json_t *scm = json_object_get(app->json, "scm");
	const char *type = json_string_value(json_object_get(scm, "scm_type"));
	const char *repo = json_string_value(json_object_get(scm, "repository"));
	const char *rev = json_string_value(json_object_get(scm, "revision"));
	char path[CHECK_PATH_SIZE], p2[CHECK_PATH_SIZE], q[128];

	stack_path_key(path, sizeof(path), base, "scm");
	if (repo) {
		stack_path_key(p2, sizeof(p2), path, "repository");
		if ((!type || strcmp(type, "git") == 0) && !git_url_ok(repo))
			return stack_error_set(err, p2, "is not a git repository URL agentd accepts (no whitespace, "
						       "shell metacharacters, leading \"-\" or \"::\" transports)");
		if (type && strcmp(type, "local") == 0 && stack_path_problem(repo))
			return stack_error_set(err, p2, "%s", stack_path_problem(repo));
		if (type && strcmp(type, "archive") == 0 &&
		    ((strncmp(repo, "http://", 7) != 0 && strncmp(repo, "https://", 8) != 0) || has_meta(repo)))
			return stack_error_set(err, p2, "must be an http:// or https:// URL of a .tar.gz");
	}
	if (rev && !revision_ok(rev)) {
		stack_path_key(p2, sizeof(p2), path, "revision");
		return stack_error_set(err, p2, "must be a branch, tag or commit: [A-Za-z0-9_./-], no \"..\", got %s",
				       stack_quote(q, sizeof(q), rev));
	}
	return 0;
}

/* deploy.<app>.buildout_init_commands: supervisor programs of their own. */
static int check_init_commands(const struct stack *st, const struct stack_app *app, const char *base,
			       struct stack_error *err)
{
	const json_t *list = json_object_get(app->json, "buildout_init_commands"), *v;
	char path[CHECK_PATH_SIZE], p2[CHECK_PATH_SIZE], q[128];
	size_t i;

	stack_path_key(path, sizeof(path), base, "buildout_init_commands");
	json_array_foreach((json_t *)list, i, v) {
		const char *name = json_string_value(json_object_get(v, "name"));
		const char *cmd = json_string_value(json_object_get(v, "cmd"));
		const json_t *args = json_object_get(v, "args"), *delay = json_object_get(v, "delay");
		stack_path_index(p2, sizeof(p2), path, i);
		if (!name || !name_is_valid(name) || strlen(name) > APPS_NAME_MAX)
			return stack_error_set(err, p2, "needs a \"name\" made of [A-Za-z0-9_.-], at most %d bytes",
					       APPS_NAME_MAX);
		for (size_t j = 0; j < i; j++)
			if (strcmp(name, json_string_value(json_object_get(json_array_get(list, j), "name"))) == 0)
				return stack_error_set(err, p2, "has the same name as init command %zu: %s", j,
						       stack_quote(q, sizeof(q), name));
		if (name_is_kinds_own(st, app->name, name))
			return stack_error_set(err, p2, "is named like a service of the app's own: %s",
					       stack_quote(q, sizeof(q), name));
		if (!cmd || !rel_path_ok(cmd))
			return stack_error_set(err, p2, "\"cmd\" must be a path inside the release, like \"bin/celery\", "
						       "without \"..\" or shell metacharacters");
		if (args && (!json_is_string(args) || !args_ok(json_string_value(args))))
			return stack_error_set(err, p2, "\"args\" may hold only [A-Za-z0-9_./:=,@+-] and spaces");
		if (delay && (!json_is_integer(delay) || json_integer_value(delay) < 0 || json_integer_value(delay) > 3600))
			return stack_error_set(err, p2, "\"delay\" must be seconds, 0 to 3600");
	}
	return 0;
}

/* Whether n is a Debian package name, with an optional :arch. */
static bool package_ok(const char *n)
{
	bool ok = n && (islower((unsigned char)n[0]) || isdigit((unsigned char)n[0])) && strlen(n) < 128;

	for (const char *c = n; ok && *c; c++)
		ok = islower((unsigned char)*c) || isdigit((unsigned char)*c) || strchr("+.-:", *c);
	return ok;
}

static bool extends_ok(const char *e)
{
	return rel_path_ok(e) || ((strncmp(e, "http://", 7) == 0 || strncmp(e, "https://", 8) == 0) && !has_meta(e));
}

static bool part_ok(const char *p)
{
	return name_is_valid(p);
}

/* The string lists of deploy.<app>: every element passes ok, else msg at it. */
static int check_string_lists(const struct stack_app *app, const char *base, struct stack_error *err)
{
	static const struct {
		const char *key;
		bool (*ok)(const char *);
		const char *msg;
	} lists[] = {
		{ "buildout_extends", extends_ok, "must be a path inside the release or an http(s) URL" },
		{ "os_packages", package_ok, "must be a Debian package name ([a-z0-9][a-z0-9+.-]*, optional :arch)" },
		{ "buildout_parts_to_include", part_ok, "must be a part name made of [A-Za-z0-9_.-]" },
	};
	char path[CHECK_PATH_SIZE], p2[CHECK_PATH_SIZE];
	const json_t *v;
	size_t i;

	for (size_t l = 0; l < ELEMENTSOF(lists); l++) {
		const json_t *list = json_object_get(app->json, lists[l].key);

		stack_path_key(path, sizeof(path), base, lists[l].key);
		json_array_foreach((json_t *)list, i, v) {
			stack_path_index(p2, sizeof(p2), path, i);
			if (!lists[l].ok(json_string_value(v)))
				return stack_error_set(err, p2, "%s", lists[l].msg);
		}
		if (l == 1 && json_array_size(list) > 32)
			return stack_error_set(err, path, "at most 32 packages");
	}
	return 0;
}

/* deploy.<app>.buildout_cache_archives: directories under deploy_to, apart. */
static int check_cache_archives(const struct stack_app *app, const char *base, struct stack_error *err)
{
	const json_t *list = json_object_get(app->json, "buildout_cache_archives"), *v;
	char path[CHECK_PATH_SIZE], p2[CHECK_PATH_SIZE], q[128];
	size_t i;

	stack_path_key(path, sizeof(path), base, "buildout_cache_archives");
	json_array_foreach((json_t *)list, i, v) {
		const char *p = json_string_value(json_object_get(v, "path"));
		const char *url = json_string_value(json_object_get(v, "url"));
		stack_path_index(p2, sizeof(p2), path, i);
		if (!p || !rel_path_ok(p))
			return stack_error_set(err, p2, "\"path\" must be a directory inside deploy_to, without \"..\"");
		if (!cache_path_ok(p))
			return stack_error_set(err, p2, "\"path\" must not be shared itself nor under current or releases "
						       "(agentd's own links and releases), got %s",
					       stack_quote(q, sizeof(q), p));
		if (!url || (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) || has_meta(url))
			return stack_error_set(err, p2, "\"url\" must be an http:// or https:// URL");
		/* Two archives in one directory (or one inside the other's) would
		 * unpack over each other; stack.c dropped trailing slashes, and the
		 * comparison is a whole component at a time. */
		for (size_t j = 0; j < i; j++) {
			const char *o = json_string_value(json_object_get(json_array_get(list, j), "path"));
			_cleanup_free_ char *a = xasprintf("/%s", p), *b = xasprintf("/%s", o ? o : "");
			if (o && (path_is_under(a, b) || path_is_under(b, a)))
				return stack_error_set(err, p2, "\"path\" %s %s that of cache archive %zu",
						       stack_quote(q, sizeof(q), p),
						       strcmp(a, b) == 0 ? "is the same as"
						       : path_is_under(a, b) ? "is inside" : "holds", j);
		}
	}
	return 0;
}

static int check_app(const struct stack *st, const struct stack_app *app, struct stack_error *err)
{
	char base[CHECK_PATH_SIZE], path[CHECK_PATH_SIZE], p2[CHECK_PATH_SIZE];
	const json_t *v;
	const char *k;
	int r;

	stack_path_key(base, sizeof(base), "$.deploy", app->name);
	if (apps_is_family_app(st, app->name) && app->deploy_to && !path_is_plain(app->deploy_to)) {
		/* Written into supervisor programs and deploy.cfg. */
		stack_path_key(path, sizeof(path), base, "deploy_to");
		return stack_error_set(err, path, "may hold only [A-Za-z0-9_./-] here");
	}
	stack_path_key(path, sizeof(path), base, "database");
	if (check_lines(json_object_get(app->json, "database"), path, err) < 0)
		return -EINVAL;
	if ((r = check_scm(app, base, err)) < 0)
		return r;
	for (const char *const *key = (const char *const[]){ "buildout_init_commands", "buildout_cache_archives",
							       "environment", NULL };
	     *key; key++) {
		const json_t *l = json_object_get(app->json, *key);
		if ((json_is_array(l) ? json_array_size(l) : json_object_size(l)) > APPS_LIST_MAX) {
			stack_path_key(path, sizeof(path), base, *key);
			return stack_error_set(err, path, "at most %d entries", APPS_LIST_MAX);
		}
	}
	if ((r = check_init_commands(st, app, base, err)) < 0 || (r = check_string_lists(app, base, err)) < 0 ||
	    (r = check_cache_archives(app, base, err)) < 0)
		return r;
	{
		const json_t *extra = json_object_get(app->json, "buildout_additional_config");
		size_t bad = json_is_string(extra) && strlen(json_string_value(extra)) == json_string_length(extra)
				     ? cfg_text_bad_line(json_string_value(extra))
				     : 0;

		stack_path_key(path, sizeof(path), base, "buildout_additional_config");
		if (json_is_string(extra) && strlen(json_string_value(extra)) != json_string_length(extra))
			return stack_error_set(err, path, "must not contain NUL");
		if (bad)
			return stack_error_set(err, path,
					       "line %zu is not buildout config: each line must be a comment, a "
					       "[section] (not a conditional one), an option (name = value) or an "
					       "indented continuation of an option above it in this text",
					       bad);
	}
	stack_path_key(path, sizeof(path), base, "environment");
	json_object_foreach((json_t *)json_object_get(app->json, "environment"), k, v) {
		const char *s = json_string_value(v);
		stack_path_key(p2, sizeof(p2), path, k);
		if (!env_key_ok(k))
			return stack_error_set(err, p2, "environment names are [A-Za-z_][A-Za-z0-9_]*");
		/* A value is KEY="value" in a supervisor program and "KEY value",
		 * a line of environment-vars, in deploy.cfg: it must read back
		 * through both. */
		if (v && !json_is_string(v))
			return check_type_error(err, p2, "a string", v);
		if (s && strlen(s) != json_string_length(v))
			return stack_error_set(err, p2, "must not contain control characters (NUL)");
		if (s && (supervisor_env_problem(s) || cfg_value_problem(s)))
			return stack_error_set(err, p2, "%s",
					       supervisor_env_problem(s) ? supervisor_env_problem(s) : cfg_value_problem(s));
	}
	return 0;
}

static bool host_one_ok(const char *h)
{
	return host_ok(h, false);
}

static bool host_list_ok(const char *h)
{
	return host_ok(h, true);
}

static bool no_meta(const char *s)
{
	return !has_meta(s);
}

/* A Plone section (plone_instances, plone_zeoserver, plone_solr): the app
 * it names, counts, and the hosts and arguments written into configs. */
static int check_section(const json_t *sec, const char *base, struct stack_error *err)
{
	static const char args_msg[] = "may hold only [A-Za-z0-9_./:=,@+-] and spaces";
	char p[CHECK_PATH_SIZE], q[CHECK_PATH_SIZE], count_msg[64];
	const json_t *v;
	int r;

	(void)snprintf(count_msg, sizeof(count_msg), "must be an integer from 1 to %d", PLONE_CLIENTS_MAX);
	if ((r = check_string_ok(err, base, sec, "app_name", part_ok, "must be an app name made of [A-Za-z0-9_.-]")) < 0 ||
	    (!json_is_null(json_object_get(sec, "instance_count")) &&
	     (r = check_int_ok(err, base, sec, "instance_count", 1, PLONE_CLIENTS_MAX, count_msg)) < 0))
		return r;
	v = json_object_get(sec, "per_cpu");
	stack_path_key(p, sizeof(p), base, "per_cpu");
	if (v && (!json_is_number(v) || json_number_value(v) <= 0 || json_number_value(v) > PLONE_CLIENTS_MAX))
		return stack_error_set(err, p, "must be a positive number");
	stack_path_key(q, sizeof(q), base, "zeo");
	if ((r = check_int_ok(err, base, sec, "restart_delay", 0, 3600, "must be seconds, 0 to 3600")) < 0 ||
	    (r = check_string_ok(err, q, json_object_get(sec, "zeo"), "address", host_one_ok,
				 "must be a host:port ([A-Za-z0-9.:_-])")) < 0 ||
	    (r = check_string_ok(err, base, sec, "celery_args", args_ok, args_msg)) < 0 ||
	    (r = check_string_ok(err, base, sec, "beat_args", args_ok, args_msg)) < 0 ||
	    (r = check_string_ok(err, base, sec, "solr_host", host_one_ok, "must be a host ([A-Za-z0-9.:_-])")) < 0)
		return r;
	stack_path_key(q, sizeof(q), base, "broker");
	if ((r = check_string_ok(err, q, json_object_get(sec, "broker"), "host", host_one_ok,
				 "must be a host ([A-Za-z0-9.:_-])")) < 0 ||
	    (r = check_int(err, q, json_object_get(sec, "broker"), "port", 1, 65535, NULL)) < 0)
		return r;
	/* Numbers written into deploy.cfg: the renderer skips a value that is
	 * not an integer, so a "600" or 1.5 would be dropped in silence. */
	if ((r = check_int(err, base, sec, "zodb_cache_size", 0, 100000000, NULL)) < 0 ||
	    (r = check_int(err, base, sec, "zserver_threads", 1, 10000, NULL)) < 0)
		return r;
	for (const char *const *key = (const char *const[]){ "zeo_layer", "solr_layer", "broker_layer", NULL }; *key;
	     key++)
		if ((r = check_string_ok(err, base, sec, *key, no_meta, "must be a host or layer name")) < 0)
			return r;
	return 0;
}

/* A member's "cpus" (the client count of plone.c): an integer count, not a
 * string or a fraction that would be skipped in silence for this
 * machine's own CPU count. */
static int check_member_cpus(const struct stack *s, struct stack_error *err)
{
	const json_t *layers = json_object_get(json_object_get(s->root, "opsworks"), "layers"), *layer, *m;
	const char *ln, *hn;
	char lp[CHECK_PATH_SIZE], ip[CHECK_PATH_SIZE], mp[CHECK_PATH_SIZE];
	int r;

	json_object_foreach((json_t *)layers, ln, layer) {
		stack_path_key(lp, sizeof(lp), "$.opsworks.layers", ln);
		stack_path_key(ip, sizeof(ip), lp, "instances");
		json_object_foreach(json_object_get(layer, "instances"), hn, m) {
			stack_path_key(mp, sizeof(mp), ip, hn);
			if (json_is_object(m) && (r = check_int(err, mp, m, "cpus", 1, 4096, NULL)) < 0)
				return r;
		}
	}
	return 0;
}

int apps_validate(const struct stack *s, struct stack_error *err)
{
	static const enum app_kind kinds[] = { APP_INSTANCES, APP_ZEOSERVER, APP_SOLR };
	static const char *const dirs[][3] = {
		{ "plone_blobs", "blob_dir", "$.plone_blobs.blob_dir" },
		{ "plone_solr", "data_dir", "$.plone_solr.data_dir" },
		{ "plone_zeoserver", "filestorage_dir", "$.plone_zeoserver.filestorage_dir" },
	};
	const json_t *rs = json_object_get(plone_section(s, "plone_instances"), "relstorage");
	int r;

	if ((r = check_member_cpus(s, err)) < 0)
		return r;
	for (size_t i = 0; i < s->n_apps; i++)
		if ((r = check_app(s, &s->apps[i], err)) < 0)
			return r;
	for (size_t i = 0; i < ELEMENTSOF(kinds); i++) {
		const json_t *sec = plone_section(s, apps_section_name(kinds[i]));
		char base[128];

		(void)snprintf(base, sizeof(base), "$.%s", apps_section_name(kinds[i]));
		if (sec && (r = check_section(sec, base, err)) < 0)
			return r;
	}
	/* The DSN may hold a password: the message does not quote it. */
	if ((r = check_string_ok(err, "$.plone_instances.relstorage", rs, "dsn", cfg_value_ok,
				 "must be one line of deploy.cfg: no control characters, no space at either end, "
				 "no \"${\"")) < 0 ||
	    (r = check_string_ok(err, "$.plone_instances.relstorage", rs, "cache_servers", host_list_ok,
				 "must be host:port entries separated by spaces ([A-Za-z0-9.:_-])")) < 0)
		return r;
	if (check_lines(json_object_get(rs, "db"), "$.plone_instances.relstorage.db", err) < 0)
		return -EINVAL;
	if ((r = check_int(err, "$.plone_instances.relstorage", rs, "pack_days", 0, 36500, NULL)) < 0)
		return r;
	for (size_t i = 0; i < ELEMENTSOF(dirs); i++)
		if ((r = check_abs_path_ok(err, dirs[i][2],
					   json_object_get(plone_section(s, dirs[i][0]), dirs[i][1]))) < 0)
			return r;
	/* blob_dir is written into deploy.cfg (blob-storage =). */
	if ((r = check_string_ok(err, "$.plone_blobs", plone_section(s, "plone_blobs"), "blob_dir", cfg_value_ok,
				 "must not contain \"${\" or spaces at either end: it is written into deploy.cfg")) < 0)
		return r;
	return 0;
}

void apps_owns(const struct stack *s, const struct config *c, const char *layer, const char *name,
	       struct recipe_paths *ret)
{
	enum app_kind kind = strncmp(name, "instances", 9) == 0	  ? APP_INSTANCES
			     : strncmp(name, "zeoserver", 9) == 0 ? APP_ZEOSERVER
								  : APP_SOLR;
	const char *app_name = apps_app_name(s, kind);
	const struct stack_app *app = stack_app_find(s, app_name);
	const json_t *sec = plone_section(s, apps_section_name(kind));
	struct app_services sv;

	if (kind == APP_INSTANCES)
		recipe_paths_add(ret, "/etc/logrotate.d/supervisor", false,
				 xasprintf("the old logrotate file recipe %s removes", name));
	if (kind != APP_SOLR &&
	    (json_is_true(json_object_get(sec, "nfs_blobs")) || json_is_true(json_object_get(sec, "gluster_blobs"))))
		recipe_paths_add(ret, "/etc/fstab", false,
				 xasprintf("the fstab recipe %s keeps the shared blobs' mount in", name));
	if (!app)
		return;
	recipe_paths_add(ret, app->deploy_to, true, xasprintf("the deploy_to of app %s", app->name));
	apps_services(s, kind, app, &sv);
	for (size_t i = 0; i < sv.n; i++) {
		_cleanup_free_ char *p = xasprintf("%s/%s.conf", c->supervisor_conf_dir, sv.v[i].name);
		recipe_paths_add(ret, p, false, xasprintf("the supervisor program file of app %s", app->name));
	}
	apps_services_free(&sv);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* The varnish-vcl step kind (step_vcl.h): vcl.use (after a vcl.load when
 * varnishd does not know the name yet), vcl.list and vcl.discard through
 * varnishadm, one child after the other. */
#include "step_vcl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/exec.h"
#include "plan.h"
#include "strv.h"
#include "util.h"

#define VCL_DISCARD_MAX 64

/* Checkers and varnishadm run with a known PATH and nothing else from our
 * environment. */
static char *const front_env[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL };

enum vcl_stage { VCL_USE, VCL_LOAD, VCL_LIST, VCL_DISCARD, VCL_DONE };

/* varnishadm's exit status when varnishd answered with an error (CLI
 * status other than 200), as opposed to 2: not reachable. */
#define VARNISHADM_REFUSED 1

struct vcl_data {
	char **adm;            /* owned: the varnishadm argv prefix */
	char *root;
	char *vcl_path;
	char *name;
	char *prefix;
	long timeout_sec;

	/* While running. */
	enum vcl_stage stage;
	bool loaded;           /* this step ran vcl.load */
	struct plan_exec *x;   /* borrowed */
	struct exec *proc;     /* borrowed */
	char **argv_run;
	struct buf out;
};

static void vcl_free(void *data)
{
	struct vcl_data *d = data;

	if (!d)
		return;
	strv_free(d->adm);
	free(d->root);
	free(d->vcl_path);
	free(d->name);
	free(d->prefix);
	strv_free(d->argv_run);
	buf_free(&d->out);
	free(d);
}

static int vcl_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			char **ret_error)
{
	*ret_action = "run";
	return 0;
}

size_t front_vcl_list_parse(const char *out, size_t len, const char *prefix, const char *keep, char ***ret_names)
{
	size_t n = 0, plen = strlen(prefix);
	char **names = xcalloc(VCL_DISCARD_MAX + 1, sizeof(char *));
	const char *p = out, *end = out + len;

	while (p < end && n < VCL_DISCARD_MAX) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		const char *le = eol ? eol : end;
		const char *tok[6];
		size_t tlen[6], nt = 0;
		const char *q = p;

		while (q < le && nt < 6) {
			while (q < le && (*q == ' ' || *q == '\t' || *q == '\r'))
				q++;
			if (q >= le)
				break;
			tok[nt] = q;
			while (q < le && *q != ' ' && *q != '\t' && *q != '\r')
				q++;
			tlen[nt] = (size_t)(q - tok[nt]);
			nt++;
		}
		/* "status state temperature busy name [...]". Only "available"
		 * ones: "active" is in use, and "discarded" ones (still busy)
		 * are on their way out; naming them would fail the whole
		 * vcl.discard command. */
		if (nt >= 5 && tlen[0] == 9 && memcmp(tok[0], "available", 9) == 0 && tlen[4] >= plen &&
		    memcmp(tok[4], prefix, plen) == 0 && !(strlen(keep) == tlen[4] && memcmp(tok[4], keep, tlen[4]) == 0) &&
		    memchr(tok[4], '\0', tlen[4]) == NULL)
			names[n++] = xstrndup(tok[4], tlen[4]);
		p = le + (eol ? 1 : 0);
	}
	*ret_names = names;
	return n;
}

static void vcl_next(struct vcl_data *d);

static void cb_vcl_output(void *userdata, const char *data, size_t len)
{
	struct vcl_data *d = userdata;

	if (d->out.len < 65536)
		buf_append(&d->out, data, len);
	if (d->stage != VCL_LIST)
		plan_step_output(d->x, data, len);
}

static void cb_vcl_done(void *userdata, const struct exec_result *r)
{
	struct vcl_data *d = userdata;
	bool ok = !(r->spawn_error || r->timed_out || r->term_signal || r->exit_status != 0);

	d->proc = NULL;
	if (!ok && d->stage == VCL_USE && !d->loaded && !r->spawn_error && !r->timed_out && !r->term_signal &&
	    r->exit_status == VARNISHADM_REFUSED) {
		/* The usual case is a VCL loaded by the check before this
		 * step (step_checked_file.h); not there (varnishd was not
		 * reachable then, or this step is owed by an earlier run):
		 * load the live file, checked when it was written. */
		_cleanup_free_ char *note = xasprintf("%s not loaded yet: vcl.load %s\n", d->name, d->vcl_path);

		plan_step_output(d->x, note, strlen(note));
		d->stage = VCL_LOAD;
		d->loaded = true;
		return vcl_next(d);
	}
	if (!ok && (d->stage == VCL_LOAD || d->stage == VCL_USE)) {
		_cleanup_free_ char *why = exec_result_describe(r, d->timeout_sec * 1000);
		_cleanup_free_ char *out = xstrndup(d->out.data ? d->out.data : "", d->out.len > 2048 ? 2048 : d->out.len);
		struct plan_exec *x = d->x;

		d->x = NULL;
		return plan_step_done(x, STEP_FAILED, "varnishadm %s %s: %s: %s",
				      d->stage == VCL_LOAD ? "vcl.load" : "vcl.use", d->name, why, out);
	}
	if (!ok) {
		/* Old VCLs left loaded cost memory, not service: say so and go on. */
		static const char msg[] = "note: could not discard old VCLs\n";
		plan_step_output(d->x, msg, sizeof(msg) - 1);
		d->stage = VCL_DONE;
	} else if (d->stage == VCL_LOAD)
		d->stage = VCL_USE;
	else if (d->stage == VCL_USE)
		d->stage = VCL_LIST;
	else
		d->stage++;
	vcl_next(d);
}

static void vcl_next(struct vcl_data *d)
{
	size_t n = strv_length((const char *const *)d->adm), extra = 0;
	char **names = NULL;
	_cleanup_free_ char *host = NULL;
	int r;

	if (d->stage == VCL_DISCARD) {
		extra = front_vcl_list_parse(d->out.data ? d->out.data : "", d->out.len, d->prefix, d->name, &names);
		if (extra == 0) {
			strv_free(names);
			d->stage = VCL_DONE;
		}
	}
	buf_reset(&d->out);
	if (d->stage == VCL_DONE) {
		struct plan_exec *x = d->x;
		d->x = NULL;
		return plan_step_done(x, STEP_CHANGED, NULL);
	}
	strv_free(d->argv_run);
	d->argv_run = xcalloc(n + 3 + extra + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		d->argv_run[i] = xstrdup(d->adm[i]);
	switch (d->stage) {
	case VCL_LOAD:
		if (path_join_under(d->root, d->vcl_path, &host) < 0) {
			struct plan_exec *x = d->x;
			d->x = NULL;
			return plan_step_done(x, STEP_FAILED, "cannot name %s under root", d->vcl_path);
		}
		d->argv_run[n] = xstrdup("vcl.load");
		d->argv_run[n + 1] = xstrdup(d->name);
		d->argv_run[n + 2] = xstrdup(host);
		break;
	case VCL_USE:
		d->argv_run[n] = xstrdup("vcl.use");
		d->argv_run[n + 1] = xstrdup(d->name);
		break;
	case VCL_LIST:
		d->argv_run[n] = xstrdup("vcl.list");
		break;
	case VCL_DISCARD:
		d->argv_run[n] = xstrdup("vcl.discard");
		for (size_t i = 0; i < extra; i++) {
			d->argv_run[n + 1 + i] = names[i];
			names[i] = NULL;
		}
		break;
	case VCL_DONE:
		break;
	}
	strv_free(names);

	struct exec_opts o = {
		.argv = d->argv_run,
		.env = front_env,
		.timeout_ms = d->timeout_sec * 1000,
	};
	r = exec_start(plan_exec_env(d->x)->loop, &o, cb_vcl_output, cb_vcl_done, d, &d->proc);
	if (r < 0) {
		struct plan_exec *x = d->x;
		d->x = NULL;
		d->proc = NULL;
		return plan_step_done(x, STEP_FAILED, "could not start %s: %s", d->adm[0], strerror(-r));
	}
	plan_step_spawned(d->x, d->proc);
}

static void vcl_apply(struct step *s, struct plan_exec *x)
{
	struct vcl_data *d = s->data;

	d->x = x;
	d->stage = VCL_USE;
	d->loaded = false;
	buf_reset(&d->out);
	vcl_next(d);
}

static void vcl_cancel(struct step *s)
{
	struct vcl_data *d = s->data;

	if (d->proc)
		exec_terminate(d->proc);
}

static const struct step_ops varnish_vcl_ops = {
	.kind = "varnish-vcl",
	.describe = vcl_describe,
	.apply = vcl_apply,
	.cancel = vcl_cancel,
	.free_data = vcl_free,
};

struct step *front_add_varnish_vcl(struct plan *p, char *const *varnishadm, const char *vcl_path, const char *name,
				   const char *prefix, long timeout_sec, char **ret_error)
{
	struct vcl_data *d;

	if (!varnishadm || !varnishadm[0]) {
		*ret_error = xstrdup("no varnishadm command");
		return NULL;
	}
	if (!path_is_safe_absolute(vcl_path)) {
		*ret_error = xasprintf("not a safe absolute file path: %s", vcl_path);
		return NULL;
	}
	d = xcalloc(1, sizeof(*d));
	d->adm = strv_dup((const char *const *)varnishadm);
	d->root = xstrdup(p->root ? p->root : "/");
	d->vcl_path = xstrdup(vcl_path);
	d->name = xstrdup(name);
	d->prefix = xstrdup(prefix);
	d->timeout_sec = timeout_sec;
	buf_init(&d->out);
	/* The target is the file, not the name: the name is new in each
	 * run, and the step's owed work (plan.h, step memory) is keyed by
	 * its target, so that a vcl.use that failed runs in the next run. */
	return plan_add(p, &varnish_vcl_ops, vcl_path, d);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* EBS snapshots through EC2's Query API (design.md §8.1, reference §9
 * "ebs_snapshots"): the ebs_snapshots job.
 *
 * Keys under ebs_snapshots (Custom JSON), with the seeds' defaults:
 *   aws_key, aws_secret  both or neither; neither: the IMDS role's credentials
 *   region               else the config's aws_region, else IMDS's placement/region
 *   keep                 1..1000, default 15 (the seeds' --keep-only 15)
 *   schedule             5-field cron, UTC, default "0 8 * * *" (the seeds' cron)
 *   splay                seconds, default 900
 *   freeze               default false (ext4/xfs, never "/")
 * Any other key is refused with its path (a typo "kep" would otherwise keep
 * 15 without a word).
 *
 * The job exists on an instance whose layers run the recipe ebs_snapshots
 * at any event (default mapping: the layer ebs_snapshots). Its run
 * (event maintenance) is one ec2_snapshot step over this instance's
 * volumes: agent.volumes.<hostname> and ebs.devices (agent.volumes wins for
 * a mount point or device both name). A volume counts whether or not its
 * mount point is mounted now: the stack says this instance mounts it, and
 * an unmounted attached volume still holds its data; only the freeze needs
 * it mounted (else the step says so and snapshots without one). */
#include <errno.h>
#include <string.h>

#include "config.h"
#include "cron.h"
#include "recipe.h"
#include "stack/stack.h"
#include "steps/plan.h"
#include "steps/step_ec2_snapshot.h"
#include "util.h"

#define SNAP_JOB "ebs_snapshots"
#define SNAP_SCHEDULE "0 8 * * *"
#define SNAP_SPLAY 900
#define SNAP_KEEP 15
#define SNAP_KEEP_MAX 1000
#define SNAP_SPLAY_MAX 86400

static const json_t *snap_section(const struct stack *s)
{
	return json_object_get(s->root, "ebs_snapshots");
}

static bool region_ok(const char *r)
{
	if (!*r || strlen(r) > 64)
		return false;
	for (; *r; r++)
		if (!((*r >= 'a' && *r <= 'z') || (*r >= '0' && *r <= '9') || *r == '-'))
			return false;
	return true;
}

static int snap_validate(const struct stack *s, struct stack_error *err)
{
	static const char *const keys[] = { "aws_key", "aws_secret", "region", "keep", "schedule", "splay", "freeze",
					    NULL };
	const json_t *o = json_object_get(s->root, "ebs_snapshots");
	const char *P = "$.ebs_snapshots", *key = NULL, *secret = NULL, *region = NULL, *sched = NULL;
	char path[CHECK_PATH_SIZE];
	_cleanup_free_ char *cerr = NULL;
	struct cron c;
	int r;

	if (!o || json_is_null(o))
		return 0;
	if (!json_is_object(o))
		return check_type_error(err, P, "an object", o);
	if ((r = check_known_keys(err, P, o, keys)) < 0 || (r = check_text(err, P, o, "aws_key", &key)) < 0 || (r = check_text(err, P, o, "aws_secret", &secret)) < 0 ||
	    (r = check_string(err, P, o, "region", &region)) < 0 ||
	    (r = check_int(err, P, o, "keep", 1, SNAP_KEEP_MAX, NULL)) < 0 ||
	    (r = check_int(err, P, o, "splay", 0, SNAP_SPLAY_MAX, NULL)) < 0 || (r = check_bool(err, P, o, "freeze")) < 0 ||
	    (r = check_string(err, P, o, "schedule", &sched)) < 0)
		return r;
	if ((key && !*key) || (secret && !*secret) || !key != !secret) {
		stack_path_key(path, sizeof(path), P, key ? "aws_secret" : "aws_key");
		return stack_error_set(err, path,
				       "aws_key and aws_secret go together (neither: the instance's IAM role), non-empty");
	}
	/* Only what would break the request: the seeds' own stacks carry
	 * placeholders ("***** AWS KEY FOR SNAPSHOTTING (IAM USER) *****") that
	 * EC2 refuses at run time, with AuthFailure, not at validation. */
	if (key && strlen(key) > 256) {
		stack_path_key(path, sizeof(path), P, "aws_key");
		return stack_error_set(err, path, "must be an access key id of at most 256 bytes");
	}
	if (region && !region_ok(region)) {
		stack_path_key(path, sizeof(path), P, "region");
		return stack_error_set(err, path, "must be an AWS region name such as \"eu-west-1\" ([a-z0-9-])");
	}
	if (sched && cron_parse(sched, &c, &cerr) < 0) {
		stack_path_key(path, sizeof(path), P, "schedule");
		return stack_error_set(err, path, "must be a 5-field cron expression (UTC): %s", cerr ? cerr : "invalid");
	}
	return 0;
}

/* Whether this instance's layers run the recipe ebs_snapshots at any event. */
static bool runs_snapshots(const struct stack *s)
{
	for (size_t l = 0; l < s->n_self_layers; l++)
		for (int ev = 0; ev < _EVENT_MAX; ev++) {
			size_t n = 0;
			_cleanup_free_ const char **names = recipes_layer_recipes(s, s->self_layers[l], (enum event)ev, &n);
			for (size_t i = 0; i < n; i++) {
				const char *c = names[i] ? recipe_canonical_name(names[i]) : NULL;
				if (c && strcmp(c, SNAP_JOB) == 0)
					return true;
			}
		}
	return false;
}

static void snap_jobs(const struct stack *s, const struct config *c, struct recipe_jobs *ret)
{
	const json_t *o = snap_section(s);
	const char *sched = json_string_value(json_object_get(o, "schedule"));
	const json_t *splay = json_object_get(o, "splay");

	if (!runs_snapshots(s))
		return;
	recipe_jobs_add(ret, SNAP_JOB, sched ? sched : SNAP_SCHEDULE,
			json_is_integer(splay) ? (long)json_integer_value(splay) : SNAP_SPLAY, NULL, SNAP_JOB);
}

/* This instance's volumes: agent.volumes.<hostname>, then the ebs.devices
 * entries that no agent.volumes entry names (same mount point or device). */
static size_t snap_volumes(const struct stack *s, struct ec2_snapshot_volume **ret)
{
	const json_t *vols = json_object_get(json_object_get(json_object_get(s->root, "agent"), "volumes"), s->instance);
	const json_t *devices = json_object_get(json_object_get(s->root, "ebs"), "devices");
	struct ec2_snapshot_volume *v = xcalloc(json_array_size(vols) + json_object_size(devices) + 1, sizeof(*v));
	const json_t *e, *o;
	const char *dev;
	size_t n = 0, i;

	json_array_foreach(vols, i, e) {
		v[n++] = (struct ec2_snapshot_volume){
			.volume_id = json_string_value(json_object_get(e, "volume_id")),
			.device = json_string_value(json_object_get(e, "device")),
			.mount_point = json_string_value(json_object_get(e, "mount_point")),
		};
	}
	json_object_foreach((json_t *)devices, dev, e) {
		const char *mp = json_string_value(json_object_get(e, "mount_point"));
		bool dup = false;

		json_array_foreach(vols, i, o) {
			const char *omp = json_string_value(json_object_get(o, "mount_point"));
			const char *odev = json_string_value(json_object_get(o, "device"));
			dup = dup || (mp && omp && strcmp(mp, omp) == 0) || (odev && strcmp(odev, dev) == 0);
		}
		if (!dup)
			v[n++] = (struct ec2_snapshot_volume){ .device = dev, .mount_point = mp };
	}
	*ret = v;
	return n;
}

static int plan_snapshots(const struct recipe_ctx *ctx, struct plan *plan, char **ret_error)
{
	const struct stack *s = ctx->stack;
	const json_t *o = snap_section(s);
	const json_t *keep = json_object_get(o, "keep");
	const char *region = json_string_value(json_object_get(o, "region"));
	_cleanup_free_ struct ec2_snapshot_volume *vols = NULL;
	size_t n;

	if (ctx->event != EVENT_MAINTENANCE) {
		plan_add_note(plan, SNAP_JOB,
			      "snapshots are the scheduled job ebs_snapshots (agentctl schedule; agentctl run maintenance "
			      "--recipe ebs_snapshots)");
		return 0;
	}
	n = snap_volumes(s, &vols);
	if (n == 0) {
		plan_add_note(plan, SNAP_JOB, "no EBS volume of this instance in agent.volumes or ebs.devices");
		return 0;
	}
	struct ec2_snapshot_opts opts = {
		.volumes = vols,
		.n_volumes = n,
		.hostname = s->instance,
		.stack_name = s->name ? s->name : "",
		.keep = json_is_integer(keep) ? (long)json_integer_value(keep) : SNAP_KEEP,
		.freeze = json_is_true(json_object_get(o, "freeze")),
		.freeze_timeout_sec = config_int(ctx->config, "freeze_timeout"),
		.region = region ? region : ctx->config->aws_region,
		.endpoint = ctx->config->ec2_endpoint,
		.imds_endpoint = ctx->config->imds_endpoint,
		.aws_key = json_string_value(json_object_get(o, "aws_key")),
		.aws_secret = json_string_value(json_object_get(o, "aws_secret")),
	};
	return plan_add_ec2_snapshot(plan, &opts, ret_error) ? 0 : -EINVAL;
}

static const struct recipe recipes_maintenance[] = {
	{ SNAP_JOB, plan_snapshots, NULL },
	{ NULL, NULL, NULL },
};

const struct recipe_family family_maintenance = {
	.name = "maintenance",
	.recipes = recipes_maintenance,
	.validate = snap_validate,
	.jobs = snap_jobs,
};

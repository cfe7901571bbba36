/* SPDX-License-Identifier: BSD-2-Clause */
/* Step "volume"; see step_volume.h. */
#include "step_volume.h"

#include <blkid.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "io/exec.h"
#include "io/fstab.h"
#include "plan.h"
#include "rootfs.h"
#include "step_mount.h"
#include "util.h"
#include "strv.h"

#define VOLUME_POLL_MS 100

enum volume_phase { PHASE_WAIT, PHASE_PROBE, PHASE_MKFS, PHASE_REPROBE, PHASE_MOUNT };

struct volume_step {
	char *volume_id, *device, *mount_point, *fstype, *options; /* owned */
	bool mkfs, force;
	long timeout_ms;
	char **mkfs_argv;        /* owned, NULL-terminated */

	/* While applying. */
	struct plan_exec *x;     /* borrowed */
	char *root;              /* owned copy */
	enum volume_phase phase;
	uv_timer_t *timer;       /* owned until its close callback */
	int64_t deadline;
	char *dev_path;          /* owned: the device node as the kernel knows it */
	char *found_as;          /* owned: the name it was found under */
	bool found_by_name;      /* a volume id was given, but only the mapping name found it */
	dev_t rdev;
	uv_work_t work;
	struct exec *exec;       /* borrowed while mkfs runs */
	bool cancelled;
	/* Worker results. */
	int r;
	char *fs_type, *uuid, *pt_type; /* owned */
	bool bad_csum;           /* the superblock found has a bad checksum */
	bool not_zero;           /* no signature, but the first MiB is not all zeroes */
	bool changed;
	char *error;             /* owned */
};

char **volume_candidates(const char *volume_id, const char *device)
{
	char **v = xcalloc(6, sizeof(char *));
	size_t n = 0;

	if (volume_id && strncmp(volume_id, "vol-", 4) == 0) {
		v[n++] = xasprintf("/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol%s", volume_id + 4);
		v[n++] = xasprintf("/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol%s-ns-1", volume_id + 4);
	}
	if (device) {
		v[n++] = xstrdup(device);
		/* The mapping name in the console (/dev/sdf) and what Xen kernels
		 * call it (/dev/xvdf) are the same volume. */
		if (strncmp(device, "/dev/sd", 7) == 0)
			v[n++] = xasprintf("/dev/xvd%s", device + 7);
		else if (strncmp(device, "/dev/xvd", 8) == 0)
			v[n++] = xasprintf("/dev/sd%s", device + 8);
	}
	return v;
}

static void volume_free(void *data)
{
	struct volume_step *v = data;

	if (!v)
		return;
	free(v->volume_id);
	free(v->device);
	free(v->mount_point);
	free(v->fstype);
	free(v->options);
	strv_free(v->mkfs_argv);
	free(v->root);
	free(v->dev_path);
	free(v->found_as);
	free(v->fs_type);
	free(v->uuid);
	free(v->pt_type);
	free(v->error);
	free(v);
}

/* A block device at path inside root: its kernel path and number. */
static int block_device_at(int rootfd, const char *path, char **ret_path, dev_t *ret_rdev)
{
	char proc[64], buf[PATH_MAX];
	struct stat st;
	ssize_t n;
	int fd;

	/* mkfs and blkid get the device as a path string: no name of it may be
	 * in a directory another user can write (rootfs.h). */
	fd = rootfs_resolve_private(rootfd, path, false);
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) < 0 || !S_ISBLK(st.st_mode)) {
		close(fd);
		return -ENODEV;
	}
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	n = readlink(proc, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	*ret_path = xstrdup(buf);
	*ret_rdev = st.st_rdev;
	return 0;
}

/* The serial of the block device kname (root/sys/block/<kname>/device/serial,
 * trailing spaces, newlines and NULs cut): a malloc'd string, or NULL when
 * there is none. */
static char *serial_of(int rootfd, const char *kname)
{
	_cleanup_free_ char *p = NULL;
	char proc[64], *data = NULL;
	size_t len;
	int sfd, rfd;

	if (!name_is_valid(kname))
		return NULL;
	p = xasprintf("/sys/block/%s/device/serial", kname);
	sfd = rootfs_resolve(rootfd, p, false);
	if (sfd < 0)
		return NULL;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", sfd);
	rfd = open(proc, O_RDONLY | O_CLOEXEC);
	close(sfd);
	if (rfd < 0)
		return NULL;
	if (fd_read_all(rfd, 256, &data, &len) < 0)
		data = NULL;
	close(rfd);
	if (!data)
		return NULL;
	while (len > 0 && (data[len - 1] == ' ' || data[len - 1] == '\n' || data[len - 1] == '\0'))
		data[--len] = '\0';
	if (len == 0) {
		free(data);
		return NULL;
	}
	return data;
}

/* The serial an EBS volume's NVMe device carries: its id without the dash. */
static char *volume_serial(const char *volume_id)
{
	if (!volume_id || strncmp(volume_id, "vol-", 4) != 0)
		return NULL;
	return xasprintf("vol%s", volume_id + 4);
}

/* The NVMe serial of an EBS volume is its id without the dash: look for it
 * in root/sys/block/<name>/device/serial (space-padded). */
static char *serial_scan(int rootfd, const char *volume_id)
{
	_cleanup_free_ char *want = volume_serial(volume_id);
	char proc[64], *found = NULL;
	struct dirent *de;
	DIR *d;
	int fd, dfd;

	if (!want)
		return NULL;
	fd = rootfs_resolve(rootfd, "/sys/block", true);
	if (fd < 0)
		return NULL;
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	dfd = open(proc, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	close(fd);
	if (dfd < 0 || !(d = fdopendir(dfd))) {
		if (dfd >= 0)
			close(dfd);
		return NULL;
	}
	while (!found && (de = readdir(d))) {
		_cleanup_free_ char *serial = NULL;

		if (de->d_name[0] == '.' || strncmp(de->d_name, "nvme", 4) != 0)
			continue;
		serial = serial_of(rootfd, de->d_name);
		if (serial && strcmp(serial, want) == 0 && name_is_valid(de->d_name))
			found = xasprintf("/dev/%s", de->d_name);
	}
	closedir(d);
	return found;
}

static void found_clear(struct volume_step *v)
{
	free(v->dev_path);
	free(v->found_as);
	v->dev_path = v->found_as = NULL;
}

/* With a volume id, the device is looked for by what identifies the volume
 * first (by-id links, then the NVMe serial); its mapping name (/dev/sdf,
 * /dev/xvdf) only counts when that device has no serial at all (Xen), and a
 * device found that way is never formatted (found_by_name). Without a volume
 * id, the mapping name is all there is. */
static int volume_find(struct volume_step *v)
{
	_cleanup_close_ int rootfd = rootfs_open(v->root);
	_cleanup_free_ char *want = volume_serial(v->volume_id);
	char **cands;
	int r = -ENOENT;

	if (rootfd < 0)
		return rootfd;
	found_clear(v);
	v->found_by_name = false;
	cands = volume_candidates(v->volume_id, v->device);
	/* The by-id links come first in cands (when there is a vol- id). */
	for (char **c = cands; *c && r < 0 && strncmp(*c, "/dev/disk/by-id/", 16) == 0; c++)
		if ((r = block_device_at(rootfd, *c, &v->dev_path, &v->rdev)) == 0)
			v->found_as = xstrdup(*c);
	if (r < 0 && want) {
		char *dev = serial_scan(rootfd, v->volume_id);

		if (dev && (r = block_device_at(rootfd, dev, &v->dev_path, &v->rdev)) == 0)
			v->found_as = xstrdup(dev);
		free(dev);
	}
	for (char **c = cands; *c && r < 0; c++) {
		_cleanup_free_ char *serial = NULL;
		const char *kname;

		if (strncmp(*c, "/dev/disk/by-id/", 16) == 0)
			continue;
		if ((r = block_device_at(rootfd, *c, &v->dev_path, &v->rdev)) < 0)
			continue;
		if (!v->volume_id) {
			v->found_as = xstrdup(*c);
			break;
		}
		kname = strrchr(v->dev_path, '/');
		kname = kname ? kname + 1 : v->dev_path;
		serial = serial_of(rootfd, kname);
		if (serial) {
			/* It has a serial, and not this volume's (else the scan
			 * had found it): another volume under that name. */
			found_clear(v);
			r = -ENOENT;
			continue;
		}
		v->found_as = xstrdup(*c);
		v->found_by_name = true;
	}
	strv_free(cands);
	return r;
}

#define BLANK_CHECK_BYTES (1024 * 1024)

/* Worker thread: whether the first MiB of the device (or all of it, when
 * smaller) is zeroes. A device mkfs may run on must be: libblkid does not
 * know every filesystem, and data it cannot name is still data. */
static int head_is_zero(const char *path, bool *ret_zero)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	_cleanup_free_ char *buf = NULL;
	size_t got = 0;

	if (fd < 0)
		return -errno;
	buf = xmalloc(BLANK_CHECK_BYTES);
	while (got < BLANK_CHECK_BYTES) {
		ssize_t n = read(fd, buf + got, BLANK_CHECK_BYTES - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	*ret_zero = true;
	for (size_t i = 0; i < got; i++)
		if (buf[i] != 0) {
			*ret_zero = false;
			break;
		}
	return 0;
}

/* Worker thread: libblkid probe of the device. */
static void probe(struct volume_step *v)
{
	blkid_probe pr;
	const char *val;
	bool zero = false;
	int r;

	free(v->fs_type);
	free(v->uuid);
	free(v->pt_type);
	v->fs_type = v->uuid = v->pt_type = NULL;
	v->bad_csum = v->not_zero = false;
	pr = blkid_new_probe_from_filename(v->dev_path);
	if (!pr) {
		v->r = errno ? -errno : -EIO;
		v->error = xasprintf("cannot probe %s: %s", v->dev_path, strerror(-v->r));
		return;
	}
	(void)blkid_probe_enable_superblocks(pr, 1);
	/* BADCSUM: a superblock whose checksum is wrong is still a filesystem
	 * (damaged, maybe repairable), never a blank device to format. */
	(void)blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_TYPE | BLKID_SUBLKS_UUID | BLKID_SUBLKS_BADCSUM);
	(void)blkid_probe_enable_partitions(pr, 1);
	r = blkid_do_safeprobe(pr);
	if (r == -2) {
		v->r = -EEXIST;
		v->error = xasprintf("%s holds more than one filesystem signature: refusing to touch it", v->dev_path);
	} else if (r < 0) {
		v->r = -EIO;
		v->error = xasprintf("cannot probe %s", v->dev_path);
	} else if (r == 0) {
		if (blkid_probe_lookup_value(pr, "TYPE", &val, NULL) == 0)
			v->fs_type = xstrdup(val);
		if (blkid_probe_lookup_value(pr, "UUID", &val, NULL) == 0)
			v->uuid = xstrdup(val);
		if (blkid_probe_lookup_value(pr, "PTTYPE", &val, NULL) == 0)
			v->pt_type = xstrdup(val);
		if (blkid_probe_lookup_value(pr, "SBBADCSUM", &val, NULL) == 0) {
			v->bad_csum = true;
			if (!v->fs_type)
				v->fs_type = xstrdup("unknown");
		}
	}
	blkid_free_probe(pr);
	if (v->r == 0 && !v->fs_type && !v->pt_type) {
		r = head_is_zero(v->dev_path, &zero);
		if (r < 0) {
			v->r = r;
			v->error = xasprintf("cannot read %s: %s", v->dev_path, strerror(-r));
		} else
			v->not_zero = !zero;
	}
}

static void volume_mount(struct volume_step *v)
{
	_cleanup_free_ char *fstab_source = NULL, *fstab_options = NULL;
	const char *opts = v->options ? v->options : "defaults";
	struct mount_spec spec = {
		.source = v->dev_path,
		.devno = v->rdev,
		.target = v->mount_point,
		.fstype = v->fs_type,
		.options = opts,
		.fstab_pass = strcmp(v->fs_type, "xfs") == 0 ? 0 : 2,
		.force = v->force,
	};

	/* By UUID: device names are not stable (NVMe discovery order). nofail:
	 * a volume that is not attached at boot must not stop the boot. */
	fstab_source = v->uuid ? xasprintf("UUID=%s", v->uuid) : xstrdup(v->found_as);
	fstab_options = fstab_has_option(opts, "nofail") ? xstrdup(opts) : xasprintf("%s,nofail", opts);
	spec.fstab_source = fstab_source;
	spec.fstab_options = fstab_options;
	v->r = mount_ensure(v->root, &spec, &v->changed, &v->error);
}

static void output(struct volume_step *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void output(struct volume_step *v, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	plan_step_output(v->x, line, (size_t)n);
}

static void on_work(uv_work_t *w)
{
	struct volume_step *v = w->data;

	v->r = 0;
	if (v->phase == PHASE_PROBE || v->phase == PHASE_REPROBE)
		probe(v);
	else
		volume_mount(v);
}

static void on_work_done(uv_work_t *w, int status);

static void queue_phase(struct volume_step *v, enum volume_phase phase)
{
	int r;

	v->phase = phase;
	v->work.data = v;
	r = uv_queue_work(plan_exec_env(v->x)->loop, &v->work, on_work, on_work_done);
	if (r < 0)
		plan_step_done(v->x, STEP_FAILED, "cannot queue work: %s", uv_strerror(r));
}

static void on_mkfs_output(void *userdata, const char *data, size_t len)
{
	struct volume_step *v = userdata;

	plan_step_output(v->x, data, len);
}

static void on_mkfs_done(void *userdata, const struct exec_result *res)
{
	struct volume_step *v = userdata;

	v->exec = NULL;
	if (res->spawn_error || res->term_signal || res->exit_status != 0) {
		_cleanup_free_ char *how = exec_result_describe(res, 0);

		return plan_step_done(v->x, STEP_FAILED, "mkfs of %s failed: %s", v->dev_path, how);
	}
	v->changed = true;
	queue_phase(v, PHASE_REPROBE);
}

static void start_mkfs(struct volume_step *v)
{
	static char *const env[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL };
	const char *fstype = v->fstype ? v->fstype : "ext4";
	size_t n = 0;
	char **argv;
	struct exec_opts o = { .env = env };
	int r;

	while (v->mkfs_argv[n])
		n++;
	argv = xcalloc(n + 4, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		argv[i] = v->mkfs_argv[i];
	argv[n] = "-t";
	argv[n + 1] = (char *)fstype;
	argv[n + 2] = v->dev_path;
	o.argv = argv;
	output(v, "%s has no filesystem: creating %s", v->found_as, fstype);
	v->phase = PHASE_MKFS;
	r = exec_start(plan_exec_env(v->x)->loop, &o, on_mkfs_output, on_mkfs_done, v, &v->exec);
	free(argv);
	if (r < 0)
		plan_step_done(v->x, STEP_FAILED, "cannot run mkfs: %s", strerror(-r));
	else
		plan_step_spawned(v->x, v->exec);
}

static void on_work_done(uv_work_t *w, int status)
{
	struct volume_step *v = w->data;

	(void)status;
	if (v->r < 0)
		return plan_step_done(v->x, STEP_FAILED, "%s", v->error ? v->error : strerror(-v->r));
	switch (v->phase) {
	case PHASE_PROBE:
	case PHASE_REPROBE:
		if (v->fs_type) {
			if (v->bad_csum)
				output(v, "%s (%s): the %s superblock has a bad checksum: it is never formatted", v->found_as,
				       v->dev_path, v->fs_type);
			if (v->phase == PHASE_PROBE)
				output(v, "%s (%s) has a %s filesystem: mounting it as is", v->found_as, v->dev_path,
				       v->fs_type);
			return queue_phase(v, PHASE_MOUNT);
		}
		if (v->pt_type)
			return plan_step_done(v->x, STEP_FAILED,
					      "%s holds a %s partition table, not a filesystem: refusing to format it",
					      v->found_as, v->pt_type);
		if (v->phase == PHASE_REPROBE)
			return plan_step_done(v->x, STEP_FAILED, "mkfs ran but %s still shows no filesystem",
					      v->found_as);
		if (!v->mkfs)
			return plan_step_done(v->x, STEP_FAILED,
					      "%s has no filesystem and this volume does not allow mkfs (\"mkfs\": true)",
					      v->found_as);
		if (v->found_by_name)
			return plan_step_done(v->x, STEP_FAILED,
					      "%s has no filesystem and was found only by its name, not by the volume id %s: "
					      "refusing mkfs (an existing filesystem would be mounted)",
					      v->found_as, v->volume_id);
		if (v->not_zero)
			return plan_step_done(v->x, STEP_FAILED,
					      "%s (%s) is not blank but no filesystem found: refusing mkfs "
					      "(its first MiB is not all zeroes)",
					      v->found_as, v->dev_path);
		if (v->cancelled)
			return plan_step_done(v->x, STEP_FAILED, "cancelled before mkfs");
		return start_mkfs(v);
	case PHASE_MOUNT:
		return plan_step_done(v->x, v->changed ? STEP_CHANGED : STEP_UNCHANGED, NULL);
	default:
		return plan_step_done(v->x, STEP_FAILED, "internal error: phase %d", (int)v->phase);
	}
}

static void on_timer_closed(uv_handle_t *h)
{
	free(h);
}

static void timer_stop(struct volume_step *v)
{
	if (v->timer) {
		uv_close((uv_handle_t *)v->timer, on_timer_closed);
		v->timer = NULL;
	}
}

static void on_poll(uv_timer_t *t)
{
	struct volume_step *v = t->data;
	const char *what = v->volume_id ? v->volume_id : v->device;

	if (volume_find(v) == 0) {
		timer_stop(v);
		output(v, "found %s at %s (%s)", what, v->found_as, v->dev_path);
		return queue_phase(v, PHASE_PROBE);
	}
	if (v->cancelled || time_monotonic_usec() >= v->deadline) {
		timer_stop(v);
		return plan_step_done(v->x, STEP_FAILED, "%s: no block device %s%s%s after %ld s", what,
				      v->volume_id ? "with this volume id" : "", v->volume_id && v->device ? " or " : "",
				      v->device ? v->device : "", v->timeout_ms / 1000);
	}
}

static void volume_apply(struct step *s, struct plan_exec *x)
{
	struct volume_step *v = s->data;

	free(v->root);
	free(v->dev_path);
	free(v->found_as);
	free(v->error);
	v->dev_path = v->found_as = v->error = NULL;
	v->root = xstrdup(plan_exec_env(x)->root);
	v->x = x;
	v->changed = false;
	v->cancelled = false;
	v->phase = PHASE_WAIT;
	if (volume_find(v) == 0) {
		output(v, "found %s at %s (%s)", v->volume_id ? v->volume_id : v->device, v->found_as, v->dev_path);
		return queue_phase(v, PHASE_PROBE);
	}
	output(v, "waiting up to %ld s for %s", v->timeout_ms / 1000, v->volume_id ? v->volume_id : v->device);
	v->deadline = time_monotonic_usec() + (int64_t)v->timeout_ms * 1000;
	v->timer = xcalloc(1, sizeof(*v->timer));
	(void)uv_timer_init(plan_exec_env(x)->loop, v->timer);
	v->timer->data = v;
	(void)uv_timer_start(v->timer, on_poll, VOLUME_POLL_MS, VOLUME_POLL_MS);
}

static void volume_cancel(struct step *s)
{
	struct volume_step *v = s->data;

	v->cancelled = true;
	if (v->exec)
		exec_terminate(v->exec);
}

static int volume_describe(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			   char **ret_error)
{
	struct volume_step *v = s->data;
	int r;

	(void)ret_diff;
	(void)ret_error;
	r = mount_lookup(env->root, v->mount_point, NULL);
	*ret_action = r > 0 ? "none" : "mount";
	return 0;
}

static const struct step_ops volume_ops = {
	.kind = "volume",
	.describe = volume_describe,
	.apply = volume_apply,
	.cancel = volume_cancel,
	.free_data = volume_free,
};

struct step *plan_add_volume(struct plan *p, const struct volume_spec *spec, char **ret_error)
{
	struct volume_step *v;
	size_t n = 0;

	if (!spec->mount_point || !path_is_safe_absolute(spec->mount_point)) {
		*ret_error = xasprintf("mount point %s is not a safe absolute path",
				       spec->mount_point ? spec->mount_point : "(null)");
		return NULL;
	}
	if (path_is_system_dir(spec->mount_point)) {
		*ret_error = xasprintf("mount point %s is a system directory", spec->mount_point);
		return NULL;
	}
	if (spec->device && !path_is_safe_absolute(spec->device)) {
		*ret_error = xasprintf("device %s is not a safe absolute path", spec->device);
		return NULL;
	}
	v = xcalloc(1, sizeof(*v));
	v->volume_id = spec->volume_id ? xstrdup(spec->volume_id) : NULL;
	v->device = spec->device ? xstrdup(spec->device) : NULL;
	v->mount_point = xstrdup(spec->mount_point);
	v->fstype = spec->fstype ? xstrdup(spec->fstype) : NULL;
	v->options = spec->options ? xstrdup(spec->options) : NULL;
	v->mkfs = spec->mkfs;
	v->force = spec->force;
	v->timeout_ms = spec->timeout_ms;
	while (spec->mkfs_argv && spec->mkfs_argv[n])
		n++;
	v->mkfs_argv = xcalloc(n + 2, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		v->mkfs_argv[i] = xstrdup(spec->mkfs_argv[i]);
	if (n == 0)
		v->mkfs_argv[0] = xstrdup("mkfs");
	return plan_add(p, &volume_ops, spec->mount_point, v);
}

/* SPDX-License-Identifier: BSD-2-Clause */
/* Steps and their executor (design.md §6). Recipes append typed, idempotent
 * steps to a plan; the executor runs them one after another on the loop and
 * records each as unchanged, changed, failed or skipped; the same plan can be
 * described instead of executed (agentctl plan) with unified diffs.
 *
 * Step kinds are pluggable: a kind is a struct step_ops. This header
 * declares file and dir (step_file.c), link and absent (step_link.c), exec
 * (step_exec.c) and note (plan.c); the other kinds (mount, service, fetch...)
 * have a step_<kind>.h of their own. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

enum step_status {
	STEP_PENDING,
	STEP_UNCHANGED,
	STEP_CHANGED,
	STEP_FAILED,
	STEP_SKIPPED,
};
const char *step_status_to_string(enum step_status s);

struct http;
struct step;
struct plan_exec;

/* What the executor offers a step while it runs. */
struct step_env {
	uv_loop_t *loop;
	struct http *http;       /* the loop's one HTTP client (io/http.h), borrowed */
	const char *root;        /* the managed system's "/" (steps keep their own copy of the plan's root) */
	long run_id;
	size_t output_max;       /* bytes of one step's output kept */
	const struct step_memory *memory; /* NULL: nothing remembered (plans, tests) */
	/* agentd's state_dir, NULL in plans and tests: where a step leaves what
	 * the next agentd must undo if this one dies mid-step (a freeze). */
	const char *state_dir;
	/* agentd's log_dir and metrics_file (NULL: none), NULL in plans and
	 * tests: a step must not freeze the file system agentd writes to. */
	const char *log_dir;
	const char *metrics_file;
};

struct step_ops {
	const char *kind;        /* "file", "exec", ... as shown in plans and runs */
	/* Dry run: what would happen, without changing anything. Sets *ret_action
	 * to a static string ("none" when converged, "create", "update", "remove",
	 * "run", ...) and, for files, *ret_diff to a malloc'd unified diff (or
	 * NULL). Returns 0 or a negative errno (the step would fail; *ret_error). */
	int (*describe)(struct step *s, const struct step_env *env, const char **ret_action, char **ret_diff,
			char **ret_error);
	/* Does the work. May finish synchronously or later, but must call
	 * plan_step_done() exactly once. */
	void (*apply)(struct step *s, struct plan_exec *x);
	/* Asked to stop soon (SIGTERM to a child); optional. */
	void (*cancel)(struct step *s);
	void (*free_data)(void *data);
};

struct step {
	const struct step_ops *ops;
	char *target;            /* owned: what it acts on, as shown to users (a path, a program, a mount point) */
	char *recipe;            /* owned: the recipe that planned it, may be NULL */
	char *layer;             /* owned, may be NULL */
	char *id;                /* owned, may be NULL: a name other steps' guards refer to */

	/* Guards. */
	char **only_if_changed;  /* owned, NULL-terminated ids: run only if one of these steps changed */
	char *unless_exists;     /* owned, may be NULL: skip (unchanged) when this path exists */
	char *only_if_exists;    /* owned, may be NULL: skip (skipped) when this path does not exist */
	bool guard_converged;    /* only_if_exists holding back the step is the converged state: unchanged, not skipped */
	bool secret;             /* content holds secrets: diffs are redacted for unprivileged callers */

	void *data;              /* owned by ops->free_data: the kind's own fields */

	/* Result. */
	enum step_status status;
	char *error;             /* owned, set when failed */
	int64_t duration_us;
	struct step_env const *env; /* borrowed while running */

	/* Added after the first version of this header. */
	char *message;           /* owned, may be NULL: what a note says (notes are "skipped", not failed) */
	/* Set by describe when its diff shows content that not everyone may
	 * read: the file on disk or the file it would become is not
	 * world-readable. Cleared by plan_describe() before each describe. */
	bool diff_private;
	/* A soft cancel (agentd stopping: SIGTERM) also cancels this step
	 * while it runs, as a hard one does: for a step that only waits
	 * (the reboot job's wait for the machine to go down). */
	bool stop_cancels;
	/* Set by the step before plan_step_done(STEP_FAILED) when retrying
	 * cannot help (EC2 refused the credentials: AuthFailure): the engine
	 * records the failure without a retry; the next due time or an
	 * operator runs it again. */
	bool no_retry;
};

/* A fleet gate: a lock or a semaphore slot the run takes before its first
 * step (design.md §9). The planner decides it from the stack; the engine
 * takes it only with an etcd source and ignores it otherwise. */
enum plan_gate_kind { PLAN_GATE_NONE, PLAN_GATE_MUTEX, PLAN_GATE_SEMAPHORE };
struct plan_gate {
	enum plan_gate_kind kind;
	char *name;              /* owned: "deploy-<app>" (semaphore), the job's name (mutex) */
	unsigned slots;          /* 1 for a mutex */
	/* A failed run keeps what it holds until the next success of the
	 * same gate's run or clear-failed (a rolling deploy: a bad release
	 * stops at max_parallel instances). */
	bool keep_on_failure;
	/* owned, NULL: not a singleton job. Its last success is written to
	 * PREFIX/jobs/<job>; a holder that finds one newer than its request
	 * does not run the job again. */
	char *job;
};

struct plan {
	struct step **steps;     /* owned */
	size_t n_steps;
	const char *root;        /* borrowed */
	struct plan_gate gate;   /* kind PLAN_GATE_NONE: none */
};

void plan_init(struct plan *p, const char *root);
void plan_free(struct plan *p);
/* Sets the plan's gate (name and job copied; job may be NULL). */
void plan_set_gate(struct plan *p, enum plan_gate_kind kind, const char *name, unsigned slots, bool keep_on_failure,
		   const char *job);
/* {"lock"|"semaphore": name, "slots": N, "job"?: J}, or NULL when none. */
json_t *plan_gate_json(const struct plan_gate *g);

/* Appends a step; takes ownership. Recipes use the helpers below. The common
 * fields (recipe, layer) are set by the caller after the call if needed. */
struct step *plan_add(struct plan *p, const struct step_ops *ops, const char *target, void *data);

/* Built-in kinds. Paths are absolute paths on the managed system, checked
 * here (refusing ".."), so recipes never see root. The steps keep them as
 * given with a copy of plan->root and resolve them inside root each time they
 * run or are described (lib/rootfs.h): a symlink in a parent directory,
 * absolute or relative, resolves as if root were "/", so no step can create,
 * write, chmod, chown or remove anything outside root; and no symlink is
 * followed at all in or below a directory that a user other than root can
 * write (the app user's deploy_to and shared/), except the current ->
 * releases/<name> link agentd manages there. Missing parents are created one
 * at a time, relative to the resolved parent; the final component is never
 * followed (a symlink
 * there is replaced by file and link, removed by absent, and refused by dir,
 * see below). owner/group of NULL leave ownership alone; mode of (mode_t)-1
 * likewise. Each returns the new step, or NULL with *ret_error set when a
 * path is bad. */
struct step *plan_add_file(struct plan *p, const char *path, const void *content, size_t len, mode_t mode,
			   const char *owner, const char *group, char **ret_error);
/* A symlink at path fails the step ("... is a symlink, not a directory"),
 * except when the step has nothing to enforce (mode (mode_t)-1, no owner,
 * no group) and the link resolves inside root to a directory: then it is
 * left alone, "unchanged" (e.g. /var/www -> /srv/www). A mode or an owner is
 * never applied through a link. */
struct step *plan_add_dir(struct plan *p, const char *path, mode_t mode, const char *owner, const char *group,
			  char **ret_error);
/* link_target is where the symlink points, as on the managed system. An
 * absolute target (without "..") is stored relative to the link's directory
 * ("/srv/a/current" -> "/srv/a/releases/1" is written as "releases/1"), so
 * the link means the same on the host, under a test root, and to the
 * in-root resolution of later steps; a relative one is stored as given. An
 * existing link pointing elsewhere, or a file, is replaced atomically (new
 * link + rename); a directory in the way is an error. */
struct step *plan_add_link(struct plan *p, const char *path, const char *link_target, char **ret_error);
/* Removes a file or link; a directory only when recursive (the tree is
 * removed with openat(O_NOFOLLOW|O_DIRECTORY) and unlinkat, without following
 * symlinks and without crossing mount points: another file system, or a bind
 * mount of the same one, by statx's mount id; a directory that is itself a
 * mount point is refused). The root itself ("/", "/.") is refused. */
struct step *plan_add_absent(struct plan *p, const char *path, bool recursive, char **ret_error);
/* Adds to the absent step s a path that must outlive it (another app's
 * deploy_to, a mount point; what says which, for the message): when path
 * lies in the directory s removes (component-wise, in normal form, or where
 * it really is once resolved inside root), the step fails before it removes
 * anything. So does a mount point below the directory in the mount table,
 * with or without protected paths. Paths that are not absolute are ignored. */
void plan_absent_protect(struct step *s, const char *path, const char *what);

struct exec_step_opts {
	char *const *argv;       /* required */
	char *const *env;        /* NULL-terminated "K=V", may be NULL */
	const char *user;        /* may be NULL */
	const char *cwd;         /* absolute path on the managed system, may be NULL: root. Resolved
				  * inside root when the step runs; the child enters it through
				  * /proc/self/fd/N of the resolved directory (so /proc is needed) */
	long timeout_sec;        /* 0: none */
	const char *stdin_data;  /* copied */
	size_t stdin_len;
	/* Change reporting. An exec step that ran and exited 0 is "changed",
	 * except: when input_key is set and input_hash equals the hash recorded for
	 * that key after its last success, it is "unchanged"; and a last output line
	 * of exactly "changed=no" or "changed=yes" overrides both. */
	const char *input_key;
	uint64_t input_hash;
};
struct step *plan_add_exec(struct plan *p, const char *target, const struct exec_step_opts *o, char **ret_error);
/* A note: always "skipped" with a message (e.g. a recipe that has nothing to do here). */
struct step *plan_add_note(struct plan *p, const char *target, const char *message);
/* A note that holds only while path (on the managed system) does not
 * exist, as found when the plan is described or run, not when it is made:
 * then "skipped" with the message; else "unchanged" (action "none") with no
 * message. With step_only_if_exists() on the steps that follow, a planner
 * says "nothing to do until PATH exists" without reading the disk. */
struct step *plan_add_note_unless_exists(struct plan *p, const char *target, const char *message, const char *path);

/* Adds a guard to s. When none of the named steps changed in this
 * execution, s is not applied and its status is "skipped" (it was not
 * needed); an unless_exists path that exists (resolved inside root, the
 * final component not followed) gives "unchanged". */
void step_only_if_changed(struct step *s, const char *id);
/* Adds a guard to s: when path (resolved inside root, the final component
 * not followed) does not exist as the step comes to run, s is not applied
 * and its status is "skipped"; a plan shows action "none". */
void step_only_if_exists(struct step *s, const char *path);

/* Step memory: what the executor remembers of steps from one run to the
 * next, kept by the caller (the engine saves it in state_dir). Keys are
 * step identities, at most a few hundred bytes; a key the memory cannot keep
 * only means that its step runs again next time.
 *  - input hashes: an exec step's inputs (64-bit FNV-1a of argv, env and
 *    the files it names) as of its last success: unchanged inputs make it
 *    "unchanged" without running;
 *  - owed work: a guarded step whose guard fired but which did not complete
 *    (failed, cancelled, killed): it runs in the next execution whether or
 *    not its guard fires again. Set and cleared at once, durably, so that a
 *    kill between the change and the step does not lose it. */
struct step_memory {
	bool (*input_hash_get)(void *userdata, const char *key, uint64_t *ret_hash);
	void (*input_hash_set)(void *userdata, const char *key, uint64_t hash);
	bool (*owed_get)(void *userdata, const char *key);
	void (*owed_set)(void *userdata, const char *key, bool owed);
	void *userdata;
};

/* Executor. */
struct plan_exec_cbs {
	void (*on_step_start)(void *userdata, struct step *s, size_t index);
	void (*on_output)(void *userdata, struct step *s, const char *data, size_t len);
	void (*on_step_done)(void *userdata, struct step *s, size_t index);
	/* Called once; failed is true when a step failed (the rest are skipped)
	 * or when a cancel made at least one step be skipped. A cancel that
	 * arrives during the last step, which then succeeds, is not a failure:
	 * every step ran. */
	void (*on_done)(void *userdata, bool failed);
	/* Optional: an exec step's process started, leading process group pgid
	 * (so that a restarted daemon can end what a killed one left running). */
	void (*on_spawn)(void *userdata, struct step *s, int pgid);
};

/* Starts executing p on loop; nothing runs before the next loop iteration.
 * Every step gets on_step_done, also the ones skipped after a failure or a
 * cancel (those get no on_step_start). Steps that finish synchronously run
 * back to back in one iteration. on_done is always called from the loop,
 * never from inside plan_execute(); the struct plan_exec is freed after it
 * returns. p and env->root must stay valid until then. */
int plan_execute(uv_loop_t *loop, struct plan *p, const struct step_env *env, const struct plan_exec_cbs *cbs,
		 void *userdata, struct plan_exec **ret);
/* Lets the current step finish, then skips the rest and calls on_done(failed=true)
 * if there was a rest to skip (on_done(false) when the current step was the
 * last one and did not fail). With hard, also cancels the current step (a
 * child gets SIGTERM, which normally fails it). */
void plan_execute_cancel(struct plan_exec *x, bool hard);

/* For step kinds: report progress and completion. */
void plan_step_output(struct plan_exec *x, const char *data, size_t len);
void plan_step_done(struct plan_exec *x, enum step_status status, const char *error_fmt, ...)
	__attribute__((format(printf, 3, 4)));
const struct step_env *plan_exec_env(struct plan_exec *x);
/* For step kinds that start children of their own (exec_start): reports the
 * child's process group, so that a restarted agentd ends what a killed one
 * left running (the exec kind does this itself). */
struct exec;
void plan_step_spawned(struct plan_exec *x, const struct exec *proc);
struct step *plan_exec_current(struct plan_exec *x);
/* Whether a step id has changed in this execution (for guards and kinds). */
bool plan_exec_step_changed(struct plan_exec *x, const char *id);

/* Dry run of the whole plan: {"steps": [{"kind","target","recipe","layer","action","diff"?,"error"?,
 * "message"?}], "gate"?: plan_gate_json()}; recipe and layer are null when unset, message is a note's.
 * A step whose describe fails has its error and action "fail". Guards are
 * evaluated as if every step before would do what it says (an action other
 * than "none" counts as a change); a guard that would stop a step gives
 * action "none". Diffs are not redacted: a step with a diff also has
 * "diff_cost" (the JSON text of its diff, escapes counted), "diff_secret":
 * true for a secret step, and "diff_private": true for a file that is not
 * world-readable, on disk now or with the step's mode; members for the
 * control server, which decides what each caller sees and strips them
 * (control_plan_view()). A diff that no caller could see within
 * PLAN_DIFFS_MAX is replaced by PLAN_DIFFS_NOTE already. */
json_t *plan_describe(struct plan *p, const struct step_env *env);
/* The JSON text of all the diffs of one plan shown together (escapes
 * counted): past it, a diff is replaced by PLAN_DIFFS_NOTE (formatted with
 * PLAN_DIFFS_MAX in MiB). Any local user may ask for a plan, and each diff
 * is bounded (DIFF_MAX_BYTES a side), but a 16 MiB stack holds many files. */
#define PLAN_DIFFS_MAX (4u << 20)
#define PLAN_DIFFS_NOTE "(diff not shown: the diffs of this plan would pass %u MiB)"
/* Bytes of file content the plan's file steps hold (each a copy): what
 * freeing the plan gives back, for a caller deciding on malloc_trim(). */
size_t plan_content_bytes(const struct plan *p);

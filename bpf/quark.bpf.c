// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * quark's BPF probes: process events from tracepoints only, so that they run
 * on kernels without kprobes or fentry (see docs: platform facts).
 *
 * Each hook is one line of the table at the end of this file; its macro
 * stamps the programs: one per flavour, tp_btf/ (BTF-typed tracepoints) and
 * raw_tp/ (kernels without them), of which userspace loads one. Both pass
 * the tracepoint's arguments as an array of u64 to the same handler, which
 * reads kernel memory with CO-RE probe reads only. Every loop is bounded by
 * a constant and every buffer offset masked, so that the verifiers of 5.10
 * to 7.x accept them.
 *
 * A program's name is its role for userspace (quark/backends/
 * ebpf_programs.py): ROLE__HOOK__FLAVOUR, where ROLE is core (the backend
 * cannot open without it), backup (see primary_skipped) or opt (skipped
 * and reported when the kernel refuses it), and FLAVOUR btf, raw, or tp
 * for a classic tracepoint, loaded with either flavour.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "proto.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile struct q_config cfg = {};

/* Puts every wire type of proto.h in the object's BTF (see there). */
struct q_wire *q_wire_btf __attribute__((unused));

#define DATA_MASK ((1 << 17) - 1) /* offsets into the variable area */
#define DATA_SIZE (DATA_MASK + 1 + Q_ARGS_MAX)

struct q_scratch {
	struct q_event ev;
	char data[DATA_SIZE];
	/* loop cursors, kept in map memory: the verifier does not track
	 * values there, so a cursor read back is just [0, mask] in every
	 * iteration and the loop's states prune instead of multiplying */
	u32 cursor;
	u32 used;
};

/* Forget what the verifier knows of v's range (see q_scratch.cursor). */
#define LAUNDER(s, field, v)                                   \
	({                                                     \
		*(volatile u32 *)&(s)->field = (v);            \
		*(volatile u32 *)&(s)->field;                  \
	})

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, Q_RING_SIZE);
} ringbuf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, Q_CNT_NUM);
	__type(key, u32);
	__type(value, u64);
} counters SEC(".maps");

/* Resized by userspace to nr_cpus * Q_NEST before load. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct q_scratch);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u32);
} nesting SEC(".maps");

/* Threads inside execve(2): their task_rename is the exec's, not a
 * SETPROCTITLE. Set at syscall entry, cleared at exec or syscall exit. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, u32);
} in_exec SEC(".maps");

/*
 * The kernel skips a program's run when the same program is already running
 * on that CPU (a preempted handler on a preemptible kernel; seen on 7.x):
 * the event would be lost, counted only in recursion_misses. So each core
 * tracepoint has two programs. The primary marks every task it handles; the
 * backup, attached after it, clears the mark, or handles the event itself
 * when the mark is absent because the primary's run was skipped.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, u64);
	__type(value, u32);
} handled SEC(".maps");

static __always_inline u64 handled_key(u32 kind, u32 tid)
{
	return ((u64)kind << 32) | tid;
}

static __always_inline void mark_handled(u32 kind, u32 tid)
{
	u64 key = handled_key(kind, tid);
	u32 one = 1;

	bpf_map_update_elem(&handled, &key, &one, BPF_ANY);
}

static __always_inline void count(u32 which);

/* In a backup program: true when the primary skipped this event. */
static __always_inline bool primary_skipped(u32 kind, u32 tid)
{
	u64 key = handled_key(kind, tid);

	if (bpf_map_lookup_elem(&handled, &key)) {
		bpf_map_delete_elem(&handled, &key);
		return false;
	}
	count(Q_CNT_RECOVERED);
	return true;
}

/* May this run handle the event? A primary always does, and marks it; a
 * backup only when its primary's run was skipped. */
static __always_inline bool claim(u32 kind, u32 tid, bool backup)
{
	if (backup)
		return primary_skipped(kind, tid);
	mark_handled(kind, tid);
	return true;
}

static __always_inline void count(u32 which)
{
	u64 *v = bpf_map_lookup_elem(&counters, &which);

	if (v)
		*v += 1;
}

/* A scratch buffer of this CPU, or NULL (counted) if all are busy. */
static __always_inline struct q_scratch *scratch_get(u32 **levelp)
{
	u32 zero = 0, key;
	u32 *level = bpf_map_lookup_elem(&nesting, &zero);
	struct q_scratch *s;

	if (!level)
		return NULL;
	if (*level >= Q_NEST) {
		count(Q_CNT_NOBUF);
		return NULL;
	}
	key = bpf_get_smp_processor_id() * Q_NEST + *level;
	s = bpf_map_lookup_elem(&scratch, &key);
	if (!s) {
		count(Q_CNT_NOBUF);
		return NULL;
	}
	*level += 1;
	*levelp = level;
	return s;
}

static __always_inline void scratch_put(u32 *level)
{
	if (*level > 0)
		*level -= 1;
}

/* Set (through its mmap) by a consumer that waits on the ring's fd and
 * found the ring empty: the next record wakes it, and clears this. One
 * wakeup per idle period, none per record while the consumer is busy. */
volatile u32 wake_next SEC(".data.wake") = 0;

/* Wake the reader only once enough waits (see cfg.wakeup_bytes), or when
 * it asked to be woken by the next record. */
static __always_inline u64 wakeup_flags(u64 size)
{
	u64 avail;

	if (wake_next) {
		wake_next = 0;
		return BPF_RB_FORCE_WAKEUP;
	}
	avail = bpf_ringbuf_query(&ringbuf, BPF_RB_AVAIL_DATA);
	return avail + size >= cfg.wakeup_bytes ? BPF_RB_FORCE_WAKEUP
						: BPF_RB_NO_WAKEUP;
}

/*
 * Every record goes to the ring through these two. The kernel refuses a
 * record when the ring is full (it compares the producer position with
 * the consumer's, which the reader publishes; see quark/sys/ringbuf.py
 * for how a torn write of it once made a nearly empty ring look full),
 * and on 6.15+ kernels, whose ring lock is an rqspinlock, also when
 * taking the lock fails. A refusal while the ring has room is tried once
 * more; a full ring is not retried.
 */
static __always_inline bool ring_has_room(u64 size)
{
	return bpf_ringbuf_query(&ringbuf, BPF_RB_AVAIL_DATA) + size + 8 <
	       bpf_ringbuf_query(&ringbuf, BPF_RB_RING_SIZE);
}

static __always_inline long ring_put(void *data, u64 size, u64 flags)
{
	long err = bpf_ringbuf_output(&ringbuf, data, size, flags);

	if (err && ring_has_room(size)) {
		err = bpf_ringbuf_output(&ringbuf, data, size, flags);
		if (!err)
			count(Q_CNT_RETRIED);
	}
	count(err ? Q_CNT_LOST : Q_CNT_SENT);
	return err;
}

/*
 * Folding. Most processes exec soon after their fork, and many exit soon
 * after that: three records, of which the fork's is spent by the exec's
 * at once (the consumer merges them). So a FORK record may be kept back
 * in this map, keyed by pid, and the process's next record carries it
 * instead:
 *  - its EXEC or EXIT record takes it out, and says when the fork was
 *    (q_event.fork_time): userspace makes the FORK raw event of it;
 *  - any other record of the pid sends it first (flush_fork), so that
 *    the consumer sees nothing of a process before its fork;
 *  - a fork no record came for is taken by userspace, which sweeps the
 *    map whenever it reads the ring (quark/backends/ebpf.py).
 * A fork is only kept back while the consumer has said, through
 * fold_until, that it will read again before that time: a consumer that
 * waits for the next record to wake it gets every fork at once. Taking an
 * entry out is a delete, which succeeds once: whoever deletes it (an
 * EXEC, an EXIT, a flush, or the sweep) owns the record. The map is not
 * preallocated, so that a deleted entry's memory stays valid until the
 * program returns (RCU) and a flush can send it after the delete.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, Q_FOLD_SLOTS);
	__type(key, u32);
	__type(value, struct q_fork_slot);
} folding SEC(".maps");

/* Set (through its mmap) by the consumer: until when (bpf_ktime_get_ns)
 * it will come back to read the ring and sweep the map; 0: it will not. */
volatile u64 fold_until SEC(".data.fold") = 0;

/* pid's kept-back FORK record out to the ring now, if it has one. */
static __always_inline void flush_fork(u32 pid)
{
	struct q_fork_slot *f;
	u64 size;

	if (!cfg.fold)
		return;
	f = bpf_map_lookup_elem(&folding, &pid);
	if (!f || bpf_map_delete_elem(&folding, &pid))
		return; /* none, or taken meanwhile */
	size = f->ev.size;
	if (size > sizeof(*f))
		size = sizeof(*f);
	ring_put(f, size, wakeup_flags(size));
	count(Q_CNT_FLUSHED);
}

/* The time of pid's kept-back fork, taken out of the map, or 0. */
static __always_inline u64 take_fork(u32 pid)
{
	struct q_fork_slot *f;
	u64 t;

	if (!cfg.fold)
		return 0;
	f = bpf_map_lookup_elem(&folding, &pid);
	if (!f)
		return 0;
	t = f->ev.time;
	if (bpf_map_delete_elem(&folding, &pid))
		return 0;
	count(Q_CNT_FOLDED);
	return t;
}

/* Every record but a kept-back fork's goes out through this one. All
 * records begin as struct q_event does (kind, size, time, pid, tid). */
static __always_inline long ring_output(void *data, u64 size, u64 flags)
{
	flush_fork(((struct q_event *)data)->pid);
	return ring_put(data, size, flags);
}

/* A record of a fixed size reserved for one of pid, or NULL (counted
 * lost). */
#define ring_reserve(size, pid)                                         \
	({                                                              \
		void *r_;                                               \
		flush_fork(pid);                                        \
		r_ = bpf_ringbuf_reserve(&ringbuf, (size), 0);          \
		if (!r_ && ring_has_room(size)) {                       \
			r_ = bpf_ringbuf_reserve(&ringbuf, (size), 0);  \
			if (r_)                                         \
				count(Q_CNT_RETRIED);                   \
		}                                                       \
		if (!r_)                                                \
			count(Q_CNT_LOST);                              \
		r_;                                                     \
	})

static __always_inline void emit(struct q_scratch *s, u32 data_len)
{
	u64 size = sizeof(struct q_event) + (data_len & DATA_MASK);

	/* the cursors after data[] are not part of the record */
	u64 flags;

	if (size > sizeof(struct q_event) + DATA_SIZE)
		size = sizeof(struct q_event) + DATA_SIZE;
	s->ev.size = size;
	flags = wakeup_flags(size);
	ring_output(s, size, flags);
}

static __always_inline void fill_task(struct q_event *e,
				      struct task_struct *task)
{
	const struct cred *cred = BPF_CORE_READ(task, cred);
	struct signal_struct *signal = BPF_CORE_READ(task, signal);
	struct nsproxy *nsp = BPF_CORE_READ(task, nsproxy);
	struct tty_struct *tty;

	e->pid = BPF_CORE_READ(task, tgid);
	e->tid = BPF_CORE_READ(task, pid);
	/* kernel_cap_t is u32[2] before 6.3 and u64 since: 8 bytes either way */
	bpf_core_read(&e->cap_inheritable, 8, &cred->cap_inheritable);
	bpf_core_read(&e->cap_permitted, 8, &cred->cap_permitted);
	bpf_core_read(&e->cap_effective, 8, &cred->cap_effective);
	bpf_core_read(&e->cap_bset, 8, &cred->cap_bset);
	bpf_core_read(&e->cap_ambient, 8, &cred->cap_ambient);
	e->start_time = BPF_CORE_READ(task, start_boottime);
	e->exe_inode = BPF_CORE_READ(task, mm, exe_file, f_inode, i_ino);
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = BPF_CORE_READ(cred, uid.val);
	e->gid = BPF_CORE_READ(cred, gid.val);
	e->suid = BPF_CORE_READ(cred, suid.val);
	e->sgid = BPF_CORE_READ(cred, sgid.val);
	e->euid = BPF_CORE_READ(cred, euid.val);
	e->egid = BPF_CORE_READ(cred, egid.val);
	e->pgid = BPF_CORE_READ(signal, pids[PIDTYPE_PGID], numbers[0].nr);
	e->sid = BPF_CORE_READ(signal, pids[PIDTYPE_SID], numbers[0].nr);
	tty = BPF_CORE_READ(signal, tty);
	if (tty) {
		e->tty_major = BPF_CORE_READ(tty, driver, major);
		e->tty_minor = BPF_CORE_READ(tty, driver, minor_start) +
			       BPF_CORE_READ(tty, index);
	} else {
		e->tty_major = 0;
		e->tty_minor = 0;
	}
	e->uts_inonum = BPF_CORE_READ(nsp, uts_ns, ns.inum);
	e->ipc_inonum = BPF_CORE_READ(nsp, ipc_ns, ns.inum);
	e->mnt_inonum = BPF_CORE_READ(nsp, mnt_ns, ns.inum);
	e->net_inonum = BPF_CORE_READ(nsp, net_ns, ns.inum);
	bpf_core_read_str(e->comm, sizeof(e->comm), &task->comm);
	e->exit_code = 0;
}

static __always_inline void start(struct q_scratch *s, u32 kind,
				  struct task_struct *task)
{
	struct q_event *e = &s->ev;

	e->kind = kind;
	e->time = bpf_ktime_get_ns();
	e->id_change = 0;
	e->flags = 0;
	e->pad = 0;
	e->fork_time = 0;
	fill_task(e, task);
#pragma unroll
	for (int i = 0; i < Q_VAR_NUM; i++)
		e->len[i] = 0;
}

/*
 * Path components from (dentry, vfsmount) up to the task's root (fs->root,
 * as d_path and /proc/PID/cwd do: a chrooted process sees paths from its
 * root), crossing mounts, leaf first, each NUL-terminated, at data[off...].
 * Returns the new offset. Sets trunc_flag when the path is deeper or
 * longer than kept.
 */
static __always_inline u32 put_path(struct q_scratch *s, u32 off,
				    struct dentry *dentry,
				    struct vfsmount *vfsmnt,
				    struct fs_struct *fs, u32 trunc_flag)
{
	struct dentry *top = BPF_CORE_READ(fs, root.dentry);
	void *top_mnt = BPF_CORE_READ(fs, root.mnt);
	u64 mnt_off = bpf_core_field_offset(struct mount, mnt);
	u32 used = 0;
	struct mount *mnt;
	long n;
	int i;

	mnt = (void *)vfsmnt - mnt_off;
#pragma clang loop unroll(disable)
	for (i = 0; i < Q_PATH_DEPTH; i++) {
		struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
		struct dentry *root = BPF_CORE_READ(mnt, mnt.mnt_root);
		const unsigned char *name;

		if (!dentry)
			return off;
		if (dentry == top && (void *)mnt + mnt_off == top_mnt)
			return off; /* the task's root */
		if (dentry == root || dentry == parent) {
			struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

			if (!up || up == mnt || dentry != root)
				return off; /* the global root */
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = up;
			continue;
		}
		if (used > Q_PATH_MAX - Q_NAME_MAX) {
			s->ev.flags |= trunc_flag;
			return off;
		}
		name = BPF_CORE_READ(dentry, d_name.name);
		n = bpf_probe_read_kernel_str(&s->data[off & DATA_MASK],
					      Q_NAME_MAX, name);
		if (n <= 0)
			return off;
		/* masked, so that every iteration's state is the same range
		 * and the verifier prunes instead of exploring 2^depth paths */
		off = LAUNDER(s, cursor, off + n) & DATA_MASK;
		used = LAUNDER(s, used, used + n) & 0x1FFF;
		dentry = parent;
	}
	s->ev.flags |= trunc_flag;
	return off;
}

static __always_inline struct kernfs_node *kn_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(struct kernfs_node___new, __parent))
		return BPF_CORE_READ((struct kernfs_node___new *)kn, __parent);
	return BPF_CORE_READ((struct kernfs_node___old *)kn, parent);
}

#define Q_SUBSYS_MAX 64 /* CGROUP_SUBSYS_COUNT is 14 to 16 */

/* The task's cgroup on the hierarchy the records read: v2's, or on a
 * legacy layout the v1 controller's that /proc/PID/cgroup is read for. */
static __always_inline struct cgroup *task_cgroup(struct task_struct *task)
{
	struct css_set *cs = BPF_CORE_READ(task, cgroups);
	struct cgroup_subsys_state *css = NULL;
	u32 ssid = cfg.cgroup_v1;

	if (!ssid)
		return BPF_CORE_READ(cs, dfl_cgrp);
	ssid = (ssid - 1) & (Q_SUBSYS_MAX - 1);
	bpf_core_read(&css, sizeof(css),
		      (void *)cs + bpf_core_field_offset(struct css_set, subsys) +
			      ssid * sizeof(void *));
	return css ? BPF_CORE_READ(css, cgroup) : NULL;
}

/* cgroup path components, leaf first, as put_path. */
static __always_inline u32 put_cgroup(struct q_scratch *s, u32 off,
				      struct task_struct *task)
{
	struct kernfs_node *kn = BPF_CORE_READ(task_cgroup(task), kn);
	u32 used = 0;
	long n;
	int i;

#pragma clang loop unroll(disable)
	for (i = 0; i < Q_PATH_DEPTH; i++) {
		struct kernfs_node *parent;
		const char *name;

		if (!kn)
			return off;
		parent = kn_parent(kn);
		if (!parent)
			return off; /* the root's own name is not part of it */
		if (used > Q_PATH_MAX - Q_NAME_MAX) {
			s->ev.flags |= Q_F_CGROUP_TRUNC;
			return off;
		}
		name = BPF_CORE_READ(kn, name);
		n = bpf_probe_read_kernel_str(&s->data[off & DATA_MASK],
					      Q_NAME_MAX, name);
		if (n <= 0)
			return off;
		off = LAUNDER(s, cursor, off + n) & DATA_MASK;
		used = LAUNDER(s, used, used + n) & 0x1FFF;
		kn = parent;
	}
	s->ev.flags |= Q_F_CGROUP_TRUNC;
	return off;
}

/* Copy user memory [from, to) up to max bytes; returns bytes copied. */
static __always_inline u32 put_user(struct q_scratch *s, u32 off,
				    unsigned long from, unsigned long to,
				    u32 max, u32 trunc_flag)
{
	unsigned long len;

	if (!from || to <= from)
		return 0;
	len = to - from;
	if (len > max) {
		len = max;
		s->ev.flags |= trunc_flag;
	}
	len &= (Q_ARGS_MAX - 1);
	if (len == 0)
		return 0;
	if (bpf_probe_read_user(&s->data[off & DATA_MASK], len, (void *)from))
		return 0;
	return len;
}

static __always_inline u32 put_cwd(struct q_scratch *s, u32 off,
				   struct task_struct *task)
{
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	u32 end;

	if (!fs)
		return off;
	end = put_path(s, off, BPF_CORE_READ(fs, pwd.dentry),
		       BPF_CORE_READ(fs, pwd.mnt), fs, Q_F_CWD_TRUNC);
	s->ev.len[Q_VAR_CWD] = (end - off) & DATA_MASK;
	return end;
}

static __always_inline u32 put_cgroup_var(struct q_scratch *s, u32 off,
					  struct task_struct *task)
{
	u32 end = put_cgroup(s, off, task);

	s->ev.len[Q_VAR_CGROUP] = (end - off) & DATA_MASK;
	return end;
}

/* A scratch buffer with the record's header and task data filled in, or
 * NULL (counted) when all of this CPU's are busy. */
static __always_inline struct q_scratch *begin(u32 kind,
					       struct task_struct *task,
					       u32 **level)
{
	struct q_scratch *s = scratch_get(level);

	if (s)
		start(s, kind, task);
	return s;
}

/* The record out, with data_len bytes of variable areas, and its buffer
 * back. */
static __always_inline void finish(struct q_scratch *s, u32 data_len,
				   u32 *level)
{
	emit(s, data_len);
	scratch_put(level);
}

/* finish() after the cwd and cgroup areas, which end every FORK and EXEC. */
static __always_inline void finish_paths(struct q_scratch *s, u32 off,
					 struct task_struct *task, u32 *level)
{
	off = put_cwd(s, off, task);
	off = put_cgroup_var(s, off, task);
	finish(s, off, level);
}

/* --- fork -------------------------------------------------------------- */

/* Keeps a process's FORK record back (see folding) when the consumer will
 * read again soon and the record fits; false: send it now. */
static __always_inline bool defer_fork(struct q_scratch *s, u32 data_len)
{
	u64 until = fold_until;

	if (!cfg.fold || !until || s->ev.tid != s->ev.pid ||
	    data_len > Q_FOLD_DATA || bpf_ktime_get_ns() >= until)
		return false;
	s->ev.size = sizeof(struct q_event) + data_len;
	if (bpf_map_update_elem(&folding, &s->ev.pid, s, BPF_NOEXIST))
		return false; /* full */
	count(Q_CNT_DEFERRED);
	return true;
}

/* sched_process_fork(parent, child) */
static __always_inline int on_fork(u64 *args, bool backup)
{
	struct task_struct *child = (void *)args[1];
	struct q_scratch *s;
	u32 *level, off = 0, tid = BPF_CORE_READ(child, pid);

	if (BPF_CORE_READ(child, flags) & PF_KTHREAD)
		return 0;
	if (!cfg.thread_events && tid != BPF_CORE_READ(child, tgid))
		return 0;
	if (!claim(Q_FORK, tid, backup))
		return 0;
	/* the parent's own fork first: its children never go before it */
	flush_fork(BPF_CORE_READ(child, real_parent, tgid));
	s = begin(Q_FORK, child, &level);
	if (!s)
		return 0;
	off = put_cwd(s, off, child);
	off = put_cgroup_var(s, off, child);
	if (defer_fork(s, off)) {
		scratch_put(level);
		return 0;
	}
	finish(s, off, level);
	return 0;
}

/* --- exec -------------------------------------------------------------- */

/* sched_process_exec(task, old_pid, bprm) */
static __always_inline int on_exec(u64 *args, bool backup)
{
	struct task_struct *task = (void *)args[0];
	struct q_scratch *s;
	struct mm_struct *mm;
	struct file *exe;
	u32 *level, off = 0, n, tid;

	tid = BPF_CORE_READ(task, pid);
	if (!claim(Q_EXEC, tid, backup))
		return 0;
	bpf_map_delete_elem(&in_exec, &tid);
	s = begin(Q_EXEC, task, &level);
	if (!s)
		return 0;
	s->ev.fork_time = take_fork(s->ev.pid);
	mm = BPF_CORE_READ(task, mm);
	exe = BPF_CORE_READ(mm, exe_file);
	if (exe) {
		n = put_path(s, off, BPF_CORE_READ(exe, f_path.dentry),
			     BPF_CORE_READ(exe, f_path.mnt),
			     BPF_CORE_READ(task, fs), Q_F_EXE_TRUNC);
		s->ev.len[Q_VAR_EXE] = (n - off) & DATA_MASK;
		off = n;
	}
	n = put_user(s, off, BPF_CORE_READ(mm, arg_start),
		     BPF_CORE_READ(mm, arg_end), Q_ARGS_MAX - 1, Q_F_ARGS_TRUNC);
	s->ev.len[Q_VAR_ARGS] = n;
	off = (off + n) & DATA_MASK;
	if (cfg.max_env) {
		n = put_user(s, off, BPF_CORE_READ(mm, env_start),
			     BPF_CORE_READ(mm, env_end), cfg.max_env,
			     Q_F_ENV_TRUNC);
		s->ev.len[Q_VAR_ENV] = n;
		off = (off + n) & DATA_MASK;
	}
	finish_paths(s, off, task, level);
	return 0;
}

/* --- exit -------------------------------------------------------------- */

/* sched_process_exit(task) */
static __always_inline int on_exit(u64 *args, bool backup)
{
	struct task_struct *task = (void *)args[0];
	struct signal_struct *signal = BPF_CORE_READ(task, signal);
	int live = BPF_CORE_READ(signal, live.counter);
	u32 *level, tid = BPF_CORE_READ(task, pid);
	struct q_scratch *s;
	int code;

	if (BPF_CORE_READ(task, flags) & PF_KTHREAD)
		return 0;
	if (live != 0 && !cfg.thread_events)
		return 0;
	if (!claim(Q_EXIT, tid, backup))
		return 0;
	s = begin(Q_EXIT, task, &level);
	if (!s)
		return 0;
	code = BPF_CORE_READ(task, exit_code);
	if (BPF_CORE_READ(signal, flags) & SIGNAL_GROUP_EXIT)
		code = BPF_CORE_READ(signal, group_exit_code);
	s->ev.exit_code = code;
	if (live == 0) {
		s->ev.tid = s->ev.pid; /* the process, not the last thread */
		s->ev.fork_time = take_fork(s->ev.pid);
	}
	if (s->ev.fork_time) {
		/* the fork's areas: its cwd and cgroup (exit_fs and
		 * cgroup_exit come after this tracepoint) */
		finish_paths(s, 0, task, level);
		return 0;
	}
	finish(s, 0, level);
	return 0;
}

/* --- comm (SETPROCTITLE) ----------------------------------------------- */

/* task_rename(task, comm) */
static __always_inline int on_rename(u64 *args, bool backup)
{
	struct task_struct *task = (void *)args[0];
	const char *comm = (const char *)args[1];
	struct q_scratch *s;
	u32 *level, tid = BPF_CORE_READ(task, pid);

	if (bpf_map_lookup_elem(&in_exec, &tid))
		return 0;
	if (BPF_CORE_READ(task, flags) & PF_KTHREAD)
		return 0;
	if (!cfg.thread_events && tid != BPF_CORE_READ(task, tgid))
		return 0;
	s = begin(Q_COMM, task, &level);
	if (!s)
		return 0;
	bpf_probe_read_kernel_str(s->ev.comm, sizeof(s->ev.comm), comm);
	finish(s, 0, level);
	return 0;
}

/* --- exec markers (syscall tracepoints) -------------------------------- */

static __always_inline int exec_enter(void *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid(), one = 1;

	bpf_map_update_elem(&in_exec, &tid, &one, BPF_ANY);
	return 0;
}

static __always_inline int exec_exit(void *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();

	bpf_map_delete_elem(&in_exec, &tid);
	return 0;
}

/* --- credential and session changes ------------------------------------ */

static __always_inline int on_id_change(void *ctx, u32 what)
{
	long ret = ((struct sys_exit_args *)ctx)->ret;
	struct task_struct *task = (void *)bpf_get_current_task();
	u64 pid_tgid = bpf_get_current_pid_tgid();
	struct q_scratch *s;
	u32 *level;

	if (what == Q_ID_SETSID ? ret <= 0 : ret != 0)
		return 0; /* failed */
	if (!cfg.thread_events && (u32)pid_tgid != (u32)(pid_tgid >> 32))
		return 0; /* glibc repeats set*id in every thread */
	s = begin(Q_ID_CHANGE, task, &level);
	if (!s)
		return 0;
	s->ev.id_change = what;
	finish(s, 0, level);
	return 0;
}

/* --- getpid(2) (QQ.GETPID) ---------------------------------------------- */

/*
 * A task record per getpid(2), for benchmarks: the cheapest syscall there
 * is, so the figure is the cost of a record end to end. The queue's own
 * calls are skipped, as they would feed themselves.
 */
static __always_inline int on_getpid(void *ctx)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	u64 pid_tgid = bpf_get_current_pid_tgid();
	struct q_scratch *s;
	u32 *level;

	if ((u32)(pid_tgid >> 32) == cfg.self_tgid)
		return 0;
	s = begin(Q_GETPID, task, &level);
	if (!s)
		return 0;
	finish(s, 0, level);
	return 0;
}

/* --- cgroup moves -------------------------------------------------------- */

/*
 * cgroup_attach_task(dst_cgrp, path, task, threadgroup), once a move has
 * succeeded: a task record of the moved process with its new cgroup area.
 * Every other record reads the cgroup as it is when it is made, so this
 * is what tells a move made after the process's last exec (a runtime that
 * moves its child late): the engine folds it into that exec while it is
 * held. Only moves on the hierarchy the records read (task_cgroup), and
 * only of a thread group's leader, whose cgroup /proc/PID/cgroup shows.
 */
static __always_inline int on_cgroup_move(u64 *args, bool unused)
{
	struct cgroup *dst = (void *)args[0];
	struct task_struct *task = (void *)args[2];
	struct q_scratch *s;
	u32 *level;

	if (task_cgroup(task) != dst)
		return 0; /* another hierarchy's move */
	if (BPF_CORE_READ(task, pid) != BPF_CORE_READ(task, tgid))
		return 0; /* one thread of a threaded cgroup */
	s = begin(Q_CGROUP, task, &level);
	if (!s)
		return 0;
	finish(s, put_cgroup_var(s, 0, task), level);
	return 0;
}

/* --- TCP connections (QQ.SOCK_CONN) ------------------------------------ */

/*
 * connect(2) and accept(2) are seen at their syscall exits, where the new
 * connection's socket is reached from the fd (the host has no kprobes or
 * fentry: tcp_v4_connect and inet_csk_accept cannot be hooked there). The
 * close is seen by cgroup/sock_release on the cgroup v2 root: inet_release
 * runs it in the context of the task that drops the last reference, by
 * close(2), by exit or by SIGKILL alike, before tcp_close.
 */

/* connect(2)'s fd, from the syscall's entry to its exit, by thread */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, u32);
} connect_fd SEC(".maps");

/* The file behind fd in the current task's table, or NULL. */
static __always_inline struct file *fd_file(u64 fd)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;

	if (fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

/* The socket behind fd in the current task's table, or NULL. */
static __always_inline struct sock *fd_sock(u64 fd)
{
	struct file *file = fd_file(fd);
	struct socket *sock;

	if (!file)
		return NULL;
	sock = BPF_CORE_READ(file, private_data);
	if (!sock || BPF_CORE_READ(sock, file) != file)
		return NULL; /* not a socket's file */
	return BPF_CORE_READ(sock, sk);
}

static __always_inline bool is_tcp(struct sock *sk)
{
	u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	return (family == AF_INET || family == AF_INET6) &&
	       BPF_CORE_READ(sk, sk_type) == SOCK_STREAM &&
	       BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP;
}

static __always_inline void emit_sock(struct sock *sk, u32 op, u32 flags)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	struct q_sock_event *e;

	e = ring_reserve(sizeof(*e), pid_tgid >> 32);
	if (!e) {
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = Q_SOCK;
	e->size = sizeof(*e);
	e->time = bpf_ktime_get_ns();
	e->pid = pid_tgid >> 32;
	e->tid = (u32)pid_tgid;
	e->op = op;
	e->flags = flags;
	e->family = family;
	e->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->net_inonum = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (family == AF_INET6) {
		bpf_core_read(e->local_addr, 16,
			      &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(e->remote_addr, 16,
			      &sk->__sk_common.skc_v6_daddr);
	} else {
		bpf_core_read(e->local_addr, 4,
			      &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(e->remote_addr, 4, &sk->__sk_common.skc_daddr);
	}
	if (op == Q_SOCK_CLOSE) {
		struct tcp_sock *tp = (void *)sk;
		u8 state = BPF_CORE_READ(sk, __sk_common.skc_state);
		u64 received = BPF_CORE_READ(tp, bytes_received);

		/* bytes_received counts the sequence number a peer's FIN
		 * takes: not a byte of data. The FIN is in when the state
		 * says so, or when a connection went to CLOSE with no error
		 * (FIN_WAIT2 -> TIME_WAIT hands off and closes the socket). */
		if (received &&
		    (state == TCP_CLOSE_WAIT || state == TCP_CLOSING ||
		     state == TCP_LAST_ACK ||
		     (state == TCP_CLOSE && !BPF_CORE_READ(sk, sk_err))))
			received -= 1;
		e->bytes_sent = BPF_CORE_READ(tp, bytes_sent);
		e->bytes_received = received;
	}
	bpf_ringbuf_submit(e, wakeup_flags(sizeof(*e)));
	count(Q_CNT_SENT);
}

static __always_inline int connect_enter(void *ctx)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u32 fd = ((struct sys_enter_args *)ctx)->args[0];

	bpf_map_update_elem(&connect_fd, &tid, &fd, BPF_ANY);
	return 0;
}

static __always_inline int connect_exit(void *ctx)
{
	long ret = ((struct sys_exit_args *)ctx)->ret;
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u32 *fdp = bpf_map_lookup_elem(&connect_fd, &tid);
	struct sock *sk;
	u32 fd;

	if (!fdp)
		return 0;
	fd = *fdp;
	bpf_map_delete_elem(&connect_fd, &tid);
	if (ret != 0 && ret != -EINPROGRESS)
		return 0; /* refused, unreachable, ... */
	sk = fd_sock(fd);
	if (!sk || !is_tcp(sk))
		return 0;
	/* A non-blocking connect over loopback can be refused before the
	 * syscall returns -EINPROGRESS: the socket is back in CLOSE, its
	 * port released. That attempt is over, not established. */
	if (BPF_CORE_READ(sk, __sk_common.skc_state) == TCP_CLOSE ||
	    !BPF_CORE_READ(sk, __sk_common.skc_num))
		return 0;
	emit_sock(sk, Q_SOCK_CONNECT, 0);
	return 0;
}

static __always_inline int accept_exit(void *ctx)
{
	long ret = ((struct sys_exit_args *)ctx)->ret;
	struct sock *sk;

	if (ret < 0)
		return 0;
	sk = fd_sock(ret);
	if (sk && is_tcp(sk))
		emit_sock(sk, Q_SOCK_ACCEPT, 0);
	return 0;
}

/*
 * The context of a cgroup sock program is the struct sock itself (the
 * kernel runs it with the socket as ctx; struct bpf_sock is a view): the
 * members it lacks, the byte counts, are read from it as from any kernel
 * pointer.
 */
SEC("cgroup/sock_release")
int sock__release__cg(struct bpf_sock *ctx)
{
	struct sock *sk = (void *)ctx;
	struct task_struct *task;
	u32 flags = 0;

	if (ctx->protocol != IPPROTO_TCP || ctx->type != SOCK_STREAM)
		return 1;
	if (ctx->family != AF_INET && ctx->family != AF_INET6)
		return 1;
	/* never connected nor listening: nothing was reported of it */
	if (!BPF_CORE_READ(sk, __sk_common.skc_dport) &&
	    BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_LISTEN)
		return 1;
	task = (void *)bpf_get_current_task();
	if (BPF_CORE_READ(task, flags) & PF_EXITING)
		flags |= Q_SOCK_AT_EXIT;
	emit_sock(sk, Q_SOCK_CLOSE, flags);
	return 1;
}

/* --- DNS packets (QQ.DNS) ---------------------------------------------- */

/*
 * cgroup_skb programs on the cgroup v2 root see every packet a local
 * socket sends or receives, from its IP header. They run in softirq as
 * often as not, so the process is the socket's owner, kept by cookie from
 * the socket's creation and its last sendmsg/recvmsg/connect.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, u64);
	__type(value, u32);
} sock_owner SEC(".maps");

struct q_packet_buf {
	struct q_packet_event ev;
	char data[Q_PACKET_MAX];
};

static __always_inline void own(u64 cookie)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;

	bpf_map_update_elem(&sock_owner, &cookie, &tgid, BPF_ANY);
}

SEC("cgroup/sock_create")
int dns__create__cg(struct bpf_sock *ctx)
{
	if (ctx->protocol == IPPROTO_UDP)
		own(bpf_get_socket_cookie(ctx));
	return 1;
}

#define Q_OWNER(hook, sec)                                               \
	SEC("cgroup/" #sec)                                              \
	int dns__##hook##__cg(struct bpf_sock_addr *ctx)                 \
	{                                                                \
		own(bpf_get_socket_cookie(ctx));                         \
		return 1;                                                \
	}

Q_OWNER(sendmsg4, sendmsg4)
Q_OWNER(sendmsg6, sendmsg6)
Q_OWNER(recvmsg4, recvmsg4)
Q_OWNER(recvmsg6, recvmsg6)
Q_OWNER(connect4, connect4)
Q_OWNER(connect6, connect6)

static __always_inline int on_skb(struct __sk_buff *skb, u32 direction)
{
	u32 len = skb->len, cap, off, pid;
	u64 cookie;
	u32 *owner;
	struct q_packet_buf *b;
	u8 ip[20];
	u16 ports[2];

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, 0, ip, 20) || ip[9] != IPPROTO_UDP)
			return 1;
		off = (ip[0] & 0xf) * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, 0, ip, 8) || ip[6] != IPPROTO_UDP)
			return 1;
		off = 40; /* extension headers: not followed */
	} else {
		return 1;
	}
	if (bpf_skb_load_bytes(skb, off, ports, 4))
		return 1;
	if (ports[0] != bpf_htons(53) && ports[1] != bpf_htons(53))
		return 1;
	cookie = bpf_get_socket_cookie(skb);
	owner = bpf_map_lookup_elem(&sock_owner, &cookie);
	pid = owner ? *owner : 0;
	b = ring_reserve(sizeof(*b), pid);
	if (!b) {
		return 1;
	}
	/* len is at least the headers read above; the verifier must see
	 * cap in [1, Q_PACKET_MAX] in the register passed */
	cap = len < Q_PACKET_MAX ? len : Q_PACKET_MAX;
	cap -= 1;
	asm volatile("%0 &= %1" : "+r"(cap) : "i"(Q_PACKET_MAX - 1));
	cap += 1;
	if (bpf_skb_load_bytes(skb, 0, b->data, cap)) {
		bpf_ringbuf_discard(b, 0);
		count(Q_CNT_LOST);
		return 1;
	}
	b->ev.kind = Q_PACKET;
	b->ev.size = sizeof(b->ev) + cap;
	b->ev.time = bpf_ktime_get_ns();
	b->ev.pid = pid;
	b->ev.tid = b->ev.pid;
	b->ev.direction = direction;
	b->ev.orig_len = len;
	b->ev.cap_len = cap;
	b->ev.pad = 0;
	bpf_ringbuf_submit(b, wakeup_flags(sizeof(*b)));
	count(Q_CNT_SENT);
	return 1; /* never drop: we only watch */
}

SEC("cgroup_skb/egress")
int dns__egress__cg(struct __sk_buff *skb)
{
	return on_skb(skb, Q_PACKET_EGRESS);
}

SEC("cgroup_skb/ingress")
int dns__ingress__cg(struct __sk_buff *skb)
{
	return on_skb(skb, Q_PACKET_INGRESS);
}

/* --- files (QQ.FILE) and shared memory (QQ.SHM) ------------------------ */

/*
 * Syscall tracepoints only (the host has no kprobes nor fentry). An
 * operation through an fd is read from the file at the syscall's exit, when
 * it is known to have succeeded: its path from the dentry, and its inode.
 * One by path is read at the entry, while the name can still be read, and
 * the exit sends its result (see q_file_event in proto.h).
 */

/* An fd syscall's fd and what it does, from its entry to its exit. */
struct fd_op {
	u32 fd;
	u32 op;
	u32 change;
	u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, struct fd_op);
} fd_ops SEC(".maps");

/* Threads in a syscall whose entry sent a Q_FF_PENDING record. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, u32);
} pending SEC(".maps");

/*
 * Volume: one MODIFY per (process, file) per cfg.file_dedup_ns. A
 * process's generation moves on with each of its creates, moves and
 * removes, so that a write after one of those is told again.
 */
struct dedup_key {
	u64 inode; /* the struct inode's address: unique while in use */
	u32 tgid;
	u32 gen;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct dedup_key);
	__type(value, u64);
} modified SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, u32);
} file_gen SEC(".maps");

#define FILE_HDR ((u32)sizeof(struct q_file_event))

/* Not the consumer itself: what it does to files would loop back. */
static __always_inline bool file_watched(void)
{
	return (u32)(bpf_get_current_pid_tgid() >> 32) != cfg.self_tgid;
}

static __always_inline u32 gen_of(u32 tgid)
{
	u32 *g = bpf_map_lookup_elem(&file_gen, &tgid);

	return g ? *g : 0;
}

static __always_inline void next_gen(void)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	u32 g = gen_of(tgid) + 1;

	bpf_map_update_elem(&file_gen, &tgid, &g, BPF_ANY);
}

#define NS 1000000000ULL

/* ns since the epoch of the inode's [amc]time, wherever this kernel
 * keeps it */
#define INODE_TIME(ino, t)                                                 \
	({                                                                 \
		u64 _v;                                                    \
		if (bpf_core_field_exists(struct inode___split,            \
					  i_##t##time_sec)) {              \
			struct inode___split *_i = (void *)(ino);          \
			_v = BPF_CORE_READ(_i, i_##t##time_sec) * NS +     \
			     BPF_CORE_READ(_i, i_##t##time_nsec);          \
		} else if (bpf_core_field_exists(struct inode___ts_hidden, \
						 __i_##t##time)) {         \
			struct inode___ts_hidden *_i = (void *)(ino);      \
			_v = BPF_CORE_READ(_i, __i_##t##time.tv_sec) * NS + \
			     BPF_CORE_READ(_i, __i_##t##time.tv_nsec);     \
		} else {                                                   \
			struct inode___ts *_i = (void *)(ino);             \
			_v = BPF_CORE_READ(_i, i_##t##time.tv_sec) * NS +  \
			     BPF_CORE_READ(_i, i_##t##time.tv_nsec);       \
		}                                                          \
		_v;                                                        \
	})

static __always_inline void put_stat(struct q_file_event *f,
				     struct inode *ino)
{
	if (!ino)
		return;
	f->flags |= Q_FF_STAT;
	f->inode = BPF_CORE_READ(ino, i_ino);
	f->mode = BPF_CORE_READ(ino, i_mode);
	f->uid = BPF_CORE_READ(ino, i_uid.val);
	f->gid = BPF_CORE_READ(ino, i_gid.val);
	f->fsize = BPF_CORE_READ(ino, i_size);
	f->atime = INODE_TIME(ino, a);
	f->mtime = INODE_TIME(ino, m);
	f->ctime = INODE_TIME(ino, c);
}

/* The record's header, at the start of the scratch data area (file records
 * are sent from there, not from s->ev, which only keeps the truncation
 * bits put_path sets). */
static __always_inline struct q_file_event *
file_start(struct q_scratch *s, u32 op, u32 change)
{
	struct q_file_event *f = (void *)s->data;
	u64 pid_tgid = bpf_get_current_pid_tgid();

	__builtin_memset(f, 0, sizeof(*f));
	f->kind = Q_FILE;
	f->time = bpf_ktime_get_ns();
	f->pid = pid_tgid >> 32;
	f->tid = (u32)pid_tgid;
	f->op = op;
	f->change = change;
	s->ev.flags = 0;
	return f;
}

static __always_inline void file_emit(struct q_scratch *s, u32 end,
				      u32 *level)
{
	struct q_file_event *f = (void *)s->data;
	u64 size = end & DATA_MASK;

	if (size < FILE_HDR)
		size = FILE_HDR;
	f->flags |= s->ev.flags;
	f->size = size;
	ring_output(s->data, size, wakeup_flags(size));
	scratch_put(level);
}

/* The components of file's path (as put_path) at off; the new offset. */
static __always_inline u32 put_file(struct q_scratch *s, u32 off,
				    struct file *file, u32 trunc)
{
	struct task_struct *task = (void *)bpf_get_current_task();

	return put_path(s, off, BPF_CORE_READ(file, f_path.dentry),
			BPF_CORE_READ(file, f_path.mnt),
			BPF_CORE_READ(task, fs), trunc);
}

/*
 * A name as a process gave it, relative to dfd: the directory's components
 * (none for an absolute name) in area dir, then the name in area dir + 1.
 * A part that cannot be read sets trunc: the path is then unknown.
 */
static __always_inline u32 put_name(struct q_scratch *s, u32 off,
				    struct q_file_event *f, u32 dir,
				    long dfd, const char *name, u32 trunc)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	u32 end = off;
	char c = 0;
	long n;

	if (bpf_probe_read_user(&c, 1, name)) {
		s->ev.flags |= trunc;
		return off;
	}
	if (c != '/') {
		if (dfd == AT_FDCWD) {
			end = put_path(s, off, BPF_CORE_READ(fs, pwd.dentry),
				       BPF_CORE_READ(fs, pwd.mnt), fs, trunc);
		} else {
			struct file *at = fd_file(dfd);

			if (at)
				end = put_file(s, off, at, trunc);
			else
				s->ev.flags |= trunc;
		}
	}
	if (dir < Q_FV_NUM)
		f->len[dir] = (end - off) & DATA_MASK;
	n = bpf_probe_read_user_str(&s->data[end & DATA_MASK], Q_PATH_MAX,
				    name);
	if (n <= 0) {
		s->ev.flags |= trunc;
		n = 0;
	}
	if (dir + 1 < Q_FV_NUM)
		f->len[dir + 1] = n;
	return (end + n) & DATA_MASK;
}

/* --- through an fd: create, write, truncate, chmod, chown --------------- */

/* A mount on a directory named "shm" (/dev/shm, in a container too),
 * through mounts stacked there: not every tmpfs root's opens (/tmp's,
 * /run's) are sent to userspace. */
static __always_inline bool mounted_at_shm(struct vfsmount *vfsmnt)
{
	u64 mnt_off = bpf_core_field_offset(struct mount, mnt);
	struct mount *mnt = (void *)vfsmnt - mnt_off;
	char at[4] = {};

#pragma unroll
	for (int i = 0; i < 4; i++) {
		struct dentry *mp = BPF_CORE_READ(mnt, mnt_mountpoint);
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

		if (up != mnt && mp == BPF_CORE_READ(up, mnt.mnt_root)) {
			mnt = up; /* stacked on another mount's root */
			continue;
		}
		if (bpf_probe_read_kernel(at, sizeof(at),
					  BPF_CORE_READ(mp, d_name.name)))
			return false;
		return at[0] == 's' && at[1] == 'h' && at[2] == 'm' && !at[3];
	}
	return false;
}

static __always_inline int open_exit(void *ctx)
{
	long ret = ((struct sys_exit_args *)ctx)->ret;
	struct q_file_event *f;
	struct q_scratch *s;
	struct file *file;
	bool created, shm = false;
	u32 *level, end;

	if (ret < 0 || !file_watched())
		return 0;
	file = fd_file(ret);
	if (!file)
		return 0;
	created = cfg.file && (BPF_CORE_READ(file, f_mode) & FMODE_CREATED);
	if (cfg.shm || cfg.file) {
		/* shm_open(3) opens /dev/shm/NAME: a file in the root of a
		 * tmpfs; userspace tells /dev/shm from the path */
		struct dentry *d = BPF_CORE_READ(file, f_path.dentry);
		struct vfsmount *m = BPF_CORE_READ(file, f_path.mnt);

		shm = BPF_CORE_READ(d, d_parent) == BPF_CORE_READ(m, mnt_root) &&
		      BPF_CORE_READ(file, f_inode, i_sb, s_magic) ==
			      TMPFS_MAGIC &&
		      mounted_at_shm(m);
	}
	if (!created && !shm)
		return 0;
	s = scratch_get(&level);
	if (!s)
		return 0;
	f = file_start(s, Q_FILE_CREATE, 0);
	if (created) {
		f->flags |= Q_FF_CREATED;
		next_gen();
	}
	if (shm)
		f->flags |= Q_FF_TMPFS_ROOT;
	f->open_flags = BPF_CORE_READ(file, f_flags);
	put_stat(f, BPF_CORE_READ(file, f_inode));
	end = put_file(s, FILE_HDR, file, Q_FF_PATH_TRUNC);
	f->len[Q_FV_PATH] = (end - FILE_HDR) & DATA_MASK;
	file_emit(s, end, level);
	return 0;
}

static __always_inline int fd_enter(void *ctx, u32 op, u32 change)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 fd = ((struct sys_enter_args *)ctx)->args[0];
	struct fd_op v = {.fd = fd, .op = op, .change = change};
	struct file *file;

	if (!file_watched())
		return 0;
	if (change & Q_FC_CONTENT) {
		/* writes to pipes, sockets and ttys: not files */
		file = fd_file(fd);
		if (!file || (BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) !=
				     S_IFREG)
			return 0;
	}
	bpf_map_update_elem(&fd_ops, &tid, &v, BPF_ANY);
	return 0;
}

/* A MODIFY of CONTENT too soon after the last one of this process on this
 * file is not told (the window is the queue's hold time). */
static __always_inline bool repeated(struct inode *ino)
{
	u64 now = bpf_ktime_get_ns(), *last;
	struct dedup_key key = {};

	key.inode = (u64)ino;
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	key.gen = gen_of(key.tgid);
	last = bpf_map_lookup_elem(&modified, &key);
	if (last && now - *last < cfg.file_dedup_ns)
		return true;
	bpf_map_update_elem(&modified, &key, &now, BPF_ANY);
	return false;
}

static __always_inline int fd_exit(void *ctx)
{
	long ret = ((struct sys_exit_args *)ctx)->ret;
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct fd_op *vp = bpf_map_lookup_elem(&fd_ops, &tid);
	struct q_file_event *f;
	struct q_scratch *s;
	struct inode *ino;
	struct file *file;
	struct fd_op v;
	u32 *level, end;

	if (!vp)
		return 0;
	v = *vp;
	bpf_map_delete_elem(&fd_ops, &tid);
	/* a write succeeded when it wrote something; the others return 0 */
	if ((v.change & Q_FC_CONTENT) && !(v.change & Q_FC_TRUNCATE) ?
		    ret <= 0 : ret != 0)
		return 0;
	file = fd_file(v.fd);
	if (!file)
		return 0;
	ino = BPF_CORE_READ(file, f_inode);
	if ((v.change & Q_FC_CONTENT) && repeated(ino))
		return 0;
	s = scratch_get(&level);
	if (!s)
		return 0;
	f = file_start(s, v.op, v.change);
	put_stat(f, ino);
	end = put_file(s, FILE_HDR, file, Q_FF_PATH_TRUNC);
	f->len[Q_FV_PATH] = (end - FILE_HDR) & DATA_MASK;
	file_emit(s, end, level);
	return 0;
}

/* --- by path: remove, move, symlink, chmod, chown, truncate ------------- */

#define NO_ARG 7 /* an argument index that is never used */

static __always_inline long arg(void *ctx, u32 i)
{
	if (i >= 6)
		return AT_FDCWD;
	return ((struct sys_enter_args *)ctx)->args[i];
}

/*
 * The entry of a syscall on a path: dfd_i and name_i index its dirfd and
 * name arguments (NO_ARG: none, the cwd), old_* those of a MOVE's source,
 * sym_i a symlink's target. Its exit sends the result (path_exit).
 */
static __always_inline int path_enter(void *ctx, u32 op, u32 change,
				      u32 dfd_i, u32 name_i, u32 old_dfd_i,
				      u32 old_name_i, u32 sym_i, u32 flags_i,
				      u32 skip_flags)
{
	u32 tid = (u32)bpf_get_current_pid_tgid(), one = 1;
	struct q_file_event *f;
	struct q_scratch *s;
	u32 *level, off;
	long n;

	if (!file_watched())
		return 0;
	if (flags_i < 6 && (arg(ctx, flags_i) & skip_flags))
		return 0; /* unlinkat(AT_REMOVEDIR): a directory */
	s = scratch_get(&level);
	if (!s)
		return 0;
	f = file_start(s, op, change);
	f->flags |= Q_FF_PENDING;
	/* the areas in enum q_file_var order */
	off = put_name(s, FILE_HDR, f, Q_FV_PATH, arg(ctx, dfd_i),
		       (const char *)arg(ctx, name_i), Q_FF_PATH_TRUNC);
	if (old_name_i < 6)
		off = put_name(s, off, f, Q_FV_OLD_PATH, arg(ctx, old_dfd_i),
			       (const char *)arg(ctx, old_name_i),
			       Q_FF_OLD_TRUNC);
	if (sym_i < 6) {
		n = bpf_probe_read_user_str(&s->data[off & DATA_MASK],
					    Q_PATH_MAX,
					    (const char *)arg(ctx, sym_i));
		if (n > 0) {
			f->len[Q_FV_SYM] = n;
			off = (off + n) & DATA_MASK;
		}
	}
	if (op != Q_FILE_MODIFY)
		next_gen();
	file_emit(s, off, level);
	bpf_map_update_elem(&pending, &tid, &one, BPF_ANY);
	return 0;
}

/* The exit of a syscall whose entry sent a pending record: its result. */
static __always_inline int path_exit(void *ctx)
{
	long ret = ((struct sys_exit_args *)ctx)->ret;
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;
	struct q_result_event *r;

	if (!bpf_map_lookup_elem(&pending, &tid))
		return 0;
	bpf_map_delete_elem(&pending, &tid);
	r = ring_reserve(sizeof(*r), pid_tgid >> 32);
	if (!r) {
		return 0;
	}
	r->kind = Q_RESULT;
	r->size = sizeof(*r);
	r->time = bpf_ktime_get_ns();
	r->pid = pid_tgid >> 32;
	r->tid = tid;
	r->ret = ret;
	bpf_ringbuf_submit(r, wakeup_flags(sizeof(*r)));
	count(Q_CNT_SENT);
	return 0;
}

/* --- shared memory ----------------------------------------------------- */

static __always_inline int shm_enter(void *ctx, u32 kind)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid, one = 1;
	struct q_shm_event *e;

	if (!file_watched())
		return 0;
	e = ring_reserve(sizeof(*e), pid_tgid >> 32);
	if (!e) {
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = Q_SHM;
	e->size = sizeof(*e);
	e->time = bpf_ktime_get_ns();
	e->pid = pid_tgid >> 32;
	e->tid = tid;
	e->shm_kind = kind;
	e->flags = Q_FF_PENDING;
	if (kind == Q_SHM_SHMGET) {
		e->key = arg(ctx, 0);
		e->shm_size = arg(ctx, 1);
		e->shm_flags = arg(ctx, 2);
	} else {
		bpf_probe_read_user_str(e->name, sizeof(e->name),
					(const char *)arg(ctx, 0));
		e->shm_flags = arg(ctx, 1);
	}
	bpf_ringbuf_submit(e, wakeup_flags(sizeof(*e)));
	count(Q_CNT_SENT);
	bpf_map_update_elem(&pending, &tid, &one, BPF_ANY);
	return 0;
}

/* --- VFS hooks: where the kernel has BPF trampolines (fentry) --------- */

/*
 * The syscall hooks miss what reaches a file without a write syscall:
 * io_uring, sendfile, splice, copy_file_range, a shared writable mapping,
 * and open(O_TRUNC). The LSM entry points see all of them, whoever calls:
 * rw_verify_area asks security_file_permission(MAY_WRITE) before every
 * write, mmap asks security_mmap_file, and a truncation asks
 * security_path_truncate (security_file_truncate from 6.2 for an open
 * file). These MODIFYs share the syscall hooks' dedup key (the process,
 * the inode, its generation), so that a write both see is told once.
 */

/* A mount of the kernel's own (mnt_ns NULL or MNT_NS_INTERNAL): overlayfs's
 * private clone of its upper layer, the internal tmpfs of memfds, pipes.
 * A file there is the backing of one the process opened elsewhere, or has
 * no path a user knows: overlayfs's write to its upper file is not the
 * process's, whose own write was told through the overlay file. */
static __always_inline bool internal_mount(struct vfsmount *vfsmnt)
{
	u64 mnt_off = bpf_core_field_offset(struct mount, mnt);
	struct mount *mnt = (void *)vfsmnt - mnt_off;
	u64 ns = (u64)BPF_CORE_READ(mnt, mnt_ns);

	return !ns || ns >= (u64)-4095;
}

static __always_inline int vfs_modified(struct dentry *d,
					struct vfsmount *m,
					struct inode *ino, u32 change)
{
	struct task_struct *task;
	struct q_file_event *f;
	struct q_scratch *s;
	u32 *level, end;

	if (!file_watched() || !ino || !d || !m)
		return 0;
	if ((BPF_CORE_READ(ino, i_mode) & S_IFMT) != S_IFREG ||
	    internal_mount(m) || repeated(ino))
		return 0;
	s = scratch_get(&level);
	if (!s)
		return 0;
	f = file_start(s, Q_FILE_MODIFY, change);
	put_stat(f, ino);
	task = (void *)bpf_get_current_task();
	end = put_path(s, FILE_HDR, d, m, BPF_CORE_READ(task, fs),
		       Q_FF_PATH_TRUNC);
	f->len[Q_FV_PATH] = (end - FILE_HDR) & DATA_MASK;
	file_emit(s, end, level);
	return 0;
}

static __always_inline int vfs_file_modified(struct file *file, u32 change)
{
	if (!file)
		return 0;
	return vfs_modified(BPF_CORE_READ(file, f_path.dentry),
			    BPF_CORE_READ(file, f_path.mnt),
			    BPF_CORE_READ(file, f_inode), change);
}

/* security_file_permission(file, mask) */
static __always_inline int vfs_permission(u64 *ctx)
{
	if (!((int)ctx[1] & MAY_WRITE))
		return 0;
	return vfs_file_modified((void *)ctx[0], Q_FC_CONTENT);
}

/* security_mmap_file(file, prot, flags): a shared writable mapping of a
 * file, through which it may change at any time after */
static __always_inline int vfs_mmap(u64 *ctx)
{
	if (!(ctx[1] & PROT_WRITE) || !(ctx[2] & MAP_SHARED))
		return 0;
	return vfs_file_modified((void *)ctx[0], Q_FC_CONTENT);
}

/* security_path_truncate(path): truncate(2) is told by its syscall hooks
 * (pending here), ftruncate and open(O_TRUNC) before 6.2 by this */
static __always_inline int vfs_path_truncate(u64 *ctx)
{
	struct path *p = (void *)ctx[0];
	struct dentry *d = BPF_CORE_READ(p, dentry);
	u32 tid = (u32)bpf_get_current_pid_tgid();

	if (bpf_map_lookup_elem(&pending, &tid))
		return 0;
	return vfs_modified(d, BPF_CORE_READ(p, mnt), BPF_CORE_READ(d, d_inode),
			    Q_FC_CONTENT | Q_FC_TRUNCATE);
}

/* security_file_truncate(file), 6.2 on: ftruncate and open(O_TRUNC) */
static __always_inline int vfs_file_truncate(u64 *ctx)
{
	return vfs_file_modified((void *)ctx[0],
				 Q_FC_CONTENT | Q_FC_TRUNCATE);
}

/* --- terminals, ptrace, modules ------------------------------------------ */

#define TTY_HDR ((u32)sizeof(struct q_tty_event))
#define TTY_PTY_MASTER(major) ((major) == 2 || ((major) >= 128 && (major) <= 135))

/* The tty behind file, or NULL when file is not a terminal's: a character
 * device whose private_data is a tty_file_private pointing back at it
 * (checked before anything of the tty is read). */
static __always_inline struct tty_struct *file_tty(struct file *file)
{
	struct tty_file_private *priv;

	if (!file || (BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFCHR)
		return NULL;
	priv = BPF_CORE_READ(file, private_data);
	if (!priv || BPF_CORE_READ(priv, file) != file)
		return NULL;
	return BPF_CORE_READ(priv, tty);
}

/* Copies n bytes of user memory at src to the record's data at *off (up
 * to Q_TTY_MAX in all); the bytes not kept are added to e->truncated. */
static __always_inline void tty_copy(struct q_scratch *s,
				     struct q_tty_event *e, u32 *off,
				     const void *src, u64 n)
{
	u32 at = *off;
	u64 take;

	if (at >= Q_TTY_MAX) {
		e->truncated += n;
		return;
	}
	take = Q_TTY_MAX - at;
	if (n < take)
		take = n;
	/* bound the very register the helper is given (the compiler may
	 * otherwise pass a copy taken before the mask) */
	barrier_var(take);
	take &= Q_TTY_MAX * 2 - 1;
	if (take && bpf_probe_read_user(&s->data[TTY_HDR + (at & (Q_TTY_MAX - 1))],
					take, src))
		take = 0;
	*off = at + take;
	e->truncated += n - take;
}

/* How tty_out finds the bytes at src */
enum tty_src {
	TTY_BUF,        /* n bytes of user memory */
	TTY_USER_IOV,   /* n iovecs in user memory (writev's argument) */
	TTY_KERNEL_IOV, /* n iovecs in kernel memory (an ITER_IOVEC's) */
};

/* What a process writes to file, when file is a terminal's: the bytes at
 * src, and unread bytes more that are counted but not read (kernel memory:
 * a splice or sendfile). */
static __always_inline int tty_out(struct file *file, const void *src, u64 n,
				   enum tty_src how, u64 unread)
{
	struct tty_struct *tty, *shown;
	struct q_tty_event *e;
	struct q_scratch *s;
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 *level, off = 0, major;
	u32 lflag, other = 0;

	if ((u32)(pid_tgid >> 32) == cfg.self_tgid)
		return 0; /* the consumer's own output */
	tty = file_tty(file);
	if (!tty)
		return 0;
	shown = tty;
	major = BPF_CORE_READ(tty, driver, major);
	if (TTY_PTY_MASTER(major)) {
		shown = BPF_CORE_READ(tty, link); /* told as its slave */
		if (!shown)
			return 0;
		other = BPF_CORE_READ(tty, termios.c_lflag);
	}
	lflag = BPF_CORE_READ(shown, termios.c_lflag);
	if (!((lflag | other) & ECHO))
		return 0; /* neither side echoes: not shown on a terminal */
	s = scratch_get(&level);
	if (!s)
		return 0;
	e = (void *)s->data;
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = Q_TTY;
	e->time = bpf_ktime_get_ns();
	e->pid = pid_tgid >> 32;
	e->tid = (u32)pid_tgid;
	e->major = BPF_CORE_READ(shown, driver, major);
	e->minor = BPF_CORE_READ(shown, driver, minor_start) +
		   BPF_CORE_READ(shown, index);
	e->cols = BPF_CORE_READ(shown, winsize.ws_col);
	e->rows = BPF_CORE_READ(shown, winsize.ws_row);
	e->iflag = BPF_CORE_READ(shown, termios.c_iflag);
	e->oflag = BPF_CORE_READ(shown, termios.c_oflag);
	e->cflag = BPF_CORE_READ(shown, termios.c_cflag);
	e->lflag = lflag;
	e->truncated = unread;
	if (how == TTY_BUF) {
		tty_copy(s, e, &off, src, n);
	} else {
		const struct iovec *iov = src;
		struct iovec v;
		long err;

#pragma unroll
		for (int i = 0; i < Q_TTY_IOV; i++) {
			if (i >= n)
				break;
			if (how == TTY_USER_IOV)
				err = bpf_probe_read_user(&v, sizeof(v), &iov[i]);
			else
				err = bpf_probe_read_kernel(&v, sizeof(v), &iov[i]);
			if (err)
				break;
			tty_copy(s, e, &off, v.iov_base, v.iov_len);
		}
		/* the iovecs past Q_TTY_IOV are not read: nor counted */
	}
	e->data_len = off;
	e->size = TTY_HDR + (off & (Q_TTY_MAX * 2 - 1));
	ring_output(s->data, e->size & DATA_MASK, wakeup_flags(e->size));
	scratch_put(level);
	return 0;
}

/* write(fd, buf, count) or writev(fd, iov, iovcnt) to a terminal, at the
 * syscall's entry: where tty_write cannot be hooked */
static __always_inline int tty_enter(void *ctx, bool vec)
{
	struct sys_enter_args *a = ctx;

	return tty_out(fd_file(a->args[0]), (const void *)a->args[1],
		       a->args[2], vec ? TTY_USER_IOV : TTY_BUF, 0);
}

/*
 * tty_write(iocb, from), from 5.11 (and Debian's 5.10) on, where the kernel
 * has trampolines (Python checks the prototype): every write to a terminal
 * whatever its path, io_uring, sendfile and splice too. User memory
 * (ITER_UBUF, 6.0 on, and ITER_IOVEC) is read as the syscall hooks read
 * it; kernel memory (a pipe's pages for splice and sendfile) is counted in
 * truncated, not read.
 */
static __always_inline int tty_write_fe(u64 *ctx)
{
	struct iov_iter *from = (void *)ctx[1];
	struct file *file = BPF_CORE_READ((struct kiocb *)ctx[0], ki_filp);
	const struct iovec *iov;
	u64 n = BPF_CORE_READ(from, count);
	u32 type;

	if (bpf_core_field_exists(from->iter_type))
		type = BPF_CORE_READ(from, iter_type);
	else /* without the direction bit */
		type = BPF_CORE_READ((struct iov_iter___v510 *)from, type) & ~1u;
	if (bpf_core_enum_value_exists(enum iter_type, ITER_UBUF) &&
	    type == bpf_core_enum_value(enum iter_type, ITER_UBUF))
		return tty_out(file, BPF_CORE_READ(from, ubuf), n, TTY_BUF, 0);
	if (type == bpf_core_enum_value(enum iter_type, ITER_IOVEC)) {
		if (bpf_core_field_exists(from->__iov))
			iov = BPF_CORE_READ(from, __iov);
		else
			iov = BPF_CORE_READ((struct iov_iter___v60 *)from, iov);
		return tty_out(file, iov, BPF_CORE_READ(from, nr_segs),
			       TTY_KERNEL_IOV, 0);
	}
	return tty_out(file, NULL, 0, TTY_BUF, n);
}

/* ptrace(request, pid, addr, data): a tracer's own children and
 * PTRACE_TRACEME (a child asking its parent) are left to userspace and
 * not sent, respectively */
static __always_inline int ptrace_enter(void *ctx)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	long req = arg(ctx, 0);
	u32 tid = (u32)pid_tgid, one = 1;
	struct q_ptrace_event *e;

	if (req == PTRACE_TRACEME)
		return 0;
	e = ring_reserve(sizeof(*e), pid_tgid >> 32);
	if (!e) {
		return 0;
	}
	e->kind = Q_PTRACE;
	e->size = sizeof(*e);
	e->time = bpf_ktime_get_ns();
	e->pid = pid_tgid >> 32;
	e->tid = tid;
	e->request = req;
	e->child = arg(ctx, 1);
	e->addr = arg(ctx, 2);
	e->data = arg(ctx, 3);
	e->flags = 0;
	if (req != PTRACE_ATTACH && req != PTRACE_SEIZE) {
		e->flags = Q_FF_PENDING;
		bpf_map_update_elem(&pending, &tid, &one, BPF_ANY);
	}
	bpf_ringbuf_submit(e, wakeup_flags(sizeof(*e)));
	count(Q_CNT_SENT);
	return 0;
}

/* module_load(struct module *): not the loads of kernel threads, of
 * pid 1 and 2, or of kthreadd's children (request_module's helpers) */
static __always_inline int on_module_load(u64 *args, bool unused)
{
	struct task_struct *task = (void *)bpf_get_current_task();
	struct module *mod = (void *)args[0];
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tgid = pid_tgid >> 32;
	struct q_module_event *e;
	const char *str;

	if (tgid <= 2 || (BPF_CORE_READ(task, flags) & PF_KTHREAD) ||
	    BPF_CORE_READ(task, real_parent, tgid) == 2)
		return 0;
	e = ring_reserve(sizeof(*e), pid_tgid >> 32);
	if (!e) {
		return 0;
	}
	e->kind = Q_MODULE;
	e->size = sizeof(*e);
	e->time = bpf_ktime_get_ns();
	e->pid = tgid;
	e->tid = (u32)pid_tgid;
	e->taints = BPF_CORE_READ(mod, taints);
	e->name[0] = e->version[0] = e->srcversion[0] = 0;
	bpf_probe_read_kernel_str(e->name, sizeof(e->name), mod->name);
	str = BPF_CORE_READ(mod, version);
	if (str)
		bpf_probe_read_kernel_str(e->version, sizeof(e->version), str);
	str = BPF_CORE_READ(mod, srcversion);
	if (str)
		bpf_probe_read_kernel_str(e->srcversion, sizeof(e->srcversion),
					  str);
	bpf_ringbuf_submit(e, wakeup_flags(sizeof(*e)));
	count(Q_CNT_SENT);
	return 0;
}

/* --- the hooks ---------------------------------------------------------- */

/* A hook on tracepoint tp, in both flavours; handler(u64 *args, backup). */
#define Q_HOOK(role, hook, tp, handler, backup)                          \
	SEC("tp_btf/" #tp)                                               \
	int role##__##hook##__btf(u64 *ctx)                              \
	{                                                                \
		return handler(ctx, backup);                             \
	}                                                                \
	SEC("raw_tp/" #tp)                                               \
	int role##__##hook##__raw(struct bpf_raw_tracepoint_args *ctx)  \
	{                                                                \
		return handler(ctx->args, backup);                       \
	}

/* A core hook, and its backup (attached after it, see primary_skipped) */
#define Q_CORE(hook, tp, handler)                                        \
	Q_HOOK(core, hook, tp, handler, false)                           \
	Q_HOOK(backup, hook, tp, handler, true)

#define Q_OPT(hook, tp, handler) Q_HOOK(opt, hook, tp, handler, false)
/* A tracepoint that serves the event kind ROLE (module: MODULE_LOAD) */
#define Q_KIND(role, hook, tp, handler) Q_HOOK(role, hook, tp, handler, false)

/* A hook on a syscall's tracepoint; handler(ctx, ...). Q_SYSCALL's are
 * optional; Q_KIND_SYSCALL's serve the event kind ROLE (sock: SOCK_CONN),
 * loaded only when it is asked for. */
#define Q_KIND_SYSCALL(role, hook, tp, handler, ...)                     \
	SEC("tracepoint/syscalls/" #tp)                                  \
	int role##__##hook##__tp(void *ctx)                              \
	{                                                                \
		return handler(ctx, ##__VA_ARGS__);                      \
	}

#define Q_SYSCALL(hook, tp, handler, ...)                                \
	Q_KIND_SYSCALL(opt, hook, tp, handler, ##__VA_ARGS__)

/* A hook on a kernel function's entry, where the kernel has BPF
 * trampolines; handler(u64 *args): the function's arguments. ROLE ends in
 * opt: a kernel without trampolines, or without the function, skips it. */
#define Q_FENTRY(role, hook, func, handler)                              \
	SEC("fentry/" #func)                                             \
	int role##__##hook##__fe(u64 *ctx)                               \
	{                                                                \
		return handler(ctx);                                     \
	}

Q_CORE(fork, sched_process_fork, on_fork)
Q_CORE(exec, sched_process_exec, on_exec)
Q_CORE(exit, sched_process_exit, on_exit)
Q_OPT(rename, task_rename, on_rename)
Q_OPT(cgroup_move, cgroup_attach_task, on_cgroup_move)
Q_SYSCALL(enter_execve, sys_enter_execve, exec_enter)
Q_SYSCALL(enter_execveat, sys_enter_execveat, exec_enter)
Q_SYSCALL(exit_execve, sys_exit_execve, exec_exit)
Q_SYSCALL(exit_execveat, sys_exit_execveat, exec_exit)
Q_SYSCALL(setuid, sys_exit_setuid, on_id_change, Q_ID_SETUID)
Q_SYSCALL(setreuid, sys_exit_setreuid, on_id_change, Q_ID_SETUID)
Q_SYSCALL(setresuid, sys_exit_setresuid, on_id_change, Q_ID_SETUID)
Q_SYSCALL(setgid, sys_exit_setgid, on_id_change, Q_ID_SETGID)
Q_SYSCALL(setregid, sys_exit_setregid, on_id_change, Q_ID_SETGID)
Q_SYSCALL(setresgid, sys_exit_setresgid, on_id_change, Q_ID_SETGID)
Q_SYSCALL(setsid, sys_exit_setsid, on_id_change, Q_ID_SETSID)
Q_KIND_SYSCALL(sock, connect_enter, sys_enter_connect, connect_enter)
Q_KIND_SYSCALL(sock, connect, sys_exit_connect, connect_exit)
Q_KIND_SYSCALL(sock, accept, sys_exit_accept, accept_exit)
Q_KIND_SYSCALL(sock, accept4, sys_exit_accept4, accept_exit)

/* files: through an fd, read at the exit. The syscalls that only some
 * architectures have (open, creat, unlink, rename, symlink, chmod, chown,
 * lchown: not arm64's) are optional: fsopt, fileopt. */
Q_KIND_SYSCALL(fsopt, open, sys_exit_open, open_exit)
Q_KIND_SYSCALL(fs, openat, sys_exit_openat, open_exit)
Q_KIND_SYSCALL(fs, openat2, sys_exit_openat2, open_exit)
Q_KIND_SYSCALL(fsopt, creat, sys_exit_creat, open_exit)
Q_KIND_SYSCALL(file, write_enter, sys_enter_write, fd_enter, Q_FILE_MODIFY, Q_FC_CONTENT)
Q_KIND_SYSCALL(file, pwrite64_enter, sys_enter_pwrite64, fd_enter, Q_FILE_MODIFY, Q_FC_CONTENT)
Q_KIND_SYSCALL(file, writev_enter, sys_enter_writev, fd_enter, Q_FILE_MODIFY, Q_FC_CONTENT)
Q_KIND_SYSCALL(file, pwritev_enter, sys_enter_pwritev, fd_enter, Q_FILE_MODIFY, Q_FC_CONTENT)
Q_KIND_SYSCALL(file, pwritev2_enter, sys_enter_pwritev2, fd_enter, Q_FILE_MODIFY, Q_FC_CONTENT)
Q_KIND_SYSCALL(file, ftruncate_enter, sys_enter_ftruncate, fd_enter, Q_FILE_MODIFY, Q_FC_CONTENT | Q_FC_TRUNCATE)
Q_KIND_SYSCALL(file, fchmod_enter, sys_enter_fchmod, fd_enter, Q_FILE_MODIFY, Q_FC_PERMISSIONS)
Q_KIND_SYSCALL(file, fchown_enter, sys_enter_fchown, fd_enter, Q_FILE_MODIFY, Q_FC_OWNER)
Q_KIND_SYSCALL(file, write, sys_exit_write, fd_exit)
Q_KIND_SYSCALL(file, pwrite64, sys_exit_pwrite64, fd_exit)
Q_KIND_SYSCALL(file, writev, sys_exit_writev, fd_exit)
Q_KIND_SYSCALL(file, pwritev, sys_exit_pwritev, fd_exit)
Q_KIND_SYSCALL(file, pwritev2, sys_exit_pwritev2, fd_exit)
Q_KIND_SYSCALL(file, ftruncate, sys_exit_ftruncate, fd_exit)
Q_KIND_SYSCALL(file, fchmod, sys_exit_fchmod, fd_exit)
Q_KIND_SYSCALL(file, fchown, sys_exit_fchown, fd_exit)
/* files: by path, read at the entry; (op, change, dfd, name, old dfd,
 * old name, symlink target, flags, flags that skip) by argument index */
Q_KIND_SYSCALL(fileopt, unlink_enter, sys_enter_unlink, path_enter, Q_FILE_REMOVE, 0, NO_ARG, 0, NO_ARG, NO_ARG, NO_ARG, NO_ARG, 0)
Q_KIND_SYSCALL(file, unlinkat_enter, sys_enter_unlinkat, path_enter, Q_FILE_REMOVE, 0, 0, 1, NO_ARG, NO_ARG, NO_ARG, 2, AT_REMOVEDIR)
Q_KIND_SYSCALL(fileopt, rename_enter, sys_enter_rename, path_enter, Q_FILE_MOVE, 0, NO_ARG, 1, NO_ARG, 0, NO_ARG, NO_ARG, 0)
Q_KIND_SYSCALL(file, renameat_enter, sys_enter_renameat, path_enter, Q_FILE_MOVE, 0, 2, 3, 0, 1, NO_ARG, NO_ARG, 0)
Q_KIND_SYSCALL(file, renameat2_enter, sys_enter_renameat2, path_enter, Q_FILE_MOVE, 0, 2, 3, 0, 1, NO_ARG, NO_ARG, 0)
Q_KIND_SYSCALL(fileopt, symlink_enter, sys_enter_symlink, path_enter, Q_FILE_CREATE, 0, NO_ARG, 1, NO_ARG, NO_ARG, 0, NO_ARG, 0)
Q_KIND_SYSCALL(file, symlinkat_enter, sys_enter_symlinkat, path_enter, Q_FILE_CREATE, 0, 1, 2, NO_ARG, NO_ARG, 0, NO_ARG, 0)
Q_KIND_SYSCALL(fileopt, chmod_enter, sys_enter_chmod, path_enter, Q_FILE_MODIFY, Q_FC_PERMISSIONS, NO_ARG, 0, NO_ARG, NO_ARG, NO_ARG, NO_ARG, 0)
Q_KIND_SYSCALL(file, fchmodat_enter, sys_enter_fchmodat, path_enter, Q_FILE_MODIFY, Q_FC_PERMISSIONS, 0, 1, NO_ARG, NO_ARG, NO_ARG, NO_ARG, 0)
Q_KIND_SYSCALL(fileopt, fchmodat2_enter, sys_enter_fchmodat2, path_enter, Q_FILE_MODIFY, Q_FC_PERMISSIONS, 0, 1, NO_ARG, NO_ARG, NO_ARG, NO_ARG, 0)
Q_KIND_SYSCALL(fileopt, chown_enter, sys_enter_chown, path_enter, Q_FILE_MODIFY, Q_FC_OWNER, NO_ARG, 0, NO_ARG, NO_ARG, NO_ARG, NO_ARG, 0)
Q_KIND_SYSCALL(fileopt, lchown_enter, sys_enter_lchown, path_enter, Q_FILE_MODIFY, Q_FC_OWNER, NO_ARG, 0, NO_ARG, NO_ARG, NO_ARG, NO_ARG, 0)
Q_KIND_SYSCALL(file, fchownat_enter, sys_enter_fchownat, path_enter, Q_FILE_MODIFY, Q_FC_OWNER, 0, 1, NO_ARG, NO_ARG, NO_ARG, NO_ARG, 0)
Q_KIND_SYSCALL(file, truncate_enter, sys_enter_truncate, path_enter, Q_FILE_MODIFY, Q_FC_CONTENT | Q_FC_TRUNCATE, NO_ARG, 0, NO_ARG, NO_ARG, NO_ARG, NO_ARG, 0)
/* the exits of every syscall whose entry may send a pending record */
Q_KIND_SYSCALL(fileopt, unlink, sys_exit_unlink, path_exit)
Q_KIND_SYSCALL(file, unlinkat, sys_exit_unlinkat, path_exit)
Q_KIND_SYSCALL(fileopt, rename, sys_exit_rename, path_exit)
Q_KIND_SYSCALL(file, renameat, sys_exit_renameat, path_exit)
Q_KIND_SYSCALL(file, renameat2, sys_exit_renameat2, path_exit)
Q_KIND_SYSCALL(fileopt, symlink, sys_exit_symlink, path_exit)
Q_KIND_SYSCALL(file, symlinkat, sys_exit_symlinkat, path_exit)
Q_KIND_SYSCALL(fileopt, chmod, sys_exit_chmod, path_exit)
Q_KIND_SYSCALL(file, fchmodat, sys_exit_fchmodat, path_exit)
Q_KIND_SYSCALL(fileopt, fchmodat2, sys_exit_fchmodat2, path_exit)
Q_KIND_SYSCALL(fileopt, chown, sys_exit_chown, path_exit)
Q_KIND_SYSCALL(fileopt, lchown, sys_exit_lchown, path_exit)
Q_KIND_SYSCALL(file, fchownat, sys_exit_fchownat, path_exit)
Q_KIND_SYSCALL(file, truncate, sys_exit_truncate, path_exit)
Q_KIND_SYSCALL(shm, shmget, sys_exit_shmget, path_exit)
Q_KIND_SYSCALL(shm, memfd_create, sys_exit_memfd_create, path_exit)
/* shared memory: read at the entry, told once its exit succeeded */
Q_KIND_SYSCALL(shm, shmget_enter, sys_enter_shmget, shm_enter, Q_SHM_SHMGET)
Q_KIND_SYSCALL(shm, memfd_create_enter, sys_enter_memfd_create, shm_enter, Q_SHM_MEMFD_CREATE)
Q_FENTRY(vfsopt, file_permission, security_file_permission, vfs_permission)
Q_FENTRY(vfsopt, mmap_file, security_mmap_file, vfs_mmap)
Q_FENTRY(vfsopt, path_truncate, security_path_truncate, vfs_path_truncate)
Q_FENTRY(vfsopt, file_truncate, security_file_truncate, vfs_file_truncate)
Q_FENTRY(ttyopt, tty_write, tty_write, tty_write_fe)
Q_KIND_SYSCALL(tty, write_enter, sys_enter_write, tty_enter, false)
Q_KIND_SYSCALL(tty, writev_enter, sys_enter_writev, tty_enter, true)
Q_KIND_SYSCALL(ptrace, ptrace_enter, sys_enter_ptrace, ptrace_enter)
Q_KIND_SYSCALL(ptrace, ptrace, sys_exit_ptrace, path_exit)
Q_KIND(module, module_load, module_load, on_module_load)
Q_KIND_SYSCALL(getpid, getpid, sys_exit_getpid, on_getpid)

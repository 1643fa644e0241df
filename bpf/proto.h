/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The wire format between quark's BPF programs and userspace, declared
 * here only. Userspace reads every layout below (offsets, sizes, array
 * lengths, enum values) from the object's BTF (quark/backends/
 * ebpf_layout.py); struct q_wire puts each type in that BTF.
 *
 * Every ring buffer record is a struct q_event, followed for FORK and
 * EXEC by the variable-length areas whose sizes are in q_event.len[], in
 * enum q_var order:
 *   Q_VAR_EXE     path components of the executable, leaf first, each
 *                 NUL-terminated (userspace joins them in reverse)
 *   Q_VAR_ARGS    argv as in /proc/PID/cmdline (NUL-separated)
 *   Q_VAR_ENV     environ as in /proc/PID/environ, cut to max_env
 *   Q_VAR_CWD     path components of the cwd, leaf first
 *   Q_VAR_CGROUP  cgroup v2 path components, leaf first
 *
 * A q_event member named as one of quark.Process's task fields (the
 * table in quark/events.py) is copied to it by that name; a numeric one
 * that is optional there (TASK_OPT) is unknown when 0. Bump
 * Q_PROTO_VERSION when a member's meaning changes: userspace refuses an
 * object whose version it does not speak.
 */
#ifndef QUARK_PROTO_H
#define QUARK_PROTO_H

enum q_proto {
	Q_PROTO_VERSION = 2,
};

enum q_kind {
	Q_FORK = 1,
	Q_EXEC = 2,
	Q_EXIT = 3,
	Q_COMM = 4,
	Q_ID_CHANGE = 5,
};

enum q_var {
	Q_VAR_EXE,
	Q_VAR_ARGS,
	Q_VAR_ENV,
	Q_VAR_CWD,
	Q_VAR_CGROUP,
	Q_VAR_NUM,
};

/* q_event.flags: which variable area was cut short */
enum q_flag {
	Q_F_ARGS_TRUNC = 1 << 0,
	Q_F_ENV_TRUNC = 1 << 1,
	Q_F_EXE_TRUNC = 1 << 2,
	Q_F_CWD_TRUNC = 1 << 3,
	Q_F_CGROUP_TRUNC = 1 << 4,
};

/* q_event.id_change bits, upstream's QUARK_ID_CHANGE_* */
enum q_id_change {
	Q_ID_SETSID = 1 << 0,
	Q_ID_SETUID = 1 << 1,
	Q_ID_SETGID = 1 << 2,
};

enum q_limit {
	Q_PATH_MAX = 4096,
	Q_NAME_MAX = 256,
	Q_ARGS_MAX = 32768,   /* argv bytes kept (>= 16 KiB by contract) */
	Q_ENV_MAX = 32768,    /* upper bound of max_env in the kernel */
	Q_PATH_DEPTH = 64,    /* components walked, mount hops included */
	Q_NEST = 2,           /* scratch buffers per CPU (nesting) */
	Q_RING_SIZE = 4 << 20,
};

struct q_event {
	__u32 kind;        /* enum q_kind */
	__u32 size;        /* whole record, header included */
	__u64 time;        /* bpf_ktime_get_ns: CLOCK_MONOTONIC */
	__u32 pid;         /* tgid */
	__u32 tid;
	__u32 id_change;   /* enum q_id_change bits */
	__u32 flags;       /* enum q_flag bits */
	/* task data, named as quark.Process's fields */
	__u64 cap_inheritable;
	__u64 cap_permitted;
	__u64 cap_effective;
	__u64 cap_bset;
	__u64 cap_ambient;
	__u64 start_time;  /* task->start_boottime */
	__u64 exe_inode;   /* mm->exe_file's inode number; 0: unknown */
	__u32 ppid;
	__u32 uid, gid, suid, sgid, euid, egid;
	__u32 pgid, sid;
	__u32 tty_major, tty_minor;
	__u32 uts_inonum, ipc_inonum, mnt_inonum, net_inonum;
	__s32 exit_code;   /* raw wait status, for Q_EXIT */
	char comm[16];     /* for Q_COMM: the new name */
	__u16 len[Q_VAR_NUM];
	__u16 pad;
};

/* Per-CPU counters (index into the counters map) */
enum q_counter {
	Q_CNT_SENT,
	Q_CNT_LOST,       /* ring full: bpf_ringbuf_output failed */
	Q_CNT_NOBUF,      /* scratch buffers all busy (nesting) */
	Q_CNT_RECOVERED,  /* events a backup program emitted for a skipped run */
	Q_CNT_NUM,
};

/* The program's read-only configuration, written by userspace at load */
struct q_config {
	__u32 max_env;       /* bytes of environ to copy, <= Q_ENV_MAX */
	__u32 thread_events; /* non-zero: threads too */
	__u32 wakeup_bytes;  /* force a wakeup when this much data waits */
	__u32 pad;
};

/* Never used by the programs: it carries every wire type into the BTF. */
struct q_wire {
	struct q_event event;
	struct q_config config;
	enum q_proto proto;
	enum q_kind kind;
	enum q_var var;
	enum q_flag flag;
	enum q_id_change id_change;
	enum q_counter counter;
	enum q_limit limit;
};

#endif

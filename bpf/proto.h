/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The wire format between quark's BPF programs and userspace, declared
 * here only. Userspace reads every layout below (offsets, sizes, array
 * lengths, enum values) from the object's BTF (quark/backends/
 * ebpf_layout.py); struct q_wire puts each type in that BTF.
 *
 * Every ring buffer record is a struct q_event, followed for FORK and
 * EXEC (and an EXIT that carries its process's fork, see fork_time) by
 * the variable-length areas whose sizes are in q_event.len[], in enum
 * q_var order:
 *   Q_VAR_EXE     path components of the executable, leaf first, each
 *                 NUL-terminated (userspace joins them in reverse)
 *   Q_VAR_ARGS    argv as in /proc/PID/cmdline (NUL-separated)
 *   Q_VAR_ENV     environ as in /proc/PID/environ, cut to max_env
 *   Q_VAR_CWD     path components of the cwd, leaf first
 *   Q_VAR_CGROUP  cgroup path components, leaf first (v2, or q_config's v1)
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
	Q_PROTO_VERSION = 8,
};

enum q_kind {
	Q_FORK = 1,
	Q_EXEC = 2,
	Q_EXIT = 3,
	Q_COMM = 4,
	Q_ID_CHANGE = 5,
	Q_SOCK = 6,        /* a struct q_sock_event */
	Q_PACKET = 7,      /* a struct q_packet_event, then the packet */
	Q_FILE = 8,        /* a struct q_file_event, then its areas */
	Q_SHM = 9,         /* a struct q_shm_event */
	Q_RESULT = 10,     /* a struct q_result_event */
	Q_TTY = 11,        /* a struct q_tty_event, then the bytes */
	Q_PTRACE = 12,     /* a struct q_ptrace_event */
	Q_MODULE = 13,     /* a struct q_module_event */
	Q_GETPID = 14,     /* a task record: getpid(2) returned */
	Q_CGROUP = 15,     /* a task record, only its cgroup area: moved */
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
	Q_PACKET_MAX = 2048,  /* bytes of a packet kept, from its IP header */
	Q_TTY_MAX = 8192,     /* bytes of one write to a terminal kept */
	Q_TTY_IOV = 8,        /* iovecs of a writev read */
	Q_MODULE_NAME = 56,   /* the kernel's MODULE_NAME_LEN */
	Q_MODULE_STR = 64,    /* bytes of a module's version, srcversion */
	Q_FOLD_DATA = 512,    /* area bytes a deferred fork keeps */
	Q_FOLD_SLOTS = 1024,  /* forks deferred at once */
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
	__u64 fork_time;   /* Q_EXEC, Q_EXIT: the time of the process's fork,
			    * whose record this one replaces (see on_fork);
			    * 0: none */
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

/*
 * The records of the network kinds begin as struct q_event does (kind,
 * size, time, pid, tid), and carry no task data: userspace takes the
 * process from its cache.
 */
enum q_sock_op {
	Q_SOCK_CONNECT = 1,  /* connect(2) succeeded or is in progress */
	Q_SOCK_ACCEPT = 2,   /* accept(2) returned the socket */
	Q_SOCK_CLOSE = 3,    /* its last reference went */
};

enum q_sock_flag {
	Q_SOCK_AT_EXIT = 1 << 0,  /* closed by the exit of the calling thread */
};

struct q_sock_event {
	__u32 kind;          /* Q_SOCK */
	__u32 size;
	__u64 time;
	__u32 pid;
	__u32 tid;
	__u32 op;            /* enum q_sock_op */
	__u32 flags;         /* enum q_sock_flag bits */
	__u16 family;        /* AF_INET or AF_INET6 */
	__u16 local_port;    /* host order */
	__u16 remote_port;   /* host order */
	__u16 pad;
	__u32 net_inonum;
	char local_addr[16]; /* network order; AF_INET: the first 4 bytes */
	char remote_addr[16];
	__u64 bytes_sent;    /* Q_SOCK_CLOSE only */
	__u64 bytes_received;
};

enum q_packet_dir {
	Q_PACKET_EGRESS = 1,
	Q_PACKET_INGRESS = 2,
};

/* followed by cap_len bytes of the packet, from its IP header */
struct q_packet_event {
	__u32 kind;          /* Q_PACKET */
	__u32 size;
	__u64 time;
	__u32 pid;           /* the socket's owner; 0: unknown */
	__u32 tid;
	__u32 direction;     /* enum q_packet_dir */
	__u32 orig_len;      /* the packet's length */
	__u32 cap_len;       /* <= orig_len and Q_PACKET_MAX */
	__u32 pad;
};

/*
 * File operations. One made through an fd (create, write, fchmod, ...) is
 * read from the file at the syscall's exit: its whole path from the dentry
 * (in Q_FV_PATH) and its inode (Q_FF_STAT). One made by path (unlink,
 * rename, chmod, ...) is read at the syscall's entry, while the path can
 * still be read: Q_FV_PATH then holds the directory the name is relative
 * to (the cwd, or the dirfd's; empty for an absolute name) and Q_FV_NAME
 * the name as given; it carries Q_FF_PENDING, and the same thread's next
 * Q_RESULT record says whether the syscall succeeded.
 */
enum q_file_op {
	Q_FILE_CREATE = 1,
	Q_FILE_MODIFY = 2,
	Q_FILE_REMOVE = 4,
	Q_FILE_MOVE = 8,
};

enum q_file_change {
	Q_FC_CONTENT = 1 << 0,
	Q_FC_PERMISSIONS = 1 << 1,
	Q_FC_OWNER = 1 << 2,
	Q_FC_XATTRS = 1 << 3,
	Q_FC_TRUNCATE = 1 << 4,
};

enum q_file_flag {
	Q_FF_STAT = 1 << 0,       /* the inode's members are valid */
	Q_FF_PENDING = 1 << 1,    /* done by path: see its Q_RESULT */
	Q_FF_TMPFS_ROOT = 1 << 2, /* in the root of a tmpfs on .../shm */
	Q_FF_PATH_TRUNC = 1 << 3, /* Q_FV_PATH was cut short */
	Q_FF_OLD_TRUNC = 1 << 4,  /* Q_FV_OLD_PATH was cut short */
	Q_FF_CREATED = 1 << 5,    /* the open created the file */
};

/* q_file_event.len[] areas, in this order after the header */
enum q_file_var {
	Q_FV_PATH,      /* path components, leaf first, as Q_VAR_CWD */
	Q_FV_NAME,      /* a name as the process gave it, NUL-terminated */
	Q_FV_OLD_PATH,  /* a MOVE's source, as Q_FV_PATH and Q_FV_NAME */
	Q_FV_OLD_NAME,
	Q_FV_SYM,       /* a symlink's target as given, NUL-terminated */
	Q_FV_NUM,
};

struct q_file_event {
	__u32 kind;        /* Q_FILE */
	__u32 size;
	__u64 time;
	__u32 pid;
	__u32 tid;
	__u32 op;          /* enum q_file_op */
	__u32 change;      /* enum q_file_change bits, for Q_FILE_MODIFY */
	__u32 flags;       /* enum q_file_flag bits */
	__u32 mode;        /* with Q_FF_STAT: the inode's */
	__u64 inode;
	__u64 fsize;
	__u64 atime;       /* ns since the epoch */
	__u64 mtime;
	__u64 ctime;
	__u32 uid;
	__u32 gid;
	__u32 open_flags;  /* the file's f_flags, for an open */
	__u16 len[Q_FV_NUM];
	__u16 pad;
};

enum q_shm_kind {
	Q_SHM_SHMGET = 1,
	Q_SHM_MEMFD_CREATE = 3,  /* SHM_OPEN comes as a Q_FILE in /dev/shm */
};

/* Read at the syscall's entry: Q_FF_PENDING until its Q_RESULT. */
struct q_shm_event {
	__u32 kind;        /* Q_SHM */
	__u32 size;
	__u64 time;
	__u32 pid;
	__u32 tid;
	__u32 shm_kind;    /* enum q_shm_kind */
	__u32 flags;       /* Q_FF_PENDING */
	__s64 key;         /* shmget */
	__u64 shm_size;    /* shmget */
	__s64 shm_flags;   /* shmget's shmflg, memfd_create's flags */
	char name[Q_NAME_MAX]; /* memfd_create's name */
};

/* How a syscall whose record was Q_FF_PENDING ended. */
struct q_result_event {
	__u32 kind;        /* Q_RESULT */
	__u32 size;
	__u64 time;
	__u32 pid;
	__u32 tid;
	__s64 ret;
};

/*
 * What a process wrote to a terminal, read at the write's entry: the
 * terminal (for a pty master, its slave), its window and termios, and
 * data_len bytes of the write after the header; truncated counts the
 * bytes of the write not kept (over Q_TTY_MAX, or unreadable).
 */
struct q_tty_event {
	__u32 kind;        /* Q_TTY */
	__u32 size;
	__u64 time;
	__u32 pid;
	__u32 tid;
	__u32 major;
	__u32 minor;
	__u16 cols;
	__u16 rows;
	__u32 iflag;
	__u32 oflag;
	__u32 cflag;
	__u32 lflag;
	__u32 data_len;
	__u32 truncated;
	__u32 pad;
};

/* A ptrace(2) request, read at its entry. ATTACH and SEIZE are told
 * whatever comes of them; any other request carries Q_FF_PENDING, and
 * its Q_RESULT says whether it succeeded. child is the pid argument: a
 * tid in the tracer's pid namespace. */
struct q_ptrace_event {
	__u32 kind;        /* Q_PTRACE */
	__u32 size;
	__u64 time;
	__u32 pid;
	__u32 tid;
	__u32 child;
	__u32 flags;       /* Q_FF_PENDING */
	__s64 request;
	__u64 addr;
	__u64 data;
};

/* A module loaded (the module_load tracepoint) */
struct q_module_event {
	__u32 kind;        /* Q_MODULE */
	__u32 size;
	__u64 time;
	__u32 pid;
	__u32 tid;
	__u64 taints;
	char name[Q_MODULE_NAME];
	char version[Q_MODULE_STR];       /* empty: none */
	char srcversion[Q_MODULE_STR];    /* empty: none */
};

/* Per-CPU counters (index into the counters map) */
enum q_counter {
	Q_CNT_SENT,
	Q_CNT_LOST,       /* ring full: bpf_ringbuf_output failed */
	Q_CNT_NOBUF,      /* scratch buffers all busy (nesting) */
	Q_CNT_RECOVERED,  /* events a backup program emitted for a skipped run */
	Q_CNT_RETRIED,    /* records the ring refused with room, then took */
	Q_CNT_DEFERRED,   /* FORK records kept back in the folding map */
	Q_CNT_FOLDED,     /* of those, carried by their EXEC or EXIT record */
	Q_CNT_FLUSHED,    /* of those, sent before another record of the pid */
	Q_CNT_NUM,
};

/* The program's read-only configuration, written by userspace at load */
struct q_config {
	__u32 max_env;       /* bytes of environ to copy, <= Q_ENV_MAX */
	__u32 thread_events; /* non-zero: threads too */
	__u32 wakeup_bytes;  /* force a wakeup when this much data waits */
	__u32 self_tgid;     /* the consumer: its file operations are not told */
	__u64 file_dedup_ns; /* one MODIFY per process and file this often */
	__u32 file;          /* non-zero: FILE events asked for */
	__u32 shm;           /* non-zero: SHM events asked for */
	__u32 cgroup_v1;     /* 0: the cgroup path is v2's; n: v1 subsystem
			      * n - 1's (a legacy layout, see procfs.py) */
	__u32 fold;          /* non-zero: forks may be deferred (on_fork) */
};

/*
 * A FORK record kept back (the folding map's value, keyed by pid): the
 * record as it would have gone to the ring, areas included. Userspace
 * takes the ones no EXEC or EXIT came for (quark/backends/ebpf.py), and
 * reads the slot's size from the map, not from q_wire.
 */
struct q_fork_slot {
	struct q_event ev;
	char data[Q_FOLD_DATA];
};

/* Never used by the programs: it carries every wire type into the BTF. */
struct q_wire {
	struct q_event event;
	struct q_sock_event sock_event;
	struct q_packet_event packet_event;
	struct q_file_event file_event;
	struct q_shm_event shm_event;
	struct q_result_event result_event;
	struct q_tty_event tty_event;
	struct q_ptrace_event ptrace_event;
	struct q_module_event module_event;
	struct q_config config;
	enum q_proto proto;
	enum q_kind kind;
	enum q_var var;
	enum q_flag flag;
	enum q_id_change id_change;
	enum q_counter counter;
	enum q_limit limit;
	enum q_sock_op sock_op;
	enum q_sock_flag sock_flag;
	enum q_packet_dir packet_dir;
	enum q_file_op file_op;
	enum q_file_change file_change;
	enum q_file_flag file_flag;
	enum q_file_var file_var;
	enum q_shm_kind shm_kind;
};

#endif

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The few kernel types quark's probes touch, declared by hand with
 * preserve_access_index: libbpf relocates every field access against the
 * running kernel's BTF (CO-RE), so only the names matter here, not the
 * layout. Anonymous unions and renamed fields are handled in quark.bpf.c.
 */
#ifndef QUARK_KERNEL_H
#define QUARK_KERNEL_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
};

enum {
	BPF_F_NO_PREALLOC = 1,
};

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

enum {
	BPF_RB_AVAIL_DATA = 0,
	BPF_RB_RING_SIZE = 1,
};

struct bpf_raw_tracepoint_args {
	__u64 args[0];
};

#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)

typedef struct {
	int counter;
} atomic_t;

typedef struct {
	__u64 val;
} kernel_cap_t;

typedef struct {
	__u32 val;
} kuid_t;

typedef struct {
	__u32 val;
} kgid_t;

struct qstr {
	const unsigned char *name;
};

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
	struct inode *d_inode;
};

struct vfsmount {
	struct dentry *mnt_root;
};

struct mnt_namespace;

struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
	struct mnt_namespace *mnt_ns;
};

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
};

struct super_block {
	unsigned long s_magic;
};

struct inode {
	unsigned long i_ino;
	unsigned short i_mode;
	kuid_t i_uid;
	kgid_t i_gid;
	long long i_size;
	struct super_block *i_sb;
	unsigned int i_rdev;
};

struct timespec64 {
	long long tv_sec;
	long tv_nsec;
};

/* The inode's times moved: timespec64 i_[amc]time until 6.5, __i_ctime
 * from 6.6, __i_[am]time from 6.7, i_[amc]time_sec/_nsec from 6.11. */
struct inode___ts {
	struct timespec64 i_atime;
	struct timespec64 i_mtime;
	struct timespec64 i_ctime;
};

struct inode___ts_hidden {
	struct timespec64 __i_atime;
	struct timespec64 __i_mtime;
	struct timespec64 __i_ctime;
};

struct inode___split {
	long long i_atime_sec;
	long long i_mtime_sec;
	long long i_ctime_sec;
	unsigned int i_atime_nsec;
	unsigned int i_mtime_nsec;
	unsigned int i_ctime_nsec;
};

struct file {
	struct path f_path;
	struct inode *f_inode;
	void *private_data;
	unsigned int f_mode;
	unsigned int f_flags;
};

struct fs_struct {
	struct path root;
	struct path pwd;
};

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
	unsigned long env_start;
	unsigned long env_end;
	struct file *exe_file;
};

struct cred {
	kuid_t uid;
	kgid_t gid;
	kuid_t suid;
	kgid_t sgid;
	kuid_t euid;
	kgid_t egid;
	kernel_cap_t cap_inheritable;
	kernel_cap_t cap_permitted;
	kernel_cap_t cap_effective;
	kernel_cap_t cap_bset;
	kernel_cap_t cap_ambient;
};

struct upid {
	int nr;
};

struct pid {
	struct upid numbers[1];
};

struct tty_driver {
	int major;
	int minor_start;
};

struct ktermios {
	unsigned int c_iflag;
	unsigned int c_oflag;
	unsigned int c_cflag;
	unsigned int c_lflag;
};

struct winsize {
	unsigned short ws_row;
	unsigned short ws_col;
};

struct tty_struct {
	struct tty_driver *driver;
	int index;
	struct tty_struct *link;
	struct ktermios termios;
	struct winsize winsize;
};

/* a tty's file's private_data */
struct tty_file_private {
	struct tty_struct *tty;
	struct file *file;
};

struct module {
	char name[56];
	const char *version;
	const char *srcversion;
	unsigned long taints;
};

struct iovec {
	void *iov_base;
	unsigned long iov_len;
};

struct kiocb {
	struct file *ki_filp;
};

/* 5.14 on; 6.4 renamed iov to __iov (struct iov_iter___v60). The pointers
 * and counts sit in anonymous unions, which CO-RE looks through. */
enum iter_type {
	ITER_UBUF,
	ITER_IOVEC,
};

struct iov_iter {
	u8 iter_type;
	unsigned long count;
	const struct iovec *__iov;
	void *ubuf;
	unsigned long nr_segs;
};

struct iov_iter___v60 {
	const struct iovec *iov;
};

/* before 5.14: the type and the direction (bit 0) in one int */
struct iov_iter___v510 {
	unsigned int type;
};

struct signal_struct {
	atomic_t live;
	int group_exit_code;
	unsigned int flags;
	struct pid *pids[4];
	struct tty_struct *tty;
};

struct ns_common {
	unsigned int inum;
};

struct uts_namespace {
	struct ns_common ns;
};

struct ipc_namespace {
	struct ns_common ns;
};

struct mnt_namespace {
	struct ns_common ns;
};

struct net {
	struct ns_common ns;
};

struct nsproxy {
	struct uts_namespace *uts_ns;
	struct ipc_namespace *ipc_ns;
	struct mnt_namespace *mnt_ns;
	struct net *net_ns;
};

struct kernfs_node {
	const char *name;
};

/* kernfs_node.parent became __parent in 6.15 */
struct kernfs_node___old {
	struct kernfs_node *parent;
};

struct kernfs_node___new {
	struct kernfs_node *__parent;
};

struct cgroup {
	struct kernfs_node *kn;
};

struct cgroup_subsys_state {
	struct cgroup *cgroup;
};

struct css_set {
	/* indexed by subsystem id; its length varies with the config, so it
	 * is addressed from its relocated offset, never by a constant index */
	struct cgroup_subsys_state *subsys[1];
	struct cgroup *dfl_cgrp;
};

struct task_struct {
	unsigned int flags;
	struct mm_struct *mm;
	int exit_code;
	int pid;
	int tgid;
	struct task_struct *real_parent;
	struct task_struct *group_leader;
	__u64 start_boottime;
	const struct cred *cred;
	char comm[16];
	struct fs_struct *fs;
	struct nsproxy *nsproxy;
	struct signal_struct *signal;
	struct css_set *cgroups;
	struct files_struct *files;
};

struct in6_addr {
	__u8 s6_addr[16];
};

typedef struct {
	struct net *net;
} possible_net_t;

/* the members live in anonymous unions and structs: CO-RE finds them */
struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
};

struct sock {
	struct sock_common __sk_common;
	__u16 sk_type;
	__u16 sk_protocol;
	int sk_err;
};

struct tcp_sock {
	__u64 bytes_received;
	__u64 bytes_sent;
};

struct socket {
	struct file *file;
	struct sock *sk;
};

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
};

struct files_struct {
	struct fdtable *fdt;
};

struct linux_binprm {
	struct file *file;
};

struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

#pragma clang attribute pop

/* Syscall exit tracepoints: common header, __syscall_nr, ret. The layout
 * of these tracepoint records is an ABI (see the format files). */
struct sys_exit_args {
	unsigned short common_type;
	unsigned char common_flags;
	unsigned char common_preempt_count;
	int common_pid;
	long __syscall_nr;
	long ret;
};

struct sys_enter_args {
	unsigned short common_type;
	unsigned char common_flags;
	unsigned char common_preempt_count;
	int common_pid;
	long __syscall_nr;
	unsigned long args[6];
};

/* uapi contexts of the cgroup programs: fixed layouts, read through the
 * verifier's rewrites, not CO-RE */
struct bpf_sock {
	__u32 bound_dev_if;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 mark;
	__u32 priority;
};

struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol;
};

enum pid_type {
	PIDTYPE_PID,
	PIDTYPE_TGID,
	PIDTYPE_PGID,
	PIDTYPE_SID,
	PIDTYPE_MAX,
};

#define PF_EXITING 0x00000004
#define FMODE_CREATED 0x100000
#define S_IFMT 00170000
#define S_IFREG 0100000
#define TMPFS_MAGIC 0x01021994
#define AT_FDCWD -100
#define AT_REMOVEDIR 0x200
#define MAY_WRITE 0x2
#define S_IFCHR 0020000
#define ECHO 0000010
#define PTRACE_TRACEME 0
#define PTRACE_ATTACH 16
#define PTRACE_SEIZE 0x4206
#define PROT_WRITE 0x2
#define MAP_SHARED 0x1
#define PF_KTHREAD 0x00200000
#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define IPPROTO_TCP 6
#define TCP_CLOSE_WAIT 8
#define TCP_LAST_ACK 9
#define TCP_LISTEN 10
#define TCP_CLOSING 11
#define TCP_CLOSE 7
#define IPPROTO_UDP 17
#define EINPROGRESS 115
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define SIGNAL_GROUP_EXIT 0x00000004

#endif

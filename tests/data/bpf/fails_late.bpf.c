// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A program the verifier rejects at its very end, for
 * tests/system/test_libbpf_log.py.
 *
 * A long valid straight line comes first: the verifier logs every
 * instruction of it (far more lines than libbpf_ctypes keeps, and more than
 * 4 KiB), so the reason, the last lines of the log, is only found by a
 * reader that keeps the tail. Then a hash map's value is read without the
 * NULL check: "R0 invalid mem access 'map_value_or_null'" (a hash map: a
 * lookup in an array map with a constant key is known non-NULL on recent
 * kernels).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} cache SEC(".maps");

SEC("raw_tp/sched_process_fork")
int fails_late(void *ctx)
{
	__u64 acc = 1;
	__u32 key = 0;
	__u64 *value;

#pragma unroll
	for (int i = 0; i < 500; i++)
		acc = acc * 3 + bpf_ktime_get_ns();
	value = bpf_map_lookup_elem(&cache, &key);
	return *value + acc; /* no NULL check: rejected */
}

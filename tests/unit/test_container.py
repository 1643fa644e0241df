"""Container identity from cgroup paths: a table of real shapes.

Each row is a path (or a whole /proc/PID/cgroup, for the v1 and hybrid
layouts, read through :func:`quark.procfs.parse_cgroup` as the scrape does)
as a runtime makes it, with the source that documents the shape. The ids
are made up; their lengths are the real ones.
"""

from __future__ import annotations

import pickle

import pytest

from quark import Container, Process
from quark.container import RUNTIMES, container_of
from quark.procfs import CgroupSource, cgroup_source, parse_cgroup

ID = "f6aa2e3fa923d32f4d7905727cf1011148e4da0fd101492e98a27e8c55c5c829"
ID2 = "c6fa62a9938149f6098fd0cdaffc9cdf0f526f25d97b5f6e2a4cc1fccc7f7ce1"
UID = "a00e29fd-7bbd-11e9-8679-fa163ea7e3b8"
UID_ = UID.replace("-", "_")  # systemd slice names write "-" as "_"
BURST = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"  # noqa: E501
BEST = f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"  # noqa: E501
U1000 = "/user.slice/user-1000.slice/user@1000.service"

DOCKER_DOCS = "docs.docker.com/engine/containers/runmetrics/ (Find the cgroup for a given container)"  # noqa: E501
K8S_DRIVERS = "kubernetes pkg/kubelet/cm/cgroup_manager_linux.go (systemd: kubepods-<qos>-pod<uid>.slice, '-' as '_'; cgroupfs: kubepods/<qos>/pod<uid>)"  # noqa: E501
RUNC_SYSTEMD = "runc libcontainer/cgroups/systemd (cgroupsPath slice:prefix:name -> <prefix>-<name>.scope)"  # noqa: E501
CRIO_CGMGR = "cri-o internal/config/cgmgr/{systemd,cgroupfs}.go (crio-<id>[.scope], crio-conmon-<id>[.scope])"  # noqa: E501
PODMAN = "podman docs/source/markdown/podman-run.1.md --cgroup-parent; libpod/runtime_ctr.go (machine.slice, libpod_parent, libpod-<id>, libpod-conmon-<id>)"  # noqa: E501
LXC = "lxc doc/lxc.container.conf.sgml.in lxc.cgroup.dir.container/monitor (lxc.payload.<name>, lxc.monitor.<name>); LXC 3 lxc.cgroup.pattern lxc/%n"  # noqa: E501
NSPAWN = "systemd docs/CGROUP_DELEGATION.md, systemd-nspawn(1) (systemd-nspawn@.service with payload/supervisor; machine-<name>.scope)"  # noqa: E501
UPSTREAM = "elastic/quark quark-test.c t_cgroup_parse"

# (cgroup or whole /proc/PID/cgroup, expected container, source)
CASES: list[tuple[str, Container | None, str]] = [
    # docker
    (
        f"/system.slice/docker-{ID}.scope",
        Container(ID, "docker"),
        DOCKER_DOCS + ": v2, systemd driver",
    ),
    (
        f"/docker/{ID}",
        Container(ID, "docker"),
        DOCKER_DOCS + ": v2 and v1, cgroupfs driver",
    ),
    (
        f"{U1000}/user.slice/docker-{ID}.scope",
        Container(ID, "docker"),
        "docs.docker.com/engine/security/rootless/ (rootless, systemd driver)",
    ),
    (
        f"/docker/{ID}/docker/{ID2}",
        Container(ID2, "docker"),
        "moby/moby hack/dind: docker-in-docker, cgroupfs in cgroupfs",
    ),
    (
        f"/system.slice/docker-{ID}.scope/docker/{ID2}",
        Container(ID2, "docker"),
        "moby/moby hack/dind: dind on a v2 host, inner cgroupfs driver",
    ),
    (
        f"/system.slice/docker-{ID}.scope/init.scope",
        Container(ID, "docker"),
        "systemd as a container's init: systemd's init.scope below the "
        "container (systemd docs/CONTAINER_INTERFACE.md)",
    ),
    (f"foo/docker-{ID}.scope", Container(ID, "docker"), UPSTREAM),
    (
        "foo/docker-abc123def456.scope",
        Container("abc123def456", "docker"),
        UPSTREAM + " (short ids count)",
    ),
    # containerd
    (
        f"{BURST}/cri-containerd-{ID}.scope",
        Container(ID, "containerd", UID, "Burstable"),
        K8S_DRIVERS + "; containerd CRI systemd cgroup path "
        "kubepods-...slice:cri-containerd:<id>, " + RUNC_SYSTEMD,
    ),
    (
        f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope",
        Container(ID, "containerd", UID, "Guaranteed"),
        K8S_DRIVERS + ": Guaranteed pods sit right under kubepods",
    ),
    (
        "foo/containerd-abc123def456.scope",
        Container("abc123def456", "containerd"),
        UPSTREAM,
    ),
    (
        f"/kubepods/besteffort/pod{UID}/{ID}",
        Container(ID, "unknown", UID, "BestEffort"),
        K8S_DRIVERS + ": cgroupfs driver, the container's id as its name",
    ),
    (
        f"/kubepods/burstable/pod{UID}/{ID}",
        Container(ID, "unknown", UID, "Burstable"),
        K8S_DRIVERS,
    ),
    (
        f"/kubepods/pod{UID}/{ID}",
        Container(ID, "unknown", UID, "Guaranteed"),
        K8S_DRIVERS,
    ),
    (
        f"/system.slice/docker-{ID2}.scope/kubelet.slice/kubelet-kubepods.slice"
        f"/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod"
        f"{UID_}.slice/cri-containerd-{ID}.scope",
        Container(ID, "containerd", UID, "BestEffort"),
        "kubernetes-sigs/kind images/base/files/etc/default/kubelet "
        "(--cgroup-root=/kubelet): Kubernetes nested in a docker container",
    ),
    (
        f"/ecs/5a0d5ceddf6c44a1928d9e6d77bb6d3c/{ID}",
        Container(ID, "unknown"),
        "aws/amazon-ecs-agent agent/taskresource/cgroup (cgroup parent "
        "/ecs/<task id>)",
    ),
    # cri-o
    (
        f"{BEST}/crio-{ID}.scope",
        Container(ID, "cri-o", UID, "BestEffort"),
        CRIO_CGMGR,
    ),
    (
        f"{BEST}/crio-conmon-{ID}.scope",
        None,
        CRIO_CGMGR + ": conmon, the monitor, is not in the container",
    ),
    (
        f"{BURST}/crio-{ID}.scope/container",
        Container(ID, "cri-o", UID, "Burstable"),
        "containers/crun crun.1.md run.oci.systemd.subgroup (default "
        "'container' under the systemd driver on v2)",
    ),
    (
        f"/kubepods/burstable/pod{UID}/crio-{ID}",
        Container(ID, "cri-o", UID, "Burstable"),
        CRIO_CGMGR + ": cgroupfs driver",
    ),
    (
        f"/kubepods/burstable/pod{UID}/crio-conmon-{ID}",
        None,
        CRIO_CGMGR + ": cgroupfs driver's conmon",
    ),
    (
        "foo/crio-0123456789abcdef.scope",
        Container("0123456789abcdef", "cri-o"),
        UPSTREAM,
    ),
    # podman
    (
        f"/machine.slice/libpod-{ID}.scope",
        Container(ID, "podman"),
        PODMAN + ": rootful, systemd driver",
    ),
    (
        f"/machine.slice/libpod-conmon-{ID}.scope",
        None,
        PODMAN + ": conmon's scope",
    ),
    (
        f"{U1000}/user.slice/libpod-{ID}.scope",
        Container(ID, "podman"),
        "podman docs/tutorials/rootless_tutorial.md: rootless under "
        "user.slice",
    ),
    (
        f"{U1000}/user.slice/libpod-{ID}.scope/container",
        Container(ID, "podman"),
        "containers/crun crun.1.md run.oci.systemd.subgroup",
    ),
    (
        f"/libpod_parent/libpod-{ID}",
        Container(ID, "podman"),
        PODMAN + ": cgroupfs driver",
    ),
    (
        f"/machine.slice/machine-libpod_pod_{ID2}.slice/libpod-{ID}.scope",
        Container(ID, "podman"),
        PODMAN + ": a container of a pod",
    ),
    (
        f"/machine.slice/machine-libpod_pod_{ID2}.slice",
        None,
        PODMAN + ": a pod's slice is not a container",
    ),
    # lxc, LXD, Incus
    ("/lxc.payload.c1", Container("c1", "lxc"), LXC),
    ("/lxc.monitor.c1", None, LXC + ": the monitor"),
    ("/lxc/101", Container("101", "lxc"), LXC + " (Proxmox VE's /lxc/<vmid>)"),
    (
        "/lxc.payload.c1/init.scope",
        Container("c1", "lxc"),
        LXC + ": a system container's own init",
    ),
    (
        f"/lxc.payload.c1/system.slice/docker-{ID}.scope",
        Container(ID, "docker"),
        "docker nested in an LXD container (security.nesting)",
    ),
    # systemd-nspawn, machined
    (
        "/machine.slice/systemd-nspawn@web.service/payload",
        Container("web", "systemd-nspawn"),
        NSPAWN,
    ),
    (
        "/machine.slice/systemd-nspawn@web.service/supervisor",
        None,
        NSPAWN + ": nspawn itself",
    ),
    (
        "/machine.slice/machine-web.scope",
        Container("web", "systemd-nspawn"),
        NSPAWN + " (registered from a shell)",
    ),
    (
        "/machine.slice/machine-qemu\\x2d1\\x2dvm1.scope/libvirt/emulator",
        None,
        "libvirt docs/cgroups.rst: a virtual machine, not a container",
    ),
    # runc alone
    (
        f"{U1000}/user.slice/runc-foo.scope",
        Container("foo", "unknown"),
        "opencontainers/runc docs/cgroup-v2.md (rootless, systemd driver)",
    ),
    # not containers
    ("/", None, "cgroups(7): the root"),
    ("", None, "a cgroup seen but empty"),
    ("/init.scope", None, "systemd docs/CGROUP_DELEGATION.md: PID 1"),
    (
        "/user.slice/user-1000.slice/session-2.scope",
        None,
        "systemd docs/CGROUP_DELEGATION.md: a login session",
    ),
    ("/system.slice/containerd.service", None, "the runtime's daemon"),
    ("/system.slice/docker.service", None, "the runtime's daemon"),
    (f"{BURST}", None, K8S_DRIVERS + ": the pod's own cgroup"),
    ("docker-.scope", None, UPSTREAM + " (negative)"),
    ("nothex", None, UPSTREAM + " (negative)"),
    ("something-abcdef.scope", None, UPSTREAM + " (negative)"),
    ("docker-abcdef.scopeX", None, UPSTREAM + " (negative)"),
    # whole /proc/PID/cgroup files: v1 (legacy), hybrid, v2
    (
        "12:pids:/docker/" + ID + "\n"
        "11:memory:/docker/" + ID + "\n"
        "10:cpu,cpuacct:/docker/" + ID + "\n"
        "1:name=systemd:/docker/" + ID + "\n",
        Container(ID, "docker"),
        DOCKER_DOCS + ": v1 (legacy), cgroupfs driver; the pids line",
    ),
    (
        "11:pids:/system.slice/docker-" + ID + ".scope\n"
        "4:memory:/system.slice/docker-" + ID + ".scope\n"
        "1:name=systemd:/system.slice/docker-" + ID + ".scope\n"
        "0::/system.slice/docker-" + ID + ".scope\n",
        Container(ID, "docker"),
        "systemd docs/CGROUP_DELEGATION.md hybrid layout: the unit in the "
        "unified hierarchy too",
    ),
    (
        "13:pids:/docker/" + ID + "\n"
        "4:memory:/docker/" + ID + "\n"
        "0::/docker/" + ID + "\n",
        Container(ID, "docker"),
        "opencontainers/runc issue #4047: runc joins "
        "/sys/fs/cgroup/unified/<path> too on a hybrid host",
    ),
    (
        "12:hugetlb:/kubepods/besteffort/pod" + UID + "/" + ID + "\n"
        "11:pids:/kubepods/besteffort/pod" + UID + "/" + ID + "\n",
        Container(ID, "unknown", UID, "BestEffort"),
        K8S_DRIVERS + ": v1, cgroupfs driver",
    ),
    (
        "9:name=systemd:/\n8:pids:/\n0::/\n",
        None,
        "this CI host (hybrid, every process in the root)",
    ),
    (
        "0::/system.slice/docker-" + ID + ".scope\n",
        Container(ID, "docker"),
        "cgroups(7): a v2 host, one line",
    ),
]


def _cgroup(text: str) -> str | None:
    return parse_cgroup(text) if "\n" in text else text


@pytest.mark.parametrize(
    "text,want,source", CASES, ids=[str(i) for i in range(len(CASES))]
)
def test_shapes(text: str, want: Container | None, source: str) -> None:
    assert source
    assert container_of(_cgroup(text)) == want
    assert Process(pid=1, cgroup=_cgroup(text)).container == want


def test_enough_shapes_and_every_runtime() -> None:
    assert len(CASES) >= 30
    found = {c.runtime for _, c, _ in CASES if c is not None}
    assert found == set(RUNTIMES)


def test_unknown_cgroup() -> None:
    assert Process(pid=1).container is None
    assert container_of(None) is None


def test_parse_cgroup_layouts() -> None:
    # v2 (and hybrid): the 0:: line, wherever it is
    assert parse_cgroup("0::/a\n") == "/a"
    assert parse_cgroup("8:pids:/b\n0::/a\n") == "/a"
    # v1 (legacy): the pids line
    assert parse_cgroup("9:name=systemd:/c\n8:pids:/b\n4:memory:/d\n") == "/b"
    # v1 without a pids hierarchy: the named systemd one, then any
    assert parse_cgroup("9:name=systemd:/c\n4:memory:/d\n") == "/c"
    assert parse_cgroup("4:memory:/d\n") == "/d"
    assert parse_cgroup("") is None


# /proc/cgroups of a Debian 6.1 kernel: every subsystem in id order
PROC_CGROUPS = """#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t0\t1\t1
cpu\t0\t1\t1
cpuacct\t0\t1\t1
blkio\t0\t1\t1
memory\t0\t1\t1
devices\t0\t1\t1
freezer\t0\t1\t1
net_cls\t0\t1\t1
perf_event\t0\t1\t1
net_prio\t0\t1\t1
hugetlb\t0\t1\t1
pids\t3\t1\t1
rdma\t0\t1\t1
misc\t0\t1\t1
"""


def test_the_records_read_the_hierarchy_the_scrape_reads() -> None:
    """cgroup_source names the hierarchy parse_cgroup takes its path from,
    for the backends' records to read the same one."""
    # v2 and hybrid: the unified hierarchy, whatever v1 has
    assert cgroup_source("0::/a\n", PROC_CGROUPS) == CgroupSource(0)
    hybrid = "12:pids:/b\n1:name=systemd:/c\n0::/a\n"
    assert cgroup_source(hybrid, PROC_CGROUPS).v2
    # legacy: the pids controller, by its hierarchy and subsystem id
    legacy = "9:name=systemd:/c\n3:pids:/b\n4:memory:/d\n"
    assert parse_cgroup(legacy) == "/b"
    assert cgroup_source(legacy, PROC_CGROUPS) == CgroupSource(3, 11)
    # a named hierarchy (or a controller we do not read): no program can
    assert cgroup_source("9:name=systemd:/c\n", PROC_CGROUPS) == (
        CgroupSource(None)
    )
    assert cgroup_source("4:memory:/d\n", PROC_CGROUPS).hierarchy is None


def test_container_is_immutable_and_pickles() -> None:
    c = Container(ID, "docker", UID, "Burstable")
    with pytest.raises(AttributeError):
        c.id = "x"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(c)) == c
    p = Process(pid=3, cgroup=f"/docker/{ID}")
    assert pickle.loads(pickle.dumps(p)).container == Container(ID, "docker")

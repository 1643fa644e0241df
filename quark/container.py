"""Container identity from a cgroup path, and nothing else.

A container runtime names the cgroup it puts a container in after the
container's id; Kubernetes names the cgroups above it after the pod's QoS
class and uid. :func:`container_of` reads those names back from
:attr:`quark.Process.cgroup`, with no runtime socket and no API call, so a
process scraped at open and one first seen by an event get the same answer.

The path is walked from its leaf up, and the first component with a
container's shape names the container: the innermost one, so a container
nested in another (docker-in-docker, a podman container in a Kubernetes
pod) is the inner one, and a runtime's sub-cgroups below the container
(podman's ``container``, systemd-nspawn's ``payload``, a systemd
``init.scope`` inside a container) are looked through. The shapes, each
for both cgroup drivers (systemd's ``.scope`` units and cgroupfs's plain
directories) and for every layout (the path is the same in v1 and v2):

==================  ====================================================
runtime             component
==================  ====================================================
``docker``          ``docker-<id>.scope``; ``<id>`` under ``docker``
``containerd``      ``cri-containerd-<id>.scope``, ``containerd-<id>.scope``
``cri-o``           ``crio-<id>.scope``, ``crio-<id>``
``podman``          ``libpod-<id>.scope``, ``libpod-<id>``
``lxc``             ``lxc.payload.<name>``, ``lxc.payload``'s ``<name>``,
                    ``<name>`` under ``lxc``
``systemd-nspawn``  ``systemd-nspawn@<name>.service``,
                    ``machine-<name>.scope`` (not a libvirt VM's)
``unknown``         ``runc-<name>.scope`` (runc's own systemd driver); a
                    bare 64-hex-digit id anywhere else (Kubernetes'
                    cgroupfs driver, containerd's ``<namespace>/<id>``,
                    Amazon ECS's ``ecs/<task>/<id>``)
==================  ====================================================

A runtime's monitor, outside the container, is not the container:
``crio-conmon-<id>.scope``, ``libpod-conmon-<id>.scope`` and
``lxc.monitor.<name>`` and systemd-nspawn's ``supervisor`` are skipped
(so they give ``None``, or the container around them when nested), as is
libvirt's ``machine-qemu-N-name.scope``, a virtual machine.

A pod is the ``pod<uid>`` component (cgroupfs) or the
``kubepods[-<qos>]-pod<uid>.slice`` unit (systemd, the uid's ``-`` written
``_``) above the container; its QoS class is ``Burstable`` or
``BestEffort`` when the pod sits under that class's cgroup, else
``Guaranteed``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

__all__ = ["RUNTIMES", "Container", "container_of"]

#: The values of :attr:`Container.runtime`.
RUNTIMES = (
    "docker",
    "containerd",
    "cri-o",
    "podman",
    "lxc",
    "systemd-nspawn",
    "unknown",
)


@dataclass(frozen=True, slots=True)
class Container:
    """The container a process runs in, as its cgroup path names it.

    - ``id``: the runtime's id (64 hex digits for docker, containerd,
      cri-o and podman; the container's name for lxc and systemd-nspawn);
    - ``runtime``: one of :data:`RUNTIMES` (``unknown`` when the path has
      a container id but does not say which runtime);
    - ``pod_uid``: the Kubernetes pod's uid, when the path shows one;
    - ``qos``: the pod's QoS class (``Guaranteed``, ``Burstable`` or
      ``BestEffort``), when the path shows a pod.
    """

    id: str
    runtime: str
    pod_uid: str | None = None
    qos: str | None = None


_HEX = r"[0-9a-f]+"
_HEX64 = r"[0-9a-f]{64}"
_UID = (
    r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_]"
    r"[0-9a-f]{12}"
)
# libvirt's machined scopes: machine-qemu-N-name, machine-lxc-N-name
_LIBVIRT = r"(?:qemu|lxc)(?:-|\\x2d)[0-9]+(?:-|\\x2d)"

# (runtime, pattern on one path component, with the group "id"); the
# runtime's prefix makes any hex id count (upstream's t_cgroup_parse)
_SHAPES: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (runtime, re.compile(pattern))
    for runtime, pattern in (
        ("docker", rf"docker-(?P<id>{_HEX})\.scope"),
        ("containerd", rf"(?:cri-)?containerd-(?P<id>{_HEX})\.scope"),
        ("cri-o", rf"crio-(?P<id>{_HEX})(?:\.scope)?"),
        ("podman", rf"libpod-(?P<id>{_HEX})(?:\.scope)?"),
        ("lxc", r"lxc\.payload\.(?P<id>.+)"),
        ("systemd-nspawn", r"systemd-nspawn@(?P<id>.+)\.service"),
        ("systemd-nspawn", rf"machine-(?!{_LIBVIRT}|libpod_pod_)(?P<id>.+)"
                           r"\.scope"),
        ("unknown", r"runc-(?P<id>.+)\.scope"),
    )
)  # fmt: skip
_BARE = re.compile(_HEX64)
# a bare id's parent -> the runtime that names it so
_BARE_PARENT = {"docker": "docker"}
# a named container's parent -> its runtime (cgroupfs drivers)
_NAMED_PARENT = {"lxc": "lxc", "lxc.payload": "lxc"}
# a runtime's monitor, beside or above its container and outside it
_MONITOR = re.compile(r"crio-conmon-.*|libpod-conmon-.*|lxc\.monitor.*")
# systemd-nspawn's own sub-cgroup (its container's is "payload")
_NSPAWN_SUPERVISOR = "supervisor"

# kubepods[-<qos>]-pod<uid>.slice (also under a prefix, as kind's
# kubelet-kubepods-...), or pod<uid>
_POD = re.compile(
    rf"(?:(?:.*-)?kubepods(?:-(?P<sqos>burstable|besteffort))?-)?"
    rf"pod(?P<uid>{_UID})(?:\.slice)?"
)
_QOS_DIR = re.compile(r"(?:.*-)?(?P<qos>burstable|besteffort)(?:\.slice)?")
_QOS = {"burstable": "Burstable", "besteffort": "BestEffort"}


def _unescape(name: str) -> str:
    r"""A systemd unit name's ``\xNN`` escapes decoded (systemd.unit(5))."""
    return re.sub(
        r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), name
    )


def _match(parts: list[str], i: int) -> tuple[str, str] | None:
    """(runtime, id) if component ``i`` names a container."""
    name = parts[i]
    parent = parts[i - 1] if i > 0 else ""
    for runtime, pattern in _SHAPES:
        m = pattern.fullmatch(name)
        if m is not None:
            return runtime, _unescape(m.group("id"))
    if _BARE.fullmatch(name):
        return _BARE_PARENT.get(parent, "unknown"), name
    named = _NAMED_PARENT.get(parent)
    if named is not None:
        return named, name
    return None


def _pod(parts: list[str]) -> tuple[str | None, str | None]:
    """(pod uid, QoS class) from the components above a container."""
    for i in range(len(parts) - 1, -1, -1):
        m = _POD.fullmatch(parts[i])
        if m is None:
            continue
        uid = m.group("uid").replace("_", "-")
        qos = m.group("sqos")
        if qos is None and i > 0:
            d = _QOS_DIR.fullmatch(parts[i - 1])
            qos = d.group("qos") if d else None
        return uid, _QOS[qos] if qos else "Guaranteed"
    return None, None


@functools.lru_cache(maxsize=4096)
def container_of(cgroup: str | None) -> Container | None:
    """The container that the cgroup path ``cgroup`` names, or ``None``.

    ``cgroup`` is a path as :attr:`quark.Process.cgroup` holds it (a line
    of /proc/PID/cgroup without its ``hierarchy:controllers:`` head).
    Results are cached: a host has few distinct cgroups.
    """
    if not cgroup:
        return None
    parts = [p for p in cgroup.split("/") if p]
    i = len(parts)
    while i > 0:
        i -= 1
        if _MONITOR.fullmatch(parts[i]):
            continue  # the monitor is outside its container
        supervisor = parts[i] == _NSPAWN_SUPERVISOR
        if supervisor and i > 0 and _match(parts, i - 1) is not None:
            i -= 1  # systemd-nspawn itself, beside its "payload"
            continue
        found = _match(parts, i)
        if found is not None:
            runtime, cid = found
            pod_uid, qos = _pod(parts[:i])
            return Container(cid, runtime, pod_uid, qos)
    return None

"""A container in the ECS document, quark-mon's dump and the rules DSL."""

from __future__ import annotations

import pytest

from quark import EV, Event, Process, RuleError
from quark.dump import dump_event
from quark.ecs import EcsEncoder
from quark.rules import Ruleset
from quark.sysinfo import HostInfo

ID = "f6aa2e3fa923d32f4d7905727cf1011148e4da0fd101492e98a27e8c55c5c829"
UID = "a00e29fd-7bbd-11e9-8679-fa163ea7e3b8"
POD = (
    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
    + UID.replace("-", "_")
    + ".slice/cri-containerd-"
    + ID
    + ".scope"
)
HOST = HostInfo("h", "x86_64", "6.1.0", "boot-id", {"NAME": "Debian"})


def _ev(cgroup: str | None) -> Event:
    p = Process(pid=7, ppid=1, comm="sh", exe="/bin/sh", cgroup=cgroup)
    return Event(events=EV.EXEC, time=1, process=p)


def _doc(cgroup: str | None) -> dict:
    enc = EcsEncoder(lambda pid: None, host=HOST, clock_offsets=(0, 0))
    return enc.document(_ev(cgroup))


def test_ecs_container_and_pod() -> None:
    doc = _doc(POD)
    assert doc["container"] == {"id": ID, "runtime": "containerd"}
    assert doc["orchestrator"] == {
        "type": "kubernetes",
        "resource": {"type": "pod", "id": UID},
    }


def test_ecs_container_without_pod_and_none_outside() -> None:
    doc = _doc(f"/system.slice/docker-{ID}.scope")
    assert doc["container"] == {"id": ID, "runtime": "docker"}
    assert "orchestrator" not in doc
    for cgroup in ("/user.slice/user-0.slice/session-1.scope", "/", None):
        doc = _doc(cgroup)
        assert "container" not in doc and "orchestrator" not in doc


def test_dump_cont_line() -> None:
    lines = dump_event(_ev(POD)).splitlines()
    assert (
        f"  CONT\tid={ID} runtime=containerd pod_uid={UID} qos=Burstable"
        in lines
    )
    lines = dump_event(_ev(f"/docker/{ID}")).splitlines()
    assert f"  CONT\tid={ID} runtime=docker pod_uid=? qos=?" in lines
    assert not any(
        x.startswith("  CONT") for x in dump_event(_ev("/")).splitlines()
    )


@pytest.mark.parametrize(
    "rule,cgroup,hit",
    [
        (f"drop on container.id {ID}", POD, True),
        ("drop on container.id f6aa*", POD, True),
        ("drop on container.id 0000*", POD, False),
        ("drop on container.runtime containerd", POD, True),
        ("drop on container.runtime docker", POD, False),
        ("drop on container.runtime *", "/", False),  # not in a container
        ("drop on container.runtime *", None, False),
        ("drop on container.runtime docker", f"/docker/{ID}", True),
        (
            "drop on container.runtime docker process.exe /bin/sh",
            f"/docker/{ID}",
            True,
        ),
    ],
)
def test_rules_container_fields(
    rule: str, cgroup: str | None, hit: bool
) -> None:
    rs = Ruleset.parse(rule)
    assert rs.rules[0].test(_ev(cgroup), None) is hit


def test_rules_unknown_runtime_is_named() -> None:
    with pytest.raises(RuleError, match="'dockr' is none of docker"):
        Ruleset.parse("drop on container.runtime dockr")

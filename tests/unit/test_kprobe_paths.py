"""The KPROBE backend's paths: names fetched up to a filesystem's root,
mount ids through mountinfo, and deeper paths completed from /proc only
when it agrees."""

from __future__ import annotations

import os
import pathlib

from quark.backends.kprobe import (
    MountTable,
    PathResolver,
    online_cpus,
    parse_mountinfo,
)
from quark.backends.kprobe_decode import path_in_fs


def test_path_in_fs() -> None:
    assert path_in_fs([b"c", b"b", b"/", b"/"]) == "/b/c"
    assert path_in_fs([b"/", b"/"]) == "/"
    assert path_in_fs([b"c", b"b", b"a"]) is None  # deeper than fetched
    assert path_in_fs([b"c", b"", b"/"]) is None  # a fault on the way


def test_mountinfo_with_escapes() -> None:
    text = (
        "21 1 0:19 / / rw - 9p host rw\n"
        "35 21 0:33 / /tmp rw - overlay overlay rw\n"
        "40 21 8:1 /srv/data /mnt/with\\040space rw - ext4 /dev/sda1 rw\n"
    )
    assert parse_mountinfo(text) == {
        21: ("/", "/"),
        35: ("/", "/tmp"),
        40: ("/srv/data", "/mnt/with space"),
    }


def _proc(tmp_path: pathlib.Path, mountinfo: str) -> pathlib.Path:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mountinfo").write_text(mountinfo)
    return tmp_path


def test_paths_across_mounts_and_bind_mounts(tmp_path: pathlib.Path) -> None:
    proc = _proc(
        tmp_path,
        "21 1 0:19 / / rw - 9p host rw\n"
        "35 21 0:33 / /tmp rw - overlay overlay rw\n"
        "40 21 8:1 /srv/data /mnt rw - ext4 /dev/sda1 rw\n",
    )
    r = PathResolver(MountTable(str(proc)), str(proc))
    assert r(1, "cwd", 21, [b"bin", b"usr", b"/"]) == "/usr/bin"
    assert r(1, "cwd", 35, [b"d", b"/"]) == "/tmp/d"
    assert r(1, "cwd", 35, [b"/"]) == "/tmp"
    assert r(1, "cwd", 40, [b"x", b"data", b"srv", b"/"]) == "/mnt/x"
    assert r(1, "cwd", 40, [b"data", b"srv", b"/"]) == "/mnt"
    assert r.unknown == 0


def test_a_deep_path_is_completed_only_when_proc_agrees(
    tmp_path: pathlib.Path,
) -> None:
    proc = _proc(tmp_path, "21 1 0:19 / / rw - 9p host rw\n")
    deep = "/a/b/c/d/e/f/g/h/i"
    for pid, target in ((7, deep), (8, "/elsewhere/h/i"), (9, deep)):
        (proc / str(pid)).mkdir()
        os.symlink(target, proc / str(pid) / "cwd")
    r = PathResolver(MountTable(str(proc)), str(proc))
    leaf = [b"i", b"h", b"g"]  # what the kernel gave: no root in sight
    assert r(7, "cwd", 21, leaf) == deep
    assert r.from_proc == 1
    assert r(8, "cwd", 21, leaf) is None  # /proc says otherwise
    assert r(10, "cwd", 21, leaf) is None  # gone
    assert r(10, "cwd", 21, leaf, 9) == deep  # the parent shares it
    assert r(7, "cwd", 21, [b"i", b"", b"g"]) is None  # a fault
    assert r.unknown == 3


def test_online_cpus(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "online"
    f.write_text("0-3,5,7-8\n")
    assert online_cpus(str(f)) == [0, 1, 2, 3, 5, 7, 8]

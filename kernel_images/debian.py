"""Fetch Debian packages from suites this machine is not configured for.

The system's apt sources name Debian's archive (and its security archive)
for bookworm only. The same archives serve the other suites, so this module
reads their URIs from the system's configuration (never a hard-coded host),
writes a private apt configuration under the cache with the suites the
kernel matrix needs, and runs ``apt-get update`` / ``apt-get download`` on
it. Nothing of the system's apt state is touched. Downloads are cached
under :func:`cache_dir` and reused; a lock file serialises concurrent
callers.
"""

from __future__ import annotations

import fcntl
import glob
import os
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

__all__ = [
    "FetchError",
    "cache_dir",
    "download",
    "download_many",
    "extract",
    "search",
    "system_uris",
    "unpacked",
]

SUITES = ("bullseye", "bookworm", "trixie", "sid")
SECURITY_SUITES = ("bullseye-security", "bookworm-security", "trixie-security")
# the architectures whose packages the private configuration lists: the
# offset table covers arm64 kernels too
ARCHES = ("amd64", "arm64")
REFRESH_SECONDS = 24 * 3600
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class FetchError(RuntimeError):
    """A package could not be found or fetched; the message says why."""


def cache_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/quark`` (``~/.cache/quark`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    d = pathlib.Path(base) / "quark"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _log(msg: str) -> None:
    print(f"kernel_images: {msg}", file=sys.stderr, flush=True)


def _sources_entries() -> Iterator[tuple[str, list[str]]]:
    """(uri, suites) from deb822 .sources and one-line .list files."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path) as f:
            text = f.read()
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if fields.get("types", "deb").split()[0] != "deb":
                continue
            if fields.get("enabled", "yes").lower() == "no":
                continue
            for uri in fields.get("uris", "").split():
                yield uri, fields.get("suites", "").split()
    lists = [
        "/etc/apt/sources.list",
        *sorted(glob.glob("/etc/apt/sources.list.d/*.list")),
    ]
    for path in lists:
        try:
            with open(path) as f:
                lines = f.readlines()
        except OSError:
            continue
        for line in lines:
            words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                yield words[1], [words[2]]


def system_uris() -> tuple[str, str]:
    """The Debian archive's URI and its security archive's URI, as this
    system is configured."""
    main = security = None
    for uri, suites in _sources_entries():
        if any(s.endswith("-security") for s in suites):
            security = security or uri
        elif any(s.split("-")[0] in SUITES for s in suites):
            main = main or uri
    if main is None:
        raise FetchError(
            "no Debian archive in the system's apt sources "
            "(/etc/apt/sources.list.d/*.sources or sources.list)"
        )
    if security is None:
        security = main.rstrip("/") + "-security"
    return main, security


class _Apt:
    """A private apt configuration under the cache."""

    def __init__(self) -> None:
        self.root = cache_dir() / "apt"
        for sub in ("lists/partial", "archives/partial", "etc", "debs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        status = self.root / "status"
        if not status.exists():  # its mtime would void apt's cache
            status.touch()
        main, security = system_uris()
        opts = [f"arch={','.join(ARCHES)}"]
        if os.path.exists(KEYRING):
            opts.append(f"signed-by={KEYRING}")
        signed = f"[{' '.join(opts)}]"
        lines = [f"deb {signed} {main} {s} main" for s in SUITES]
        lines += [f"deb {signed} {security} {s} main" for s in SECURITY_SUITES]
        self.sources = self.root / "etc" / "sources.list"
        text = "\n".join(lines) + "\n"
        if not self.sources.exists() or self.sources.read_text() != text:
            self.sources.write_text(text)
            (self.root / "updated").unlink(missing_ok=True)

    def options(self) -> list[str]:
        r = self.root
        return [
            f"-oDir::Etc::SourceList={self.sources}",
            "-oDir::Etc::SourceParts=/nonexistent",
            f"-oDir::State::Lists={r / 'lists'}",
            f"-oDir::State::Status={r / 'status'}",
            f"-oDir::Cache={r}",
            f"-oDir::Cache::pkgcache={r / 'pkgcache.bin'}",
            f"-oDir::Cache::srcpkgcache={r / 'srcpkgcache.bin'}",
            f"-oDir::Cache::Archives={r / 'archives'}",
            "-oAPT::Get::List-Cleanup=0",
            *(f"-oAPT::Architectures::={a}" for a in ARCHES),
            "-oAcquire::Languages=none",
            "-qq",
        ]

    def update(self) -> None:
        stamp = self.root / "updated"
        if stamp.exists() and time.time() - stamp.stat().st_mtime < (
            REFRESH_SECONDS
        ):
            return
        _log(
            "apt-get update (private configuration: "
            f"{', '.join(SUITES + SECURITY_SUITES)})"
        )
        r = subprocess.run(
            ["apt-get", *self.options(), "update"],
            capture_output=True,
            text=True,
        )
        if r.returncode != 0:
            raise FetchError(f"apt-get update failed: {r.stderr.strip()}")
        stamp.touch()


@contextmanager
def _locked() -> Iterator[_Apt]:
    lock = cache_dir() / "apt.lock"
    with open(lock, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            apt = _Apt()
            apt.update()
            yield apt
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def search(regex: str, suites: Sequence[str] = SUITES) -> list[str]:
    """Names of the packages matching ``regex`` (apt-cache's rules)."""
    with _locked() as apt:
        r = subprocess.run(
            ["apt-cache", *apt.options(), "search", "--names-only", regex],
            capture_output=True, text=True,
        )  # fmt: skip
    if r.returncode != 0:
        raise FetchError(f"apt-cache search failed: {r.stderr.strip()}")
    return sorted({line.split(" - ", 1)[0] for line in r.stdout.splitlines()})


def download(
    package: str, suites: Sequence[str] = SUITES, arch: str | None = None
) -> pathlib.Path:
    """The package's .deb (downloaded once, then from the cache); ``arch``
    for another architecture's package (``arm64``)."""
    return download_many([(package, arch)])[package]


def download_many(
    packages: Sequence[tuple[str, str | None]],
) -> dict[str, pathlib.Path]:
    """Each (package, architecture or None)'s .deb, the missing ones
    fetched by one ``apt-get download`` (each run loads every suite's
    package lists: some seconds)."""
    with _locked() as apt:
        debs = apt.root / "debs"

        def cached(name: str) -> pathlib.Path | None:
            found = sorted(debs.glob(f"{name}_*.deb"))
            return found[-1] if found else None

        missing = [(p, a) for p, a in packages if cached(p) is None]
        if missing:
            _log(f"downloading {', '.join(p for p, _ in missing)}")
            r = subprocess.run(
                ["apt-get", *apt.options()[:-1], "download",
                 *(f"{p}:{a}" if a else p for p, a in missing)],
                cwd=debs, text=True, stderr=subprocess.PIPE,
            )  # fmt: skip
            if r.returncode != 0:
                names = " ".join(p for p, _ in missing)
                raise FetchError(
                    f"apt-get download {names} failed: {r.stderr.strip()}"
                )
        out = {}
        for p, _ in packages:
            deb = cached(p)
            if deb is None:
                raise FetchError(f"apt-get download {p} left no .deb")
            out[p] = deb
        return out


def extract(deb: pathlib.Path) -> pathlib.Path:
    """The .deb unpacked (``dpkg-deb -x``) into the cache, once."""
    out = cache_dir() / "extracted" / deb.stem
    done = out / ".complete"
    if done.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    _log(f"extracting {deb.name}")
    r = subprocess.run(
        ["dpkg-deb", "-x", str(deb), str(out)], capture_output=True, text=True
    )
    if r.returncode != 0:
        raise FetchError(f"dpkg-deb -x {deb} failed: {r.stderr.strip()}")
    done.touch()
    return out


def unpacked(package: str, arch: str | None = None) -> pathlib.Path:
    """The package unpacked in the cache: the tree kept from an earlier
    extraction (its .deb may be gone), else downloaded and extracted."""
    for tree in sorted((cache_dir() / "extracted").glob(f"{package}_*")):
        if (tree / ".complete").exists():
            return tree
    return extract(download(package, arch=arch))

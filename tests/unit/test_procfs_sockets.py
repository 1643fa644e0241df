"""The /proc/net/tcp{,6} scrape that seeds the socket cache.

Fixture tables are written as the kernel prints them on a little-endian
host (each ``__be32`` word as a host-order ``%08X``); one test reads the
real /proc.
"""

from __future__ import annotations

import ipaddress
import os
import pathlib
import socket
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quark.errors import DecodeError
from quark.events import SockAddr, SockOrigin
from quark.procfs import parse_tcp_table, scrape_sockets

little_endian_only = pytest.mark.skipif(
    sys.byteorder != "little", reason="fixtures are little-endian tables"
)

HDR4 = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when "
    "retrnsmt   uid  timeout inode\n"
)
HDR6 = (
    "  sl  local_address                         remote_address        "
    "                st tx_queue rx_queue tr tm->when retrnsmt   uid  "
    "timeout inode\n"
)


def kaddr(address: str, port: int, byteorder: str = "little") -> str:
    """How the kernel prints an address:port in /proc/net/tcp{,6}: each
    ``__be32`` word of the address read as a host-order u32, ``%08X``."""
    packed = ipaddress.ip_address(address).packed
    words = (
        int.from_bytes(packed[i : i + 4], byteorder)  # type: ignore[arg-type]
        for i in range(0, len(packed), 4)
    )
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}"


def row(
    sl: int, local: str, remote: str, st: str, inode: int, uid: int = 1000
) -> str:
    return (
        f"{sl:4d}: {local} {remote} {st} 00000000:00000000 00:00000000 "
        f"00000000  {uid:5d}        0 {inode} 1 0000000000000000 20 4 30 "
        "10 -1\n"
    )


def test_kaddr_matches_the_kernel_s_loopback() -> None:
    # /proc/net/tcp on x86 prints 127.0.0.1:80 as 0100007F:0050
    assert kaddr("127.0.0.1", 80) == "0100007F:0050"
    assert kaddr("::1", 22) == "0" * 24 + "01000000:0016"


def write_tree(
    root: pathlib.Path,
    tcp: str | None,
    tcp6: str | None,
    fds: dict[int, dict[str, str]],
) -> None:
    (root / "net").mkdir(parents=True)
    if tcp is not None:
        (root / "net" / "tcp").write_text(tcp)
    if tcp6 is not None:
        (root / "net" / "tcp6").write_text(tcp6)
    (root / "self" / "ns").mkdir(parents=True)
    (root / "self" / "ns" / "net").write_text("")
    for pid, links in fds.items():
        d = root / str(pid) / "fd"
        d.mkdir(parents=True)
        for fd, target in links.items():
            os.symlink(target, d / fd)


@little_endian_only
def test_fixture_tables(tmp_path: pathlib.Path) -> None:
    tcp = HDR4 + "".join(
        [
            row(0, kaddr("127.0.0.1", 8080), kaddr("0.0.0.0", 0), "0A", 100),
            row(
                1,
                kaddr("10.1.2.3", 40000),
                kaddr("93.184.216.34", 443),
                "01",
                101,
            ),
            # TIME_WAIT (06), SYN_SENT (02): not kept; CLOSE_WAIT (08)
            # is still a held connection: kept
            row(2, kaddr("10.1.2.3", 40001), kaddr("1.1.1.1", 443), "06", 0),
            row(3, kaddr("10.1.2.3", 40002), kaddr("1.1.1.1", 443), "08", 103),
            row(4, kaddr("10.1.2.3", 40003), kaddr("1.1.1.1", 443), "02", 104),
            # established but not accepted yet: no inode, no holder
            row(
                5, kaddr("127.0.0.1", 8080), kaddr("127.0.0.1", 5000), "01", 0
            ),
            # malformed lines
            "   6: garbage\n",
            row(7, "XYZ:0050", kaddr("1.1.1.1", 1), "01", 107),
            row(
                8, kaddr("1.1.1.1", 1), kaddr("1.1.1.1", 1), "01", 999
            ).replace(" 999 ", " notanumber "),
            row(9, "0100007F", kaddr("1.1.1.1", 1), "01", 109),
            "\n",
        ]
    )
    tcp6 = HDR6 + "".join(
        [
            row(0, kaddr("::", 22), kaddr("::", 0), "0A", 200),
            row(
                1,
                kaddr("2001:db8::1", 50000),
                kaddr("2001:db8::2", 443),
                "01",
                201,
            ),
            row(
                2,
                kaddr("::ffff:127.0.0.1", 8081),
                kaddr("::ffff:127.0.0.1", 50001),
                "01",
                202,
            ),
            row(3, kaddr("::1", 22), kaddr("::1", 40000), "01", 203),
        ]
    )
    write_tree(
        tmp_path,
        tcp,
        tcp6,
        {
            # lowest pid wins: 30 holds 101 too, 20 is lower
            30: {"0": "/dev/null", "3": "socket:[101]", "4": "pipe:[5]"},
            20: {"5": "socket:[101]", "6": "socket:[200]", "7": "anon"},
            40: {"3": "socket:[100]", "4": "socket:[202]", "9": "socket:[x"},
        },
    )
    # a process whose fds cannot be listed: skipped without a word
    (tmp_path / "10").mkdir()
    (tmp_path / "10" / "fd").write_text("not a directory")
    (tmp_path / "notapid").mkdir()
    got = scrape_sockets(str(tmp_path), now=555)
    net = os.stat(tmp_path / "self" / "ns" / "net").st_ino
    table = [(s.local, s.remote, s.pid_origin, s.pid_last_use) for s in got]
    A = SockAddr.of
    assert table == [
        (A("127.0.0.1", 8080), A("0.0.0.0", 0), 40, 40),
        (A("10.1.2.3", 40000), A("93.184.216.34", 443), 20, 20),
        (A("10.1.2.3", 40002), A("1.1.1.1", 443), None, None),
        (A("::", 22), A("::", 0), 20, 20),
        (A("2001:db8::1", 50000), A("2001:db8::2", 443), None, None),
        (A("::ffff:127.0.0.1", 8081), A("::ffff:127.0.0.1", 50001), 40, 40),
        (A("::1", 22), A("::1", 40000), None, None),
    ]
    for s in got:
        assert s.conn_origin is SockOrigin.SCRAPE
        assert s.established_time == 555
        assert s.close_time is None
        assert s.bytes_sent is None and s.bytes_received is None
        assert s.net_inonum == net
    # a v4-mapped address stays IPv6, as the kernel has an AF_INET6 socket
    mapped = got[5].local
    assert mapped.family == socket.AF_INET6
    assert ipaddress.ip_address(mapped.address).ipv4_mapped == (
        ipaddress.IPv4Address("127.0.0.1")
    )
    assert got[0].local.family == socket.AF_INET


@little_endian_only
def test_no_tcp6_means_no_ipv6(tmp_path: pathlib.Path) -> None:
    tcp = HDR4 + row(0, kaddr("127.0.0.1", 1), kaddr("127.0.0.1", 2), "01", 7)
    write_tree(tmp_path, tcp, None, {})
    (got,) = scrape_sockets(str(tmp_path))
    assert got.pid_origin is None
    assert got.established_time == 0


def test_missing_tcp_tables_mean_no_sockets(tmp_path: pathlib.Path) -> None:
    # a kernel without IPv6 has no tcp6, one without TCP/IP neither: there
    # is nothing to scrape, which is not an error
    write_tree(tmp_path, None, None, {})
    assert scrape_sockets(str(tmp_path)) == []


def test_unreadable_netns_gives_no_inonum(tmp_path: pathlib.Path) -> None:
    tcp = HDR4 + row(0, kaddr("127.0.0.1", 1), kaddr("0.0.0.0", 0), "0A", 7)
    write_tree(tmp_path, tcp, HDR6, {})
    (tmp_path / "self" / "ns" / "net").unlink()
    (got,) = scrape_sockets(str(tmp_path))
    assert got.net_inonum is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello\n",
        "Inter-|   Receive  |  Transmit\n face |bytes packets\n",
        "  sl  local_address rem_address   st\n",  # no inode column
    ],
)
def test_not_a_tcp_table_names_the_file(
    tmp_path: pathlib.Path, text: str
) -> None:
    write_tree(tmp_path, text, None, {})
    with pytest.raises(DecodeError, match=r"net/tcp\b"):
        scrape_sockets(str(tmp_path))


@little_endian_only
def test_bad_tcp6_header_names_tcp6(tmp_path: pathlib.Path) -> None:
    write_tree(tmp_path, HDR4, "nope\n", {})
    with pytest.raises(DecodeError, match="tcp6"):
        scrape_sockets(str(tmp_path))


ADDRS = st.one_of(
    st.ip_addresses(v=4),
    st.ip_addresses(v=6),
    st.ip_addresses(v=4).map(lambda a: ipaddress.IPv6Address(f"::ffff:{a}")),
)


@given(
    local=ADDRS,
    lport=st.integers(0, 65535),
    rport=st.integers(0, 65535),
    byteorder=st.sampled_from(["little", "big"]),
    inode=st.integers(1, 2**64 - 1),
)
def test_address_encoding_round_trip(
    local: ipaddress.IPv4Address | ipaddress.IPv6Address,
    lport: int,
    rport: int,
    byteorder: str,
    inode: int,
) -> None:
    remote = "0.0.0.0" if local.version == 4 else "::"
    header = HDR4 if local.version == 4 else HDR6
    text = header + row(
        0,
        kaddr(str(local), lport, byteorder),
        kaddr(remote, rport, byteorder),
        "01",
        inode,
    )
    got = parse_tcp_table(text, little=byteorder == "little")
    assert got == [
        (SockAddr.of(str(local), lport), SockAddr.of(remote, rport), inode)
    ]
    # the family follows the table, not the address's look
    want = socket.AF_INET if local.version == 4 else socket.AF_INET6
    assert got[0][0].family == want


def test_real_proc_finds_our_listener_and_connected_pair() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lsn:
        lsn.bind(("127.0.0.1", 0))
        lsn.listen(1)
        client = socket.create_connection(lsn.getsockname())
        server, _ = lsn.accept()
        with client, server:
            got = {(s.local, s.remote): s for s in scrape_sockets()}
            laddr = SockAddr.of(*lsn.getsockname())
            caddr = SockAddr.of(*client.getsockname())
            any4 = SockAddr.of("0.0.0.0", 0)
            me = os.getpid()
            for key in [(laddr, any4), (caddr, laddr), (laddr, caddr)]:
                s = got.get(key)
                assert s is not None, f"{key} not scraped"
                assert s.pid_origin == me, (key, s)
                assert s.conn_origin is SockOrigin.SCRAPE
                assert s.net_inonum == os.stat("/proc/self/ns/net").st_ino

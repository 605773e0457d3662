"""The client address: the TCP peer unless a trusted proxy vouches for X-Forwarded-For."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.requests import Request

from ragledger.api.client_address import UNKNOWN_ADDRESS, TrustedProxies, client_address

PROXIES = TrustedProxies.parse(["10.0.0.0/8", "192.0.2.7", "2001:db8:1::/48"])


def scope(peer: str | None, *headers: tuple[str, str], scheme: str = "http") -> dict[str, Any]:
    return {
        "type": "http",
        "scheme": scheme,
        "client": None if peer is None else (peer, 50_000),
        "headers": [(name.lower().encode(), value.encode("latin-1")) for name, value in headers],
    }


def xff(value: str) -> tuple[str, str]:
    return ("X-Forwarded-For", value)


def test_untrusted_peer_ignores_a_spoofed_header():
    assert PROXIES.client_address(scope("203.0.113.9", xff("1.1.1.1"))) == "203.0.113.9"


def test_no_trusted_proxies_means_the_peer_whatever_the_header():
    assert client_address(scope("10.1.2.3", xff("1.1.1.1")), []) == "10.1.2.3"


def test_trusted_peer_without_header_is_the_client():
    assert PROXIES.client_address(scope("10.1.2.3")) == "10.1.2.3"


def test_trusted_proxy_gives_the_address_it_saw():
    assert PROXIES.client_address(scope("10.0.0.5", xff("198.51.100.4"))) == "198.51.100.4"


def test_chain_skips_trusted_hops_and_stops_at_the_first_untrusted():
    # The client spoofed 1.1.1.1; the edge proxy (192.0.2.7) saw 198.51.100.4 and the
    # inner proxy (10.0.0.5) saw the edge proxy.
    header = xff("1.1.1.1, 198.51.100.4, 192.0.2.7")
    assert PROXIES.client_address(scope("10.0.0.5", header)) == "198.51.100.4"


def test_repeated_header_lines_form_one_list():
    headers = (xff("1.1.1.1"), xff("198.51.100.4, 10.9.9.9"))
    assert PROXIES.client_address(scope("10.0.0.5", *headers)) == "198.51.100.4"


def test_all_hops_trusted_gives_the_leftmost():
    assert PROXIES.client_address(scope("10.0.0.5", xff("10.3.3.3, 10.2.2.2"))) == "10.3.3.3"


def test_ipv6_peer_and_hops():
    header = xff("2001:db8:ffff::1, 2001:db8:1::9")
    assert PROXIES.client_address(scope("2001:db8:1::2", header)) == "2001:db8:ffff::1"
    assert PROXIES.client_address(scope("2001:db8:2::2", header)) == "2001:db8:2::2"


def test_ipv4_mapped_ipv6_peer_counts_as_ipv4():
    assert PROXIES.client_address(scope("::ffff:10.0.0.5", xff("198.51.100.4"))) == "198.51.100.4"
    assert PROXIES.client_address(scope("::ffff:203.0.113.9")) == "203.0.113.9"


def test_hops_with_ports():
    assert PROXIES.client_address(scope("10.0.0.5", xff("198.51.100.4:4711"))) == "198.51.100.4"
    header = xff("[2001:db8:ffff::1]:443")
    assert PROXIES.client_address(scope("10.0.0.5", header)) == "2001:db8:ffff::1"


@pytest.mark.parametrize(
    "header",
    ["garbage", "", "unknown", "1.2.3", "[2001:db8::1", "[::1]x", "999.1.1.1", "::1:80:80x"],
)
def test_malformed_rightmost_hop_falls_back_to_the_peer(header: str):
    assert PROXIES.client_address(scope("10.0.0.5", xff(header))) == "10.0.0.5"


def test_malformed_hop_further_left_stops_at_the_nearest_trusted_hop():
    header = xff("198.51.100.4, _hidden, 10.7.7.7")
    assert PROXIES.client_address(scope("10.0.0.5", header)) == "10.7.7.7"


def test_no_peer_and_non_ip_peer():
    assert PROXIES.client_address(scope(None, xff("1.1.1.1"))) == UNKNOWN_ADDRESS
    assert PROXIES.client_address(scope("testclient", xff("1.1.1.1"))) == "testclient"


def test_accepts_a_request():
    request = Request(scope("10.0.0.5", xff("198.51.100.4")))
    assert PROXIES.client_address(request) == "198.51.100.4"
    assert client_address(request, ["10.0.0.0/8"]) == "198.51.100.4"


def test_forwarded_proto_only_from_a_trusted_peer():
    proto = ("X-Forwarded-Proto", "https")
    assert PROXIES.scheme(scope("10.0.0.5", proto)) == "https"
    assert PROXIES.scheme(scope("203.0.113.9", proto)) == "http"
    assert PROXIES.scheme(scope("203.0.113.9", scheme="https")) == "https"
    assert PROXIES.scheme(scope("10.0.0.5", ("X-Forwarded-Proto", "gopher"))) == "http"


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("not-an-ip", "invalid trusted proxy entry 'not-an-ip'"),
        ("10.0.0.1/8", "did you mean 10.0.0.0/8?"),
        ("10.0.0.0/33", "expected an IP address or a CIDR network"),
        ("", "invalid trusted proxy entry ''"),
    ],
)
def test_invalid_proxy_entries_are_refused_at_parse_time(entry: str, fragment: str):
    with pytest.raises(ValueError, match="trusted proxy") as caught:
        TrustedProxies.parse(["10.0.0.0/8", entry])
    assert fragment in str(caught.value)


def test_parse_accepts_single_addresses_and_mapped_networks():
    proxies = TrustedProxies.parse([" 192.0.2.7 ", "::ffff:172.16.0.0/108", "::1"])
    assert proxies.is_trusted("192.0.2.7")
    assert proxies.is_trusted("172.16.4.4")
    assert proxies.is_trusted("::1")
    assert not proxies.is_trusted("192.0.2.8")


@given(
    spoofed=st.lists(st.ip_addresses().map(str), max_size=5),
    peer=st.ip_addresses(v=4).filter(lambda ip: not ip.is_private).map(str),
)
def test_an_untrusted_peer_is_never_replaced(spoofed: list[str], peer: str):
    headers = (xff(", ".join(spoofed)),) if spoofed else ()
    assert PROXIES.client_address(scope(peer, *headers)) == peer

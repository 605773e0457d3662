"""The client's address, believing X-Forwarded-For only from configured proxies.

`X-Forwarded-For` is written by whoever sends the request, so its leftmost entry is
whatever an attacker wants it to be. Each proxy appends the address it received the
request from, so the header is only as trustworthy as the hop that wrote each entry.
Walking it from the right and stopping at the first address that is not one of our own
proxies yields the last address a proxy we trust actually saw: the client, or the
closest hop to it we can vouch for. When the TCP peer itself is not a trusted proxy,
the header is ignored altogether.

Why not uvicorn's `ProxyHeadersMiddleware` / `--forwarded-allow-ips` (uvicorn 0.54.0)?
It walks the header from the right too, takes CIDR networks and bracketed IPv6 with
ports, but `tests/unit/api/test_client_address.py` pins behaviour it lacks:
- a malformed hop ('garbage', '1.2.3', '_hidden') becomes the client address itself
  (`scope["client"] = ("garbage", 0)`); here the walk stops at the nearest hop we can
  vouch for, so rate limits and security events never key on free text;
- IPv4-mapped IPv6 peers and entries (`::ffff:10.0.0.5`, what a dual-stack socket
  reports) are compared as IPv6, so they never match an IPv4 network, and are returned
  in that mapped form; here they are IPv4;
- the address is returned as written, not normalized (`2001:DB8::1` and `2001:db8::1`
  are two rate-limit keys there, one here);
- a bad entry in the trusted list (`not-an-ip`, `10.0.0.1/8` with host bits) is kept
  silently as a literal that matches nothing; here `TrustedProxies.parse` refuses it at
  start-up, naming it; `0.0.0.0/0` is logged as trusting everyone;
- no cap on the hops walked (here `_MAX_HOPS`); with no peer (a Unix socket) the
  client stays None, here it is `unknown`;
- it rewrites `scope["client"]` and `scope["scheme"]` for the whole app (and takes
  `ws`/`wss` in X-Forwarded-Proto); here nothing is rewritten: the client address and
  the scheme are asked for where they matter (rate limits, security events, metrics
  access, HSTS), and `ragledger serve` runs uvicorn with `proxy_headers=False`, so the
  peer seen here is the TCP peer. (Started as plain `uvicorn --factory`, uvicorn's own
  default trusts 127.0.0.1 and ::1: pass `--no-proxy-headers`.)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from starlette.requests import HTTPConnection

log = structlog.get_logger(__name__)

type IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
type IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
type ScopeOrRequest = HTTPConnection | Mapping[str, Any]

# Returned when the ASGI server gives no peer (a Unix socket, some test transports).
UNKNOWN_ADDRESS = "unknown"

_FORWARDED_FOR = b"x-forwarded-for"
_FORWARDED_PROTO = b"x-forwarded-proto"
# A real chain of proxies is a handful of hops; walking more would let a client make
# every request cost a long parse for nothing.
_MAX_HOPS = 32


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The proxies whose X-Forwarded-* headers are believed, parsed once at start-up."""

    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> TrustedProxies:
        """Parse IPs and CIDR networks (IPv4 or IPv6); raise ValueError naming a bad one."""
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip()
            try:
                network = ipaddress.ip_network(entry, strict=True)
            except ValueError as exc:
                hint = ""
                try:
                    loose = ipaddress.ip_network(entry, strict=False)
                except ValueError:
                    pass
                else:
                    hint = f" (host bits set; did you mean {loose}?)"
                raise ValueError(
                    f"invalid trusted proxy entry {raw!r}: expected an IP address or a "
                    f"CIDR network such as 10.0.0.0/8 or 2001:db8::/32{hint}"
                ) from exc
            if network.prefixlen == 0:
                # Legal, and sometimes what a lab wants, but it lets every client choose
                # its own address; say so loudly rather than refuse.
                log.warning("trusted_proxies_trusts_everyone", entry=entry)
            networks.append(_unmap_network(network))
        return cls(tuple(networks))

    def is_trusted(self, address: str | IPAddress) -> bool:
        """Whether the address lies inside one of the trusted networks."""
        parsed = _parse_ip(address) if isinstance(address, str) else _unmap(address)
        if parsed is None:
            return False
        return any(parsed in network for network in self.networks)

    def client_address(self, scope_or_request: ScopeOrRequest) -> str:
        """The client's address: the TCP peer, or the first untrusted X-Forwarded-For hop."""
        scope = _scope_of(scope_or_request)
        peer = _peer_host(scope)
        if peer is None:
            return UNKNOWN_ADDRESS
        peer_ip = _parse_ip(peer)
        if peer_ip is None:
            # Not an IP at all (a test client's name): never a proxy of ours.
            return peer
        if not self.networks or not self.is_trusted(peer_ip):
            return str(peer_ip)
        hops = _header_values(scope, _FORWARDED_FOR)
        # The nearest address vouched for so far; a malformed or missing hop to its left
        # means nothing further left can be believed.
        nearest = peer_ip
        for hop in reversed(hops[-_MAX_HOPS:]):
            hop_ip = _parse_hop(hop)
            if hop_ip is None:
                log.debug("forwarded_for_malformed", hop=hop[:64])
                return str(nearest)
            if not self.is_trusted(hop_ip):
                return str(hop_ip)
            nearest = hop_ip
        # Every hop was one of our proxies (an internal caller): the oldest one is it.
        return str(nearest)

    def scheme(self, scope_or_request: ScopeOrRequest) -> str:
        """The request's scheme, taking X-Forwarded-Proto from a trusted peer only."""
        scope = _scope_of(scope_or_request)
        scheme = str(scope.get("scheme", "http"))
        peer = _peer_host(scope)
        if peer is None or not self.is_trusted(peer):
            return scheme
        values = _header_values(scope, _FORWARDED_PROTO)
        if not values:
            return scheme
        # The rightmost value is the one our own proxy wrote (or appended).
        forwarded = values[-1].lower()
        return forwarded if forwarded in ("http", "https") else scheme


def client_address(
    scope_or_request: ScopeOrRequest, trusted_proxies: Sequence[str] | TrustedProxies
) -> str:
    """The client's address given the trusted proxies (prefer a parsed `TrustedProxies`)."""
    proxies = (
        trusted_proxies
        if isinstance(trusted_proxies, TrustedProxies)
        else TrustedProxies.parse(trusted_proxies)
    )
    return proxies.client_address(scope_or_request)


def _scope_of(scope_or_request: ScopeOrRequest) -> Mapping[str, Any]:
    if isinstance(scope_or_request, HTTPConnection):
        return scope_or_request.scope
    return scope_or_request


def _peer_host(scope: Mapping[str, Any]) -> str | None:
    client = scope.get("client")
    if not client:
        return None
    return str(client[0])


def _header_values(scope: Mapping[str, Any], name: bytes) -> list[str]:
    # Several header lines of the same name form one comma-separated list, in order.
    values: list[str] = []
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            values.extend(part.strip() for part in value.decode("latin-1").split(","))
    return values


def _parse_ip(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return _unmap(address)


def _parse_hop(hop: str) -> IPAddress | None:
    """One X-Forwarded-For entry: a bare IP, or one with a port ('1.2.3.4:80', '[::1]:80')."""
    if not hop:
        return None
    if hop.startswith("["):
        end = hop.find("]")
        if end == -1:
            return None
        rest = hop[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return _parse_ip(hop[1:end])
    address = _parse_ip(hop)
    if address is not None:
        return address
    # IPv4 with a port; an IPv6 address with a port must be bracketed, so one colon only.
    host, sep, port = hop.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        parsed = _parse_ip(host)
        if isinstance(parsed, ipaddress.IPv4Address):
            return parsed
    return None


def _unmap(address: IPAddress) -> IPAddress:
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; compare them as IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _unmap_network(network: IPNetwork) -> IPNetwork:
    if (
        isinstance(network, ipaddress.IPv6Network)
        and network.prefixlen >= 96
        and network.network_address.ipv4_mapped is not None
    ):
        return ipaddress.IPv4Network(
            (network.network_address.ipv4_mapped, network.prefixlen - 96), strict=True
        )
    return network

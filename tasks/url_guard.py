"""Which addresses the fetcher may contact: public ones, and the allow-listed rest.

A resolver that refuses private, loopback, link-local and metadata addresses unless
allow-listed (the connector connects only to what it returns), and checks of a URL's scheme
and of literal or obfuscated IP hosts before a request is made.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from dataclasses import dataclass

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from tasks.rejections import Rejected


class BlockedAddress(OSError):
    """A host resolved only to addresses the policy refuses."""


@dataclass(frozen=True)
class AddressPolicy:
    """Which non-public addresses may be contacted: allow-listed hosts and networks only."""

    hosts: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def from_allow_list(cls, entries: list[str]) -> AddressPolicy:
        """Split allow-list entries into IP networks and host names."""
        hosts, networks = set(), []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                hosts.add(entry.strip().lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def permits(self, host: str, address: str) -> bool:
        """True for public addresses, allow-listed hosts, and allow-listed networks."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if ip.is_global and not ip.is_multicast:
            return True
        return host.lower().rstrip(".") in self.hosts or any(ip in n for n in self.networks)


class GuardedResolver(AbstractResolver):
    """aiohttp's default resolver, minus the addresses the policy refuses.

    The connector connects only to what the resolver returns, so a name cannot be
    re-pointed at a private address between the check and the connection.
    """

    def __init__(self, policy: AddressPolicy) -> None:
        self._inner = DefaultResolver()
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve, then keep only permitted addresses (BlockedAddress when none are)."""
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if self._policy.permits(host, r["host"])]
        if not allowed:
            found = sorted({r["host"] for r in results})
            raise BlockedAddress(f"{host} resolves only to refused addresses {found}")
        return allowed

    async def close(self) -> None:
        """Release the wrapped resolver."""
        await self._inner.close()


def check_url(url: URL, policy: AddressPolicy) -> None:
    """Refuse non-http(s) URLs and literal IPs the policy refuses (names: see the resolver)."""
    if url.scheme not in ("http", "https"):
        raise Rejected("bad_scheme", f"expected an http(s) URL, found {str(url)[:200]!r}")
    if not url.host:
        raise Rejected("bad_scheme", f"URL has no host: {str(url)[:200]!r}")
    check_host(url.host, policy)


@functools.lru_cache(maxsize=4096)
def check_host(host: str, policy: AddressPolicy) -> None:
    """Refuse a literal IP the policy refuses, or an obfuscated one (cached: once per host).

    Only a pass is cached (lru_cache keeps no exceptions); a catalog has few hosts.
    """
    try:
        ipaddress.ip_address(host)
    except ValueError:
        legacy = legacy_ipv4(host)
        if legacy is not None:
            raise Rejected("blocked_address",
                           f"{host} is an obfuscated IPv4 address ({legacy})") from None
        return
    if not policy.permits(host, host):
        raise Rejected("blocked_address", f"{host} is not a public address")


def legacy_ipv4(host: str) -> str | None:
    """The address behind a non-canonical IPv4 form (`2130706433`, `127.1`, `0x7f.1`), or None.

    inet_aton reads them (so does a browser); no poster CDN uses them: they hide an address.
    """
    try:
        return str(ipaddress.IPv4Address(socket.inet_aton(host)))
    except OSError:
        return None

"""The host's address rule, for the Python tasks that fetch URLs.

A URL taken from a task's input may not lead to loopback, private,
link-local, shared (CGNAT), cloud-metadata or otherwise non-public
addresses, unless the backend's own allow-list `DWA_HTTP_ALLOW` (host
names, IPs, CIDRs, comma-separated; the same variable and meaning as the
host's for plugins) lists them. The check is made on every address the
name resolves to, and again on every redirect; proxies from the
environment are not used, so the address checked is the one connected to
(a name that resolves differently between the check and the connection,
DNS rebinding, is the rule's known limit: see docs/backend-protocol.md).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from urllib.parse import urlsplit

from .errors import TaskError

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("100.100.100.200"),
             ipaddress.ip_address("fd00:ec2::254")}
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded(ip: IP) -> IP:
    """The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ip
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    packed = int(ip)
    if any(ip in n for n in _NAT64) or (packed >> 32 == 0 and packed > 1):
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    return ip


def special(ip: IP) -> str | None:
    """What kind of non-public address `ip` is, or None for a public one."""
    ip = _embedded(ip)
    if ip in _METADATA:
        return "cloud metadata"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if isinstance(ip, ipaddress.IPv6Address) and ip.teredo:
        return "a Teredo tunnel"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    if ip in ipaddress.ip_network("100.64.0.0/10"):
        return "shared (CGNAT)"
    if ip.is_private:
        return "private"
    if not ip.is_global or ip.is_reserved:
        return "reserved"
    return None


def _allowed() -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    names: set[str] = set()
    nets = []
    for entry in os.environ.get("DWA_HTTP_ALLOW", "").split(","):
        entry = entry.strip().lower()
        if not entry:
            continue
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry)
    return names, nets


def check_url(url: str, field: str = "url") -> None:
    """Refuses a URL that is not http(s), or whose host resolves to a
    non-public address the allow-list does not list."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise TaskError(f"`{field}` {url!r} must be http or https")
    host = (parts.hostname or "").lower()
    if not host:
        raise TaskError(f"`{field}` {url!r} has no host")
    names, nets = _allowed()
    if host in names:
        return
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TaskError(f"`{field}` {url!r} has an invalid port") from None
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as e:
        raise TaskError(f"cannot resolve {host}: {e}", retryable=True) from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if any(ip in n or _embedded(ip) in n for n in nets):
            continue
        kind = special(ip)
        if kind:
            raise TaskError(
                f"`{field}` {url}: {host} is {kind} ({ip}); the backend reaches it only if "
                f"DWA_HTTP_ALLOW lists it")


def client(**kwargs):
    """An httpx client that applies the rule to every request it sends,
    redirects included, and ignores proxy variables."""
    import httpx

    def guard(request: httpx.Request) -> None:
        check_url(str(request.url))

    return httpx.Client(event_hooks={"request": [guard]}, trust_env=False, **kwargs)

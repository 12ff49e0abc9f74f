"""Which network addresses a member's request may make chatd connect to, and URL hygiene.

A member chooses some URLs chatd connects to (a web push endpoint). Such a URL must never take
chatd to itself, its database, a cloud metadata service or anything else on a private network
(SSRF). The rule is on the *address* a name resolves to, checked again when connecting, because a
name can resolve to something else by then (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Not covered by `is_global` / `is_private` in every Python version, or worth naming.
_CGNAT = ipaddress.ip_network("100.64.0.0/10")  # Alibaba's metadata service is 100.100.100.200
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # embeds an IPv4 address a NAT64 gateway reaches
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


def blocked_reason(ip: IPAddress) -> str | None:
    """Why chatd must not connect to `ip` on a member's behalf (a short noun), or None if public."""
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv4 inside IPv6 reaches the IPv4 address: judge that one.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return blocked_reason(embedded)
    if ip in _METADATA:
        return "cloud metadata"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT:
        return "shared (CGNAT)"
    if ip.is_private or ip.is_reserved or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local):
        return "private"
    if not ip.is_global:
        return "non-public"
    return None


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return None


def has_userinfo(url: str) -> bool:
    """`scheme://user:password@host/...`: credentials in a URL end up in logs and error texts."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.username is not None or parts.password is not None or "@" in parts.netloc

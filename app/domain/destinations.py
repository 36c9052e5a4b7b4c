"""Where a webhook may be sent: the URL's form and the addresses its host stands for.

A subscriber's URL must not turn the service into a way into our own network (SSRF): only
`https` (plain `http` when the operator allows it), no credentials in the URL, and no
private, loopback, link-local or otherwise non-public address unless the operator lists the
host. The sender checks the address it actually connects to, at every attempt.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.domain.errors import InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class DestinationRefused(InvalidRequest):
    title = "Destination refused"
    slug = "destination-refused"


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str
    """Lower-case, without IPv6 brackets."""
    port: int


def parse_destination(url: str, *, allow_http: bool) -> Destination:
    """The URL's scheme, host and port, or DestinationRefused saying what is wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise DestinationRefused(f"url {url!r} is not a valid URL: {error}") from error
    allowed = ("https", "http") if allow_http else ("https",)
    if parts.scheme not in allowed:
        hint = "" if allow_http else " (plain http only with DEALLEDGER_WEBHOOKS_ALLOW_HTTP=1)"
        raise DestinationRefused(f"url must use {' or '.join(allowed)}{hint}", url=url)
    if parts.username is not None or parts.password is not None:
        raise DestinationRefused("url must not carry credentials", url=url)
    host = (parts.hostname or "").lower()
    if not host:
        raise DestinationRefused("url has no host", url=url)
    if parts.fragment:
        raise DestinationRefused("url must not have a fragment", url=url)
    return Destination(parts.scheme, host, port or (443 if parts.scheme == "https" else 80))


def literal_address(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def address_class(address: IPAddress) -> str | None:
    """Why this address is not on the public internet (loopback, private...), or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address_class(address.ipv4_mapped)
    checks = (  # most specific first: 127.0.0.1 is private too, but loopback says more
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    )
    for name, hit in checks:
        if hit:
            return name
    if not address.is_global:
        return "not public"  # e.g. shared address space 100.64.0.0/10
    return None


def refusal(
    host: str, addresses: Sequence[IPAddress], allowed_hosts: Collection[str]
) -> str | None:
    """Why `host`, standing for `addresses`, may not be called, or None if it may. A host
    the operator lists is allowed whatever it resolves to; otherwise every address must be
    public (one private answer is enough to refuse: DNS may give either)."""
    if host in allowed_hosts:
        return None
    if not addresses:
        return f"{host} does not resolve"
    for address in addresses:
        if str(address) in allowed_hosts:
            continue
        kind = address_class(address)
        if kind is not None:
            return (
                f"{host} resolves to {address}, a {kind} address"
                " (list it in DEALLEDGER_WEBHOOKS_ALLOWED_HOSTS to allow it)"
            )
    return None

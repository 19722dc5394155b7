"""Which teacher URLs stage pods may be sent to (pure).

A teacher URL is chosen by whoever writes the DistillationJob, and stage pods call it from inside the
cluster with the teacher's API key. A URL aimed at the node's link-local network or a cloud metadata
service (``169.254.169.254``, AWS's ``fd00:ec2::254``, ``metadata.google.internal``, Alibaba's
``100.100.100.200``) would turn a stage pod into a reader of the node's credentials, so such URLs are
refused unless the operator's allow-list (``STRATOS_ALLOWED_TEACHER_NETWORKS``: CIDRs and host names,
comma-separated; chart value ``teacherEndpoints.allowed``) names them.

The host is read the way HTTP clients read it: IPv4 in any form ``inet_aton`` accepts (``2852039166``,
``0251.0376.0251.0376``, ``0xa9.254.169.254``), IPv6 with brackets and IPv4-mapped forms, and names
compared without case or a trailing dot. Other names are not resolved (the operator would see its own
DNS, not the pod's, at another time): a private DNS name pointing at a metadata address is not caught.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

ALLOW_ENV = "STRATOS_ALLOWED_TEACHER_NETWORKS"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Link-local ranges and the metadata services of the major clouds.
FORBIDDEN_NETWORKS: tuple[Network, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "169.254.0.0/16",  # IPv4 link-local: AWS, GCP, Azure, OpenStack, Oracle metadata; ECS credentials
        "fe80::/10",  # IPv6 link-local
        "fd00:ec2::254/128",  # AWS instance metadata over IPv6
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "192.0.0.192/32",  # Oracle Cloud legacy metadata
    )
)
FORBIDDEN_HOSTS = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
    }
)


@dataclass(frozen=True)
class EndpointPolicy:
    """The allow-list: networks and host names that are accepted even though they look forbidden."""

    networks: tuple[Network, ...] = ()
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, entries: Iterable[str]) -> EndpointPolicy:
        networks: list[Network] = []
        hosts: set[str] = set()
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    @classmethod
    def from_env(cls) -> EndpointPolicy:
        return cls.parse(os.environ.get(ALLOW_ENV, "").split(","))


def host_address(host: str) -> IPAddress | None:
    """The address a literal host names, in every form HTTP clients accept; None for a name."""
    host = host.strip("[]")
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        try:  # 2852039166, 0251.0376.0251.0376, 0xa9fea9fe, 169.254.43518: what getaddrinfo accepts
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forbidden_address(address: IPAddress, policy: EndpointPolicy) -> str | None:
    """Why ``address`` may not be called, or None."""
    if any(address in net for net in policy.networks if net.version == address.version):
        return None
    for net in FORBIDDEN_NETWORKS:
        if net.version == address.version and address in net:
            return f"{address} is in {net}, a link-local or cloud metadata range"
    return None


def forbidden_url(url: str, policy: EndpointPolicy) -> str | None:
    """Why a teacher URL is refused, or None when it may be called."""
    try:
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
    except ValueError as err:
        return f"cannot read the host of {url!r}: {err}"
    if host in policy.hosts:
        return None
    if host in FORBIDDEN_HOSTS:
        return f"{host} is a cloud metadata service"
    address = host_address(host)
    return forbidden_address(address, policy) if address is not None else None


def refused_teachers(endpoints: Sequence[tuple[str, str]], policy: EndpointPolicy) -> list[str]:
    """``<where>: <why>`` for each (where, URL) that is refused; ``where`` names the field and its owner,
    e.g. ``spec.teachers[2].endpoint.baseURL (teacher gpt)``."""
    refused = []
    for where, url in endpoints:
        why = forbidden_url(url, policy)
        if why:
            refused.append(f"{where}: {why}; refused (an operator allow-list, {ALLOW_ENV}, can permit it)")
    return refused


def teacher_endpoints(teachers: Sequence[Any], only: str | None = None) -> list[tuple[str, str]]:
    """(where, URL) of each teacher in ``spec.teachers`` (or only the one named ``only``), for
    ``refused_teachers``: the field path keeps the teacher's own index."""
    return [
        (f"spec.teachers[{i}].endpoint.baseURL (teacher {t.name})", t.endpoint.base_url)
        for i, t in enumerate(teachers)
        if only is None or t.name == only
    ]

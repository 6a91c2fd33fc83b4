"""What the load-balancer status writer is told at startup: the leader Lease's name, the fleet's
Service, and their defaults. Kept apart from the writer so that ``serve`` can read its flags
without loading the Kubernetes client, which only a cluster needs."""

from __future__ import annotations

from dataclasses import dataclass

LEASE_NAME = "splitplane-leader"
DEFAULT_FLEET_SERVICE = "splitplane-system/splitplane-lb"
DEFAULT_LEASE_NAMESPACE = "splitplane-system"


@dataclass(frozen=True)
class FleetService:
    """The fleet's headless Service, whose endpoints are the fleet's addresses."""

    namespace: str
    name: str


def parse_fleet_service(text: str) -> FleetService:
    """``NAMESPACE/NAME`` → FleetService; ``ValueError`` says what is wrong."""
    namespace, sep, name = text.strip().partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise ValueError(f"fleet service {text!r} is not NAMESPACE/NAME")
    return FleetService(namespace, name)

"""Envoy resource names, Istio style, so users can read them.

- cluster per service port: ``outbound|80||reviews.default.svc.cluster.local``
- cluster per subset: ``outbound|80|v1|reviews.default.svc.cluster.local``
- EDS ``service_name`` = cluster name
- route configuration per port: ``"80"``
"""

from __future__ import annotations

CLUSTER_DOMAIN = "cluster.local"


def service_hostname(name: str, namespace: str, domain: str = CLUSTER_DOMAIN) -> str:
    return f"{name}.{namespace}.svc.{domain}"


def cluster_name(port: int, subset: str, hostname: str) -> str:
    return f"outbound|{port}|{subset}|{hostname}"


def route_table_name(port: int) -> str:
    return str(port)


def listener_name(address: str, port: int) -> str:
    return f"{address}_{port}"


def service_aliases(name: str, namespace: str, domain: str = CLUSTER_DOMAIN) -> tuple[str, ...]:
    """Every name a client in the cluster may use for a service, shortest first."""
    return (
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        service_hostname(name, namespace, domain),
    )


def host_candidates(host: str, namespace: str, domain: str = CLUSTER_DOMAIN) -> tuple[str, ...]:
    """The service hostnames a host written in ``namespace`` may mean, most specific first.

    A short name (``reviews``) is the service of that name in the object's namespace, as in Istio;
    ``reviews.other`` and ``reviews.other.svc`` are completed to the cluster domain. The host as
    written always comes last, so an FQDN or an external name (``my-service.example.com``) stays
    itself when no service has that name.
    """
    host = host.strip().lower().rstrip(".")
    parts = host.split(".")
    candidates: list[str] = []
    if len(parts) == 1:
        candidates.append(service_hostname(host, namespace, domain))
    elif len(parts) == 2 or (len(parts) == 3 and parts[2] == "svc"):
        candidates.append(service_hostname(parts[0], parts[1], domain))
    candidates.append(host)
    return tuple(dict.fromkeys(candidates))

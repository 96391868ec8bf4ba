"""What a valid configuration can still get wrong: exposures beyond loopback and security settings
that contradict the services. ``pyslirp serve`` logs each once at start and ``pyslirp validate``
prints them; neither refuses the configuration, since each can be meant.
"""

from __future__ import annotations

from ipaddress import IPv4Network, ip_address

from pyslirp.config import PyslirpConfig

EVERYONE = IPv4Network("0.0.0.0/0")
DNS_PORT = 53  # the DNS relay's port, when DNS forwarding is on and no service takes it


def _on_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def config_warnings(config: PyslirpConfig) -> list[str]:
    """One sentence per problem, naming the field."""
    warnings: list[str] = []
    tcp_services = {port: s for port, s in config.services.items() if s.enabled and s.protocol == "tcp"}
    for port, service in sorted(config.services.items()):
        if service.enabled and not _on_loopback(service.host):
            warnings.append(
                f"services.{port}.host is {service.host}, not loopback: the client reaches that machine through it"
            )
    for index, forward in enumerate(config.forwards):
        if not _on_loopback(forward.listen_host):
            warnings.append(
                f"forwards.{index}.listen_host is {forward.listen_host}: anyone who reaches it on port "
                f"{forward.listen_port} connects into the client"
            )
    monitoring = config.monitoring
    if monitoring.enable_metrics and not _on_loopback(monitoring.metrics_host):
        warnings.append(
            f"monitoring.metrics_host is {monitoring.metrics_host}: anyone who reaches ports "
            f"{monitoring.metrics_port} and {monitoring.health_port} sees the client's address and traffic"
        )
    security = config.security
    blocked = set(security.blocked_ports)
    udp_53 = config.services.get(DNS_PORT)
    dns_relayed = config.dns.enabled and (udp_53 is None or udp_53.protocol != "udp")
    if security.allowed_ports is not None:
        allowed = set(security.allowed_ports)
        if tcp_services and not allowed & set(tcp_services):
            warnings.append("security.allowed_ports allows none of the enabled services: every connection is refused")
        if config.outbound.mode == "refuse":  # else a port may be meant for outbound flows
            for port in sorted(allowed - set(config.services) - ({DNS_PORT} if dns_relayed else set())):
                warnings.append(f"security.allowed_ports lists {port}, which no service maps")
        if dns_relayed and DNS_PORT not in allowed:
            warnings.append(
                f"security.allowed_ports does not list {DNS_PORT}: the DNS relay (dns.enabled) refuses every query"
            )
        for port in sorted(allowed & blocked):
            warnings.append(f"security.allowed_ports and security.blocked_ports both list {port}: it is blocked")
    if DNS_PORT in blocked and dns_relayed:
        warnings.append(f"security.blocked_ports lists {DNS_PORT}: the DNS relay (dns.enabled) refuses every query")
    if tcp_services and set(tcp_services) <= blocked:
        warnings.append("security.blocked_ports blocks every enabled service: every connection is refused")
    brute_force = security.brute_force
    if brute_force.enabled:
        if not any(service.is_auth_service(port) for port, service in tcp_services.items()):
            warnings.append(
                "security.brute_force is enabled but no service is an authentication service "
                "(set auth_service: true on one): it never blocks"
            )
        if any(network == EVERYONE for network in security.allowlist):
            warnings.append("security.allowlist holds 0.0.0.0/0: brute-force blocking never applies")
    return warnings + _outbound_warnings(config) + _line_warnings(config)


def _line_warnings(config: PyslirpConfig) -> list[str]:
    """Lines whose clients cannot all get an address, or a serial port that is not opened."""
    if not config.lines:
        return []
    warnings: list[str] = []
    if "port" in config.serial.model_fields_set:
        warnings.append(f"serial.port is {config.serial.port}, but 'lines' names the lines: it is not opened")
    first, last = config.ppp.pool_range
    reserved = {config.ppp.local_ip} | {line.peer_ip for line in config.lines if line.peer_ip is not None}
    room = int(last) - int(first) + 1 - sum(first <= address <= last for address in reserved)
    clients = sum(line.max_clients for line in config.lines if line.peer_ip is None)
    if clients > room:
        warnings.append(
            f"ppp.peer_pool {config.ppp.peer_pool} has {room} addresses for up to {clients} clients of lines "
            "without peer_ip: the others are refused until an address is returned"
        )
    return warnings


def _outbound_warnings(config: PyslirpConfig) -> list[str]:
    """A routing policy that cannot route anything, or routes more than it seems to."""
    outbound = config.outbound
    if config.socks.remote_dns and outbound.mode != "socks":
        return ["socks.remote_dns applies only with outbound.mode socks: names are resolved as usual"]
    if outbound.mode == "refuse":
        return []
    if outbound.mode == "socks" and not config.socks.enabled:
        return ["outbound.mode is socks but socks.enabled is false: every outbound connection is refused"]
    warnings: list[str] = []
    covered = [
        str(allowed) for allowed in outbound.allow
        if any(allowed.subnet_of(denied) for denied in outbound.deny)
    ]
    if covered and len(covered) == len(outbound.allow):
        warnings.append(f"outbound.deny covers every network of outbound.allow ({', '.join(covered)}): "
                        "every outbound connection is refused")
    elif covered:
        warnings.append(f"outbound.deny covers outbound.allow's {', '.join(covered)}: refused there")
    if outbound.ports == []:
        warnings.append("outbound.ports is empty: every outbound connection is refused (null allows any port)")
    if not outbound.allow:
        warnings.append(
            f"outbound.mode is {outbound.mode} with no outbound.allow: the client reaches every address "
            "outbound.deny does not name" + (", from this host" if outbound.mode == "direct" else "")
        )
    return warnings

"""Command line of the sample services; ``python -m samples`` patches for gevent, then calls :func:`main`."""

from __future__ import annotations

import argparse
import os
import sys

from samples import SERVICES, create_app
from samples.server import Listener, serve

USAGE = "Run sample services: python -m samples <service-name|all> [--port N | --port name=N ...]."


def parse_ports(name: str, values: list[str], environ: dict[str, str]) -> dict[str, int]:
    """Work out the port of each service to start from --port values, PORT and the defaults."""
    names = list(SERVICES) if name == "all" else [name]
    ports = {service: SERVICES[service].port for service in names}
    if name != "all" and environ.get("PORT"):
        ports[name] = int(environ["PORT"])
    for value in values:
        service, sep, number = value.rpartition("=")
        if not sep:
            if name == "all":
                raise ValueError("with 'all', give ports as --port service-name=N")
            service = name
        if service not in ports:
            raise ValueError(f"--port {value}: {service!r} is not being started")
        ports[service] = int(number)
    for service, port in ports.items():
        if not 0 <= port <= 65535:
            raise ValueError(f"port of {service} out of range: {port}")
    return ports


def main(argv: list[str] | None = None) -> int:
    """Start the chosen sample service (or all five) and serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m samples", description=USAGE)
    parser.add_argument("service", choices=[*SERVICES, "all"])
    parser.add_argument("--port", action="append", default=[], metavar="N|NAME=N",
                        help="listen port (default: $PORT, else the service's own 3001-3005)")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument("--no-access-log", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    try:
        ports = parse_ports(args.service, args.port, dict(os.environ))
        listeners = [Listener(name, create_app(name), args.host, port) for name, port in ports.items()]
    except ValueError as exc:
        print(f"samples: {exc}", file=sys.stderr)
        return 2
    return serve(listeners, access_log=not args.no_access_log)

"""Arize Phoenix's server (``phoenix serve``) with every listener on loopback.

Run by tests/test_phoenix.py from the Phoenix environment (OTEL_BRIDGE_PHOENIX_PYTHON).
PHOENIX_HOST binds the HTTP server (UI, REST API, OTLP/HTTP at /v1/traces), but Phoenix binds
its OTLP/gRPC receiver to ``[::]:PHOENIX_GRPC_PORT`` unconditionally
(phoenix/server/grpc_server.py), so this launcher rebinds that one to 127.0.0.1 before Phoenix
starts. Nothing else is changed.
"""

from __future__ import annotations

import sys

import grpc.aio._server as aio_server

_bind_insecure = aio_server.Server.add_insecure_port


def _loopback_only(self: aio_server.Server, address: str) -> int:
    host, _, port = address.rpartition(":")
    if host in ("[::]", "0.0.0.0", ""):
        address = f"127.0.0.1:{port}"
    return int(_bind_insecure(self, address))


aio_server.Server.add_insecure_port = _loopback_only  # type: ignore[method-assign]

if __name__ == "__main__":
    from phoenix.server.main import main

    sys.argv = ["phoenix", "serve"]
    sys.exit(main())

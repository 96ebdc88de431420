"""``otel-bridge demo --node``: the demo scenario from a Node app (node/demo/app.mjs).

The app runs as docs/quickstart-node.md says, under ``node --import`` with the register entry
of ``@otel-bridge/node``, built in the checkout's ``node/`` folder (``./dev demo --node`` runs
``npm ci`` and the build first). Same environment and output lines as the Python demo app.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

NODE_DIR = Path(__file__).resolve().parents[2] / "node"
APP = NODE_DIR / "demo" / "app.mjs"
REGISTER = NODE_DIR / "dist" / "register.js"
# The Python launcher's switches mean nothing to Node; dropping them keeps the app's env honest.
_PYTHON_ONLY = ("OTEL_PYTHON_DISTRO", "OTEL_PYTHON_CONFIGURATOR")


def node_app_command() -> list[str]:
    """The command that runs the Node demo app; SystemExit says what is missing."""
    node = shutil.which("node")
    if node is None:
        raise SystemExit("otel-bridge demo --node: `node` not found; install Node.js 20 or newer")
    if not APP.exists():
        raise SystemExit(f"otel-bridge demo --node: {APP} not found: run from a checkout")
    if not (NODE_DIR / "node_modules").is_dir() or not REGISTER.exists():
        raise SystemExit(
            "otel-bridge demo --node: the Node client is not built; run `./dev demo --node`, "
            "or `npm ci && npm run build` in node/"
        )
    return [node, "--import", REGISTER.as_uri(), str(APP)]


def node_app_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in _PYTHON_ONLY}

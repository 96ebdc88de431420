"""``python -m otel_bridge.recording_server``: run the double until SIGTERM/SIGINT."""

import sys

from otel_bridge.recording_server._cli import main

sys.exit(main())

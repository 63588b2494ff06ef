"""`python -m server --model-repository DIR --grpc-port PORT`"""

from __future__ import annotations

import sys

import uvloop

from server import app, settings, supervisor
from server.telemetry import logs


def main(argv: list[str] | None = None) -> int:
    config = settings.parse(argv)
    logs.configure(config.log_level)
    if config.workers > 1:
        return supervisor.run(config)
    uvloop.run(app.run(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())

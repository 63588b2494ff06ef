"""`python -m server --model-repository DIR --grpc-port PORT`"""

from __future__ import annotations

import logging
import sys

import uvloop

from server import app, settings, supervisor
from server.telemetry import logs

log = logging.getLogger("server")


def main(argv: list[str] | None = None) -> int:
    config = settings.parse(argv)
    logs.configure(config.log_level, config.payload_log_file)
    try:
        if config.workers > 1:
            return supervisor.run(config)
        uvloop.run(app.run(config))
    except app.StartupError as exc:
        log.error(str(exc), extra={"event": "startup_failed"})
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m server --model-repository DIR --grpc-port PORT`"""

from __future__ import annotations

import sys

import uvloop

from server import app, logs, settings


def main(argv: list[str] | None = None) -> int:
    config = settings.parse(argv)
    logs.configure(config.log_level)
    uvloop.run(app.run(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Locust entry point: `locust -f loadtests/locust/locustfile.py [UserClass ...]`.

User classes (pick some by name on the command line, or all run, equally weighted):
GrpcUser (unary gRPC), GrpcStreamUser (ModelStreamInfer), RestUser (V2 REST through the
gateway), GrpcWebUser (gRPC-web through the gateway). `--host` is the gateway's URL,
`--grpc-target` the gRPC address; the other options (loadtests/locust/options.py) are
listed in docs/loadtesting.md.
"""

import sys
from pathlib import Path

# Importable from any working directory: locust puts only this file's folder on the path.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from loadtests.locust import options, summary  # noqa: E402, F401  (they register listeners)
from loadtests.locust.profiles import LoadProfile  # noqa: E402
from loadtests.locust.users import GrpcStreamUser, GrpcUser, GrpcWebUser, RestUser  # noqa: E402

__all__ = ["GrpcStreamUser", "GrpcUser", "GrpcWebUser", "LoadProfile", "RestUser"]

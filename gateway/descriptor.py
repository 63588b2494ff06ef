"""The descriptor set that Envoy's gRPC-JSON transcoder reads.

Built from `protos/` with `--include_imports` (the transcoder needs
google/api/http.proto, google/api/httpbody.proto and every message type in one file) and
`--include_source_info` (the proto comments, for whoever reads the set).

It also holds google/rpc/error_details.proto, which no contract file imports: the
transcoder prints a failed call's `grpc-status-details-bin` into the REST error, and a
detail whose type it cannot resolve (the rate limit's RetryInfo) leaves the REST reply
empty, with no V2 error body.
"""

from importlib import resources
from pathlib import Path

import google.api
from grpc_tools import protoc

from gateway.paths import PROTOS_DIR

# Relative to the googleapis root on the include path.
ERROR_DETAILS = "google/rpc/error_details.proto"


class DescriptorBuildError(RuntimeError):
    """protoc rejected the contract."""


def _googleapis_root() -> Path:
    # googleapis-common-protos ships google/api/*.proto next to its modules.
    return Path(next(iter(google.api.__path__))).parent.parent


def build_descriptor_set(output: Path, protos_dir: Path = PROTOS_DIR) -> Path:
    """Compile every .proto under `protos_dir` into one descriptor set at `output`."""
    sources = sorted(str(p) for p in protos_dir.resolve().rglob("*.proto"))
    if not sources:
        raise DescriptorBuildError(f"no .proto files under {protos_dir}")
    well_known = resources.files("grpc_tools") / "_proto"
    output.parent.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{protos_dir.resolve()}",
        f"-I{_googleapis_root()}",
        f"-I{well_known}",
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={output}",
        *sources,
        ERROR_DETAILS,
    ]
    if protoc.main(args) != 0:
        raise DescriptorBuildError(f"protoc failed on {protos_dir}")
    return output

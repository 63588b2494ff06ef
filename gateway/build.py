"""`python -m gateway build`: the descriptor set and the OpenAPI document, from protos/."""

import os
import tempfile
from pathlib import Path

from gateway.descriptor import build_descriptor_set
from gateway.openapi import write_openapi
from gateway.paths import BUILD_DIR, PROTOS_DIR, BuildOutputs


def build(output_dir: Path = BUILD_DIR, protos_dir: Path = PROTOS_DIR) -> BuildOutputs:
    """Build both files into `output_dir`.

    Each file is written beside its final name and then renamed over it, so a
    gateway starting meanwhile reads the old file or the new one, never half.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    outputs = BuildOutputs.in_dir(output_dir)
    with tempfile.TemporaryDirectory(dir=output_dir) as scratch:
        descriptor = build_descriptor_set(Path(scratch) / "inference.pb", protos_dir)
        openapi = write_openapi(descriptor, Path(scratch) / "openapi.json")
        os.replace(descriptor, outputs.descriptor_path)
        os.replace(openapi, outputs.openapi_path)
    return outputs

"""Domain objects -> V2 REST JSON bodies for health, metadata, config, statistics and the
repository.

Shapes and counters are JSON integers, not the strings of the proto3 JSON mapping. The
model configuration is the object itself, in the form Triton's HTTP endpoint prints it
(enums by name, every field of our subset present), which is what perf_analyzer and
tritonclient.http parse. Inference bodies live in `server.api.http.codec`.
"""

from __future__ import annotations

from typing import Any

import orjson

from server.core.dataplane import ModelMetadata, ServerInfo, TensorMetadata
from server.core.model_config import ENSEMBLE, VersionPolicy
from server.core.models import IndexEntry, ServedModel
from server.core.statistics import Duration
from server.core.tensors import TensorSpec

BACKEND = "onnxruntime"  # every model but a pipeline, whose backend is empty (Triton's ensembles)


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


def live(live: bool) -> bytes:
    return _json({"live": live})


def ready(ready: bool) -> bytes:
    return _json({"ready": ready})


def model_ready(name: str, ready: bool) -> bytes:
    return _json({"name": name, "ready": ready})


def server_metadata(info: ServerInfo) -> bytes:
    return _json({"name": info.name, "version": info.version, "extensions": info.extensions})


def _tensor(tensor: TensorMetadata) -> dict[str, Any]:
    return {"name": tensor.name, "datatype": tensor.datatype, "shape": tensor.shape}


def model_metadata(metadata: ModelMetadata) -> bytes:
    return _json(
        {
            "name": metadata.name,
            "versions": metadata.versions,
            "platform": metadata.platform,
            "inputs": [_tensor(t) for t in metadata.inputs],
            "outputs": [_tensor(t) for t in metadata.outputs],
        }
    )


def _config_input(spec: TensorSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "data_type": spec.datatype.config_enum,
        "dims": spec.dims,
        "optional": spec.optional,
    }


def _config_output(spec: TensorSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "data_type": spec.datatype.config_enum,
        "dims": spec.dims,
        "label_filename": "",
    }


def _version_policy(policy: VersionPolicy) -> dict[str, Any]:
    if policy.all:
        return {"all": {}}
    if policy.specific:
        return {"specific": {"versions": policy.specific}}
    return {"latest": {"num_versions": policy.latest or 1}}


def model_config(version: ServedModel) -> bytes:
    """A pipeline as Triton prints an ensemble: an empty backend, no instance groups and no
    dynamic batching (its steps batch, not the pipeline), and its models under
    ensemble_scheduling."""
    config = version.config
    signature = version.signature
    ensemble = config.platform == ENSEMBLE
    document: dict[str, Any] = {
        "name": version.name,
        "platform": config.platform,
        "backend": "" if ensemble else BACKEND,
        "version_policy": _version_policy(config.version_policy),
        "max_batch_size": config.max_batch_size,
        "input": [_config_input(s) for s in signature.inputs],
        "output": [_config_output(s) for s in signature.outputs],
    }
    if ensemble:
        document["ensemble_scheduling"] = {
            "step": [
                {
                    "model_name": step.name,
                    "model_version": step.version,
                    "input_map": dict(step.input_map),
                    "output_map": dict(step.output_map),
                }
                for step in config.composing_models()
            ]
        }
        return _json(document)
    document["instance_group"] = [
        {"name": f"{version.name}_0", "kind": "KIND_CPU", "count": config.instances}
    ]
    if config.max_batch_size > 0:
        batching = config.batching
        document["dynamic_batching"] = {
            "preferred_batch_size": batching.preferred_batch_sizes,
            "max_queue_delay_microseconds": batching.max_queue_delay_us,
            "preserve_ordering": False,
            "default_queue_policy": {
                "timeout_action": "REJECT",
                "default_timeout_microseconds": 0,
                "allow_timeout_override": False,
                "max_queue_size": batching.max_queue_size,
            },
        }
    return _json(document)


def _duration(d: Duration) -> dict[str, int]:
    return {"count": d.count, "ns": d.ns}


_ZERO = Duration()


def _statistics(version: ServedModel) -> dict[str, Any]:
    s = version.stats
    return {
        "name": version.name,
        "version": str(version.version),
        "last_inference": s.last_inference_ms,
        "inference_count": s.inference_count,
        "execution_count": s.execution_count,
        "inference_stats": {
            "success": _duration(s.success),
            "fail": _duration(s.fail),
            "queue": _duration(s.queue),
            "compute_input": _duration(s.compute_input),
            "compute_infer": _duration(s.compute_infer),
            "compute_output": _duration(s.compute_output),
            "cache_hit": _duration(_ZERO),
            "cache_miss": _duration(_ZERO),
        },
        "batch_stats": [
            {
                "batch_size": size,
                "compute_input": _duration(b.compute_input),
                "compute_infer": _duration(b.compute_infer),
                "compute_output": _duration(b.compute_output),
            }
            for size, b in sorted(s.batches.items())
        ],
    }


def model_statistics(versions: list[ServedModel]) -> bytes:
    return _json({"model_stats": [_statistics(v) for v in versions]})


def repository_index(entries: list[IndexEntry]) -> bytes:
    """A JSON array, as Triton's HTTP endpoint answers (tritonclient.http returns it)."""
    return _json(
        [
            {"name": e.name, "version": e.version, "state": e.state, "reason": e.reason}
            for e in entries
        ]
    )


def empty() -> bytes:
    return b"{}"

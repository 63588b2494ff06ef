"""Domain objects -> protobuf replies for the metadata, config, statistics and index RPCs.

Tensor messages live in `server.api.grpc.codec`; these are the rest.
"""

from __future__ import annotations

from inference import grpc_service_pb2 as pb
from inference import model_config_pb2 as mc
from server.core.dataplane import ModelMetadata, ServerInfo, TensorMetadata
from server.core.model_config import ENSEMBLE, VersionPolicy
from server.core.models import IndexEntry, ServedModel
from server.core.statistics import Duration

BACKEND = "onnxruntime"  # every model but a pipeline, whose backend is empty (Triton's ensembles)


def server_metadata(info: ServerInfo) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(
        name=info.name, version=info.version, extensions=list(info.extensions)
    )


def _tensor(tensor: TensorMetadata) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=tensor.name, datatype=tensor.datatype, shape=tensor.shape
    )


def model_metadata(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=metadata.versions,
        platform=metadata.platform,
        inputs=[_tensor(t) for t in metadata.inputs],
        outputs=[_tensor(t) for t in metadata.outputs],
    )


def model_config(version: ServedModel) -> pb.ModelConfigResponse:
    """As Triton reports it; a pipeline as Triton reports an ensemble: no backend, no
    instance groups and no dynamic batching (its steps batch, not the pipeline), and its
    models under ensemble_scheduling."""
    config = version.config
    signature = version.signature
    ensemble = config.platform == ENSEMBLE
    message = mc.ModelConfig(
        name=version.name,
        platform=config.platform,
        backend="" if ensemble else BACKEND,
        version_policy=_version_policy(config.version_policy),
        max_batch_size=config.max_batch_size,
        input=[
            mc.ModelInput(
                name=s.name,
                data_type=mc.DataType.Value(s.datatype.config_enum),
                dims=s.dims,
                optional=s.optional,
            )
            for s in signature.inputs
        ],
        output=[
            mc.ModelOutput(
                name=s.name, data_type=mc.DataType.Value(s.datatype.config_enum), dims=s.dims
            )
            for s in signature.outputs
        ],
    )
    if ensemble:
        for step in config.composing_models():
            message.ensemble_scheduling.step.add(
                model_name=step.name,
                model_version=step.version,
                input_map=step.input_map,
                output_map=step.output_map,
            )
        return pb.ModelConfigResponse(config=message)
    message.instance_group.append(
        mc.ModelInstanceGroup(
            name=f"{version.name}_0", count=config.instances, kind=mc.ModelInstanceGroup.KIND_CPU
        )
    )
    if config.max_batch_size > 0:
        batching = config.batching
        message.dynamic_batching.CopyFrom(
            mc.ModelDynamicBatching(
                preferred_batch_size=batching.preferred_batch_sizes,
                max_queue_delay_microseconds=batching.max_queue_delay_us,
                default_queue_policy=mc.ModelQueuePolicy(max_queue_size=batching.max_queue_size),
            )
        )
    return pb.ModelConfigResponse(config=message)


def _version_policy(policy: VersionPolicy) -> mc.ModelVersionPolicy:
    if policy.all:
        return mc.ModelVersionPolicy(all=mc.ModelVersionPolicy.All())
    if policy.specific:
        return mc.ModelVersionPolicy(
            specific=mc.ModelVersionPolicy.Specific(versions=policy.specific)
        )
    return mc.ModelVersionPolicy(
        latest=mc.ModelVersionPolicy.Latest(num_versions=policy.latest or 1)
    )


def _duration(d: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=d.count, ns=d.ns)


def model_statistics(versions: list[ServedModel]) -> pb.ModelStatisticsResponse:
    stats = []
    for version in versions:
        s = version.stats
        stats.append(
            pb.ModelStatistics(
                name=version.name,
                version=str(version.version),
                last_inference=s.last_inference_ms,
                inference_count=s.inference_count,
                execution_count=s.execution_count,
                inference_stats=pb.InferStatistics(
                    success=_duration(s.success),
                    fail=_duration(s.fail),
                    queue=_duration(s.queue),
                    compute_input=_duration(s.compute_input),
                    compute_infer=_duration(s.compute_infer),
                    compute_output=_duration(s.compute_output),
                ),
                batch_stats=[
                    pb.InferBatchStatistics(
                        batch_size=size,
                        compute_input=_duration(b.compute_input),
                        compute_infer=_duration(b.compute_infer),
                        compute_output=_duration(b.compute_output),
                    )
                    for size, b in sorted(s.batches.items())
                ],
            )
        )
    return pb.ModelStatisticsResponse(model_stats=stats)


def repository_index(entries: list[IndexEntry]) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(
                name=e.name, version=e.version, state=e.state, reason=e.reason
            )
            for e in entries
        ]
    )

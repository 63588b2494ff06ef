"""JSON Schemas for the KServe resources in deploy/kserve/, which kubernetes-validate has no
schema for (they are custom resources).

Written from KServe's documented CRD fields (serving.kserve.io ServingRuntime v1alpha1 and
InferenceService v1beta1): every field KServe defines at these levels is allowed, anything
else is rejected, and the parts that are plain Kubernetes types (containers, resources,
env, probes) are checked against Kubernetes' own schema, from kubernetes-validate.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

KUBERNETES_VERSION = "1.37.0"
DEFINITIONS_ID = "https://kubernetes.io/api/_definitions.json"
K8S = DEFINITIONS_ID + "#/$defs/io.k8s."

# The protocols KServe knows (its InferenceServiceProtocol constants).
PROTOCOLS = ["v1", "v2", "grpc-v1", "grpc-v2"]

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}


def _k8s(name: str) -> dict[str, str]:
    return {"$ref": K8S + name}


def _metadata() -> dict[str, Any]:
    return {
        "allOf": [_k8s("apimachinery.pkg.apis.meta.v1.ObjectMeta")],
        "required": ["name"],
    }


_MODEL_FORMAT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "version": {"type": "string"},
        "autoSelect": {"type": "boolean"},
        "priority": {"type": "integer", "minimum": 1},
    },
}

SERVING_RUNTIME: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "serving.kserve.io/v1alpha1"},
        "kind": {"enum": ["ServingRuntime", "ClusterServingRuntime"]},
        "metadata": _metadata(),
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["containers"],
            "properties": {
                "supportedModelFormats": {"type": "array", "items": _MODEL_FORMAT},
                "protocolVersions": {"type": "array", "items": {"enum": PROTOCOLS}},
                "multiModel": {"type": "boolean"},
                "disabled": {"type": "boolean"},
                "containers": {
                    "type": "array",
                    "minItems": 1,
                    "items": _k8s("api.core.v1.Container"),
                },
                "annotations": _STRING_MAP,
                "labels": _STRING_MAP,
                "nodeSelector": _STRING_MAP,
                "affinity": _k8s("api.core.v1.Affinity"),
                "tolerations": {"type": "array", "items": _k8s("api.core.v1.Toleration")},
                "volumes": {"type": "array", "items": _k8s("api.core.v1.Volume")},
                "imagePullSecrets": {
                    "type": "array",
                    "items": _k8s("api.core.v1.LocalObjectReference"),
                },
                "replicas": {"type": "integer", "minimum": 0},
                "grpcEndpoint": {"type": "string"},
                "grpcDataEndpoint": {"type": "string"},
                "httpDataEndpoint": {"type": "string"},
                "builtInAdapter": {"type": "object"},
                "storageHelper": {"type": "object"},
                "schedulerName": {"type": "string"},
                "hostIPC": {"type": "boolean"},
                "resourceClaims": {"type": "array"},
                "workerSpec": {"type": "object"},
            },
        },
    },
}


def _absolute_refs(schema: Any) -> Any:
    """A copy of part of the Kubernetes definitions whose `#/...` refs still point there."""
    if isinstance(schema, dict):
        return {
            key: DEFINITIONS_ID + value
            if key == "$ref" and isinstance(value, str) and value.startswith("#")
            else _absolute_refs(value)
            for key, value in schema.items()
        }
    if isinstance(schema, list):
        return [_absolute_refs(item) for item in schema]
    return schema


def _model_spec(container: dict[str, Any]) -> dict[str, Any]:
    """InferenceService `predictor.model`: a Kubernetes container's fields (none required)
    plus KServe's own."""
    properties = _absolute_refs(container["properties"])
    properties.update(
        {
            "modelFormat": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
            },
            "runtime": {"type": "string"},
            "runtimeVersion": {"type": "string"},
            "protocolVersion": {"enum": PROTOCOLS},
            "storageUri": {"type": "string", "pattern": "^[a-z0-9+]+://."},
            "storage": {"type": "object"},
            "confidential": {"type": "object"},
        }
    )
    return {"type": "object", "additionalProperties": False, "properties": properties}


def _inference_service(container: dict[str, Any]) -> dict[str, Any]:
    predictor = {
        "type": "object",
        "additionalProperties": False,
        "required": ["model"],
        "properties": {
            "model": _model_spec(container),
            "minReplicas": {"type": "integer", "minimum": 0},
            "maxReplicas": {"type": "integer", "minimum": 1},
            "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
            "scaleMetricType": {"type": "string"},
            "scaleTarget": {"type": "integer", "minimum": 1},
            "containerConcurrency": {"type": "integer", "minimum": 0},
            "timeout": {"type": "integer", "minimum": 1},
            "canaryTrafficPercent": {"type": "integer", "minimum": 0, "maximum": 100},
            "deploymentStrategy": {"type": "object"},
            "annotations": _STRING_MAP,
            "labels": _STRING_MAP,
            "serviceAccountName": {"type": "string"},
            "nodeSelector": _STRING_MAP,
            "tolerations": {"type": "array", "items": _k8s("api.core.v1.Toleration")},
            "affinity": _k8s("api.core.v1.Affinity"),
            "volumes": {"type": "array", "items": _k8s("api.core.v1.Volume")},
            "terminationGracePeriodSeconds": {"type": "integer", "minimum": 0},
        },
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "serving.kserve.io/v1beta1"},
            "kind": {"const": "InferenceService"},
            "metadata": _metadata(),
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["predictor"],
                "properties": {
                    "predictor": predictor,
                    "transformer": {"type": "object"},
                    "explainer": {"type": "object"},
                },
            },
        },
    }


def _definitions() -> dict[str, Any]:
    path = f"kubernetes-json-schema/v{KUBERNETES_VERSION}-local-strict/_definitions.json"
    loaded: dict[str, Any] = json.loads((resources.files("kubernetes_validate") / path).read_text())
    return loaded


def validators() -> dict[str, jsonschema.Draft202012Validator]:
    """A validator per kind."""
    definitions = _definitions()
    registry: Registry = Resource.from_contents(definitions) @ Registry()
    container = definitions["$defs"]["io.k8s.api.core.v1.Container"]
    schemas = {
        "ServingRuntime": SERVING_RUNTIME,
        "InferenceService": _inference_service(container),
    }
    return {
        kind: jsonschema.Draft202012Validator(schema, registry=registry)
        for kind, schema in schemas.items()
    }

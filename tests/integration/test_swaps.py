"""Version swaps under load (explicit control mode): write version N+1, call
RepositoryModelLoad, repeat; clients keep sending the whole time.

Version v answers y = x + 10 v, so each answer is checked against its own input and the
version it reports. No request may fail, and no client may see an older version once it
has seen a newer one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

import grpc
import numpy as np
import tritonclient.grpc as triton
from processes import start_server
from traffic import SteadyLoad, output, raw_fp32_request, wait_until
from tritonclient.grpc import service_pb2, service_pb2_grpc

WriteModel: TypeAlias = Callable[[Path, str, dict[int, bytes], str], Path]
SWAPS = 20
CLIENTS = 4


def constant_of(version: int) -> float:
    return 10.0 * version


def _request(client: int, n: int) -> service_pb2.ModelInferRequest:
    # Small integers: x + 10 v is exact in FP32, so answers compare with ==.
    x = np.random.default_rng(client * 100_003 + n).integers(-100, 100, (1, 2)).astype(np.float32)
    return raw_fp32_request("swap", "x", x)


def _check(
    request: service_pb2.ModelInferRequest, response: service_pb2.ModelInferResponse
) -> None:
    x = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(1, 2)
    y = output(response, "y", np.float32)
    assert np.array_equal(y, x + constant_of(int(response.model_version))), (
        response.model_version,
        x,
        y,
    )


def test_twenty_swaps_under_load_fail_no_request(
    tmp_path: Path, write_model: WriteModel, add_constant_model: Callable[[float], bytes]
) -> None:
    write_model(tmp_path, "swap", {1: add_constant_model(constant_of(1))}, "max_batch_size: 8\n")
    with start_server(tmp_path) as server:
        client = triton.InferenceServerClient(server.grpc_address)
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            load = SteadyLoad(server.grpc_address, _request, _check, clients=CLIENTS)
            try:
                with load:
                    wait_until(lambda: load.successes() >= 50, 30, "the load to run")
                    for version in range(2, SWAPS + 2):
                        before = load.successes()
                        (tmp_path / "swap" / str(version)).mkdir()
                        (tmp_path / "swap" / str(version) / "model.onnx").write_bytes(
                            add_constant_model(constant_of(version))
                        )
                        client.load_model("swap")
                        # The swap is visible at once, to the next request.
                        request = _request(99, version)
                        response = stub.ModelInfer(request, timeout=30)
                        assert response.model_version == str(version)
                        _check(request, response)
                        # Some load ran across this swap before the next one.
                        wait_until(
                            lambda before=before: load.successes() >= before + 20, 30, "more load"
                        )
            finally:
                client.close()
    outcomes = load.snapshot()
    failed = [o for o in outcomes if o.code != grpc.StatusCode.OK]
    assert failed == [], failed[:5]
    seen = {o.version for o in outcomes}
    assert len(seen) >= SWAPS // 2, f"the load saw only versions {sorted(seen)}"
    for number in range(CLIENTS):
        versions = [int(o.version) for o in outcomes if o.client == number]
        assert versions == sorted(versions), f"client {number} went back to an older version"
    assert [e for e in server.logs() if e["level"] in ("ERROR", "CRITICAL")] == []

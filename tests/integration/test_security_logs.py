"""No leaks: a run with authentication on, exercised with good and bad credentials, reloads
and refusals, then every line the server wrote is searched for the keys, tokens and secret,
which must not appear. And the errors clients see name no absolute server path and carry
no stack trace."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import tritonclient.grpc as triton
from processes import ServerProcess, start_server, stop_process
from security_material import KeysFile, Signers
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException


def _call(call: Callable[[], object]) -> None:
    with contextlib.suppress(grpc.RpcError, InferenceServerException):
        call()


def _await_event(server: ServerProcess, event: str) -> None:
    deadline = time.monotonic() + 10
    while not any(entry.get("event") == event for entry in server.logs()):
        assert time.monotonic() < deadline, f"no {event} line"
        time.sleep(0.05)


def test_credentials_never_reach_the_logs(
    tmp_path: Path,
    write_model: Callable[..., Path],
    add_constant_model: Callable[[float], bytes],
) -> None:
    write_model(tmp_path / "models", "a", {1: add_constant_model(1.0)}, "max_batch_size: 8\n")
    write_model(tmp_path / "models", "b", {1: add_constant_model(2.0)}, "max_batch_size: 8\n")
    keys = KeysFile(tmp_path / "keys.yaml")
    admin = keys.add("admin", ["*"], admin=True)
    reader = keys.add("reader", ["a"], rate=0.5, burst=1)
    signers = Signers(tmp_path)
    now = int(time.time())
    good_token = signers.token("RS256")
    bad_tokens = [
        signers.token("HS256", exp=now - 3600),
        signers.token("ES256", aud="elsewhere"),
        signers.forged("RS256"),
    ]
    wrong_key = "v2k_" + "w" * 43
    flags = [
        "--api-keys-file", str(keys.path), *signers.flags(),
        "--log-level", "DEBUG", "--security-reload-s", "0",
    ]  # fmt: skip
    with start_server(tmp_path / "models", *flags) as server:
        client = triton.InferenceServerClient(server.grpc_address)
        channel = grpc.insecure_channel(server.grpc_address)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        x = triton.InferInput("x", [1, 2], "FP32")
        x.set_data_from_numpy(np.ones((1, 2), np.float32))
        try:
            for credential in [admin, reader, good_token, wrong_key, *bad_tokens]:
                headers = {"authorization": f"Bearer {credential}"}
                for model in ("a", "b"):
                    _call(lambda h=headers, m=model: client.infer(m, [x], headers=h))
                _call(lambda h=headers: client.get_model_repository_index(headers=h))
                _call(lambda h=headers: client.load_model("b", headers=h))
                _call(lambda c=credential: client.is_server_live(headers={"x-api-key": c}))
                requests = iter([service_pb2.ModelInferRequest(model_name="b")])
                metadata = (("authorization", f"Bearer {credential}"),)
                _call(lambda r=requests, m=metadata: list(stub.ModelStreamInfer(r, metadata=m)))
            # A reload that fails, then one that works.
            keys.path.write_text("keys: [")
            os.kill(server.process.pid, signal.SIGHUP)
            _await_event(server, "security_reload_failed")
            keys.write()
            os.kill(server.process.pid, signal.SIGHUP)
            _await_event(server, "security_reloaded")
        finally:
            client.close()
            channel.close()
            stop_process(server.process)
        text = "".join(server.log_lines)
    assert '"event": "security_reload_failed"' in text  # the run did log things
    assert '"event": "stopped"' in text
    secrets = {
        "admin key": admin,
        "reader key": reader,
        "wrong key": wrong_key,
        "good token": good_token,
        "HS256 secret": signers.secret.decode(),
        **{f"bad token {i}": token for i, token in enumerate(bad_tokens)},
    }
    for name, secret in secrets.items():
        assert secret not in text, f"the {name} appears in the server's output"
        for fragment in _fragments(secret):
            assert fragment not in text, f"part of the {name} appears: {fragment!r}"


def _fragments(secret: str, size: int = 12) -> set[str]:
    """Every `size`-character piece of the secret's random part: a key after its prefix,
    a token's signature (its header and claims are no secret, and repeat across tokens)."""
    random_part = secret.rsplit(".", 1)[-1].removeprefix("v2k_")
    return {random_part[i : i + size] for i in range(len(random_part) - size + 1)}


def test_client_errors_name_no_server_paths_and_carry_no_traces(
    tmp_path: Path,
    write_model: Callable[..., Path],
    add_constant_model: Callable[[float], bytes],
) -> None:
    root = (tmp_path / "models").resolve()
    write_model(root, "good", {1: add_constant_model(1.0)}, "max_batch_size: 8\n")
    write_model(root, "badcfg", {1: add_constant_model(1.0)}, "max_batch_size: [\n")
    write_model(root, "badonnx", {1: b"not an onnx file"}, "max_batch_size: 8\n")
    write_model(root, "badkey", {1: add_constant_model(1.0)}, "unknown_key: 1\n")
    with start_server(root) as server:
        client = triton.InferenceServerClient(server.grpc_address)
        try:
            messages = [m.reason for m in client.get_model_repository_index().models]
            for name in ("badcfg", "badonnx", "badkey", "../outside", "absent"):
                try:
                    client.load_model(name)
                except InferenceServerException as exc:
                    messages.append(str(exc.message()))
            for name in ("badcfg", "absent"):
                try:
                    client.get_model_metadata(name)
                except InferenceServerException as exc:
                    messages.append(str(exc.message()))
        finally:
            client.close()
    assert len(messages) >= 10 and any("badcfg/config.yaml" in m for m in messages)
    for message in messages:
        assert str(root) not in message and str(tmp_path) not in message, message
        assert "Traceback" not in message and 'File "' not in message, message

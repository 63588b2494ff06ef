"""The locust users' encoders against real clients' and the specifications' formats.

No server here: these pin what loadtests/locust sends and how it reads replies, against
tritonclient.http (a real V2 REST client), Triton's binary tensor extension and the
gRPC-web framing. The modules under test import neither locust nor the server's
`inference` package, so they load in this process.
"""

from __future__ import annotations

import json
import random
import struct

import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2

from loadtests.locust import codec_grpc, codec_rest, grpc_web, samples
from loadtests.locust.samples import Sample, Tensor, WrongAnswer


def _sample() -> Sample:
    images = np.arange(128, dtype=np.float32).reshape(2, 64)
    return Sample(
        "digits", (Tensor("input", "FP32", images),), ("label", "probabilities"), np.array([0, 1])
    )


def _triton_body(binary: bool) -> tuple[bytes, int | None]:
    tensor = triton_http.InferInput("input", [2, 64], "FP32")
    tensor.set_data_from_numpy(_sample().inputs[0].array, binary_data=binary)
    outputs = [triton_http.InferRequestedOutput(n, binary_data=binary) for n in _sample().outputs]
    return triton_http.InferenceServerClient.generate_request_body([tensor], outputs)


def test_binary_rest_request_is_what_tritonclient_sends() -> None:
    body, headers = codec_rest.request(_sample(), binary=True)
    expected, header_length = _triton_body(binary=True)
    assert headers["Inference-Header-Content-Length"] == str(header_length)
    assert headers["Content-Type"] == "application/octet-stream"
    length = int(headers["Inference-Header-Content-Length"])
    assert json.loads(body[:length]) == json.loads(expected[:header_length])
    assert body[length:] == expected[header_length:]


def test_json_rest_request_is_what_tritonclient_sends() -> None:
    body, headers = codec_rest.request(_sample(), binary=False)
    expected, _ = _triton_body(binary=False)
    ours, theirs = json.loads(body), json.loads(expected)
    assert headers["Content-Type"] == "application/json"
    assert ours["inputs"] == theirs["inputs"]
    assert [o["name"] for o in ours["outputs"]] == [o["name"] for o in theirs["outputs"]]


def _binary_reply() -> tuple[bytes, dict[str, str]]:
    """A reply laid out as the binary tensor extension's example: JSON, then each output."""
    labels = np.array([3, 5], np.int64).tobytes()
    probabilities = np.full((2, 10), 0.1, np.float32).tobytes()
    outputs = [
        {"name": "label", "datatype": "INT64", "shape": [2], "parameters": {}},
        {"name": "probabilities", "datatype": "FP32", "shape": [2, 10], "parameters": {}},
    ]
    outputs[0]["parameters"] = {"binary_data_size": len(labels)}
    outputs[1]["parameters"] = {"binary_data_size": len(probabilities)}
    header = json.dumps({"model_name": "digits", "model_version": "2", "outputs": outputs})
    header_bytes = header.encode()
    headers = {"inference-header-content-length": str(len(header_bytes))}
    return header_bytes + labels + probabilities, headers


def test_binary_rest_reply_decodes_as_tritonclient_decodes_it() -> None:
    body, headers = _binary_reply()
    ours = codec_rest.outputs("digits", body, headers)
    theirs = triton_http.InferResult.from_response_body(
        body, header_length=int(headers["inference-header-content-length"])
    )
    for name in ("label", "probabilities"):
        np.testing.assert_array_equal(ours[name].array, theirs.as_numpy(name))
    assert ours["label"].datatype == "INT64"


def test_json_rest_reply_decodes() -> None:
    label = {"name": "label", "datatype": "INT64", "shape": [2], "data": [3, 5]}
    body = json.dumps({"model_name": "digits", "outputs": [label]}).encode()
    decoded = codec_rest.outputs("digits", body, {"content-type": "application/json"})
    np.testing.assert_array_equal(decoded["label"].array, [3, 5])


def test_rest_reply_with_a_wrong_size_is_a_wrong_answer() -> None:
    body = json.dumps(
        {"outputs": [{"name": "label", "datatype": "INT64", "shape": [3], "data": [3, 5]}]}
    ).encode()
    with pytest.raises(WrongAnswer, match="2 elements for shape"):
        codec_rest.outputs("digits", body, {})


def test_rest_errors_are_short_and_stable() -> None:
    assert codec_rest.error(b'{"error": "model \'x\' is unknown\\nmore"}') == "model 'x' is unknown"
    status = b'{"code": 3, "message": "Parsing terminated.\\n\\u0000\\u0001"}'
    assert codec_rest.error(status) == "Parsing terminated."


@pytest.mark.parametrize("raw", [True, False])
def test_grpc_request_round_trip(raw: bool) -> None:
    message = codec_grpc.request(_sample(), raw, version="2", request_id="7")
    assert message.model_version == "2" and message.id == "7"
    assert [o.name for o in message.outputs] == ["label", "probabilities"]
    assert bool(message.raw_input_contents) is raw
    reply = service_pb2.ModelInferResponse(model_name="digits")
    reply.outputs.add(name="input", datatype="FP32", shape=[2, 64])
    if raw:
        reply.raw_output_contents.extend(message.raw_input_contents)
    else:
        reply.outputs[0].contents.fp32_contents.extend(message.inputs[0].contents.fp32_contents)
    decoded = codec_grpc.outputs(reply)
    np.testing.assert_array_equal(decoded["input"].array, _sample().inputs[0].array)


def test_grpc_web_frames_and_trailers() -> None:
    payload = b"\x0a\x06digits"
    trailers = b"grpc-status: 0\r\ngrpc-message: \r\n"
    body = grpc_web.frame(payload) + struct.pack(">BI", 0x80, len(trailers)) + trailers
    reply = grpc_web.parse(body, {})
    assert reply.messages == [payload] and reply.status == 0


def test_grpc_web_trailers_only_error() -> None:
    headers = {"Grpc-Status": "5", "Grpc-Message": "model%20%27x%27%20is%20unknown"}
    reply = grpc_web.parse(b"", headers)
    assert (reply.messages, reply.status, reply.message) == ([], 5, "model 'x' is unknown")


def test_grpc_web_cut_frame_is_an_error() -> None:
    with pytest.raises(grpc_web.FramingError):
        grpc_web.parse(grpc_web.frame(b"abcdef")[:-2], {})


def test_grpc_web_status_that_is_no_number_is_a_framing_error() -> None:
    """Not int()'s ValueError, which would escape the user's task."""
    with pytest.raises(grpc_web.FramingError, match="not a number"):
        grpc_web.parse(b"", {"grpc-status": "OK"})


def test_digits_are_the_models_training_split() -> None:
    """The bit mask in samples.py selects exactly models/build.py's training images."""
    from models.build import digits_split

    images, labels = samples.digits_images()
    x_train, _, y_train, _ = digits_split()

    ours = sorted(r.tobytes() for r in np.column_stack([images, labels.astype(np.float32)]))
    theirs = sorted(r.tobytes() for r in np.column_stack([x_train, y_train.astype(np.float32)]))
    assert len(ours) == len(theirs) == 1347
    assert ours == theirs


def test_text_lines_are_ppocr_crops() -> None:
    lines, directions = samples.text_lines()
    assert lines.shape[1:] == (3, 48, 192) and lines.dtype == np.float32
    assert lines.min() >= -1.0 and lines.max() <= 1.0
    assert set(directions.tolist()) == {0, 1}


def test_silero_state_advances_only_on_good_answers() -> None:
    vad = samples.SileroVad(random.Random(0))
    first = vad.sample(2)
    assert first.inputs[0].array.shape == (2, 576)
    assert first.inputs[1].array.shape == (2, 2, 128)
    assert first.inputs[2].array.shape == ()
    state = np.full((2, 2, 128), 0.5, np.float32)
    vad.check(
        first,
        {
            "output": Tensor("output", "FP32", np.array([[0.2], [0.9]], np.float32)),
            "stateN": Tensor("stateN", "FP32", state),
        },
    )
    second = vad.sample(2)
    np.testing.assert_array_equal(second.inputs[1].array, state)
    np.testing.assert_array_equal(second.inputs[0].array[:, :64], first.inputs[0].array[:, -64:])
    with pytest.raises(WrongAnswer, match="outside"):
        vad.check(
            second,
            {
                "output": Tensor("output", "FP32", np.array([[1.5], [0.9]], np.float32)),
                "stateN": Tensor("stateN", "FP32", state),
            },
        )


# --- replies that cannot be read are wrong answers, never escaping errors --------------------


def _digits() -> tuple[samples.Digits, Sample]:
    digits = samples.Digits(random.Random(0))
    return digits, digits.sample(2)


def _grpc_digits_reply(sample: Sample, label_bytes: bytes) -> service_pb2.ModelInferResponse:
    reply = service_pb2.ModelInferResponse(model_name="digits")
    reply.outputs.add(name="label", datatype="INT64", shape=[2])
    reply.outputs.add(name="probabilities", datatype="FP32", shape=[2, 10])
    reply.raw_output_contents.extend([label_bytes, np.full((2, 10), 0.1, np.float32).tobytes()])
    return reply


def test_a_right_reply_is_judged_right() -> None:
    digits, sample = _digits()
    reply = _grpc_digits_reply(sample, np.asarray(sample.expected, np.int64).tobytes())
    assert digits.judge(sample, lambda: codec_grpc.outputs(reply)) is None


def test_a_wrong_label_is_judged_by_the_check() -> None:
    digits, sample = _digits()
    reply = _grpc_digits_reply(sample, (np.asarray(sample.expected, np.int64) + 1).tobytes())
    wrong = digits.judge(sample, lambda: codec_grpc.outputs(reply))
    assert isinstance(wrong, WrongAnswer)
    assert str(wrong) == "digits: a label differs from the image's true label"


def test_a_misaligned_raw_grpc_buffer_is_a_wrong_answer() -> None:
    """15 bytes for two INT64 labels: numpy's ValueError, which used to escape the task."""
    digits, sample = _digits()
    reply = _grpc_digits_reply(sample, b"\x00" * 15)
    with pytest.raises(ValueError):
        codec_grpc.outputs(reply)
    wrong = digits.judge(sample, lambda: codec_grpc.outputs(reply))
    assert isinstance(wrong, WrongAnswer)
    assert str(wrong).startswith("digits: the reply cannot be read (ValueError: ")


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        # A binary REST reply whose label blob is 15 bytes for two INT64 values.
        (
            json.dumps(
                {
                    "outputs": [
                        {
                            "name": "label",
                            "datatype": "INT64",
                            "shape": [2],
                            "parameters": {"binary_data_size": 15},
                        }
                    ]
                }
            ).encode()
            + b"\x00" * 15,
            None,
        ),
        # A header length that is not a number.
        (b'{"outputs": []}', {"Inference-Header-Content-Length": "fifteen"}),
        # An output that is not an object.
        (b'{"outputs": [7]}', {}),
    ],
    ids=["misaligned-binary", "bad-header-length", "output-not-an-object"],
)
def test_an_unreadable_rest_reply_is_a_wrong_answer(
    body: bytes, headers: dict[str, str] | None
) -> None:
    digits, sample = _digits()
    if headers is None:
        headers = {"Inference-Header-Content-Length": str(body.index(b"}]}") + 3)}
    with pytest.raises(Exception) as raised:
        codec_rest.outputs("digits", body, headers)
    assert not isinstance(raised.value, WrongAnswer)
    wrong = digits.judge(sample, lambda: codec_rest.outputs("digits", body, headers))
    assert isinstance(wrong, WrongAnswer)
    assert str(wrong).startswith("digits: the reply cannot be read (")
    assert len(str(wrong)) < 200  # short and stable: locust groups failures by their text

"""A small grpcurl for machines without it: list services and call unary RPCs with JSON,
learning the messages from the server's reflection service (no .proto files needed).

    python examples/grpcurl.py 127.0.0.1:8001 list
    python examples/grpcurl.py 127.0.0.1:8001 describe inference.GRPCInferenceService
    python examples/grpcurl.py -d '{"name": "digits"}' 127.0.0.1:8001 \\
        inference.GRPCInferenceService/ModelMetadata

Needs grpcio, grpcio-reflection and protobuf (`pip install grpcio grpcio-reflection`); works
against the server and through the gateway. Replies print as proto3 JSON, like grpcurl's.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)


def _call(
    channel: grpc.Channel, pool: descriptor_pool.DescriptorPool, target: str, data: str
) -> str:
    service_name, _, method_name = target.rpartition("/")
    method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
    if method.client_streaming or method.server_streaming:
        raise SystemExit(f"{target} streams; this tool calls unary RPCs only")
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    request = json_format.Parse(data, request_class())
    rpc = channel.unary_unary(
        f"/{service_name}/{method_name}",
        request_serializer=lambda message: message.SerializeToString(),
        response_deserializer=response_class.FromString,
    )
    reply = rpc(request, timeout=30)
    return json_format.MessageToJson(reply, preserving_proto_field_name=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", "--data", default="{}", help="the request as JSON")
    parser.add_argument("address", help="HOST:PORT of the server or the gateway")
    parser.add_argument("command", help="list, describe SERVICE, or SERVICE/METHOD")
    parser.add_argument("name", nargs="?", help="the service to describe")
    args = parser.parse_args(argv)
    with grpc.insecure_channel(args.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(database)
        try:
            if args.command == "list":
                print("\n".join(sorted(database.get_services())))
            elif args.command == "describe":
                service = pool.FindServiceByName(args.name)
                for method in service.methods:
                    print(
                        f"{method.name}({method.input_type.full_name}) returns "
                        f"({method.output_type.full_name})"
                    )
            else:
                print(_call(channel, pool, args.command, args.data))
        except grpc.RpcError as error:
            print(f"ERROR: {error.code().name}: {error.details()}", file=sys.stderr)  # type: ignore[attr-defined]
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

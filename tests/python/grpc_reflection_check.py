#!/usr/bin/env python3
"""What grpcurl does, with grpcio's reflection client: list a server's services through server
reflection, resolve reflect.v1.Inference's descriptors from the server alone (no .proto files
here), and call ListModels and the streaming Chat with messages built from those descriptors.

Usage: grpc_reflection_check.py HOST:PORT
Prints one JSON line (services, models, chunk count, finish); exits non-zero on a failed check.
(grpcurl itself is a Go program packaged neither by Debian nor by PyPI, so tests use this.)
"""
import json
import sys

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase)


def check(condition, message):
    if not condition:
        print(f"grpc_reflection_check: {message}", file=sys.stderr)
        sys.exit(1)


def main():
    channel = grpc.insecure_channel(sys.argv[1])
    database = ProtoReflectionDescriptorDatabase(channel)
    services = sorted(database.get_services())
    for wanted in ("reflect.v1.Inference", "grpc.health.v1.Health"):
        check(wanted in services, f"{wanted} not listed: {services}")
    pool = descriptor_pool.DescriptorPool(database)
    service = pool.FindServiceByName("reflect.v1.Inference")
    methods = {method.name: method for method in service.methods}
    check(set(methods) >= {"Generate", "Chat", "Tokenize", "ListModels"},
          f"methods {sorted(methods)}")

    def message_class(descriptor):
        return message_factory.GetMessageClass(descriptor)

    def call(name, request_json, streaming):
        method = methods[name]
        request_class = message_class(method.input_type)
        response_class = message_class(method.output_type)
        request = json_format.Parse(json.dumps(request_json), request_class())
        path = f"/{service.full_name}/{name}"
        invoke = (channel.unary_stream if streaming else channel.unary_unary)(
            path, request_serializer=lambda message: message.SerializeToString(),
            response_deserializer=response_class.FromString)
        return invoke(request, timeout=120)

    models = json_format.MessageToDict(call("ListModels", {}, False))
    check(models.get("models"), f"ListModels returned {models}")
    chunks = [json_format.MessageToDict(chunk) for chunk in call(
        "Chat", {"messages": [{"role": "ROLE_USER", "content": "Why is the sky blue?"}],
                 "addReflectionSystemPrompt": True,
                 "sampling": {"maxTokens": 16, "temperature": 0}}, True)]
    check(len(chunks) >= 2, f"Chat streamed {len(chunks)} chunks")
    finish = chunks[-1].get("finish")
    check(finish is not None and "usage" in finish, f"last chunk {chunks[-1]}")
    check(all("finish" not in chunk for chunk in chunks[:-1]), "finish before the last chunk")
    print(json.dumps({"services": services, "models": models["models"], "chunks": len(chunks),
                      "finish": finish}))


if __name__ == "__main__":
    main()

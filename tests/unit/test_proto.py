"""The committed generated code must match proto/synod/v1/*.proto (regenerate if not)."""

from __future__ import annotations

import importlib
import pathlib
import sys

from google.protobuf import descriptor_pb2

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import gen_proto  # noqa: E402

FIX = "run: .venv/bin/python scripts/gen_proto.py"


def _fresh_descriptors(tmp_path: pathlib.Path) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    out = tmp_path / "gen"
    out.mkdir()
    descriptor_set = tmp_path / "set.pb"
    gen_proto.generate(out, descriptor_set)
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set.read_bytes()).file
    return {f.name: f for f in files if f.name.startswith("synod/")}


def _normalised(fd: descriptor_pb2.FileDescriptorProto) -> descriptor_pb2.FileDescriptorProto:
    # protoc adds json_name to descriptor sets but not to the copy embedded in *_pb2.py.
    fd = descriptor_pb2.FileDescriptorProto.FromString(fd.SerializeToString())
    stack = list(fd.message_type)
    while stack:
        message = stack.pop()
        for fld in message.field:
            fld.ClearField("json_name")
        stack.extend(message.nested_type)
    return fd


def test_every_proto_has_generated_modules():
    for proto in gen_proto.proto_files():
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            generated = proto.with_name(proto.stem + suffix)
            assert generated.exists(), f"{generated} missing; {FIX}"


def test_generated_code_matches_proto_files(tmp_path):
    # Compare descriptors, not bytes: the generator's version banner may differ
    # between grpcio-tools releases, the schema must not.
    fresh = _fresh_descriptors(tmp_path)
    assert fresh, "no .proto files found"
    for name, want in fresh.items():
        module = importlib.import_module(name.removesuffix(".proto").replace("/", ".") + "_pb2")
        have = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        assert _normalised(have) == _normalised(want), f"generated code for {name} is stale; {FIX}"


def test_grpc_modules_expose_every_service_method(tmp_path):
    for name, fd in _fresh_descriptors(tmp_path).items():
        grpc_mod = importlib.import_module(
            name.removesuffix(".proto").replace("/", ".") + "_pb2_grpc")
        for service in fd.service:
            servicer = getattr(grpc_mod, f"{service.name}Servicer", None)
            assert servicer is not None, f"{service.name} missing from grpc code; {FIX}"
            for method in service.method:
                assert hasattr(servicer, method.name), f"{method.name} missing; {FIX}"

"""Regenerate the Python code for proto/synod/v1/*.proto (run after editing a .proto).

    .venv/bin/python scripts/gen_proto.py [--out DIR]

Writes *_pb2.py, *_pb2.pyi and *_pb2_grpc.py next to each .proto (or under DIR).
tests/unit/test_proto.py fails when the committed code no longer matches the .proto.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"


def proto_files() -> list[pathlib.Path]:
    return sorted((PROTO_ROOT / "synod" / "v1").glob("*.proto"))


def generate(out_dir: pathlib.Path, descriptor_set: pathlib.Path | None = None) -> None:
    from grpc_tools import protoc

    args = ["grpc_tools.protoc", f"-I{PROTO_ROOT}", f"--python_out={out_dir}",
            f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}"]
    if descriptor_set is not None:
        args += [f"--descriptor_set_out={descriptor_set}", "--include_imports"]
    args += [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed (see the message above)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=PROTO_ROOT,
                        help="output root (default: proto/, next to the .proto files)")
    generate(parser.parse_args().out)
    print(f"generated code for {len(proto_files())} .proto file(s)", file=sys.stderr)


if __name__ == "__main__":
    main()

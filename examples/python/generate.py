"""Generates the Python stubs of the fiscalbill contracts from ../../proto into gen/."""

import pathlib
import sys

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
PROTO = HERE.parent.parent / "proto"
GEN = HERE / "gen"


def generate() -> pathlib.Path:
    GEN.mkdir(exist_ok=True)
    files = sorted(str(p.relative_to(PROTO)) for p in PROTO.rglob("*.proto"))
    include = pathlib.Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    code = protoc.main(["grpc_tools.protoc", f"-I{PROTO}", f"-I{include}", f"--python_out={GEN}", f"--grpc_python_out={GEN}", f"--pyi_out={GEN}", *files])
    if code != 0:
        sys.exit(f"protoc failed with {code}")
    # Python packages for the generated modules.
    for directory in [GEN, *(p for p in GEN.rglob("*") if p.is_dir())]:
        (directory / "__init__.py").touch()
    return GEN


if __name__ == "__main__":
    print(generate())

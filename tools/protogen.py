"""Generates the Python stubs in modelyard/v1 from protos/ (`make protos`).

Messages get mypy-protobuf .pyi files and the gRPC stubs typed ones (aio included), so
client code type-checks. `generate(out_dir)` is also what the staleness test calls.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "modelyard" / "v1").glob("*.proto"))


def generate(out_dir: Path) -> None:
    import grpc_tools

    well_known = Path(grpc_tools.__file__).parent / "_proto"
    bin_dir = Path(sys.executable).parent
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        # mypy-protobuf's plugins live beside this interpreter, which may not be on PATH
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *(str(p.relative_to(PROTO_ROOT)) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))


def main() -> None:
    generate(ROOT)
    print(
        f"generated stubs for {len(proto_files())} proto files into modelyard/v1", file=sys.stderr
    )


if __name__ == "__main__":
    main()

"""Regenerate the gRPC code in quorra/rpc/ from proto/quorra.proto (`make proto`).

    python -m quorra.rpc.codegen            write into quorra/rpc/
    python -m quorra.rpc.codegen --out DIR  write elsewhere (the staleness test compares)

protoc writes ``import quorra_pb2`` into the ``_pb2_grpc`` module, which only works with
quorra/rpc/ on sys.path; we rewrite it to a package-relative import."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PACKAGE_DIR = Path(__file__).resolve().parent
PROTO_DIR = PACKAGE_DIR.parent.parent / "proto"
PROTO_NAME = "quorra.proto"
GENERATED = ("quorra_pb2.py", "quorra_pb2.pyi", "quorra_pb2_grpc.py")
_ABSOLUTE_IMPORT = "import quorra_pb2 as quorra__pb2"
_RELATIVE_IMPORT = "from . import quorra_pb2 as quorra__pb2"


def generate(out_dir: Path, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Run protoc into `out_dir`; return the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = resources.files("grpc_tools") / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={proto_dir}",
            f"--proto_path={well_known}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            PROTO_NAME,
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status}")
    _make_import_relative(out_dir / "quorra_pb2_grpc.py")
    return [out_dir / name for name in GENERATED]


def _make_import_relative(path: Path) -> None:
    source = path.read_text()
    if _ABSOLUTE_IMPORT not in source:
        raise RuntimeError(f"{path.name}: protoc's import line changed; update quorra/rpc/codegen.py")
    path.write_text(source.replace(_ABSOLUTE_IMPORT, _RELATIVE_IMPORT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PACKAGE_DIR, help="directory to write into")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

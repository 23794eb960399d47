"""The generated code in quorra/rpc/ is what `make proto` makes from proto/quorra.proto."""

from __future__ import annotations

from quorra.rpc import codegen


def test_the_generated_code_is_up_to_date(tmp_path):
    written = codegen.generate(tmp_path)

    stale = [path.name for path in written if path.read_bytes() != (codegen.PACKAGE_DIR / path.name).read_bytes()]
    assert stale == [], f"run `make proto`: {stale} differ from what proto/quorra.proto generates"


def test_the_grpc_module_imports_its_messages_relative_to_the_package(tmp_path):
    source = (codegen.PACKAGE_DIR / "quorra_pb2_grpc.py").read_text()

    assert "from . import quorra_pb2 as quorra__pb2" in source
    assert "\nimport quorra_pb2" not in source

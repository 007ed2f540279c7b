"""Every language generates from protos/ with plain protoc, no flags: no error, no warning.

Runs the real protoc that the dev extra installs beside this interpreter (grpcio-tools'
bundled protoc has only the Python generators). Go's generator is a separate program, so
for Go the test checks the option it needs (go_package).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import descriptor_pb2

PROTO_ROOT = Path(__file__).resolve().parents[2] / "protos"
PROTO_FILES = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
PROTOC = Path(sys.executable).parent / "protoc"

# language -> (the file the generator writes a message to, code that file must hold);
# {stem} is the .proto file's name without its suffix, {Stem} in PascalCase.
GENERATED = {
    "java": ("dev/modelyard/v1/{message}.java", "class {message} "),
    "kotlin": ("dev/modelyard/v1/{message}Kt.kt", "object {message}Kt "),
    "csharp": ("{Stem}.cs", "partial class {message} "),
    "cpp": ("modelyard/v1/{stem}.pb.h", "class {message};"),
    "ruby": ("modelyard/v1/{stem}_pb.rb", "{message} = "),
    "php": ("Modelyard/V1/{message}.php", "class {message} "),
    "objc": ("modelyard/v1/{Stem}.pbobjc.h", "@interface MYD{message} "),
    "python": ("modelyard/v1/{stem}_pb2.py", "['_{MESSAGE}']"),
}
# options that name the package in one language each (go_package has its own test):
# every file must agree on them
PACKAGE_OPTIONS = (
    "java_package",
    "csharp_namespace",
    "php_namespace",
    "ruby_package",
    "objc_class_prefix",
)


def run_protoc(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROTOC.is_file(), f"no protoc at {PROTOC}: `make install` installs the dev extra"
    return subprocess.run(
        [str(PROTOC), f"-I{PROTO_ROOT}", *args, *PROTO_FILES],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[descriptor_pb2.FileDescriptorProto]:
    """The .proto files as protoc parsed them."""
    out = tmp_path_factory.mktemp("descriptors") / "set.pb"
    result = run_protoc(f"--descriptor_set_out={out}")
    assert result.returncode == 0, result.stderr
    return list(descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file)


@pytest.mark.parametrize("language", sorted(GENERATED))
def test_protoc_generates_the_language_cleanly(
    language: str, files: list[descriptor_pb2.FileDescriptorProto], tmp_path: Path
) -> None:
    result = run_protoc(f"--{language}_out={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # protoc prints its warnings (e.g. clashing names) here

    path_template, code_template = GENERATED[language]
    for file in files:
        stem = Path(file.name).stem
        for message in file.message_type:
            names = {
                "stem": stem,
                "Stem": "".join(part.capitalize() for part in stem.split("_")),
                "message": message.name,
                "MESSAGE": message.name.upper(),
            }
            generated = tmp_path / path_template.format(**names)
            assert generated.is_file(), f"{language}: no {generated.relative_to(tmp_path)}"
            code = code_template.format(**names)
            assert code in generated.read_text(), f"{language}: no `{code}` in {generated.name}"


def test_every_file_sets_one_go_package(files: list[descriptor_pb2.FileDescriptorProto]) -> None:
    # protoc-gen-go refuses a file without it ("unable to determine Go import path")
    go_packages = {file.name: file.options.go_package for file in files}
    assert all(go_packages.values()), go_packages
    assert len(set(go_packages.values())) == 1, go_packages  # one proto package, one Go package


def test_every_file_names_the_package_alike_in_each_language(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    for option in PACKAGE_OPTIONS:
        values = {file.name: getattr(file.options, option) for file in files}
        assert all(values.values()) and len(set(values.values())) == 1, (option, values)
    assert all(file.options.java_multiple_files for file in files)


def test_java_outer_classes_clash_with_no_type(
    files: list[descriptor_pb2.FileDescriptorProto],
) -> None:
    # with java_multiple_files every top-level type is a class of the same Java package
    outer = [file.options.java_outer_classname for file in files]
    types = {message.name for file in files for message in file.message_type}
    types |= {enum.name for file in files for enum in file.enum_type}
    types |= {service.name for file in files for service in file.service}
    assert all(outer) and len(set(outer)) == len(outer), outer
    assert not types & set(outer), types & set(outer)


def test_buf_gen_yaml_runs_the_languages_this_test_generates() -> None:
    # Python is not there: the package ships its stubs (modelyard/v1, with the services)
    template = yaml.safe_load((PROTO_ROOT / "buf.gen.yaml").read_text())
    plugins = template["plugins"]
    assert {plugin["protoc_builtin"] for plugin in plugins} == set(GENERATED) - {"python"}
    assert all(plugin["out"] for plugin in plugins)

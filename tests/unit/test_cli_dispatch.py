"""`modelyard <command>` imports that command's module only: each service of the local
stack is a process started as `modelyard <service>`, and the other commands' imports (the
client core's numpy, the stack's etcd client, rich's tables) would sit in its memory for
nothing. `modelyard --help` still lists every command."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import typer

from modelyard_cli.main import COMMANDS, full_app

COMMAND_MODULES = {f"modelyard_cli.{m}" for m in COMMANDS.values() if m is not None}

# Runs `modelyard <argv>` in a fresh interpreter, as the console script does, then prints
# the command modules it imported. --help ends a command before it starts a server.
PROBE = """
import json, sys
from modelyard_cli.main import main
sys.argv = ["modelyard", *json.loads(sys.argv[1])]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def imported_by(*argv: str) -> tuple[str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    modules = json.loads(done.stderr.strip().splitlines()[-1])
    return done.stdout, set(modules)


@pytest.mark.parametrize(
    ("service", "module"),
    [
        ("worker", None),
        ("controlplane", "controlplane"),
        ("composer", "composer"),
        ("gateway", "gateway"),
    ],
)
def test_a_service_command_imports_no_other_command(service: str, module: str | None) -> None:
    output, modules = imported_by(service, "--help")
    assert f"modelyard {service}" in output  # its own help, not the group's
    own = {f"modelyard_cli.{module}"} if module else set()
    assert modules & COMMAND_MODULES == own


def test_the_top_level_help_lists_every_command() -> None:
    output, _ = imported_by("--help")
    # a command's row starts with its name; options start with "-", wrapped text with spaces
    listed = {m.group(1) for line in output.splitlines() if (m := re.match(r"│ (\w\S*)", line))}
    assert listed == set(COMMANDS)


def test_a_mistyped_command_is_matched_against_every_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modelyard_cli", "statsu"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "Did you mean 'status'?" in done.stderr


def test_the_table_names_every_command_of_the_full_app() -> None:
    # a command missing from COMMANDS would still run, through the full app
    group = typer.main.get_group(full_app())
    assert set(group.commands) == set(COMMANDS)

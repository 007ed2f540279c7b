"""Help that teaches: the top-level help leads with the main job, every command's help has
an example and shows its defaults, and --version prints the package's version."""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from modelyard_cli.main import full_app

ROOT: Any = typer.main.get_command(full_app())
# Commands of other work in progress that do not have an example yet; strict, so each
# must leave this list once it has one.
WITHOUT_AN_EXAMPLE_YET: set[str] = set()


def commands(group: Any = ROOT, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        found += commands(command, path) if hasattr(command, "commands") else [path]
    return found


def help_of(*path: str) -> str:
    done = CliRunner().invoke(full_app(), [*path, "--help"], env={"COLUMNS": "250"})
    assert done.exit_code == 0, done.output
    return done.output


def command_of(path: tuple[str, ...]) -> Any:
    command = ROOT
    for name in path:
        command = command.commands[name]
    return command


def test_the_top_level_help_leads_with_the_main_job() -> None:
    text = help_of()
    main_job = text[: text.index("Options")]
    assert "make demo" in main_job and "modelyard demo" not in main_job
    for command in ("up", "run", "graph", "status", "down"):
        assert f"modelyard {command}" in main_job
    # the panel of the main job comes before the services and tools
    assert text.index("The local stack") < text.index("Services") < text.index("Inspect")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(path, marks=pytest.mark.xfail(strict=True, reason="no example yet"))
        if path[0] in WITHOUT_AN_EXAMPLE_YET
        else path
        for path in commands()
    ],
    ids=" ".join,
)
def test_every_command_has_an_example(path: tuple[str, ...]) -> None:
    lines = [line.strip() for line in help_of(*path).splitlines()]
    example = next(i for i, line in enumerate(lines) if line.startswith("Example"))
    # written out as one would type it
    assert any(line.startswith(f"modelyard {' '.join(path)}") for line in lines[example:])


@pytest.mark.parametrize("path", commands(), ids=" ".join)
def test_every_default_is_shown(path: tuple[str, ...]) -> None:
    rows = [line for line in help_of(*path).splitlines() if line.startswith("│")]
    for param in command_of(path).params:
        flag_off = getattr(param, "is_flag", False) and not param.default
        has_default = param.default not in (None, "", (), []) and not flag_off
        if not (has_default or isinstance(param.show_default, str)) or not param.opts:
            continue
        line = next(row for row in rows if f" {param.opts[0]} " in row)
        assert "[default: " in line, f"{param.opts[0]} of {' '.join(path)}: {line}"


def test_version() -> None:
    done = CliRunner().invoke(full_app(), ["--version"])
    assert done.exit_code == 0
    assert done.output == f"modelyard {version('modelyard')}\n"

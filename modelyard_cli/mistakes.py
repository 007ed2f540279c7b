"""A user's mistake on the command line is one short line on stderr and exit code 2, never
a traceback: a missing or unreadable file, a YAML or JSON error (file and line), a settings
or graph file that does not fit its schema, a value a server refuses as invalid, a server
that refuses the caller's token (with what to set).

Commands report what they expect themselves (`fail`); `Commands`, the root group, prints
those and catches the mistakes that escape any command, so a command written later is
covered too. Anything else is a bug and keeps its traceback; with `--verbose` a mistake
shows its traceback as well.
"""

from __future__ import annotations

import traceback
from typing import Any, NoReturn

import typer
from typer._click import Context  # typer vendors click: its groups take this context
from typer.core import TyperGroup

from modelyard_cli.options import PANELS, is_verbose


class Mistake(Exception):
    """What `fail` raises: a message for the user and the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def fail(message: str, code: int = 2) -> NoReturn:
    """Ends the command: "error: <message>" on stderr and exit `code` (2: the user's to
    fix; 1: a server refused). Called while handling an error, --verbose also prints it."""
    raise Mistake(message, code)


class Commands(TyperGroup):
    """The root command group: prints a `fail`, and turns a mistake that escaped a command
    into one line. Its help lists the commands panel by panel, the main job's first."""

    def list_commands(self, ctx: Context) -> list[str]:
        # typer orders panels by their first command, and the services' commands are
        # registered first; sorted() is stable, so each panel keeps its own order
        def rank(name: str) -> int:
            panel = getattr(self.commands[name], "rich_help_panel", None)
            return PANELS.index(panel) if panel in PANELS else len(PANELS)

        return sorted(super().list_commands(ctx), key=rank)

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except Mistake as mistake:
            if mistake.__context__ is not None and is_verbose(ctx):
                traceback.print_exception(mistake.__context__)
            _report(mistake.message, mistake.code)
        except Exception as error:
            found = mistake_of(error)
            if found is None or is_verbose(ctx):
                raise
            _report(*found)


def _report(message: str, code: int) -> NoReturn:
    # typer.echo, not rich: a message keeps its one line at any terminal width, and text
    # such as [::1]:50051 is not read as markup
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


#: what to do about a server's refusal of the caller, by status name
_REFUSAL_HINTS = {
    "UNAUTHENTICATED": "set MODELYARD_TOKEN to a token it accepts",
    "PERMISSION_DENIED": "the token in MODELYARD_TOKEN lacks that role: use an admin token",
}


def refusal_hint(code_name: str, message: str) -> str:
    """`message`, with what to do when it is a refusal of the caller's credentials."""
    hint = _REFUSAL_HINTS.get(code_name)
    return f"{message}; {hint}" if hint else message


def mistake_of(error: BaseException) -> tuple[str, int] | None:
    """The one-line message and exit code for an error the user's input caused (2), or a
    server's refusal (1: it answered with an error); None for anything else."""
    # imported here: these modules are heavy, and only a failing command needs them
    import yaml
    from pydantic import ValidationError

    from modelyard.errors import InvalidArgument, ModelyardError
    from modelyard_server.settings_file import FileProblem, settings_problem, yaml_problem

    if isinstance(error, InvalidArgument):
        return error.message, 2
    if isinstance(error, ModelyardError):
        return refusal_hint(error.code.name, f"{error.code.name}: {error.message}"), 1
    if isinstance(error, FileProblem):
        return str(error), 2
    if isinstance(error, FileNotFoundError | IsADirectoryError | PermissionError):
        return (f"{error.filename}: {error.strerror}" if error.filename else str(error)), 2
    if isinstance(error, yaml.YAMLError):
        mark = getattr(error, "problem_mark", None)
        name = str(getattr(mark, "name", ""))
        return yaml_problem(name if name and not name.startswith("<") else "YAML", error), 2
    if isinstance(error, ValidationError):
        return settings_problem(error), 2
    return None

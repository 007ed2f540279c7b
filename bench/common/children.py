"""Child processes that speak JSON lines: commands on stdin, events on stdout, one JSON
object a line (the load generator, the fake workers); stderr goes to a log file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common.errors import BenchError, log_tail
from bench.common.paths import REPO

# Lines can be long: a fleet's 250 addresses, a 30 s timeline of a load run.
LINE_LIMIT = 16 * 1024 * 1024


@dataclass
class Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    async def send(self, record: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps(record) + "\n").encode())
        await self.process.stdin.drain()

    async def next_event(self, event: str, timeout: float) -> dict[str, Any]:
        """The next line whose "event" is `event` (others are skipped)."""
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while line := await self.process.stdout.readline():
                record: dict[str, Any] = json.loads(line)
                if record.get("event") == event:
                    return record
        tail = log_tail(self.log_path)
        raise BenchError(f"{self.name} ended before sending {event!r}:\n{tail}")

    async def stop(self, timeout: float = 15.0) -> None:
        """Closes stdin (a fake takes that as 'stop'), then SIGTERM, then SIGKILL."""
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        for signal_it in (None, self.process.terminate, self.process.kill):
            if self.process.returncode is not None:
                return
            if signal_it is not None:
                signal_it()
            try:
                await asyncio.wait_for(self.process.wait(), timeout / 3)
            except TimeoutError:
                continue


async def spawn(name: str, argv: list[str], workdir: Path) -> Child:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            cwd=REPO,
            limit=LINE_LIMIT,
        )
    return Child(name, process, log_path)


def run_json_child(argv: list[str], timeout: float = 300.0) -> dict[str, Any]:
    """Runs `python ARGV` in the repository to its end; its last stdout line, parsed (the
    floors a bench measures beside its goal, in a process of their own: the bench itself
    never imports torch)."""
    done = subprocess.run(
        [sys.executable, *argv], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode != 0:
        raise BenchError(f"python {' '.join(argv)} failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result

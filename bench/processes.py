"""Processes under test: started pinned to a core where the machine has two, stopped with their peak
resident memory."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ("BIN", "Process", "free_port", "pin_self", "server_core", "wait_http")

BIN = Path(sys.executable).parent
"""Where this interpreter's ``metreg`` command lives (the virtualenv's bin)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def server_core() -> int | None:
    """The core servers run on (0), when there is another one for the load; None on one core."""
    if shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2:
        return None
    return min(os.sched_getaffinity(0))


def pin_self(cores: set[int] | None) -> set[int]:
    """Pin this process (the load generator) to ``cores`` (None: leave it); returns the previous set."""
    before = os.sched_getaffinity(0)
    if cores is not None:
        os.sched_setaffinity(0, cores)
    return before


class Process:
    """A child process, its peak resident memory sampled from ``/proc/<pid>/status`` (VmHWM: the
    kernel's high-water mark of this process image, so a sample taken late still sees an earlier
    peak). ``wait4``'s ``ru_maxrss`` would not do: on Linux it keeps the high-water mark of the
    forked copy of the parent from before ``exec``, the size of the bench itself."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], *, core: int | None = None) -> None:
        pinned = ["taskset", "-c", str(core)] if core is not None else []
        # A file, not a pipe: a chatty child must never block on a pipe nobody reads.
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        # taskset execs the command: the pid is the server's own.
        self._proc = subprocess.Popen([*pinned, *argv], env=env, stdout=subprocess.DEVNULL, stderr=self._err)  # noqa: S603
        self.pid = self._proc.pid
        self.peak_rss_mb = 0.0
        self.stderr = b""

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def sample(self) -> None:
        """Read the high-water mark now (nothing once the process has ended)."""
        with contextlib.suppress(OSError):
            status = Path(f"/proc/{self.pid}/status").read_text()
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_mb = max(self.peak_rss_mb, int(line.split()[1]) / 1024)

    def poll(self) -> int | None:
        """The exit code if it has ended, else None (sampling the memory while it runs)."""
        if self._proc.returncode is None:
            self.sample()
            if self._proc.poll() is not None:
                self._err.seek(0)
                self.stderr = self._err.read()
                self._err.close()
        return self._proc.returncode

    async def wait(self, timeout_s: float) -> int:
        """Wait for it to end by itself (stopped after ``timeout_s``), sampling every 20 ms."""
        deadline = time.monotonic() + timeout_s
        while (code := self.poll()) is None:
            if time.monotonic() > deadline:
                await self.stop()
                raise TimeoutError(f"{self._proc.args!r} did not finish in {timeout_s:g} s")
            await asyncio.sleep(0.02)
        return code

    async def stop(self) -> float:
        """SIGTERM (SIGKILL after 10 s); the peak RSS in MB, read just before."""
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while self.poll() is None:
                if time.monotonic() > deadline:
                    self._proc.kill()
                await asyncio.sleep(0.02)
        return self.peak_rss_mb


async def wait_http(process: Process, port: int, path: str = "/healthz", timeout_s: float = 30.0) -> None:
    """Wait until the server answers ``path`` with 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}: {process.stderr.decode()[-2000:]}")
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        status = await reader.readline()
        writer.close()
        await writer.wait_closed()
        if status.startswith(b"HTTP/1.1 200"):
            return
        await asyncio.sleep(0.05)
    await process.stop()
    raise TimeoutError(f"the server on port {port} did not answer {path} in {timeout_s:g} s")

"""`make bench` end to end on a tiny register, and its load generator against a server that keeps
count (so the bench cannot rot). No figure is asserted: only that each is measured, and that the
counts behind them are right."""

from __future__ import annotations

import asyncio
import importlib.util
import uuid
from pathlib import Path

import msgspec
import pytest

from bench.__main__ import MEASUREMENTS, bench
from bench.load import percentile, request_bytes, run_load
from bench.report import Report
from tests.conftest import BASE_DSN


async def test_the_load_generator_counts_every_answer_by_status() -> None:
    """Answers of several sizes, split across writes, 200 and 404 in turn: the client's counts are
    the server's."""
    answered: dict[int, int] = {200: 0, 404: 0}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                n = sum(answered.values())
                status = 200 if n % 3 else 404
                answered[status] += 1
                body = b"x" * (n % 7) * 100
                head = f"HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
                whole = head.encode() + body
                writer.write(whole[:10])  # the client must reassemble an answer from pieces
                await writer.drain()
                writer.write(whole[10:])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await run_load(
            "127.0.0.1", port, [request_bytes("127.0.0.1", f"/{n}") for n in range(5)], connections=4, seconds=0.3
        )
    finally:
        server.close()
        await server.wait_closed()
    assert result.errors == 0
    assert result.responses == sum(answered.values()) > 0
    assert result.statuses == {s: n for s, n in answered.items() if n}
    assert result.connections == 4
    assert 0 < result.p50_ms <= result.p99_ms


async def test_the_load_generator_counts_a_dropped_connection_as_an_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await run_load("127.0.0.1", port, [request_bytes("127.0.0.1", "/")], connections=3, seconds=5)
    finally:
        server.close()
        await server.wait_closed()
    assert (result.errors, result.responses, result.statuses) == (3, 0, {})


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile([7.0], 0.99) == 7
    assert percentile([], 0.5) == 0


@pytest.mark.timeout(300)
async def test_make_bench_runs_on_a_tiny_register(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dsn = f"{BASE_DSN.rsplit('/', 1)[0]}/metreg_bench_test_{uuid.uuid4().hex[:8]}"
    report, path = await bench(
        ["--dsn", dsn, "--instruments", "300", "--enterprises", "3", "--runs", "1", "--seconds", "0.5",
         "--import-rows", "100", "--delivery-instruments", "200", "--results", str(tmp_path)]
    )  # fmt: skip
    out = capsys.readouterr().out

    # Every measurement ran, and the table shows every figure once, beside its target where it has one.
    assert {"reads", "lists", "import", "planner", "delivery"} == set(MEASUREMENTS) <= set(report.details)
    for f in report.figures:
        assert len(f.runs) == 1
        assert f.min <= f.median <= f.max
        assert (f.passed is None) == (f.target is None)
        shown = f"| {f.name} ({f.note}) |" if f.note else f"| {f.name} |"
        assert sum(line.startswith(shown) for line in out.splitlines()) == 1
    with_fastapi = importlib.util.find_spec("fastapi") is not None
    assert sum(f.passed is not None for f in report.figures) == 9 + with_fastapi
    assert report.scale["instruments"] == 300
    assert report.scale["enterprises"] == 3

    # The same as JSON, twice.
    kept = msgspec.json.decode(path.read_bytes(), type=Report)
    assert kept == msgspec.json.decode((tmp_path / "latest.json").read_bytes(), type=Report)
    assert [f.name for f in kept.figures] == [f.name for f in report.figures]

    # Every request of every load run was answered 200 (a run that is not raises).
    for label in ("reads", "lists"):
        assert {"metreg", "litestar"} <= set(kept.details[label])
        for side in kept.details[label]:
            [load] = kept.details[label][side]
            assert load["errors"] == 0
            assert load["responses"] == load["statuses"]["200"] > 0

    # The planner's rows touched are the notices it wrote: the day before's (the backlog of a
    # never-planned register), then the measured day's.
    backlog = kept.details["planner_day_before"]
    assert sum(backlog["created"].values()) == backlog["notices_written"] > 0
    [planned] = kept.details["planner"]
    assert sum(planned["created"].values()) == planned["notices_written"]

    # Each planned notice was delivered once to the receiver and recorded so.
    [delivery] = kept.details["delivery"]
    assert delivery["notices"] == delivery["delivered"] == delivery["received"] > 0
    assert delivery["peak_rss_mb"] > 0

    assert kept.details["import"]["counts"].startswith("100 created")

"""How fast this machine is right now, by two fixed workloads that no carebank change touches.

The project's machine kind has run the same code at 70 s per million reconciled visits one day and at
145 the next (performance.md, sessions 7 and 8): a wall-clock figure alone cannot say whether a change
helped or the machine slowed. A benchmark prints these two figures beside its own, at the start and
at the end, so that runs of different days can be put side by side: one core of Python (sorting and
hashing tuples) and one PostgreSQL backend (hashing a generated series, JIT off as carebank runs it).
Each is the median of several short repetitions, in milliseconds; smaller is faster.
"""

from __future__ import annotations

import statistics
import time

import asyncpg

PYTHON_ROWS = 100_000
POSTGRES_ROWS = 200_000
REPEATS = 5


def python_ms() -> float:
    """Median milliseconds of a fixed pure-Python workload (tuples built, sorted, hashed into a dict)."""
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        rows = [(i * 7919 % 10007, str(i), i / 3) for i in range(PYTHON_ROWS)]
        rows.sort()
        by_name = {row[1]: row for row in rows}
        if len(by_name) != PYTHON_ROWS:
            raise RuntimeError("the Python reference workload lost rows")
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


async def postgres_ms(conn: asyncpg.Connection) -> float:
    """Median milliseconds of a fixed CPU-only statement on this connection's backend."""
    times = []
    async with conn.transaction():
        await conn.execute("SET LOCAL jit = off")
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            await conn.fetchval("SELECT sum(length(md5(g::text))) FROM generate_series(1, $1::int) g", POSTGRES_ROWS)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


async def reference_line(conn: asyncpg.Connection) -> str:
    """One line for a benchmark's output: the machine's speed now."""
    return (
        f"machine reference (smaller is faster; bench/machine.py): Python {python_ms():.0f} ms, "
        f"PostgreSQL {await postgres_ms(conn):.0f} ms"
    )

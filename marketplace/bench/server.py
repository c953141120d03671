"""The service under test, started by the harness: a scratch PostgreSQL database, the API under uvicorn
and a dramatiq worker, all pinned to the server's core; and CPU accounting per process group.

Jobs go through dramatiq and Redis (the production shape): a `lead_submitted` job per new lead is part of
what intake costs, and it runs in a `marketplace worker` process on the server's core, competing with
the API as it would on a one-core box. In-process jobs would run the same waves inside the API workers'
event loops, which is the embedded default, not the shape a load figure should describe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass
class ServerConfig:
    database: str = "bench_http"
    admin_dsn: str = DEFAULT_ADMIN_DSN  # where CREATE DATABASE is run
    # A Redis database of the benchmark's own: emptied (FLUSHDB) at the start, so never one that another run or a
    # service uses; two benchmarks at once need two (`--redis-url`).
    redis_url: str = "redis://127.0.0.1:6379/14"
    host: str = "127.0.0.1"
    port: int = 18080
    workers: int = 2
    server_cpus: set[int] = field(default_factory=lambda: {0})
    uvicorn_options: tuple[str, ...] = ("--no-access-log", "--loop", "uvloop", "--http", "httptools")
    job_worker: bool = True
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. MARKETPLACE__RANKING__POLICY=rotation
    nice: int = 0  # scheduling niceness of the started processes (negative: ahead of other processes)
    # The servers' logs: a fresh temporary folder per run (printed), so that runs at once keep their own.
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="marketplace-bench-")))

    @property
    def database_url(self) -> str:
        dsn = self.admin_dsn.rsplit("/", 1)[0]
        return dsn.replace("postgresql://", "postgresql+asyncpg://", 1) + "/" + self.database

    @property
    def database_dsn(self) -> str:
        return self.admin_dsn.rsplit("/", 1)[0] + "/" + self.database

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def service_env(config: ServerConfig) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=config.database_url,
        REDIS_URL=config.redis_url,
        SECRET_KEY=env.get("BENCH_SECRET_KEY", "bench-http-secret-key-not-for-production"),
        # Every client of the benchmark comes from 127.0.0.1: the per-address limit would refuse them all.
        MARKETPLACE__SERVICE__INTAKE_RATE_LIMIT_PER_MINUTE="100000000",
        MARKETPLACE__SERVICE__SIGNUP_RATE_LIMIT_PER_MINUTE="100000000",
        # Lead buyers buy thousands of leads in a run; the default credit limit would refuse them after ~100.
        MARKETPLACE__WALLET__DEFAULT_CREDIT_LIMIT_MINOR=str(10**13),
        MARKETPLACE__WALLET__FIRST_CREDIT_LIMIT_MINOR=str(10**13),  # nobody confirms their bank transfers either
    )
    env.update(config.extra_env)
    return env


class ScratchServer:
    """Create and migrate the scratch database, start the API and the job worker, stop them again."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.env = service_env(config)
        self.api: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []
        self.operator_token = ""

    async def prepare_database(self) -> None:
        admin = await asyncpg.connect(self.config.admin_dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{self.config.database}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{self.config.database}"')
        finally:
            await admin.close()
        import redis.asyncio as redis

        client = redis.Redis.from_url(self.config.redis_url)
        try:
            await client.flushdb()  # jobs left over from an earlier run
        finally:
            await client.aclose()
        self._run_cli("db", "upgrade")
        self.operator_token = self._run_cli("operator", "create", "--name", "bench").strip().splitlines()[-1]

    def _run_cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "marketplace.cli", *args], env=self.env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"marketplace {' '.join(args)} failed:\n{done.stderr[-2000:]}")
        return done.stdout

    def start(self) -> None:
        cfg = self.config
        cfg.log_dir.mkdir(parents=True, exist_ok=True)
        api_cmd = [
            sys.executable, "-m", "uvicorn", "marketplace.asgi:app",
            "--host", cfg.host, "--port", str(cfg.port), "--workers", str(cfg.workers),
            "--log-level", "warning", *cfg.uvicorn_options,
        ]  # fmt: skip
        # Children inherit the affinity at fork, and so do uvicorn's and dramatiq's worker processes.
        with pinned(cfg.server_cpus, cfg.nice):
            self._spawn(api_cmd)
        for proc in (self.api, self.worker):
            if proc is not None and cfg.nice:
                set_autogroup_nice(proc.pid, cfg.nice)

    def _spawn(self, api_cmd: list[str]) -> None:
        cfg = self.config
        self._logs = [(cfg.log_dir / "api.log").open("wb"), (cfg.log_dir / "worker.log").open("wb")]
        self.api = subprocess.Popen(
            api_cmd,
            env=self.env,
            stdout=self._logs[0],
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if cfg.job_worker:
            self.worker = subprocess.Popen(
                [sys.executable, "-m", "marketplace.cli", "worker"],
                env=self.env,
                stdout=self._logs[1],
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        for proc in (self.api, self.worker):
            if proc is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                # Its own session and process group: uvicorn's and dramatiq's children too, even if it died.
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        for log in self._logs:
            log.close()

    def check_alive(self) -> None:
        for name, proc in (("API server", self.api), ("job worker", self.worker)):
            if proc is not None and proc.poll() is not None:
                log = self.config.log_dir / ("api.log" if proc is self.api else "worker.log")
                raise RuntimeError(f"the {name} exited with {proc.returncode}; see {log}")

    def api_pids(self) -> list[int]:
        return _tree(self.api.pid) if self.api is not None else []

    def worker_pids(self) -> list[int]:
        return _tree(self.worker.pid) if self.worker is not None else []


def _tree(root: int) -> list[int]:
    """`root` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_seconds(pids: list[int]) -> dict[int, tuple[float, float]]:
    """(seconds on a CPU, seconds runnable but waiting for one) of each live pid, from /proc/PID/schedstat."""
    out = {}
    for pid in pids:
        on_cpu = waiting = 0
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():  # every thread (dramatiq works in threads)
                with contextlib.suppress(OSError, ValueError):
                    run, wait, _ = (task / "schedstat").read_text().split()
                    on_cpu, waiting = on_cpu + int(run), waiting + int(wait)
            out[pid] = (on_cpu / 1e9, waiting / 1e9)
    return out


def core_times() -> dict[int, tuple[float, float, float]]:
    """Per core: (busy, steal, total) jiffies from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in values[:8])
        total = user + nice + system + idle + iowait + irq + softirq + steal
        out[int(name[3:])] = (float(user + nice + system + irq + softirq), float(steal), float(total))
    return out


async def postgres_backends(dsn: str, database: str) -> list[int]:
    """The PostgreSQL backend pids serving `database` (the server's and the worker's pools)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", database
        )
    finally:
        await conn.close()
    return [r["pid"] for r in rows]


async def database_counters(dsn: str, database: str) -> dict[str, int]:
    """PostgreSQL's cumulative counters of the database: transactions (a pool's pre-ping is one too) and rows.

    Backends report them at most once a second, so over a phase they are right to about a second's worth.
    """
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT xact_commit + xact_rollback AS transactions,"
            " tup_inserted + tup_updated + tup_deleted AS rows_written"
            " FROM pg_stat_database WHERE datname = $1",
            database,
        )
    finally:
        await conn.close()
    return dict(row) if row is not None else {}


class ActivitySampler:
    """Samples pg_stat_activity of the database ten times a second: what the backends serving the service are
    doing (on a CPU, waiting for a lock, idle in a transaction while the application works), and which
    statements wait for locks most often (the hot rows)."""

    def __init__(self, dsn: str, database: str, interval: float = 0.1) -> None:
        self.dsn, self.database, self.interval = dsn, database, interval
        self.samples = 0
        self.states: Counter[str] = Counter()
        self.lock_waits: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._task is not None:
            await self._task
        n = max(self.samples, 1)
        return {
            "backends": {k: round(v / n, 2) for k, v in self.states.most_common()},
            "lock_waits": {k: round(v / n, 2) for k, v in self.lock_waits.most_common(3)},
        }

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(
                    "SELECT state, wait_event_type, wait_event, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS q"
                    " FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    self.database,
                )
                self.samples += 1
                for r in rows:
                    self.states[_backend_state(r["state"], r["wait_event_type"], r["wait_event"])] += 1
                    if r["state"] == "active" and r["wait_event_type"] == "Lock":
                        self.lock_waits[r["q"]] += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self.interval)
        finally:
            await conn.close()


def _backend_state(state: str | None, wait_type: str | None, wait_event: str | None) -> str:
    if state == "active":
        if wait_type is None:
            return "running a statement (on a CPU or runnable)"
        if wait_type == "Lock":
            return f"waiting for a lock ({wait_event})"
        return f"waiting: {wait_type}"
    if state == "idle in transaction":
        return "idle in a transaction (waiting for the application)"
    return state or "unknown"


@dataclass
class Usage:
    """Over a measured window, as shares of one core."""

    cpu: dict[str, float]  # per process group: time on a CPU
    waiting: dict[str, float]  # per process group: time runnable but waiting for a CPU (contention)
    cores: dict[int, tuple[float, float]]  # per core: (busy, stolen by the hypervisor)
    database: dict[str, int] = field(default_factory=dict)  # PostgreSQL counters' increase (see database_counters)
    activity: dict[str, Any] = field(default_factory=dict)  # ActivitySampler.stop()


@dataclass
class CpuMeter:
    """CPU used by named process groups, and how busy each core was, between `start()` and `stop()`."""

    _start: dict[str, dict[int, tuple[float, float]]] = field(default_factory=dict)
    _cores: dict[int, tuple[float, float, float]] = field(default_factory=dict)
    _t0: float = 0.0

    def start(self, groups: dict[str, list[int]]) -> None:
        self._start = {name: cpu_seconds(pids) for name, pids in groups.items()}
        self._cores = core_times()
        self._t0 = time.perf_counter()

    def stop(self, groups: dict[str, list[int]]) -> Usage:
        """`groups` may name pids that appeared since `start()` (their whole life counts)."""
        wall = max(time.perf_counter() - self._t0, 1e-9)
        cpu, waiting = {}, {}
        for name, pids in groups.items():
            before = self._start.get(name, {})
            after = cpu_seconds(pids)
            cpu[name] = sum(v[0] - before.get(pid, (0.0, 0.0))[0] for pid, v in after.items()) / wall
            waiting[name] = sum(v[1] - before.get(pid, (0.0, 0.0))[1] for pid, v in after.items()) / wall
        cores = {}
        for core, (busy, steal, total) in core_times().items():
            b0, s0, t0 = self._cores.get(core, (0.0, 0.0, 0.0))
            span = max(total - t0, 1.0)
            cores[core] = ((busy - b0) / span, (steal - s0) / span)
        return Usage(cpu, waiting, cores)


def busy_cores(seconds: float = 2.0) -> dict[int, float]:
    """How busy each core is now (before the benchmark starts anything)."""
    before = core_times()
    time.sleep(seconds)
    after = core_times()
    return {c: (after[c][0] - before[c][0]) / max(after[c][2] - before[c][2], 1.0) for c in after if c in before}


def set_autogroup_nice(pid: int, nice: int) -> int | None:
    """With autogroup scheduling (Linux's default for desktops and many VMs) CPU is shared fairly between
    sessions first, so a process's own niceness only counts inside its session: the session's group gets
    the niceness too. Returns the group's niceness before, or None where there is no autogroup."""
    path = Path(f"/proc/{pid}/autogroup")
    try:
        before = int(path.read_text().split("nice")[-1])
        path.write_text(str(nice))
    except (OSError, ValueError):
        return None
    return before


@contextlib.contextmanager
def pinned(cpus: set[int], nice: int = 0) -> Iterator[None]:
    """Run the block on `cpus` (and at niceness `nice`), then restore what this process had; processes
    started inside inherit both."""
    before, niceness = os.sched_getaffinity(0), os.getpriority(os.PRIO_PROCESS, 0)
    os.sched_setaffinity(0, cpus)
    group_before = None
    if nice != niceness:
        os.setpriority(os.PRIO_PROCESS, 0, nice)  # below 0 needs root (or CAP_SYS_NICE)
        group_before = set_autogroup_nice(os.getpid(), nice)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
        if nice != niceness:
            os.setpriority(os.PRIO_PROCESS, 0, niceness)
            if group_before is not None:
                set_autogroup_nice(os.getpid(), group_before)

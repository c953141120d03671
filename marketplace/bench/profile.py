"""Sampling the API workers with py-spy during a phase (`--profile DIR`) and summarising where the time went.

py-spy (`pip install py-spy`) reads the workers' memory from outside, without stopping them
(`--nonblocking`), and runs on the generator's core, so it barely disturbs what it measures.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*)\)$")


@dataclass
class Sampler:
    processes: list[subprocess.Popen[bytes]]
    outputs: list[Path]

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes what it has on ^C
        for proc in self.processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def py_spy() -> str:
    path = shutil.which("py-spy")
    if path is None:
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    return path


def start_sampling(pids: list[int], out_dir: Path, phase: str, seconds: float, rate: int = 200) -> Sampler:
    out_dir.mkdir(parents=True, exist_ok=True)
    procs, outputs = [], []
    for pid in pids:
        output = out_dir / f"{phase}-{pid}.txt"
        cmd = [
            py_spy(), "record", "--pid", str(pid), "--duration", str(max(1, int(seconds + 0.999))),
            "--rate", str(rate), "--format", "raw", "--nolineno", "--nonblocking", "--output", str(output),
        ]  # fmt: skip
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        outputs.append(output)
    return Sampler(procs, outputs)


def _parse(paths: list[Path]) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for path in paths:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                stack, _, count = line.rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                frames = []
                for raw in stack.split(";"):
                    m = _FRAME.match(raw)
                    frames.append((m["func"], m["file"]) if m else (raw, ""))
                stacks.append((frames, int(count)))
    return stacks


def _library(file: str) -> str:
    if file.startswith(("marketplace/", "workers/")) or "/marketplace/" in file:
        return "marketplace (service code)"
    top = file.split("/", 1)[0]
    return {
        "sqlalchemy": "sqlalchemy",
        "asyncpg": "asyncpg",
        "litestar": "litestar",
        "uvicorn": "uvicorn",
        "msgspec": "msgspec",
        "logging": "logging",
        "asyncio": "asyncio",
        "redis": "redis",
        "dramatiq": "dramatiq",
        "phonenumbers": "phonenumbers",
    }.get(top, "other")


def summarise(paths: list[Path], top: int = 15) -> str:
    """Inclusive time of the service's own functions, self time of every function, and self time per library."""
    stacks = [(frames, n) for frames, n in _parse(paths) if not _is_idle_thread(frames)]
    total = sum(n for _, n in stacks)
    if total == 0:
        return "  (no samples)"
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    by_library: Counter[str] = Counter()
    for frames, n in stacks:
        seen = set()
        for func, file in frames:
            key = f"{file}:{func}"
            if key not in seen and _library(file) == "marketplace (service code)":
                inclusive[key] += n
                seen.add(key)
        func, file = frames[-1]
        self_time[f"{file}:{func}"] += n
        by_library[_library(file)] += n
    # SQLAlchemy's async layer runs the ORM in greenlets: their sampled stacks start at the ORM call, without
    # the coroutine that awaited it, so that work is summarised apart by the ORM call it entered through.
    orphans: Counter[str] = Counter()
    for frames, n in stacks:
        if frames and frames[0][1].startswith("sqlalchemy/"):
            orphans[frames[0][0]] += n
    lines = [f"  {total} samples on the API workers' threads"]
    lines.append("  self time by library: " + ", ".join(f"{k} {v / total:.0%}" for k, v in by_library.most_common()))
    if orphans:
        lines.append(
            f"  SQLAlchemy work inside greenlets (its caller is not on these stacks, so the service code below "
            f"undercounts by this much): {sum(orphans.values()) / total:.0%}, entered through "
            + ", ".join(f"{k} {v / total:.0%}" for k, v in orphans.most_common(5))
        )
    lines.append("  service code, inclusive (time spent in it and what it calls):")
    lines.extend(f"    {n / total:6.1%}  {key}" for key, n in inclusive.most_common(top))
    lines.append("  functions, self time:")
    lines.extend(f"    {n / total:6.1%}  {key}" for key, n in self_time.most_common(top))
    return "\n".join(lines)


def _is_idle_thread(frames: list[tuple[str, str]]) -> bool:
    # uvicorn's ping thread and logging's queue listener wait on locks; py-spy --nonblocking can still catch them.
    files = {file for _, file in frames}
    return any(f.startswith(("threading.py", "queue.py", "multiprocessing/connection.py")) for f in files) and not any(
        f.startswith(("asyncio/", "uvicorn/protocols")) for f in files
    )

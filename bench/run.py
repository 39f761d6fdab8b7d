#!/usr/bin/env python3
"""Run perfloc's benchmarks against its anchors and write bench/results/latest.md and latest.png.

Each competitor executable (perfloc-bench-<name>) runs in its own process, because jemalloc and
mimalloc replace malloc for the whole process. Rounds alternate between executables (A B C ... A B C
...) so that drift on a shared machine hits every competitor alike; each figure is the median over the
rounds, with min and max beside it. Times are CPU time (time spent preempted is left out).

    bench/run.py                    timing, 5 rounds, then the 1 GiB growth workload 3 times per competitor,
                                    idle coroutines and burst and return 3 times, then the HTTP demo
                                    (examples/http/demo.sh: 3 wrk rounds of 3 s per heap, 10 000 idle connections)
                                    (writes results/latest-timing.json)
    bench/run.py --quick            timing, 2 short rounds, growth once, idle and burst twice, the HTTP demo
                                    with 2 wrk rounds of 2 s and 1 000 idle connections: a smoke check
    bench/run.py --icount           instruction counts under Callgrind (writes results/latest-icount.json)
    bench/run.py --all              both
    bench/run.py --report-only      rewrite latest.md / latest.png from the saved JSON
    bench/run.py --asio-versions LABEL=DIR ...   only perfloc-bench-asio, one build per Asio (tools/dev bench
                                    --asio-versions): writes results/asio-versions.{md,json}

latest.md is always rebuilt from both JSON files, so a timing run keeps the last instruction counts
and the other way round; each section says when it was measured.

Adding a competitor: build perfloc-bench-<exe> whose benchmarks are named <workload>/<competitor>/<K>,
list the executable in EXECUTABLES and the competitor in COMPETITORS. Adding a workload: register it in
bench/harness.hpp and list it in WORKLOADS (and in TARGETS if DESIGN.md gives it a target).
Standard library only (python 3.9+).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
TIMING_JSON = RESULTS_DIR / "latest-timing.json"
ICOUNT_JSON = RESULTS_DIR / "latest-icount.json"
REPORT_MD = RESULTS_DIR / "latest.md"
REPORT_PNG = RESULTS_DIR / "latest.png"
IDLE_PNG = RESULTS_DIR / "latest-idle.png"

# --------------------------------------------------------------------------------------------------
# What is measured
# --------------------------------------------------------------------------------------------------

# Executables, in the order each round runs them: perfloc-bench-<name>.
EXECUTABLES = ["perfloc", "bump", "pmr", "apr", "jemalloc", "mimalloc", "glibc", "talloc", "asio"]


@dataclass(frozen=True)
class Competitor:
    label: str
    # subject: perfloc; limit: the bump pointer; reused: pmr buffer reused by hand;
    # anchor: a real per-scope anchor of DESIGN.md's targets; other: shown, not in any target.
    role: str
    color: str


# Display order (tables are sorted by median; the plot uses this order).
COMPETITORS = {
    "perfloc": Competitor("perfloc", "subject", "#d62728"),
    "bump": Competitor("bump pointer (limit)", "limit", "#7f7f7f"),
    "bump-in-memory": Competitor("bump pointer, cursor stored at each allocation", "other", "#c7c7c7"),
    "pmr-reused": Competitor("pmr monotonic, one buffer reused", "reused", "#bcbd22"),
    "apr": Competitor("APR pools (private allocator)", "anchor", "#1f77b4"),
    "apr-global": Competitor("APR pools (global allocator)", "other", "#aec7e8"),
    "pmr-new": Competitor("pmr monotonic, new each scope", "anchor", "#2ca02c"),
    "jemalloc": Competitor("jemalloc", "anchor", "#9467bd"),
    "mimalloc": Competitor("mimalloc", "anchor", "#8c564b"),
    "mimalloc-heap": Competitor("mimalloc, mi_heap per scope", "other", "#c49c94"),
    "glibc": Competitor("glibc malloc", "anchor", "#e377c2"),
    "pmr-pool": Competitor("pmr unsynchronized_pool_resource", "other", "#98df8a"),
    "talloc": Competitor("talloc", "anchor", "#17becf"),
    # perfloc-bench-asio (the co_spawn_* and frame workloads)
    "asio": Competitor("plain asio::co_spawn, global new", "other", "#ff7f0e"),
    "perfloc-param": Competitor("perfloc::co_spawn, chunk as the factory's parameter", "other", "#ff9896"),
}


@dataclass(frozen=True)
class Workload:
    name: str
    title: str
    description: str
    unit: str  # "alloc", "scope", "coroutine" or "call": the benchmark's counter is ns_per_<unit>
    notes: tuple = ()
    baseline: str = ""  # if set, the ratio column is competitor ÷ baseline, not perfloc ÷ competitor


WORKLOADS = [
    Workload(
        "per_scope",
        "Per-scope workload",
        "Open a scope, allocate K objects of 16–256 B (one fixed pseudo-random size sequence), write to each, "
        "end the scope. Nanoseconds per allocation, scope open and release amortized in.",
        "alloc",
        ("glibc, jemalloc, mimalloc and pmr-pool free every object one by one at scope end "
         "(the workload keeps their pointers in a preallocated array).",),
    ),
    Workload(
        "destructors",
        "Objects with destructors",
        "K objects of a 48-byte type whose destructor has an observable effect, made in a scope; every "
        "destructor has run when the scope is over (checked). perfloc `make<T>`, APR cleanups and talloc "
        "destructors run them at release; new/delete, pmr and mi_heap have each object ended by hand.",
        "alloc",
    ),
    Workload(
        "free_reuse",
        "Individual frees with reuse",
        "Inside one scope, K objects (32, 64, 128, 256 B in turn) made one after another with at most 16 alive: "
        "before object i is made, object i−16 (same size) is freed. Nanoseconds per allocation, its free "
        "included. perfloc uses `perfloc::destroy(p)`, the malloc family `delete`.",
        "alloc",
        ("bump, pmr-new and pmr-reused do not reuse: their free is a no-op. APR cannot free one object "
         "and is not run.",),
    ),
    Workload(
        "open_release",
        "Scope open + release alone",
        "Open a scope and release it with nothing in it. Nanoseconds per scope. Only competitors whose "
        "scope is an object (a chunk, pool, heap or resource).",
        "scope",
    ),
    Workload(
        "co_spawn_empty",
        "Asio: a spawned coroutine that does nothing",
        "Spawn a coroutine whose body is `co_return;` with `asio::detached` and run it to completion (16 per "
        "`io_context::run()`). `asio`: `asio::co_spawn`; `perfloc`: `perfloc::co_spawn`, a process chunk opened "
        "and released per coroutine; `perfloc-param`: the same, the factory taking the chunk and the coroutine "
        "having it as first parameter (its frame in the chunk). Nanoseconds per coroutine.",
        "coroutine",
        baseline="asio",
    ),
    Workload(
        "co_spawn_8",
        "Asio: a spawned coroutine making 8 allocations",
        "As above, the coroutine making 8 allocations of 16–256 B (the per-scope sizes), each touched: `asio` "
        "with global `operator new`/`delete`; `perfloc` from the chunk of `co_await perfloc::this_coro::chunk()`; "
        "`perfloc-param` from the factory's `process_chunk&` parameter. Nanoseconds per coroutine.",
        "coroutine",
        baseline="asio",
    ),
    Workload(
        "frame",
        "Asio: coroutine frame allocation",
        "One coroutine `co_await`s a child coroutine returning `asio::awaitable<int>`, again and again: `asio`: "
        "`step(int)`, its frame from Asio's per-thread recycling cache; `perfloc`: `step(perfloc::process_chunk&, "
        "int)`, its frame in the chunk (given back to it and reused). Nanoseconds per child call.",
        "call",
        baseline="asio",
    ),
]

# Threaded workloads (Google Benchmark ->Threads(1), ->Threads(2), wall-clock time): items_per_second is the
# throughput of all threads together. Each thread opens its own scopes, with its own context.
THREAD_WORKLOADS = {
    "threads_open_release": ("Two threads opening and releasing scopes",
                             "Each thread opens and releases empty scopes (a chunk, pool, heap or resource) in a "
                             "loop; throughput of all threads together in millions of scopes per second of wall-clock "
                             "time, 1 thread against 2."),
    "threads_per_scope": ("Two threads running the per-scope workload at K = 4",
                          "Each thread runs the per-scope workload with K = 4 (open, 4 allocations of 16–256 B, "
                          "touch, release); millions of scopes per second, all threads together."),
}

# The growth workload (grow.hpp): `perfloc-bench-<exe> --perfloc_grow=<competitor>`, a process per run.
GROW_COMPETITORS = {
    "perfloc": ["perfloc"],
    "glibc": ["glibc"],
    "jemalloc": ["jemalloc"],
    "mimalloc": ["mimalloc", "mimalloc-heap"],
    "pmr": ["pmr-new"],
    "apr": ["apr", "apr-global"],
    "talloc": ["talloc"],
}

# DESIGN.md "Performance": the per-scope figures measured on this machine when the design was written
# (ns per allocation). Shown beside this run's anchors to catch a broken harness or a changed machine.
DESIGN_REFERENCE = {
    4: {"bump": 0.70, "apr": 8.2, "pmr-reused": 2.4, "pmr-new": 7.6, "jemalloc": 4.3, "mimalloc": 6.5,
        "glibc": 5.3, "talloc": 14.9},
    64: {"bump": 0.60, "apr": 2.2, "pmr-reused": 2.3, "pmr-new": 3.5, "jemalloc": 4.1, "mimalloc": 4.4,
         "glibc": 5.8, "talloc": 12.5},
    4096: {"bump": 0.75, "apr": 2.1, "pmr-reused": 2.2, "pmr-new": 21, "jemalloc": 9.9, "mimalloc": 4.2,
           "glibc": 19, "talloc": 24},
}

# Memory at scale (issue 13), one process per run, alternating, like the growth workload:
# idle coroutines (bench/idle.hpp, `perfloc-bench-asio --perfloc_idle=<competitor> --perfloc_idle_n=N`) and
# burst and return (bench/burst.hpp, `perfloc-bench-<exe> --perfloc_burst=<competitor> --perfloc_burst_n=N`).
IDLE_COMPETITORS = ["asio", "perfloc", "perfloc-param"]
IDLE_SIZES = [1_000, 10_000, 100_000]
BURST_COMPETITORS = {"perfloc": "perfloc", "glibc": "glibc"}  # executable -> competitor (glibc: plain malloc)
BURST_SIZES = [10_000, 100_000]

# Targets not measured yet; listed in the report so that nobody mistakes silence for success.
TODO: list[str] = []

# The demo under load (issue 15): perfloc-http (examples/http/, built by the bench preset too) on perfloc and on
# the global heap, driven by wrk, through the script `tools/dev demo` runs (examples/http/demo.sh --json: a
# JSON line per heap), so that both measure the same way.
SERVER_EXECUTABLE = "perfloc-http"
SERVER_SCRIPT = BENCH_DIR.parent / "examples" / "http" / "demo.sh"
SERVER_ARGUMENTS = []  # demo.sh's defaults: 3 rounds of 3 s per heap, 32 connections, 10 000 idle connections
SERVER_QUICK_ARGUMENTS = ["--rounds", "2", "--seconds", "2", "--idle", "1000"]

# Instruction counts: executable -> competitors counted by --icount. The bare drivers (perfloc-bench-icount,
# perfloc-bench-icount-anchors) take `<competitor> <workload> <K> <N>`; the competitor executables take
# `--perfloc_icount=<competitor> <workload> <K> <N>` (so jemalloc and mimalloc are counted as they are timed:
# replacing malloc in their own process).
ICOUNT_EXECUTABLES = {"perfloc-bench-icount": ["perfloc"],
                      "perfloc-bench-icount-anchors": ["bump", "pmr-reused", "pmr-new"],
                      "perfloc-bench-pmr": ["pmr-pool"],
                      "perfloc-bench-apr": ["apr", "apr-global"],
                      "perfloc-bench-jemalloc": ["jemalloc"],
                      "perfloc-bench-mimalloc": ["mimalloc", "mimalloc-heap"],
                      "perfloc-bench-glibc": ["glibc"],
                      "perfloc-bench-talloc": ["talloc"]}
BARE_ICOUNT_EXECUTABLES = {"perfloc-bench-icount", "perfloc-bench-icount-anchors"}
ICOUNT_WORKLOADS = ["per_scope", "destructors"]
ICOUNT_SIZES = [4, 64, 4096]
# Competitors whose scope is an object: their empty scope's open + release is counted too.
ICOUNT_SCOPES = ["perfloc", "pmr-reused", "pmr-new", "apr", "apr-global", "mimalloc-heap", "talloc"]

# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_text(command: list[str]) -> str:
    try:
        return subprocess.run(command, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return ""


def parse_name(name: str) -> tuple[str, str, int | None]:
    """'per_scope/glibc/64' -> ('per_scope', 'glibc', 64); 'open_release/apr' -> (..., None);
    'threads_open_release/perfloc/real_time/threads:2' -> (..., 2): the thread count."""
    parts = name.split("/")
    workload, competitor = parts[0], parts[1]
    threads = [p.split(":", 1)[1] for p in parts[2:] if p.startswith("threads:")]
    if threads:
        return workload, competitor, int(threads[0])
    param = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
    return workload, competitor, param


def key(param: int | None) -> str:
    return "-" if param is None else str(param)


def find_executables(build_dir: Path) -> dict[str, Path]:
    """Every perfloc-bench-* executable under build_dir (the bench preset's build folder or bench/'s)."""
    found: dict[str, Path] = {}
    if not build_dir.is_dir():
        return found
    for path in sorted(build_dir.rglob("perfloc-bench-*")):
        if "CMakeFiles" in path.parts or not path.is_file() or not os.access(path, os.X_OK):
            continue
        found.setdefault(path.name, path)
    return found


def default_build_dir() -> Path:
    for candidate in (REPO_DIR / "build" / "bench", REPO_DIR / "build"):
        if candidate.is_dir():
            return candidate
    return REPO_DIR / "build" / "bench"


def machine_info(build_dir: Path) -> dict:
    model, cpus = "", str(os.cpu_count())
    for line in run_text(["lscpu"]).splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
        elif line.startswith("CPU(s):"):
            cpus = line.split(":", 1)[1].strip()
    compiler, flags, build_type = "", "", ""
    cache = build_dir / "CMakeCache.txt"
    if cache.is_file():
        entries = dict(re.findall(r"^(CMAKE_[A-Z_]+):[A-Z]+=(.*)$", cache.read_text(), re.MULTILINE))
        build_type = entries.get("CMAKE_BUILD_TYPE", "")
        flags = (entries.get("CMAKE_CXX_FLAGS", "") + " " + entries.get(f"CMAKE_CXX_FLAGS_{build_type.upper()}", "")).strip()
        if entries.get("CMAKE_CXX_COMPILER"):
            compiler = run_text([entries["CMAKE_CXX_COMPILER"], "--version"]).splitlines()[:1]
            compiler = compiler[0] if compiler else entries["CMAKE_CXX_COMPILER"]
    commit = run_text(["git", "-C", str(REPO_DIR), "rev-parse", "--short", "HEAD"]) or "(no commit)"
    dirty = run_text(["git", "-C", str(REPO_DIR), "status", "--porcelain", "--", "."])
    return {
        "cpu": model or platform.processor() or "unknown",
        "cpus": cpus,
        "kernel": platform.release(),
        "compiler": compiler or "unknown",
        "build_type": build_type,
        "flags": flags + (" + -O2 appended by bench/CMakeLists.txt, which wins" if build_type == "Release" else ""),
        "commit": commit + (" + local changes" if dirty else ""),
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "build_dir": str(build_dir),
    }


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def run_timing(args, executables: dict[str, Path]) -> dict:
    names = [e for e in EXECUTABLES if f"perfloc-bench-{e}" in executables]
    if args.only:
        wanted = set(args.only.split(","))
        names = [e for e in names if e in wanted]
    missing = [e for e in EXECUTABLES if f"perfloc-bench-{e}" not in executables]
    if not names:
        sys.exit(f"run.py: no perfloc-bench-* executable under {args.build_dir}; build the bench preset first")
    samples: dict = {}  # workload -> param -> competitor -> [ns]; threads_*: [millions of scopes per second]
    thread_cpu: dict = {}  # threads_* workload -> threads -> competitor -> [CPU ns per scope, per thread]
    errors: list[str] = []
    context: dict = {}
    load_before = load_average()
    for round_index in range(args.rounds):
        for name in names:
            command = [str(executables[f"perfloc-bench-{name}"]), "--benchmark_format=json",
                       f"--benchmark_min_time={args.min_time}"]
            if args.filter:
                command.append(f"--benchmark_filter={args.filter}")
            if args.cpu is not None and shutil.which("taskset"):
                command = ["taskset", "-c", str(args.cpu)] + command
            log(f"round {round_index + 1}/{args.rounds}: {name}")
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                errors.append(f"perfloc-bench-{name} exited with {result.returncode}: {result.stderr.strip()[-300:]}")
                continue
            try:
                report = json.loads(result.stdout)
            except json.JSONDecodeError as error:
                errors.append(f"perfloc-bench-{name}: unreadable JSON ({error})")
                continue
            context.setdefault(name, {k: v for k, v in report.get("context", {}).items()
                                      if k in ("allocator", "library_build_type", "mhz_per_cpu")})
            for bench in report.get("benchmarks", []):
                workload, competitor, param = parse_name(bench["name"])
                if bench.get("error_occurred"):
                    errors.append(f"{bench['name']}: {bench.get('error_message', 'error')}")
                    continue
                if workload in THREAD_WORKLOADS:
                    value = bench["items_per_second"] / 1e6
                    # Google Benchmark's cpu_time here: CPU time of all threads over all their iterations.
                    thread_cpu.setdefault(workload, {}).setdefault(key(param), {}).setdefault(
                        competitor, []).append(bench["cpu_time"] * time_unit_ns(bench))
                else:
                    value = next((v for k, v in bench.items() if k.startswith("ns_per_")), None)
                    if value is None:  # fall back on the time per iteration
                        value = bench["cpu_time"] * time_unit_ns(bench) / bench.get("ops_per_iter", 1.0)
                samples.setdefault(workload, {}).setdefault(key(param), {}).setdefault(competitor, []).append(value)
    grow = {} if args.skip_grow else run_grow(args, executables, names)
    scale = {} if args.skip_scale else run_scale(args, executables, names)
    server = {} if args.skip_server else run_server(args)
    return {
        "machine": machine_info(args.build_dir),
        "rounds": args.rounds,
        "min_time": args.min_time,
        "quick": args.quick,
        "executables_run": names,
        "executables_missing": missing,
        "context": context,
        "load_average": f"{load_before} before, {load_average()} after",
        "errors": sorted(set(errors)),
        "samples": samples,
        "thread_cpu": thread_cpu,
        "cpu_pinned": args.cpu,
        "grow": grow,
        "scale": scale,
        "server": server,
    }


def time_unit_ns(bench: dict) -> float:
    return {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}.get(bench.get("time_unit", "ns"), 1.0)


def run_grow(args, executables: dict[str, Path], names: list[str]) -> dict:
    """The 1 GiB growth workload, one process per run, alternating between competitors, args.grow_rounds
    times. Returns {"rounds", "target_mib", "load_average", "errors", "runs": {competitor: [record, ...]}}."""
    runs: dict = {}
    errors: list[str] = []
    load_before = load_average()
    plan = [(exe, c) for exe in names for c in GROW_COMPETITORS.get(exe, [])]
    for round_index in range(args.grow_rounds):
        for exe, competitor in plan:
            log(f"grow {round_index + 1}/{args.grow_rounds}: {competitor}")
            command = [str(executables[f"perfloc-bench-{exe}"]), f"--perfloc_grow={competitor}",
                       f"--perfloc_grow_mib={args.grow_mib}"]
            try:
                record = run_one_json(command)
            except ValueError as error:
                errors.append(f"grow {competitor}: {error}")
                continue
            runs.setdefault(competitor, []).append(record)
    return {"rounds": args.grow_rounds, "target_mib": args.grow_mib,
            "load_average": f"{load_before} before, {load_average()} after", "errors": sorted(set(errors)),
            "runs": runs}


def run_one_json(command: list[str]) -> dict:
    """Runs a one-line-JSON mode (grow, idle, burst) and returns its record; raises ValueError on failure."""
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ValueError(f"exit {result.returncode}: {result.stderr.strip()[-300:]}")
    try:
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError) as error:
        raise ValueError(f"unreadable output ({error})") from error


def run_scale(args, executables: dict[str, Path], names: list[str]) -> dict:
    """Idle coroutines and burst and return, args.scale_rounds rounds, each round every size and competitor
    once (a process each). Returns {"rounds", "load_average", "errors", "idle": {competitor: {N: [record]}},
    "burst": {competitor: {N: [record]}}}."""
    plan = []  # (kind, competitor, N, command)
    if "asio" in names:
        exe = str(executables["perfloc-bench-asio"])
        plan += [("idle", c, n, [exe, f"--perfloc_idle={c}", f"--perfloc_idle_n={n}"])
                 for n in IDLE_SIZES for c in IDLE_COMPETITORS]
    for name, competitor in BURST_COMPETITORS.items():
        if name in names:
            exe = str(executables[f"perfloc-bench-{name}"])
            plan += [("burst", competitor, n, [exe, f"--perfloc_burst={competitor}", f"--perfloc_burst_n={n}"])
                     for n in BURST_SIZES]
    results: dict = {"idle": {}, "burst": {}}
    errors: list[str] = []
    load_before = load_average()
    for round_index in range(args.scale_rounds):
        for kind, competitor, n, command in plan:
            log(f"{kind} {round_index + 1}/{args.scale_rounds}: {competitor} N={n}")
            try:
                record = run_one_json(command)
            except ValueError as error:
                errors.append(f"{kind} {competitor} N={n}: {error}")
                continue
            results[kind].setdefault(competitor, {}).setdefault(str(n), []).append(record)
    return {"rounds": args.scale_rounds, "load_average": f"{load_before} before, {load_average()} after",
            "errors": sorted(set(errors)), **results}


# --------------------------------------------------------------------------------------------------
# Instruction counts
# --------------------------------------------------------------------------------------------------


def run_server(args) -> dict:
    """The HTTP demo under load, once: examples/http/demo.sh alternates the heaps over its own wrk rounds and
    takes the medians. Returns {"arguments", "records": {heap: record}, "output", "errors", "load_average"}."""
    server = next((p for p in sorted(args.build_dir.rglob(SERVER_EXECUTABLE))
                   if p.is_file() and os.access(p, os.X_OK) and "CMakeFiles" not in p.parts), None)
    if server is None:
        return {"errors": [f"{SERVER_EXECUTABLE} not built in {args.build_dir}"]}
    if not shutil.which("wrk"):
        return {"errors": ["wrk not installed (Debian package wrk)"]}
    arguments = SERVER_QUICK_ARGUMENTS if args.quick else SERVER_ARGUMENTS
    records: dict[str, dict] = {}
    errors: list[str] = []
    output = ""
    load_before = load_average()
    log(f"HTTP demo: demo.sh {' '.join(arguments)}")
    with tempfile.TemporaryDirectory() as scratch:
        rows = Path(scratch) / "rows.json"
        command = ["bash", str(SERVER_SCRIPT), str(server), *arguments, "--json", str(rows),
                   "--svg", str(Path(scratch) / "top-chunk.svg")]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        # The picture's path is in the scratch folder, gone once the report is read.
        output = "".join(line for line in result.stdout.splitlines(keepends=True)
                         if not line.startswith("The top chunk mid-load:"))
        if result.returncode != 0:
            errors.append(f"demo.sh exited with {result.returncode}: {result.stderr.strip()[-300:]}")
        elif not rows.is_file():
            errors.append("demo.sh wrote no JSON rows")
        else:
            for line in rows.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    errors.append(f"demo.sh: unreadable row {line!r} ({error})")
                    continue
                records[record["heap"]] = record
    return {"arguments": " ".join(arguments) or "(defaults)", "records": records, "output": output,
            "errors": errors, "load_average": f"{load_before} before, {load_average()} after"}


def server_sections(server: dict) -> list[str]:
    records = server.get("records") or {}
    if not records and not server.get("errors"):
        return []
    lines = ["## The HTTP demo under load (issue 15)", "",
             f"`examples/http/demo.sh build/bench/examples/perfloc-http {server.get('arguments', '')}`, the "
             "comparison `tools/dev demo` prints: perfloc-http on perfloc and on the global heap, each in its own "
             "process, driven by wrk on 127.0.0.1 in alternating rounds (medians), then idle keep-alive "
             f"connections. Load average {server.get('load_average', '?')}; on this shared machine the throughput "
             "and latency figures move with the neighbours' load.", ""]
    if server.get("errors"):
        lines += ["Errors:", ""] + [f"- {e}" for e in server["errors"]] + [""]
    rows = []
    for name in ("perfloc", "global"):
        r = records.get(name)
        if r:
            rows.append([f"**{name}**" if name == "perfloc" else name, f"{r['requests']}",
                         f"{r['requests_per_s']:.0f}", f"{r['p50_us']:.0f}", f"{r['p99_us']:.0f}",
                         f"{calls_per_request(r):.3f}", f"{r['peak_rss_kib'] / 1024:.1f} MiB",
                         f"{r['idle_bytes_per_connection']} ({r['idle_connections']} connections)",
                         f"{r['cpu_us_per_request']:.2f}" if "cpu_us_per_request" in r else "–"])
    lines += markdown_table(["heap", "requests", "requests/s", "p50 µs", "p99 µs", "heap calls/request",
                             "peak RSS", "idle B/connection", "server CPU µs/request"], rows)
    if server.get("output"):
        lines += ["", "<details><summary>demo.sh's output (histogram of bytes per request, top chunk's report)"
                      "</summary>", "", "```", server["output"].rstrip(), "```", "", "</details>"]
    return lines + [""]


def callgrind_instructions(command: list[str]) -> int:
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "callgrind.out"
        result = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"] + command,
                                capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()[-300:]}")
        for line in out.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"{' '.join(command)}: no instruction total in callgrind output")


def run_icount(args, executables: dict[str, Path]) -> dict:
    if not shutil.which("valgrind"):
        sys.exit("run.py --icount: valgrind is not installed")
    n = args.icount_allocations
    counts: dict = {}  # workload -> K -> competitor -> instructions per allocation (open_release: per scope)
    errors, missing = [], []
    wanted = set(args.only.split(",")) if args.only else None
    for executable, competitors in ICOUNT_EXECUTABLES.items():
        if executable not in executables:
            missing.append(executable)
            continue
        for competitor in competitors:
            if wanted and competitor not in wanted and executable.removeprefix("perfloc-bench-") not in wanted:
                continue
            cases = [(w, k) for w in ICOUNT_WORKLOADS for k in ICOUNT_SIZES]
            if competitor in ICOUNT_SCOPES:
                cases.append(("open_release", 1))
            for workload, k in cases:
                log(f"callgrind: {competitor} {workload} K={k}")
                if executable in BARE_ICOUNT_EXECUTABLES:
                    base = [str(executables[executable]), competitor, workload, str(k)]
                else:
                    base = [str(executables[executable]), f"--perfloc_icount={competitor}", workload, str(k)]
                try:
                    once = callgrind_instructions(base + [str(n)])
                    twice = callgrind_instructions(base + [str(2 * n)])
                except RuntimeError as error:
                    errors.append(str(error))
                    continue
                param = "-" if workload == "open_release" else str(k)
                counts.setdefault(workload, {}).setdefault(param, {})[competitor] = (twice - once) / n
    return {"machine": machine_info(args.build_dir), "allocations": n, "missing": missing, "errors": errors,
            "counts": counts}


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def summary(samples: dict, workload: str, param: str) -> dict[str, tuple[float, float, float, int]]:
    cell = samples.get(workload, {}).get(param, {})
    return {c: (statistics.median(v), min(v), max(v), len(v)) for c, v in cell.items() if v}


def label(competitor: str) -> str:
    entry = COMPETITORS.get(competitor)
    return f"{entry.label} (`{competitor}`)" if entry and entry.label != competitor else competitor


def verdict(ratio: float, limit: float, at_most: bool = True) -> str:
    return "**MET**" if (ratio <= limit if at_most else ratio >= limit) else "**MISSED**"


def evaluate_targets(timing: dict) -> list[list[str]]:
    """DESIGN.md's and issue 13's targets as table rows: target, K or N, perfloc, reference, ratio, limit,
    verdict. A target whose figures are missing from the run says "not evaluated", never MET."""
    samples = timing["samples"]
    rows = []
    for k in ("4", "64", "4096"):
        medians = {c: s[0] for c, s in summary(samples, "per_scope", k).items()}
        subject = medians.get("perfloc")
        anchors = {c: v for c, v in medians.items() if COMPETITORS.get(c, Competitor("", "other", "")).role == "anchor"}
        checks = []
        if anchors:
            best = min(anchors, key=anchors.get)
            checks.append((f"per-scope workload ≤ 0.5× the best real per-scope anchor", best, anchors[best], 0.5))
        if "pmr-reused" in medians:
            checks.append(("per-scope workload ≤ 1.0× a pmr buffer reused by hand", "pmr-reused",
                           medians["pmr-reused"], 1.0))
        if k in ("64", "4096") and "bump" in medians:
            checks.append(("per-scope workload within 1.6× the bump-pointer limit", "bump", medians["bump"], 1.6))
        for text, reference, value, limit in checks:
            if subject is None:
                result, ratio = f"not evaluated (perfloc budget: ≤ {fmt(value * limit)} ns)", "–"
            else:
                result, ratio = verdict(subject / value, limit), f"{subject / value:.2f}×"
            rows.append([text, f"K = {k}", f"{fmt(subject)} ns/alloc", f"{fmt(value)} ({reference})", ratio,
                         f"{limit}×", result])
    opened = summary(samples, "open_release", "-")
    subject, base = opened.get("perfloc"), opened.get("pmr-reused")
    text = "chunk open + release ≤ 3.5× a reused pmr buffer's open + release"
    if subject and base:
        rows.append([text, "–", f"{fmt(subject[0])} ns/scope", f"{fmt(base[0])} (pmr-reused)",
                     f"{subject[0] / base[0]:.2f}×", "3.5×", verdict(subject[0] / base[0], 3.5)])
    else:
        rows.append([text, "–", fmt(subject[0]) if subject else "–", "–", "–", "3.5×", "not evaluated"])
    one = summary(samples, "threads_open_release", "1").get("perfloc")
    two = summary(samples, "threads_open_release", "2").get("perfloc")
    if one and two:
        ratio = two[0] / one[0]
        rows.append(["two threads opening and releasing chunks ≥ 1.8× one thread (throughput; bounded by this "
                     "2-CPU shared machine, see below)", "–", f"{two[0]:.0f} M/s (2 threads)",
                     f"{one[0]:.0f} M/s (1 thread)", f"{ratio:.2f}×", "≥ 1.8×", verdict(ratio, 1.8, at_most=False)])
    else:
        rows.append(["two threads opening and releasing chunks ≥ 1.8× one thread", "–", "–", "–", "–", "≥ 1.8×",
                     "not evaluated"])
    # DESIGN.md: an empty coroutine ≤ 1.0× asio::co_spawn (aim 0.9×); with 8 allocations ≤ 0.75× asio + new.
    for workload, text, limit in (
            ("co_spawn_empty", "perfloc::co_spawn ≤ 1.0× asio::co_spawn, empty coroutine (aim 0.9×)", 1.0),
            ("co_spawn_8", "perfloc::co_spawn ≤ 0.75× asio::co_spawn + new, 8 allocations", 0.75)):
        stats = summary(samples, workload, "-")
        base = stats.get("asio")
        for competitor in ("perfloc", "perfloc-param"):
            subject = stats.get(competitor)
            how = " (chunk as the factory's parameter)" if competitor == "perfloc-param" else (
                " (chunk from this_coro::chunk())" if workload == "co_spawn_8" else "")
            if subject and base:
                ratio = subject[0] / base[0]
                rows.append([text + how, "–", f"{fmt(subject[0])} ns/coroutine", f"{fmt(base[0])} (asio)",
                             f"{ratio:.2f}×", f"{limit}×", verdict(ratio, limit)])
            elif competitor == "perfloc":
                rows.append([text, "–", "–", "–", "–", f"{limit}×", "not evaluated (no perfloc-bench-asio: "
                             "modules/perfloc/asio.cppm not in this build)"])
    rows += scale_targets(timing.get("scale") or {})
    rows += server_target(timing.get("server") or {})
    return rows


# ---- Memory at scale: idle coroutines, burst and return ------------------------------------------------

def kib(value: float | None) -> str:
    return "–" if value is None else f"{value / 1024:.1f} KiB"


def idle_figures(record: dict) -> dict[str, float]:
    """One idle-coroutines run as per-coroutine figures (bytes, ns) and what teardown left."""
    n = record["n"]
    return {"bytes": (record["rss_idle"] - record["rss_before"]) / n,
            "ns_spawn": record["spawn_s"] * 1e9 / n,
            "commit": (record["vm_data_idle"] - record["vm_data_before"]) / n,
            "committed": (record["committed_idle"] - record["committed_before"]) / n,
            "kept": record["rss_after"] - record["rss_before"],
            "committed_after": record["committed_after"] - record["committed_before"],
            "commit_after": record["vm_data_after"] - record["vm_data_before"],
            "retain": record["retain_bytes"]}


def burst_figures(record: dict) -> dict[str, float]:
    n = record["n"]
    return {"grown": record["rss_burst"] - record["rss_before"],
            "bytes": (record["rss_burst"] - record["rss_before"]) / n,
            "commit": (record["vm_data_burst"] - record["vm_data_before"]) / n,
            "kept": record["rss_after"] - record["rss_before"],
            "committed_burst": record.get("committed_burst", 0) - record.get("committed_before", 0),
            "committed_after": record.get("committed_after", 0) - record.get("committed_before", 0),
            "commit_after": record["vm_data_after"] - record["vm_data_before"],
            "retain": record.get("retain_bytes", 0)}


def scale_stats(records: list[dict], figures) -> dict[str, tuple[float, float, float]]:
    """Median, min and max of each figure over the runs."""
    values: dict[str, list[float]] = {}
    for record in records:
        for name, value in figures(record).items():
            values.setdefault(name, []).append(value)
    return {name: (statistics.median(v), min(v), max(v)) for name, v in values.items()}


def scale_cell(scale: dict, kind: str, competitor: str, n: int) -> dict[str, tuple[float, float, float]] | None:
    records = (scale.get(kind) or {}).get(competitor, {}).get(str(n))
    if not records:
        return None
    return scale_stats(records, idle_figures if kind == "idle" else burst_figures)


def count_text(n: int) -> str:
    return f"{n:,}".replace(",", " ")


def kept_row(text: str, where: str, subject: dict, base: dict, reference: str) -> list[str]:
    """The target 'RSS above the start afterwards ≤ retain_bytes + what the plain reference keeps'."""
    allowed = subject["retain"][0] + max(base["kept"][0], 0)
    return [text, where, mib_text(subject["kept"][0]),
            f"{mib_text(subject['retain'][0])} + {mib_text(base['kept'][0])} ({reference})",
            f"{subject['kept'][0] / allowed:.2f}×" if allowed > 0 else "–", "1.0×", verdict(subject["kept"][0], allowed)]


def scale_targets(scale: dict) -> list[list[str]]:
    """Issue 13's memory targets, at the largest N measured."""
    rows = []
    if not scale:
        return [["memory at scale (idle coroutines, burst and return)", "–", "–", "–", "–", "–",
                 "not evaluated (--skip-scale)"]]
    n = max(IDLE_SIZES)
    base = scale_cell(scale, "idle", "asio", n)
    for competitor in ("perfloc", "perfloc-param"):
        subject = scale_cell(scale, "idle", competitor, n)
        how = " (chunk as the factory's parameter)" if competitor == "perfloc-param" else ""
        where = f"N = {count_text(n)}"
        if not subject or not base:
            rows.append([f"idle coroutines{how}: resident bytes, ns per spawn, commit", where, "–", "–", "–", "–",
                         "not evaluated (no run)"])
            continue
        ratio = subject["bytes"][0] / base["bytes"][0]
        aim = "" if ratio > 1.0 else (" (aim 0.75× met)" if ratio <= 0.75 else " (aim 0.75× not yet)")
        rows.append([f"idle coroutine{how}: resident bytes ≤ 1.0× plain Asio (aim 0.75×)", where,
                     f"{subject['bytes'][0]:.0f} B/coroutine", f"{base['bytes'][0]:.0f} (asio)", f"{ratio:.2f}×",
                     "1.0×", verdict(ratio, 1.0) + aim])
        ratio = subject["ns_spawn"][0] / base["ns_spawn"][0]
        rows.append([f"idle coroutine{how}: ns per spawn while they accumulate ≤ 1.0× plain Asio", where,
                     f"{subject['ns_spawn'][0]:.0f} ns/spawn", f"{base['ns_spawn'][0]:.0f} (asio)", f"{ratio:.2f}×",
                     "1.0×", verdict(ratio, 1.0)])
        if competitor == "perfloc":
            charge = max(subject["commit"][0], subject["committed"][0])
            rows.append(["commit charge per idle chunk ≤ 8 KiB (the larger of VmData growth and committed_bytes "
                         "growth, per coroutine)", where,
                         f"{kib(subject['commit'][0])} VmData, {kib(subject['committed'][0])} committed_bytes",
                         f"{kib(base['commit'][0])} VmData (asio)", "–", "8 KiB", verdict(charge, 8192)])
            rows.append(kept_row("RSS above the start after the io_context is destroyed ≤ retain_bytes + what "
                                 "plain Asio keeps", where, subject, base, "asio"))
    n = max(BURST_SIZES)
    subject, base = scale_cell(scale, "burst", "perfloc", n), scale_cell(scale, "burst", "glibc", n)
    where = f"N = {count_text(n)}"
    if subject and base:
        rows.append(kept_row("RSS above the start after a burst of chunks is released ≤ retain_bytes + what plain "
                             "malloc keeps", where, subject, base, "glibc"))
    else:
        rows.append(["RSS after a burst ≤ retain_bytes + what plain malloc keeps", where, "–", "–", "–", "1.0×",
                     "not evaluated (no run)"])
    return rows


def calls_per_request(record: dict) -> float:
    return record["heap_calls"] / record["requests"] if record["requests"] > 0 else float("nan")


def server_target(server: dict) -> list[list[str]]:
    """Issue 15's targets for the HTTP demo, and issue 13's peak RSS target, which now applies to that demo."""
    records = server.get("records") or {}
    p, g = records.get("perfloc"), records.get("global")
    where = "HTTP demo (`perfloc-http`)"
    texts = ["throughput ≥ 1.0× the global-heap server's (requests/s)",
             "p99 latency ≤ 1.0× the global-heap server's",
             "0 heap calls per request in steady state (perfloc server)",
             "resident bytes per idle connection ≤ the global-heap server's",
             "demo server's peak RSS ≤ the global-heap server's (issue 13; the demo is now the HTTP server)"]
    limits = ["≥ 1.0×", "1.0×", "= 0", "1.0×", "1.0×"]
    if not p or not g:
        why = "; ".join(server.get("errors") or []) or "--skip-server"
        return [[t, where, "–", "–", "–", lim, f"not evaluated ({why})"] for t, lim in zip(texts, limits)]

    def ratio_row(text: str, field: str, unit: str, limit: str, at_most: bool = True) -> list[str]:
        a, b = p[field], g[field]
        if b > 0:
            ratio, result = f"{a / b:.2f}×", verdict(a / b, 1.0, at_most)
        else:  # idle bytes can be 0 or less when the global heap's RSS did not grow
            ratio, result = "–", "**MET**" if (a <= b if at_most else a >= b) else "**MISSED**"
        return [text, where, f"{a:.0f} {unit}", f"{b:.0f} {unit} (global heap)", ratio, limit, result]

    calls = calls_per_request(p)
    return [ratio_row(texts[0], "requests_per_s", "req/s", limits[0], at_most=False),
            ratio_row(texts[1], "p99_us", "µs", limits[1]),
            [texts[2], where, f"{calls:.3f}/request ({p['heap_calls']} calls, {p['requests']} requests)",
             f"{calls_per_request(g):.3f}/request (global heap)", "–", limits[2],
             "**MET**" if p["heap_calls"] == 0 else "**MISSED**"],
            ratio_row(texts[3], "idle_bytes_per_connection", "B", limits[3]),
            ratio_row(texts[4], "peak_rss_kib", "KiB", limits[4])]


def mib_text(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 2**20:.1f} MiB" if abs(value) < 100 * 2**20 else f"{value / 2**20:.0f} MiB"


def range_text(stat: tuple[float, float, float], digits: int = 0) -> str:
    return f"{stat[0]:.{digits}f} ({stat[1]:.{digits}f}–{stat[2]:.{digits}f})"


def scale_sections(scale: dict, have_plot: bool) -> list[str]:
    if not scale or not (scale.get("idle") or scale.get("burst") or scale.get("errors")):
        return []
    lines = ["## Idle coroutines", "",
             "N coroutines spawned on one io_context and all suspended at once, each on a timer of its own, each "
             "holding 256 B of state it wrote; then the io_context is destroyed with them suspended (bench/idle.hpp). "
             "`asio`: `asio::co_spawn`, the state from global `new`, `use_awaitable`; `perfloc`: `perfloc::co_spawn`, "
             "the state from `co_await perfloc::this_coro::chunk()`, `perfloc::use_chunk`; `perfloc-param`: the "
             "factory takes the chunk (the coroutine's frame in it too). A process per run, "
             f"{scale.get('rounds')} runs each, alternating; medians (min–max). Load average "
             f"{scale.get('load_average', '?')}. Bytes are RSS growth (/proc/self/statm) over N; commit is VmData "
             "growth over N (the charge under `vm.overcommit_memory=2`); committed is the growth of the default "
             "top's `committed_bytes`; ns per spawn is CPU time of the N spawns and of running each to its wait "
             "(page faults included) over N. Kept: RSS above the start after the io_context is gone.", ""]
    if scale.get("errors"):
        lines += ["Errors:", ""] + [f"- {e}" for e in scale["errors"]] + [""]
    idle = scale.get("idle") or {}
    for n in IDLE_SIZES:
        base = scale_cell(scale, "idle", "asio", n)
        rows = []
        for competitor in IDLE_COMPETITORS:
            cell = scale_cell(scale, "idle", competitor, n)
            if not cell:
                continue
            name = f"**{label(competitor)}**" if competitor.startswith("perfloc") else label(competitor)
            ratio = lambda f: f"{cell[f][0] / base[f][0]:.2f}×" if base and competitor != "asio" else "–"
            rows.append([name, range_text(cell["bytes"]), ratio("bytes"), range_text(cell["ns_spawn"]),
                         ratio("ns_spawn"), f"{cell['commit'][0]:.0f}",
                         f"{cell['committed'][0]:.0f}" if competitor != "asio" else "–",
                         mib_text(cell["kept"][0]),
                         mib_text(cell["committed_after"][0]) if competitor != "asio" else "–",
                         mib_text(cell["commit_after"][0])])
        if rows:
            lines += [f"### N = {count_text(n)}", ""]
            lines += markdown_table(["competitor", "resident B/coroutine", "÷ asio", "ns/spawn", "÷ asio",
                                     "commit B/coroutine (VmData)", "committed_bytes B/coroutine",
                                     "RSS kept after teardown", "committed_bytes after teardown (vs start)",
                                     "VmData after teardown (vs start)"], rows)
            lines += [""]
    if have_plot and idle:
        lines += ["![bytes per idle coroutine](latest-idle.png)", ""]
    burst = scale.get("burst") or {}
    if burst:
        lines += ["## Burst and return", "",
                  "N scopes opened and held live at once, each allocating the per-scope workload's first 4 sizes "
                  "(16–256 B) and writing every byte, then all ended in opening order (bench/burst.hpp): perfloc "
                  "process chunks from `default_top()`, and plain `malloc`/`free` (glibc) for reference. A process per "
                  f"run, {scale.get('rounds')} runs each, alternating; medians. RSS and VmData against the start; "
                  "committed is the default top's `committed_bytes` against the start.", ""]
        rows = []
        for n in BURST_SIZES:
            for competitor in BURST_COMPETITORS.values():
                cell = scale_cell(scale, "burst", competitor, n)
                if not cell:
                    continue
                perf = competitor == "perfloc"
                rows.append([f"**{label(competitor)}**" if perf else label(competitor), count_text(n),
                             f"{cell['bytes'][0]:.0f}", f"{cell['commit'][0]:.0f}", mib_text(cell["grown"][0]),
                             f"**{mib_text(cell['kept'][0])}**",
                             mib_text(cell["committed_burst"][0]) if perf else "–",
                             mib_text(cell["committed_after"][0]) if perf else "–",
                             mib_text(cell["commit_after"][0]),
                             mib_text(cell["retain"][0]) if perf else "–"])
        lines += markdown_table(["competitor", "N", "resident B/scope at the burst", "commit B/scope (VmData)",
                                 "RSS growth at the burst", "RSS kept after release", "committed at the burst",
                                 "committed after release", "VmData after release", "retain_bytes"], rows) + [""]
    return lines


def write_idle_plot(timing: dict) -> bool:
    """latest-idle.png: resident bytes per idle coroutine against N (log x), perfloc beside plain Asio,
    min–max whiskers. Returns False when gnuplot is missing, fails, or there is nothing to plot."""
    gnuplot = shutil.which("gnuplot")
    scale = timing.get("scale") or {}
    competitors = [c for c in IDLE_COMPETITORS if (scale.get("idle") or {}).get(c)]
    if not gnuplot or not competitors:
        return False
    with tempfile.TemporaryDirectory() as directory:
        plots = []
        for i, competitor in enumerate(competitors):
            data = Path(directory) / f"idle-{i}.dat"
            with data.open("w") as out:
                for n in IDLE_SIZES:
                    cell = scale_cell(scale, "idle", competitor, n)
                    if cell:
                        out.write(f"{n} {cell['bytes'][0]:.1f} {cell['bytes'][1]:.1f} {cell['bytes'][2]:.1f}\n")
            color = COMPETITORS[competitor].color
            plots.append(f"'{data}' using 1:2:3:4 with yerrorlines lw 2 pt 7 lc rgb '{color}' "
                         f"title \"{COMPETITORS[competitor].label}\"")
            offset = "0,-1" if i % 2 == 0 and i > 0 else "0,1"  # perfloc's two lines run close: one label below
            plots.append(f"'{data}' using 1:2:(sprintf('%.0f', $2)) with labels offset {offset} tc rgb '{color}' "
                         "notitle")
        machine = timing["machine"]
        script = f"""
set terminal pngcairo size 1000,650 font ',11' noenhanced
set output '{IDLE_PNG}'
set title "Idle coroutines: resident bytes per suspended coroutine (256 B of state each), RSS growth / N\\nmedian of {scale.get('rounds')} runs, whiskers min–max; {machine['cpu']}, {machine['date']}"
set xlabel 'N coroutines suspended at once (log scale)'
set ylabel 'resident bytes per coroutine'
set logscale x
set xrange [500:200000]
set yrange [0:*]
set offsets 0, 0, graph 0.08, 0
set grid
set key outside bottom center horizontal
plot {', '.join(plots)}
"""
        result = subprocess.run([gnuplot], input=script, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log(f"gnuplot failed: {result.stderr.strip()}")
            return False
    return True


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["--:" if i > 0 else "---" for i in range(1, len(header))]
    return ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"] + ["| " + " | ".join(r) + " |" for r in rows]


def timing_sections(timing: dict, have_plot: bool, have_idle_plot: bool) -> list[str]:
    samples = timing["samples"]
    machine = timing["machine"]
    has_perfloc = any("perfloc" in cell for w in samples.values() for cell in w.values())
    lines = [
        f"Measured {machine['date']} on {machine['cpu']} ({machine['cpus']} CPUs, Linux {machine['kernel']}), "
        f"{machine['compiler']}, {machine['build_type']} `{machine['flags']}`, commit {machine['commit']}. "
        f"{timing['rounds']} alternating rounds{' (quick)' if timing['quick'] else ''}, "
        f"`--benchmark_min_time={timing['min_time']}` per benchmark, CPU time. Load average {timing['load_average']}.",
        "",
    ]
    allocators = [f"{v['allocator']}" for v in timing.get("context", {}).values() if v.get("allocator")]
    if allocators:
        lines += [f"Libraries: {', '.join(allocators)}.", ""]
    if not has_perfloc:
        lines += ["> **perfloc was not measured** (no `perfloc-bench-perfloc` executable: the library is not built "
                  "yet), so the ratios are omitted; the targets below show the budget perfloc must meet.", ""]
    if timing["executables_missing"]:
        lines += [f"Not built: {', '.join('perfloc-bench-' + e for e in timing['executables_missing'])}.", ""]
    if timing["errors"]:
        lines += ["Errors:", ""] + [f"- {e}" for e in timing["errors"]] + [""]

    lines += ["## Targets (DESIGN.md, issues 13 and 15)", "",
              "Each target with its measured ratio: perfloc's median over the reference's median, both from this "
              "run (a target missed says MISSED)."
              " Real per-scope anchors: " + ", ".join(c for c, e in COMPETITORS.items() if e.role == "anchor") + ".",
              ""]
    lines += markdown_table(["target", "K / N", "perfloc", "reference", "ratio", "limit", "verdict"],
                            evaluate_targets(timing))
    lines += [""] + [f"- not measured yet (TODO): {t}" for t in TODO] + [""]

    if have_plot:
        lines += ["![per-scope workload](latest.png)", ""]
    lines += thread_sections(timing)
    lines += scale_sections(timing.get("scale") or {}, have_idle_plot)
    lines += grow_sections(timing.get("grow") or {})
    lines += server_sections(timing.get("server") or {})

    for workload in WORKLOADS:
        if workload.name not in samples:
            continue
        unit = f"ns/{workload.unit}"
        lines += [f"## {workload.title} ({unit})", "", workload.description, ""]
        lines += [f"_{note}_" for note in workload.notes] + ([""] if workload.notes else [])
        for param in sorted(samples[workload.name], key=lambda p: (p == "-", int(p) if p != "-" else 0)):
            stats = summary(samples, workload.name, param)
            subject = stats.get("perfloc", (None,))[0]
            base = stats.get(workload.baseline, (None,))[0] if workload.baseline else None
            rows = []
            for competitor, (median, low, high, count) in sorted(stats.items(), key=lambda item: item[1][0]):
                if workload.baseline:
                    ratio = "–" if base is None or competitor == workload.baseline else f"{median / base:.2f}×"
                else:
                    ratio = "–" if subject is None or competitor == "perfloc" else f"{subject / median:.2f}×"
                name = f"**{label(competitor)}**" if competitor.startswith("perfloc") else label(competitor)
                rows.append([name, fmt(median), fmt(low), fmt(high), ratio])
            if param != "-":
                lines += [f"### K = {param}", ""]
            ratio_header = f"÷ {workload.baseline}" if workload.baseline else "perfloc ÷ competitor"
            lines += markdown_table(["competitor", f"median {unit}", "min", "max", ratio_header], rows)
            lines += [""]

    rows = []
    for k, reference in DESIGN_REFERENCE.items():
        stats = summary(samples, "per_scope", str(k))
        for competitor, value in reference.items():
            if competitor in stats:
                rows.append([str(k), label(competitor), fmt(stats[competitor][0]), fmt(value),
                             f"{stats[competitor][0] / value:.2f}"])
    if rows:
        lines += ["## Anchors against DESIGN.md's figures", "",
                  "This run's per-scope medians beside the figures DESIGN.md quotes for the same machine: a ratio "
                  "far from 1 means the harness or the machine changed.", ""]
        lines += markdown_table(["K", "anchor", "this run", "DESIGN.md", "ratio"], rows) + [""]
    return lines


def thread_sections(timing: dict) -> list[str]:
    samples, cpu = timing["samples"], timing.get("thread_cpu", {})
    lines = []
    for workload, (title, description) in THREAD_WORKLOADS.items():
        if workload not in samples:
            continue
        lines += [f"## {title}", "", description + " Wall-clock time (Google Benchmark `->Threads(1)`, `->Threads(2)`, "
                  "`UseRealTime()`); each thread has its own scopes and context.", "",
                  f"**Bounded by the machine:** it has {timing['machine']['cpus']} CPUs and is shared (load average "
                  f"{timing['load_average']}), so a second thread gets a whole CPU only when nothing else runs; 2× "
                  "is the ceiling, not the expectation. The CPU-time columns tell contention apart from the machine: "
                  "CPU nanoseconds per scope in each thread stay flat from 1 to 2 threads when the threads do not "
                  "get in each other's way (no shared lock, no shared cache line), and rise when they do.", ""]
        if timing.get("cpu_pinned") is not None:
            lines += ["> This run pinned every process to one CPU (`--cpu`): the two threads shared it.", ""]
        one, two = summary(samples, workload, "1"), summary(samples, workload, "2")
        cpu_one = {c: statistics.median(v) for c, v in cpu.get(workload, {}).get("1", {}).items() if v}
        cpu_two = {c: statistics.median(v) for c, v in cpu.get(workload, {}).get("2", {}).items() if v}
        rows = []
        for competitor in sorted(set(one) | set(two), key=lambda c: -(two.get(c, one.get(c))[0] / one[c][0]
                                                                       if c in one and c in two else 0)):
            a, b = one.get(competitor), two.get(competitor)
            name = f"**{label(competitor)}**" if competitor == "perfloc" else label(competitor)
            rows.append([name,
                         f"{fmt(a[0])} ({fmt(a[1])}–{fmt(a[2])})" if a else "–",
                         f"{fmt(b[0])} ({fmt(b[1])}–{fmt(b[2])})" if b else "–",
                         f"{b[0] / a[0]:.2f}×" if a and b else "–",
                         fmt(cpu_one.get(competitor)), fmt(cpu_two.get(competitor)),
                         f"{cpu_two[competitor] / cpu_one[competitor]:.2f}×"
                         if competitor in cpu_one and competitor in cpu_two else "–"])
        lines += markdown_table(["competitor", "1 thread, M scopes/s (min–max)", "2 threads, M scopes/s (min–max)",
                                 "2 ÷ 1", "CPU ns/scope, 1 thread", "CPU ns/scope, 2 threads", "CPU 2 ÷ 1"], rows)
        lines += [""]
    return lines


def mib(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**20:.0f}" if value >= 10 * 2**20 else f"{value / 2**20:.1f}"


def grow_sections(grow: dict) -> list[str]:
    runs = grow.get("runs") or {}
    if not runs and not grow.get("errors"):
        return []
    lines = ["## A long-lived scope growing to 1 GiB, then released", "",
             f"One scope grows to {grow.get('target_mib', 1024)} MiB of objects of 64 KiB–1 MiB (a fixed pseudo-random "
             "sequence), one byte written in every 4 KiB page of each, then the scope ends (the malloc family frees each "
             "object). A fresh process per run, since the process's resident set is the measurement "
             f"(bench/grow.hpp); {grow.get('rounds')} runs per competitor, alternating, medians (min–max for the "
             f"times). Load average {grow.get('load_average', '?')}. Times are CPU seconds of the process, user and "
             "system: faulting in 262 144 pages is almost all of the growth, and it is system time. RSS from "
             "/proc/self/statm, peak from VmHWM.", ""]
    if grow.get("errors"):
        lines += ["Errors:", ""] + [f"- {e}" for e in grow["errors"]] + [""]

    def med(records, field):
        values = [r[field] for r in records if field in r]
        return (statistics.median(values), min(values), max(values)) if values else None

    rows = []
    order = [c for c in COMPETITORS if c in runs] + sorted(set(runs) - set(COMPETITORS))
    for competitor in order:
        records = runs[competitor]
        grow_s, release_s = med(records, "grow_s"), med(records, "release_s")
        wall = med(records, "grow_wall_s")
        before, after, peak = med(records, "rss_before"), med(records, "rss_after"), med(records, "peak_rss")
        committed = med(records, "committed_after")
        name = f"**{label(competitor)}**" if competitor == "perfloc" else label(competitor)
        rows.append([name,
                     f"{grow_s[0] * 1e3:.0f} ({grow_s[1] * 1e3:.0f}–{grow_s[2] * 1e3:.0f})",
                     f"{wall[0] * 1e3:.0f}" if wall else "–",
                     f"{release_s[0] * 1e3:.1f} ({release_s[1] * 1e3:.1f}–{release_s[2] * 1e3:.1f})",
                     mib(peak[0]), mib(before[0]), f"**{mib(after[0])}**",
                     mib(after[0] - before[0]), mib(committed[0]) if committed else "–"])
    lines += markdown_table(["competitor", "grow, CPU ms (min–max)", "grow, wall ms", "release, CPU ms (min–max)",
                             "peak RSS MiB", "RSS before MiB", "RSS after release MiB", "kept after release MiB",
                             "committed after (perfloc top) MiB"], rows)
    lines += ["", "What stays resident after the release, and why:", "",
              "- **perfloc** keeps its top chunk's free memory up to `top_options::retain_bytes` (64 MiB by "
              "default) committed for reuse and gives the rest back with `madvise(MADV_DONTNEED)`; the calling "
              "thread's cache also keeps a few free blocks of each small class (64 KiB–4 MiB). The committed "
              "column is `top_stats::committed_bytes` after the release: retain plus the thread cache plus the "
              "header and meta region. A smaller `retain_bytes` trades it for faults on the next growth.",
              "- **glibc** serves requests of 128 KiB and more with their own `mmap` and `munmap`s them on free; the "
              "smaller ones come from the heap, trimmed at its top.",
              "- **jemalloc** purges freed (dirty) pages gradually over `dirty_decay_ms` (10 s by default), during "
              "later allocator calls (no background thread by default), so right after the release part of the "
              "memory is still resident.",
              "- **mimalloc** (both `free` and `mi_heap_destroy`) keeps the freed pages in its segments for reuse "
              "and resets them lazily; right after the release almost all of it is still resident.",
              "- **APR** pools give their memory to the allocator's free lists, and an allocator keeps everything "
              "unless `apr_allocator_max_free_set` bounds it (httpd sets `MaxMemFree`); the global allocator "
              "(`apr-global`) is no different.",
              "- **pmr monotonic, new each scope** and **talloc** free every buffer to glibc, which unmaps the large "
              "ones.", ""]
    return lines


def icount_sections(icount: dict) -> list[str]:
    machine = icount["machine"]
    lines = ["## Instructions per allocation (Callgrind)", "",
             f"Counted {machine['date']}, commit {machine['commit']}, {machine['compiler']}: each case runs twice under "
             f"`valgrind --tool=callgrind`, with N = {icount['allocations']} and 2N allocations; the difference of "
             "the two totals divided by N is the instructions per allocation, scope open and release amortized in, "
             "startup cancelled. Stable on a noisy machine, unlike time.", ""]
    if icount["missing"]:
        lines += [f"Not built: {', '.join(icount['missing'])}.", ""]
    if icount["errors"]:
        lines += ["Errors:", ""] + [f"- {e}" for e in icount["errors"]] + [""]
    for workload, by_k in icount["counts"].items():
        competitors = [c for c in COMPETITORS if any(c in cell for cell in by_k.values())]
        if workload == "open_release":
            cell = by_k.get("-", {})
            rows = [[f"**{label(c)}**" if c == "perfloc" else label(c), fmt(cell[c])]
                    for c in sorted(cell, key=cell.get)]
            lines += ["### open_release: instructions per empty scope, open + release", ""]
            lines += markdown_table(["competitor", "instructions per scope"], rows) + [""]
            continue
        header = ["K"] + [f"**{c}**" if c == "perfloc" else c for c in competitors]
        rows = [[k] + [fmt(by_k[k].get(c)) for c in competitors] for k in sorted(by_k, key=int)]
        lines += [f"### {workload}: instructions per allocation, scope open and release amortized in", ""]
        lines += markdown_table(header, rows) + [""]
    return lines


def write_plot(timing: dict) -> bool:
    """Grouped bars of the per-scope workload: one group per K, one bar per competitor, log-scale y, min–max
    whiskers. Returns False when gnuplot is missing or fails."""
    gnuplot = shutil.which("gnuplot")
    samples = timing["samples"].get("per_scope", {})
    if not gnuplot or not samples:
        return False
    ks = sorted(samples, key=int)
    competitors = [c for c in COMPETITORS if any(c in samples[k] for k in ks)]
    competitors += sorted({c for k in ks for c in samples[k]} - set(competitors))
    with tempfile.TemporaryDirectory() as directory:
        data = Path(directory) / "per_scope.dat"
        with data.open("w") as out:
            for k in ks:
                stats = summary(timing["samples"], "per_scope", k)
                cells = []
                for c in competitors:
                    median, low, high, _ = stats.get(c, (float("nan"),) * 4)
                    cells += [f"{median:.4g}", f"{low:.4g}", f"{high:.4g}"]
                out.write(f"\"K = {k}\" " + " ".join(cells) + "\n")
        plots = []
        for i, c in enumerate(competitors):
            column = 2 + 3 * i
            color = COMPETITORS[c].color if c in COMPETITORS else "#000000"
            using = f"{column}:{column + 1}:{column + 2}" + (":xtic(1)" if i == 0 else "")
            title = COMPETITORS[c].label if c in COMPETITORS else c
            plots.append(f"'{data}' using {using} title '{title}' lc rgb '{color}'")
        machine = timing["machine"]
        grow_panel = grow_plot(timing.get("grow") or {}, Path(directory))
        script = f"""
set terminal pngcairo size 1400,{1150 if grow_panel else 700} font ',11' noenhanced
set output '{REPORT_PNG}'
{"set multiplot layout 2,1" if grow_panel else ""}
set title "Per-scope workload: K allocations of 16–256 B, touched, scope released (median of {timing['rounds']} rounds; whiskers min–max)\\n{machine['cpu']}, {machine['compiler']}, {machine['date']}"
set ylabel 'ns per allocation (log scale)'
set logscale y
set yrange [0.1:*]
set xrange [-0.6:{len(ks) - 0.4}]
set grid ytics mytics
set key outside right top vertical
set style data histograms
set style histogram errorbars gap 2 lw 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set bars 0.4
plot {', '.join(plots)}
{grow_panel}
"""
        result = subprocess.run([gnuplot], input=script, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            log(f"gnuplot failed: {result.stderr.strip()}")
            return False
    return True


def grow_plot(grow: dict, directory: Path) -> str:
    """The second panel of latest.png: resident memory after the 1 GiB scope's release, per competitor (the
    growth times are alike for everyone and stay in the table). Returns gnuplot commands, or "" without data."""
    runs = grow.get("runs") or {}
    order = [c for c in COMPETITORS if c in runs]
    if not order:
        return ""
    data = directory / "grow.dat"
    with data.open("w") as out:
        for i, competitor in enumerate(order):
            after = statistics.median(r["rss_after"] for r in runs[competitor]) / 2**20
            peak = statistics.median(r["peak_rss"] for r in runs[competitor]) / 2**20
            color = int(COMPETITORS[competitor].color.lstrip("#"), 16)
            out.write(f'{i} "{COMPETITORS[competitor].label}" {after:.1f} {peak:.1f} {color}\n')
    return f"""
unset logscale y
set logscale y 2
set title "A scope grown to {grow.get('target_mib', 1024)} MiB (pages touched) and released: resident MiB right after the release (bars) and peak (line); median of {grow.get('rounds')} runs"
set ylabel 'MiB resident (log scale)'
set yrange [1:2048]
set xrange [-0.6:{len(order) - 0.4}]
set xtics rotate by -20
set style fill solid 0.85 border -1
set boxwidth 0.7
unset key
plot '{data}' using 1:3:5:xtic(2) with boxes lc rgb variable, \
     '' using 1:4 with linespoints lc rgb '#444444' pt 7, \
     '' using 1:3:(sprintf('%.0f', $3)) with labels offset 0,0.8
unset multiplot
"""


def write_report(command: str) -> None:
    timing = json.loads(TIMING_JSON.read_text()) if TIMING_JSON.is_file() else None
    icount = json.loads(ICOUNT_JSON.read_text()) if ICOUNT_JSON.is_file() else None
    lines = ["# Perfloc benchmarks: latest results", "",
             f"Written by `{command}` (see bench/README.md). Workloads: bench/workload.hpp; competitors: "
             "bench/*_bench.cpp.", ""]
    if timing:
        have_plot = write_plot(timing)
        lines += timing_sections(timing, have_plot, write_idle_plot(timing))
    else:
        lines += ["No timing run yet: `bench/run.py`.", ""]
    if icount:
        lines += icount_sections(icount)
    else:
        lines += ["## Instructions per allocation (Callgrind)", "", "Not counted yet: `bench/run.py --icount`.", ""]
    REPORT_MD.write_text("\n".join(lines).rstrip() + "\n")
    log(f"wrote {REPORT_MD}" + (f" and {REPORT_PNG}" if timing and REPORT_PNG.is_file() else ""))


# --------------------------------------------------------------------------------------------------
# perfloc.asio per Asio version (--asio-versions LABEL=BUILD_DIR ...; tools/dev bench --asio-versions)
# --------------------------------------------------------------------------------------------------

ASIO_VERSIONS_JSON = RESULTS_DIR / "asio-versions.json"
ASIO_VERSIONS_MD = RESULTS_DIR / "asio-versions.md"
ASIO_COMPETITORS = ["asio", "perfloc", "perfloc-param"]
ASIO_WORKLOADS = ["co_spawn_empty", "co_spawn_8", "heap_calls", "this_coro_chunk", "post_op"]


def run_asio_versions(args) -> dict:
    """perfloc-bench-asio of each build (one per Asio), each competitor in its own process, rounds alternating
    over builds and competitors. Per build: workload -> competitor -> [ns], and heap calls per coroutine."""
    builds = []
    for spec in args.asio_versions:
        name, _, directory = spec.partition("=")
        exe = find_executables(Path(directory).resolve()).get("perfloc-bench-asio")
        if not exe:
            sys.exit(f"run.py: no perfloc-bench-asio under {directory}")
        builds.append((name, exe))
    samples: dict = {name: {} for name, _ in builds}
    heap_calls: dict = {name: {} for name, _ in builds}
    versions: dict = {}
    errors: list[str] = []
    load_before = load_average()
    for round_index in range(args.rounds):
        for name, exe in builds:
            for competitor in ASIO_COMPETITORS:
                pattern = f"^({'|'.join(ASIO_WORKLOADS)})/{competitor}$"  # unescaped: Google Benchmark rejects "\\-"
                command = [str(exe), "--benchmark_format=json", f"--benchmark_min_time={args.min_time}",
                           f"--benchmark_filter={pattern}"]
                log(f"round {round_index + 1}/{args.rounds}: {name} {competitor}")
                result = subprocess.run(command, capture_output=True, text=True, check=False)
                if result.returncode != 0:
                    errors.append(f"{name} {competitor}: exit {result.returncode}: {result.stderr.strip()[-300:]}")
                    continue
                report = json.loads(result.stdout)
                versions[name] = report.get("context", {}).get("asio", "?")
                for bench in report.get("benchmarks", []):
                    workload, who, _ = parse_name(bench["name"])
                    if bench.get("error_occurred"):
                        errors.append(f"{name} {bench['name']}: {bench.get('error_message', 'error')}")
                        continue
                    value = next((v for k, v in bench.items() if k.startswith("ns_per_")), None)
                    samples[name].setdefault(workload, {}).setdefault(who, []).append(value)
                    if "heap_calls_per_coroutine" in bench:
                        heap_calls[name].setdefault(who, []).append(bench["heap_calls_per_coroutine"])
    return {"machine": machine_info(builds[0][1].parent), "rounds": args.rounds, "min_time": args.min_time,
            "load_average": f"{load_before} before, {load_average()} after", "errors": sorted(set(errors)),
            "versions": versions, "samples": samples, "heap_calls": heap_calls}


def ratio_text(subject: list[float], base: list[float]) -> str:
    """Median of the per-round ratios subject / base, with their range."""
    ratios = [a / b for a, b in zip(subject, base) if a and b]
    if not ratios:
        return "–"
    return f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"


def asio_versions_report(data: dict, command: str) -> str:
    lines = ["# perfloc.asio per Asio version", "",
             f"Written by `{command}`: {data['rounds']} alternating rounds, each competitor of each build in its own "
             f"process, `--benchmark_min_time={data['min_time']}`; load average {data['load_average']}; "
             f"{data['machine']['date']}, commit {data['machine']['commit']}. Ratios: the median of the per-round "
             "ratios, their range in parentheses. Targets (issue 14): heap calls 0; empty ≤ 1.0×; 8 allocations "
             "≤ 0.75×; `this_coro::chunk()` ≤ 5 ns; `use_chunk` ≤ 1.0× `use_awaitable`.", "",
             "| Asio | heap calls per coroutine, perfloc (asio) | empty co_spawn ÷ asio, perfloc / param "
             "| 8 allocations ÷ asio + new, perfloc / param | `this_coro::chunk()` ns | post, use_chunk ÷ use_awaitable |",
             "|---|--:|--:|--:|--:|--:|"]
    for name, by_workload in data["samples"].items():
        get = lambda workload, who: by_workload.get(workload, {}).get(who, [])
        calls = data["heap_calls"][name]
        heap = (f"{statistics.median(calls['perfloc']):.2f} ({statistics.median(calls['asio']):.2f})"
                if calls.get("perfloc") and calls.get("asio") else "–")
        chunk = get("this_coro_chunk", "perfloc")
        chunk_text = f"{statistics.median(chunk):.2f} ({min(chunk):.2f}–{max(chunk):.2f})" if chunk else "–"
        cells = [f"{name} ({data['versions'].get(name, '?')})", heap]
        for workload in ("co_spawn_empty", "co_spawn_8"):
            base = get(workload, "asio")
            cells.append(f"{ratio_text(get(workload, 'perfloc'), base)} / {ratio_text(get(workload, 'perfloc-param'), base)}")
        cells += [chunk_text, ratio_text(get("post_op", "perfloc"), get("post_op", "asio"))]
        lines.append("| " + " | ".join(cells) + " |")
    if data["errors"]:
        lines += ["", "Errors:", ""] + [f"- {e}" for e in data["errors"]]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build-dir", type=Path, default=None,
                        help="folder holding the perfloc-bench-* executables (searched recursively; "
                             "default: build/bench, the bench preset's)")
    parser.add_argument("--quick", action="store_true", help="2 short rounds: a smoke check")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 5, quick 2)")
    parser.add_argument("--min-time", type=float, default=None,
                        help="Google Benchmark min time per benchmark, seconds (default 0.1, quick 0.05)")
    parser.add_argument("--filter", help="--benchmark_filter regex passed to every executable")
    parser.add_argument("--only", help="comma-separated executables to run (e.g. bump,pmr,perfloc)")
    parser.add_argument("--cpu", type=int, default=None, help="pin every run to this CPU with taskset")
    parser.add_argument("--icount", action="store_true", help="instruction counts under Callgrind, no timing")
    parser.add_argument("--all", action="store_true", help="timing, then instruction counts")
    parser.add_argument("--icount-allocations", type=int, default=65536,
                        help="N for the N / 2N Callgrind runs (a multiple of 4096)")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the saved JSON")
    parser.add_argument("--skip-grow", action="store_true", help="timing without the 1 GiB growth workload")
    parser.add_argument("--skip-server", action="store_true", help="timing without the HTTP demo under load")
    parser.add_argument("--skip-scale", action="store_true",
                        help="timing without the idle coroutines and burst workloads")
    parser.add_argument("--scale-rounds", type=int, default=None,
                        help="runs per competitor and size of idle coroutines and burst (default 3, quick 2)")
    parser.add_argument("--grow-rounds", type=int, default=None, help="growth runs per competitor (default 3, quick 1)")
    parser.add_argument("--grow-mib", type=int, default=1024, help="size the growth workload's scope reaches, MiB")
    parser.add_argument("--asio-versions", nargs="+", metavar="LABEL=BUILD_DIR",
                        help="only perfloc-bench-asio of each build (one per Asio): writes results/asio-versions.md")
    args = parser.parse_args()
    args.grow_rounds = args.grow_rounds or (1 if args.quick else 3)
    args.scale_rounds = args.scale_rounds or (2 if args.quick else 3)
    args.rounds = args.rounds or (2 if args.quick else 5)
    args.min_time = args.min_time if args.min_time is not None else (0.05 if args.quick else 0.1)
    args.build_dir = (args.build_dir or default_build_dir()).resolve()
    if args.icount_allocations % max(ICOUNT_SIZES) != 0:
        sys.exit("--icount-allocations must be a multiple of 4096")
    command = "bench/run.py " + " ".join(sys.argv[1:])

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    if args.asio_versions:
        data = run_asio_versions(args)
        ASIO_VERSIONS_JSON.write_text(json.dumps(data, indent=1) + "\n")
        ASIO_VERSIONS_MD.write_text(asio_versions_report(data, command.strip()))
        print(ASIO_VERSIONS_MD.read_text())
        return
    if not args.report_only:
        executables = find_executables(args.build_dir)
        if not args.icount or args.all:
            TIMING_JSON.write_text(json.dumps(run_timing(args, executables), indent=1) + "\n")
        if args.icount or args.all:
            ICOUNT_JSON.write_text(json.dumps(run_icount(args, executables), indent=1) + "\n")
    write_report(command.strip())


if __name__ == "__main__":
    main()

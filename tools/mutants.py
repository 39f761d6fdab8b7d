#!/usr/bin/env python3
"""tools/mutants.py — does the suite catch realistic bugs? (`tools/dev mutants [NAME...]`)

Applies each mutation of tools/mutants.json, one at a time, to a scratch git worktree of the caller's HEAD
(never the caller's own tree), builds the debug preset there (or the mutation's "preset", e.g. tsan for a data
race that only ThreadSanitizer sees), runs the suite (ctest) and prints a table:
the mutation, whether it was caught, by how many tests and which. A test is a Boost.Test case where the
failing executable names it ("error: in \"name\""), else the CTest test (perfloc.consumer,
perfloc.fuzz.replay, ...).

Each mutation is a file, an exact snippet that must occur exactly once in it, its replacement and a
description; a snippet that is not found stops the run with "snippet not found" (the code moved: re-point
the mutation). Exit status: 0 when every mutation run was caught, 1 when one survived, 2 on a usage or
setup error.

  tools/dev mutants                      every mutation (about 5-10 minutes each on a small machine)
  tools/dev mutants NAME...              a subset, by name (--list shows them)
  tools/dev mutants --timeout 1200 ...   seconds per mutation, build and tests (default 1800)
  tools/dev mutants --exclude REGEX      skip CTest tests matching REGEX (e.g. perfloc.consumer)
  tools/dev mutants --only TEST ...      build and run only this CTest test (repeatable; also its build
                                         target, e.g. perfloc.tests.limits): a tsan mutation without a
                                         sanitizer build of the whole suite. The verdict says so.
  tools/dev mutants --no-baseline        skip the run of the unmutated suite (which must pass)

  tools/dev mutants --log DIR ...        keep each run's output (NAME.log) and verdict (NAME.json) in DIR
  tools/dev mutants --markdown DIR...    the newest verdict of each mutation found in DIRs, as a Markdown
                                         table (docs/mutants.md is made this way)

The scratch worktree is build/mutants/tree (--work DIR for another place); it is kept between runs, so
later runs build incrementally, and reset to HEAD before each run. It is configured without the examples
(they have no tests), and the unmutated suite runs once per commit and --exclude: a later batch at the same
commit skips it. Only committed code is tested: commit a new test before running the mutation it should kill.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LIST = ROOT / "tools" / "mutants.json"
# A case's name is an identifier (or suite/case); Boost.Test also says `error: in "<function signature>"` for an
# exception thrown by boost::throw_exception inside a case, which names no case.
CASE = re.compile(r'(?:fatal )?error: in "([\w/]+)"')
# A sanitizer report or a crash names no case; its stack does (BOOST_AUTO_TEST_CASE(name) -> name::test_method).
STACK_CASE = re.compile(r"\b(\w+)::test_method\(\)")
CTEST_RESULT = re.compile(r"^\s*\d+/\d+ Test\s+#\d+: (\S+) \.+\s*(\*\*\*)?(\w+)")


def say(text):
    print(f"tools/mutants: {text}", file=sys.stderr, flush=True)


def run(command, cwd, env, timeout):
    """Runs a command; returns (status, output). status None on timeout."""
    try:
        done = subprocess.run(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, errors="replace", timeout=timeout)
        return done.returncode, done.stdout
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        return None, out


def load_mutations(names):
    data = json.loads(LIST.read_text())
    mutations = data["mutations"]
    if not names:
        return mutations
    by_name = {m["name"]: m for m in mutations}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        say(f"unknown mutation(s): {', '.join(unknown)} (tools/dev mutants --list)")
        sys.exit(2)
    return [by_name[n] for n in names]


def prepare_tree(work):
    """A detached worktree of the caller's HEAD at `work`, clean."""
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    if not (work / ".git").exists():
        work.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--force", str(work), head],
                       check=True, capture_output=True)
    else:
        subprocess.run(["git", "-C", str(work), "checkout", "--quiet", "--detach", "--force", head], check=True)
        subprocess.run(["git", "-C", str(work), "reset", "--quiet", "--hard", head], check=True)
    tools = ROOT / ".tools"
    if tools.exists() and not (work / ".tools").exists():
        (work / ".tools").symlink_to(tools.resolve())
    return head


def check_snippets(work, mutations):
    """Every snippet occurs exactly once, or nothing runs."""
    bad = []
    for m in mutations:
        path = work / m["file"]
        count = path.read_text().count(m["find"]) if path.exists() else 0
        if count != 1:
            bad.append(f"{m['name']}: snippet {'not found' if count == 0 else f'found {count} times'} in {m['file']}")
    if bad:
        for line in bad:
            say(line)
        say("re-point these mutations in tools/mutants.json (the code moved)")
        sys.exit(2)


def failing_tests(output):
    """{ctest test: [boost cases]} of the tests that failed, from ctest --output-on-failure output."""
    failed = {}
    from_stacks = {}
    current = None
    for line in output.splitlines():
        result = CTEST_RESULT.match(line)
        if result:
            name, _, status = result.groups()
            current = name if status not in ("Passed", "Skipped") else None  # a skip (no Asio copies) is no failure
            if current:
                failed.setdefault(current, [])
            continue
        if current:
            for case in CASE.findall(line):
                if case not in failed[current]:
                    failed[current].append(case)
            for case in STACK_CASE.findall(line):
                if case not in from_stacks.setdefault(current, []):
                    from_stacks[current].append(case)
    for name, cases in failed.items():
        if not cases:
            cases += from_stacks.get(name, [])
    return failed


def run_suite(work, env, timeout, exclude, jobs, build_jobs, preset="debug", only=()):
    started = time.monotonic()
    build = ["cmake", "--build", "--preset", preset, "-j", str(build_jobs)]
    for target in only:  # a CTest test of the suite is named after its executable's target
        build += ["--target", target]
    status, output = run(build, work, env, timeout)
    if status is None:
        return "timeout (build)", {}, output
    if status != 0:
        return "build failed", {}, output
    # A slow build (a loaded machine rebuilding every importer) must not leave the suite too little time to
    # finish: each CTest test has its own TIMEOUT against hangs, so the suite always gets 10 minutes or more.
    left = max(600, timeout - (time.monotonic() - started))
    command = ["ctest", "--preset", preset, "--output-on-failure", "-j", str(jobs), "--timeout", str(int(left))]
    if exclude:
        command += ["-E", exclude]
    if only:
        command += ["-R", "^(" + "|".join(re.escape(name) for name in only) + ")$"]
    status, output = run(command, work, env, left + 30)
    failed = failing_tests(output)
    if status is None:
        return "timeout (tests)", failed, output
    return ("failed" if failed or status != 0 else "passed"), failed, output


def describe(failed):
    tests = []
    for ctest_name, cases in failed.items():
        short = ctest_name.removeprefix("perfloc.tests.").removeprefix("perfloc.")
        tests += [f"{short}/{case}" for case in cases] if cases else [ctest_name]
    return tests


def print_markdown(log_dirs, mutations):
    """The newest verdict of each mutation found in log_dirs, as a Markdown table in the list's order."""
    newest = {}
    for directory in log_dirs:
        for path in directory.glob("*.json"):
            verdict = json.loads(path.read_text())
            verdict["mtime"] = path.stat().st_mtime
            if verdict["name"] not in newest or newest[verdict["name"]]["mtime"] < verdict["mtime"]:
                newest[verdict["name"]] = verdict
    print("| mutation | module | caught | tests | which tests | commit | run |")
    print("|---|---|---|---:|---|---|---|")
    caught = 0
    for m in mutations:
        v = newest.get(m["name"])
        name = m["name"] + (" (issue 12)" if m.get("issue12") else "") + (f" [{m['preset']}]" if m.get("preset") else "")
        if not v:
            print(f"| {name} | {m['module']} | not run | | | | |")
            continue
        killed = v["verdict"] not in ("passed", "build failed")  # older verdicts counted a build failure
        caught += killed
        which = ", ".join(f"`{t}`" for t in v["tests"]) or v["verdict"]
        if v["verdict"] == "build failed":
            which = "the mutation did not compile (broken, not caught)"
        elif v["verdict"] not in ("failed", "passed"):
            which += f" ({v['verdict']}: the count may be incomplete)"
        if v.get("only"):
            which += f" (only {', '.join(v['only'])} run)"
        if v.get("preset", "debug") != m.get("preset", "debug"):
            which += f" (run with the {v.get('preset', 'debug')} preset; the mutation now names {m['preset']})"
        print(f"| {name} | {m['module']} | {'yes' if killed else '**NO**'} | {len(v['tests'])} | {which} "
              f"| {v['commit'][:10]} | {v['date']}, {v['seconds']} s |")
    print()
    print(f"{caught} of {len(mutations)} caught; {len(mutations) - len(newest)} not run.")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per mutation (build and tests)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "mutants" / "tree", help="scratch worktree")
    parser.add_argument("--exclude", default="", help="CTest tests to skip (a regex for ctest -E)")
    parser.add_argument("--jobs", type=int, default=1, help="ctest -j")
    parser.add_argument("--build-jobs", type=int, default=2, help="parallel build jobs (a shared machine: few)")
    parser.add_argument("--only", action="append", default=[], metavar="TEST",
                        help="build and run only this CTest test (repeatable), e.g. perfloc.tests.limits")
    parser.add_argument("--no-baseline", action="store_true", help="do not run the unmutated suite first")
    parser.add_argument("--log", type=Path, help="directory for each run's build and test output")
    parser.add_argument("--markdown", type=Path, nargs="+", metavar="LOGDIR",
                        help="print the table of the verdicts kept in these log directories (the newest run of "
                             "each mutation) as Markdown, for docs/mutants.md, and exit")
    args = parser.parse_args()

    if args.markdown:
        return print_markdown(args.markdown, load_mutations(args.names))
    mutations = load_mutations(args.names)
    if args.list:
        for m in mutations:
            flags = " [issue 12]" if m.get("issue12") else ""
            flags += f" [rewritten: {m['rewritten']}]" if m.get("rewritten") else ""
            print(f"{m['name']:40} {m['module']:12} {m['description']}{flags}")
        return 0
    for tool in ("cmake", "ctest", "git"):
        if not shutil.which(tool, path=f"{ROOT / '.tools' / 'node_modules' / '.bin'}:{os.environ.get('PATH', '')}"):
            say(f"{tool} not found (tools/dev deps installs cmake)")
            return 2

    work = args.work.resolve()
    head = prepare_tree(work)
    check_snippets(work, mutations)
    env = dict(os.environ)
    env["PATH"] = f"{work / '.tools' / 'node_modules' / '.bin'}:{env.get('PATH', '')}"
    log_dir = (args.log or work.parent / "logs").resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    say(f"scratch worktree {work} at {head[:12]}; logs in {log_dir}")
    # Examples have no tests: leave them out of every rebuild (an interface mutation recompiles all importers).
    # A mutation that only a sanitizer can see (a data race) names its preset ("preset": "tsan").
    presets = sorted({m.get("preset", "debug") for m in mutations})
    for preset in presets:
        status, output = run(["cmake", "--preset", preset, "-DPERFLOC_BUILD_EXAMPLES=OFF"], work, env, args.timeout)
        if status != 0:
            print(output)
            say(f"configuring the {preset} preset failed")
            return 2

    # The baseline passes or fails with the commit and the tests run: once per (HEAD, --exclude) is enough,
    # so that batches of mutations run one after another do not each pay for a run of the whole suite.
    for preset in presets if not args.no_baseline else []:
        passed_marker = work.parent / ("baseline-passed" if preset == "debug" else f"baseline-passed-{preset}")
        baseline_key = f"{head} {args.exclude} {' '.join(args.only)}".rstrip()
        if passed_marker.exists() and passed_marker.read_text() == baseline_key:
            say(f"baseline ({preset}): passed before at {head[:12]} (exclude '{args.exclude}'), not run again")
            continue
        say(f"baseline ({preset}): the unmutated suite")
        verdict, failed, output = run_suite(work, env, args.timeout, args.exclude, args.jobs, args.build_jobs, preset,
                                            args.only)
        (log_dir / f"baseline-{preset}.log").write_text(output)
        if verdict != "passed":
            say(f"baseline ({preset}) {verdict}: {', '.join(describe(failed)) or 'see the log'}; fix the suite first")
            return 2
        passed_marker.write_text(baseline_key)

    rows = []
    for i, m in enumerate(mutations, 1):
        path = work / m["file"]
        original = path.read_text()
        say(f"[{i}/{len(mutations)}] {m['name']}: {m['description']}")
        path.write_text(original.replace(m["find"], m["replace"], 1))
        started = time.monotonic()
        try:
            verdict, failed, output = run_suite(work, env, args.timeout, args.exclude, args.jobs, args.build_jobs,
                                                m.get("preset", "debug"), args.only)
        finally:
            path.write_text(original)
        (log_dir / f"{m['name']}.log").write_text(output)
        tests = describe(failed)
        # A mutation that does not compile tells nothing about the tests: it is not caught, it is broken.
        caught = verdict not in ("passed", "build failed")
        # The verdict beside the log, for --markdown (docs/mutants.md is generated from these).
        (log_dir / f"{m['name']}.json").write_text(json.dumps({
            "name": m["name"], "module": m["module"], "preset": m.get("preset", "debug"), "caught": caught,
            "verdict": verdict, "tests": tests,
            "seconds": round(time.monotonic() - started), "commit": head, "exclude": args.exclude,
            "only": args.only,
            "date": time.strftime("%Y-%m-%d", time.gmtime())}, indent=1) + "\n")
        rows.append((m["name"], caught, verdict, tests, time.monotonic() - started))
        say(f"    {'caught' if caught else 'BROKEN' if verdict == 'build failed' else 'SURVIVED'} ({verdict}) by "
            f"{len(tests)}: {', '.join(tests)}")

    print()
    print(f"{'mutation':40} {'caught':7} {'tests':>5}  which")
    print(f"{'-' * 40} {'-' * 7} {'-' * 5}  {'-' * 40}")
    for name, caught, verdict, tests, _ in rows:
        which = ", ".join(tests) if tests else ("(the build failed)" if verdict == "build failed" else verdict)
        print(f"{name:40} {'yes' if caught else 'NO':7} {len(tests):5}  {which}")
    survived = [name for name, caught, *_ in rows if not caught]
    print()
    print(f"{len(rows) - len(survived)} of {len(rows)} caught" + (f"; survived: {', '.join(survived)}" if survived else ""))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())

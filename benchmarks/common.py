"""What the benchmark scripts share: where the repository is (on sys.path, so that they import
its minivgg), `--set` values, a process's memory, the load other processes put on the shared
cores, and the marked sections of BENCHMARKS.md that they regenerate. Which commit and machine
a result came from: minivgg.run_record's git_state() and machine(), shortened by `short_commit`.
Imports nothing heavy: `pin_threads` must run before NumPy loads OpenBLAS."""
from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))   # the scripts run from a checkout, not an installed package


THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def pin_threads(argv) -> int:
    """Read --threads from argv and set every thread-count variable to it; returns it."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=int, default=2)
    threads = pre.parse_known_args(argv)[0].threads
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    return threads


def relative(path) -> str:
    """`path` relative to the repository when it lies inside it, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def write_json(path, obj) -> None:
    """A result file: `obj` as indented JSON, written atomically (a crash leaves the old one)."""
    from minivgg.fsutil import atomic_write_path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write_path(path) as tmp:
        Path(tmp).write_text(json.dumps(obj, indent=1) + "\n")


def add_set_option(parser: argparse.ArgumentParser, note: str = "") -> None:
    """--set FIELD=VALUE ..., given once or repeated (for parse_set)."""
    parser.add_argument("--set", nargs="+", action="extend", default=[], metavar="FIELD=VALUE",
                        help="change recipe fields (JSON values), e.g. --set epochs=2 lr=0.01" + note)


def parse_set(items) -> dict:
    """`--set FIELD=VALUE ...` as {field: value}: JSON values (epochs=3, augment=[]), else the
    bare word (optimizer=adam); for Recipe.with_changes."""
    changes = {}
    for item in items or ():
        field, sep, text = item.partition("=")
        if not sep or not field:
            raise ValueError(f"--set {item!r}: expected field=value, e.g. --set epochs=2")
        try:
            changes[field] = json.loads(text)
        except json.JSONDecodeError:
            changes[field] = text
    return changes


def short_commit() -> str:
    """The short hash of the commit whose minivgg the script imported, for a table, marked
    when tracked files differ from it."""
    from minivgg.run_record import git_state

    state = git_state()
    return (state["git_commit"] or "unknown")[:7] + ("+local changes" if state["git_dirty"] else "")


def status_kib(key: str, pid="self") -> int | None:
    """A memory line of /proc/PID/status in KiB, e.g. VmRSS or VmHWM; None where unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            match = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


# ---- other processes' load: the cores are shared, and a busy neighbour skews any timing --------

def machine_busy_s() -> float | None:
    """CPU seconds all processes have used, over every core (/proc/stat); None where unreadable."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds this process has used, all its threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class OtherLoad:
    """How many cores other processes kept busy since `start()`: the machine's busy time less
    the measured work's CPU time (by default this process's), over the wall time."""

    def start(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), machine_busy_s(), own_cpu_s()
        return self

    def cores(self, measured_cpu_s: float | None = None) -> float | None:
        busy = machine_busy_s()
        if busy is None or self.busy0 is None:
            return None
        if measured_cpu_s is None:
            measured_cpu_s = own_cpu_s() - self.own0
        elapsed = time.perf_counter() - self.t0
        return max(0.0, busy - self.busy0 - measured_cpu_s) / max(elapsed, 1e-9)


def wait_for_quiet(max_wait: float, threshold: float, window: float = 1.0) -> None:
    """Sleep in `window`-second probes until other processes use under `threshold` cores,
    for at most `max_wait` seconds."""
    waited = 0.0
    while max_wait > 0:
        probe = OtherLoad().start()
        time.sleep(window)
        waited += window
        cores = probe.cores()
        if cores is None or cores < threshold or waited >= max_wait:
            return


def add_section_options(parser: argparse.ArgumentParser, result: Path) -> None:
    """The options of a script that owns a section of BENCHMARKS.md: its result file (--json),
    the markdown file, and --render-only / --check."""
    parser.add_argument("--json", type=Path, default=result,
                        help=f"the result file (default {relative(result)})")
    parser.add_argument("--markdown", type=Path, default=BENCHMARKS_MD,
                        help="the file whose section is regenerated (default BENCHMARKS.md)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--render-only", action="store_true",
                      help="measure nothing: rewrite the section from --json")
    mode.add_argument("--check", action="store_true",
                      help="exit 1 if the section is not what --json renders (CI)")


def section_main(args, name: str, script: str, render, measure) -> int:
    """What such a script does with those options: --check compares section `name` with
    render(the result); otherwise measure() (unless --render-only) into --json, and the section
    is rewritten from that file."""
    section = MarkedSection(name, args.markdown)
    if args.check:
        return section.check(render(json.loads(args.json.read_text())),
                             f"python benchmarks/{script} --render-only")
    if not args.render_only:
        write_json(args.json, measure())
    section.write(render(json.loads(args.json.read_text())))
    return 0


class MarkedSection:
    """The text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in a markdown file, which
    one script owns and regenerates; everything around it is left as it is."""

    def __init__(self, name: str, path: Path = BENCHMARKS_MD):
        self.name, self.path = name, Path(path)
        self.begin, self.end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"

    def _split(self) -> tuple[str, str, str]:
        text = self.path.read_text()
        if (text.count(self.begin) != 1 or text.count(self.end) != 1
                or text.index(self.begin) > text.index(self.end)):
            raise ValueError(f"{self.path}: expected one {self.begin} ... {self.end} pair; "
                             f"restore the markers")
        head, rest = text.split(self.begin)
        body, tail = rest.split(self.end)
        return head, body, tail

    def write(self, body: str) -> bool:
        """Replace the section with `body`; True when it changed. Written atomically."""
        from minivgg.fsutil import atomic_write_path

        head, old, tail = self._split()
        if body == old:
            return False
        with atomic_write_path(self.path) as tmp:
            Path(tmp).write_text(head + self.begin + body + self.end + tail)
        return True

    def check(self, body: str, fix: str) -> int:
        """A script's --check: 0 when the committed section equals `body`; else print the diff
        and what to run (`fix`), and return 1."""
        _, old, _ = self._split()
        if old == body:
            print(f"{self.path}: the {self.name} section matches its results")
            return 0
        sys.stdout.write("".join(difflib.unified_diff(old.splitlines(True), body.splitlines(True),
                                                      f"{self.path.name} (committed)",
                                                      f"{self.path.name} (generated)")))
        print(f"\n{self.path}: the {self.name} section is stale; run `{fix}` and commit it",
              file=sys.stderr)
        return 1

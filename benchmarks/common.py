"""What the benchmark scripts share: where the repository is (on sys.path, so that they import
its minivgg), `--set` values, and the marked sections of BENCHMARKS.md that they regenerate.
Which commit and machine a result came from: minivgg.run_record's git_state() and machine().
Imports nothing heavy: `pin_threads` must run before NumPy loads OpenBLAS."""
from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
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
    """The short hash of the commit whose minivgg the script imported, for a table."""
    from minivgg.run_record import git_state

    return (git_state()["git_commit"] or "unknown")[:7]


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

    def stale_diff(self, body: str) -> str:
        """'' when the committed section equals `body`, else a unified diff."""
        _, old, _ = self._split()
        if old == body:
            return ""
        return "".join(difflib.unified_diff(old.splitlines(True), body.splitlines(True),
                                            f"{self.path.name} (committed)",
                                            f"{self.path.name} (generated)"))

    def check(self, body: str, fix: str) -> int:
        """A script's --check: 0 when the committed section equals `body`; else print the diff
        and what to run (`fix`), and return 1."""
        diff = self.stale_diff(body)
        if diff:
            sys.stdout.write(diff)
            print(f"\n{self.path}: the {self.name} section is stale; run `{fix}` and commit it",
                  file=sys.stderr)
            return 1
        print(f"{self.path}: the {self.name} section matches its results")
        return 0

"""What every benchmark script shares: where the repository is, which commit and machine a
result came from, and the marked sections of BENCHMARKS.md that scripts regenerate."""
from __future__ import annotations

import difflib
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))   # the scripts run from a checkout, not an installed package


def relative(path) -> str:
    """`path` relative to the repository when it lies inside it, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def _git(*args) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict:
    """The commit the run used. A copy of the tree without .git (e.g. on a borrowed machine)
    names it in MINIVGG_GIT_COMMIT; its cleanliness is then unknown (None)."""
    commit = _git("rev-parse", "HEAD")
    if commit is not None:
        return {"git_commit": commit, "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no"))}
    return {"git_commit": os.environ.get("MINIVGG_GIT_COMMIT"), "git_dirty": None}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> dict:
    import numpy

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"platform": platform.platform(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "usable_cpus": usable, "python": platform.python_version(), "numpy": numpy.__version__,
            "threads": {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                                                   "MKL_NUM_THREADS") if k in os.environ}}


class MarkedSection:
    """The text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in a markdown file, which
    one script owns and regenerates; everything around it is left as it is."""

    def __init__(self, name: str, path: Path = BENCHMARKS_MD):
        self.begin, self.end, self.path = f"<!-- {name}:begin -->", f"<!-- {name}:end -->", Path(path)

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

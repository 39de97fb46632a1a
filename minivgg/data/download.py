"""Download with mirror fallback, checksum verification and atomic placement.

The payload is streamed into a uniquely named `.part` file beside the target while
its checksums are computed; only a payload whose checksums match is renamed to the
final name. A failed, corrupt or interrupted download therefore never leaves a file
under the final name: the next run sees the file as missing, not as present and bad.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import secrets
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from .errors import ChecksumError, DownloadError

CHUNK_BYTES = 1 << 20
USER_AGENT = "minivgg-data/0.1 (python urllib)"


def file_digests(path, algorithms=("md5", "sha256")) -> dict[str, str]:
    """Hex digests of a file, read once in chunks."""
    hashes = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            for h in hashes.values():
                h.update(chunk)
    return {name: h.hexdigest() for name, h in hashes.items()}


def _create_part_file(dest: Path) -> Path:
    for _ in range(100):
        part = dest.with_name(f".{dest.name}.{secrets.token_hex(4)}.part")
        try:
            os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            return part
        except FileExistsError:
            continue
    raise DownloadError(f"could not create a temporary file beside {dest}")


def _progress_bar(total, name, enabled):
    if not enabled:
        return contextlib.nullcontext(None)
    from tqdm import tqdm
    return tqdm(total=total, desc=name, unit="B", unit_scale=True, unit_divisor=1024,
                file=sys.stderr, leave=True)


def _fetch_to(url: str, part: Path, name: str, progress: bool, timeout: float) -> dict:
    """Stream url into `part`; return the md5/sha256 of what was written."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    hashes = {"md5": hashlib.md5(), "sha256": hashlib.sha256()}
    received = 0
    with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with _progress_bar(total, name, progress) as bar:
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                for h in hashes.values():
                    h.update(chunk)
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise DownloadError(f"connection ended after {received} of {total} bytes")
        out.flush()
        os.fsync(out.fileno())
    return {k: h.hexdigest() for k, h in hashes.items()}


def download_file(urls: Sequence[str], dest, md5: str | None = None, sha256: str | None = None,
                  progress: bool = True, timeout: float = 30.0) -> Path:
    """Fetch the first url that delivers a payload with the expected checksums to `dest`.

    Each url is tried in order; a network error or a checksum mismatch moves on to the
    next. If none succeeds, raises ChecksumError (every payload arrived but was wrong)
    or DownloadError, listing each url and what went wrong with it. `dest` is only ever
    created by an atomic rename of a verified file.
    """
    dest = Path(dest)
    if not urls:
        raise DownloadError(f"no URL to download {dest.name} from")
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures, all_checksums = [], True
    for url in urls:
        part = _create_part_file(dest)
        try:
            digests = _fetch_to(url, part, dest.name, progress, timeout)
            wrong = [f"{algo} {digests[algo]} (expected {want})"
                     for algo, want in (("md5", md5), ("sha256", sha256))
                     if want is not None and digests[algo] != want.lower()]
            if wrong:
                raise ChecksumError(f"checksum mismatch: {'; '.join(wrong)}")
            os.replace(part, dest)
            return dest
        except ChecksumError as exc:
            failures.append(f"{url}: {exc}")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            all_checksums = False
            failures.append(f"{url}: {exc}")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(part)
    error = ChecksumError if all_checksums else DownloadError
    raise error(f"could not download {dest.name} to {dest.parent}; tried:\n  "
                + "\n  ".join(failures)
                + f"\nNothing was written under {dest}. Check the network (or proxy), or "
                  f"download the file by hand and put it at {dest}.")

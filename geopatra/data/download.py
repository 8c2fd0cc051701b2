"""Verified, resumable downloads into the geopatra cache (urllib only).

:func:`download` fetches a URL into ``<dest>.part``, resuming an interrupted transfer with an HTTP
``Range`` request (a server that answers 200 instead of 206 is restarted from byte 0). The finished
file is verified before it gets its final name (``os.replace``):

1. its size equals the announced size (``Content-Length`` / ``Content-Range`` total);
2. its sha256 equals a pinned one, where the caller pins one;
3. an npz file loads, and its own sGDML ``md5`` (a hash of the z, R, E, F arrays, see
   :func:`sgdml_md5`) matches the arrays, where it carries one;
4. ``validate(path)`` (e.g. :func:`geopatra.data.read_npz`) raises no :class:`DataError`.

Its sha256 is then recorded in a sidecar ``<dest>.sha256`` and checked on every later use. A corrupt
or truncated file is reported (logging warning), deleted and fetched again, never used; when the
retry budget is spent, :class:`DownloadError` is raised.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Mapping, Sequence
from http.client import HTTPException
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from geopatra.errors import DataError, DownloadError

logger = logging.getLogger(__name__)

#: The arrays the sGDML ``md5`` key hashes, in order.
SGDML_MD5_KEYS = ("z", "R", "E", "F")
#: Environment variable that overrides the cache directory.
CACHE_ENV = "GEOPATRA_CACHE"
_CHUNK = 1 << 16


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The download cache: ``override``, else ``$GEOPATRA_CACHE``, else ``~/.cache/geopatra``."""
    if override is not None:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "geopatra"


def sgdml_md5(arrays: Mapping[str, np.ndarray]) -> str:
    """The sGDML dataset ``md5``: md5 over the md5 digests of the raveled z, R, E, F as stored.

    It identifies the arrays (with their stored dtypes and values), not the file's bytes.
    """
    digest = hashlib.md5()
    for key in SGDML_MD5_KEYS:
        digest.update(hashlib.md5(np.ascontiguousarray(arrays[key]).ravel()).digest())
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(dest: str | os.PathLike) -> Path:
    """Where the sha256 recorded for ``dest`` lives: ``<dest>.sha256``."""
    dest = Path(dest)
    return dest.with_name(dest.name + ".sha256")


def check_npz(path: str | os.PathLike) -> None:
    """Load every array of an npz and check its sGDML ``md5`` where it carries one.

    Raises:
        DataError: unreadable (truncated, bad zip CRC) or the md5 does not match the arrays.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {key: data[key] for key in data.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise DataError(f"{path}: not a readable npz file ({exc}).") from exc
    if "md5" in contents and all(key in contents for key in SGDML_MD5_KEYS):
        stored = contents["md5"].item()
        stored = stored.decode() if isinstance(stored, bytes) else str(stored)
        found = sgdml_md5(contents)
        if stored != found:
            raise DataError(f"{path}: its md5 key is {stored} but its arrays hash to {found}.")


def verify_file(
    path: str | os.PathLike,
    *,
    sha256: str | None = None,
    validate: Callable[[Path], object] | None = None,
) -> str:
    """Check a finished file (pinned sha256, npz md5, ``validate``) and return its sha256.

    Raises:
        DataError: any check failed (the message says which).
    """
    path = Path(path)
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256.lower():
        raise DataError(f"{path}: sha256 {digest} does not match the pinned {sha256}.")
    if path.name.endswith((".npz", ".npz.part")):
        check_npz(path)
    if validate is not None:
        validate(path)
    return digest


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _cached_ok(dest: Path, sha256: str | None, validate: Callable[[Path], object] | None) -> bool:
    """True if ``dest`` exists and matches its sidecar (and pin); a bad file is deleted."""
    if not dest.exists():
        return False
    sidecar = sidecar_path(dest)
    try:
        if sidecar.exists():
            recorded = sidecar.read_text().split()[0]
            digest = sha256_file(dest)
            if digest != recorded:
                raise DataError(
                    f"{dest}: sha256 {digest} differs from the one recorded at download "
                    f"({recorded}); the file changed on disk."
                )
            if sha256 is not None and digest != sha256.lower():
                raise DataError(f"{dest}: sha256 {digest} does not match the pinned {sha256}.")
        else:  # placed by hand or by an older version: verify fully, then record
            digest = verify_file(dest, sha256=sha256, validate=validate)
            _write_text_atomic(sidecar, f"{digest}  {dest.name}\n")
    except DataError as exc:
        logger.warning("%s; deleting it and downloading again", exc)
        dest.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
        return False
    return True


def _transfer(url: str, part: Path, *, timeout: float, progress: bool) -> int | None:
    """Fetch ``url`` into ``part``, resuming it with a Range request; returns the announced size.

    Raises urllib/HTTP/OS errors on a failed or broken transfer (``part`` keeps what arrived).
    """
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "geopatra"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # our partial file is at or past the end: start over
            logger.warning("%s: server refused to resume at byte %d; restarting", url, offset)
            part.unlink()
            return _transfer(url, part, timeout=timeout, progress=progress)
        raise
    with response:
        length = response.headers.get("Content-Length")
        if offset and response.status == 206:
            content_range = response.headers.get("Content-Range", "")
            span, _, total_text = content_range.removeprefix("bytes ").partition("/")
            start = span.partition("-")[0].strip()
            if start != str(offset):
                raise DownloadError(
                    f"{url}: asked for bytes from {offset}, got range {content_range!r}"
                )
            total = (
                int(total_text)
                if total_text.isdigit()
                else (offset + int(length) if length else None)
            )
            mode = "ab"
            logger.info("%s: resuming at byte %d", url, offset)
        else:
            if offset:
                logger.warning("%s: server ignored the Range request; restarting from byte 0", url)
            offset, mode = 0, "wb"
            total = int(length) if length else None
        with (
            open(part, mode) as handle,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                disable=not progress,
                desc=part.name.removesuffix(".part"),
            ) as bar,
        ):
            for block in iter(lambda: response.read(_CHUNK), b""):
                handle.write(block)
                bar.update(len(block))
    return total


def download(
    urls: str | Sequence[str],
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    validate: Callable[[Path], object] | None = None,
    retries: int = 3,
    timeout: float = 60.0,
    backoff: float = 1.0,
    progress: bool = True,
) -> Path:
    """Make ``dest`` a verified copy of ``urls`` (tried in turn); a valid cached copy is reused.

    Args:
        urls: one URL or mirrors of the same file.
        dest: final path; ``<dest>.part`` holds an unfinished transfer, ``<dest>.sha256`` the hash.
        sha256: pinned hex sha256; a file that does not match is never used.
        validate: ``validate(path)`` raising :class:`DataError` for unusable content.
        retries: extra attempts after the first (each resumes or restarts the transfer).
        timeout: socket timeout per request [s].
        backoff: wait ``backoff * 2**attempt`` seconds between attempts [s].
        progress: tqdm bar in bytes.

    Raises:
        DownloadError: no attempt produced a file that passed verification.
    """
    urls = [urls] if isinstance(urls, str) else list(urls)
    if not urls:
        raise ValueError("download() needs at least one URL.")
    dest = Path(dest)
    if _cached_ok(dest, sha256, validate):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures: list[str] = []
    for attempt in range(retries + 1):
        url = urls[attempt % len(urls)]
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            total = _transfer(url, part, timeout=timeout, progress=progress)
        except (urllib.error.URLError, HTTPException, OSError, DownloadError) as exc:
            failures.append(f"attempt {attempt + 1} ({url}): {exc}")
            logger.warning(
                "download of %s failed (%s); %s",
                url,
                exc,
                "will resume" if attempt < retries else "giving up",
            )
            if isinstance(exc, (urllib.error.HTTPError, DownloadError)):
                part.unlink(missing_ok=True)
            continue
        size = part.stat().st_size
        if total is not None and size < total:
            failures.append(f"attempt {attempt + 1} ({url}): got {size} of {total} bytes")
            logger.warning("%s: transfer ended at %d of %d bytes; will resume", url, size, total)
            continue
        try:
            if total is not None and size != total:
                raise DataError(f"{part}: {size} bytes, but the server announced {total}.")
            digest = verify_file(part, sha256=sha256, validate=validate)
        except DataError as exc:
            failures.append(f"attempt {attempt + 1} ({url}): {exc}")
            logger.warning("downloaded file failed verification (%s); fetching it again", exc)
            part.unlink(missing_ok=True)
            continue
        os.replace(part, dest)
        _write_text_atomic(sidecar_path(dest), f"{digest}  {dest.name}\n")
        logger.info("downloaded %s (sha256 %s)", dest, digest)
        return dest
    raise DownloadError(
        f"could not download a verified {dest.name} after {retries + 1} attempt(s):\n  "
        + "\n  ".join(failures)
        + f"\nCheck the network, or place a good copy at {dest} by hand."
    )

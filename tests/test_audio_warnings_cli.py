"""`samplecnn tag` on files that decode but not cleanly: tagged, warned, and quiet."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from samplecnn.checkpoint import save_checkpoint
from samplecnn.models import create_model
from samplecnn.testing.datasets import tone, write_audio

SRC = Path(__file__).resolve().parents[1] / "src"


def _damaged(folder: Path) -> dict[str, Path]:
    clean = write_audio(folder / "clean.mp3", tone(5.0, 16000, seed=1), 16000)
    wav = write_audio(folder / "whole.wav", tone(3.0, 16000, seed=2), 16000)
    data = wav.read_bytes()
    (folder / "cut.wav").write_bytes(data[: len(data) // 2])
    wav.unlink()
    data = clean.read_bytes()
    (folder / "cut.mp3").write_bytes(data[: len(data) // 2])
    bad = bytearray(data)
    sync = next(i for i in range(len(bad) // 2, len(bad) - 1)
                if bad[i] == 0xFF and bad[i + 1] & 0xE0 == 0xE0)
    for k in range(sync, sync + 8):
        bad[k] ^= 0xFF
    (folder / "damaged.mp3").write_bytes(bytes(bad))
    return {p.name: p for p in folder.iterdir()}


def test_tag_reports_truncated_and_damaged_files_as_warnings_and_nothing_else(tmp_path):
    model = create_model("samplecnn_small", width=0.125, tags=["a", "b"], seed=1)
    ckpt = save_checkpoint(tmp_path / "m.ckpt", model)
    files = _damaged(tmp_path / "music")
    out = tmp_path / "out.json"
    env = dict(os.environ, PYTHONPATH=str(SRC))
    for workers in ("2",):  # forked decoding workers; in-process decoding: test_audio
        proc = subprocess.run(
            [sys.executable, "-m", "samplecnn.cli", "tag", str(ckpt), str(tmp_path / "music"),
             "--format", "json", "--output", str(out), "--workers", workers, "--backend", "plain"],
            capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr
        lines = proc.stderr.splitlines()
        # Only samplecnn's own lines: libmpg123's notes became the damaged file's warnings.
        assert all(line.startswith("samplecnn") for line in lines), lines
        records = {Path(r["path"]).name: r for r in json.loads(out.read_text())}
        assert set(records) == set(files)
        assert all(r["error"] is None and r["tags"] for r in records.values())
        assert records["clean.mp3"]["warnings"] == []
        for name in ("cut.wav", "cut.mp3"):
            assert [w for w in records[name]["warnings"] if w.startswith("truncated:")], name
        assert any(w.startswith("decoder: ") for w in records["damaged.mp3"]["warnings"])
        warned = {name for name in files for line in lines
                  if "warning:" in line and str(files[name]) in line}
        assert warned == {"cut.wav", "cut.mp3", "damaged.mp3"}
        for name, rec in records.items():
            assert rec["duration_s"] > 0
            assert np.isfinite(list(rec["tags"].values())).all()

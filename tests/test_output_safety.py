"""Issue 19, items 1, 2, 7, 8: outputs that are symlinks, devices, FIFOs or sockets; locks
keyed on the real file (links and hard links collide); write errors and lock failures
as one line. Devices, FIFOs, sockets and links are made in a temporary folder, never in
/dev (`os.mknod` of a character device needs root, as CI runs)."""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest
import soundfile as sf

from samplecnn import atomic, locks
from samplecnn.cli import main
from samplecnn.testing.datasets import write_tiny_checkpoint

TAGS = ["rock", "piano", "quiet"]
SR = 16000
NULL, FULL = os.makedev(1, 3), os.makedev(1, 7)  # /dev/null, /dev/full

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.ckpt", TAGS, seed=3)


@pytest.fixture(scope="module")
def wav(tmp_path_factory):
    path = tmp_path_factory.mktemp("music") / "a.wav"
    sf.write(path, (0.3 * np.random.default_rng(1).standard_normal(SR // 2)).astype(np.float32), SR)
    return str(path)


def _device(path, dev):
    os.mknod(path, stat.S_IFCHR | 0o666, dev)
    return str(path)


def _is_chr(path):
    return stat.S_ISCHR(os.lstat(path).st_mode)


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("samplecnn ") and "error:" in err[0], err
    for n in needles:
        assert n in err[0], err
    return err[0]


# -- 1: symlinks are written at their target, the link stays a link ------------------------

@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_symlinked_output_is_written_at_its_target(ckpt, wav, tmp_path, fmt):
    target = tmp_path / "real" / f"t.{fmt}"
    target.parent.mkdir()
    target.write_text("old\n")
    link = tmp_path / f"link.{fmt}"
    link.symlink_to(target)
    assert main(["tag", ckpt, wav, "--format", fmt, "-o", str(link), "--workers", "0"]) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    text = target.read_text()
    assert "old" not in text and "a.wav" in text
    assert not [p for p in target.parent.iterdir() if p.name.endswith(".tmp")]


def test_every_atomic_writer_follows_links(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    (tmp_path / "real").mkdir()
    cases = {
        "t.txt": lambda p: atomic.write_text(p, "text"),
        "t.bin": lambda p: atomic.write_bytes(p, b"bytes"),
        "t.json": lambda p: atomic.write_json(p, {"a": 1}),
        "t.png": lambda p: atomic.save_figure(Figure(), p),
        "t.npz": lambda p: _savez(p),
    }
    for name, write in cases.items():
        target = tmp_path / "real" / name
        link = tmp_path / name
        link.symlink_to(target)  # dangling: the target is created
        write(link)
        assert link.is_symlink() and target.is_file() and target.stat().st_size > 0, name
    assert json.loads((tmp_path / "real" / "t.json").read_text()) == {"a": 1}


def _savez(path):
    with atomic.atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, x=np.arange(3))


def test_symlink_loop_is_refused(ckpt, wav, tmp_path, capsys):
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    assert main(["tag", ckpt, wav, "-o", str(loop), "--workers", "0"]) == 2
    _one_error_line(capsys, "loop.json", "symlink loop")
    assert loop.is_symlink()
    with pytest.raises(ValueError, match="symlink loop"):
        atomic.write_text(loop, "x")


# -- 1: devices are written through, never renamed over ------------------------------------

@root_only
@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_device_output_is_written_through_not_replaced(ckpt, wav, tmp_path, fmt):
    null = _device(tmp_path / "null", NULL)
    assert main(["tag", ckpt, wav, "--format", fmt, "-o", null, "--workers", "0"]) == 0
    assert _is_chr(null) and os.stat(null).st_rdev == NULL
    assert sorted(os.listdir(tmp_path)) == ["null"]  # no lock file or temporary beside it


@root_only
def test_device_outputs_of_other_commands(ckpt, wav, tmp_path):
    null = _device(tmp_path / "null", NULL)
    link = tmp_path / "out.npz"
    link.symlink_to(null)  # a link to a device is the device
    assert main(["embed", ckpt, wav, "--out", str(link), "--workers", "0"]) == 0
    assert main(["export", ckpt, "--onnx", null]) == 0
    atomic.write_json(null, {"a": 1})
    assert _is_chr(null) and link.is_symlink()
    assert sorted(os.listdir(tmp_path)) == ["null", "out.npz"]


@root_only
def test_full_device_is_one_line_exit_2(ckpt, wav, tmp_path, capsys):
    full = _device(tmp_path / "full", FULL)
    for fmt in ("jsonl", "json", "csv"):
        assert main(["tag", ckpt, wav, "--format", fmt, "-o", full, "--workers", "0", "--threshold", "0.5"]) == 2
        _one_error_line(capsys, "full: cannot write: No space left on device")
    assert _is_chr(full)


def test_fifo_is_written_through_when_read_and_refused_when_not(ckpt, wav, tmp_path, capsys):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    # Nobody reads: one line, no hang, the FIFO stays.
    assert main(["tag", ckpt, wav, "--format", "json", "-o", str(fifo), "--workers", "0", "--threshold", "0.5"]) == 2
    _one_error_line(capsys, "no process is reading this pipe")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo).read()))
    reader.start()
    try:
        assert main(["tag", ckpt, wav, "--format", "jsonl", "-o", str(fifo), "--workers", "0"]) == 0
    finally:
        reader.join(30)
    assert json.loads(got[0].splitlines()[0])["path"].endswith("a.wav")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_socket_output_is_refused(ckpt, wav, tmp_path, capsys):
    path = tmp_path / "s.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    try:
        for fmt in ("json", "jsonl"):
            assert main(["tag", ckpt, wav, "--format", fmt, "-o", str(path), "--workers", "0"]) == 2
            _one_error_line(capsys, "s.sock", "is a socket")
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
    finally:
        s.close()


# -- 2: one lock per real file -------------------------------------------------------------

def _hold(path):
    code = ("import sys, time\nfrom samplecnn.locks import exclusive\n"
            "with exclusive(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("alias", ["symlink", "hardlink", "symlinked_folder"])
def test_aliases_of_an_output_share_its_lock(ckpt, wav, tmp_path, capsys, alias):
    out = tmp_path / "real" / "o.jsonl"
    out.parent.mkdir()
    out.write_text("the first writer's\n")
    if alias == "symlink":
        other = tmp_path / "l.jsonl"
        other.symlink_to(out)
    elif alias == "hardlink":
        other = tmp_path / "h.jsonl"
        os.link(out, other)
    else:
        (tmp_path / "via").symlink_to(out.parent)
        other = tmp_path / "via" / "o.jsonl"
    proc = _hold(out)
    try:
        assert main(["tag", ckpt, wav, "--format", "jsonl", "-o", str(other), "--workers", "0"]) == 2
        with pytest.raises(locks.OutputBusy):
            with locks.exclusive(other):
                pass
    finally:
        proc.kill()
        proc.wait()
    _one_error_line(capsys, "in use by another samplecnn process")
    assert out.read_text() == "the first writer's\n"  # not truncated by the second run


def test_locks_never_land_beside_a_device_or_in_dev(tmp_path):
    assert locks.lock_path("/dev/null") is None
    with locks.exclusive("/dev/null"):
        pass
    link = tmp_path / "o.json"
    link.symlink_to(tmp_path / "real.json")
    assert locks.lock_path(link) == tmp_path / ".real.json.lock"


# -- 8: a lock that cannot be made says so -------------------------------------------------

def test_lock_file_that_cannot_be_created_says_why(ckpt, wav, tmp_path, capsys):
    with pytest.raises(ValueError) as err:
        with locks.exclusive("/proc/self/out.json"):
            pass
    assert "cannot create the lock file" in str(err.value) and "in use" not in str(err.value)
    assert not isinstance(err.value, locks.OutputBusy)
    assert main(["tag", ckpt, wav, "-o", "/proc/self/out.json", "--workers", "0"]) == 2
    line = _one_error_line(capsys)
    assert "in use" not in line and ("cannot" in line or "not writable" in line)

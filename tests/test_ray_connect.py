"""Issue 19.6: `--ray-address` failures are one line, in bounded time, naming the address
and the likely cause; tested against a real `ray start --head` on loopback (which turns
token authentication on in this Ray). The head runs in its own session with a private
temp dir and HOME (its token), and its whole process group is killed at teardown: `ray
stop` would also stop every other Ray instance on the machine (another test's)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("ray")
pytest.importorskip("ray.data")

pytestmark = pytest.mark.slow  # a real Ray head: about a minute on a 2-core machine

RAY = Path(sys.executable).with_name("ray")
SRC = Path(__file__).resolve().parents[1] / "src"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]), **extra)
    return env


@pytest.fixture(scope="module")
def head():
    """A Ray head on 127.0.0.1 started as a user would (`ray start --head`): (address, HOME)."""
    if not RAY.exists():
        pytest.skip("the `ray` command is not installed beside this Python")
    home = Path(tempfile.mkdtemp(prefix="rh"))  # short: Ray's socket paths live under it
    port = _free_port()
    # A token under HOME, as a user who ran `ray get-auth-token --generate` (or an earlier
    # Ray) has: `ray start --head` then turns token authentication on.
    subprocess.run([str(RAY), "get-auth-token", "--generate"], env=_env(home), capture_output=True,
                   timeout=120, check=True)
    assert (home / ".ray" / "auth_token").is_file()
    proc = subprocess.Popen(
        [str(RAY), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
         "--num-cpus=1", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={home / 't'}"],
        env=_env(home), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.skip("`ray start --head` did not come up on this machine")
                time.sleep(0.5)
        yield f"127.0.0.1:{port}", home
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    from samplecnn.checkpoint import save_checkpoint
    from samplecnn.models import create_model

    d = tmp_path_factory.mktemp("job")
    ckpt = save_checkpoint(d / "m.ckpt", create_model("samplecnn_small", width=0.125, tags=["a", "b"], seed=1))
    sf.write(d / "a.wav", np.zeros(8000, np.float32), 16000)
    return d, str(ckpt), str(d / "a.wav")


def _tag(job, address, home, timeout_s=None, **env):
    """`samplecnn tag --engine ray --ray-address ADDRESS` in a fresh process (Ray's
    connection state is per process); `timeout_s` lowers the connect bound."""
    d, ckpt, wav = job
    code = ("import sys\nimport samplecnn.tagging.ray_connect as rc\n"
            + (f"rc.CONNECT_TIMEOUT_S = {timeout_s}\n" if timeout_s else "")
            + "from samplecnn.cli import main\nsys.exit(main(sys.argv[1:]))\n")
    argv = ["tag", ckpt, wav, "--engine", "ray", "--ray-address", address, "-o", str(d / "out"), "--threshold", "0.5"]
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                         env=_env(home, **env), timeout=240)
    return out, time.monotonic() - t0


def _one_line(out, *needles):
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("samplecnn tag: error: --ray-address"), lines
    for n in needles:
        assert n in lines[0], lines
    return lines[0]


def test_token_auth_cluster_is_one_line_naming_the_fix(head, job):
    address, home = head
    out, took = _tag(job, address, home)
    _one_line(out, address, "RAY_AUTH_MODE=token", "token")
    assert took < 90


def test_token_auth_cluster_joins_with_ray_auth_mode_token(head, job):
    """The documented fix: the token `ray start` wrote under HOME, RAY_AUTH_MODE=token."""
    address, home = head
    code = ("import ray\nfrom samplecnn.tagging.ray_connect import connect\n"
            f"assert connect(ray, {address!r})\nprint(int(ray.cluster_resources()['CPU']))\n"
            "ray.shutdown()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(home, RAY_AUTH_MODE="token"), timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr[-2000:]


def test_nothing_listening_is_one_line_at_once(tmp_path):
    import ray

    from samplecnn.tagging.ray_connect import connect

    address = f"127.0.0.1:{_free_port()}"
    for given in (address, "ray://" + address):  # refused by the TCP check, before ray.init
        t0 = time.monotonic()
        with pytest.raises(ValueError) as err:
            connect(ray, given)
        assert time.monotonic() - t0 < 10 and not ray.is_initialized()
        line = str(err.value)
        assert line.startswith(f"--ray-address {given}:") and "\n" not in line
        assert "Connection refused" in line and "ray start --head" in line


def test_a_port_that_is_not_ray_is_one_line_within_the_bound(tmp_path):
    """A listener that never answers hangs ray.init for minutes; the bound (lowered to 3 s
    here) gives one line, and Ray's C++ warnings stay off the terminal."""
    code = ("import ray, sys\nimport samplecnn.tagging.ray_connect as rc\nrc.CONNECT_TIMEOUT_S = 3\n"
            "try:\n    rc.connect(ray, sys.argv[1])\nexcept ValueError as e:\n"
            "    print(e, file=sys.stderr)\n    sys.exit(2)\n")
    with socket.socket() as s:  # accepts connections, never answers
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        address = f"127.0.0.1:{s.getsockname()[1]}"
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True,
                             env=_env(tmp_path), timeout=120)
    assert out.returncode == 2 and time.monotonic() - t0 < 60
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"--ray-address {address}:"), lines
    assert "no Ray cluster answered within 3 s" in lines[0]

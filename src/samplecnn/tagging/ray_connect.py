"""Joining a Ray cluster for the cluster engine: one line, in bounded time, on failure.

`ray.init(address=...)` fails slowly and obscurely on a bad address: nothing listening
retries for minutes in silence (its C++ core's warnings are muted, see `connect`), a
port that is not Ray's hangs, and a cluster with token authentication (which
`ray start --head` turns on in recent Ray releases) answers with a generic
ConnectionError after about 20 s. Here:

- an explicit `HOST:PORT` or `ray://HOST:PORT` is first checked with a plain TCP connect
  (a few seconds at most): nothing listening is one line at once;
- `ray.init` runs in a helper thread, waited for `CONNECT_TIMEOUT_S` at most; past it,
  one line says that nothing answered as a Ray cluster (the thread is left behind: Ray
  offers no way to cancel a connect, and the command exits);
- a failure names the address and the likely cause: token authentication when this
  driver does not use it (`RAY_AUTH_MODE=token`, see docs/cluster.md), a wrong port, no
  local cluster for `auto`.
"""
from __future__ import annotations

import logging
import os
import socket
import threading

__all__ = ["connect", "CONNECT_TIMEOUT_S", "PROBE_TIMEOUT_S"]

CONNECT_TIMEOUT_S = 60.0  # the whole join (tests lower it)
PROBE_TIMEOUT_S = 5.0     # the TCP check of an explicit address

_AUTH_HINT = ("if the cluster was started with `ray start --head` by a recent Ray, token "
              "authentication is on: run with RAY_AUTH_MODE=token (the token is read from "
              "$RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, which `ray start` "
              "writes on the head), or start the cluster with RAY_AUTH_MODE=disabled")


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of `HOST:PORT`, `[V6]:PORT` or `ray://HOST:PORT`; None for `auto`,
    `local` or anything else Ray resolves itself."""
    text = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


def _probe(shown: str, host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            pass
    except socket.timeout:
        raise ValueError(f"{shown}: no answer from {host}:{port} within {PROBE_TIMEOUT_S:g} s "
                         "(a firewall, or a host that is down)") from None
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ValueError(f"{shown}: cannot reach {host}:{port} ({reason}): is the cluster "
                         "running (`ray start --head`) and is this its port (6379 by default; "
                         "ray://HOST:10001 for Ray Client)?") from None


def _cause(address: str, err: BaseException) -> str:
    text = " ".join(str(err).split())
    if "auth" in text.lower() or type(err).__name__ == "AuthenticationError":
        return f"the cluster refused this driver's authentication; {_AUTH_HINT}"
    if address == "auto":
        return f"{text or type(err).__name__}; start one with `ray start --head`, or give --ray-address"
    if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
        return f"{text or type(err).__name__}; likely cause: {_AUTH_HINT}"
    return f"{text or type(err).__name__}; RAY_AUTH_MODE=token is set: check the token"


class _MutedStderr:
    """fd 2 pointed at /dev/null while Ray starts (its C++ core writes there directly)."""

    def __enter__(self):
        import sys

        sys.stderr.flush()
        self.saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        return self

    def restore(self) -> None:
        os.dup2(self.saved, 2)
        os.close(self.saved)

    def leave_muted(self) -> None:
        """For a connect still running when we give up: its C++ threads keep writing
        warnings to fd 2 until the process exits, so fd 2 stays muted and Python's
        `sys.stderr` (our one error line) moves to the real stderr instead."""
        import sys

        sys.stderr.flush()
        sys.stderr = os.fdopen(self.saved, "w", buffering=1, encoding=sys.stderr.encoding,
                               errors="backslashreplace")

    def __exit__(self, *exc) -> None:
        return None


def connect(ray, address: str | None, option: str = "--ray-address") -> bool:
    """Join `address` (else `$RAY_ADDRESS`), or the Ray instance this process already
    started, or start a local one. Returns True when this call started it (the caller
    shuts it down). Raises ValueError (one line naming the address and the likely cause)
    within about `CONNECT_TIMEOUT_S`."""
    if ray.is_initialized():
        return False
    if not address and os.environ.get("RAY_ADDRESS"):
        address, option = os.environ["RAY_ADDRESS"], "$RAY_ADDRESS"
    shown = f"{option} {address}"
    hp = _host_port(address) if address else None
    if hp is not None:
        _probe(shown, *hp)
    # Ray's C++ core logs to the driver's stderr (actor restarts, ...); its failures reach
    # us as exceptions, so only fatal lines are kept. It announces that level once, while
    # it starts: that start runs with stderr pointed at /dev/null.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    outcome: dict = {}

    def join() -> None:
        try:
            ray.init(address=address or None, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR, configure_logging=True)
            outcome["ok"] = True
        except BaseException as err:  # reported by the caller's thread
            outcome["error"] = err

    with _MutedStderr() as muted:
        worker = threading.Thread(target=join, name="samplecnn-ray-connect", daemon=True)
        worker.start()
        worker.join(CONNECT_TIMEOUT_S)
        if worker.is_alive():
            muted.leave_muted()
        else:
            muted.restore()
    if worker.is_alive():
        raise ValueError(f"{shown}: no Ray cluster answered within {CONNECT_TIMEOUT_S:g} s: "
                         "something listens there, but not a Ray head's GCS port (6379 by "
                         "default; ray://HOST:10001 for Ray Client)")
    if "error" in outcome:
        if not address:  # a local instance of our own: not an address problem
            raise ValueError(f"cannot start a local Ray instance: "
                             f"{' '.join(str(outcome['error']).split())}") from None
        raise ValueError(f"{shown}: cannot join the Ray cluster: {_cause(address, outcome['error'])}")
    return True

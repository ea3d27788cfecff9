"""`samplecnn serve`: the HTTP tagging service (FastAPI + uvicorn) and its web page."""
from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys

from ._common import add_scoring_options, check_device, finite_float
from .pretrained import add_pretrained_option, take_pretrained

KEY_ENV = "SAMPLECNN_API_KEY"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="serve a model over HTTP (tags, taggrams, embeddings) with a web page",
        description="Serve a model over HTTP: POST audio to /v1/tag, /v1/taggram or /v1/embed "
                    "(multipart field 'file' or a raw audio/* body); the web page is at /, the "
                    "API docs at /docs. Binds 127.0.0.1 unless told otherwise; a non-loopback "
                    "--host needs an API key (or --insecure-no-key). See docs/serving.md.",
    )
    p.add_argument("model", nargs="?", default=None,
                   help="checkpoint (.ckpt/.pt) or ONNX file from `samplecnn export`")
    add_pretrained_option(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--api-key", default=None, metavar="KEY",
                   help=f"require 'Authorization: Bearer KEY' on /v1/* (default: ${KEY_ENV} if set)")
    p.add_argument("--insecure-no-key", action="store_true",
                   help="allow a non-loopback --host without an API key")
    p.add_argument("--max-upload-mb", type=finite_float(0, 1 << 20), default=100, metavar="MB",
                   help="largest upload accepted (default 100; larger ones get 413)")
    p.add_argument("--decode-workers", "--workers", dest="decode_workers", type=int, default=1, metavar="N",
                   help="decoding processes (default 1)")
    p.add_argument("--max-batch", type=int, default=64, metavar="N",
                   help="most windows per model call, across requests (default 64)")
    p.add_argument("--max-wait-ms", type=finite_float(0, 60_000, low_inclusive=True), default=5, metavar="MS",
                   help="how long a window waits for others to share its model call (default 5)")
    p.add_argument("--queue-size", type=int, default=64, metavar="N",
                   help="requests in progress at once; more get 503 + Retry-After (default 64)")
    p.add_argument("--timeout", type=finite_float(0, 86_400), default=60, metavar="SECONDS",
                   help="decoding + scoring time per request; past it 504 (default 60)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="allow browser calls from ORIGIN (repeatable; default none)")
    add_scoring_options(p, ("backend",))
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--no-access-log", action="store_true", help="no line per request on stderr")
    p.set_defaults(func=run)


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    api_key = args.api_key if args.api_key is not None else os.environ.get(KEY_ENV) or None
    if not _is_loopback(args.host) and not api_key and not args.insecure_no_key:
        raise ValueError(f"--host {args.host} is reachable from other machines: set --api-key KEY "
                         f"(or ${KEY_ENV}), or pass --insecure-no-key to serve without one")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be 0-65535, got {args.port}")
    check_device(args.device)  # one line, before weights are fetched or loaded
    take_pretrained(args, "model")  # --pretrained NAME: the cached checkpoint, made on first use
    sock = _listen_socket(args.host, args.port)  # a port in use fails now, not after loading
    try:
        return _serve(args, sock, api_key)
    finally:
        sock.close()


def _serve(args: argparse.Namespace, sock: socket.socket, api_key: str | None) -> int:
    import uvicorn

    from samplecnn.service import create_app
    from samplecnn.tagging import Tagger

    name = args.pretrained or os.path.splitext(os.path.basename(args.model))[0]
    tagger = Tagger.load(args.model, backend=args.backend, device=args.device, batch_size=args.max_batch)
    app = create_app(tagger, api_key=api_key, max_upload_mb=args.max_upload_mb,
                     max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                     queue_size=args.queue_size, timeout_s=args.timeout,
                     decode_workers=args.decode_workers, cors_origins=tuple(args.cors_origin),
                     name=name)
    from samplecnn.service.server import JsonFailures, http_protocol, one_line_logging

    one_line_logging(sys.stderr, access=not args.no_access_log)
    # Every answer JSON (uvicorn's own 400 and 500 too), every stderr line one line.
    config = uvicorn.Config(JsonFailures(app), host=args.host, port=args.port, log_config=None,
                            log_level="warning", access_log=False, http=http_protocol(),
                            timeout_graceful_shutdown=args.timeout + 5, server_header=False)
    server = uvicorn.Server(config)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    port = sock.getsockname()[1]
    print(f"samplecnn serve: {name} ({len(tagger.tags)} tags, {tagger.sample_rate} Hz) on "
          f"http://{shown}:{port}/ ({'API key required' if api_key else 'no API key'}); "
          "Ctrl-C stops after the requests in flight", file=sys.stderr)
    server.run(sockets=[sock])
    return 0


def _listen_socket(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ValueError(f"--host {host}: {err.strerror or err}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as err:
        sock.close()
        raise ValueError(f"cannot listen on {host} port {port}: {err.strerror or err}") from None
    sock.set_inheritable(True)
    return sock

"""The HEAR 2021 embedding API (Turian et al. 2022, hearbenchmark.com) over any samplecnn
model: a checkpoint, an ONNX export or a pretrained name.

    import samplecnn.hear as hear
    model = hear.load_model("run/checkpoints/best.ckpt")     # or "panns-leenet24", "m.onnx"
    scene = hear.get_scene_embeddings(audio, model)           # (n_sounds, scene_embedding_size)
    emb, ts = hear.get_timestamp_embeddings(audio, model)     # (n_sounds, n_frames, D), (n_sounds, n_frames) ms

`audio` is a float32 tensor `(n_sounds, n_samples)` in [-1, 1] at `model.sample_rate`.

- **Scene embeddings**: the `features` layer (the penultimate layer; PANNs' fc1 for a
  LeeNet), mean-pooled over time in each window of the model's window grid (windows of
  `input_samples`, unpadded for a whole-clip model: a LeeNet sees a clip up to 10 s
  whole), then averaged over windows, as `samplecnn embed` does.
- **Timestamp embeddings**: the frames of the deepest layer whose frame hop is at most
  50 ms (HEAR's suggestion), one embedding per frame, timestamps at the frame centres.
  For the 3^n models and LeeNet that is `block5` (hop 3^6 = 729 samples: 33 ms at
  22,050 Hz, 46 ms at 16 kHz, 23 ms at 32 kHz). Deeper layers have a hop of 3 x that,
  over 50 ms at every HEAR rate; shallower ones are finer but see less of the signal.
  One forward pass per window gives all of its frames: the clip is cut into chunks of
  a whole number of frames, so frames are evenly spaced across chunk boundaries.
- **ONNX exports** (fp32 or int8) output the `features` layer's pooled embedding beside
  the tag scores: scenes as above, and timestamps as the `features` embedding of a window
  of `input_samples` centred on each timestamp, every 50 ms (zero-padded at the clip's
  edges). An older export without these outputs gives the tag logits instead.

`load_model("")` (HEAR's call without a file) raises a ValueError: this toolkit has no
single default model; pass a file or a name (`samplecnn pretrained list`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from samplecnn.inference.batching import score_messages
from samplecnn.windows import WindowGrid, chunks

__all__ = ["HEAR_RATES", "MAX_HOP_S", "HearModel", "load_model", "get_scene_embeddings",
           "get_timestamp_embeddings", "layer_hop", "timestamp_layer"]

HEAR_RATES = (16000, 22050, 32000, 44100, 48000)
MAX_HOP_S = 0.05  # HEAR's suggested largest timestamp hop
_BATCH = 16


def layer_hop(config, layer: str) -> int:
    """Samples between consecutive frames of `layer` (from the model config)."""
    if layer == "frontend":
        return config.first_filter
    i = int(layer[len("block"):])
    pooled = i if (config.arch != "leenet" or config.last_pool or i < config.n) else i - 1
    return config.first_filter * config.m ** pooled


def frame_offset(config, hop: int) -> float:
    """Sample at the centre of frame 0 of a layer with frame hop `hop`: LeeNet pads each
    3-wide conv and pool by one, so its frame j is centred at j * hop; the m^n stack does
    not pad, so its frame j covers [j * hop, (j + 1) * hop)."""
    return 0.0 if config.arch == "leenet" else hop / 2.0


def timestamp_layer(config, layer_names: list[str]) -> tuple[str, int]:
    """The deepest layer whose frame hop is at most `MAX_HOP_S`, and that hop in samples."""
    best = None
    for name in layer_names:
        if name == "features":
            continue
        hop = layer_hop(config, name)
        if hop <= MAX_HOP_S * config.sample_rate:
            best = (name, hop)
    if best is None:
        raise ValueError(f"no layer of this model has frames {MAX_HOP_S * 1000:g} ms apart or closer "
                         f"(its front end's hop is {config.first_filter} samples at {config.sample_rate} Hz)")
    return best


class HearModel(torch.nn.Module):
    """A samplecnn model under HEAR's names: `sample_rate`, `scene_embedding_size` and
    `timestamp_embedding_size` (ints), plus the layer and hop the embeddings use."""

    def __init__(self, source: str, net: torch.nn.Module | None = None, runner=None):
        super().__init__()
        self.source = source
        self.runner = runner
        if net is not None:
            cfg = net.config
            self.net = net.eval()
            self.config = cfg
            self.window = int(cfg.input_samples)
            self.whole_clip = bool(cfg.whole_clip)
            self.scene_layer = "features"
            self.scene_embedding_size = int(net.layer_width("features"))
            self.timestamp_layer, self.hop_samples = timestamp_layer(cfg, list(net.layer_names))
            self.timestamp_embedding_size = int(net.layer_width(self.timestamp_layer))
            self.sample_rate = int(cfg.sample_rate)
            self._fused = net.fuse_for_inference()
        else:  # an ONNX export: its `features` outputs, or an older one's tag logits
            self.net = None
            self.window = int(runner.input_samples)
            self.whole_clip = bool(runner.whole_clip)
            has_features = "features" in runner.layer_names
            self.scene_layer = self.timestamp_layer = "features" if has_features else "logits"
            size = runner.layer_width("features") if has_features else len(runner.tags)
            self.scene_embedding_size = self.timestamp_embedding_size = size
            self.sample_rate = int(runner.sample_rate)
            self.hop_samples = int(MAX_HOP_S * self.sample_rate)
        if self.sample_rate not in HEAR_RATES:
            raise ValueError(f"{source}: the model runs at {self.sample_rate} Hz; HEAR allows "
                             f"{', '.join(map(str, HEAR_RATES))}")

    # -- model calls on NumPy windows (B, L) -----------------------------------------------
    def _pooled(self, x: np.ndarray) -> np.ndarray:
        if self.net is None:
            if self.scene_layer == "features":
                return self.runner.embed(x, "features", "mean")
            return self.runner.logits(x)
        with torch.inference_mode():
            return self._fused.embed(torch.from_numpy(x), self.scene_layer, "mean").numpy()

    def _frames(self, x: np.ndarray) -> np.ndarray:
        """`(B, L)` -> `(B, T * C)`: the timestamp layer's frames, time-major."""
        with torch.inference_mode():
            h = self._fused.forward_intermediates(torch.from_numpy(x), [self.timestamp_layer])
            return h[self.timestamp_layer].transpose(1, 2).reshape(len(x), -1).numpy()


def load_model(model_file_path: str = "") -> HearModel:
    """A HEAR model from a samplecnn checkpoint, an ONNX export (`.onnx`) or a pretrained
    name (`samplecnn pretrained list`, downloaded on first use). ValueError for an empty
    path (there is no default model), a missing file, or a rate HEAR does not allow.
    The model runs on the CPU (the fused inference twin, exact fp32)."""
    from samplecnn.checkpoint import load_model as load_checkpoint

    path = os.fspath(model_file_path) if model_file_path is not None else ""
    if not path:
        raise ValueError("samplecnn.hear.load_model needs a model: a samplecnn checkpoint, an ONNX "
                         "export or a pretrained name (see `samplecnn pretrained list`)")
    if path.lower().endswith(".onnx"):
        from samplecnn.inference.runners import OrtRunner

        return HearModel(path, runner=OrtRunner.from_file(path))
    if not Path(path).is_file():
        from samplecnn.pretrained import get_pretrained, resolve

        try:
            get_pretrained(path)
        except ValueError:
            raise ValueError(f"{path}: no such file, and not a pretrained name "
                             "(see `samplecnn pretrained list`)") from None
        path = str(resolve(path))
    return HearModel(os.fspath(model_file_path), net=load_checkpoint(path, map_location="cpu"))


def _check_audio(audio, model: HearModel) -> np.ndarray:
    x = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ValueError(f"audio must be (n_sounds, n_samples) with n_samples >= 1, got {x.shape}")
    return np.ascontiguousarray(x, np.float32)


def _scored(pieces, compute) -> dict:
    """`pieces`: key -> list of (start, window); every key's outputs through the one
    batching loop, windows of equal length batched together."""
    def messages():
        for key, pairs in pieces.items():
            for starts, wins in chunks(pairs, _BATCH):
                yield ("windows", key, starts, wins)
            yield ("done", key, {})

    return {r.key: r.outputs for r in score_messages(messages(), compute, _BATCH)}


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """`(n_sounds, n_samples)` float32 at `model.sample_rate` -> float32
    `(n_sounds, scene_embedding_size)`: the windows' pooled embeddings, averaged."""
    from samplecnn.tagging.sources import window_messages

    x = _check_audio(audio, model)
    grid = WindowGrid(model.window, model.window, "pad", whole_clip=model.whole_clip)
    rate = model.sample_rate
    messages = (m for i in range(len(x))
                for m in window_messages(i, x[i], rate, grid, source_sample_rate=rate, chunk=_BATCH,
                                         errors="raise"))
    out = {r.key: r.outputs for r in score_messages(messages, model._pooled, _BATCH)}
    return torch.from_numpy(np.stack([out[i].mean(axis=0) for i in range(len(x))]).astype(np.float32))


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """`(n_sounds, n_samples)` -> embeddings float32 `(n_sounds, n_frames,
    timestamp_embedding_size)` and timestamps float32 `(n_sounds, n_frames)` in ms at the
    frame centres, evenly spaced, none past the clip's end."""
    x = _check_audio(audio, model)
    n = x.shape[1]
    if model.net is None:
        return _timestamp_windows(x, model)
    hop = model.hop_samples
    # Chunks of a whole number of frames (the m^n window already is one): frame j of the
    # chunk at s is centred at s + offset + j * hop, so frames stay evenly spaced.
    chunk = max(hop, (model.window // hop) * hop)
    grid = WindowGrid(chunk, chunk, "pad", whole_clip=model.whole_clip)
    starts = grid.starts(n)
    # One source per (sound, chunk): a chunk's frame count depends on its length.
    pieces = {(i, k): [(starts[k], w)] for i in range(len(x))
              for k, w in enumerate(grid.cut(x[i], starts))}
    out = _scored(pieces, model._frames)
    c = model.timestamp_embedding_size
    offset = frame_offset(model.config, hop)
    times, kept = [], []
    for k, s in enumerate(starts):
        centres = s + offset + hop * np.arange(out[(0, k)].shape[1] // c)
        keep = centres < n  # frames of a padded tail past the clip's end are dropped
        times.append(centres[keep])
        kept.append(keep)
    emb = np.stack([np.concatenate([out[(i, k)][0].reshape(-1, c)[keep] for k, keep in enumerate(kept)])
                    for i in range(len(x))])
    ts = (np.concatenate(times) * 1000.0 / model.sample_rate).astype(np.float32)
    return torch.from_numpy(emb.astype(np.float32)), torch.from_numpy(np.tile(ts, (len(x), 1)))


def _timestamp_windows(x: np.ndarray, model: HearModel) -> tuple[torch.Tensor, torch.Tensor]:
    """ONNX exports: the scene embedding (`features`, or an older export's logits) of a
    window centred on each timestamp (every `hop_samples`), zero-padded at the clip's edges (a whole-clip model's windows cut there instead)."""
    n, w, hop = x.shape[1], model.window, model.hop_samples
    centres = np.arange(hop // 2, n, hop, dtype=np.int64)
    half = w // 2
    pieces = {}
    for i in range(len(x)):
        padded = np.concatenate([np.zeros(half, np.float32), x[i], np.zeros(w, np.float32)])
        pairs = []
        for c in centres:
            if model.whole_clip:
                lo, hi = max(0, c - half), min(n, c - half + w)
                pairs.append((int(c), np.array(x[i, lo:hi], np.float32)))
            else:
                pairs.append((int(c), padded[c: c + w]))
        pieces[i] = pairs
    out = _scored(pieces, model._pooled)
    emb = np.stack([out[i] for i in range(len(x))]).astype(np.float32)
    ts = (centres * 1000.0 / model.sample_rate).astype(np.float32)
    return torch.from_numpy(emb), torch.from_numpy(np.tile(ts, (len(x), 1)))

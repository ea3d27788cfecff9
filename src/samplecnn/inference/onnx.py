"""The one ONNX exporter and the one ONNX Runtime session helper.

Two graphs are exported from a `SampleCNN`, both taking raw audio windows at the model's
rate, `audio` float32 `(batch, input_samples)` (dynamic batch; a whole-clip model's graph,
LeeNet's, has a dynamic time axis too, `(batch, samples)`):

- ``"scores"``: outputs `logits` and `scores` (sigmoid), both `(batch, n_tags)`, and the
  clip embedding of the `features` layer, `features.mean` and `features.max`
  `(batch, features)`: what `samplecnn export` writes and what the ONNX Runtime runner
  scores and embeds `features` with. The pooled features are on the path to the logits
  (`forward_head` max-pools them): the extra outputs are two reductions over
  `(batch, features, 1)`, no measurable cost to `logits` (BENCHMARKS.md); files exported before these outputs existed have `logits` and `scores` only;
- ``"embeddings"``: outputs `<layer>.mean` and `<layer>.max` `(batch, C)` for every layer
  name: what the runner's `embed` uses for the other layers of a checkpoint's model.

Everything a user needs to feed a graph right travels in its metadata (`metadata_props`):
`samplecnn.tags` (JSON list, output order), `samplecnn.sample_rate`,
`samplecnn.input_samples`, `samplecnn.whole_clip` ("1": any length is taken, scored on
unpadded windows), `samplecnn.model_config` (JSON), `samplecnn.format` (1),
`samplecnn.graph` ("scores" or "embeddings") and `samplecnn.input` (a one-line
description); a model with fitted decision thresholds adds `samplecnn.thresholds` (JSON
list of floats in tag order: decide a tag when its score is at or above its threshold)
and `samplecnn.thresholds_fit` (JSON: objective, split, store fingerprint, unfitted tags
and their fallback), so an exported or quantized file decides like its checkpoint. Exports of a checkpoint's model are cached under `$SAMPLECNN_HOME/onnx`,
keyed by the weights, config and versions, so a Tagger does not re-export on every start.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np

__all__ = ["ONNX_OPSET", "GRAPHS", "SCORES_LAYERS", "export_graph", "pooled_names", "cached_graph", "read_metadata", "session",
           "model_digest"]

ONNX_OPSET = 17
META_FORMAT = 1
GRAPHS = ("scores", "embeddings")
# The layers whose pooled embeddings the "scores" graph outputs beside the logits.
SCORES_LAYERS = ("features",)
# Bumped when a graph's outputs change, so the export cache does not serve an old layout.
GRAPH_LAYOUT = 2


def _pooled(h):
    """`(B, C, T)` -> the time-mean and time-max `(B, C)`, in `pooled_names` order."""
    return [h.mean(dim=-1), h.amax(dim=-1)]


def _wrapped(model, graph: str):
    import torch

    class _Scores(torch.nn.Module):
        """`(B, input_samples)` -> (logits, scores, features.mean, features.max)."""

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, audio):
            # The head's output (the `features` layer) caught on the model's own call, not
            # by calling forward_features: the traced node names stay `/m/...`, as in
            # earlier exports (`quantize.FP32_PARTS` selects nodes by them).
            caught = []
            hook = self.m.head.register_forward_hook(lambda mod, args, out: caught.append(out))
            try:
                logits = self.m(audio.unsqueeze(1))
            finally:
                hook.remove()
            return (logits, torch.sigmoid(logits), *_pooled(self.m._as_output(caught[0])))

    class _PooledLayers(torch.nn.Module):
        """`(B, input_samples)` -> every layer's time-mean and time-max `(B, C)`."""

        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, audio):
            outs = self.m.forward_intermediates(audio.unsqueeze(1), self.m.layer_names)
            return tuple(t for name in self.m.layer_names for t in _pooled(outs[name]))

    return (_Scores if graph == "scores" else _PooledLayers)(model).eval()


def pooled_names(layers) -> list[str]:
    """The output names of `layers`' pooled embeddings: `<layer>.mean`, `<layer>.max`."""
    return [f"{n}.{p}" for n in layers for p in ("mean", "max")]


def output_names(model, graph: str) -> list[str]:
    if graph == "scores":
        return ["logits", "scores", *pooled_names(SCORES_LAYERS)]
    return pooled_names(model.layer_names)


def embedded_layers(outputs) -> list[str]:
    """The layers whose `<layer>.mean` and `<layer>.max` are among `outputs` (names)."""
    outputs = list(outputs)
    have = set(outputs)
    layers = dict.fromkeys(o.rsplit(".", 1)[0] for o in outputs if "." in o)
    return [n for n in layers if set(pooled_names([n])) <= have]


def export_graph(model, graph: str = "scores", opset: int = ONNX_OPSET) -> bytes:
    """The serialized ONNX model of `model` (a `SampleCNN`, moved to the CPU in eval mode)
    for `graph`, with samplecnn's metadata."""
    import onnx
    import torch

    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {', '.join(GRAPHS)}, got {graph!r}")
    cfg = model.config
    if cfg.tags is None:
        raise ValueError("refusing to export a model without tag names (config.tags is None)")
    model = model.eval().float().cpu()
    names = output_names(model, graph)
    audio_axes = {0: "batch", 1: "samples"} if cfg.whole_clip else {0: "batch"}
    # A whole-clip graph is length-generic: traced on a short input (10 s of LeeNet is slow).
    trace_samples = min(cfg.input_samples, 3 ** 9) if cfg.whole_clip else cfg.input_samples
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter: the dynamo one needs onnxscript (not a dependency) and
        # gives nothing more for this convolutional graph. Its deprecation notice and the
        # tracer's warnings about the constant input-shape checks are expected.
        warnings.simplefilter("ignore")
        torch.onnx.export(_wrapped(model, graph), (torch.zeros(2, trace_samples),), buf,
                          input_names=["audio"], output_names=names,
                          dynamic_axes={"audio": audio_axes, **{n: {0: "batch"} for n in names}},
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    proto = onnx.load_from_string(buf.getvalue())
    samples = (f"samples: any length, {cfg.input_samples} in training; longer clips in windows "
               "of that length" if cfg.whole_clip else cfg.input_samples)
    meta = {**_threshold_meta(getattr(model, "thresholds", None)),
        "samplecnn.format": str(META_FORMAT),
        "samplecnn.graph": graph,
        "samplecnn.tags": json.dumps(list(cfg.tags), ensure_ascii=False),
        "samplecnn.sample_rate": str(int(cfg.sample_rate)),
        "samplecnn.input_samples": str(int(cfg.input_samples)),
        "samplecnn.whole_clip": "1" if cfg.whole_clip else "0",
        "samplecnn.model_config": json.dumps(cfg.to_dict(), ensure_ascii=False),
        "samplecnn.input": (f"audio: float32 (batch, {samples}) mono waveform at "
                            f"{cfg.sample_rate} Hz, no normalisation; scores = sigmoid(logits)"),
    }
    return finish_graph(proto, meta)


def finish_graph(proto, meta: dict[str, str]) -> bytes:
    """`proto` with exactly `meta` as its metadata, checked and serialized: the last step
    of every graph samplecnn writes (fp32 exports and int8 files alike)."""
    import onnx

    del proto.metadata_props[:]
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.producer_name = "samplecnn"
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _threshold_meta(thresholds) -> dict[str, str]:
    if thresholds is None:
        return {}
    d = thresholds.to_dict()
    values = d.pop("values")
    d.pop("tags")  # the graph's own samplecnn.tags
    return {"samplecnn.thresholds": json.dumps(values),
            "samplecnn.thresholds_fit": json.dumps(d, ensure_ascii=False)}


def _thresholds_from_props(props: dict, tags: list) -> dict | None:
    if "samplecnn.thresholds" not in props:
        return None
    fit = json.loads(props.get("samplecnn.thresholds_fit", "{}"))
    return {**fit, "values": json.loads(props["samplecnn.thresholds"]), "tags": tags}


def model_digest(model) -> str:
    """A hex digest of what an export of `model` depends on: weights, config, versions."""
    import torch

    import samplecnn

    h = hashlib.sha256()
    h.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    h.update(f"torch {torch.__version__} samplecnn {samplecnn.__version__}".encode())
    if getattr(model, "thresholds", None) is not None:  # they are in the graph's metadata
        h.update(json.dumps(model.thresholds.to_dict(), sort_keys=True).encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(np.ascontiguousarray(v.detach().cpu().numpy()).tobytes())
    return h.hexdigest()


_cache_warned = False


def cached_graph(model, graph: str = "scores", opset: int = ONNX_OPSET) -> Path | bytes:
    """The export of `model` for `graph`, from the cache or made now (atomic, locked).

    A cache that cannot be used (`samplecnn.cache.CacheError`) costs speed, not the run:
    one warning per process, and the graph is exported in memory (returned as bytes,
    which `session` takes as well as a path)."""
    global _cache_warned
    from samplecnn.cache import CacheError, cache_dir, cached_file

    key = f"{model_digest(model)[:32]}-{graph}{GRAPH_LAYOUT}-op{opset}.onnx"

    def produce(tmp: Path) -> None:
        tmp.write_bytes(export_graph(model, graph, opset))

    try:
        return cached_file(cache_dir("onnx") / key, produce, what="ONNX export cache entry")
    except CacheError as err:
        if not _cache_warned:
            _cache_warned = True
            print(f"samplecnn: warning: {err}; exporting the ONNX graph in memory instead "
                  "(every run exports again)", file=sys.stderr)
        return export_graph(model, graph, opset)


def read_metadata(source: str | os.PathLike | bytes) -> dict:
    """`tags`, `sample_rate`, `input_samples`, `model_config`, `graph`, `outputs` (names),
    `layer_names` (the layers whose pooled embeddings are outputs: `["features"]` for a
    scores graph of this version, `[]` for an older one), `thresholds` (`Thresholds.to_dict()` form, or None), `precision` ("fp32" or "int8")
    and `quantization` (the int8 recipe, or None) of a samplecnn ONNX graph (a file or
    serialized bytes). ValueError naming the file when it is not ours."""
    import onnx

    label = "ONNX model" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise FileNotFoundError(f"{label}: no such ONNX file")
    try:
        proto = (onnx.load_from_string(source) if isinstance(source, bytes)
                 else onnx.load(str(source), load_external_data=False))
    except Exception as err:
        raise ValueError(f"{label}: not a readable ONNX model ({type(err).__name__})") from None
    props = {p.key: p.value for p in proto.metadata_props}
    if "samplecnn.tags" not in props:
        raise ValueError(f"{label}: not a samplecnn ONNX export (no samplecnn.tags metadata); "
                         "export with `samplecnn export`")
    try:
        tags = json.loads(props["samplecnn.tags"])
        return {
            "tags": tags,
            "sample_rate": int(props["samplecnn.sample_rate"]),
            "input_samples": int(props["samplecnn.input_samples"]),
            "model_config": json.loads(props.get("samplecnn.model_config", "null")),
            "format": int(props.get("samplecnn.format", "1")),
            "graph": props.get("samplecnn.graph", "scores"),
            "whole_clip": props.get("samplecnn.whole_clip", "0") == "1",
            # "int8" for a file of `samplecnn export --int8` (samplecnn.quantize).
            "precision": props.get("samplecnn.precision", "fp32"),
            "quantization": json.loads(props.get("samplecnn.quantization", "null")),
            "outputs": [o.name for o in proto.graph.output],
            "layer_names": embedded_layers(o.name for o in proto.graph.output),
            "thresholds": _thresholds_from_props(props, tags),
        }
    except (KeyError, ValueError) as err:
        raise ValueError(f"{label}: broken samplecnn metadata ({err})") from None


def session(source: str | os.PathLike | bytes, threads: int | None = None, spin: bool = False,
            providers: list[str] | None = None):
    """An ONNX Runtime session with samplecnn's settings: full graph optimisation (fuses
    Conv + BN + ReLU), `threads` intra-op threads (default: torch's count), one inter-op
    thread, quiet logging. `spin=False` lets idle threads sleep, so decoding workers beside
    the model get the cores (costs ~1-3 % of model speed when nothing else runs)."""
    import onnxruntime as ort

    if threads is None:
        import torch

        threads = torch.get_num_threads()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    src = source if isinstance(source, bytes) else str(source)
    return ort.InferenceSession(src, opts, providers=list(providers or ["CPUExecutionProvider"]))

"""int8 graphs: calibration windows, ONNX Runtime's static quantization, the recipe.

An int8 file is the fp32 "scores" graph of the one exporter (`inference.onnx`) passed
through ONNX Runtime's own tools: `quant_pre_process` (folds the exporter's shared-bias
`Identity` nodes, so every bias is an initializer and every Conv + ReLU fuses), then
`quantize_static` in the QDQ format with per-channel int8 weights and activations whose
ranges come from calibration windows. Nothing here quantizes by hand.

    windows = calibration_windows("store/", sample_rate, input_samples, n=256, seed=0)
    int8 = quantize_graph(fp32_bytes, windows, QuantRecipe(method="percentile"))

Calibration windows are the model's input, float32 `(n, input_samples)` at its rate:
from a store's train split (random clip, random start) or from audio files decoded on
the tagging path (`tagging.sources.iter_windows` on the one window grid), drawn with a
seeded generator, so the same source, count and seed give the same file.

The int8 file carries every `samplecnn.*` metadata entry of its fp32 graph (tags, rate,
window, model config, thresholds when present), plus `samplecnn.precision` ("int8") and
`samplecnn.quantization` (JSON: method, windows, activations, fp32 parts and nodes,
calibration source, seed, ONNX Runtime version).

Module level is NumPy and stdlib only: the CLI reads the choices below to build parsers.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["CALIBRATION_METHODS", "ACTIVATION_TYPES", "FP32_PARTS", "QuantRecipe",
           "CalibrationSet", "calibration_windows", "random_windows", "quantize_graph",
           "graph_precision"]

CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
ACTIVATION_TYPES = ("uint8", "int8")
# Parts of the network that can stay fp32, by the exporter's node-name prefix.
FP32_PARTS = {"frontend": "/m/frontend/", "output": "/m/fc/"}
DEFAULT_WINDOWS = 256
# Calibration runs this many windows per ONNX Runtime call; the histogram methods hold
# every activation of one call in memory (~40 MB per window of the 3^9 model).
CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class QuantRecipe:
    """How to quantize: calibration `method` over `windows` windows drawn with `seed`,
    activations `uint8` or `int8` (weights are always int8, per output channel), the
    `keep_fp32` parts (of `FP32_PARTS`) left in fp32, the `percentile` of |activations|
    kept by the percentile method, and `reduce_range` (7-bit weights, the default: no
    int16 overflow in the AVX2 u8 x s8 kernels of CPUs without VNNI)."""

    method: str = "percentile"
    windows: int = DEFAULT_WINDOWS
    activations: str = "uint8"
    keep_fp32: tuple[str, ...] = ()
    percentile: float = 99.999
    # 7-bit weights by default: on x86 without VNNI the u8 x s8 kernels add pairs of
    # products in int16, and the front end's products (the waveform's uint8 codes sit
    # around the zero point 128) overflow it with 8-bit weights; that cost the demo model
    # ~0.004 test ROC-AUC, 7-bit weights or an fp32 front end ~0 (BENCHMARKS.md).
    reduce_range: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise ValueError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, "
                             f"got {self.method!r}")
        if self.activations not in ACTIVATION_TYPES:
            raise ValueError(f"activations must be one of {', '.join(ACTIVATION_TYPES)}, "
                             f"got {self.activations!r}")
        if isinstance(self.windows, bool) or not isinstance(self.windows, int) or self.windows < 1:
            raise ValueError(f"calibration windows must be a positive integer, got {self.windows!r}")
        parts = tuple(self.keep_fp32)
        unknown = [p for p in parts if p not in FP32_PARTS]
        if unknown:
            raise ValueError(f"unknown fp32 part(s) {', '.join(map(repr, unknown))}; "
                             f"choose from {', '.join(FP32_PARTS)}")
        object.__setattr__(self, "keep_fp32", tuple(sorted(set(parts))))
        if not 50.0 < float(self.percentile) <= 100.0:
            raise ValueError(f"percentile must be in (50, 100], got {self.percentile}")

    def describe(self) -> str:
        """One line, e.g. "percentile 99.999, uint8 activations"."""
        what = self.method + (f" {self.percentile:g}" if self.method == "percentile" else "")
        line = f"{what}, {self.activations} activations"
        if self.keep_fp32:
            line += f", fp32 {' + '.join(self.keep_fp32)}"
        return line + (", 7-bit weights" if self.reduce_range else ", 8-bit weights")


@dataclass
class CalibrationSet:
    """Calibration windows float32 `(n, input_samples)` and where they came from.
    `failures`: one line per audio file that could not be decoded (skipped, reported)."""

    windows: np.ndarray
    source: str
    kind: str
    files: int
    failures: list[str] = field(default_factory=list)


def _is_store(source: str) -> bool:
    return os.path.isdir(source) and os.path.isfile(os.path.join(source, "meta.json"))


def calibration_windows(source: str | os.PathLike, sample_rate: int, input_samples: int,
                        n: int = DEFAULT_WINDOWS, seed: int = 0) -> CalibrationSet:
    """`n` windows of `input_samples` samples at `sample_rate` from `source`.

    A store (a folder with meta.json): clips of its train split in a seeded random order,
    cycled, one window at a random start each (zero-padded past a short clip's end). A
    store at another rate is refused. Anything else is audio (a folder, a file or a
    glob, as `samplecnn tag` reads them): files in a seeded random order, each decoded
    at the model's rate on the window grid (full windows, one hop per window), an equal
    share of the windows still missing drawn from each (reservoir sampling), the rest of
    its draw kept to fill in for files shorter than their share (memory: at most 2n
    windows); a file that fails is skipped and listed in `failures`. ValueError when no
    window is found.
    """
    source = os.fspath(source)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"calibration windows must be a positive integer, got {n!r}")
    rng = np.random.default_rng(seed)
    if _is_store(source):
        return _store_windows(source, sample_rate, input_samples, n, rng)
    return _audio_windows(source, sample_rate, input_samples, n, rng)


def _store_windows(source: str, sample_rate: int, input_samples: int, n: int,
                   rng: np.random.Generator) -> CalibrationSet:
    from samplecnn.data import SegmentStore

    store = SegmentStore(source)
    if store.sample_rate != sample_rate:
        raise ValueError(f"{source}: store is at {store.sample_rate} Hz but the model expects "
                         f"{sample_rate} Hz; calibrate with a store at {sample_rate} Hz or an audio folder")
    clips = store.split_indices("train")
    if len(clips) == 0:
        raise ValueError(f"{source}: the store's train split has no clips to calibrate on")
    order = np.concatenate([rng.permutation(clips) for _ in range(math.ceil(n / len(clips)))])[:n]
    out = np.empty((n, input_samples), np.float32)
    for k, c in enumerate(order):
        span = max(0, int(store.lengths[c]) - input_samples)
        out[k] = store.segment(int(c), int(rng.integers(0, span + 1)), input_samples)
    return CalibrationSet(out, source, "store", len(np.unique(order)))


def _audio_windows(source: str, sample_rate: int, input_samples: int, n: int,
                   rng: np.random.Generator) -> CalibrationSet:
    from samplecnn.paths import escape_path
    from samplecnn.tagging.sources import error_reason, expand_paths, iter_windows
    from samplecnn.windows import WindowGrid

    files = expand_paths([source])
    if len(files) == 1 and not os.path.exists(files[0]):
        raise ValueError(f"{escape_path(source)}: no such store, audio file or folder")
    grid = WindowGrid(input_samples, input_samples, "drop")
    picked: list[np.ndarray] = []
    spare: list[np.ndarray] = []  # drawn beyond a file's share: fills in for short files
    failures: list[str] = []
    used = 0
    order = rng.permutation(len(files))
    for done, i in enumerate(order):
        missing = n - len(picked)
        if missing <= 0:
            break
        # The windows still missing, shared by the files still to read.
        quota = math.ceil(missing / (len(order) - done))
        path = files[int(i)]
        keep: list[np.ndarray] = []
        try:
            for seen, (_, w) in enumerate(iter_windows(path, sample_rate, grid)):
                # Reservoir sampling: each window of the file is kept with equal chance.
                if seen < missing:
                    keep.append(w.copy())
                else:
                    j = int(rng.integers(0, seen + 1))
                    if j < missing:
                        keep[j] = w.copy()
        except Exception as err:  # a bad file is reported, never fatal
            failures.append(f"{escape_path(path)}: {error_reason(err)}")
            continue
        keep = [keep[k] for k in rng.permutation(len(keep))]
        picked += keep[:quota]
        spare = (spare + keep[quota:])[-n:]
        used += 1
    picked += spare[: max(0, n - len(picked))]
    if not picked:
        shown = f" ({len(failures)} failed, e.g. {failures[0]})" if failures else ""
        raise ValueError(f"{escape_path(source)}: no calibration window could be read{shown}")
    return CalibrationSet(np.stack(picked), source, "audio", used, failures)


def random_windows(n: int, input_samples: int, seed: int = 0, level: float = 0.1) -> np.ndarray:
    """float32 `(n, input_samples)` Gaussian noise at `level` RMS: calibration for speed
    measurements of random-weight models, where what the windows hold does not matter."""
    rng = np.random.default_rng(seed)
    return (level * rng.standard_normal((n, input_samples))).astype(np.float32)


def graph_precision(meta_props: dict) -> str:
    """"fp32" or "int8" from a graph's metadata entries (key -> value)."""
    return meta_props.get("samplecnn.precision", "fp32")


class _Windows:
    """ONNX Runtime's CalibrationDataReader over an array, `CALIBRATION_BATCH` windows per
    item; `set_range` lets `quantize_static` feed one item per collection (CalibStridedMinMax),
    so the histogram methods never hold more than one item's activations."""

    def __init__(self, windows: np.ndarray):
        self.windows = windows
        self.items = math.ceil(len(windows) / CALIBRATION_BATCH)
        self.set_range(0, self.items)

    def __len__(self) -> int:
        return self.items

    def set_range(self, start_index: int, end_index: int) -> None:
        self._todo = iter(range(start_index, min(end_index, self.items)))

    def get_next(self):
        i = next(self._todo, None)
        if i is None:
            return None
        return {"audio": self.windows[i * CALIBRATION_BATCH:(i + 1) * CALIBRATION_BATCH]}


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantization tools print and log to the root logger (advice,
    "Collecting tensor data ..."): none of it reaches the user's terminal."""
    import onnxruntime as ort

    before = logging.root.manager.disable
    logging.disable(logging.WARNING)
    ort.set_default_logger_severity(3)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(before)


def quantize_graph(graph: bytes, windows: np.ndarray, recipe: QuantRecipe,
                   source: str = "") -> bytes:
    """The int8 twin of a samplecnn fp32 "scores" graph (serialized), calibrated on
    `windows` float32 `(n, input_samples)`, as serialized ONNX bytes.

    Refuses a graph that is not fp32 (an int8 file is never quantized twice). `source`
    names the calibration data in the metadata.
    """
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from samplecnn.inference.onnx import finish_graph

    proto = onnx.load_from_string(graph)
    props = {p.key: p.value for p in proto.metadata_props}
    if "samplecnn.tags" not in props:
        raise ValueError("not a samplecnn ONNX export (no samplecnn.tags metadata)")
    if graph_precision(props) != "fp32":
        raise ValueError(f"the graph is already {graph_precision(props)}; quantize its fp32 export")
    windows = np.ascontiguousarray(windows, dtype=np.float32)
    samples = int(props["samplecnn.input_samples"])
    if windows.ndim != 2 or windows.shape[1] != samples or len(windows) == 0:
        raise ValueError(f"calibration windows must be (n >= 1, {samples}), got {windows.shape}")
    excluded = [node.name for node in proto.graph.node
                if any(node.name.startswith(FP32_PARTS[p]) for p in recipe.keep_fp32)]
    missing = [p for p in recipe.keep_fp32
               if not any(n.startswith(FP32_PARTS[p]) for n in excluded)]
    if missing:
        raise ValueError(f"the graph has no node of the part(s) {', '.join(missing)} to keep in fp32")

    class Reader(_Windows, CalibrationDataReader):
        pass

    method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
              "entropy": CalibrationMethod.Entropy}[recipe.method]
    act = QuantType.QUInt8 if recipe.activations == "uint8" else QuantType.QInt8
    # One calibration item per collection (bounded memory). The percentile method cuts
    # the histogram of |x|; ranges are then clipped to the values seen, so a ReLU output
    # gets (0, percentile) and uses every uint8 step.
    options = {"CalibStridedMinMax": 1, "CalibPercentile": float(recipe.percentile)}
    with tempfile.TemporaryDirectory(prefix="samplecnn-quant-") as tmp, _quiet():
        src, pre, out = (Path(tmp) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(graph)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out), Reader(windows), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=bool(recipe.reduce_range),
                        activation_type=act, weight_type=QuantType.QInt8,
                        calibrate_method=method, nodes_to_exclude=excluded,
                        extra_options=options)
        qproto = onnx.load(str(out))
    info = {"format": "QDQ", "weights": "int8 per channel" + (" (7-bit)" if recipe.reduce_range else ""),
            **{k: v for k, v in asdict(recipe).items() if k not in ("keep_fp32",)},
            "windows": int(len(windows)), "keep_fp32": list(recipe.keep_fp32),
            "fp32_nodes": excluded, "calibration_source": str(source),
            "onnxruntime": ort.__version__}
    meta = {k: v for k, v in props.items() if k.startswith("samplecnn.")}
    meta["samplecnn.precision"] = "int8"
    meta["samplecnn.quantization"] = json.dumps(info, ensure_ascii=False)
    return finish_graph(qproto, meta)

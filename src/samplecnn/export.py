"""`samplecnn export`: a checkpoint -> an ONNX file (raw audio in, tag scores out).

The file is the "scores" graph of the one exporter (`samplecnn.inference.onnx`): input
`audio` float32 `(batch, input_samples)` at the checkpoint's rate (dynamic batch), outputs
`logits` and `scores` (sigmoid), both `(batch, n_tags)`; tag names, rate, segment length
and the model config travel in its metadata (see that module). The mel front end
(nnAudio's STFT as a fixed convolution) exports like the raw one. The export is checked
against PyTorch with ONNX Runtime before it is written.

With `int8=QuantRecipe(...)` and a `calibration` source the file is the int8 twin of that
graph (`samplecnn.quantize`): calibrated on windows of the source, checked against the
fp32 graph (max score difference on the calibration windows) and, when the source is a
store, scored with `evaluate` on its validation split beside the fp32 graph.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .inference.onnx import ONNX_OPSET, export_graph, session

__all__ = ["export_onnx", "check_onnx", "ExportReport", "ONNX_OPSET"]


@dataclass
class ExportReport:
    """What `export_onnx` wrote and how closely ONNX Runtime matched PyTorch."""

    path: Path
    max_abs_diff_logits: float | None
    max_abs_diff_scores: float | None
    atol: float
    n_tags: int
    sample_rate: int
    input_samples: int
    precision: str = "fp32"
    recipe: object = None  # the QuantRecipe of an int8 file
    calibration: dict | None = None  # source, kind ("store"/"audio"), files, windows
    int8_max_abs_diff_scores: float | None = None
    roc_auc: dict | None = None  # with a store: split, fp32, int8, pr_fp32, pr_int8
    notes: list[str] = field(default_factory=list)


def _load(model_or_path):
    from samplecnn.checkpoint import load_model

    if isinstance(model_or_path, (str, os.PathLike)):
        if os.fspath(model_or_path).lower().endswith(".onnx"):
            raise ValueError(f"{model_or_path}: already an ONNX file; export (or quantize) "
                             "from its checkpoint")
        return load_model(model_or_path, map_location="cpu")
    return model_or_path.eval()


def export_onnx(model_or_path, out: str | os.PathLike, *, opset: int = ONNX_OPSET,
                check: bool = True, atol: float = 1e-4, seed: int = 0, int8=None,
                calibration: str | os.PathLike | None = None) -> ExportReport:
    """Export a checkpoint (path) or a `SampleCNN` to ONNX at `out`, atomically.

    With `check`, ONNX Runtime and PyTorch are run on random audio (batch 3, uniform in
    +-1 at the model's rate) and the export is refused (ValueError, nothing written) if
    logits or scores differ by more than `atol`.

    `int8`: a `samplecnn.quantize.QuantRecipe`; the file is then the int8 graph,
    calibrated on `calibration` (a store or audio files), and with `check` compared with
    the fp32 graph (and, for a store, evaluated on its validation split).
    """
    if (int8 is None) != (calibration is None):
        raise ValueError("an int8 export needs both a recipe and a calibration source")
    model = _load(model_or_path).cpu()
    cfg = model.config
    cal = None
    if int8 is not None:  # before the export: a bad source fails fast
        from .quantize import calibration_windows

        cal = calibration_windows(calibration, cfg.sample_rate, cfg.input_samples,
                                  int8.windows, int8.seed)
    data = export_graph(model, "scores", opset)
    out = Path(out)
    # The file appears only once it is complete and, with `check`, verified.
    with atomic_path(out) as tmp:
        tmp.write_bytes(data)
        diff_l = diff_s = None
        if check:
            diff_l, diff_s = check_onnx(model, tmp, seed=seed)
            if max(diff_l, diff_s) > atol:
                raise ValueError(f"{out}: ONNX Runtime and PyTorch disagree (max abs diff "
                                 f"logits {diff_l:.3g}, scores {diff_s:.3g} > {atol:g}); not written")
        rep = ExportReport(out, diff_l, diff_s, atol, cfg.n_tags, cfg.sample_rate, cfg.input_samples)
        if int8 is not None:
            _quantize_into(tmp, data, cal, int8, check, rep)
    return rep


def _quantize_into(tmp: Path, fp32: bytes, cal, recipe, check: bool, rep: ExportReport) -> None:
    """Write the int8 twin of `fp32` to `tmp`; fill the report's int8 fields."""
    from .quantize import quantize_graph

    int8 = quantize_graph(fp32, cal.windows, recipe, source=cal.source)
    tmp.write_bytes(int8)
    rep.precision, rep.recipe = "int8", recipe
    rep.calibration = {"source": cal.source, "kind": cal.kind, "files": cal.files,
                       "windows": len(cal.windows)}
    rep.notes += [f"calibration: skipped {f}" for f in cal.failures]
    if len(cal.windows) < recipe.windows:
        rep.notes.append(f"calibration: {cal.source} gave {len(cal.windows)} of the "
                         f"{recipe.windows} windows asked for")
    if not check:
        return
    ref, got = session(fp32), session(int8)
    diff = 0.0
    for i in range(0, min(64, len(cal.windows)), 8):  # 8 windows a call: bounded memory
        x = cal.windows[i:i + 8]
        diff = max(diff, float(np.abs(ref.run(["scores"], {"audio": x})[0]
                                      - got.run(["scores"], {"audio": x})[0]).max()))
    rep.int8_max_abs_diff_scores = diff
    if cal.kind == "store":
        rep.roc_auc = _roc_auc_change(fp32, int8, cal.source, rep)


def _roc_auc_change(fp32: bytes, int8: bytes, store: str, rep: ExportReport,
                    split: str = "valid") -> dict | None:
    """Macro ROC-AUC of the fp32 and int8 graphs on a store split, through `evaluate`."""
    from .evaluation import evaluate

    with tempfile.TemporaryDirectory(prefix="samplecnn-export-") as tmp:
        paths = {}
        for name, graph in (("fp32", fp32), ("int8", int8)):
            paths[name] = Path(tmp) / f"{name}.onnx"  # evaluate knows ONNX files by name
            paths[name].write_bytes(graph)
        try:
            before = evaluate(paths["fp32"], store, split, device="cpu")
            after = evaluate(paths["int8"], store, split, device="cpu")
        except ValueError as err:  # e.g. no valid clips, or no tag in common
            rep.notes.append(f"ROC-AUC change not measured: {err}")
            return None
    return {"split": split, "fp32": before.roc_auc, "int8": after.roc_auc,
            "pr_fp32": before.pr_auc, "pr_int8": after.pr_auc}


def check_onnx(model, onnx_path: str | os.PathLike, batch: int = 3, seed: int = 0) -> tuple[float, float]:
    """Max |ONNX Runtime - PyTorch| of (logits, scores) on random audio `(batch, input_samples)`."""
    import torch

    model = model.eval()
    x = np.random.default_rng(seed).uniform(-1, 1, (batch, model.config.input_samples)).astype(np.float32)
    with torch.inference_mode():
        logits = model(torch.from_numpy(x).unsqueeze(1)).numpy()
    o_logits, o_scores = session(onnx_path).run(["logits", "scores"], {"audio": x})
    scores = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    return float(np.abs(o_logits - logits).max()), float(np.abs(o_scores - scores).max())

"""The offline demo: synthetic data -> store -> training -> evaluation -> tags and plots.

`run_demo(out_dir)` does every step into one run folder and returns a summary; each
step is skipped when its output is already complete, and an interrupted training run
resumes, so rerunning the same command finishes the job:

    <out>/data/            the synthetic CSV-folder data set (samplecnn.synth)
    <out>/store/           its segment store at 16 kHz
    <out>/run/             config.yaml, checkpoints/, logs/ (CSV + TensorBoard)
    <out>/eval/            metrics.json, per_tag.csv, clip_scores.csv, tag_roc_auc.png
    <out>/plots/           training_curves.png, tag_roc_auc.png, filters/<layer>.png
    <out>/tags.json        a few test clips tagged with samplecnn.tagging.Tagger
    <out>/summary.json     the figures printed at the end
    <out>/compare/<model>/ the baselines' runs and evaluations (with compare=True)
"""
from __future__ import annotations

import os
import time
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from .atomic import write_json
from .paths import escape_path
from .runtime import Runtime

DEMO_MODEL = "samplecnn_small"
COMPARE_MODELS = ("framecnn_small", "melcnn_small")


def demo_config() -> dict:
    """The packaged demo recipe (`samplecnn/configs/demo.yaml`) as a dict."""
    text = resources.files("samplecnn").joinpath("configs/demo.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _store_complete(path: Path) -> bool:
    return (path / "meta.json").is_file()


def _train_done(run: Path) -> bool:
    return (run / "train_summary.json").is_file() and (run / "checkpoints" / "last.ckpt").is_file()


# Settings that change how a run looks, not what it computes.
_COSMETIC = {"trainer.progress_bar", "trainer.num_threads"}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_same_config(config: dict, run: Path) -> None:
    """Refuse to reuse or resume a run made with another configuration: its results
    would be reported as this one's."""
    stored_path = run / "config.yaml"
    if not stored_path.is_file():
        return
    stored = _flatten(yaml.safe_load(stored_path.read_text(encoding="utf-8")) or {})
    wanted = _flatten(config)
    differ = sorted(k for k in set(stored) | set(wanted)
                    if k not in _COSMETIC and stored.get(k) != wanted.get(k))
    if differ:
        shown = ", ".join(f"{k} {stored.get(k)!r} -> {wanted.get(k)!r}" for k in differ[:4])
        more = f" and {len(differ) - 4} more" if len(differ) > 4 else ""
        raise ValueError(f"{run}: trained with another configuration ({shown}{more}); "
                         "use another --out, or delete that folder to retrain")


def _train(config: dict, run: Path, log) -> None:
    from samplecnn.checkpoint import read_checkpoint_info
    from samplecnn.training import train

    _check_same_config(config, run)
    if _train_done(run):
        log(f"training: {run} is complete, kept")
        ckpts = [str(run / "checkpoints" / n) for n in ("best.ckpt", "last.ckpt")]
        if "thresholds" not in read_checkpoint_info(ckpts[1]):  # a run from before thresholds
            from samplecnn.data import SegmentStore
            from samplecnn.training.run import store_thresholds

            store_thresholds(ckpts, SegmentStore(config["data"]["store"]),
                             config["data"]["eval_batch_size"], log=log)
        return
    if (run / "checkpoints" / "last.ckpt").is_file():
        log(f"training: resuming {run}")
        train(config, resume=run, log=log)
    else:
        train(config, log=log)


def run_demo(out_dir: str | os.PathLike = "runs/demo", *, clips: int = 800, seconds: float = 10.0,
             epochs: int | None = None, seed: int = 0, difficulty: str = "medium",
             compare: bool = False, quick: bool = False, workers: int | None = None,
             threads: int | None = 2, filters: bool = True, progress: bool | None = None,
             overrides: list[str] | None = None, log=print) -> dict:
    """Run the whole demo; returns the summary dict (also written to summary.json).

    Args:
        out_dir: the run folder; everything goes under it.
        clips, seconds, difficulty: the synthetic data set (`samplecnn synth`).
        epochs: training epochs (default: the packaged recipe's).
        seed: seeds the data set, the split, training and the tagged examples.
        compare: also train the frame-level raw and mel baselines with the same budget.
        quick: a smoke run (few short clips, a narrow model, one epoch): checks that
            every step works, in well under a minute; its AUCs mean little.
        workers: processes for data generation and decoding (default: CPU count).
        threads: torch CPU threads (default 2, the machine the demo is sized for).
        overrides: extra `key=value` training-config overrides.
    """
    from samplecnn.data import prepare_csv
    from samplecnn.evaluation import evaluate, plot_training_curves
    from samplecnn.synth import generate_dataset
    from samplecnn.training import apply_overrides, load_config

    t0 = time.time()
    log = log or (lambda *a, **k: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or os.cpu_count() or 1
    # An entry point: the process-wide settings are applied here (and by train()).
    Runtime(num_threads=int(threads) if threads else None).apply()
    if quick:
        clips, seconds = min(clips, 48), min(seconds, 3.0)
    if clips < 10:
        raise ValueError(f"clips {clips}: the demo needs at least 10 clips for its three splits")
    timings: dict[str, float] = {}

    # 1. data ------------------------------------------------------------------------
    t = time.time()
    data = out / "data"
    log(f"[1/6] synthetic data set: {clips} clips x {seconds:g} s ({difficulty}) -> {data}")
    generate_dataset(data, clips=clips, seconds=seconds, sample_rate=16000, seed=seed,
                     difficulty=difficulty, workers=workers, progress=bool(progress))
    timings["data_s"] = time.time() - t

    # 2. store -----------------------------------------------------------------------
    t = time.time()
    store = out / "store"
    if _store_complete(store):
        log(f"[2/6] store: {store} is complete, kept")
    else:
        log(f"[2/6] store: decoding into {store}")
        prepare_csv(data, store, sample_rate=16000, workers=workers, progress=bool(progress),
                    min_samples=0)
    timings["store_s"] = time.time() - t

    # 3. training --------------------------------------------------------------------
    base = demo_config()
    base["seed"] = seed
    base["data"]["store"] = os.path.abspath(store)  # as train() records it in config.yaml
    if epochs is not None:
        base["trainer"]["max_epochs"] = int(epochs)
    if threads:
        base["trainer"]["num_threads"] = int(threads)
    if progress is not None:
        base["trainer"]["progress_bar"] = bool(progress)
    if quick:
        base["model"].update({"width": 0.125})
        base["trainer"]["max_epochs"] = 1 if epochs is None else int(epochs)
    base = apply_overrides(base, overrides)
    models = [base["model"]["name"]] + (list(COMPARE_MODELS) if compare else [])
    results = {}
    for i, name in enumerate(models):
        run = out / "run" if i == 0 else out / "compare" / name
        cfg = dict(base, model={**base["model"], "name": name}, out_dir=str(run))
        cfg = load_config(None, None, base=cfg)
        t = time.time()
        log(f"[3/6] training {name} ({cfg['trainer']['max_epochs']} epochs) -> {run}")
        _train(cfg, run, log)
        timings[f"train_{name}_s"] = time.time() - t
        # 4. evaluation ----------------------------------------------------------------
        t = time.time()
        ckpt = run / "checkpoints" / "last.ckpt"
        log(f"[4/6] evaluating {name} on the test split")
        ev = evaluate(ckpt, store, "test", batch_size=cfg["data"]["eval_batch_size"])
        ev.write(run.parent / "eval" if i == 0 else run / "eval")
        timings[f"eval_{name}_s"] = time.time() - t
        results[name] = {"roc_auc": ev.roc_auc, "pr_auc": ev.pr_auc, "macro_f1": ev.macro_f1,
                         "micro_f1": ev.micro_f1, "checkpoint": str(ckpt),
                         "params": None, "excluded_tags": ev.metrics.excluded, "eval": ev}

    main_name = models[0]
    main = results[main_name]
    ckpt = Path(main["checkpoint"])

    # 5. tags for a few test clips -----------------------------------------------------
    log("[5/6] tagging a few test clips")
    from samplecnn.data import SegmentStore
    from samplecnn.tagging import Tagger

    st = SegmentStore(store)
    test = st.split_indices("test")
    pick = np.random.default_rng(seed).choice(test, size=min(4, len(test)), replace=False)
    tagger = Tagger.from_checkpoint(ckpt)
    tagged = []
    for c in sorted(pick.tolist()):
        src = st.source_path(c)  # store paths are escaped; this is the name to open
        path = data / src if not os.path.isabs(src) else Path(src)
        rec = tagger.tag(path, top_k=5)
        truth = [st.tags[j] for j in np.flatnonzero(st.labels[c])]
        tagged.append({"clip_id": str(st.clip_ids[c]), "path": escape_path(path), "true_tags": truth,
                       "top": rec["top"], "labels": rec["labels"], "tags": rec["tags"]})
    write_json(out / "tags.json", tagged)

    # 6. plots -------------------------------------------------------------------------
    log("[6/6] plots")
    plots = out / "plots"
    plot_paths = [str(plot_training_curves(out / "run", plots / "training_curves.png"))]
    from samplecnn.evaluation import plot_tag_auc

    plot_paths.append(str(plot_tag_auc(main["eval"].metrics, plots / "tag_roc_auc.png",
                                       title=f"{main_name}: per-tag ROC-AUC (test)")))
    if filters:
        from samplecnn.visualize import visualize_filters

        vis = visualize_filters(ckpt, plots / "filters", layers=["frontend", "block1", "block2"])
        plot_paths += [v["png"] for v in vis.values()]

    summary = {
        "out_dir": str(out),
        "model": main_name,
        "seed": seed,
        "clips": clips,
        "seconds": seconds,
        "difficulty": difficulty,
        "epochs": base["trainer"]["max_epochs"],
        "test_clips": int(main["eval"].metrics.n_clips),
        "roc_auc": main["roc_auc"],
        "pr_auc": main["pr_auc"],
        "macro_f1": main["macro_f1"],
        "micro_f1": main["micro_f1"],
        "checkpoint": str(ckpt),
        "compare": {k: {"roc_auc": v["roc_auc"], "pr_auc": v["pr_auc"], "macro_f1": v["macro_f1"]}
                    for k, v in results.items()},
        "tagged": [{"clip_id": r["clip_id"], "true_tags": r["true_tags"], "top": r["top"],
                    "labels": r["labels"]} for r in tagged],
        "plots": plot_paths,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "total_s": round(time.time() - t0, 1),
    }
    write_json(out / "summary.json", summary)
    return summary


def format_summary(summary: dict) -> str:
    """The lines `samplecnn demo` prints at the end."""
    lines = [f"demo: {summary['model']} on {summary['clips']} synthetic clips x {summary['seconds']:g} s "
             f"({summary['difficulty']}), {summary['epochs']} epochs, seed {summary['seed']}, "
             f"{summary['total_s']:.0f} s in all",
             f"test split: {summary['test_clips']} clips"]
    for r in summary["tagged"]:
        top = ", ".join(f"{t} {s:.2f}" for t, s in r["top"][:4])
        decided = "" if r.get("labels") is None else f"; labels [{', '.join(r['labels'])}]"
        lines.append(f"  clip {r['clip_id']}: true [{', '.join(r['true_tags'])}] -> top {top}{decided}")
    if len(summary["compare"]) > 1:
        width = max(len(k) for k in summary["compare"])
        lines.append(f"{'model'.ljust(width)}  ROC-AUC  PR-AUC  macro F1")
        for k, v in summary["compare"].items():
            lines.append(f"{k.ljust(width)}  {v['roc_auc']:.4f}   {v['pr_auc']:.4f}  {_f1(v.get('macro_f1'))}")
    lines.append(f"outputs: {summary['out_dir']} (plots in {summary['out_dir']}/plots)")
    lines.append(f"ROC-AUC {summary['roc_auc']:.4f}")
    lines.append(f"PR-AUC {summary['pr_auc']:.4f}")
    lines.append(f"macro F1 {_f1(summary.get('macro_f1'))} (thresholds fitted on the validation split)")
    return "\n".join(lines)


def _f1(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"

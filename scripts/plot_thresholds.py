"""Precision / recall / F1 against the decision threshold for a few tags, and the table of
per-tag thresholds and test F1, for docs/tagging.md.

    python scripts/plot_thresholds.py /tmp/demo_full --tags drums guitar piano choir \
        --png docs/img/thresholds.png > /tmp/thresholds.md

RUN is a `samplecnn demo --out RUN` folder (its run/checkpoints/last.ckpt carries the
thresholds `train` fitted on the validation split, and RUN/store is its store). The
curves are drawn on the validation split (where the thresholds were fitted, the fitted
threshold marked); the table's precision / recall / F1 are `evaluate`'s on the test split.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a `samplecnn demo` output folder")
    p.add_argument("--checkpoint", default="run/checkpoints/last.ckpt", help="relative to RUN")
    p.add_argument("--tags", nargs="+", default=None, help="tags to plot (default: four)")
    p.add_argument("--png", type=Path, default=Path("docs/img/thresholds.png"))
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import precision_recall_curve

    from samplecnn.atomic import save_figure
    from samplecnn.checkpoint import load_model
    from samplecnn.data import SegmentStore
    from samplecnn.evaluation import evaluate, load_scorer, score_split

    ckpt = args.run / args.checkpoint
    store = SegmentStore(args.run / "store")
    model = load_model(ckpt)
    if model.thresholds is None:
        raise SystemExit(f"{ckpt}: no thresholds; fit them with `samplecnn thresholds`")
    th = model.thresholds
    valid = score_split(load_scorer(model), store, "valid")
    tags = args.tags or valid.tags[:4]
    fig, axes = plt.subplots(1, len(tags), figsize=(3.2 * len(tags), 3.0), sharey=True)
    for k, (ax, tag) in enumerate(zip(np.atleast_1d(axes), tags)):
        j = valid.tags.index(tag)
        prec, rec, cut = precision_recall_curve(valid.labels[:, j], valid.clip_scores[:, j])
        f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(prec), where=prec + rec > 0)
        ax.plot(cut, prec[:-1], label="precision")
        ax.plot(cut, rec[:-1], label="recall")
        ax.plot(cut, f1[:-1], label="F1", color="k", lw=1.2)
        t = float(th.values[th.tags.index(tag)])
        ax.axvline(t, color="#c44", ls="--", lw=1, label="fitted threshold")
        n_pos = int(valid.labels[:, j].sum())
        ax.set(title=f"{tag}: {t:.2f} ({n_pos} positives)", xlabel="threshold (clip score)",
               xlim=(0, 1), ylim=(0, 1.02))
        if k == 0:
            ax.legend(fontsize=7, loc="lower left")
    np.atleast_1d(axes)[0].set_ylabel(f"validation split ({len(valid.clip_ids)} clips)")
    fig.tight_layout()
    save_figure(fig, args.png)

    from samplecnn.thresholds import decision_metrics

    at_valid = decision_metrics(valid.clip_scores, valid.labels, th.values[valid.keep], valid.tags)
    ev = evaluate(ckpt, store, "test")
    print("| tag | threshold | valid F1 | test positives | test precision | test recall | test F1 |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for j, r in enumerate(ev.rows()):
        cells = [f"{r[k]:.2f}" if r[k] is not None else "-" for k in ("precision", "recall", "f1")]
        print(f"| {r['tag']} | {r['threshold']:.2f} | {at_valid.row(j)['f1'] or 0:.2f} | "
              f"{r['positives']} | " + " | ".join(cells) + " |")
    print(f"| **macro** | | **{at_valid.macro_f1:.3f}** | | | | **{ev.macro_f1:.3f}** |")
    print(f"| **micro** | | **{at_valid.micro_f1:.3f}** | | | | **{ev.micro_f1:.3f}** |")
    print(f"test ROC-AUC {ev.roc_auc:.4f}, PR-AUC {ev.pr_auc:.4f}", file=sys.stderr)
    print(f"wrote {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

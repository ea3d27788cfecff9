"""`samplecnn pretrained`: public weights by name (list, download); and `--pretrained NAME`
for every command that takes a checkpoint."""
from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "pretrained", help="public SampleCNN weights by name: list, download",
        description="Public SampleCNN checkpoints by name (sota-music-tagging-models, CLMR, and "
                    "your own entries from $SAMPLECNN_BUNDLES). `download` fetches, verifies, "
                    "converts and caches one under $SAMPLECNN_HOME and prints the checkpoint's "
                    "path; `--pretrained NAME` in tag, embed, export and evaluate does the same "
                    "on first use. $SAMPLECNN_MIRROR replaces every source by <mirror>/<name>/<file>.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    ls = sub.add_parser("list", help="the registry: names, sources, tags, reported figures, licenses")
    ls.add_argument("--json", action="store_true", help="print the registry as JSON")
    ls.set_defaults(func=run_list)
    dl = sub.add_parser("download", help="fetch, verify, convert and cache; print the checkpoint path")
    dl.add_argument("name", help="a name from `samplecnn pretrained list`")
    dl.set_defaults(func=run_download)


def run_list(args: argparse.Namespace) -> int:
    from samplecnn.pretrained import list_pretrained

    entries = list_pretrained()
    if args.json:
        print(json.dumps([e.to_dict() for e in entries], indent=2, ensure_ascii=False))
        return 0
    rows = []
    for e in entries:
        r = e.reported
        fig = (f"{r['roc_auc']:.4f} / {r['pr_auc']:.4f}" if "roc_auc" in r
               else f"mAP {r['map']:.3f}" if "map" in r else "-")
        rows.append((e.name, e.dataset or "-", f"{e.sample_rate or '-'}", fig, e.files[0].url))
    head = ("name", "trained on", "Hz", "reported ROC/PR-AUC", "source")  # mAP for AudioSet
    widths = [max(len(str(x[i])) for x in rows + [head]) for i in range(4)]
    for row in [head] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row[:4], widths)) + "  " + row[4])
    return 0


def run_download(args: argparse.Namespace) -> int:
    from samplecnn.pretrained import resolve

    print(resolve(args.name))
    return 0


# -- `--pretrained NAME` for commands that take a checkpoint ----------------------------------
def add_pretrained_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pretrained", default=None, metavar="NAME",
                        help="public weights by name instead of a checkpoint (see `samplecnn "
                             "pretrained list`): downloaded, verified and cached on first use")


def take_pretrained(args: argparse.Namespace, attr: str, paths_attr: str | None = None) -> None:
    """Exactly one of the checkpoint positional `attr` and `--pretrained`; with
    `--pretrained`, `attr` becomes the resolved cached checkpoint. Commands that also take
    PATHs (`paths_attr`) read a positional given with `--pretrained` as the first PATH."""
    given = getattr(args, attr)
    if args.pretrained is None:
        if given is None:
            raise ValueError(f"give a {attr} or --pretrained NAME (see `samplecnn pretrained list`)")
        return
    if given is not None:
        if paths_attr is None:
            raise ValueError(f"give a {attr} or --pretrained NAME, not both")
        setattr(args, paths_attr, [given] + list(getattr(args, paths_attr) or []))
    from samplecnn.pretrained import resolve

    setattr(args, attr, str(resolve(args.pretrained)))

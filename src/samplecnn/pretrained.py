"""Public SampleCNN weights by name: a registry, verified downloads, a converted cache.

`resolve(name)` returns the path of a samplecnn checkpoint made from the public weights
of that name, downloading (or taking a file put there by hand), verifying, converting and
caching it on first use, like torchvision's `weights=` or torchaudio's bundles:

    from samplecnn.tagging import Tagger
    tagger = Tagger.from_pretrained("sota-mtat-sample")

Cache: `$SAMPLECNN_HOME/pretrained/<name>/` (see `samplecnn.cache`) holds the source files
as downloaded, `<name>.ckpt` and `sources.json` (the SHA-256 of each file, checked on
every later use). Everything is written to a temporary name and renamed when
complete and verified (`samplecnn.atomic`), under one lock per name
(`samplecnn.locks.exclusive`): a failed, interrupted or corrupt download leaves nothing
behind, and two processes asking for one name download it once.

Why one module of this size: the registry entries, the download (mirror, bundles,
progress, integrity) and the converted cache are one contract, "a name resolves to a
verified checkpoint"; the converters themselves live in `samplecnn.importers`.

Integrity: sota-music-tagging-models' files are checked against their git blob ids (the
SHA-1 of `b"blob <size>\\0" + content`, what GitHub's tree lists); CLMR publishes no hash, and
Zenodo's md5 of the PANNs files could not be read from this project's machines, so for
both the SHA-256 of the first download is recorded in `sources.json` beside it (a line on
stderr says so) and later downloads, and files put there by hand, are checked against it.

`SAMPLECNN_MIRROR`: a base URL (http, https or file) that replaces every source, with the
files at `<mirror>/<name>/<file name>`. `SAMPLECNN_BUNDLES`: a JSON file listing the
user's own entries: `[{"name", "url", "sha256", "format"}]`, format `samplecnn` (this
project's checkpoints) or `sota`, `keras`, `clmr`, `panns` (optional `tags`: a preset, a list or a
file; `sample_rate`; for clmr `head_url` and `head_sha256`).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Pretrained", "SourceFile", "PRETRAINED", "list_pretrained", "get_pretrained", "resolve",
           "git_blob_sha1", "MIRROR_ENV", "BUNDLES_ENV"]

MIRROR_ENV = "SAMPLECNN_MIRROR"
BUNDLES_ENV = "SAMPLECNN_BUNDLES"
FORMATS = ("samplecnn", "sota", "keras", "clmr", "panns")
_CHUNK = 1 << 16
_TIMEOUT_S = 60.0
_WAIT_S = 1800.0  # another process downloading the same name is worth waiting for

SOTA_COMMIT = "36aa13b7205ff156cf4dcab60fd69957da453151"
SOTA_HOME = "https://github.com/minzwon/sota-music-tagging-models"
CLMR_HOME = "https://github.com/Spijkervet/CLMR"
PANNS_HOME = "https://github.com/qiuqiangkong/audioset_tagging_cnn"
PANNS_RECORD = "https://zenodo.org/record/3987831"


@dataclass(frozen=True)
class SourceFile:
    """One file to download: its URL and what it is checked against (a git blob id, a
    SHA-256, or neither: the SHA-256 of the first download is recorded)."""

    url: str
    git_sha1: str | None = None
    sha256: str | None = None

    @property
    def file_name(self) -> str:
        # Zenodo's names hold "=", sent as "%3D": the file is saved under its real name.
        return urllib.parse.unquote(Path(urllib.parse.urlparse(self.url).path).name)

    @property
    def integrity(self) -> str:
        if self.git_sha1:
            return f"git-blob-sha1:{self.git_sha1}"
        if self.sha256:
            return f"sha256:{self.sha256}"
        return "sha256 recorded on first download"


@dataclass(frozen=True)
class Pretrained:
    """A registry entry: where the weights come from and what they are."""

    name: str
    description: str
    files: tuple[SourceFile, ...]
    format: str
    tags: Any  # a preset name, a list of names or a file; None: the checkpoint's own
    sample_rate: int | None  # None: the checkpoint's own (user bundles in samplecnn format)
    input_samples: int | None = 59049
    dataset: str = ""
    reported: dict[str, Any] = field(default_factory=dict)
    license: str = ""
    source: str = ""

    def tag_names(self) -> list[str] | None:
        from samplecnn.importers import preset_tags

        if isinstance(self.tags, (list, tuple)):
            return list(self.tags)
        if isinstance(self.tags, str):
            try:
                return preset_tags(self.tags)
            except ValueError:
                return None  # a file of the user's, read at conversion
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "url": self.files[0].url,
            "files": [{"url": f.url, "integrity": f.integrity} for f in self.files],
            "format": self.format, "dataset": self.dataset,
            "tag_preset": self.tags if isinstance(self.tags, str) else None,
            "tags": self.tag_names(), "sample_rate": self.sample_rate,
            "input_samples": self.input_samples, "reported": dict(self.reported),
            "license": self.license, "source": self.source,
        }


def _sota(data: str, kind: str, blob: str, tags: str, dataset: str, reported: dict, data_license: str):
    model = "SampleCNN" if kind == "sample" else "SampleCNN + residual squeeze-excitation (Kim et al. 2018)"
    return Pretrained(
        name=f"sota-{data}-{kind}",
        description=f"{model}, trained on {dataset} by sota-music-tagging-models (Won et al. 2020)",
        files=(SourceFile(f"https://raw.githubusercontent.com/minzwon/sota-music-tagging-models/"
                          f"{SOTA_COMMIT}/models/{data}/{kind}/best_model.pth", git_sha1=blob),),
        format="sota", tags=tags, sample_rate=16000, dataset=dataset, reported=reported,
        license=f"code MIT (sota-music-tagging-models); weights published without a license of "
                f"their own; trained on {dataset} ({data_license})",
        source=f"{SOTA_HOME}/tree/{SOTA_COMMIT}/models/{data}/{kind}",
    )


_WON2020 = "Won et al. 2020 (SMC), Table 2, test set"
_MTAT_LICENSE = "MagnaTagATune: CC BY-NC-SA 1.0"
_MSD_LICENSE = "Million Song Dataset / Last.fm tags: research use"
_JAMENDO_LICENSE = "MTG-Jamendo: non-commercial research use, audio under Creative Commons licenses"
_NOT_TRANSCRIBED = {"note": "reported in Won et al. 2020, Table 2; not transcribed here (the paper "
                              "could not be read from this project's machines)"}


def _clmr(version: str, enc: str, head: str, batch_epochs: str, reported: dict) -> Pretrained:
    return Pretrained(
        name=f"clmr-mtat-{version}",
        description=f"CLMR contrastive SampleCNN encoder ({batch_epochs}) + linear classifier, "
                    "MagnaTagATune (Spijkervet and Burgoyne 2021)",
        files=(SourceFile(f"{CLMR_HOME}/releases/download/{enc}"), SourceFile(f"{CLMR_HOME}/releases/download/{head}")),
        format="clmr", tags="clmr-mtat", sample_rate=22050, dataset="MagnaTagATune",
        reported=reported,
        license=f"code MIT (CLMR); weights published without a license of their own; trained on "
                f"MagnaTagATune ({_MTAT_LICENSE})",
        source=f"{CLMR_HOME}/releases",
    )


def _panns(model: str, file: str, mean_ap: float, convs: str) -> Pretrained:
    return Pretrained(
        name=f"panns-{model.lower()}",
        description=f"PANNs' {model} ({convs}), AudioSet's 527 sound classes, any length at 32 kHz "
                    "(Kong et al. 2020)",
        files=(SourceFile(f"{PANNS_RECORD}/files/{urllib.parse.quote(file)}?download=1"),),
        format="panns", tags="panns-audioset", sample_rate=32000, input_samples=320000,
        dataset="AudioSet", reported={"map": mean_ap, "where": "PANNs README, mAP table (LeeNet24 "
                                                               "listed as LeeNet18)"},
        license="weights CC BY 4.0 (Zenodo record 3987831); code MIT (audioset_tagging_cnn); "
                "AudioSet labels CC BY 4.0",
        source=f"{PANNS_RECORD} (earlier record 3960586 holds the same names); {PANNS_HOME}",
    )


_BUILTIN: list[Pretrained] = [
    _sota("mtat", "sample", "0ce2469da86fddc73be75936fbcddc9471e7ce21", "sota-mtat", "MagnaTagATune",
          {"roc_auc": 0.9058, "pr_auc": 0.4422, "where": _WON2020}, _MTAT_LICENSE),
    _sota("mtat", "se", "5f20d799b05a88ebbc2140f75c663283d556e3de", "sota-mtat", "MagnaTagATune",
          {"roc_auc": 0.9103, "pr_auc": 0.4520, "where": _WON2020}, _MTAT_LICENSE),
    _sota("msd", "sample", "3888125187cd62bff2ec7f6763b474b916407d95", "sota-msd", "Million Song Dataset",
          {"roc_auc": 0.8789, "pr_auc": 0.2959, "where": _WON2020}, _MSD_LICENSE),
    _sota("msd", "se", "7d5eca8d6a5d47631126042c3d40d7dcf6a9a451", "sota-msd", "Million Song Dataset",
          {"roc_auc": 0.8838, "pr_auc": 0.3109, "where": _WON2020}, _MSD_LICENSE),
    _sota("jamendo", "sample", "db5bedf34a0ea6500d95e254a43a203a185cec06", "sota-jamendo", "MTG-Jamendo",
          dict(_NOT_TRANSCRIBED), _JAMENDO_LICENSE),
    _sota("jamendo", "se", "a4b55509c3af0558c02723322f3aab5122ae8d14", "sota-jamendo", "MTG-Jamendo",
          dict(_NOT_TRANSCRIBED), _JAMENDO_LICENSE),
    _clmr("v2", "2.0/clmr_checkpoint_10000.zip", "2.0/finetuner_checkpoint_200.zip", "batch 96, 10,000 epochs",
          {"roc_auc": 0.887, "pr_auc": 0.356, "where": "CLMR README, pre-trained models table"}),
    _clmr("v1", "1.0/clmr_checkpoint_1550.pt", "1.0-l/finetuner_checkpoint_20.pt", "batch 48, 1,550 epochs",
          {"roc_auc": 0.8771, "pr_auc": 0.3427, "where": "CLMR README, pre-trained models table"}),
    _panns("LeeNet11", "LeeNet11_mAP=0.266.pth", 0.266, "one conv per block"),
    _panns("LeeNet24", "LeeNet24_mAP=0.336.pth", 0.336, "two convs per block"),
]
#: The built-in registry, by name.
PRETRAINED: dict[str, Pretrained] = {p.name: p for p in _BUILTIN}


# -- the registry, with the user's bundles -----------------------------------------------------
def _bundles() -> dict[str, Pretrained]:
    path = os.environ.get(BUNDLES_ENV)
    if not path:
        return {}
    src = f"{BUNDLES_ENV}={path}"
    try:
        rows = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{src}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{src}: not a readable JSON file ({type(err).__name__}: {err})") from None
    if not isinstance(rows, list):
        raise ValueError(f"{src}: expected a JSON list of bundles")
    out: dict[str, Pretrained] = {}
    for i, row in enumerate(rows):
        where = f"{src}: bundle {i + 1}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: expected an object")
        missing = [k for k in ("name", "url", "sha256", "format") if not row.get(k)]
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)}")
        name, fmt = str(row["name"]), str(row["format"])
        if name in PRETRAINED or name in out:
            raise ValueError(f"{where}: the name {name!r} is taken (built-in or listed twice)")
        if fmt not in FORMATS:
            raise ValueError(f"{where}: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        files = [SourceFile(_check_url(str(row["url"]), where), sha256=str(row["sha256"]).lower())]
        if fmt == "clmr" and row.get("head_url"):
            files.append(SourceFile(_check_url(str(row["head_url"]), where),
                                    sha256=str(row.get("head_sha256") or "").lower() or None))
        default_tags = {"sota": "sota-mtat", "keras": "keras-mtat", "clmr": "clmr-mtat",
                        "panns": "panns-audioset"}.get(fmt)
        out[name] = Pretrained(
            name=name, description=str(row.get("description") or f"{fmt} weights from {path}"),
            files=tuple(files), format=fmt, tags=None if fmt == "samplecnn" else row.get("tags", default_tags),
            sample_rate=(None if fmt == "samplecnn"
                         else int(row.get("sample_rate") or {"sota": 16000, "panns": 32000}.get(fmt, 22050))),
            # The weight shapes decide; a bundle may state it to have it checked.
            input_samples=int(row["input_samples"]) if row.get("input_samples") else None,
            dataset=str(row.get("dataset") or ""),
            reported=dict(row.get("reported") or {}), license=str(row.get("license") or ""),
            source=str(path),
        )
    return out


def _check_url(url: str, where: str) -> str:
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("http", "https", "file"):
        raise ValueError(f"{where}: url must be http(s) or file, got {url!r}")
    return url


def _registry() -> dict[str, Pretrained]:
    return {**PRETRAINED, **_bundles()}


def list_pretrained() -> list[Pretrained]:
    """Every entry: the built-in registry, then the user's bundles (`SAMPLECNN_BUNDLES`)."""
    return list(_registry().values())


def get_pretrained(name: str) -> Pretrained:
    reg = _registry()
    if name not in reg:
        import difflib

        close = difflib.get_close_matches(name, list(reg), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown pretrained weights {name!r}{hint} (see `samplecnn pretrained list`)")
    return reg[name]


# -- integrity ---------------------------------------------------------------------------------
def git_blob_sha1(path: str | os.PathLike) -> str:
    """Git's object id of a file's content: SHA-1 of `b"blob <size>\\0" + content`."""
    p = Path(path)
    h = hashlib.sha1(b"blob %d\0" % p.stat().st_size)
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _verify(path: Path, sf: SourceFile, recorded: dict, what: str) -> str:
    """Check `path` against the file's published hash, else against the SHA-256 recorded
    at its first download; returns the file's SHA-256."""
    digest = _sha256(path)
    if sf.git_sha1:
        got = git_blob_sha1(path)
        if got != sf.git_sha1:
            raise ValueError(f"{what}: git blob id {got} does not match the published "
                             f"{sf.git_sha1} (corrupt or changed file); nothing was kept")
    expected = sf.sha256 or (recorded.get(sf.file_name) or {}).get("sha256")
    if expected and digest != expected:
        origin = "expected" if sf.sha256 else "recorded at the first download"
        raise ValueError(f"{what}: sha256 {digest} does not match the {origin} {expected} "
                         "(corrupt or changed file); nothing was kept")
    return digest


# -- downloads ---------------------------------------------------------------------------------
def _source_url(entry: Pretrained, sf: SourceFile) -> str:
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return f"{mirror.rstrip('/')}/{urllib.parse.quote(entry.name)}/{urllib.parse.quote(sf.file_name)}"
    return sf.url


def _download(url: str, dest: Path, by_hand: Path) -> None:
    """Fetch `url` into `dest` (a temporary name); ValueError in one line on any failure."""
    hint = f"without a network, download {url} elsewhere and put it at {by_hand}"
    try:
        resp = urllib.request.urlopen(url, timeout=_TIMEOUT_S)  # noqa: S310 (http/https/file only)
    except urllib.error.HTTPError as err:
        raise ValueError(f"cannot download {url}: HTTP {err.code} {err.reason}; "
                         f"put the file at {by_hand} by hand, or set {MIRROR_ENV}") from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise ValueError(f"cannot download {url} ({reason}); {hint}") from None
    with resp:
        length = resp.headers.get("Content-Length") if hasattr(resp, "headers") else None
        total = int(length) if length and length.isdigit() else None
        bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, desc=by_hand.name, file=sys.stderr,
                       leave=False)
        got = 0
        try:
            with open(dest, "wb") as f:
                while True:
                    try:
                        chunk = resp.read(_CHUNK)
                    except Exception as err:  # http.client.IncompleteRead, a reset connection, ...
                        raise ValueError(f"download of {url} interrupted after {got} bytes "
                                         f"({type(err).__name__}); nothing was kept") from None
                    if not chunk:
                        break
                    f.write(chunk)
                    got += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    if total is not None and got != total:
        raise ValueError(f"download of {url} interrupted: {got} of {total} bytes; nothing was kept")


def _entry_dir(entry: Pretrained) -> Path:
    from samplecnn.cache import cache_dir

    return cache_dir("pretrained", entry.name)


def _read_sources(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _fetch_file(entry: Pretrained, sf: SourceFile, folder: Path, sources: dict,
                fetched: list[Path], notes: list[str]) -> Path:
    """The verified source file in `folder`: taken as it is when present (put there by
    hand, or kept from an earlier download), else downloaded to a temporary name that is
    renamed only once verified (and appended to `fetched`, so that the caller can remove
    it if the weights then fail to convert). A hash recorded for a source that publishes
    none goes into `sources`, and its note into `notes`: the caller says it only once
    `sources.json` is written."""
    from samplecnn.atomic import atomic_path

    dest = folder / sf.file_name
    if dest.is_file():
        digest = _verify(dest, sf, sources, str(dest))
    else:
        url = _source_url(entry, sf)
        with atomic_path(dest) as tmp:
            _download(url, tmp, dest)
            digest = _verify(tmp, sf, sources, url)
        fetched.append(dest)
    if not sf.git_sha1 and not sf.sha256 and sf.file_name not in sources:
        sources[sf.file_name] = {"sha256": digest, "url": sf.url,
                                 "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        notes.append(f"{sf.url} publishes no hash; recorded its sha256 {digest} in "
                     f"{folder / 'sources.json'} (later downloads are checked against it)")
    return dest


def _convert(entry: Pretrained, files: list[Path], out: Path) -> None:
    from samplecnn.checkpoint import load_model, save_checkpoint
    from samplecnn.importers import convert

    info = {"name": entry.name, "urls": [f.url for f in entry.files], "license": entry.license}
    if entry.format == "samplecnn":
        model = load_model(files[0])
    else:
        kwargs: dict[str, Any] = {"tags": entry.tags, "sample_rate": entry.sample_rate}
        if entry.format == "clmr" and len(files) > 1:
            kwargs["head"] = files[1]
        model = convert(files[0], entry.format, **kwargs)
    if entry.input_samples is not None and model.config.input_samples != entry.input_samples:
        raise ValueError(f"{entry.name}: the converted model takes {model.config.input_samples} "
                         f"samples, the registry says {entry.input_samples}")
    save_checkpoint(out, model, pretrained=info, imported_from=model.config.extra.get("imported_from"))


def resolve(name: str, *, quiet: bool = False) -> Path:
    """The cached samplecnn checkpoint of the pretrained weights `name`, made on first use.

    Raises ValueError (one line: what failed and why) on an unknown name, a failed,
    interrupted or corrupt download, or weights that do not convert; nothing partial is
    left in the cache. Concurrent callers (threads or processes) wait for the one that
    produces the checkpoint instead of downloading it twice.
    """
    from samplecnn.atomic import write_json
    from samplecnn.locks import exclusive

    entry = get_pretrained(name)
    folder = _entry_dir(entry)
    out = folder / f"{entry.name}.ckpt"
    sources_path = folder / "sources.json"
    if _cached_ok(out, sources_path):
        return out

    def say(msg: str) -> None:
        if not quiet:
            print(f"samplecnn: {msg}", file=sys.stderr)

    with exclusive(out, f"pretrained weights {entry.name}", timeout=_WAIT_S):
        if _cached_ok(out, sources_path):  # made by the process we waited for
            return out
        if out.is_file():
            say(f"{out}: the cached checkpoint does not match its recorded sha256; converting again")
            out.unlink()
        sources = _read_sources(sources_path)
        fetched: list[Path] = []  # downloaded by this call: removed again on any failure
        notes: list[str] = []
        try:
            files = [_fetch_file(entry, sf, folder, sources, fetched, notes) for sf in entry.files]
            try:
                _convert(entry, files, out)
            except (ValueError, FileNotFoundError) as err:
                kept = [str(f) for f in files if f not in fetched]
                said = ["the files downloaded now were removed"] if fetched else []
                if kept:
                    said.append(f"already in the cache (delete to download again): {', '.join(kept)}")
                raise ValueError(f"{entry.name}: the downloaded weights do not convert: {err}; "
                                 f"{'; '.join(said)}") from None
            sources[out.name] = {"sha256": _sha256(out)}
            write_json(sources_path, sources)
        except BaseException:
            # A download that fails to verify or convert leaves nothing behind: a later
            # run downloads again (a fixed mirror helps) instead of failing the same way.
            for f in fetched + [out]:
                f.unlink(missing_ok=True)
            raise
        for note in notes:  # only now is the record true
            say(note)
    return out


def _cached_ok(out: Path, sources_path: Path) -> bool:
    """The converted checkpoint exists and has the SHA-256 recorded when it was written
    (a later use notices a damaged cache entry instead of loading it)."""
    if not out.is_file():
        return False
    want = (_read_sources(sources_path).get(out.name) or {}).get("sha256")
    return want is not None and _sha256(out) == want

"""Packaging and shipped-config facts that nothing else keeps in sync."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_license_is_an_spdx_string_with_a_setuptools_that_reads_it():
    # A TOML table made setuptools print a deprecation warning (three times) on install;
    # the SPDX string needs setuptools >= 77 to be understood at all.
    meta = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))
    assert meta["project"]["license"] == "MIT"
    req = [r for r in meta["build-system"]["requires"] if r.startswith("setuptools")]
    assert len(req) == 1
    m = re.fullmatch(r"setuptools>=(\d+)(?:\.\d+)*", req[0].replace(" ", ""))
    assert m and int(m.group(1)) >= 77, req


# --------------------------------------------------------------- variants = overrides
def _registry_rows():
    from samplecnn.models.registry import PAPER_TABLE

    return [f"m{m}n{n}_{size}" for (m, size), rows in PAPER_TABLE.items() for n, _ in rows]


def test_variants_are_overrides_not_copied_yaml_files():
    # A variant is `model.name=<registry name>` on a base recipe: the 42 files that
    # restated the paper's table (and drifted from it) are gone.
    assert not (REPO / "configs" / "variants").exists()
    shipped = sorted(p.stem for p in (REPO / "configs").rglob("*.yaml"))
    assert not set(shipped) & set(_registry_rows())


@pytest.mark.parametrize("base", ["paper_mtat.yaml", "adam_mtat.yaml"])
def test_every_registry_name_is_a_model_name_override_of_a_base_recipe(base):
    from samplecnn.models import get_model_config, list_models
    from samplecnn.training.config import load_config

    names = list_models()
    assert set(_registry_rows()) <= set(names)
    for name in names:
        cfg = load_config(REPO / "configs" / base, [f"model.name={name}"])
        assert cfg["model"]["name"] == name
        model = dict(cfg["model"])
        # The base recipe adds nothing to the model: the variant is the registry row.
        assert get_model_config(model.pop("name"), **model) == get_model_config(name)


def test_docs_count_the_variant_rows_the_registry_has():
    n = len(_registry_rows())
    assert n == 42
    texts = {p: p.read_text("utf-8") for p in [REPO / "README.md", *(REPO / "docs").glob("*.md"),
                                                REPO / "src/samplecnn/models/registry.py"]}
    found = 0
    for p, text in texts.items():
        for m in re.finditer(r"(\d+)\s+rows\s+of\s+the\s+paper's\s+variant\s+table", text):
            found += 1
            assert int(m.group(1)) == n, f"{p.name} says {m.group(1)} rows, the registry has {n}"
        assert "configs/variants" not in text, p
    assert found >= 1


def test_the_cli_parser_and_help_import_neither_torch_nor_lightning():
    """Every `samplecnn` call builds the whole parser: it must not pay for torch or
    Lightning (seconds on a small machine) before the command that needs them runs."""
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[1] / "src"
    code = ("import sys; from samplecnn.cli import build_parser, main\n"
            "p = build_parser()\n"
            "for cmd in ([], ['bench', 'infer'], ['bench', 'train'], ['prepare'], ['import'],\n"
            "            ['train']):\n"
            "    try:\n"
            "        main(cmd + ['--help'])\n"
            "    except SystemExit as e:\n"
            "        assert e.code == 0, (cmd, e.code)\n"
            "heavy = sorted(m for m in ('torch', 'lightning', 'onnxruntime', 'nnAudio', 'ray')\n"
            "               if m in sys.modules)\n"
            "print('HEAVY', heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []", out.stdout[-500:]
    assert "retain-compile" in out.stdout and "onnxruntime" in out.stdout  # the choices shown


def test_no_import_circles():
    """No module of the package imports, directly or through others, a module that
    imports it back (module-level and function-level imports alike)."""
    import ast

    root = Path(__file__).resolve().parents[1] / "src"
    paths = {}
    for p in (root / "samplecnn").rglob("*.py"):
        parts = list(p.relative_to(root).with_suffix("").parts)
        paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    edges = {m: set() for m in paths}
    for m, p in paths.items():
        package = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                subs = [f"{mod}.{a.name}" for a in node.names]
                # `from pkg import submodule` needs the submodule, not the package's names.
                targets = [s for s in subs if s in paths]
                if len(targets) < len(subs):
                    targets.append(mod)
            else:
                continue
            for t in targets:
                while t and t not in paths:
                    t = t.rpartition(".")[0]
                if t and t != m:
                    edges[m].add(t)

    def reaches(start):
        seen, todo = set(), [start]
        while todo:
            for w in edges[todo.pop()]:
                if w not in seen:
                    seen.add(w)
                    todo.append(w)
        return seen

    circles = sorted({tuple(sorted({m, w})) for m in edges for w in edges[m] if m in reaches(w)})
    assert circles == [], circles

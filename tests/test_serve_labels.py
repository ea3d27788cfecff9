"""`labels` in the service: /v1/tag decides like `samplecnn tag` with the model's stored
thresholds, `threshold` / `at_least_one` in the query, /v1/model lists the thresholds."""
from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from samplecnn.checkpoint import save_checkpoint, set_thresholds  # noqa: E402
from samplecnn.cli import main  # noqa: E402
from samplecnn.models import create_model  # noqa: E402
from samplecnn.tagging import Tagger  # noqa: E402
from samplecnn.thresholds import Thresholds  # noqa: E402
from test_serve import running  # noqa: E402

TAGS = ["rock", "piano", "quiet", "male vocal"]
SR = 16000


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("labels")
    model = create_model("samplecnn_small", width=0.125, tags=TAGS, seed=1)
    plain = save_checkpoint(tmp / "m.ckpt", model)
    wav = tmp / "a.wav"
    sf.write(wav, (0.2 * np.random.default_rng(1).standard_normal(3 * SR)).astype(np.float32), SR)
    scores = np.array([Tagger.load(plain).tag(str(wav))["tags"][t] for t in TAGS])
    # two tags decided (threshold just below their score), two not
    order = np.argsort(-scores)
    values = scores + 0.02
    values[order[[0, 2]]] = scores[order[[0, 2]]] - 0.02
    fitted = set_thresholds(plain, Thresholds(np.clip(values, 0, 1), TAGS, split="valid"), tmp / "fitted.ckpt")
    out = tmp / "cli.json"
    assert main(["tag", str(fitted), str(wav), "-o", str(out), "--workers", "0", "-q"]) == 0
    cli = json.loads(out.read_text())[0]
    assert cli["labels"] == [TAGS[order[0]], TAGS[order[2]]]
    return {"fitted": fitted, "wav": wav, "scores": scores, "cli": cli, "values": values}


def test_tag_answers_the_cli_labels_and_the_query_decides(setup):
    data = setup["wav"].read_bytes()
    s = setup["scores"]
    with running(Tagger.load(setup["fitted"])) as srv:
        m = srv.call(srv.client.get("/v1/model")).json()
        assert m["thresholds"] == pytest.approx(np.clip(setup["values"], 0, 1).tolist(), abs=1e-6)
        r = srv.post("/v1/tag", "a.wav", data)
        assert r.status_code == 200, r.text
        assert r.json()["labels"] == setup["cli"]["labels"]
        r = srv.post("/v1/tag?threshold=0", "a.wav", data).json()
        assert r["labels"] == [TAGS[i] for i in np.argsort(-s)]
        r = srv.post("/v1/tag?threshold=1", "a.wav", data).json()
        assert r["labels"] == []
        r = srv.post("/v1/tag?threshold=1&at_least_one=true", "a.wav", data).json()
        assert r["labels"] == [TAGS[int(np.argmax(s))]]
        for bad in ("2", "-0.5", "nan", "x"):
            r = srv.post(f"/v1/tag?threshold={bad}", "a.wav", data)
            assert r.status_code == 422, bad
            assert "threshold" in r.json()["error"] and "\n" not in r.json()["error"]
        schema = srv.call(srv.client.get("/openapi.json")).json()
        assert "labels" in schema["components"]["schemas"]["TagOut"]["properties"]


def test_a_model_without_thresholds_answers_null_labels(setup, tmp_path):
    model = create_model("samplecnn_small", width=0.125, tags=TAGS, seed=1)
    with running(Tagger.from_model(model, backend="plain")) as srv:
        assert srv.call(srv.client.get("/v1/model")).json()["thresholds"] is None
        r = srv.post("/v1/tag", "a.wav", setup["wav"].read_bytes()).json()
        assert r["labels"] is None and r["tags"]

"The papermill study: `lasr reproduce` runs nbs/study/run.ipynb and leaves its results under OUT/PRESET/."
import json, subprocess, sys
from pathlib import Path
import nbformat
from lasr.synth import synth_corpus

LASR = Path(sys.executable).parent/"lasr"
ROOT = Path(__file__).resolve().parents[1]

def test_reproduce_smoke(tmp_path):
    corpus = synth_corpus(tmp_path/"corpus", n_dev=24, n_val=8, n_eval=8, seed=5, progress=False)
    r = subprocess.run([str(LASR), "reproduce", "--preset", "smoke", "--out", str(tmp_path/"reports"),
                        "--data-root", str(corpus), "--quiet"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path/"reports"/"smoke"
    for name in ("run.ipynb", "metrics.json", "predictions.csv", "recall.png", "training.png", "result.json",
                 "run/config.json", "run/best.json", "run/train.json"):
        assert (out/name).exists(), name
    nb = nbformat.read(out/"run.ipynb", as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    metrics = json.loads((out/"metrics.json").read_text())
    result = json.loads((out/"result.json").read_text())
    assert result["metrics"] == metrics and result["provenance"]["audio_pretrained"] is False
    assert metrics["n_items"] == 8 and metrics["n_queries"] == 40 and "mAP@16_multi" in metrics
    s = subprocess.run([str(LASR), "score", "--similarity", str(out/"predictions.csv"), "--captions",
                        str(corpus/"CLOTHO_v2.1"/"clotho_csv_files"/"clotho_captions_evaluation.csv"),
                        "--relevance", str(corpus/"relevance_evaluation.csv"), "--json"], capture_output=True, text=True)
    assert s.returncode == 0, s.stderr
    assert json.loads(s.stdout) == {k: v for k, v in metrics.items() if k not in ("n_queries", "n_items")}
    # a second reproduction into the same reports folder (as in a clone with committed reports) replaces the first
    r = subprocess.run([str(LASR), "reproduce", "--preset", "smoke", "--out", str(tmp_path/"reports"),
                        "--data-root", str(corpus), "--quiet", "--set", "run.seed=1"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out/"run"/"config.json").read_text())["run"]["seed"] == 1

def test_reproduce_bad_override_is_a_clear_error(tmp_path):
    r = subprocess.run([str(LASR), "reproduce", "--preset", "smoke", "--out", str(tmp_path), "--set", "optim.nope=1"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "optim.nope" in r.stderr and "Traceback" not in r.stderr

"End-to-end checks of the installed `lasr` command (exit codes, messages, the DCASE worked example)."
import json, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd
import pytest
from lasr.metrics import write_predictions

LASR = Path(sys.executable).parent/"lasr"   # the installed console script

def lasr(*args, cwd=None):
    return subprocess.run([str(LASR), *map(str, args)], capture_output=True, text=True, cwd=cwd)

@pytest.fixture
def clotho_csv(tmp_path):
    names = [f"{i:02d}.wav" for i in range(30)]
    df = pd.DataFrame({"file_name": names, **{f"caption_{c}": [f"clip {i} caption {c}" for i in range(30)] for c in range(1, 6)}})
    df.to_csv(tmp_path/"captions.csv", index=False)
    return tmp_path/"captions.csv", names

def test_score_worked_example(tmp_path, clotho_csv):
    "nbs/index.ipynb#metrics (worked example): relevant at ranks {0, 3, 20} with k=16 gives AP 0.5."
    captions, names = clotho_csv
    sim = np.tile(-np.arange(30, dtype=float), (150, 1))          # column j ranked j for every query
    queries = [f"clip 0 caption {c}" for c in range(1, 6)] + [f"clip {i} caption {c}" for i in range(1, 30) for c in range(1, 6)]
    write_predictions(tmp_path/"pred.csv", queries, names, sim)
    pd.DataFrame({"query": ["clip 0 caption 1"], "audio_filenames": [repr(["03.wav", "20.wav"])]}).to_csv(tmp_path/"rel.csv", index=False)
    r = lasr("score", "--similarity", tmp_path/"pred.csv", "--captions", captions, "--relevance", tmp_path/"rel.csv", "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert set(m) == {"R@1", "R@5", "R@10", "mAP@10", "mAP@16", "mAP@10_multi", "mAP@16_multi"}
    # queries of clip i find it at rank i: R@1 = 5/150, mAP@16 = mean over clips of 1/(i+1) for i<16
    assert m["R@1"] == pytest.approx(5 / 150)
    assert m["R@10"] == pytest.approx(50 / 150)
    assert m["mAP@16"] == pytest.approx(sum(1 / (i + 1) for i in range(16)) / 30)
    # query "clip 0 caption 1" has relevant ranks {0, 3, 20}: AP@16 = 0.5 instead of 1.0
    assert m["mAP@16_multi"] == pytest.approx(m["mAP@16"] - (1.0 - 0.5) / 150)

@pytest.mark.parametrize("problem, message", [
    ("missing", "not found"), ("nan", "NaN or infinite"), ("dupcol", "duplicate audio columns"),
    ("noquery", "no caption row"), ("nocol", "missing from the similarity columns"), ("badcols", "expected columns")])
def test_score_bad_input_exit_2(tmp_path, clotho_csv, problem, message):
    captions, names = clotho_csv
    queries = [f"clip {i} caption {c}" for i in range(30) for c in range(1, 6)]
    sim = np.eye(30)[np.repeat(np.arange(30), 5)]
    cols = list(names)
    if problem == "nan": sim[3, 4] = np.nan
    if problem == "dupcol": cols[1] = cols[0]
    if problem == "noquery": queries[7] = "nobody wrote this"
    if problem == "nocol": cols[5] = "other.wav"
    if problem == "badcols": pd.DataFrame({"name": names}).to_csv(captions, index=False)
    write_predictions(tmp_path/"pred.csv", queries, cols, sim)
    pred = tmp_path/("absent.csv" if problem == "missing" else "pred.csv")
    r = lasr("score", "--similarity", pred, "--captions", captions)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr

def test_help_for_every_subcommand():
    from lasr.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert "score" in sub.choices
    for name in sub.choices:
        r = lasr(name, "--help")
        assert r.returncode == 0 and "usage: lasr " + name in r.stdout, (name, r.stderr)

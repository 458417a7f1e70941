"""The papermill study: `lasr reproduce` runs nbs/study/table1.ipynb and table2.ipynb, each running run.ipynb once per
configuration into the run cache OUT/PRESET/runs/<run id>/, and assembles the tables from the runs."""
import json, shutil
from pathlib import Path
import nbformat, pandas as pd, pytest
from lasr.synth import synth_corpus
from conftest import lasr

ROOT = Path(__file__).resolve().parents[1]

def _reproduce(out, *args):
    return lasr("reproduce", "--preset", "smoke", "--out", out, *args, cwd=ROOT)

def _ran(stderr: str) -> list[str]:
    "Run ids the study (re)ran, from its progress lines."
    return [l.split(" run ")[1].split()[0] for l in stderr.splitlines() if ": ran run " in l]

@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("study")
    r = _reproduce(tmp/"reports")
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp, r

def test_both_tables_come_from_their_runs(study):
    tmp, r = study
    out = tmp/"reports"/"smoke"
    for name in ("table1.ipynb", "table1.md", "table1.csv", "table1.png", "table2.ipynb", "table2.md", "table2.csv",
                 "table2.png", "table2_differences.csv"):
        assert (out/name).exists(), name
    for t in ("table1", "table2"):
        nb = nbformat.read(out/f"{t}.ipynb", as_version=4)
        assert not [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
        assert str(tmp) not in (out/f"{t}.ipynb").read_text() + (out/f"{t}.md").read_text()   # no machine paths
    t1, t2 = pd.read_csv(out/"table1.csv"), pd.read_csv(out/"table2.csv")
    assert len(t1) == 2 and len(t2) == 2 and len(_ran(r.stderr)) == 5   # 2 + stage 1 + 2 rows
    md = (out/"table1.md").read_text() + (out/"table2.md").read_text()
    for df, metrics in ((t1, ("R@1", "R@10", "R@5", "mAP@10")), (t2, ("mAP@16", "mAP@10", "R@1", "R@5", "R@10"))):
        for row in df.to_dict("records"):
            m = json.loads((out/"runs"/row["run"]/"metrics.json").read_text())
            for k in metrics + ("mAP@16_multi",):
                assert row[k] == m[k] and [row[f"{k} low"], row[f"{k} high"]] == m["ci"][k], (row["run"], k)
                # the markdown shows the same number x100 with its interval
                assert f"{100 * m[k]:.2f} [{100 * m['ci'][k][0]:.2f}, {100 * m['ci'][k][1]:.2f}]" in md
    d = pd.read_csv(out/"table2_differences.csv")
    assert list(d.row) == ["mean pooling"]
    full, hop = (json.loads((out/"runs"/run/"metrics.json").read_text()) for run in t2.run)
    assert d.loc[0, "mAP@10"] == pytest.approx(hop["mAP@10"] - full["mAP@10"], abs=1e-12)

def test_the_run_cache(study):
    tmp, _ = study
    out = tmp/"reports"/"smoke"
    before = {p.name for p in (out/"runs").iterdir()}
    r = _reproduce(tmp/"reports")                                  # again: nothing is redone
    assert r.returncode == 0, r.stderr[-3000:]
    assert _ran(r.stderr) == [] and {p.name for p in (out/"runs").iterdir()} == before
    victim = pd.read_csv(out/"table1.csv").run[1]
    shutil.rmtree(out/"runs"/victim)                               # deleting one run redoes exactly that run
    r = _reproduce(tmp/"reports", "--only", "table1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _ran(r.stderr) == [victim]
    assert (out/"table2.md").exists()                              # --only table1 keeps the other table

def test_a_failed_study_keeps_the_previous_tables(study):
    tmp, _ = study
    out = tmp/"reports"/"smoke"
    before = (out/"table2.md").read_text()
    r = _reproduce(tmp/"reports", "--only", "table2", "--set", "optim.lr=-1")   # AdamW refuses a negative lr
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "unchanged" in r.stderr
    assert (out/"table2.md").read_text() == before and (tmp/"reports"/"smoke.failed").is_dir()

def test_reproduce_bad_override_is_a_clear_error(tmp_path, cli):
    r = cli("reproduce", "--preset", "smoke", "--out", tmp_path, "--set", "optim.nope=1")
    assert r.returncode == 2 and "optim.nope" in r.stderr and "Traceback" not in r.stderr

def test_the_paper_study_lists_everything_missing_at_once(tmp_path, cli):
    corpus = synth_corpus(tmp_path/"corpus", n_dev=4, n_val=2, n_eval=2, seed=1, progress=False)
    r = cli("reproduce", "--preset", "paper", "--out", tmp_path/"reports", "--data-root", corpus)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    for what in ("corpus audiocaps", "corpus wavcaps", "exclusion list", "audio weights passt", "audio weights clap-htsat",
                 "text weights roberta-large", "text weights gtr-t5-large", "GPU"):
        assert what in r.stderr, what
    assert not (tmp_path/"reports").exists()                       # before any work

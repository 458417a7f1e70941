"""The papermill study: `lasr reproduce` runs nbs/study/table1.ipynb and table2.ipynb, each running run.ipynb once per
configuration into the run cache OUT/PRESET/runs/<run id>/, and assembles the tables from the runs."""
import json, re, shutil
from pathlib import Path
import nbformat, pandas as pd, pytest
from lasr.synth import synth_corpus
from conftest import lasr, study_copy

ROOT = Path(__file__).resolve().parents[1]

def _reproduce(out, *args):
    return lasr("reproduce", "--preset", "smoke", "--out", out, *args, cwd=ROOT)

def _ran(stderr: str) -> list[str]:
    "Run ids the study (re)ran, from its progress lines."
    return [l.split(" run ")[1].split()[0] for l in stderr.splitlines() if ": ran run " in l]

@pytest.fixture(scope="module")
def study(installed_study, tmp_path_factory):
    """The whole smoke study in TMP/reports/smoke, and the `lasr reproduce` that made it: run by this checkout's wheel
    installed in a clean venv (conftest's `installed_study`, which test_package.py checks), copied here; the tests
    below run this checkout's `lasr` on the copy, which must find the installed package's runs in its run cache."""
    return study_copy(installed_study, tmp_path_factory.mktemp("study")), installed_study.study

def test_both_tables_come_from_their_runs(study, installed_study):
    tmp, r = study
    out = tmp/"reports"/"smoke"
    for name in ("table1.ipynb", "table1.md", "table1.csv", "table1.png", "table2.ipynb", "table2.md", "table2.csv",
                 "table2.png", "table2_differences.csv"):
        assert (out/name).exists(), name
    for t in ("table1", "table2"):
        nb = nbformat.read(out/f"{t}.ipynb", as_version=4)
        assert not [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
        text = (out/f"{t}.ipynb").read_text() + (out/f"{t}.md").read_text()
        assert str(installed_study.tmp) not in text and str(tmp) not in text   # no machine paths
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

def test_the_run_cache(study, cli):
    "Run again, a study redoes exactly the runs that are gone; the others (stage 1 and a row from it too) are cached."
    tmp, _ = study
    out = tmp/"reports"/"smoke"
    before = {p.name for p in (out/"runs").iterdir()}
    table1 = (out/"table1.md").read_text()
    victim = pd.read_csv(out/"table2.csv").run[1]                 # a Table 2 row: it starts from the stage-1 run
    shutil.rmtree(out/"runs"/victim)                               # deleting one run redoes exactly that run
    r = _reproduce(tmp/"reports", "--only", "table2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _ran(r.stderr) == [victim] and {p.name for p in (out/"runs").iterdir()} == before
    assert (out/"table1.md").read_text() == table1                 # --only table2 keeps the other table
    # and nothing is redone for the other table either: every run id of both tables is found again (no training)
    r = cli("reproduce", "--preset", "smoke", "--out", tmp/"reports", "--plan", "--quiet")
    assert r.returncode == 0 and "5 runs: 5 cached, 0 to run" in r.stdout, r.stdout + r.stderr

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

def test_a_users_study_adds_one_row_and_reuses_the_cache(study, cli):
    "Issue 22: a user's file = the smoke study plus one Table 2 row; --plan shows it, and it runs exactly that row."
    tmp, _ = study
    smoke = tmp/"reports"/"smoke"
    before = {p.name for p in (smoke/"runs").iterdir()}
    t2 = (smoke/"table2.md").read_text()
    f = tmp/"mine.toml"
    f.write_text((ROOT/"nbs"/"study"/"smoke.toml").read_text()
                 + '\n[[table2.rows]]\nname = "hop 2.5 s"\noverrides = ["audio.hop_seconds=2.5"]\nfrom = "stage1"\n')
    r = cli("reproduce", "--preset", "smoke", "--out", tmp/"reports", "--plan", "--quiet")
    plan = set(re.findall(r"\b[0-9a-f]{12}\b", r.stdout))
    assert r.returncode == 0 and "5 runs: 5 cached, 0 to run" in r.stdout, r.stdout   # the plan's ids are the runs'
    tables = {*pd.read_csv(smoke/"table1.csv").run, *pd.read_csv(smoke/"table2.csv").run}
    assert len(plan) == 5 and tables < plan <= before                  # the tables' runs and stage 1
    r = cli("reproduce", "--study", f, "--out", tmp/"reports", "--plan", "--only", "table2", "--quiet")
    assert r.returncode == 0 and "4 runs: 3 cached, 1 to run" in r.stdout and "hop 2.5 s" in r.stdout, r.stdout
    r = lasr("reproduce", "--study", f, "--out", tmp/"reports", "--only", "table2", cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    new = {p.name for p in (smoke/"runs").iterdir()} - before          # one run cache for the studies of a preset
    assert len(_ran(r.stderr)) == 1 and set(_ran(r.stderr)) == new
    t = pd.read_csv(tmp/"reports"/"mine"/"table2.csv")
    assert list(t.row) == ["full system", "mean pooling", "hop 2.5 s"] and t.run.iloc[2] in new
    assert list(t.run[:2]) == list(pd.read_csv(smoke/"table2.csv").run)   # the cached rows are the smoke study's runs
    assert "(mine study, smoke preset)" in (tmp/"reports"/"mine"/"table2.md").read_text()
    assert (smoke/"table2.md").read_text() == t2                       # the smoke study's tables are its own

"""Study rows that use other rows (issue 24, item 3): a Table 2 row distilled from earlier rows' runs (`teachers`) and
a score-averaged ensemble of them (`ensemble`): the file's checks, the plan's order and run ids, and a tiny study
(the smoke study's stage 1 and full system, a distilled row and an ensemble) run end to end by `lasr reproduce`."""
import json, re
from pathlib import Path
import pandas as pd, pytest
from lasr.study import study_file
from conftest import lasr, study_copy

ROOT = Path(__file__).resolve().parents[1]
KD = ('\n[[table2.rows]]\nname = "+ distillation"\nteachers = ["full system"]\n'
      'overrides = ["loss.soft_weight=1.0", "loss.hard_weight=0.0"]\nfrom = "stage1"\n')
ENS = '\n[[table2.rows]]\nname = "ensemble"\nensemble = ["full system", "+ distillation"]\n'
MEAN = '\n[[table2.rows]]\nname = "mean pooling"\noverrides = ["model.pooling=mean"]\nfrom = "stage1"\n'

def _study(tmp_path, rows: str, name: str = "kd.toml", seeds: str = "[0]") -> Path:
    "The smoke study with Table 2's rows after the full system replaced by `rows`."
    s = study_file("smoke").read_text().replace("seeds = [0]", f"seeds = {seeds}")
    assert MEAN in s
    p = tmp_path/name
    p.write_text(s.replace(MEAN, "") + rows)
    return p

BAD = {   # rows after the full system: the problem the message names
    "unknown row": (KD.replace('["full system"]', '["nope"]'), "teachers: 'nope' is not a row of the table"),
    "a later row": (KD.replace('["full system"]', '["later"]') + '\n[[table2.rows]]\nname = "later"\n',
                    "teachers: 'later' comes later in the table"),
    "unknown seed": (KD.replace('["full system"]', '["full system@4"]'), "teachers: 'full system' has no seed 4 (its seeds: 0)"),
    "no soft weight": (KD.replace('"loss.soft_weight=1.0", ', ""), "teachers: a row with teachers needs a positive soft weight"),
    "an ensemble that trains": (KD + ENS + 'seeds = [0]\n', "an ensemble trains nothing, so it takes no seeds"),
    "teachers and ensemble": (KD.replace('from = "stage1"', 'ensemble = ["full system"]'),
                              "has both teachers (a distilled model) and ensemble (no model)"),
}

@pytest.mark.parametrize("problem", list(BAD))
def test_a_bad_row_stops_before_any_run(problem, tmp_path, cli):
    rows, says = BAD[problem]
    f = _study(tmp_path, rows)
    r = cli("reproduce", "--study", f, "--out", tmp_path/"reports", "--plan")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"study file {f}: table2.rows[" in r.stderr and says in r.stderr, r.stderr
    assert not (tmp_path/"reports").exists()

def _plan(cli, f, out) -> list[tuple[str, str]]:
    "(row, run id) of each Table 2 run of the plan, in its order."
    r = cli("reproduce", "--study", f, "--out", out, "--plan", "--only", "table2", "--quiet")
    assert r.returncode == 0, r.stderr
    return [(m.group(1).strip(), m.group(3)) for m in re.finditer(r"^(?:stage1|table2)\s+(.+?)\s+(\d+|-)\s+([0-9a-f]{12})\s", r.stdout, re.M)]

def test_teachers_come_first_and_their_runs_make_the_run_id(tmp_path, cli):
    out = tmp_path/"reports"
    p = _plan(cli, _study(tmp_path, KD + ENS, seeds="[0, 1]"), out)
    assert [r for r, _ in p] == ["stage 1", "full system", "full system", "+ distillation", "+ distillation", "ensemble"]
    # other teachers (the full system's seed 1 only): the distilled rows are other runs, the rest the same
    q = _plan(cli, _study(tmp_path, KD.replace('["full system"]', '["full system@1"]') + ENS, "one.toml", "[0, 1]"), out)
    assert p[:3] == q[:3] and p[3][1] != q[3][1] and p[4][1] != q[4][1]
    assert p[5][1] != q[5][1]   # the ensemble's members changed with them
    # the same study again: the same ids
    assert _plan(cli, _study(tmp_path, KD + ENS, "again.toml", "[0, 1]"), out) == p

def test_a_study_with_a_distilled_row_and_an_ensemble(installed_study, tmp_path, cli):
    """The smoke study's stage 1 and full system (the installed package's runs, copied), the full system distilled
    into a new stage 2, and the ensemble of both."""
    f = _study(tmp_path, KD + ENS)
    out = study_copy(installed_study, tmp_path)/"reports"
    r = lasr("reproduce", "--study", f, "--out", out, "--only", "table2", cwd=ROOT, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    res, runs = out/"kd", out/"smoke"/"runs"
    t = pd.read_csv(res/"table2.csv")
    assert list(t.row) == ["full system", "+ distillation", "ensemble"]
    full, kd, ens = t.run
    assert full == pd.read_csv(out/"smoke"/"table2.csv").run[0] and f"full system: cached run {full}" in r.stderr
    s = json.loads((runs/kd/"run"/"train.json").read_text())                 # the student was taught by the full system
    assert [x["run"] for x in s["teachers"]] == [full]
    e = json.loads((runs/ens/"result.json").read_text())                     # the ensemble: a run of the cache
    assert e["ensemble"]["members"] == [full, kd] and (runs/ens/"predictions.csv").is_file()
    d = pd.read_csv(res/"table2_differences.csv").set_index("row")
    assert list(d.index) == ["+ distillation", "ensemble"]
    m = {k: json.loads((runs/x/"result.json").read_text())["metrics"] for k, x in (("full", full), ("ens", ens))}
    assert d.loc["ensemble", "mAP@10"] == pytest.approx(m["ens"]["mAP@10"] - m["full"]["mAP@10"], abs=1e-12)
    md = (res/"table2.md").read_text()
    for row in ("+ distillation", "ensemble"):   # each with its paired difference and interval
        assert re.search(rf"^\| {re.escape(row)} \| [+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]", md, re.M), md
    assert "- ensemble: score-averaged ensemble of full system (seed 0), + distillation (seed 0)" in md
    p = cli("reproduce", "--study", f, "--out", out, "--plan", "--only", "table2", "--quiet")   # everything is cached
    assert "4 runs: 4 cached, 0 to run" in p.stdout, p.stdout

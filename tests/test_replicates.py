"""Replicate seeds (issue 22, item 2): a row trained with several seeds is one run per seed; its table row is the mean
over the seeds with a 95% interval from a two-level bootstrap (seeds, then clips) computed from every seed's
predictions; its differences to the full system are seed-matched; one seed gives exactly the one-seed tables.
Cheap: fake finished runs (predictions.csv and result.json), no training."""
import json
from dataclasses import replace
from pathlib import Path
import numpy as np
import pandas as pd
import pytest
from lasr.metrics import write_predictions, score_predictions, compare_predictions
from lasr.study import (Cell, FULL, TABLE2_METRICS, DONE, load_study, study_file, results_frame, seed_frame, csv_frame,
                        display_frame, paired_differences, display_differences, seed_summary, seed_differences,
                        with_ci, interval_note, read_run)

N_CLIPS, N_CAPS = 12, 2
NAMES = [f"c{i}.wav" for i in range(N_CLIPS)]
QUERIES = [f"clip {i} caption {j}" for i in range(N_CLIPS) for j in range(N_CAPS)]
METRICS = TABLE2_METRICS


@pytest.fixture
def caps(tmp_path):
    p = tmp_path / "captions.csv"
    pd.DataFrame({"file_name": NAMES, **{f"caption_{j + 1}": [f"clip {i} caption {j}" for i in range(N_CLIPS)]
                                         for j in range(N_CAPS)}}).to_csv(p, index=False)
    return p


def sim_of(quality: float, seed: int) -> np.ndarray:
    "Similarities whose ranking is better the higher `quality` is, noisy by `seed`."
    return quality * np.repeat(np.eye(N_CLIPS), N_CAPS, axis=0) + np.random.default_rng(seed).standard_normal((len(QUERIES), N_CLIPS))


def fake_run(d: Path, sim: np.ndarray, caps: Path) -> Path:
    "A finished run as run.ipynb leaves it: predictions.csv and result.json (metrics with their clip intervals)."
    d.mkdir(parents=True)
    write_predictions(d / "predictions.csv", QUERIES, NAMES, sim)
    m = {**score_predictions(d / "predictions.csv", caps, ci=True), "n_items": N_CLIPS, "n_queries": len(QUERIES)}
    (d / DONE).write_text(json.dumps({"metrics": m, "chance_mAP@10": 0.25,
                                      "train": {"steps": 3 + len(d.name), "seconds": 1.0, "precision": "32-true"},
                                      "provenance": {"audio_pretrained": False, "text_pretrained": True}}))
    return d


def fake_rows(root: Path, caps: Path, rows: dict) -> tuple[list[Cell], list[Path]]:
    "rows: name -> (quality, seeds): one cell and one run per seed of each row."
    cells, dirs = [], []
    for name, (q, seeds) in rows.items():
        for s in seeds:
            cells.append(Cell("table2", name, seed=s))
            dirs.append(fake_run(root / f"{name.replace(' ', '_')}-{s}", sim_of(q, 100 * s + len(name)), caps))
    return cells, dirs


def test_every_number_is_the_mean_of_the_seeds(tmp_path, caps):
    cells, dirs = fake_rows(tmp_path, caps, {FULL: (2.0, [0, 1]), "worse": (1.0, [0, 1])})
    df = results_frame(cells, dirs, METRICS, caps)
    assert list(df.row) == [FULL, "worse"] and list(df.seeds) == [2, 2]
    for i, ds in enumerate((dirs[:2], dirs[2:])):
        rs = [read_run(d) for d in ds]
        for k in METRICS:
            assert df.loc[i, k] == pytest.approx(np.mean([r["metrics"][k] for r in rs]), abs=1e-12)
        assert df.loc[i, "train steps"] == np.mean([r["train"]["steps"] for r in rs])
        assert df.loc[i, "run"] == " ".join(d.name for d in ds)
        s = seed_summary(ds, caps)
        for k in METRICS:   # and the interval is the two-level bootstrap's
            assert [df.loc[i, f"{k} low"], df.loc[i, f"{k} high"]] == s["ci"][k]
    shown = display_frame(df, METRICS, ["row"])
    assert list(shown.columns[:2]) == ["row", "seeds"]
    assert shown.loc[0, "mAP@10"] == with_ci(df.loc[0, "mAP@10"], [df.loc[0, "mAP@10 low"], df.loc[0, "mAP@10 high"]])
    assert "two-level bootstrap" in interval_note(df)
    # the CSV: each row's mean, then each seed's own numbers with its own clip interval
    csv = csv_frame(df, seed_frame(cells, dirs, METRICS))
    assert list(csv.seed) == ["mean", 0, 1, "mean", 0, 1] and list(csv.columns[:4]) == ["row", "col", "seed", "seeds"]
    for j, d in zip((1, 2, 4, 5), dirs):
        r = read_run(d)["metrics"]
        assert (csv.loc[j, "mAP@10"], [csv.loc[j, "mAP@10 low"], csv.loc[j, "mAP@10 high"]]) == (r["mAP@10"], r["ci"]["mAP@10"])


def test_the_interval_comes_from_both_seeds_predictions(tmp_path, caps):
    cells, dirs = fake_rows(tmp_path, caps, {FULL: (1.5, [0, 1])})
    before = results_frame(cells, dirs, METRICS, caps)
    own = [read_run(d)["metrics"]["ci"]["mAP@10"] for d in dirs]
    got = [before.loc[0, "mAP@10 low"], before.loc[0, "mAP@10 high"]]
    assert got not in own                                      # neither seed's own clip interval
    for d, q in zip(dirs, (4.0, -1.0)):                       # change one seed's predictions, then the other's
        write_predictions(d / "predictions.csv", QUERIES, NAMES, sim_of(q, 7))
        after = results_frame(cells, dirs, METRICS, caps)
        moved = [after.loc[0, "mAP@10 low"], after.loc[0, "mAP@10 high"]]
        assert moved != got, d.name
        got = moved
    # the summary of any list of run folders: the same numbers
    s = seed_summary(dirs, caps)
    assert (s["seeds"], s["ci"]["mAP@10"]) == (2, got)


def test_seeds_that_disagree_widen_the_interval(tmp_path, caps):
    "Two seeds far apart: the interval spans both (the clip bootstrap of either seed alone would not)."
    cells, dirs = fake_rows(tmp_path, caps, {FULL: (5.0, [0]), "x": (0.0, [0])})
    two = [replace(cells[0], seed=0), replace(cells[1], row=FULL, seed=1)]
    df = results_frame(two, dirs, METRICS, caps)
    lo, hi = df.loc[0, "mAP@10 low"], df.loc[0, "mAP@10 high"]
    a, b = sorted(read_run(d)["metrics"]["mAP@10"] for d in dirs)
    assert lo <= a + 0.05 and hi >= b - 0.05 and lo < df.loc[0, "mAP@10"] < hi


def test_one_seed_gives_the_one_seed_tables(tmp_path, caps):
    cells, dirs = fake_rows(tmp_path, caps, {FULL: (2.0, [0]), "worse": (1.0, [0])})
    df = results_frame(cells, dirs, METRICS, caps)
    assert "seeds" not in df and list(df.run) == [d.name for d in dirs]
    for i, d in enumerate(dirs):   # the run's own numbers and clip-bootstrap interval, exactly
        m = read_run(d)["metrics"]
        for k in METRICS: assert (df.loc[i, k], [df.loc[i, f"{k} low"], df.loc[i, f"{k} high"]]) == (m[k], m["ci"][k])
    assert csv_frame(df, seed_frame(cells, dirs, METRICS)) is df
    assert interval_note(df) == "Values x100 with 95% bootstrap intervals over clips."
    assert list(display_frame(df, METRICS, ["row"]).columns) == ["row", *METRICS]
    dd = paired_differences(cells, dirs, caps)
    assert list(dd.columns[:2]) == ["row", "mAP@16"]                      # no seeds column
    c = compare_predictions(dirs[1] / "predictions.csv", dirs[0] / "predictions.csv", caps)
    for k in METRICS:   # exactly the paired clip bootstrap of the two runs
        assert (dd.loc[0, k], [dd.loc[0, f"{k} low"], dd.loc[0, f"{k} high"]], dd.loc[0, f"{k} P(better)"]) == \
               (c["difference"][k], c["ci"][k], c["p_better"][k])
    assert seed_summary(dirs[:1], caps)["ci"] == read_run(dirs[0])["metrics"]["ci"]


def test_differences_are_seed_matched(tmp_path, caps):
    cells, dirs = fake_rows(tmp_path, caps, {FULL: (2.0, [0, 1]), "worse": (1.0, [1, 0]), "one": (1.0, [1, 5])})
    dd = paired_differences(cells, dirs, caps)
    assert list(dd.row) == ["worse", "one"] and list(dd.seeds) == [2, 1]   # "one" shares only seed 1 with the full system
    m = lambda d: read_run(d)["metrics"]["mAP@10"]
    # "worse": seed 1 - full's seed 1 and seed 0 - full's seed 0
    assert dd.loc[0, "mAP@10"] == pytest.approx(np.mean([m(dirs[2]) - m(dirs[1]), m(dirs[3]) - m(dirs[0])]), abs=1e-12)
    d = seed_differences([dirs[2], dirs[3]], [dirs[1], dirs[0]], caps)
    assert ([dd.loc[0, "mAP@10 low"], dd.loc[0, "mAP@10 high"]], dd.loc[0, "mAP@10 P(better)"]) == (d["ci"]["mAP@10"], d["p_better"]["mAP@10"])
    assert d["ci"]["mAP@10"][1] < 0 and d["p_better"]["mAP@10"] < 0.05         # clearly worse on every resample
    c = compare_predictions(dirs[4] / "predictions.csv", dirs[1] / "predictions.csv", caps)
    assert dd.loc[1, "mAP@10"] == c["difference"]["mAP@10"]                   # one seed in common: the clip bootstrap
    assert display_differences(dd).columns[1] == "seeds"
    with pytest.raises(Exception, match="shares no seed"):
        paired_differences(cells[:2] + [Cell("table2", "x", seed=9)], dirs[:3], caps)
    with pytest.raises(Exception, match="same seeds"):
        seed_differences(dirs[:2], dirs[:1], caps)


def _smoke_with_seeds(tmp_path, seeds="[0, 1]", extra=""):
    p = tmp_path / "mine.toml"
    p.write_text(study_file("smoke").read_text().replace("seeds = [0]", f"seeds = {seeds}") + extra)
    return p


def test_a_study_with_seeds_has_one_run_per_seed(tmp_path):
    one, two = load_study("smoke"), load_study(_smoke_with_seeds(tmp_path))
    assert two.seeds == (0, 1) and len(two.table1) == 2 * len(one.table1) and len(two.table2) == 2 * len(one.table2)
    # seed 0's cells are the one-seed study's (so its runs, their ids and the cache are shared); seed 1 adds run.seed=1
    assert [c for c in two.table1 + two.table2 if c.seed == 0] == one.table1 + one.table2
    assert {c.overrides[-1] for c in two.table1 + two.table2 if c.seed == 1} == {"run.seed=1"}
    # a shared stage 1, trained with the first seed; per_seed = true: one per seed
    assert two.stage1_runs == [one.stage1]
    per = load_study(_per_seed(tmp_path))
    assert [c.seed for c in per.stage1_runs] == [0, 1] and per.stage1_runs[1].overrides[-1] == "run.seed=1"


def _per_seed(tmp_path):
    p = _smoke_with_seeds(tmp_path)
    p.write_text(p.read_text().replace('corpus = "pretrain"', 'corpus = "pretrain"\nper_seed = true'))
    return p


def test_a_row_may_have_its_own_seeds(tmp_path):
    st = load_study(_smoke_with_seeds(tmp_path, "[0]", '\n[[table2.rows]]\nname = "hop 2.5 s"\noverrides = '
                                      '["audio.hop_seconds=2.5"]\nfrom = "stage1"\nseeds = [0, 1, 2]\n'))
    assert [(c.row, c.seed) for c in st.table2] == [(FULL, 0), ("mean pooling", 0), ("hop 2.5 s", 0),
                                                    ("hop 2.5 s", 1), ("hop 2.5 s", 2)]
    assert len(st.table1) == 2 and st.stage1_runs == [st.stage1]


def test_the_plan_lists_each_seed(tmp_path):
    "--plan of a 2-seed study with one stage 1 per seed: every seed's run; seed 0's are the one-seed study's runs."
    from lasr.study import plan
    one = plan("smoke", tmp_path / "out", progress=False)
    two = plan(_per_seed(tmp_path), tmp_path / "out", progress=False)
    assert list(two.seed) == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1] and list(two.table) == ["table1"] * 4 + ["stage1"] * 2 + ["table2"] * 4
    assert list(two[two.seed == 0].run) == list(one.run)                        # the cache is shared with seed 0
    assert two.run.nunique() == 10 and set(two.state) == {"to run"}

"`lasr score` against a plain implementation of the DCASE 2025 protocol; bootstrap intervals; relevance errors."
import json
from collections import defaultdict
import numpy as np, pandas as pd
import pytest
from lasr.metrics import write_predictions, query_values, bootstrap_ci, paired_bootstrap
from conftest import untrained_checkpoint

# ---------------------------------------------------------------- the plain implementation
def plain_ap(scores: list[float], relevant: set[int], k: int) -> float:
    "AP@k of one query, walking down its ranking; a relevant item goes after the items it ties with."
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j in relevant, j))
    hits, ap = 0, 0.0
    for pos, j in enumerate(order):
        if j in relevant:
            hits += 1
            if pos < k: ap += hits / (pos + 1)
    return ap / len(relevant)

def plain_protocol(queries, names, sim, captions, table) -> dict:
    "The metrics as the 2025 task defines them, one query at a time."
    written_for = defaultdict(list)                      # caption text -> its audios, in captions-file order
    for fn, caps in captions:
        for c in caps: written_for[c].append(fn)
    seen, paired = defaultdict(int), []
    for q in queries:                                    # k-th row with a text <-> k-th caption with that text
        paired.append(names.index(written_for[q][seen[q]])); seen[q] += 1
    out = {}
    for k in (1, 5, 10):
        out[f"R@{k}"] = sum(plain_ap(list(s), {p}, k) > 0 for s, p in zip(sim, paired)) / len(queries)
    for k in (10, 16):
        out[f"mAP@{k}"] = sum(plain_ap(list(s), {p}, k) for s, p in zip(sim, paired)) / len(queries)
    if table is not None:
        for k in (10, 16):                               # listed queries only, exactly their lists, first occurrence
            aps = [plain_ap(list(sim[queries.index(q)]), {names.index(f) for f in fns}, k) for q, fns in table.items()]
            out[f"mAP@{k}_multi"] = sum(aps) / len(aps)
        out["n_queries_multi"] = len(table)
    return out

# ---------------------------------------------------------------- random cases
def random_case(rng, n_clips: int, ties: bool, listed: float, dup: int):
    "Captions CSV rows, prediction rows in shuffled order, and a relevance table listing a share of the texts."
    names = [f"clip_{i:04d}.wav" for i in rng.permutation(n_clips)]
    captions = [(fn, [f"sound {i} caption {c}" for c in range(5)]) for i, fn in enumerate(names)]
    for _ in range(dup):                                 # Clotho-like duplicates: one text written for two clips
        a, b = rng.choice(n_clips, 2, replace=False)
        captions[b][1][rng.integers(5)] = captions[a][1][rng.integers(5)]
    queries = [c for _, caps in captions for c in caps]
    order = rng.permutation(len(queries))
    queries = [queries[i] for i in order]
    cols = [str(x) for x in rng.permutation(names)]
    sim = rng.integers(0, 3, (len(queries), n_clips)) / 3 if ties else rng.standard_normal((len(queries), n_clips))
    texts = list(dict.fromkeys(queries))
    chosen = rng.choice(len(texts), max(1, int(listed * len(texts))), replace=False)
    table = {texts[i]: [str(x) for x in rng.choice(cols, rng.integers(1, min(6, n_clips) + 1), replace=False)] for i in chosen}
    return captions, queries, cols, sim, table

def write_case(tmp, captions, queries, cols, sim, table):
    pd.DataFrame([[fn, *caps] for fn, caps in captions], columns=["file_name"] + [f"caption_{c}" for c in range(1, 6)]
                ).to_csv(tmp/"captions.csv", index=False)
    write_predictions(tmp/"pred.csv", queries, cols, sim)
    if table is not None:
        pd.DataFrame({"query": list(table), "audio_filenames": [repr(v) for v in table.values()]}).to_csv(tmp/"rel.csv", index=False)

@pytest.mark.parametrize("n_clips, ties, listed, dup, seed", [
    (3, True, 1.0, 0, 0), (7, True, 0.4, 1, 1), (20, False, 0.2, 2, 2), (20, True, 0.05, 3, 3),
    (60, False, 0.5, 4, 4), (150, True, 0.1, 5, 5)])
def test_score_matches_plain_protocol(tmp_path, n_clips, ties, listed, dup, seed, cli):
    captions, queries, cols, sim, table = random_case(np.random.default_rng(seed), n_clips, ties, listed, dup)
    write_case(tmp_path, captions, queries, cols, sim, table)
    r = cli("score", "--similarity", tmp_path/"pred.csv", "--captions", tmp_path/"captions.csv",
             "--relevance", tmp_path/"rel.csv", "--json")
    assert r.returncode == 0, r.stderr
    got, want = json.loads(r.stdout), plain_protocol(queries, cols, sim, captions, table)
    assert set(got) == set(want)
    for k in want: assert abs(got[k] - want[k]) < 1e-9, (k, got[k], want[k])

def test_duplicated_caption_uses_first_occurrence(tmp_path, cli):
    "The relevance row of a text that two rows share applies to the first row only, whichever clip it belongs to."
    captions = [("a.wav", ["a dog barks"] + [f"a {i}" for i in range(4)]), ("b.wav", ["a dog barks"] + [f"b {i}" for i in range(4)])]
    queries = [c for _, caps in captions for c in caps]
    sim = np.zeros((10, 2)); sim[:, 0] = 1                  # every row ranks a.wav first ...
    sim[5] = [0, 1]                                         # ... except the second "a dog barks", which ranks b.wav first
    table = {"a dog barks": ["b.wav"]}
    write_case(tmp_path, captions, queries, ["a.wav", "b.wav"], sim, table)
    r = cli("score", "--similarity", tmp_path/"pred.csv", "--captions", tmp_path/"captions.csv", "--relevance", tmp_path/"rel.csv", "--json")
    m = json.loads(r.stdout)
    assert m["mAP@10_multi"] == 0.5 and m["n_queries_multi"] == 1     # row 0: b.wav at rank 1
    # rows swapped: now the first "a dog barks" is the one that ranks b.wav first
    write_predictions(tmp_path/"pred.csv", queries[5:] + queries[:5], ["a.wav", "b.wav"], np.concatenate([sim[5:], sim[:5]]))
    r = cli("score", "--similarity", tmp_path/"pred.csv", "--captions", tmp_path/"captions.csv", "--relevance", tmp_path/"rel.csv", "--json")
    assert json.loads(r.stdout)["mAP@10_multi"] == 1.0

# ---------------------------------------------------------------- intervals
@pytest.fixture
def two_systems(tmp_path):
    rng = np.random.default_rng(7)
    captions, queries, cols, sim, table = random_case(rng, 40, False, 0.3, 2)
    write_case(tmp_path, captions, queries, cols, sim, table)
    write_predictions(tmp_path/"other.csv", queries, cols, sim + rng.standard_normal(sim.shape))
    return tmp_path

def test_identical_files_differ_by_zero(two_systems, cli):
    t = two_systems
    r = cli("score", "--similarity", t/"pred.csv", "--captions", t/"captions.csv", "--relevance", t/"rel.csv",
             "--compare", t/"pred.csv", "--json")
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)
    metrics = {"R@1", "R@5", "R@10", "mAP@10", "mAP@16", "mAP@10_multi", "mAP@16_multi"}
    assert set(c) == {"difference", "ci", "p_better"} and all(set(c[x]) == metrics for x in c)
    assert all(v == 0 for v in c["difference"].values())
    assert all(v == [0.0, 0.0] for v in c["ci"].values())
    assert all(v == 0 for v in c["p_better"].values())

def test_same_seed_same_output(two_systems, cli):
    t = two_systems
    base = ["score", "--similarity", t/"pred.csv", "--captions", t/"captions.csv", "--relevance", t/"rel.csv", "--json"]
    a, b, c = (cli(*base, "--ci", "--seed", s) for s in (3, 3, 4))
    assert a.returncode == 0, a.stderr
    assert a.stdout == b.stdout and a.stdout != c.stdout
    m = json.loads(a.stdout)
    assert set(m["ci"]) == {k for k in m if k not in ("ci", "n_queries_multi")}
    assert all(lo <= m[k] <= hi for k, (lo, hi) in m["ci"].items())
    d1, d2 = (cli(*base, "--compare", t/"other.csv", "--seed", "5") for _ in range(2))
    assert d1.returncode == 0 and d1.stdout == d2.stdout
    d = json.loads(d1.stdout)
    assert all(lo <= d["difference"][k] <= hi for k, (lo, hi) in d["ci"].items())
    assert all(0 <= p <= 1 for p in d["p_better"].values())

def test_interval_narrows_with_more_clips():
    rng = np.random.default_rng(0)
    widths = []
    for n in (100, 400, 1600):
        targets = np.repeat(np.arange(n), 5)
        sim = rng.standard_normal((5 * n, n)) + 2.5 * (targets[:, None] == np.arange(n))   # a mediocre model
        ci = bootstrap_ci(query_values(sim, targets), targets, n=500, seed=0)
        widths.append({k: hi - lo for k, (lo, hi) in ci.items()})
    for k in widths[0]:
        assert widths[0][k] > 1.5 * widths[1][k] > 2.25 * widths[2][k] > 0, (k, [w[k] for w in widths])

def test_paired_bootstrap_sees_a_real_difference():
    rng = np.random.default_rng(1)
    targets = np.repeat(np.arange(300), 5)
    signal = targets[:, None] == np.arange(300)
    noise = rng.standard_normal((1500, 300))
    good, worse = query_values(noise + 3 * signal, targets), query_values(noise + 2 * signal, targets)
    c = paired_bootstrap(good, worse, targets, n=1000, seed=0)
    for k in good:
        assert c["difference"][k] > 0 and c["ci"][k][0] > 0 and c["p_better"][k] > 0.975, k

# ---------------------------------------------------------------- relevance files a user can get wrong
@pytest.mark.parametrize("problem, message", [
    ("absent", "4 queries are not in the predictions, e.g. 'nobody 0', 'nobody 1', 'nobody 2', ..."),
    ("column", "2 audio files are not among the scored audio files, e.g. 'x.wav', 'y.wav'"),
    ("empty", "1 queries have an empty list, e.g. 'sound 1 caption 1'"),
    ("twice", "listed more than once, e.g. line 4: 'sound 0 caption 0' (also line 2)")])
def test_relevance_errors_exit_2(tmp_path, problem, message, cli):
    captions, queries, cols, sim, _ = random_case(np.random.default_rng(0), 5, False, 0.5, 0)
    table = {"sound 0 caption 0": [cols[0]], "sound 1 caption 1": [cols[1]]}
    if problem == "absent": table.update({f"nobody {i}": [cols[0]] for i in range(4)})
    if problem == "column": table["sound 0 caption 0"] = ["y.wav", cols[0], "x.wav"]
    if problem == "empty": table["sound 1 caption 1"] = []
    write_case(tmp_path, captions, queries, cols, sim, table)
    if problem == "twice":
        with open(tmp_path/"rel.csv", "a") as f: f.write(f"sound 0 caption 0,\"['{cols[2]}']\"\n")
    r = cli("score", "--similarity", tmp_path/"pred.csv", "--captions", tmp_path/"captions.csv", "--relevance", tmp_path/"rel.csv")
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert str(tmp_path/"rel.csv") in r.stderr

# ---------------------------------------------------------------- evaluate shares the implementation
def test_evaluate_ci_matches_score(smoke_corpus, tmp_path, cli):
    "evaluate (the function and the command) and score on its prediction file give the same metrics and intervals."
    from lasr.train import evaluate
    corpus, run = smoke_corpus, untrained_checkpoint(tmp_path/"run")   # the same weights through both: any will do
    m = evaluate(run, corpus, relevance=corpus/"relevance_evaluation.csv", out=tmp_path/"m.json",
                 predictions=tmp_path/"p.csv", progress=False, ci=True)
    assert json.loads((tmp_path/"m.json").read_text()) == m
    assert m["n_queries_multi"] == 80 and m["n_queries"] == 80
    captions = corpus/"CLOTHO_v2.1"/"clotho_csv_files"/"clotho_captions_evaluation.csv"
    r = cli("score", "--similarity", tmp_path/"p.csv", "--captions", captions, "--relevance",
            corpus/"relevance_evaluation.csv", "--ci", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {k: v for k, v in m.items() if k not in ("n_queries", "n_items")}
    r = cli("evaluate", run, "--data-root", corpus, "--relevance", corpus/"relevance_evaluation.csv", "--ci", "--quiet")
    assert r.returncode == 0, r.stderr
    lo, hi = m["ci"]["mAP@16_multi"]
    # printed x100 with two decimals, as in the report
    assert f"{100 * m['mAP@16_multi']:6.2f}  [{100 * lo:6.2f}, {100 * hi:6.2f}]" in r.stdout, r.stdout

"""Study files (issue 22, item 1): the shipped paper, demo and smoke studies are TOML files that give exactly the runs
the Python constants gave; a bad file stops before any run, naming the file, the entry and the problem; --plan lists
the runs and trains nothing. (The run of a user's study that adds a row is in test_study.py, on its smoke study.)"""
import json, re
from pathlib import Path
import pytest
from lasr.study import load_study, study_file, STUDIES

ROOT = Path(__file__).resolve().parents[1]

# today's cells (table, row, col, overrides, corpus, init) of the shipped studies, computed from the Python constants
# that the study files replaced (lasr before issue 22): the files must give exactly these, in this order
EXPECTED = {
    'paper': [
        ('table1', 'whisper-base', 'all-mpnet-base-v2', ('audio.encoder=whisper-base', 'audio.cache_features=false', 'text.encoder=all-mpnet-base-v2', 'text.pooling=default'), 'main', False),
        ('table1', 'whisper-base', 'gtr-t5-large', ('audio.encoder=whisper-base', 'audio.cache_features=false', 'text.encoder=gtr-t5-large', 'text.pooling=default'), 'main', False),
        ('table1', 'whisper-base', 'bge-base-en-v1.5', ('audio.encoder=whisper-base', 'audio.cache_features=false', 'text.encoder=bge-base-en-v1.5', 'text.pooling=default'), 'main', False),
        ('table1', 'whisper-base', 'deberta-v3-large', ('audio.encoder=whisper-base', 'audio.cache_features=false', 'text.encoder=deberta-v3-large', 'text.pooling=default'), 'main', False),
        ('table1', 'whisper-base', 'roberta-large', ('audio.encoder=whisper-base', 'audio.cache_features=false', 'text.pooling=default'), 'main', False),
        ('table1', 'data2vec-audio-base', 'bge-base-en-v1.5', ('audio.encoder=data2vec-audio-base', 'audio.cache_features=false', 'text.encoder=bge-base-en-v1.5', 'text.pooling=default'), 'main', False),
        ('table1', 'clap-htsat', 'all-mpnet-base-v2', ('audio.encoder=clap-htsat', 'audio.cache_features=false', 'text.encoder=all-mpnet-base-v2', 'text.pooling=default'), 'main', False),
        ('table1', 'clap-htsat', 'gtr-t5-large', ('audio.encoder=clap-htsat', 'audio.cache_features=false', 'text.encoder=gtr-t5-large', 'text.pooling=default'), 'main', False),
        ('table1', 'clap-htsat', 'bge-base-en-v1.5', ('audio.encoder=clap-htsat', 'audio.cache_features=false', 'text.encoder=bge-base-en-v1.5', 'text.pooling=default'), 'main', False),
        ('table1', 'clap-htsat', 'roberta-large', ('audio.encoder=clap-htsat', 'audio.cache_features=false', 'text.pooling=default'), 'main', False),
        ('table1', 'passt', 'all-mpnet-base-v2', ('audio.encoder=passt', 'text.encoder=all-mpnet-base-v2', 'text.pooling=default'), 'main', False),
        ('table1', 'passt', 'gtr-t5-large', ('audio.encoder=passt', 'text.encoder=gtr-t5-large', 'text.pooling=default'), 'main', False),
        ('table1', 'passt', 'bge-base-en-v1.5', ('audio.encoder=passt', 'text.encoder=bge-base-en-v1.5', 'text.pooling=default'), 'main', False),
        ('table1', 'passt', 'roberta-large', ('audio.encoder=passt', 'text.pooling=default'), 'main', False),
        ('stage1', 'full system', '', (), 'main', False),
        ('table2', 'full system', '', (), 'main', False),
        ('table2', 'hop 10 s', '', ('audio.hop_seconds=10.0', 'data.pretrain_corpora='), 'main', True),
        ('table2', 'mean pooling', '', ('model.pooling=mean', 'data.pretrain_corpora='), 'main', True),
        ('table2', 'first-token text pooling', '', ('text.pooling=first', 'data.pretrain_corpora='), 'main', True),
        ('table2', 'all audio blocks trainable', '', ('audio.first_trainable_block=0', 'data.pretrain_corpora='), 'main', True),
        ('table2', 'no time/frequency masking', '', ('audio.freq_mask=0', 'audio.time_mask=0', 'data.pretrain_corpora='), 'main', True),
        ('table2', 'baseline-like (all of the above)', '', ('audio.hop_seconds=10.0', 'model.pooling=mean', 'text.pooling=first', 'audio.first_trainable_block=0', 'audio.freq_mask=0', 'audio.time_mask=0', 'data.pretrain_corpora='), 'main', True),
        # issue 24: the full system's seeds (0, 1, 2) as an ensemble (no seed of its own), and distilled into one model
        ('table2', 'ensemble', '', (), 'main', False),
        ('table2', '+ distillation', '', ('loss.soft_weight=1.0', 'loss.hard_weight=0.0', 'data.pretrain_corpora='), 'main', True),
    ],
    'demo': [
        ('table1', 'passt-small', 'all-minilm-l6-v2', ('audio.encoder=passt-small', 'audio.max_seconds=10.0', 'optim.epochs=2', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=1.5', 'run.val_every=2'), 'main', False),
        ('table1', 'passt-small', 'bert-tiny', ('audio.encoder=passt-small', 'text.encoder=bert-tiny', 'text.pretrained=false', 'text.trainable=true', 'text.cache_features=false', 'text.tokenizer=all-minilm-l6-v2', 'audio.max_seconds=10.0', 'optim.epochs=2', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=1.5', 'run.val_every=2'), 'main', False),
        ('table1', 'clap-htsat-small', 'all-minilm-l6-v2', ('audio.encoder=clap-htsat-small', 'audio.cache_features=false', 'audio.max_seconds=10.0', 'optim.epochs=2', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=1.5', 'run.val_every=2'), 'main', False),
        ('table1', 'clap-htsat-small', 'bert-tiny', ('audio.encoder=clap-htsat-small', 'audio.cache_features=false', 'text.encoder=bert-tiny', 'text.pretrained=false', 'text.trainable=true', 'text.cache_features=false', 'text.tokenizer=all-minilm-l6-v2', 'audio.max_seconds=10.0', 'optim.epochs=2', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=1.5', 'run.val_every=2'), 'main', False),
        ('table1', 'whisper-mini', 'all-minilm-l6-v2', ('audio.encoder=whisper-mini', 'audio.cache_features=false', 'audio.max_seconds=10.0', 'optim.epochs=2', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=1.5', 'run.val_every=2'), 'main', False),
        ('table1', 'whisper-mini', 'bert-tiny', ('audio.encoder=whisper-mini', 'audio.cache_features=false', 'text.encoder=bert-tiny', 'text.pretrained=false', 'text.trainable=true', 'text.cache_features=false', 'text.tokenizer=all-minilm-l6-v2', 'audio.max_seconds=10.0', 'optim.epochs=2', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=1.5', 'run.val_every=2'), 'main', False),
        ('table1', 'data2vec-audio-small', 'all-minilm-l6-v2', ('audio.encoder=data2vec-audio-small', 'audio.cache_features=false', 'audio.max_seconds=10.0', 'optim.epochs=2', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=1.5', 'run.val_every=2'), 'main', False),
        ('table1', 'data2vec-audio-small', 'bert-tiny', ('audio.encoder=data2vec-audio-small', 'audio.cache_features=false', 'text.encoder=bert-tiny', 'text.pretrained=false', 'text.trainable=true', 'text.cache_features=false', 'text.tokenizer=all-minilm-l6-v2', 'audio.max_seconds=10.0', 'optim.epochs=2', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=1.5', 'run.val_every=2'), 'main', False),
        ('stage1', 'stage 1', '', ('optim.epochs=36', 'optim.warmup_epochs=1.0', 'optim.cosine_epochs=35.0', 'run.val_every=6', 'audio.first_trainable_block=0'), 'pretrain', False),
        ('table2', 'full system', '', ('optim.epochs=3', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=2.5', 'run.val_every=3', 'optim.lr=3e-4', 'audio.first_trainable_block=2'), 'main', True),
        ('table2', 'hop 10 s', '', ('optim.epochs=3', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=2.5', 'run.val_every=3', 'optim.lr=3e-4', 'audio.first_trainable_block=2', 'audio.hop_seconds=10.0'), 'main', True),
        ('table2', 'mean pooling', '', ('optim.epochs=3', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=2.5', 'run.val_every=3', 'optim.lr=3e-4', 'audio.first_trainable_block=2', 'model.pooling=mean'), 'main', True),
        ('table2', 'first-token text pooling', '', ('optim.epochs=3', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=2.5', 'run.val_every=3', 'optim.lr=3e-4', 'audio.first_trainable_block=2', 'text.pooling=first'), 'main', True),
        ('table2', 'all audio blocks trainable', '', ('optim.epochs=3', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=2.5', 'run.val_every=3', 'optim.lr=3e-4', 'audio.first_trainable_block=2', 'audio.first_trainable_block=0'), 'main', True),
        ('table2', 'no time/frequency masking', '', ('optim.epochs=3', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=2.5', 'run.val_every=3', 'optim.lr=3e-4', 'audio.first_trainable_block=2', 'audio.freq_mask=0', 'audio.time_mask=0'), 'main', True),
        ('table2', 'baseline-like (all of the above)', '', ('optim.epochs=3', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=2.5', 'run.val_every=3', 'optim.lr=3e-4', 'audio.first_trainable_block=2', 'audio.hop_seconds=10.0', 'model.pooling=mean', 'text.pooling=first', 'audio.first_trainable_block=0', 'audio.freq_mask=0', 'audio.time_mask=0'), 'main', True),
    ],
    'smoke': [
        ('table1', 'passt-tiny', 'bert-tiny', ('audio.encoder=passt-tiny', 'optim.epochs=1', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=0.5'), 'main', False),
        ('table1', 'data2vec-audio-tiny', 'bert-tiny', ('audio.encoder=data2vec-audio-tiny', 'audio.cache_features=false', 'optim.epochs=1', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=0.5'), 'main', False),
        ('stage1', 'stage 1', '', ('optim.epochs=1', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=0.5'), 'pretrain', False),
        ('table2', 'full system', '', ('optim.epochs=1', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=0.5'), 'main', True),
        ('table2', 'mean pooling', '', ('optim.epochs=1', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=0.5', 'model.pooling=mean'), 'main', True),
    ],
}

DEMO_ISSUE24 = [
    ('table2', 'ensemble', '', (), 'main', False),
    ('table2', '+ distillation', '', ('optim.epochs=3', 'optim.warmup_epochs=0.5', 'optim.cosine_epochs=2.5', 'run.val_every=3', 'optim.lr=3e-4', 'audio.first_trainable_block=2', 'loss.soft_weight=1.0', 'loss.hard_weight=0.0'), 'main', True),
]

CORPORA = {"demo": {"main": dict(seed=0), "pretrain": dict(seed=1, n_dev=500, n_val=100, n_eval=20, long_fraction=0.0)},
           "smoke": {"main": dict(seed=0, n_dev=24, n_val=8, n_eval=8, long_fraction=0.0),
                     "pretrain": dict(seed=1, n_dev=24, n_val=8, n_eval=4, long_fraction=0.0)}}
FOLDERS = {"demo": {"main": "corpus", "pretrain": "demo-pretrain-corpus"},
           "smoke": {"main": "smoke-corpus", "pretrain": "smoke-pretrain-corpus"}}

@pytest.mark.parametrize("name", STUDIES)
def test_the_shipped_files_give_todays_cells(name):
    st = load_study(name)
    cells = [c for c in st.table1 + [st.stage1] + st.table2 if c.seed in (0, None)]   # the seed-0 runs (and ensembles)
    # the demo's ensemble and distilled rows (issue 24) once demo.toml has them (/tmp/demo-with-distillation.toml)
    more = DEMO_ISSUE24 if name == "demo" and any(c.row == "ensemble" for c in st.table2) else []
    assert [(c.table, c.row, c.col, c.overrides, c.corpus, c.init) for c in cells] == EXPECTED[name] + more
    # rows made of other rows' runs (issue 24): all of them use the full system's seeds
    uses = {c.row: c.uses for c in st.table2 if c.uses}
    full = tuple(("full system", c.seed) for c in st.table2 if c.row == "full system")
    assert set(uses.values()) <= {full}, uses
    if name == "paper": assert list(uses) == ["ensemble", "+ distillation"] and len(full) == 3
    if name == "demo":   # each trained Table 2 row three times, seeds 1 and 2 differing only in run.seed; Table 1 once
        t2 = [c for c in st.table2 if not c.ensemble]
        assert [(c.row, c.seed) for c in t2] == [(r, s) for r in dict.fromkeys(c.row for c in t2) for s in (0, 1, 2)]
        assert all(c.overrides == t2[3 * (i // 3)].overrides + (() if c.seed == 0 else (f"run.seed={c.seed}",))
                   for i, c in enumerate(t2))
        assert {c.seed for c in st.table1} == {0}
    assert (st.name, st.preset, st.seeds, st.tables) == (name, name, (0,), ("table1", "table2"))
    if name != "paper":   # the generated corpora: the same lasr synth arguments in the same folders
        assert {w: {k: v for k, v in c.items() if k != "folder"} for w, c in st.corpora.items()} == CORPORA[name]
        assert {w: c["folder"] for w, c in st.corpora.items()} == FOLDERS[name]

def test_the_notebook_shows_the_shipped_demo_file():
    "11_study documents the format with the demo file: its copy there is the file itself."
    nb = json.loads((ROOT/"nbs"/"11_study.ipynb").read_text())
    shown = [m.group(1) for c in nb["cells"] if c["cell_type"] == "markdown"
             for m in re.finditer(r"```toml\n(.*?)```", "".join(c["source"]), re.S)]
    assert shown == [study_file("demo").read_text()]

def _smoke_with(tmp_path, text="", name="mine.toml", replace=()):
    s = study_file("smoke").read_text()
    for a, b in replace:
        assert a in s, a
        s = s.replace(a, b)
    p = tmp_path/name
    p.write_text(s + text)
    return p

ROW = '\n[[table2.rows]]\nname = "hop 2.5 s"\n'
BAD = {   # problem: (what the file changes, the entry and the problem the message must name)
    "unknown key": (dict(text=ROW + 'overide = ["audio.hop_seconds=2.5"]\nfrom = "stage1"\n'),
                    "table2.rows[2] ('hop 2.5 s'): unknown key 'overide'"),
    "unknown encoder": (dict(replace=[('text = ["bert-tiny"]', 'text = ["bert-huge"]')]),
                        "table1.grid[0].text: unknown text encoder 'bert-huge'"),
    "override the config rejects": (dict(text=ROW + 'overrides = ["audio.hop_secs=2.5"]\n'),
                                    "table2.rows[2] ('hop 2.5 s'): unknown config key 'audio.hop_secs'"),
    "bad value": (dict(text=ROW + 'overrides = ["audio.hop_seconds=short"]\n'),
                  "table2.rows[2] ('hop 2.5 s'): bad value for audio.hop_seconds"),
    "two rows with one name": (dict(text='\n[[table2.rows]]\nname = "mean pooling"\n'),
                               "table2.rows[2] ('mean pooling'): two rows are named 'mean pooling'"),
    "a stage that does not exist": (dict(text=ROW + 'from = "stage2"\n'),
                                    "table2.rows[2] ('hop 2.5 s'): starts from stage 'stage2', which the study does not define"),
    "invalid TOML": (dict(text='\n[table2\n'), "invalid TOML: "),
    "a seed twice": (dict(replace=[("seeds = [0]", "seeds = [0, 0]")]), "seeds: a seed appears twice in [0, 0]"),
    "per_seed not a boolean": (dict(replace=[('corpus = "pretrain"', 'corpus = "pretrain"\nper_seed = "yes"')]),
                               "stage1.per_seed: must be true or false, got 'yes'"),
}

@pytest.mark.parametrize("problem", list(BAD))
def test_a_bad_study_file_stops_before_any_run(problem, tmp_path, cli):
    change, says = BAD[problem]
    f = _smoke_with(tmp_path, **change)
    for extra in ((), ("--plan",)):
        r = cli("reproduce", "--study", f, "--out", tmp_path/"reports", *extra)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert f"study file {f}: " in r.stderr and says in r.stderr, r.stderr
        assert not (tmp_path/"reports").exists()          # before anything was made
    if problem == "invalid TOML": assert re.search(r"line \d+, column \d+", r.stderr), r.stderr

def test_study_and_preset_exclude_each_other(tmp_path, cli):
    for args in ((), ("--preset", "smoke", "--study", tmp_path/"x.toml")):
        r = cli("reproduce", "--out", tmp_path, *args)
        assert r.returncode == 2 and "--preset" in r.stderr and "--study" in r.stderr, r.stderr
    r = cli("reproduce", "--study", tmp_path/"nope.toml", "--out", tmp_path/"reports")
    assert r.returncode == 2 and "nope.toml does not exist" in r.stderr
    r = cli("reproduce", "--preset", "nope", "--out", tmp_path/"reports")
    assert r.returncode == 2 and "choose one of: paper, demo, smoke" in r.stderr

def test_the_plan_trains_nothing(tmp_path, cli):
    "--plan: every run with its table, row, seed, run id and state; the generated corpora are made (run ids hash them)."
    r = cli("reproduce", "--preset", "smoke", "--out", tmp_path, "--plan", "--quiet")
    assert r.returncode == 0, r.stderr
    rows = [l.split() for l in r.stdout.splitlines()[1:6]]
    assert [l[0] for l in rows] == ["table1", "table1", "stage1", "table2", "table2"]
    assert all(l[-2:] == ["to", "run"] and re.fullmatch(r"[0-9a-f]{12}", l[-3]) and l[-4] == "0" for l in rows), r.stdout
    assert "5 runs: 0 cached, 5 to run (nothing was trained)" in r.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]     # corpora only: no run cache, no tables
    # a stage-2 row's run id follows its stage 1's: another stage 1 gives other ids to the rows that start from it
    f = _smoke_with(tmp_path, replace=[('overrides = ["optim.epochs=1", "optim.warmup_epochs=0.5", "optim.cosine_epochs=0.5"]\n\n#',
                                        'overrides = ["optim.epochs=2", "optim.warmup_epochs=0.5", "optim.cosine_epochs=1.5"]\n\n#')])
    r2 = cli("reproduce", "--study", f, "--out", tmp_path, "--plan", "--quiet")
    rows2 = [l.split() for l in r2.stdout.splitlines()[1:6]]
    assert [l[-3] for l in rows2[:2]] == [l[-3] for l in rows[:2]]    # Table 1: the same runs
    assert all(a[-3] != b[-3] for a, b in zip(rows2[2:], rows[2:]))   # stage 1 and both rows: other runs

def test_the_plan_of_the_paper_study_without_corpora(tmp_path, cli):
    "Without --data-root the paper study's corpus is unknown: the plan says so instead of inventing run ids."
    r = cli("reproduce", "--preset", "paper", "--out", tmp_path, "--plan", "--only", "table2")
    assert r.returncode == 0, r.stderr
    assert "12 runs: 0 cached, 0 to run, 12 unknown" in r.stdout and "pass --data-root" in r.stdout, r.stdout

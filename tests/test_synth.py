"`lasr.synth`: the embedded corpus (checked here at 400/100/100 clips; the demo's is 500/100/100)."
import ast, hashlib, os, re, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from lasr.core import LasrError
from lasr.data import read_clotho, validate_corpus
from lasr.synth import (DEMO_MAX_SECONDS, DEMO_MIN_SECONDS, DEMO_N_DEV, DEMO_N_EVAL, DEMO_N_VAL, FolderBank, SPLITS,
                        clip_captions, corpus_paths, load_manifest, satisfies, synth_corpus, words)

from conftest import lasr

ROOT = Path(__file__).resolve().parents[1]


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")/"c"
    t0 = time.perf_counter()
    root = synth_corpus(out, n_dev=400, n_val=100, n_eval=100, seed=0, progress=False)
    return root, time.perf_counter() - t0


def test_layout_and_csvs(corpus):
    root, _ = corpus
    P = corpus_paths(root)
    for split, n in zip(SPLITS, (400, 100, 100)):
        df = pd.read_csv(P[f"captions_{split}"])
        assert list(df.columns) == ["file_name"] + [f"caption_{k}" for k in range(1, 6)]
        assert len(df) == n and df.isna().sum().sum() == 0
        assert set(df.file_name) == {p.name for p in P[f"audio_{split}"].iterdir()}
        for caps in df.iloc[:, 1:].itertuples(index=False):
            assert len(set(caps)) == 5
            ws = [words(c) for c in caps]
            assert all(ws[i] != ws[j] for i in range(5) for j in range(i + 1, 5)), caps
        for name in df.file_name[:40]:
            y, sr = sf.read(P[f"audio_{split}"]/name, dtype="int16")
            info = sf.info(P[f"audio_{split}"]/name)
            assert sr == 32000 and info.subtype == "PCM_16" and y.ndim == 1 and np.abs(y).max() > 1000


def test_relevance(corpus):
    root, _ = corpus
    P = corpus_paths(root)
    ev = pd.read_csv(P["captions_evaluation"])
    rel = pd.read_csv(P["relevance"])
    assert list(rel.columns) == ["query", "audio_filenames"]
    own = {}
    for r in ev.itertuples(index=False):
        for c in r[1:]: own.setdefault(c, set()).add(r.file_name)
    assert set(rel["query"]) == set(own) and rel["query"].is_unique
    m = load_manifest(root)
    scenes = m["scenes"]["evaluation"]
    sizes = []
    for q, lst in zip(rel["query"], rel["audio_filenames"]):
        names = ast.literal_eval(lst)
        assert isinstance(names, list) and own[q] <= set(names) <= set(ev.file_name)
        sizes.append(len(names))
    # the lists are exactly the clips whose scenes satisfy the caption's claim
    for name, claims in list(m["claims"].items())[:20]:
        caps = ev.set_index("file_name").loc[name].tolist()
        for cap, cl in zip(caps, claims):
            expect = sorted(n for n, sc in scenes.items() if satisfies(sc, cl))
            assert ast.literal_eval(rel.set_index("query").audio_filenames[cap]) == expect
    # specific enough to be a retrieval task, general enough to need the multi-relevant metric
    assert 0.4 < np.mean(np.array(sizes) == 1) < 0.95


def test_clotho_reader(corpus):
    root, _ = corpus
    rep = validate_corpus(root)
    assert rep.ok, rep.format()
    assert len(read_clotho(root, "evaluation")) == 100


def test_determinism(tmp_path):
    "Same seed, same bytes; another seed, every file different (sizes do not matter here: small corpora)."
    small = dict(n_dev=8, n_val=4, n_eval=4, progress=False)
    h0 = _hashes(synth_corpus(tmp_path/"one", seed=0, **small))
    assert _hashes(synth_corpus(tmp_path/"again", seed=0, **small)) == h0
    other = _hashes(synth_corpus(tmp_path/"other", seed=1, **small))
    assert set(other) == set(h0) and sum(other[k] != h0[k] for k in h0) == len(h0)


def test_defaults_are_the_documented_demo_corpus():
    "`lasr synth OUT` without sizes writes the corpus the README describes (and the demo's results were made on)."
    import inspect
    readme = (ROOT/"README.md").read_text()
    sizes = re.search(r"\((\d+) development, (\d+) validation and (\d+) evaluation clips\s+of (\d+)[-\u2013](\d+) s", readme)
    assert sizes, "the README no longer states the demo corpus' sizes"
    n_dev, n_val, n_eval, lo, hi = map(int, sizes.groups())
    sig = inspect.signature(synth_corpus).parameters
    assert (sig["n_dev"].default, sig["n_val"].default, sig["n_eval"].default) == (n_dev, n_val, n_eval)
    assert (DEMO_N_DEV, DEMO_N_VAL, DEMO_N_EVAL) == (n_dev, n_val, n_eval)
    assert (sig["min_seconds"].default, sig["max_seconds"].default) == (DEMO_MIN_SECONDS, DEMO_MAX_SECONDS) == (lo, hi)
    from lasr.cli import build_parser
    args = build_parser().parse_args(["synth", "out"])
    assert (args.n_dev, args.n_val, args.n_eval, args.seed, args.bank) == (None, None, None, 0, "synth")  # the defaults apply


def _lasr_synth(out: Path, *args, hash_seed: str = "0") -> dict[str, str]:
    "Run `lasr synth` in its own process (with its own hash seed); the corpus' files and their SHA-256."
    r = lasr("synth", out, *args, env={**os.environ, "PYTHONHASHSEED": hash_seed})
    assert r.returncode == 0 and "corpus written to" in r.stdout, r.stderr
    return _hashes(out)


def test_same_bytes_across_processes_and_through_the_cli(tmp_path):
    small = ("--n-dev", 6, "--n-val", 3, "--n-eval", 3, "--seed", 4)
    a = _lasr_synth(tmp_path/"a", *small, hash_seed="1")
    b = _lasr_synth(tmp_path/"b", *small, hash_seed="2")
    here = _hashes(synth_corpus(tmp_path/"c", n_dev=6, n_val=3, n_eval=3, seed=4, progress=False))
    assert len(a) == 6 + 3 + 3 + 3 + 2 and a == b == here
    # a folder of recordings as the source bank: the same guarantee
    bank = tmp_path/"bank"; bank.mkdir()
    rng = np.random.default_rng(7)
    for i, d in enumerate(["a door slams", "rain on a roof", "a dog barks", "a kettle whistles"]):
        sf.write(bank/f"rec{i}.wav", (0.3 * rng.standard_normal(int(16000 * (2 + i)))).astype(np.float32), 16000)
        (bank/f"rec{i}.txt").write_text(d + "\n")
    fa = _lasr_synth(tmp_path/"fa", *small, "--bank", bank, hash_seed="3")
    fb = _lasr_synth(tmp_path/"fb", *small, "--bank", bank, hash_seed="4")
    assert fa == fb and set(fa) == set(a) and fa != a
    caps = pd.read_csv(corpus_paths(tmp_path/"fa")["captions_development"]).iloc[:, 1:].values.ravel()
    assert any("dog barks" in c.lower() for c in caps)


# hand-built scenes (time order = list order) and the words a caption must use for each claim it makes;
# written out here rather than taken from the generator's tables
_PITCH_WORDS = {"high": r"\bhigh|shrill|piercing|whistle|whine|\bsharp|crisp|\blight\b|bright|\btaps|clicks",
                "low": r"\blow\b|low-pitched|\bdeep|\bbass|\bhum\b|drone|\bdull|heavy|muffled|thuds|thumps"}
_KIND_WORDS = {"tone": r"(?<!sliding )\btones?\b|\bnote|\bhum\b|drone|whistle|whine", "beep": r"beep|bleep|pips",
               "sweep": r"sweeps|glides|swoops|sliding tones|wails|chirps",
               "knock": r"knock|hits|impacts|thuds|thumps|taps|clicks", "noise": r"noise|hiss|static|rumbl|roar"}
_ORDER_WORDS = r"\bthen\b|followed by|\bafter\b|starts with|opens with|at the start|\blater\b|finally"
_FIRST_WORDS = r"\bfirst\b|starts with|opens with|at the start"
_LAST_WORDS = r"ends with|finally|at the end"


def _src(kind, start, end, loudness="loud", **attrs):
    return {"kind": kind, "start": start, "end": end, "loudness": loudness, "params": {}, **attrs}


SCENES = [
    {"duration": 6.0, "background": "hiss", "sources": [_src("tone", 0.5, 5.5, pitch="high", motion="steady")]},
    {"duration": 8.0, "background": "silence",
     "sources": [_src("beep", 0.3, 3.5, pitch="low", rate="fast"), _src("tone", 4.0, 7.5, "quiet", pitch="high",
                                                                         motion="wavering")]},
    {"duration": 10.0, "background": "silence",
     "sources": [_src("knock", 0.3, 3.0, pitch="high", rate="slow"), _src("sweep", 3.4, 6.4, direction="rising",
                 rate="fast"), _src("tone", 6.8, 9.6, "quiet", pitch="low", motion="steady")]},
]


def test_captions_say_what_their_claims_say():
    from lasr.synth import SynthBank
    bank, seen = SynthBank(), {"pitch": 0, "order": 0, "first": 0, "last": 0, "count": 0, "unordered": 0}
    for scene in SCENES:
        kinds = [s["kind"] for s in scene["sources"]]
        for seed in range(12):
            texts, claims = clip_captions(scene, bank, np.random.default_rng(seed))
            for text, claim in zip(texts, claims):
                t = text.lower()
                assert satisfies(scene, claim), (text, claim)
                for c in claim["sources"]:
                    assert re.search(_KIND_WORDS[c["kind"]], t), (text, c)
                    if "pitch" in c:
                        seen["pitch"] += 1
                        assert re.search(_PITCH_WORDS[c["pitch"]], t), (text, c)
                if claim["order"]:
                    seen["order"] += 1
                    assert re.search(_ORDER_WORDS, t), text
                    # the sources are named in the order they sound
                    pos = [re.search(_KIND_WORDS[c["kind"]], t).start() for c in claim["sources"]]
                    said = [c["kind"] for _, c in sorted(zip(pos, claim["sources"]), key=lambda x: x[0])]
                    assert said == [k for k in kinds if k in said], (text, said)
                elif len(kinds) > 1:
                    seen["unordered"] += 1
                    assert not re.search(_ORDER_WORDS, t), text             # no order claimed, none implied
                if claim["first"]: seen["first"] += 1; assert re.search(_FIRST_WORDS, t), text
                if claim["last"]: seen["last"] += 1; assert re.search(_LAST_WORDS, t), text
                if claim["count"]:
                    seen["count"] += 1
                    n = {1: r"\bone\b|single|\bjust\b|\bonly\b", 2: r"\btwo\b", 3: r"\bthree\b"}[claim["count"]]
                    assert re.search(n, t), text
                if claim["background"] == "silence":
                    assert re.search(r"silen|quiet room|no background", t), text
                elif claim["background"] == "hiss":
                    assert re.search(r"hiss|static|white noise", t), text
    assert all(v > 0 for v in seen.values()), seen                     # every kind of claim was exercised


def test_folder_bank_errors(tmp_path):
    with pytest.raises(LasrError, match="no audio files"): FolderBank(tmp_path)
    sf.write(tmp_path/"a.wav", np.zeros(800, np.float32), 8000)
    with pytest.raises(LasrError, match="a.wav has no description"): FolderBank(tmp_path)
    (tmp_path/"a.txt").write_text("a click\n")
    assert FolderBank(tmp_path).descriptions == ["a click"]

"`lasr.synth`: the embedded corpus at the sizes `lasr synth` is checked with (400/100/100)."
import ast, hashlib, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from lasr.core import LasrError
from lasr.synth import (DEMO_N_DEV, DEMO_N_EVAL, DEMO_N_VAL, FolderBank, SPLITS, corpus_paths, load_manifest,
                        satisfies, synth_corpus, words)


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
    data = pytest.importorskip("lasr.data")
    root, _ = corpus
    rep = data.validate_corpus(root)
    assert rep.ok, rep.format()
    assert len(data.read_clotho(root, "evaluation")) == 100


def test_determinism(corpus, tmp_path):
    root, _ = corpus
    h0 = _hashes(root)
    again = synth_corpus(tmp_path/"again", n_dev=400, n_val=100, n_eval=100, seed=0, progress=False)
    assert _hashes(again) == h0
    other = _hashes(synth_corpus(tmp_path/"other", n_dev=400, n_val=100, n_eval=100, seed=1, progress=False))
    assert set(other) == set(h0) and sum(other[k] != h0[k] for k in h0) == len(h0)


def test_defaults():
    import inspect
    sig = inspect.signature(synth_corpus)
    assert (sig.parameters["n_dev"].default, sig.parameters["n_val"].default, sig.parameters["n_eval"].default) \
        == (DEMO_N_DEV, DEMO_N_VAL, DEMO_N_EVAL)
    assert 5.0 <= sig.parameters["min_seconds"].default <= sig.parameters["max_seconds"].default <= 15.0


def test_folder_bank_errors(tmp_path):
    with pytest.raises(LasrError, match="no audio files"): FolderBank(tmp_path)
    sf.write(tmp_path/"a.wav", np.zeros(800, np.float32), 8000)
    with pytest.raises(LasrError, match="a.wav has no description"): FolderBank(tmp_path)
    (tmp_path/"a.txt").write_text("a click\n")
    assert FolderBank(tmp_path).descriptions == ["a click"]

"lasr index / search / embed end to end with the smoke model (random weights) on a tiny generated corpus."
import json, os, signal, subprocess, time
from pathlib import Path
import numpy as np, pandas as pd, soundfile as sf
import pytest

from lasr.core import get_preset
from lasr.train import evaluate
from lasr import index as lidx
from conftest import lasr_popen, untrained_checkpoint

SR = 32000

@pytest.fixture(scope="module")
def corpus(smoke_corpus):
    # clips no longer than the smoke preset reads (12 s): evaluate crops there, the index embeds whole files
    return smoke_corpus

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    # random weights are enough: the checks compare two paths through the same weights; a 10 s hop halves the
    # windows of the 2-hour file below
    return untrained_checkpoint(tmp_path_factory.mktemp("runs")/"smoke", "audio.hop_seconds=10")

def eval_dir(corpus): return Path(corpus)/"CLOTHO_v2.1"/"clotho_audio_files"/"evaluation"

def r_at(ranks, k): return float(np.mean(np.asarray(ranks) < k))

def test_exact_index_recall_equals_evaluate(corpus, run, tmp_path):
    "Searching every evaluation caption in the exact index gives lasr evaluate's R@10 (and R@1, R@5) exactly."
    m = evaluate(run, corpus, progress=False, predictions=tmp_path/"pred.csv", figure=tmp_path/"r.png")
    rep = lidx.build_index(eval_dir(corpus), run, tmp_path/"idx", precision="32")   # float32, as evaluate
    assert rep["files"] == m["n_items"] == 16 and rep["skipped"] == []
    man = lidx.read_manifest(tmp_path/"idx")
    assert man["index"]["kind"] == "exact" and man["dtype"] == "float32"
    assert lidx.LibraryIndex(tmp_path/"idx").file_vectors.dtype == np.float32
    pred = pd.read_csv(tmp_path/"pred.csv")
    queries, names = pred.iloc[:, 0].tolist(), list(pred.columns[1:])
    caps = pd.read_csv(Path(corpus)/"CLOTHO_v2.1"/"clotho_csv_files"/"clotho_captions_evaluation.csv")
    target = {c: fn for fn, *cs in caps.itertuples(index=False) for c in cs}
    res = lidx.search(tmp_path/"idx", queries, k=len(names))
    ranks = [[h["path"] for h in r["hits"]].index(target[r["query"]]) if r["query"] in target else None for r in res]
    # the same queries in the same order as evaluate's, each finding its clip somewhere in the full ranking
    assert None not in ranks and len(ranks) == m["n_queries"]
    for k in (1, 5, 10): assert r_at(ranks, k) == m[f"R@{k}"], k
    # and the scores are evaluate's similarities
    sim = np.zeros((len(queries), len(names)))
    for i, r in enumerate(res):
        for h in r["hits"]: sim[i, names.index(h["path"])] = h["score"]
    # (the index batches windows across files, evaluate clips: a float difference of up to 3e-5 with these random
    # weights, 4e-6 with trained ones; float16 vectors are 1.2e-4 off, a score computed another way ~1e-2)
    np.testing.assert_allclose(sim, pred.iloc[:, 1:].to_numpy(), atol=5e-5)

@pytest.fixture(scope="module")
def library(tmp_path_factory):
    "A folder with a corrupt file, a 0-byte file, a 2-hour file, a text file renamed .wav and a file in a subfolder."
    lib = tmp_path_factory.mktemp("library")
    t = np.arange(3 * SR) / SR
    sf.write(lib/"beep.wav", (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), SR)
    (lib/"sub").mkdir()
    sf.write(lib/"sub"/"hum.flac", (0.3 * np.sin(2 * np.pi * 100 * t)).astype(np.float32), 22050)
    good = (lib/"beep.wav").read_bytes()
    (lib/"corrupt.wav").write_bytes(good[:12] + os.urandom(2000))       # RIFF header, then garbage
    (lib/"empty.wav").write_bytes(b"")
    (lib/"letter.wav").write_text("Dear user, this is not a sound.\n" * 20)
    with sf.SoundFile(lib/"long.wav", "w", SR, 1, subtype="PCM_16") as f:   # 2 hours of a quiet sine, in 10 min blocks
        block = (0.01 * np.sin(2 * np.pi * 220 * np.arange(600 * SR) / SR)).astype(np.float32)
        for _ in range(12): f.write(block)
    return lib

def test_robust_index_and_spans(library, run, tmp_path, cli):
    r = cli("index", library, "--model", run, "--out", tmp_path/"idx", "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert set(rep) == {"files", "windows", "added", "updated", "removed", "skipped"}
    assert rep["files"] == rep["added"] == 3 and rep["updated"] == rep["removed"] == 0
    why = {s["path"]: s["reason"] for s in rep["skipped"]}
    assert set(why) == {"corrupt.wav", "empty.wav", "letter.wav"}
    assert why["empty.wav"] == "empty file (0 bytes)"
    assert why["corrupt.wav"].startswith("cannot decode") and why["letter.wav"].startswith("cannot decode")
    man = lidx.read_manifest(tmp_path/"idx")
    long = next(f for f in man["files"] if f["path"] == "long.wav")
    assert long["duration"] == 7200.0 and long["windows"] == 720 and long["spans"][-1] == [7190.0, 7200.0]
    assert rep["windows"] == sum(f["windows"] for f in man["files"])
    assert [f["path"] for f in man["files"]] == ["beep.wav", "long.wav", "sub/hum.flac"]
    (tmp_path/"q.txt").write_text("a low hum\n\na high beep\n")
    r = cli("search", tmp_path/"idx", "--queries", tmp_path/"q.txt", "-k", "3", "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert [l["query"] for l in lines] == ["a low hum", "a high beep"]
    dur = {f["path"]: f["duration"] for f in man["files"]}
    for l in lines:
        assert set(l) == {"query", "hits"} and len(l["hits"]) == 3
        for h in l["hits"]:
            assert set(h) == {"path", "score", "start", "end"}
            assert 0 <= h["start"] < h["end"] <= dur[h["path"]] and isinstance(h["score"], float)
    # audio to audio: a recording finds itself first
    r = cli("search", tmp_path/"idx", "--audio", library/"sub"/"hum.flac", "--json")
    hit = json.loads(r.stdout)["hits"][0]
    assert hit["path"] == "sub/hum.flac" and abs(hit["score"] - 1) < 1e-4

def small_library(root: Path, n: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        t = np.arange(int((2 + i) * SR)) / SR
        sf.write(root/f"s{i}.wav", (0.2 * np.sin(2 * np.pi * (200 + 300 * i) * t)).astype(np.float32), SR)
    return root

def test_update_embeds_exactly_one_file(run, tmp_path, monkeypatch):
    lib = small_library(tmp_path/"lib")
    lidx.build_index(lib, run, tmp_path/"idx")
    before = lidx.LibraryIndex(tmp_path/"idx")
    sf.write(lib/"new.wav", np.zeros(SR, np.float32) + 0.1, SR)
    (lib/"s1.wav").unlink()
    seen = []
    real = lidx.embed_files
    def spy(model, folder, paths, *a, **kw):
        seen.extend(paths); return real(model, folder, paths, *a, **kw)
    monkeypatch.setattr(lidx, "embed_files", spy)
    rep = lidx.build_index(lib, run, tmp_path/"idx", update=True)
    assert seen == ["new.wav"]
    assert (rep["files"], rep["added"], rep["updated"], rep["removed"]) == (3, 1, 0, 1)
    after = lidx.LibraryIndex(tmp_path/"idx")
    np.testing.assert_array_equal(after.file_vectors[1], before.file_vectors[0])   # s0.wav carried over
    # a changed file is re-embedded and counted as updated
    sf.write(lib/"s0.wav", np.zeros(SR, np.float32) + 0.2, SR)
    seen.clear()
    rep = lidx.build_index(lib, run, tmp_path/"idx", update=True)
    assert seen == ["s0.wav"] and (rep["added"], rep["updated"], rep["removed"]) == (0, 1, 0)

def test_another_model_is_refused(run, tmp_path, cli):
    from lasr.model import create_model
    from lasr.train import save_checkpoint
    # other random weights (this process' RNG, not the seed of `run`)
    lidx.build_index(small_library(tmp_path/"lib", 1), run, tmp_path/"idx")
    save_checkpoint(create_model(get_preset("smoke"), load_weights=False), tmp_path/"other"/"best", get_preset("smoke"))
    r = cli("search", tmp_path/"idx", "a dog", "--model", tmp_path/"other")
    assert r.returncode == 2 and "another model" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(Exception, match="another model"):
        lidx.build_index(tmp_path/"lib", tmp_path/"other", tmp_path/"idx", update=True)

def test_crash_before_the_manifest_switch_keeps_the_old_index(run, tmp_path, monkeypatch):
    lib = small_library(tmp_path/"lib")
    lidx.build_index(lib, run, tmp_path/"idx")
    old = lidx.search(tmp_path/"idx", ["a tone"], k=3)
    sf.write(lib/"new.wav", np.zeros(SR, np.float32) + 0.1, SR)
    def crash(*a): raise KeyboardInterrupt
    monkeypatch.setattr(lidx, "_write_json_atomic", crash)   # the new data folder is written, the switch is not
    with pytest.raises(KeyboardInterrupt): lidx.build_index(lib, run, tmp_path/"idx", update=True)
    monkeypatch.undo()
    assert lidx.search(tmp_path/"idx", ["a tone"], k=3) == old
    lidx.build_index(lib, run, tmp_path/"idx", update=True)     # the next run cleans up what the crash left
    assert len([p for p in (tmp_path/"idx").iterdir() if p.is_dir()]) == 1

def test_killed_update_leaves_the_old_index_searchable(run, tmp_path, cli):
    lib = small_library(tmp_path/"lib")
    idx = tmp_path/"idx"
    r = cli("index", lib, "--model", run, "--out", idx, "--quiet")
    assert r.returncode == 0, r.stderr
    old = cli("search", idx, "a tone", "--json").stdout
    manifest = (idx/"manifest.json").read_bytes()
    with sf.SoundFile(lib/"long.wav", "w", SR, 1, subtype="PCM_16") as f:   # 20 minutes: long enough to kill mid-run
        f.write((0.01 * np.sin(2 * np.pi * 220 * np.arange(1200 * SR) / SR)).astype(np.float32))
    # in a process of its own, to be killed
    p = lasr_popen("index", lib, "--model", run, "--out", idx, "--update", "--quiet",
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while not any(q.name.startswith(".tmp-scratch") for q in idx.iterdir()) and time.time() - t0 < 120 and p.poll() is None:
        time.sleep(0.05)
    assert p.poll() is None, "the update finished before it could be killed"
    time.sleep(0.5)
    p.send_signal(signal.SIGKILL); p.wait()
    assert (idx/"manifest.json").read_bytes() == manifest
    r = cli("search", idx, "a tone", "--json")
    assert r.returncode == 0 and r.stdout == old

def test_embed_exports_audio_and_captions(corpus, run, tmp_path, cli):
    lib = small_library(tmp_path/"lib", 2)
    r = cli("embed", lib, "--model", run, "--out", tmp_path/"a.npy", "--quiet")
    assert r.returncode == 0, r.stderr
    X, man = np.load(tmp_path/"a.npy"), json.loads((tmp_path/"a.json").read_text())
    assert X.shape == (2, get_preset("smoke").model.embed_dim) and [r["path"] for r in man["rows"]] == ["s0.wav", "s1.wav"]
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5)
    caps = Path(corpus)/"CLOTHO_v2.1"/"clotho_csv_files"/"clotho_captions_evaluation.csv"
    r = cli("embed", caps, "--model", run, "--out", tmp_path/"t.npy")
    assert r.returncode == 0, r.stderr
    assert np.load(tmp_path/"t.npy").shape[0] == len(json.loads((tmp_path/"t.json").read_text())["rows"]) == 16 * 5
    r = cli("embed", tmp_path/"nothing.txt", "--model", run, "--out", tmp_path/"x.npy")
    assert r.returncode == 2 and "expected a folder" in r.stderr

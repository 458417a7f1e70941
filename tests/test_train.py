"End-to-end training and evaluation on a tiny generated corpus with the smoke preset."
import ast, json, os, shutil, signal
from pathlib import Path
import numpy as np, pandas as pd
import pytest, lightning as L
import soundfile as sf, torch

from lasr.core import get_preset
from lasr.synth import synth_corpus
from lasr.train import train, evaluate, load_model, embed_audio, embed_text, lr_at
from lasr.metrics import read_predictions

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return synth_corpus(tmp_path_factory.mktemp("corpus"), n_dev=32, n_val=12, n_eval=12, seed=3, progress=False)

@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")/"smoke"
    train(get_preset("smoke"), corpus, out, progress=False)
    return out

def by_step(out: Path, column: str = "lr") -> dict[int, float]:
    "A logged value per optimiser step from every CSV log of a run (later logs win)."
    got = {}
    for f in sorted((out/"logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])):
        if not f.stat().st_size: continue   # a start killed before its logger's first write
        df = pd.read_csv(f)
        for s, v in df.dropna(subset=[column])[["step", column]].itertuples(index=False): got[int(s)] = float(v)
    return got

def lr_by_step(out: Path) -> dict[int, float]:
    "Learning rate per optimiser step from every CSV log of a run (later logs win)."
    return by_step(out, "lr")

def weights(path: Path) -> dict:
    "The tensors of a safetensors file."
    from safetensors.torch import load_file
    return load_file(str(path))

def ap_at_k(ranked: list[str], relevant: set[str], k: int) -> float:
    "DCASE 2025 AP@k, written out: (1/|R|) * sum over relevant items at rank r < k of hits(r) / (r + 1)."
    hits, total = 0, 0.0
    for r, name in enumerate(ranked[:k]):
        if name in relevant: hits += 1; total += hits / (r + 1)
    return total / len(relevant)

def test_run_folder_is_self_describing(run):
    for name in ("config.json", "best.safetensors", "best.json", "last.safetensors", "last.json", "train.json"):
        assert (run/name).is_file(), name
    info = json.loads((run/"best.json").read_text())
    assert info["preset"] == "smoke" and info["audio_pretrained"] is False and info["text_pretrained"] is False
    assert info["config"]["preset"] == "smoke" and len(info["data_fingerprint"]) == 40
    s = json.loads((run/"train.json").read_text())
    # finished: no resume state (Lightning's, 5 GB at the paper's size); last shares best's file when best is the last step
    assert not (run/"lightning").exists()
    last = json.loads((run/"last.json").read_text())
    assert last["step"] == s["steps"]
    assert (info["step"] == last["step"]) == os.path.samefile(run/"best.safetensors", run/"last.safetensors")
    o = get_preset("smoke").optim
    assert s["steps_per_epoch"] == 32 * 5 // o.batch_size and s["steps"] == s["steps_per_epoch"] * o.epochs
    # the learning rate of every step is lr_at's (the DDP test checks 2 processes against the same)
    lr = lr_by_step(run)
    assert sorted(lr) == list(range(s["steps"]))
    np.testing.assert_allclose([lr[k] for k in sorted(lr)], [lr_at(k, s["steps_per_epoch"], o.lr, o.min_lr, o.warmup_epochs,
                                                                   o.cosine_epochs) for k in sorted(lr)], rtol=1e-6)

def test_clip_batches_with_frozen_cached_text_train_and_learn(corpus, tmp_path):
    "The demo's way of training (clip batches, cached mel and caption features, bf16) on the smoke model."
    from lasr.core import override
    cfg = override(get_preset("smoke"), "data.batch_by=clip", "text.trainable=false", "text.cache_features=true",
                   "run.precision=bf16-mixed", "optim.batch_size=4", "optim.epochs=3", "optim.cosine_epochs=2.5")
    s = train(cfg, corpus, tmp_path/"clip", progress=False)
    assert s["steps_per_epoch"] == 32 // 4 and s["steps"] == 3 * 8
    log = pd.read_csv(tmp_path/"clip"/"logs"/"version_0"/"metrics.csv")
    loss = log["train/loss_epoch"].dropna().to_numpy()
    assert np.isfinite(loss).all() and loss[-1] < loss[0]       # 20 captions per step: the loss goes down
    assert 0 < s["best"]["val/mAP@10"] <= 1

class Crash(L.Callback):
    "Simulate a crash in the middle of the second epoch."
    def __init__(self, at_step): self.at_step = at_step
    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.at_step: raise RuntimeError("simulated crash")

def test_resume_continues_the_same_schedule(corpus, run, tmp_path):
    cfg = get_preset("smoke")
    ref = json.loads((run/"train.json").read_text())
    spe = ref["steps_per_epoch"]
    out = tmp_path/"interrupted"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg, corpus, out, progress=False, callbacks=[Crash(spe + spe // 2)])
    assert not (out/"train.json").exists() and (out/"lightning"/"last.ckpt").is_file()   # epoch 1's resume state
    with pytest.raises(Exception, match="already holds a run"):
        train(cfg, corpus, out, progress=False)
    s = train(cfg, corpus, out, resume=True, progress=False)
    assert s["steps"] == ref["steps"]
    a, b = lr_by_step(run), lr_by_step(out)
    assert sorted(a) == sorted(b) == list(range(ref["steps"]))
    np.testing.assert_allclose([b[k] for k in sorted(b)], [a[k] for k in sorted(a)], rtol=1e-6)
    # the same batches, augmentations and updates: every step's loss, and the final weights bit for bit
    la, lb = by_step(run, "train/loss_step"), by_step(out, "train/loss_step")
    assert sorted(la) == sorted(lb) == list(range(ref["steps"]))
    assert [lb[k] for k in sorted(lb)] == [la[k] for k in sorted(la)]
    assert json.loads((out/"last.json").read_text())["sha256"] == json.loads((run/"last.json").read_text())["sha256"]
    assert not (out/"lightning").exists()   # finished: the resume state went
    assert json.loads((out/"best.json").read_text())["metrics"] == json.loads((run/"best.json").read_text())["metrics"]

class LoseCtrlC(L.Callback):
    "Ctrl-C that lands in a finaliser at the end of epoch 1, where Python prints the KeyboardInterrupt and drops it."
    def on_train_epoch_end(self, trainer, module):
        class Finaliser:
            def __del__(self): os.kill(os.getpid(), signal.SIGINT)
        Finaliser()

def test_ctrl_c_dropped_in_a_finaliser_still_stops_training(corpus, tmp_path):
    out = tmp_path/"run"
    runner = signal.signal(signal.SIGINT, signal.default_int_handler)   # as in a terminal (a test worker ignores it)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(get_preset("smoke", "optim.epochs=4"), corpus, out, progress=False, callbacks=[LoseCtrlC()])
        assert not (out/"train.json").exists()                     # it stopped in epoch 2, not at the end
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # Ctrl-C works again afterwards
    finally: signal.signal(signal.SIGINT, runner)

def test_resume_from_a_corrupt_lightning_checkpoint_is_a_clear_error(corpus, run, tmp_path, cli):
    "An unfinished run whose resume state was cut short in its save (a finished run keeps none)."
    broken = tmp_path/"broken"
    shutil.copytree(run, broken, ignore=shutil.ignore_patterns("embeddings", "train.json", "last.*"))
    ck = broken/"lightning"/"last.ckpt"; ck.parent.mkdir()
    torch.save({"epoch": 0, "state_dict": weights(run/"best.safetensors")}, ck)
    ck.write_bytes(ck.read_bytes()[: ck.stat().st_size // 3])
    r = cli("train", "--preset", "smoke", "--data-root", corpus, "--out", broken, "--resume", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "last.ckpt" in r.stderr and "corrupt" in r.stderr, r.stderr

def test_resume_of_a_finished_run_changes_nothing(corpus, run, cli):
    files = lambda: {p.relative_to(run): p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    before = files()
    r = cli("train", "--preset", "smoke", "--data-root", corpus, "--out", run, "--resume", "--quiet")
    assert r.returncode == 0 and "nothing to resume" in r.stderr, r.stderr
    assert files() == before

def test_best_checkpoint_is_the_best_validation_epoch(corpus, tmp_path, monkeypatch):
    "Scripted validation scores whose best epoch is not the last: best.* holds that epoch's weights."
    import lasr.train as lt
    from lasr.core import override
    scores = iter([0.2, 0.7, 0.4])
    monkeypatch.setattr(lt, "split_metrics", lambda *a, **k: {"mAP@10": next(scores), "R@1": 0.0})
    class Snapshot(L.Callback):
        def __init__(self): self.states = []
        def on_validation_end(self, trainer, module):
            self.states.append({k: v.detach().clone() for k, v in module.model.state_dict().items()})
    snap = Snapshot()
    cfg = override(get_preset("smoke"), "optim.epochs=3")
    train(cfg, corpus, tmp_path/"run", progress=False, callbacks=[snap])
    assert len(snap.states) == 3
    info = json.loads((tmp_path/"run"/"best.json").read_text())
    assert info["epoch"] == 1 and info["metrics"]["val/mAP@10"] == pytest.approx(0.7)
    best, last = weights(tmp_path/"run"/"best.safetensors"), weights(tmp_path/"run"/"last.safetensors")
    assert set(best) == set(snap.states[1])
    assert all(torch.equal(best[k], snap.states[1][k]) for k in best)
    assert all(torch.equal(last[k], snap.states[2][k]) for k in last)
    assert any(not torch.equal(best[k], last[k]) for k in best)     # training went on after the best epoch

def test_resume_with_another_config_is_refused(corpus, run, cli):
    r = cli("train", "--preset", "smoke", "--data-root", corpus, "--out", run, "--resume", "--set", "optim.lr=0.5")
    assert r.returncode == 2 and "different config" in r.stderr and "optim__lr" in r.stderr, r.stderr

def test_same_seed_same_metrics_and_evaluate_matches_score(corpus, run, tmp_path, cli):
    import torch
    again = tmp_path/"again"
    before = torch.get_float32_matmul_precision()
    train(get_preset("smoke"), corpus, again, progress=False)
    assert torch.get_float32_matmul_precision() == before        # training leaves no global setting behind
    m1 = evaluate(run, corpus, out=tmp_path/"m1.json", predictions=tmp_path/"p1.csv", progress=False)
    m2 = evaluate(again, corpus, out=tmp_path/"m2.json", progress=False)
    assert m1 == m2
    # the predictions are the queries' text embeddings times the clips' audio embeddings, computed here alone
    queries, names, sim = read_predictions(tmp_path/"p1.csv")
    model = load_model(run, precision="32")   # as evaluate
    audio_dir = corpus/"CLOTHO_v2.1"/"clotho_audio_files"/"evaluation"
    assert sorted(names) == sorted(p.name for p in audio_dir.glob("*.wav"))
    want = embed_text(model, queries) @ embed_audio(model, [audio_dir/n for n in names]).T
    # (about 1e-6 apart: evaluate reads the int16 waveform cache; far below a query's spread of scores, ~3e-3)
    np.testing.assert_allclose(sim, want, rtol=0, atol=1e-5)
    assert set(json.loads((tmp_path/"m1.json").read_text())) == {"R@1", "R@5", "R@10", "mAP@10", "mAP@16", "n_queries", "n_items"}
    captions = corpus/"CLOTHO_v2.1"/"clotho_csv_files"/"clotho_captions_evaluation.csv"
    r = cli("score", "--similarity", tmp_path/"p1.csv", "--captions", captions, "--json")
    assert r.returncode == 0, r.stderr
    scored = json.loads(r.stdout)
    assert scored == {k: v for k, v in m1.items() if k not in ("n_queries", "n_items")}
    assert m1["n_items"] == 12 and m1["n_queries"] == 60
    assert (run/"recall-evaluation.png").stat().st_size > 1000

def test_evaluate_with_relevance_cli(corpus, run, tmp_path, cli):
    r = cli("evaluate", run, "--data-root", corpus, "--relevance", corpus/"relevance_evaluation.csv",
             "--out", tmp_path/"m.json", "--predictions", tmp_path/"p.csv", "--quiet")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path/"m.json").read_text())
    assert {"mAP@10_multi", "mAP@16_multi"} <= set(m)
    # the values, recomputed from the prediction file and the relevance lists by the formula of the task
    queries, names, sim = read_predictions(tmp_path/"p.csv")
    rel = pd.read_csv(corpus/"relevance_evaluation.csv")
    lists = {q: set(ast.literal_eval(v)) for q, v in zip(rel["query"], rel["audio_filenames"])}
    first = {q: i for i, q in reversed(list(enumerate(queries)))}       # a repeated caption counts once
    assert any(len(v) > 1 for v in lists.values())                      # really several relevant clips
    for k in (10, 16):
        aps = [ap_at_k([names[j] for j in np.argsort(-sim[i], kind="stable")], lists[q], k)
               for q, i in first.items() if q in lists]
        assert m[f"mAP@{k}_multi"] == pytest.approx(np.mean(aps), abs=1e-9), k
    full = json.loads((run/"evaluation-evaluation.json").read_text())
    assert full["audio_pretrained"] is False and full["trained_on"] == "clotho"

def test_evaluate_sees_an_overwritten_clip(corpus, run, tmp_path, cli):
    "One evaluation WAV replaced by other audio of the same length: its column of predictions.csv changes."
    data = tmp_path/"data"; shutil.copytree(corpus, data, ignore=shutil.ignore_patterns(".lasr_cache"))
    mine = tmp_path/"run"; shutil.copytree(run, mine, ignore=shutil.ignore_patterns("embeddings"))
    r = cli("evaluate", mine, "--data-root", data, "--predictions", tmp_path/"p1.csv", "--quiet")
    assert r.returncode == 0, r.stderr
    wavs = sorted((data/"CLOTHO_v2.1"/"clotho_audio_files"/"evaluation").glob("*.wav"))
    y, sr = sf.read(wavs[0], dtype="int16")
    size = wavs[0].stat().st_size
    other = np.random.default_rng(0).integers(-8000, 8000, len(y)).astype(np.int16)
    sf.write(wavs[0], other, sr, subtype="PCM_16")
    assert wavs[0].stat().st_size == size                                 # same length, same size
    r = cli("evaluate", mine, "--data-root", data, "--predictions", tmp_path/"p2.csv", "--quiet")
    assert r.returncode == 0, r.stderr
    q1, n1, s1 = read_predictions(tmp_path/"p1.csv"); q2, n2, s2 = read_predictions(tmp_path/"p2.csv")
    assert (q1, n1) == (q2, n2)
    j = n1.index(wavs[0].name)
    assert np.abs(s1[:, j] - s2[:, j]).max() > 1e-3                        # the new audio is scored
    np.testing.assert_array_equal(np.delete(s1, j, 1), np.delete(s2, j, 1))  # and nothing else changed
    model = load_model(mine, precision="32")   # as evaluate
    want = embed_text(model, q2) @ embed_audio(model, [wavs[0]]).T
    np.testing.assert_allclose(s2[:, j], want[:, 0], rtol=0, atol=1e-5)

def test_hear_style_embeddings_are_deterministic_and_batch_invariant(corpus, run):
    model = load_model(run)
    files = sorted((corpus/"CLOTHO_v2.1"/"clotho_audio_files"/"evaluation").glob("*.wav"))[:3]
    together = embed_audio(model, [files[0], files[1], files[0], files[2]])
    alone = np.concatenate([embed_audio(model, [f]) for f in (files[0], files[1], files[2])])
    np.testing.assert_allclose(together[0], together[2], atol=1e-6)
    np.testing.assert_allclose(together[[0, 1, 3]], alone, atol=1e-5)
    t = embed_text(model, ["A Beep!", "a beep", "a low rumble"])
    np.testing.assert_allclose(t[0], t[1], atol=1e-6)          # normalised like training captions
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1, atol=1e-5)

def test_bad_checkpoints_give_clear_errors(corpus, run, tmp_path, cli):
    broken = tmp_path/"broken"; shutil.copytree(run, broken)
    w = broken/"best.safetensors"; w.write_bytes(w.read_bytes()[:1000])
    r = cli("evaluate", broken, "--data-root", corpus, "--quiet")
    assert r.returncode == 2 and "SHA-256" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # a checkpoint of another model (smoke weights into a model with other widths)
    r = cli("train", "--preset", "smoke", "--set", "model.embed_dim=48", "--set", f"run.init_from={run}",
             "--data-root", corpus, "--out", tmp_path/"other", "--quiet")
    assert r.returncode == 2 and "does not fit this model" in r.stderr and "Traceback" not in r.stderr, r.stderr

def test_training_stops_on_bad_data_before_the_cache(tmp_path, cli):
    root = synth_corpus(tmp_path/"c", n_dev=8, n_val=4, n_eval=4, seed=0, progress=False)
    audio = root/"CLOTHO_v2.1"/"clotho_audio_files"/"development"
    wavs = sorted(audio.glob("*.wav"))
    wavs[0].write_bytes(b"RIFF not really a wav")
    wavs[1].unlink()
    csvp = root/"CLOTHO_v2.1"/"clotho_csv_files"/"clotho_captions_development.csv"
    df = pd.read_csv(csvp); df.loc[2, "caption_3"] = ""; df.to_csv(csvp, index=False)
    r = cli("validate", "--data-root", root)
    assert r.returncode == 2
    for name in (wavs[0].name, wavs[1].name, df.loc[2, "file_name"]): assert name in r.stdout + r.stderr
    r = cli("train", "--preset", "smoke", "--data-root", root, "--out", tmp_path/"run", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert not (root/".lasr_cache").exists() and not (tmp_path/"run").exists()

def test_describe_paper(cli):
    r = cli("describe", "--preset", "paper")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    a = d["parts"]["audio_encoder"]
    assert round(a["total"] / 1e6, 1) == 86.1 and a["name"].startswith("passt")
    assert d["parts"]["audio_encoder.blocks_0_7"]["trainable"] == 0
    assert d["parts"]["audio_encoder.blocks_8_11"]["trainable"] == d["parts"]["audio_encoder.blocks_8_11"]["total"] > 0
    assert 350e6 < d["parts"]["text_encoder"]["total"] < 360e6
    assert {"audio_encoder", "audio_pooling", "audio_head", "text_encoder", "text_head"} <= set(d["parts"])

"End-to-end training and evaluation on a tiny generated corpus with the smoke preset."
import json, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pandas as pd
import pytest, lightning as L

from lasr.core import get_preset
from lasr.synth import synth_corpus
from lasr.train import train, evaluate, load_model, embed_audio, embed_text

LASR = Path(sys.executable).parent/"lasr"

def lasr(*args):
    return subprocess.run([str(LASR), *map(str, args)], capture_output=True, text=True)

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return synth_corpus(tmp_path_factory.mktemp("corpus"), n_dev=32, n_val=12, n_eval=12, seed=3, progress=False)

@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")/"smoke"
    train(get_preset("smoke"), corpus, out, progress=False)
    return out

def lr_by_step(out: Path) -> dict[int, float]:
    "Learning rate per optimiser step from every CSV log of a run (later logs win)."
    lr = {}
    for f in sorted((out/"logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])):
        df = pd.read_csv(f)
        for s, v in df.dropna(subset=["lr"])[["step", "lr"]].itertuples(index=False): lr[int(s)] = float(v)
    return lr

def test_run_folder_is_self_describing(run):
    for name in ("config.json", "best.safetensors", "best.json", "last.safetensors", "last.json", "train.json"):
        assert (run/name).is_file(), name
    info = json.loads((run/"best.json").read_text())
    assert info["preset"] == "smoke" and info["audio_pretrained"] is False and info["text_pretrained"] is False
    assert info["config"]["preset"] == "smoke" and len(info["data_fingerprint"]) == 40
    s = json.loads((run/"train.json").read_text())
    assert s["steps"] == s["steps_per_epoch"] * get_preset("smoke").optim.epochs

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
    assert not (out/"train.json").exists()
    with pytest.raises(Exception, match="already holds a run"):
        train(cfg, corpus, out, progress=False)
    s = train(cfg, corpus, out, resume=True, progress=False)
    assert s["steps"] == ref["steps"]
    a, b = lr_by_step(run), lr_by_step(out)
    assert sorted(a) == sorted(b) == list(range(ref["steps"]))
    np.testing.assert_allclose([b[k] for k in sorted(b)], [a[k] for k in sorted(a)], rtol=1e-6)
    # the resumed run also ends with the same weights' quality as the uninterrupted one
    assert json.loads((out/"best.json").read_text())["metrics"] == json.loads((run/"best.json").read_text())["metrics"]

def test_resume_with_another_config_is_refused(corpus, run):
    r = lasr("train", "--preset", "smoke", "--data-root", corpus, "--out", run, "--resume", "--set", "optim.lr=0.5")
    assert r.returncode == 2 and "different config" in r.stderr and "optim__lr" in r.stderr, r.stderr

def test_same_seed_same_metrics_and_evaluate_matches_score(corpus, run, tmp_path):
    import torch
    again = tmp_path/"again"
    before = torch.get_float32_matmul_precision()
    train(get_preset("smoke"), corpus, again, progress=False)
    assert torch.get_float32_matmul_precision() == before        # training leaves no global setting behind
    m1 = evaluate(run, corpus, out=tmp_path/"m1.json", predictions=tmp_path/"p1.csv", progress=False)
    m2 = evaluate(again, corpus, out=tmp_path/"m2.json", progress=False)
    assert m1 == m2
    assert set(json.loads((tmp_path/"m1.json").read_text())) == {"R@1", "R@5", "R@10", "mAP@10", "mAP@16", "n_queries", "n_items"}
    captions = corpus/"CLOTHO_v2.1"/"clotho_csv_files"/"clotho_captions_evaluation.csv"
    r = lasr("score", "--similarity", tmp_path/"p1.csv", "--captions", captions, "--json")
    assert r.returncode == 0, r.stderr
    scored = json.loads(r.stdout)
    assert scored == {k: v for k, v in m1.items() if k not in ("n_queries", "n_items")}
    assert m1["n_items"] == 12 and m1["n_queries"] == 60
    assert (run/"recall-evaluation.png").stat().st_size > 1000

def test_evaluate_with_relevance_cli(corpus, run, tmp_path):
    r = lasr("evaluate", run, "--data-root", corpus, "--relevance", corpus/"relevance_evaluation.csv",
             "--out", tmp_path/"m.json", "--quiet")
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path/"m.json").read_text())
    assert {"mAP@10_multi", "mAP@16_multi"} <= set(m)
    full = json.loads((run/"evaluation-evaluation.json").read_text())
    assert full["audio_pretrained"] is False and full["trained_on"] == "clotho"

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

def test_bad_checkpoints_give_clear_errors(corpus, run, tmp_path):
    broken = tmp_path/"broken"; shutil.copytree(run, broken)
    w = broken/"best.safetensors"; w.write_bytes(w.read_bytes()[:1000])
    r = lasr("evaluate", broken, "--data-root", corpus, "--quiet")
    assert r.returncode == 2 and "SHA-256" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # a checkpoint of another model (smoke weights into a model with other widths)
    r = lasr("train", "--preset", "smoke", "--set", "model.embed_dim=48", "--set", f"run.init_from={run}",
             "--data-root", corpus, "--out", tmp_path/"other", "--quiet")
    assert r.returncode == 2 and "does not fit this model" in r.stderr and "Traceback" not in r.stderr, r.stderr

def test_training_stops_on_bad_data_before_the_cache(tmp_path):
    root = synth_corpus(tmp_path/"c", n_dev=8, n_val=4, n_eval=4, seed=0, progress=False)
    audio = root/"CLOTHO_v2.1"/"clotho_audio_files"/"development"
    wavs = sorted(audio.glob("*.wav"))
    wavs[0].write_bytes(b"RIFF not really a wav")
    wavs[1].unlink()
    csvp = root/"CLOTHO_v2.1"/"clotho_csv_files"/"clotho_captions_development.csv"
    df = pd.read_csv(csvp); df.loc[2, "caption_3"] = ""; df.to_csv(csvp, index=False)
    r = lasr("validate", "--data-root", root)
    assert r.returncode == 2
    for name in (wavs[0].name, wavs[1].name, df.loc[2, "file_name"]): assert name in r.stdout + r.stderr
    r = lasr("train", "--preset", "smoke", "--data-root", root, "--out", tmp_path/"run", "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert not (root/".lasr_cache").exists() and not (tmp_path/"run").exists()

def test_describe_paper():
    r = lasr("describe", "--preset", "paper")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    a = d["parts"]["audio_encoder"]
    assert round(a["total"] / 1e6, 1) == 86.1 and a["name"].startswith("passt")
    assert d["parts"]["audio_encoder.blocks_0_7"]["trainable"] == 0
    assert d["parts"]["audio_encoder.blocks_8_11"]["trainable"] == d["parts"]["audio_encoder.blocks_8_11"]["total"] > 0
    assert 350e6 < d["parts"]["text_encoder"]["total"] < 360e6
    assert {"audio_encoder", "audio_pooling", "audio_head", "text_encoder", "text_head"} <= set(d["parts"])

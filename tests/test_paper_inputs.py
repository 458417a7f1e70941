"The paper's inputs: a local text model folder used everywhere, offline (issue 11, items 2 and 11)."
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest, torch
from safetensors.torch import load_file

from lasr.core import TextConfig
from lasr.encoders import build_text_encoder, text_folder
from lasr.synth import synth_corpus

LASR = Path(sys.executable).parent/"lasr"

@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    "Environment of a machine without network and with empty Hugging Face and lasr caches."
    home = tmp_path_factory.mktemp("home")
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(home/"hf"),
            "XDG_CACHE_HOME": str(home/"cache"), "LASR_CACHE": str(home/"lasr")}

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    "A copy of the packaged all-MiniLM-L6-v2 folder, standing in for a local roberta-large download."
    return Path(shutil.copytree(text_folder("all-minilm-l6-v2"), tmp_path_factory.mktemp("weights")/"my-text-model"))

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return synth_corpus(tmp_path_factory.mktemp("corpus"), n_dev=16, n_val=8, n_eval=8, seed=5, progress=False)

def lasr(env, *args):
    return subprocess.run([str(LASR), *map(str, args)], capture_output=True, text=True, env=env)

def test_weights_folder_defines_architecture_and_tokenizer(model_dir):
    "With or without loading its weights, text.weights gives the folder's model and tokenizer, not the registry's."
    cfg = TextConfig(encoder="roberta-large", weights=str(model_dir))
    loaded, rebuilt = build_text_encoder(cfg), build_text_encoder(cfg, load_weights=False)
    a, b = loaded.state_dict(), rebuilt.state_dict()
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert loaded.dim == rebuilt.dim == 384                       # MiniLM's width, not roberta-large's 1024
    assert loaded.pretrained and not rebuilt.pretrained
    assert rebuilt.tokenizer.vocab_size == loaded.tokenizer.vocab_size == 30522   # the folder's (BERT) vocabulary
    assert rebuilt.tokenize(["a dog barks"])["input_ids"].tolist() == loaded.tokenize(["a dog barks"])["input_ids"].tolist()

def test_weights_folder_is_used_by_every_stage_offline(model_dir, corpus, offline, tmp_path):
    "Stage 1, stage 2 (init_from), --resume and evaluate all load from text.weights and need nothing else."
    run = tmp_path/"run"
    args = ["--preset", "smoke", "--data-root", corpus, "--out", run, "--quiet",
            "--set", "text.encoder=roberta-large", "--set", f"text.weights={model_dir}", "--set", "text.tokenizer=",
            "--set", "text.pretrained=true", "--set", "text.trainable=false", "--set", "data.pretrain_corpora=clotho",
            "--set", "optim.epochs=1", "--set", "optim.warmup_epochs=0.5", "--set", "optim.cosine_epochs=0.5"]
    r = lasr(offline, "train", *args)
    assert r.returncode == 0, r.stderr
    # frozen text encoder: both stages' checkpoints hold exactly the folder's weights
    ref = load_file(model_dir/"model.safetensors")
    for stage in (run/"pretrain", run):
        state = load_file(stage/"best.safetensors")
        w = state["text_encoder.model.embeddings.word_embeddings.weight"]
        assert torch.equal(w, ref["embeddings.word_embeddings.weight"].to(w.dtype)), stage
    steps = json.loads((run/"train.json").read_text())["steps"]
    r = lasr(offline, "train", *args, "--resume")
    assert r.returncode == 0, r.stderr
    assert json.loads((run/"train.json").read_text())["steps"] == steps
    r = lasr(offline, "evaluate", run, "--data-root", corpus, "--out", tmp_path/"m.json", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path/"m.json").read_text())["n_items"] == 8
    # and the folder is really what evaluate reads: without it, a clear error that names it
    moved = model_dir.with_name("elsewhere")
    model_dir.rename(moved)
    try:
        shutil.rmtree(run/"embeddings", ignore_errors=True)
        r = lasr(offline, "evaluate", run, "--data-root", corpus, "--quiet")
        assert r.returncode == 2 and str(model_dir) in r.stderr and "Traceback" not in r.stderr, r.stderr
    finally: moved.rename(model_dir)

"The paper's inputs: a local text model folder used everywhere, offline (issue 11, items 2 and 11)."
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest, torch
from safetensors.torch import load_file

from lasr.core import TextConfig
from lasr.encoders import build_text_encoder, text_folder
from lasr.synth import synth_corpus

from conftest import lasr

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

def test_weights_folder_is_used_by_every_stage_offline(model_dir, smoke_corpus, offline, tmp_path, cli):
    "Stage 1, stage 2 (init_from), --resume and evaluate all load from text.weights and need nothing else."
    run, corpus = tmp_path/"run", smoke_corpus
    args = ["--preset", "smoke", "--data-root", corpus, "--out", run, "--quiet",
            "--set", "text.encoder=roberta-large", "--set", f"text.weights={model_dir}", "--set", "text.tokenizer=",
            "--set", "text.pretrained=true", "--set", "text.trainable=false", "--set", "data.pretrain_corpora=clotho",
            "--set", "optim.epochs=1", "--set", "optim.warmup_epochs=0.5", "--set", "optim.cosine_epochs=0.5"]
    r = lasr("train", *args, env=offline)
    assert r.returncode == 0, r.stderr
    # frozen text encoder: both stages' checkpoints hold exactly the folder's weights
    ref = load_file(model_dir/"model.safetensors")
    for stage in (run/"pretrain", run):
        state = load_file(stage/"best.safetensors")
        w = state["text_encoder.model.embeddings.word_embeddings.weight"]
        assert torch.equal(w, ref["embeddings.word_embeddings.weight"].to(w.dtype)), stage
    steps = json.loads((run/"train.json").read_text())["steps"]
    r = lasr("train", *args, "--resume", env=offline)
    assert r.returncode == 0, r.stderr
    assert json.loads((run/"train.json").read_text())["steps"] == steps
    r = lasr("evaluate", run, "--data-root", corpus, "--out", tmp_path/"m.json", "--quiet", env=offline)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path/"m.json").read_text())["n_items"] == 16
    # and the folder is really what evaluate reads: without it, a clear error that names it
    moved = model_dir.with_name("elsewhere")
    model_dir.rename(moved)
    try:
        shutil.rmtree(run/"embeddings", ignore_errors=True)
        r = cli("evaluate", run, "--data-root", corpus, "--quiet")      # (it stops before any download)
        assert r.returncode == 2 and str(model_dir) in r.stderr and "Traceback" not in r.stderr, r.stderr
    finally: moved.rename(model_dir)


# Table 1 of the paper: every audio x text encoder pair must build from the registry alone
TABLE1_AUDIO = ["passt", "clap-htsat", "whisper-base", "data2vec-audio-base"]
TABLE1_TEXT = {"roberta-large": "roberta-tiny", "all-mpnet-base-v2": "mpnet-tiny", "bge-base-en-v1.5": "bert-tiny",
               "gtr-t5-large": "t5-tiny", "deberta-v3-large": "deberta-tiny"}   # full size -> same class, small
WORDS = ["a dog barks loudly", "rain falls on a metal roof", "birds sing in the morning", "a car passes by"] * 50

def tokenizer_folder(name: str, d: Path) -> Path:
    "A folder with the registry's config and small tokenizer files of the kind the published model ships."
    from lasr.encoders import TEXT_ENCODERS, arch_config
    spec = TEXT_ENCODERS[name]
    arch_config(spec).save_pretrained(d)
    if spec.model_type in ("bert", "mpnet"):
        words = sorted(set(" ".join(WORDS).split()))
        (d/"vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>", "<pad>",
                                              "<unk>", "<mask>", *words]) + "\n")
    elif spec.model_type == "roberta":
        from tokenizers import ByteLevelBPETokenizer
        t = ByteLevelBPETokenizer()
        t.train_from_iterator(WORDS, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        t.save_model(str(d))
    else:   # T5 and DeBERTa-v3 ship a SentencePiece model
        import io, sentencepiece as spm
        buf = io.BytesIO()
        spm.SentencePieceTrainer.train(sentence_iterator=iter(WORDS), model_writer=buf, vocab_size=30, hard_vocab_limit=False,
                                       model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
        for f in ("spm.model", "spiece.model"): (d/f).write_bytes(buf.getvalue())
    return d

def test_table1_needs_are_declared():
    "DeBERTa-v3 (and T5 without tokenizer.json) need sentencepiece and protobuf: both are requirements."
    import configparser
    ini = configparser.ConfigParser(); ini.read(Path(__file__).parents[1]/"settings.ini")
    reqs = {r.split(">")[0].split("=")[0].split("<")[0] for r in ini["DEFAULT"]["requirements"].split()}
    assert {"sentencepiece", "protobuf", "transformers", "tokenizers"} <= reqs

@pytest.mark.parametrize("name", list(TABLE1_TEXT))
def test_table1_text_encoder_builds_and_tokenizes(name, tmp_path):
    "The full-size architecture builds; its tokenizer class loads offline and feeds the same model class."
    from lasr.encoders import load_tokenizer
    folder = tokenizer_folder(name, tmp_path)
    with torch.device("meta"):
        e = build_text_encoder(TextConfig(encoder=name, pretrained=False, tokenizer=str(folder)), load_weights=False)
    assert e.dim in (768, 1024)
    tok = load_tokenizer(str(folder))
    ids = tok(["a dog barks loudly"])["input_ids"][0]
    assert len(ids) > 2 and tok.unk_token_id not in ids[1:-1]
    small = build_text_encoder(TextConfig(encoder=TABLE1_TEXT[name], pretrained=False, tokenizer=str(folder))).eval()
    with torch.no_grad(): z = small(small.tokenize(["a dog barks loudly", "rain falls"]))
    assert z.shape == (2, small.dim) and torch.isfinite(z).all()

def test_deberta_tokenizer_needs_sentencepiece(tmp_path):
    "Why sentencepiece is declared: without it the DeBERTa-v3 tokenizer cannot be loaded."
    folder = tokenizer_folder("deberta-v3-large", tmp_path)
    code = ("import sys; sys.modules['sentencepiece'] = None\n"
            "from lasr.encoders import load_tokenizer\n"
            f"load_tokenizer({str(folder)!r})\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode != 0 and "tokenizer" in r.stderr.lower()

@pytest.mark.parametrize("name", TABLE1_AUDIO)
def test_table1_audio_cell_needs_no_hand_set_overrides(name):
    "--set audio.encoder=NAME alone gives the encoder's rate and trainable blocks, and the model builds."
    from lasr.core import get_preset
    from lasr.encoders import AUDIO_ENCODERS
    from lasr.model import describe
    spec = AUDIO_ENCODERS[name]
    cfg = get_preset("paper", f"audio.encoder={name}")
    assert (cfg.audio.sample_rate, cfg.audio.first_trainable_block) == (spec.sample_rate, spec.first_trainable_block)
    d = describe(cfg)["parts"]
    frozen = [k for k in d if k.startswith("audio_encoder.blocks_0_")]
    assert frozen and d[frozen[0]]["trainable"] == 0 and d["audio_encoder"]["trainable"] > 0


# Large data (item 8): where the cache goes, how much it holds, one decode per file
def test_default_cache_folder_is_a_user_cache(monkeypatch, tmp_path):
    from lasr.data import default_cache_dir
    monkeypatch.delenv("LASR_CACHE", raising=False); monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path/"home"))
    assert default_cache_dir() == tmp_path/"home"/".cache"/"lasr"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path/"xdg"))
    assert default_cache_dir() == tmp_path/"xdg"/"lasr"
    monkeypatch.setenv("LASR_CACHE", str(tmp_path/"mine"))
    assert default_cache_dir() == tmp_path/"mine"

@pytest.fixture()
def long_clips(tmp_path):
    "A Clotho tree of 3 s clips, made read-only like a shared data store."
    import numpy as np, soundfile as sf, csv
    root = tmp_path/"data"
    base = root/"CLOTHO_v2.1"
    for split, n in (("development", 20), ("validation", 4)):
        (base/"clotho_audio_files"/split).mkdir(parents=True); (base/"clotho_csv_files").mkdir(exist_ok=True)
        rows = [["file_name"] + [f"caption_{k}" for k in range(1, 6)]]
        for j in range(n):
            t = np.arange(3 * 16000) / 16000
            sf.write(base/"clotho_audio_files"/split/f"{split}_{j}.wav", (0.2 * np.sin(2 * np.pi * (200 + 30 * j) * t)).astype("float32"), 16000)
            rows.append([f"{split}_{j}.wav"] + [f"tone {j} caption {k}" for k in range(5)])
        with open(base/"clotho_csv_files"/f"clotho_captions_{split}.csv", "w", newline="") as f: csv.writer(f).writerows(rows)
    for p in sorted(root.rglob("*"), reverse=True): p.chmod(0o555 if p.is_dir() else 0o444)
    root.chmod(0o555)
    yield root
    for p in [root, *root.rglob("*")]: p.chmod(0o755 if p.is_dir() else 0o644)

def test_cache_decodes_once_what_training_reads_outside_a_read_only_root(long_clips, tmp_path, monkeypatch):
    "One decode per file (validation reads the cache), capped at max_seconds even with random crops, not under the data root."
    import lasr.data as ld
    from lasr.core import get_preset
    calls = []
    real = ld.load_audio
    monkeypatch.setattr(ld, "load_audio", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    monkeypatch.setattr(ld, "_peak_decode", lambda p: pytest.fail("validation decoded a file again"))
    monkeypatch.setenv("LASR_CACHE", str(tmp_path/"cache"))
    cfg = get_preset("smoke", "audio.max_seconds=1.0", "audio.random_crop=true", "optim.batch_size=4", "data.num_workers=1")
    dm = ld.RetrievalDataModule(cfg, long_clips, progress=False)
    dm.setup("fit")
    assert len(calls) == len(set(calls)) == 24                         # 20 + 4 files, each decoded once
    caches = sorted((tmp_path/"cache").glob("*.h5"))
    assert len(caches) == 2 and not list(long_clips.rglob("*.h5"))
    assert all(dm.train_ds.cache.get(i)[1] == 32000 for i in range(20))   # 1 s of the 3 s stored, at 32 kHz
    batch = next(iter(dm.train_dataloader()))
    assert batch["wav"].shape == (4, 32000)

def test_parallel_decoding_gives_the_same_cache(long_clips, tmp_path):
    import numpy as np
    from lasr.data import WaveCache, read_clotho
    paths = read_clotho(long_clips, "development").audio_paths
    one = WaveCache(paths, tmp_path/"a", 32000, 2.0).build(progress=False, workers=1)
    two = WaveCache(paths, tmp_path/"b", 32000, 2.0).build(progress=False, workers=2)
    for i in range(len(paths)):
        assert np.array_equal(one.get(i)[0], two.get(i)[0])
    assert np.array_equal(one.peaks(), two.peaks()) and one.problems() == two.problems() == {}

def test_unwritable_cache_folder_is_a_clear_error(long_clips, tmp_path):
    from lasr.core import get_preset
    from lasr.data import RetrievalDataModule
    from lasr.core import LasrError
    (tmp_path/"a-file").write_text("")                    # (chmod cannot stop root: a file in the way can)
    cfg = get_preset("smoke", f"data.cache_dir={tmp_path}/a-file/cache")
    with pytest.raises(LasrError, match="LASR_CACHE"):
        RetrievalDataModule(cfg, long_clips, progress=False).setup("fit")


# lasr doctor: what the paper study will find, and what is missing
def _three_layouts(root: Path) -> Path:
    "Clotho (synthetic), AudioCaps and WavCaps, each in its published layout, with a relevance file."
    import csv as _csv, numpy as np, soundfile as sf
    synth_corpus(root, n_dev=6, n_val=3, n_eval=3, seed=2, progress=False)
    tone = (0.1 * np.sin(np.arange(32000) / 5)).astype("float32")
    ac = root/"AUDIOCAPS"; (ac/"audio_32000Hz"/"train").mkdir(parents=True)
    rows = [["audiocap_id", "youtube_id", "start_time", "caption"]]
    for j in range(3):
        rows.append([str(j), f"yt{j}", "30", f"a sound number {j}"])
        sf.write(ac/"audio_32000Hz"/"train"/f"yt{j}_30.flac", tone, 32000)
    with open(ac/"train.csv", "w", newline="") as f: _csv.writer(f).writerows(rows)
    wc = root/"WavCaps"
    for src, jname, ids in (("AudioSet_SL", "as_final", ["Yabc.wav"]), ("BBC_Sound_Effects", "bbc_final", ["07001"]),
                            ("FreeSound", "fsd_final", ["1234"]), ("SoundBible", "sb_final", ["55"])):
        (wc/"json_files"/src).mkdir(parents=True); (wc/"Audio"/src).mkdir(parents=True)
        (wc/"json_files"/src/f"{jname}.json").write_text(json.dumps(
            {"data": [{"id": i, "caption": f"{src} sound", "duration": 1.0} for i in ids]}))
        for i in ids: sf.write(wc/"Audio"/src/f"{Path(i).stem}.flac", tone, 32000)
    (root/"exclusions.csv").write_text("file_name\n")
    return root

def test_doctor_lists_what_the_study_finds(tmp_path, model_dir, cli, monkeypatch):
    root = _three_layouts(tmp_path/"data")
    # no weights but the ones given: this process' model caches are empty ones (conftest), and nothing is fetched
    monkeypatch.setenv("LASR_CACHE", str(tmp_path/"cache")); monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ready = ["--data-root", root, "--cpu", "--set", "audio.pretrained=false", "--set", f"text.weights={model_dir}",
             "--set", f"data.exclusions={root/'exclusions.csv'}"]
    r = cli("doctor", *ready)
    assert r.returncode == 0, r.stdout + r.stderr
    for what in ("clotho/development", "clotho/evaluation", "audiocaps/train", "wavcaps/train", "relevance",
                 "exclusion", "text weights roberta-large", "cache folder"):
        assert any(l.startswith("ok") and what in l for l in r.stdout.splitlines()), what
    (root/"WavCaps"/"Audio"/"FreeSound"/"1234.flac").unlink()
    (root/"relevance_evaluation.csv").unlink()
    r = cli("doctor", *ready)
    missing = [l for l in r.stdout.splitlines() if l.startswith("MISSING")]
    assert r.returncode == 2 and len(missing) == 2, r.stdout
    assert "wavcaps/train" in missing[0] and "1 missing" in missing[0] and "relevance" in missing[1]
    # the paper preset as is, without a GPU: the whole list of what is missing, at once
    r = cli("doctor", "--data-root", root, "--table1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    for what in ("audio weights passt", "audio weights clap-htsat", "audio weights whisper-base",
                 "audio weights data2vec-audio-base", "text weights deberta-v3-large", "text weights gtr-t5-large",
                 "GPU", "exclusion list"):
        assert any(l.startswith("MISSING") and what in l for l in r.stdout.splitlines()), what

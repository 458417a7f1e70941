"""The paper dry run: the exact `paper` configuration (real-size PaSST and a roberta-large-sized text
encoder with random weights, two stages, attention pooling, masking, bf16 where the CPU has it) trained
for a few steps on a tiny corpus in the Clotho, AudioCaps and WavCaps layouts, in 2 DDP processes on the
CPU (gloo), then evaluated and scored."""
import csv, functools, json, shutil
from pathlib import Path
import numpy as np, pytest, soundfile as sf, torch

from lasr.core import flatten, get_preset, load_config, seed_everything
from lasr.train import cpu_has_fast_bf16, lr_at, load_checkpoint, weights_sha256
from conftest import lasr
from ddp_check import lr_by_step, validate_one_process

# two real-size ranks keep about 11 GB each: `make test` runs this file after the others, not beside them
pytestmark = pytest.mark.alone

SR = 32000
PER_PROCESS_BATCH, PROCESSES = 2, 2
BF16 = cpu_has_fast_bf16()
# what a CPU dry run has to change; everything else is the paper preset
SETS = {"audio.pretrained": "false", "text.pretrained": "false",
        "text.tokenizer": "all-minilm-l6-v2",          # a random text model still needs a tokenizer (packaged)
        "run.accelerator": "cpu", "run.devices": str(PROCESSES), "run.strategy": "ddp_find_unused_parameters_true",
        "run.precision": "bf16-mixed" if BF16 else "32", "optim.batch_size": str(PER_PROCESS_BATCH),
        "optim.epochs": "1", "run.embed_batch_size": "2"}
WORDS = "dog bark rain roof engine idle bird song door slam water drip bell ring wind gust crowd cheer".split()

def _clip(path: Path, seed: int, seconds: float):
    "A few seconds of a tone over noise: one 10 s window each, so that a step stays cheap."
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * (200 + 150 * seed) * t) + 0.05 * rng.standard_normal(len(t))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x.astype(np.float32), SR)

def _caption(seed: int, k: int = 0) -> str:
    rng = np.random.default_rng(1000 * seed + k)
    return "a " + " ".join(rng.choice(WORDS, 5)) + f" number {seed}"

def write_tiny_corpus(root: Path) -> Path:
    """Clotho v2.1 (2 development, 3 validation, 2 evaluation clips), AudioCaps (1 training clip) and WavCaps
    (1 clip, SoundBible JSON) in their on-disk layouts."""
    seed = 0
    clotho = root/"CLOTHO_v2.1"
    for split, n in (("development", 2), ("validation", 3), ("evaluation", 2)):
        rows = []
        for i in range(n):
            seed += 1
            name = f"{split[:3]}_{i}.wav"
            _clip(clotho/"clotho_audio_files"/split/name, seed, 2 + i)
            rows.append([name, *[_caption(seed, k) for k in range(5)]])
        (clotho/"clotho_csv_files").mkdir(parents=True, exist_ok=True)
        with open(clotho/"clotho_csv_files"/f"clotho_captions_{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows([["file_name", *[f"caption_{k}" for k in range(1, 6)]], *rows])
    ac = root/"AUDIOCAPS"
    _clip(ac/"audio"/"train"/"abcdefghijk_30.wav", 20, 3)
    ac.joinpath("train.csv").write_text(f"audiocap_id,youtube_id,start_time,caption\n1,abcdefghijk,30,{_caption(20)}\n")
    wc = root/"WAVCAPS"
    _clip(wc/"audio"/"SoundBible"/"1234.flac", 21, 3)
    (wc/"json_files"/"SoundBible").mkdir(parents=True)
    (wc/"json_files"/"SoundBible"/"sb_final.json").write_text(json.dumps({"data": [{"id": "1234", "caption": _caption(21)}]}))
    return root

@pytest.fixture(scope="module")
def dryrun(tmp_path_factory):
    corpus = write_tiny_corpus(tmp_path_factory.mktemp("paper_corpus"))
    out = tmp_path_factory.mktemp("paper_runs")/"paper"
    sets = [a for k, v in {**SETS, "data.cache_dir": str(corpus/".cache")}.items() for a in ("--set", f"{k}={v}")]
    r = lasr("train", "--preset", "paper", "--data-root", corpus, "--out", out, "--quiet", *sets, threads=1, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    yield corpus, out
    shutil.rmtree(out)   # about 10 GB of checkpoints per stage: pytest keeps the temporary folders of 3 sessions

@pytest.fixture(scope="module")
def distilled(dryrun, tmp_path_factory):
    """The paper study's `+ distillation` row on the dry run: the full system's stage 2 (from stage 1's best weights,
    Clotho only) trained on the soft targets alone (soft weight 1, hard weight 0) of two random-weight teachers,
    the dry run's two stages (stage 2's and stage 1's best checkpoints), in 2 DDP processes."""
    corpus, out = dryrun
    student = tmp_path_factory.mktemp("paper_distilled")/"student"
    kd = {**SETS, "data.cache_dir": str(corpus/".cache"), "data.pretrain_corpora": "", "run.init_from": str(out/"pretrain"),
          "loss.teachers": f"{out},{out/'pretrain'}", "loss.soft_weight": "1.0", "loss.hard_weight": "0.0"}
    sets = [a for k, v in kd.items() for a in ("--set", f"{k}={v}")]
    r = lasr("train", "--preset", "paper", "--data-root", corpus, "--out", student, "--quiet", *sets, threads=1, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    yield out, student, r
    shutil.rmtree(student)

@functools.cache
def best_weights(folder: Path) -> tuple[str, dict]:
    "The weights hash of a run folder's best checkpoint and its parameter count per part (loaded once: 1.8 GB each)."
    state, _ = load_checkpoint(folder/"best")
    return weights_sha256(state), {p: sum(v.numel() for k, v in state.items() if k.startswith(p)) for p in ("audio_encoder.", "text_encoder.")}

def test_a_distillation_stage_with_two_random_weight_teachers(distilled):
    """Issue 24: the distilled row's stage 2 runs on the paper configuration, each teacher embedded once and recorded.
    (First in the file: its two real-size ranks start before this process has loaded a real-size model of its own,
    whose freed memory it keeps, which would leave too little of 24 GB.)"""
    out, student, r = distilled
    s = json.loads((student/"train.json").read_text())
    assert s["processes"] == PROCESSES and s["train_pairs"] == 2 * 5 and not (student/"pretrain").exists()   # stage 2 only
    assert Path(s["init_from"]) == out/"pretrain"
    teachers = {t["run"]: t for t in s["teachers"]}
    assert list(teachers) == ["paper", "pretrain"] and all(Path(t["cache"]).is_file() for t in teachers.values())
    for run, folder in (("paper", out), ("pretrain", out/"pretrain")):   # each teacher's weights, by their hash
        assert teachers[run]["weights_sha256"] == best_weights(folder)[0]
    cfg = load_config(student/"config.json")
    assert (cfg.loss.soft_weight, cfg.loss.hard_weight) == (1.0, 0.0) and cfg.audio.first_trainable_block == 8
    assert "distillation: teacher paper" in r.stderr and "distillation: teacher pretrain" in r.stderr

def test_it_is_the_paper_configuration(dryrun):
    _, out = dryrun
    cfg = load_config(out/"config.json")
    paper = flatten(get_preset("paper"))
    changed = {k for k, v in flatten(cfg).items() if v != paper[k]}
    assert changed <= {k.replace(".", "__") for k in [*SETS, "data.cache_dir"]}, changed
    assert cfg.model.pooling == "attention" and cfg.audio.freq_mask > 0 and cfg.audio.time_mask > 0
    assert cfg.data.pretrain_corpora == "audiocaps,wavcaps,clotho" and cfg.audio.first_trainable_block == 8
    n = best_weights(out)[1]
    assert 85e6 < n["audio_encoder."] < 88e6 and 354e6 < n["text_encoder."] < 356e6   # PaSST, roberta-large sizes

def test_both_stages_ran_in_two_processes_with_the_single_process_schedule(dryrun):
    _, out = dryrun
    cfg, o = load_config(out/"config.json"), get_preset("paper").optim
    for stage, pairs in ((out/"pretrain", 2 * 5 + 1 + 1), (out, 2 * 5)):
        s = json.loads((stage/"train.json").read_text())
        assert s["processes"] == PROCESSES and s["train_pairs"] == pairs
        # one process with the global batch would take pairs // global batch steps per epoch
        spe = pairs // (PROCESSES * PER_PROCESS_BATCH)
        assert s["steps_per_epoch"] == spe and s["steps"] == spe * cfg.optim.epochs
        lr = lr_by_step(stage)
        assert sorted(lr) == list(range(s["steps"]))
        np.testing.assert_allclose([lr[k] for k in sorted(lr)],
                                   [lr_at(k, spe, o.lr, o.min_lr, o.warmup_epochs, o.cosine_epochs) for k in sorted(lr)],
                                   rtol=1e-6)

def test_stage_2_starts_from_stage_1_best_weights(dryrun):
    _, out = dryrun
    s2 = json.loads((out/"train.json").read_text())
    assert Path(s2["init_from"]) == out/"pretrain"
    assert s2["start_weights_sha256"] == best_weights(out/"pretrain")[0]

def test_partial_fine_tuning_keeps_blocks_0_to_7(dryrun):
    from lasr.model import create_model
    _, out = dryrun
    cfg = load_config(out/"config.json")
    seed_everything(cfg.run.seed)                      # the random initial weights, as stage 1 made them
    init = create_model(cfg, load_weights=False).state_dict()
    assert weights_sha256(init) == json.loads((out/"pretrain"/"train.json").read_text())["start_weights_sha256"]
    last, _ = load_checkpoint(out/"last")
    for b in range(12):
        keys = [k for k in init if k.startswith(f"audio_encoder.net.blocks.{b}.")]
        assert keys
        same = [torch.equal(init[k], last[k]) for k in keys]
        if b < 8: assert all(same), b
        else: assert not any(same), b
    del init, last

def test_ddp_validation_metrics_equal_single_process(dryrun):
    corpus, out = dryrun
    mine, info = validate_one_process(out, corpus, precision="bf16-mixed" if BF16 else "32-true")
    assert set(mine) == set(info["metrics"])
    for k, v in info["metrics"].items(): assert mine[k] == pytest.approx(v, abs=1e-6), k

def test_evaluated_and_scored(dryrun, tmp_path, cli):
    corpus, out = dryrun
    r = cli("evaluate", out, "--data-root", corpus, "--out", tmp_path/"m.json", "--predictions", tmp_path/"p.csv",
            "--device", "cpu", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((tmp_path/"m.json").read_text())
    assert m["n_items"] == 2 and m["n_queries"] == 10
    s = cli("score", "--similarity", tmp_path/"p.csv", "--json",
            "--captions", corpus/"CLOTHO_v2.1"/"clotho_csv_files"/"clotho_captions_evaluation.csv")
    assert s.returncode == 0, s.stderr
    assert json.loads(s.stdout) == {k: v for k, v in m.items() if k not in ("n_queries", "n_items")}

"Training in 2 DDP processes (gloo on the CPU) with `lasr train --set run.devices=2`: starts, keeps the schedule, scores like one process."
import json, subprocess, time
import pandas as pd
from pathlib import Path
import pytest

from lasr.core import get_preset
from lasr.synth import synth_corpus
from lasr.train import train
from conftest import lasr, lasr_env, lasr_popen
from ddp_check import lr_by_step, validate_one_process

DDP = ["--set", "run.accelerator=cpu", "--set", "run.devices=2", "--set", "run.strategy=ddp_find_unused_parameters_true"]

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # 5 validation clips: the padded sampler gives rank 1 a repeat of clip 0 (and of its captions)
    return synth_corpus(tmp_path_factory.mktemp("corpus"), n_dev=16, n_val=5, n_eval=4, seed=2, progress=False)

@pytest.fixture(scope="module")
def ddp_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")/"ddp"
    r = lasr("train", "--preset", "smoke", "--data-root", corpus, "--out", out, "--quiet", *DDP, threads=1, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r

def test_two_processes_start_and_only_rank_0_writes(ddp_run):
    out, r = ddp_run
    s = json.loads((out/"train.json").read_text())
    assert s["processes"] == 2 and s["global_batch"] == 2 * get_preset("smoke").optim.batch_size
    assert "already holds a run" not in r.stderr
    assert r.stdout.count("trained ") == 1                         # rank 1 prints nothing of its own
    assert sorted(p.name for p in (out/"logs").iterdir()) == ["version_0"]

def test_schedule_per_step_equals_one_process_with_the_global_batch(corpus, ddp_run, tmp_path):
    out, _ = ddp_run
    b = get_preset("smoke").optim.batch_size
    one = train(get_preset("smoke", f"optim.batch_size={2 * b}"), corpus, tmp_path/"one", progress=False)
    ddp = json.loads((out/"train.json").read_text())
    assert ddp["steps_per_epoch"] == one["steps_per_epoch"] == 16 * 5 // (2 * b)
    assert ddp["steps"] == one["steps"]
    a, c = lr_by_step(out), lr_by_step(tmp_path/"one")
    assert sorted(a) == sorted(c) == list(range(one["steps"]))
    assert a == c

def test_validation_metrics_equal_one_process_metrics(corpus, ddp_run):
    out, _ = ddp_run
    mine, info = validate_one_process(out, corpus)
    assert set(mine) == set(info["metrics"]) and "val/mAP@10" in mine
    for k, v in info["metrics"].items(): assert mine[k] == pytest.approx(v, abs=1e-6), k

def test_a_failing_rank_ends_the_run_with_its_message(corpus, tmp_path):
    import shutil
    root = tmp_path/"c"; shutil.copytree(corpus, root)
    out = tmp_path/"fails"
    p = lasr_popen("train", "--preset", "smoke", "--data-root", root, "--out", out, "--quiet", *DDP, threads=1,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (out/"config.json").exists() and p.poll() is None and time.time() - t0 < 120: time.sleep(0.02)
    # rank 0 has checked the data and written the folder; rank 1 starts later and finds a clip gone
    next((root/"CLOTHO_v2.1"/"clotho_audio_files"/"development").glob("*.wav")).unlink()
    _, err = p.communicate(timeout=180)
    assert p.returncode != 0
    assert "(rank 1): error" in err and "audio file not found" in err, err[-3000:]
    assert not (out/"train.json").exists()

def test_resume_in_two_processes_continues_the_same_schedule(corpus, ddp_run, tmp_path):
    import os, signal
    ref, _ = ddp_run
    out = tmp_path/"killed"
    p = lasr_popen("train", "--preset", "smoke", "--data-root", corpus, "--out", out, "--quiet", *DDP, threads=1,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    t0 = time.time()
    while not (out/"lightning"/"last.ckpt").exists() and p.poll() is None and time.time() - t0 < 240: time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)                   # both ranks die after epoch 1's resume state is written
    p.wait()
    assert not (out/"train.json").exists()
    r = lasr("train", "--preset", "smoke", "--data-root", corpus, "--out", out, "--quiet", "--resume", *DDP, threads=1,
             timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    s, s_ref = (json.loads((d/"train.json").read_text()) for d in (out, ref))
    assert s["steps"] == s_ref["steps"] and s["steps_per_epoch"] == s_ref["steps_per_epoch"]
    a, b = lr_by_step(ref), lr_by_step(out)
    last = max((out/"logs").glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    resumed = sorted(pd.read_csv(last/"metrics.csv").dropna(subset=["lr"]).step.astype(int))
    # the resumed start continues at an epoch boundary after 0 (not from scratch) up to the same last step, with
    # the reference's learning rate at every step
    assert resumed == list(range(resumed[0], s["steps"])) and resumed[0] > 0 and resumed[0] % s["steps_per_epoch"] == 0
    assert all(b[k] == a[k] for k in b)
    # the killed start's log reaches its checkpoint (FlushLogs) unless the kill landed in Lightning's rewrite of
    # the CSV (it rewrites the whole file when validation adds columns), which leaves it empty
    assert sorted(b) in (list(range(s["steps"])), resumed)

def test_the_study_notebook_trains_in_two_processes(corpus, tmp_path, monkeypatch):
    "The study's run.ipynb runs `lasr train` as a process of its own: DDP works where a notebook kernel could not start it."
    import nbformat
    from lasr.study import execute_run
    for k, v in lasr_env(threads=1).items(): monkeypatch.setenv(k, v)
    run = execute_run(tmp_path/"runs"/"r", "smoke", [DDP[i + 1] for i in range(0, len(DDP), 2)], corpus)
    assert json.loads((run/"run"/"train.json").read_text())["processes"] == 2
    assert json.loads((run/"metrics.json").read_text())["n_items"] == 4 and (run/"result.json").exists()
    nb = nbformat.read(run/"run.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "trained " in text and "mAP@10" in text                  # the commands' logs are in the notebook
    assert str(tmp_path) not in text                                  # and name no machine paths

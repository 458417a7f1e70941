"""Training in 2 DDP processes (gloo on the CPU) with `lasr train --set run.devices=2`, as the study's run.ipynb runs
it: starts, keeps the schedule, scores like one process, resumes, fails with the failing rank's message."""
import json, subprocess, time
import numpy as np, pandas as pd
import pytest

from lasr.core import get_preset
from lasr.synth import synth_corpus
from lasr.train import lr_at
from conftest import lasr, lasr_env, lasr_popen
from ddp_check import lr_by_step, validate_one_process

DDP = ["--set", "run.accelerator=cpu", "--set", "run.devices=2", "--set", "run.strategy=ddp_find_unused_parameters_true"]

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # 5 validation clips: the padded sampler gives rank 1 a repeat of clip 0 (and of its captions)
    return synth_corpus(tmp_path_factory.mktemp("corpus"), n_dev=16, n_val=5, n_eval=4, seed=2, progress=False)

@pytest.fixture(scope="module")
def ddp_run(corpus, tmp_path_factory):
    """A smoke run in 2 processes, made by the study's run.ipynb: it runs `lasr train` as a process of its own (DDP
    works where a notebook kernel could not start it), streams its log into the notebook, then evaluates.
    Gives the run's folder, the notebook's text output (the command's stdout and stderr) and the study run folder."""
    import nbformat
    from lasr.study import execute_run
    with pytest.MonkeyPatch.context() as mp:
        for k, v in lasr_env(threads=1).items(): mp.setenv(k, v)
        d = execute_run(tmp_path_factory.mktemp("runs")/"r", "smoke", [DDP[i + 1] for i in range(0, len(DDP), 2)], corpus)
    nb = nbformat.read(d/"run.ipynb", as_version=4)
    log = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    return d/"run", log, d

def test_two_processes_start_and_only_rank_0_writes(ddp_run):
    out, log, _ = ddp_run
    s = json.loads((out/"train.json").read_text())
    assert s["processes"] == 2 and s["global_batch"] == 2 * get_preset("smoke").optim.batch_size
    assert "already holds a run" not in log
    assert log.count("trained ") == 1                              # rank 1 prints nothing of its own
    assert sorted(p.name for p in (out/"logs").iterdir()) == ["version_0"]

def test_the_study_notebook_trains_in_two_processes(ddp_run, corpus):
    "The run notebook's results: evaluated after the DDP training, the command's log in the notebook, no machine paths."
    _, log, run = ddp_run
    assert json.loads((run/"metrics.json").read_text())["n_items"] == 4 and (run/"result.json").exists()
    assert "trained " in log and "mAP@10" in log                    # the commands' logs are in the notebook
    assert str(run.parent) not in log and str(corpus) not in log    # and name no machine paths

def test_schedule_per_step_equals_one_process_with_the_global_batch(ddp_run):
    """Steps per epoch and the learning rate at every step are those of one process with the global batch: `lr_at`'s
    (test_train's test_run_folder_is_self_describing checks a one-process run against the same)."""
    out, _, _ = ddp_run
    o = get_preset("smoke").optim
    ddp = json.loads((out/"train.json").read_text())
    spe = 16 * 5 // (2 * o.batch_size)                              # caption pairs / global batch
    assert ddp["steps_per_epoch"] == spe and ddp["steps"] == spe * o.epochs
    lr = lr_by_step(out)
    assert sorted(lr) == list(range(ddp["steps"]))
    np.testing.assert_allclose([lr[k] for k in sorted(lr)],
                               [lr_at(k, spe, o.lr, o.min_lr, o.warmup_epochs, o.cosine_epochs) for k in sorted(lr)], rtol=1e-6)

def test_validation_metrics_equal_one_process_metrics(corpus, ddp_run):
    out, _, _ = ddp_run
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
    ref, _, _ = ddp_run
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

"End-to-end checks of the installed `lasr` command (exit codes, messages, the DCASE worked example)."
import json, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pandas as pd
import pytest
from lasr.metrics import write_predictions

LASR = Path(sys.executable).parent/"lasr"   # the installed console script

def lasr(*args, cwd=None):
    return subprocess.run([str(LASR), *map(str, args)], capture_output=True, text=True, cwd=cwd)

@pytest.fixture
def clotho_csv(tmp_path):
    names = [f"{i:02d}.wav" for i in range(30)]
    df = pd.DataFrame({"file_name": names, **{f"caption_{c}": [f"clip {i} caption {c}" for i in range(30)] for c in range(1, 6)}})
    df.to_csv(tmp_path/"captions.csv", index=False)
    return tmp_path/"captions.csv", names

def test_score_worked_example(tmp_path, clotho_csv):
    "nbs/index.ipynb#metrics (worked example): relevant at ranks {0, 3, 20} with k=16 gives AP 0.5."
    captions, names = clotho_csv
    sim = np.tile(-np.arange(30, dtype=float), (150, 1))          # column j ranked j for every query
    queries = [f"clip 0 caption {c}" for c in range(1, 6)] + [f"clip {i} caption {c}" for i in range(1, 30) for c in range(1, 6)]
    write_predictions(tmp_path/"pred.csv", queries, names, sim)
    pd.DataFrame({"query": ["clip 0 caption 1"], "audio_filenames": [repr(["00.wav", "03.wav", "20.wav"])]}).to_csv(tmp_path/"rel.csv", index=False)
    r = lasr("score", "--similarity", tmp_path/"pred.csv", "--captions", captions, "--relevance", tmp_path/"rel.csv", "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert set(m) == {"R@1", "R@5", "R@10", "mAP@10", "mAP@16", "mAP@10_multi", "mAP@16_multi", "n_queries_multi"}
    # queries of clip i find it at rank i: R@1 = 5/150, mAP@16 = mean over clips of 1/(i+1) for i<16
    assert m["R@1"] == pytest.approx(5 / 150)
    assert m["R@10"] == pytest.approx(50 / 150)
    assert m["mAP@16"] == pytest.approx(sum(1 / (i + 1) for i in range(16)) / 30)
    # the only listed query, "clip 0 caption 1", has relevant ranks {0, 3, 20}: AP@16 = 0.5
    assert m["mAP@16_multi"] == pytest.approx(0.5) and m["n_queries_multi"] == 1

@pytest.mark.parametrize("problem, message", [
    ("missing", "not found"), ("nan", "NaN or infinite"), ("dupcol", "duplicate audio columns"),
    ("noquery", "no caption row"), ("nocol", "missing from the similarity columns"), ("badcols", "expected columns")])
def test_score_bad_input_exit_2(tmp_path, clotho_csv, problem, message):
    captions, names = clotho_csv
    queries = [f"clip {i} caption {c}" for i in range(30) for c in range(1, 6)]
    sim = np.eye(30)[np.repeat(np.arange(30), 5)]
    cols = list(names)
    if problem == "nan": sim[3, 4] = np.nan
    if problem == "dupcol": cols[1] = cols[0]
    if problem == "noquery": queries[7] = "nobody wrote this"
    if problem == "nocol": cols[5] = "other.wav"
    if problem == "badcols": pd.DataFrame({"name": names}).to_csv(captions, index=False)
    write_predictions(tmp_path/"pred.csv", queries, cols, sim)
    pred = tmp_path/("absent.csv" if problem == "missing" else "pred.csv")
    r = lasr("score", "--similarity", pred, "--captions", captions)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr

def test_help_for_every_subcommand():
    from lasr.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert "score" in sub.choices
    for name in sub.choices:
        r = lasr(name, "--help")
        assert r.returncode == 0 and "usage: lasr " + name in r.stdout, (name, r.stderr)
        assert "example:\n  lasr " + name in r.stdout and "exit codes: 0" in r.stdout, (name, r.stdout)

def test_help_shows_every_default():
    "Each option with a default (not a flag, not required) names it in its help."
    from lasr.cli import build_parser
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, sp in sub.choices.items():
        fmt = sp._get_formatter()
        for a in sp._actions:
            if a.required or a.default in (None, False, [], "==SUPPRESS==") or a.help is None: continue
            assert "default" in fmt._get_help_string(a), (name, a.dest, a.help)
    r = lasr("score", "--help")
    assert "(default: 1000)" in r.stdout or "(default 1000)" in r.stdout, r.stdout
    assert "exit codes: 0" in lasr("--help").stdout

@pytest.mark.parametrize("command", ["train", "describe"])
def test_missing_preset_exits_2(command, tmp_path):
    "--preset is required: no silent default system."
    r = lasr(command, *(["--data-root", tmp_path, "--out", tmp_path/"run"] if command == "train" else []))
    assert r.returncode == 2 and "--preset" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path/"run").exists()

@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    "A small embedded corpus written by `lasr synth`."
    out = tmp_path_factory.mktemp("cli")/"corpus"
    r = lasr("synth", out, "--n-dev", 16, "--n-val", 4, "--n-eval", 4, "--seed", 2)
    assert r.returncode == 0 and "corpus written to" in r.stdout, r.stderr
    return out

def test_synth_validate_train_through_the_command_line(small_corpus, tmp_path):
    for split, n in (("development", 16), ("validation", 4), ("evaluation", 4)):
        assert len(list((small_corpus/"CLOTHO_v2.1"/"clotho_audio_files"/split).glob("*.wav"))) == n
    r = lasr("validate", "--data-root", small_corpus)
    assert r.returncode == 0 and "no problems" in r.stdout, r.stdout + r.stderr
    # stderr is a pipe here, as for a log file: one line per epoch, no carriage-return progress stream
    r = lasr("train", "--preset", "smoke", "--data-root", small_corpus, "--out", tmp_path/"run")
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr, r.stderr
    epochs = [l for l in r.stderr.splitlines() if l.startswith("epoch ")]
    assert [l.split(":")[0] for l in epochs] == ["epoch 1/2", "epoch 2/2"] and "val/mAP@10" in epochs[-1], r.stderr
    summary = json.loads((tmp_path/"run"/"train.json").read_text())
    assert f"trained {summary['steps']} steps" in r.stdout and summary["train_clips"] == 16
    assert (tmp_path/"run"/"best.safetensors").is_file() and (tmp_path/"run"/"last.safetensors").is_file()

def test_ctrl_c_stops_training_with_exit_130(small_corpus, tmp_path):
    out = tmp_path/"run"
    p = subprocess.Popen([str(LASR), "train", "--preset", "smoke", "--set", "optim.epochs=100", "--data-root",
                          str(small_corpus), "--out", str(out), "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         # Ctrl-C as in a terminal: a background job or a test worker passes SIGINT on ignored
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while not (out/"lightning"/"last.ckpt").exists():   # one epoch is done: it is training
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.2)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err, err
    assert not (out/"train.json").exists()                   # it did not run to the end

def _snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

def test_train_refuses_a_folder_it_did_not_make(small_corpus, tmp_path):
    "train --out into a non-empty folder that is not a run: exit 2, naming what is there, nothing changed."
    out = tmp_path/"mine"; (out/"sub").mkdir(parents=True)
    (out/"notes.txt").write_text("keep me"); (out/"sub"/"data.bin").write_bytes(b"\x00\x01")
    before = _snapshot(out)
    r = lasr("train", "--preset", "smoke", "--data-root", small_corpus, "--out", out, "--quiet")
    assert r.returncode == 2 and "notes.txt" in r.stderr and "not empty" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert _snapshot(out) == before and sorted(p.name for p in out.iterdir()) == ["notes.txt", "sub"]
    r = lasr("train", "--preset", "smoke", "--data-root", small_corpus, "--out", out/"notes.txt", "--quiet")
    assert r.returncode == 2 and "is a file" in r.stderr, r.stderr
    assert _snapshot(out) == before

def test_index_refuses_a_folder_it_did_not_make(small_corpus, tmp_path):
    "index --out into a non-empty folder that is not an index: exit 2, nothing changed."
    run = tmp_path/"run"
    from lasr.core import get_preset
    from lasr.train import train
    train(get_preset("smoke", "optim.epochs=1", "optim.cosine_epochs=0.5"), small_corpus, run, progress=False)
    out = tmp_path/"mine"; out.mkdir(); (out/"notes.txt").write_text("keep me")
    before = _snapshot(out)
    r = lasr("index", small_corpus/"CLOTHO_v2.1"/"clotho_audio_files"/"evaluation", "--model", run, "--out", out)
    assert r.returncode == 2 and "not a lasr index" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert _snapshot(out) == before

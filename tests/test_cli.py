"""The `lasr` command's contract: exit codes, messages, help, the DCASE worked example (in this process, through
`lasr.cli.main`), and what needs a process of its own: the installed console script training with its log on a
pipe, and Ctrl-C."""
import argparse, json, re, signal, subprocess, time
from pathlib import Path
import numpy as np, pandas as pd
import pytest
from lasr.metrics import write_predictions
from conftest import lasr, lasr_popen, untrained_checkpoint

@pytest.fixture
def clotho_csv(tmp_path):
    names = [f"{i:02d}.wav" for i in range(30)]
    df = pd.DataFrame({"file_name": names, **{f"caption_{c}": [f"clip {i} caption {c}" for i in range(30)] for c in range(1, 6)}})
    df.to_csv(tmp_path/"captions.csv", index=False)
    return tmp_path/"captions.csv", names

def test_score_worked_example(tmp_path, clotho_csv, cli):
    "nbs/index.ipynb#metrics (worked example): relevant at ranks {0, 3, 20} with k=16 gives AP 0.5."
    captions, names = clotho_csv
    sim = np.tile(-np.arange(30, dtype=float), (150, 1))          # column j ranked j for every query
    queries = [f"clip 0 caption {c}" for c in range(1, 6)] + [f"clip {i} caption {c}" for i in range(1, 30) for c in range(1, 6)]
    write_predictions(tmp_path/"pred.csv", queries, names, sim)
    pd.DataFrame({"query": ["clip 0 caption 1"], "audio_filenames": [repr(["00.wav", "03.wav", "20.wav"])]}).to_csv(tmp_path/"rel.csv", index=False)
    r = cli("score", "--similarity", tmp_path/"pred.csv", "--captions", captions, "--relevance", tmp_path/"rel.csv", "--json")
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
def test_score_bad_input_exit_2(tmp_path, clotho_csv, cli, problem, message):
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
    r = cli("score", "--similarity", pred, "--captions", captions)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr, r.stderr

def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from lasr.cli import build_parser
    return next(a for a in build_parser()._actions if a.dest == "command").choices

def test_help_for_every_subcommand(cli):
    sub = _subcommands()
    assert "score" in sub
    for name in sub:
        r = cli(name, "--help")
        assert r.returncode == 0 and "usage: lasr " + name in r.stdout, (name, r.stderr)
        assert "example:\n  lasr " + name in r.stdout and "exit codes: 0" in r.stdout, (name, r.stdout)
    r = cli("--help")
    assert r.returncode == 0 and "exit codes: 0" in r.stdout

def _help_entries(text: str) -> list[str]:
    "The entries of a rendered --help (an argument's name(s), then its help), each with its whitespace collapsed."
    entries, cur = [], None
    for line in text.splitlines():
        if re.match(r"^  \S", line):                    # an argument's first line: two spaces, then its name
            cur = [line]; entries.append(cur)
        elif cur is not None and line.startswith("   "): cur.append(line)   # its wrapped help
        else: cur = None                                # a section title, a blank line, the epilog
    return [" ".join(" ".join(e).split()) for e in entries]

def test_help_shows_every_default(cli):
    """Each argument with a default (not required; the default not None, False, [] or suppressed) shows that value
    in the rendered help of its command, as "(default: X)" or "default X"."""
    checked = 0
    for name, sp in _subcommands().items():
        entries = _help_entries(cli(name, "--help").stdout)
        for a in sp._actions:
            d = a.default
            if a.required or a.help == argparse.SUPPRESS or d is None or d is False or d == argparse.SUPPRESS \
               or (isinstance(d, list) and not d): continue
            names = a.option_strings or [a.metavar or a.dest]
            mine = [e for e in entries if re.match(r"(%s)\b" % "|".join(map(re.escape, names)), e)]
            assert len(mine) == 1, (name, names, entries)
            assert f"(default: {d})" in mine[0] or f"default {d}" in mine[0], (name, names, mine[0])
            checked += 1
    assert checked >= 10, checked                       # the loop saw the options it is about
    score = cli("score", "--help").stdout               # e.g. the bootstrap's resamples
    assert "(default: 1000)" in score or "(default 1000)" in score, score

@pytest.mark.parametrize("command", ["train", "describe"])
def test_missing_preset_exits_2(command, tmp_path, cli):
    "--preset is required: no silent default system."
    r = cli(command, *(["--data-root", tmp_path, "--out", tmp_path/"run"] if command == "train" else []))
    assert r.returncode == 2 and "--preset" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path/"run").exists()

def test_validate_and_train_through_the_installed_command(smoke_corpus, tmp_path, cli):
    r = cli("validate", "--data-root", smoke_corpus)
    assert r.returncode == 0 and "no problems" in r.stdout, r.stdout + r.stderr
    # the console script in a process of its own, stderr a pipe as for a log file: one line per epoch, no
    # carriage-return progress stream
    r = lasr("train", "--preset", "smoke", "--data-root", smoke_corpus, "--out", tmp_path/"run")
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr, r.stderr
    epochs = [l for l in r.stderr.splitlines() if l.startswith("epoch ")]
    assert [l.split(":")[0] for l in epochs] == ["epoch 1/2", "epoch 2/2"] and "val/mAP@10" in epochs[-1], r.stderr
    summary = json.loads((tmp_path/"run"/"train.json").read_text())
    assert f"trained {summary['steps']} steps" in r.stdout and summary["train_clips"] == 16
    assert (tmp_path/"run"/"best.safetensors").is_file() and (tmp_path/"run"/"last.safetensors").is_file()

def test_ctrl_c_stops_training_with_exit_130(smoke_corpus, tmp_path):
    out = tmp_path/"run"
    p = lasr_popen("train", "--preset", "smoke", "--set", "optim.epochs=100", "--data-root", smoke_corpus, "--out", out,
                   "--quiet", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
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

def test_train_refuses_a_folder_it_did_not_make(smoke_corpus, tmp_path, cli):
    "train --out into a non-empty folder that is not a run: exit 2, naming what is there, nothing changed."
    out = tmp_path/"mine"; (out/"sub").mkdir(parents=True)
    (out/"notes.txt").write_text("keep me"); (out/"sub"/"data.bin").write_bytes(b"\x00\x01")
    before = _snapshot(out)
    r = cli("train", "--preset", "smoke", "--data-root", smoke_corpus, "--out", out, "--quiet")
    assert r.returncode == 2 and "notes.txt" in r.stderr and "not empty" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert _snapshot(out) == before and sorted(p.name for p in out.iterdir()) == ["notes.txt", "sub"]
    r = cli("train", "--preset", "smoke", "--data-root", smoke_corpus, "--out", out/"notes.txt", "--quiet")
    assert r.returncode == 2 and "is a file" in r.stderr, r.stderr
    assert _snapshot(out) == before

def test_index_refuses_a_folder_it_did_not_make(smoke_corpus, tmp_path, cli):
    "index --out into a non-empty folder that is not an index: exit 2, nothing changed."
    run = untrained_checkpoint(tmp_path/"run")
    out = tmp_path/"mine"; out.mkdir(); (out/"notes.txt").write_text("keep me")
    before = _snapshot(out)
    r = cli("index", smoke_corpus/"CLOTHO_v2.1"/"clotho_audio_files"/"evaluation", "--model", run, "--out", out)
    assert r.returncode == 2 and "not a lasr index" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert _snapshot(out) == before

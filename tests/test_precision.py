"Embedding precision follows the use (issue 25): evaluate stays float32, a library follows the bf16 rule, an index keeps its own."
import json
from pathlib import Path
import numpy as np, soundfile as sf
import pytest

import lasr.train
from lasr import index as lidx
from lasr.train import evaluate, load_model, embed_text
from conftest import untrained_checkpoint

SR = 32000

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return untrained_checkpoint(tmp_path_factory.mktemp("runs")/"smoke", "audio.hop_seconds=10")

@pytest.fixture
def rule_holds(monkeypatch):
    "As on a CPU with bf16 instructions once the bf16 rule holds."
    monkeypatch.setattr(lasr.train, "BF16_RULE_HOLDS", True)
    monkeypatch.setattr(lasr.train, "cpu_has_fast_bf16", lambda: True)

def library(root: Path, n: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        t = np.arange(int((2 + i) * SR)) / SR
        sf.write(root/f"s{i}.wav", (0.2 * np.sin(2 * np.pi * (200 + 300 * i) * t)).astype(np.float32), SR)
    return root

def test_evaluate_stays_float32_where_the_library_default_is_bf16(smoke_corpus, run, tmp_path, cli, rule_holds):
    "`evaluate` and `lasr evaluate` give the float32 numbers by default, even where `load_model` would pick bf16."
    assert load_model(run, "cpu", precision="auto").precision == "bf16"   # a library's default, with the rule holding
    assert load_model(run, "cpu").precision == "32"                       # the HEAR-style API: exact and batch-invariant
    m = evaluate(run, smoke_corpus, progress=False, device="cpu", figure=tmp_path/"a.png")
    assert json.loads((run/"evaluation-evaluation.json").read_text())["inference_precision"] == "32"
    assert m == evaluate(run, smoke_corpus, progress=False, device="cpu", figure=tmp_path/"b.png", precision="32")
    for flag, want in (((), "32"), (("--fp32",), "32"), (("--bf16",), "bf16")):
        r = cli("evaluate", run, "--data-root", smoke_corpus, "--device", "cpu", "--quiet", *flag)
        assert r.returncode == 0, r.stderr
        assert json.loads((run/"evaluation-evaluation.json").read_text())["inference_precision"] == want, flag
    r = cli("evaluate", run, "--data-root", smoke_corpus, "--fp32", "--bf16")
    assert r.returncode == 2 and "not allowed with" in r.stderr

def test_index_follows_the_rule_and_search_follows_the_index(run, tmp_path, cli, rule_holds):
    "Built with the default where bf16 is the default: a bf16 index; its queries in bf16; --fp32 against it refused."
    lib = library(tmp_path/"lib")
    assert cli("index", lib, "--model", run, "--out", tmp_path/"idx", "--quiet").returncode == 0
    assert lidx.read_manifest(tmp_path/"idx")["precision"] == "bf16"
    r = cli("search", tmp_path/"idx", "a high tone", "--json", "-k", "1")
    assert r.returncode == 0, r.stderr
    hit = json.loads(r.stdout)["hits"][0]
    li = lidx.LibraryIndex(tmp_path/"idx")
    q = embed_text(load_model(run, "cpu", precision="bf16"), ["a high tone"])[0]
    row = next(f["row"] for f in li.files if f["path"] == hit["path"])
    assert abs(hit["score"] - float(li.file_vectors[row] @ q)) < 1e-5   # the query was embedded in bf16
    for args in (("search", tmp_path/"idx", "a high tone", "--fp32"),
                 ("index", lib, "--model", run, "--out", tmp_path/"idx", "--update", "--fp32")):
        r = cli(*args)
        assert r.returncode == 2 and "leave out --fp32" in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
    # a float32 index (--fp32) is searched in float32, with or without --fp32
    assert cli("index", lib, "--model", run, "--out", tmp_path/"idx32", "--fp32", "--quiet").returncode == 0
    assert lidx.read_manifest(tmp_path/"idx32")["precision"] == "32"
    a, b = (cli("search", tmp_path/"idx32", "a high tone", "--json", *f).stdout for f in ((), ("--fp32",)))
    assert a == b
    with pytest.raises(Exception, match="32 vectors"):
        lidx.search(tmp_path/"idx32", ["x"], precision="bf16")

def test_embed_follows_the_rule(run, tmp_path, cli, rule_holds):
    lib = library(tmp_path/"lib", 1)
    for flag, want in (((), "bf16"), (("--fp32",), "32")):
        out = tmp_path/f"e{len(flag)}.npy"
        assert cli("embed", lib, "--model", run, "--out", out, *flag).returncode == 0
        assert json.loads(out.with_suffix(".json").read_text())["precision"] == want

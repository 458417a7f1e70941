"`lasr bench --quick`: both files written, every target a ratio of two figures of the same run, met/missed computed."
import json, operator, subprocess
import pytest
from lasr.train import lasr_command

def test_bench_quick(tmp_path):
    r = subprocess.run([*lasr_command(), "bench", "--quick", "--quiet", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    b = json.loads((tmp_path / "bench.json").read_text())
    assert set(b) >= {"machine", "figures", "targets"}
    assert {"cpu", "cores", "torch_threads", "fast_bf16", "gpu"} <= set(b["machine"])
    f = b["figures"]
    assert all(isinstance(v, float) for v in f.values())
    for k in ("ceiling_fp32_gflops", "ceiling_bf16_gflops", "ceiling_copy_gbps", "eval_wall_s", "eval_forward_s",
              "train_paper_s_per_step", "train_full_hop5_s_per_step", "train_baseline_hop10_s_per_step",
              "data_decode_ms_per_clip", "data_cached_ms_per_clip", "metrics_s", "bootstrap_s"):
        assert f[k] > 0, k
    n = int(f["search_largest_n"])
    for kind in ("exact", "approx"):
        assert 0 < f[f"search_{n}_{kind}_p50_ms"] <= f[f"search_{n}_{kind}_p99_ms"], kind
    assert 0 <= f[f"search_{n}_approx_recall@10"] <= 1
    assert f["index_build_s"] > 0 and f["index_forward_s"] > 0 and f["index_windows"] >= f["index_files"] > 0
    # index build speed in both precisions (bf16 at --quick sizes even where it is emulated); its target only with bf16 instructions
    assert f["index_build_fp32_audio_hours_per_s"] > 0 and f["index_build_bf16_audio_hours_per_s"] > 0
    assert ("index_bf16_vs_fp32" in {t["name"] for t in b["targets"]}) == b["machine"]["fast_bf16"]
    assert isinstance(b["machine"]["bf16_flags"], list)
    names = {t["name"] for t in b["targets"]}
    assert {"embedding_fp32_vs_ceiling", "embedding_vs_direct", "evaluation_overhead", "partial_vs_full_time",
            "partial_vs_full_memory", "cached_vs_decode", "index_vs_forward", "search_approx_p50",
            "search_approx_recall", "search_exact_memory"} <= names
    ops = {"<=": operator.le, ">=": operator.ge}
    for t in b["targets"]:
        assert {"name", "target", "measured", "met"} <= set(t)
        num, den = t["ratio"]
        ratio = f[num] / max(f[den] if isinstance(den, str) else den, 1e-12) * t["scale"]
        assert abs(t["measured"] - ratio) <= 1e-4 * max(1.0, abs(ratio)), t
        assert t["met"] == ops[t["op"]](ratio, t["threshold"]), t
        assert t["met"] or "limit" in t
    md = (tmp_path / "bench.md").read_text()
    for t in b["targets"]:
        assert t["name"] in md
    assert "no GPU" in md or b["machine"]["gpu"]
    assert str(tmp_path) not in md and "/home/" not in md
    # every target is printed as met or missed
    for t in b["targets"]:
        assert ("met    " if t["met"] else "MISSED ") + t["name"] in r.stdout

def test_bench_gpu_without_cuda_is_a_usage_error(tmp_path, cli, monkeypatch):
    "On any machine: a torch that sees no CUDA GPU (here made so) refuses --gpu before measuring anything."
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    r = cli("bench", "--gpu", "--quick", "--out", tmp_path)
    assert r.returncode == 2 and "CUDA" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())

def test_bench_gpu_figures_on_cuda():
    "Where there is a CUDA GPU: the --gpu figures (training steps/s, peak memory, windows/s) of both configurations."
    import math, torch
    from lasr.bench import gpu_figures
    if not torch.cuda.is_available(): pytest.skip("no CUDA GPU on this machine: the --gpu figures cannot be measured")
    g = gpu_figures("cuda", batch=8, steps=2, preset="smoke")
    assert set(g) == {f"gpu_{c}_{k}" for c in ("paper", "baseline") for k in ("steps_per_s", "peak_gib", "eval_windows_per_s")}
    assert all(math.isfinite(v) and v > 0 for v in g.values()), g

"`lasr bench --quick`: every part runs and the files carry figures, and targets computed from them."
import json, subprocess, sys
from pathlib import Path

LASR = Path(sys.executable).parent/"lasr"

def test_bench_quick_writes_both_files(tmp_path):
    r = subprocess.run([str(LASR), "bench", "--quick", "--quiet", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path/"bench.json").read_text())
    assert set(res) >= {"machine", "figures", "targets"} and res["machine"]["cores"] >= 1
    f = res["figures"]
    assert f["ceiling.matmul_fp32_gflops"] > 0 and f["eval.ratio"] > 0 and f["data.speedup"] > 0
    t = {x["name"]: x for x in res["targets"]}
    ev = t["lasr evaluate wall time / pure model forward on the same split"]
    assert ev["measured"] == round(f["eval.ratio"], 4) and ev["met"] == (f["eval.ratio"] <= 1.15)   # from the figures
    assert all(x["met"] in (True, False, None) for x in res["targets"])
    md = (tmp_path/"bench.md").read_text()
    assert "| target |" in md and "met" in md and "GPU" in md
    for x in res["targets"]:
        assert x["name"] in md
        assert ("met" if x["met"] else "MISSED" if x["met"] is False else "not measured") in r.stdout

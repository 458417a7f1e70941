"""GPU check of issue 11 part B (not collected by pytest): Table 1 audio encoders with registry defaults on CUDA
in fp32 and bf16, Whisper cut to 10 s vs padded to 30 s (timing), the parallel cache build after CUDA init, and
the doctor's GPU line. Run: python tests/gpu_check_paper_inputs.py (needs the lasr environment on a GPU machine)."""
import time, tempfile
from pathlib import Path
import numpy as np, torch, torch.nn.functional as F
from lasr.core import get_preset
from lasr.encoders import build_audio_encoder, WhisperMel
dev = "cuda"
for n in ["passt", "clap-htsat", "whisper-base", "data2vec-audio-base"]:
    c = get_preset("paper", f"audio.encoder={n}", "audio.pretrained=false").audio
    torch.manual_seed(0); e = build_audio_encoder(c).to(dev).eval()
    w = torch.randn(4, int(c.sample_rate * 10), device=dev) * 0.1
    with torch.no_grad(): z = e(w)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16): zb = e(w)
    print(n, c.sample_rate, c.first_trainable_block, tuple(z.shape), "cos fp32/bf16 min", round(float(F.cosine_similarity(z.float(), zb.float()).min()), 4), flush=True)
    if n == "whisper-base":
        w = torch.randn(64, 160000, device=dev) * 0.1
        def t(f):
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                f(); torch.cuda.synchronize(); s = time.perf_counter()
                for _ in range(5): f()
                torch.cuda.synchronize(); return (time.perf_counter() - s) / 5
        pad = WhisperMel(seconds=30).to(dev)
        a, b = t(lambda: e(w)), t(lambda: e.model(input_features=pad(w)).last_hidden_state.mean(1))
        print(f"whisper-base 64 x 10 s windows, bf16: cut {1000*a:.1f} ms, padded to 30 s {1000*b:.1f} ms, {b/a:.2f}x", flush=True)
from lasr.synth import synth_corpus
from lasr.data import WaveCache, read_clotho
tmp = Path(tempfile.mkdtemp())
root = synth_corpus(tmp / "c", n_dev=160, n_val=8, n_eval=8, seed=0, progress=False)
paths = read_clotho(root, "development").audio_paths
s = time.time(); a = WaveCache(paths, tmp / "k1", 32000, 15).build(progress=False, workers=1); t1 = time.time() - s
s = time.time(); b = WaveCache(paths, tmp / "k2", 32000, 15).build(progress=False, workers=16); t2 = time.time() - s
assert all(np.array_equal(a.get(i)[0], b.get(i)[0]) for i in range(len(paths)))
print(f"cache of {len(paths)} clips after CUDA init: 1 process {t1:.2f} s, 16 processes {t2:.2f} s, identical", flush=True)
from lasr.cli import doctor
for ok, what, msg in doctor(get_preset("smoke"), root):
    if what in ("GPU", "cache folder"): print(ok, what, msg)

"`lasr.audio.MelFrontend` against hear21passt's own `AugmentMelSTFT` code (torchaudio is stubbed)."
import sys, types
import numpy as np
import pytest
import torch

from lasr.core import AudioConfig
from lasr.audio import MelFrontend, n_frames


def _np_banks(n_mels, n_fft, sr, fmin, fmax):
    "Kaldi mel banks from the formula (float64 numpy), without PaSST's extra zero column."
    m = lambda f: 1127.0 * np.log(1.0 + f / 700.0)
    edges = np.linspace(m(fmin), m(fmax), n_mels + 2)
    mk = m(np.arange(n_fft // 2) * sr / n_fft)[None]
    lo, c, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0, np.minimum((mk - lo) / (c - lo), (hi - mk) / (hi - c)))


@pytest.fixture
def passt_melstft(monkeypatch):
    "hear21passt's AugmentMelSTFT with a stand-in torchaudio that computes the banks with numpy."
    ta = types.ModuleType("torchaudio")
    kaldi = types.SimpleNamespace(get_mel_banks=lambda n, nfft, sr, fmin, fmax, **kw:
                                  (torch.tensor(_np_banks(n, nfft, sr, fmin, fmax), dtype=torch.float32), None))
    ta.compliance = types.SimpleNamespace(kaldi=kaldi)
    ta.transforms = types.SimpleNamespace(FrequencyMasking=lambda *a, **k: torch.nn.Identity(),
                                          TimeMasking=lambda *a, **k: torch.nn.Identity())
    monkeypatch.setitem(sys.modules, "torchaudio", ta)
    monkeypatch.delitem(sys.modules, "hear21passt.models.preprocess", raising=False)
    from hear21passt.models.preprocess import AugmentMelSTFT
    return AugmentMelSTFT


@pytest.mark.parametrize("seconds", [10.0, 3.3])
def test_frontend_matches_hear21passt(passt_melstft, seconds):
    cfg = AudioConfig()
    ref = passt_melstft(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=192,
                        fmin=0.0, fmax=None, fmin_aug_range=10, fmax_aug_range=2000).eval()
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(2, int(seconds * 32000), generator=g)
    with torch.no_grad(): want, got = ref(x), MelFrontend(cfg).eval()(x)
    assert got.shape == want.shape == (2, 128, n_frames(x.shape[1], cfg))
    if seconds == 10.0: assert got.shape[-1] == 1000
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)

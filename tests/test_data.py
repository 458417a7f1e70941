"`RetrievalDataModule` inside a real Lightning fit: seeded per-epoch shuffling and resumable order."
import csv
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import soundfile as sf
import torch

from lasr.core import get_preset, override
from lasr.data import RetrievalDataModule, default_cache_dir, validate_corpus


def _tree(root: Path, n=6, sr=16000):
    base = root / "CLOTHO_v2.1"
    for split in ("development", "validation"):
        (base / "clotho_audio_files" / split).mkdir(parents=True)
        (base / "clotho_csv_files").mkdir(parents=True, exist_ok=True)
        rows = [["file_name"] + [f"caption_{k}" for k in range(1, 6)]]
        for j in range(n):
            name = f"{split}_{j}.wav"
            sf.write(base / "clotho_audio_files" / split / name,
                     (0.1 * np.sin(np.arange(int(1.5 * sr)) * (j + 1) / 10)).astype(np.float32), sr)
            rows.append([name] + [f"clip {j} caption {k}" for k in range(5)])
        with open(base / "clotho_csv_files" / f"clotho_captions_{split}.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)


class _Record(L.LightningModule):
    def __init__(self):
        super().__init__(); self.w = torch.nn.Parameter(torch.zeros(1)); self.seen = []
    def training_step(self, batch, i):
        self.seen.append((self.current_epoch, tuple(batch["captions"])))
        return (self.w * batch["wav"].mean()).sum()
    def configure_optimizers(self): return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(root, seed):
    cfg = override(get_preset("smoke"), "audio.max_seconds=1.0", "optim.batch_size=4", f"run.seed={seed}")
    dm, m = RetrievalDataModule(cfg, root, progress=False), _Record()
    L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
              enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
              limit_val_batches=0).fit(m, datamodule=dm)
    return m.seen


def test_lightning_seeded_shuffling(tmp_path):
    _tree(tmp_path)
    a, b, c = _fit(tmp_path, 0), _fit(tmp_path, 0), _fit(tmp_path, 1)
    assert a == b and a != c
    assert len(a) == 3 * (30 // 4)                              # drop_last: 7 full batches per epoch
    by_epoch = [[caps for e, caps in a if e == k] for k in range(3)]
    assert by_epoch[0] != by_epoch[1] != by_epoch[2]            # a new order every epoch
    assert list(default_cache_dir().glob("*.h5"))               # the caches were built


def test_validation_with_existing_caches_judges_a_clip_as_a_fresh_run(tmp_path):
    "Training judges every clip the same whether its caches are built in this run or found from an earlier one."
    _tree(tmp_path)
    sr = 16000
    # silent in the 1 s that training stores and reads, sounding afterwards: silent for training, in both runs
    late = np.concatenate([np.zeros(6 * sr), 0.1 * np.sin(np.arange(sr) / 10)]).astype(np.float32)
    sf.write(tmp_path / "CLOTHO_v2.1" / "clotho_audio_files" / "development" / "development_0.wav", late, sr)
    cfg = override(get_preset("smoke"), "audio.max_seconds=1.0", "optim.batch_size=64", "data.on_error=skip",
                   f"data.cache_dir={tmp_path / 'cache'}")

    def judged():
        dm = RetrievalDataModule(cfg, tmp_path, progress=False)
        dm.setup("fit")
        return sorted((p.file, p.kind) for p in dm.report.problems), sorted(c for b in dm.train_dataloader() for c in b["captions"])

    fresh = judged()
    assert list((tmp_path / "cache").glob("*.h5"))                 # the second run finds current caches
    assert judged() == fresh
    problems, captions = fresh
    assert [k for _, k in problems] == ["silent"] and problems[0][0].endswith("development_0.wav")
    assert "clip 0 caption 0" not in captions and "clip 1 caption 0" in captions

"Helpers of the multi-process tests: the learning rate per logged step, and one-process validation of a checkpoint."
from pathlib import Path
import pandas as pd

def lr_by_step(out: Path) -> dict[int, float]:
    "Learning rate per optimiser step from every CSV log of a run folder (later logs win)."
    lr = {}
    for f in sorted((out/"logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])):
        if not f.stat().st_size: continue   # a start killed before its logger's first write
        df = pd.read_csv(f)
        if "lr" not in df: continue
        for s, v in df.dropna(subset=["lr"])[["step", "lr"]].itertuples(index=False): lr[int(s)] = float(v)
    return lr

def validate_one_process(run: Path, data_root: Path, checkpoint: str = "best", precision: str = "32-true") -> dict:
    "Validation metrics of a run's checkpoint computed by the training code path in this (single) process."
    import lightning as L
    from lasr.core import load_config
    from lasr.data import RetrievalDataModule
    from lasr.train import RetrievalModule, load_checkpoint, load_state_into
    cfg = load_config(run/"config.json")
    module = RetrievalModule(cfg, load_weights=False)
    state, info = load_checkpoint(run/checkpoint)
    load_state_into(module.model, state, info)
    dm = RetrievalDataModule(cfg, data_root, progress=False)
    trainer = L.Trainer(accelerator="cpu", devices=1, precision=precision, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False)
    # validation inside `train` runs under the run's matmul precision ("medium": bf16 products on CPUs with AMX,
    # TF32 on GPUs), so the one-process check does too
    import torch
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(cfg.run.matmul_precision)
    try: trainer.validate(module, datamodule=dm, verbose=False)
    finally: torch.set_float32_matmul_precision(previous)
    return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}, info

"The gathered contrastive loss under 2 CPU (gloo) processes equals the single-process loss on the global batch."
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from lasr.model import ContrastiveLoss

WORLD, B, E = 2, 8, 16


def _global_batch():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(B, E, generator=g), dim=-1)
    t = F.normalize(torch.randn(B, E, generator=g), dim=-1)
    idx = torch.tensor([0, 1, 2, 0, 3, 4, 2, 5])     # clips 0 and 2 appear on both ranks
    return a, t, idx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        a, t, idx = _global_batch()
        sl = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
        a_r, t_r = a[sl].clone().requires_grad_(), t[sl].clone().requires_grad_()
        loss = ContrastiveLoss(tau=0.05, gather=True)(a_r, t_r, idx[sl])
        loss.backward()
        out[rank] = (loss.detach(), a_r.grad.clone(), t_r.grad.clone())
        local = ContrastiveLoss(tau=0.05, gather=False)(a[sl], t[sl], idx[sl])
        out[f"local{rank}"] = local.detach()
    finally:
        dist.destroy_process_group()


def test_gathered_loss_equals_single_process():
    a, t, idx = _global_batch()
    a_s, t_s = a.clone().requires_grad_(), t.clone().requires_grad_()
    single = ContrastiveLoss(tau=0.05, gather=True)(a_s, t_s, idx)   # not distributed: no gather
    single.backward()

    out = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        loss, ga, gt = out[rank]
        sl = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
        torch.testing.assert_close(loss, single.detach(), rtol=1e-6, atol=1e-6)
        # the gather's backward sums the same global loss over ranks: DDP's averaging divides by WORLD
        torch.testing.assert_close(ga / WORLD, a_s.grad[sl], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(gt / WORLD, t_s.grad[sl], rtol=1e-5, atol=1e-7)
        # and without gathering each rank would only see its half: a different loss
        assert abs(out[f"local{rank}"].item() - single.item()) > 1e-3


def _teachers():
    "Two teachers' embeddings of the global batch's clips and captions (other embedding sizes than the student's)."
    g = torch.Generator().manual_seed(1)
    return [(F.normalize(torch.randn(B, d, generator=g), dim=-1), F.normalize(torch.randn(B, d, generator=g), dim=-1))
            for d in (12, 20)]


def _distil(gather=True):
    return ContrastiveLoss(tau=0.05, gather=gather, hard_weight=0.3, soft_weight=0.7, target_tau=0.1)


def _distil_worker(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        a, t, idx = _global_batch()
        sl = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
        a_r, t_r = a[sl].clone().requires_grad_(), t[sl].clone().requires_grad_()
        loss = _distil()(a_r, t_r, idx[sl], [(ta[sl], tt[sl]) for ta, tt in _teachers()])   # each rank: its half
        loss.backward()
        out[rank] = (loss.detach(), a_r.grad.clone(), t_r.grad.clone())
    finally:
        dist.destroy_process_group()


def test_gathered_distillation_loss_equals_single_process():
    "The teachers' matrix is built over the same gathered batch as the student's negatives."
    a, t, idx = _global_batch()
    a_s, t_s = a.clone().requires_grad_(), t.clone().requires_grad_()
    single = _distil()(a_s, t_s, idx, _teachers())
    single.backward()
    out = mp.Manager().dict()
    mp.spawn(_distil_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
    for rank in range(WORLD):
        loss, ga, gt = out[rank]
        sl = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
        torch.testing.assert_close(loss, single.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(ga / WORLD, a_s.grad[sl], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(gt / WORLD, t_s.grad[sl], rtol=1e-5, atol=1e-7)
        # each rank's half alone (its own negatives and teachers' matrix) gives another loss
        local = _distil(gather=False)(a[sl], t[sl], idx[sl], [(ta[sl], tt[sl]) for ta, tt in _teachers()])
        assert abs(local.item() - single.item()) > 1e-3

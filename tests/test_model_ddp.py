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


def _half(rank: int) -> slice:
    "The rows of the global batch that `rank` holds."
    return slice(rank * B // WORLD, (rank + 1) * B // WORLD)


def _teachers():
    "Two teachers' embeddings of the global batch's clips and captions (other embedding sizes than the student's)."
    g = torch.Generator().manual_seed(1)
    return [(F.normalize(torch.randn(B, d, generator=g), dim=-1), F.normalize(torch.randn(B, d, generator=g), dim=-1))
            for d in (12, 20)]


def _distil(gather=True):
    return ContrastiveLoss(tau=0.05, gather=gather, hard_weight=0.3, soft_weight=0.7, target_tau=0.1)


def _worker(rank, port, out):
    "One rank: the gathered contrastive loss and the gathered distillation loss of its half, with their gradients."
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        a, t, idx = _global_batch()
        sl = _half(rank)
        halves = [(ta[sl], tt[sl]) for ta, tt in _teachers()]   # each rank: the teachers' embeddings of its half
        for name, loss_fn, teachers in (("contrastive", ContrastiveLoss(tau=0.05, gather=True), ()),
                                        ("distillation", _distil(), (halves,))):
            a_r, t_r = a[sl].clone().requires_grad_(), t[sl].clone().requires_grad_()
            loss = loss_fn(a_r, t_r, idx[sl], *teachers)
            loss.backward()
            out[(name, rank)] = (loss.detach(), a_r.grad.clone(), t_r.grad.clone())
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks() -> dict:
    "What each of 2 processes (gloo) computed: {(loss name, rank): (loss, grad of its clips, grad of its captions)}."
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
    return dict(out)


def _matches_single_process(ranks: dict, name: str, single, a_s, t_s):
    "Every rank's loss is the one-process loss of the global batch, its gradients that loss's, summed over ranks."
    for rank in range(WORLD):
        loss, ga, gt = ranks[(name, rank)]
        torch.testing.assert_close(loss, single.detach(), rtol=1e-6, atol=1e-6)
        # the gather's backward sums the same global loss over ranks: DDP's averaging divides by WORLD
        torch.testing.assert_close(ga / WORLD, a_s.grad[_half(rank)], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(gt / WORLD, t_s.grad[_half(rank)], rtol=1e-5, atol=1e-7)


def test_gathered_loss_equals_single_process(ranks):
    a, t, idx = _global_batch()
    a_s, t_s = a.clone().requires_grad_(), t.clone().requires_grad_()
    single = ContrastiveLoss(tau=0.05, gather=True)(a_s, t_s, idx)   # not distributed: no gather
    single.backward()
    _matches_single_process(ranks, "contrastive", single, a_s, t_s)
    for rank in range(WORLD):   # without gathering each rank would only see its half: a different loss
        sl = _half(rank)
        assert abs(ContrastiveLoss(tau=0.05, gather=False)(a[sl], t[sl], idx[sl]).item() - single.item()) > 1e-3


def test_gathered_distillation_loss_equals_single_process(ranks):
    "The teachers' matrix is built over the same gathered batch as the student's negatives."
    a, t, idx = _global_batch()
    a_s, t_s = a.clone().requires_grad_(), t.clone().requires_grad_()
    single = _distil()(a_s, t_s, idx, _teachers())
    single.backward()
    _matches_single_process(ranks, "distillation", single, a_s, t_s)
    for rank in range(WORLD):   # each rank's half alone (its own negatives and teachers' matrix) gives another loss
        sl = _half(rank)
        local = _distil(gather=False)(a[sl], t[sl], idx[sl], [(ta[sl], tt[sl]) for ta, tt in _teachers()])
        assert abs(local.item() - single.item()) > 1e-3

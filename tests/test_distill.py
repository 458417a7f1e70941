"Distillation from teachers (issue 24): the loss, the teachers' embeddings computed once, and score-averaged ensembles."
import json, math
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import untrained_checkpoint
from lasr.core import get_preset
from lasr.model import ContrastiveLoss, soft_targets, teacher_similarity, distill_loss
import lasr.train as lt
from lasr.train import (train, evaluate, evaluate_ensemble, load_model, embed_audio, embed_text, load_teachers,
                        load_checkpoint, weights_sha256, RetrievalModule)
from lasr.metrics import read_predictions, query_values, summarize, bootstrap_ci


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def log_softmax(x, axis):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis, keepdims=True))


# ---------------------------------------------------------------- the loss
def test_distillation_loss_equals_a_hand_computation():
    "hard * contrastive + soft * mean of the two cross-entropies to the teachers' softmaxes, written out with loops."
    a, t = unit(4, 6, seed=1), unit(4, 6, seed=2)
    teachers = [(unit(4, 5, seed=3), unit(4, 5, seed=4)), (unit(4, 3, seed=5), unit(4, 3, seed=6))]
    idx = torch.tensor([3, 3, 7, 9])                 # clip 3 twice: two positives in its rows
    tau, tau_t, hw, sw = 0.1, 0.2, 0.4, 0.6
    got = ContrastiveLoss(tau, gather=False, hard_weight=hw, soft_weight=sw, target_tau=tau_t)(a, t, idx, teachers)
    S = (a.double() @ t.double().T).numpy() / tau
    C = sum((ta.double() @ tt.double().T).numpy() for ta, tt in teachers) / 2
    B = 4
    lr, lc = log_softmax(S, 1), log_softmax(S, 0)
    hard = 0.0
    for i in range(B):
        pos = [j for j in range(B) if idx[i] == idx[j]]
        hard += -sum(lr[i, j] for j in pos) / len(pos) / B / 2 + -sum(lc[j, i] for j in pos) / len(pos) / B / 2
    soft = 0.0
    for i in range(B):
        q = [math.exp(C[i, j] / tau_t) for j in range(B)]
        soft += -sum(q[j] / sum(q) * lr[i, j] for j in range(B)) / B / 2           # row i: captions given clip i
        q = [math.exp(C[k, i] / tau_t) for k in range(B)]
        soft += -sum(q[k] / sum(q) * lc[k, i] for k in range(B)) / B / 2           # column i: clips given caption i
    assert got.item() == pytest.approx(hw * hard + sw * soft, rel=1e-5)
    # the pieces on their own
    rows, cols = soft_targets(teacher_similarity(teachers), tau_t)
    assert distill_loss(torch.from_numpy(S).float(), rows, cols).item() == pytest.approx(soft, rel=1e-5)


def test_one_teacher_identical_to_the_student_gives_its_own_softmax():
    a, t = unit(6, 8, seed=1), unit(6, 8, seed=2)
    logits = a @ t.T / 0.05
    rows, cols = soft_targets(teacher_similarity([(a, t)]), 0.05)
    torch.testing.assert_close(rows, logits.softmax(1), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(cols, logits.softmax(0), rtol=1e-6, atol=1e-7)
    # so the distillation loss is the entropy of the student's own predictions, and its gradient there is zero
    a_, t_ = a.clone().requires_grad_(), t.clone().requires_grad_()
    loss = ContrastiveLoss(0.05, gather=False, hard_weight=0.0, soft_weight=1.0, target_tau=0.05)(a_, t_, torch.arange(6), [(a, t)])
    p = logits.softmax(1)
    entropy = (-(p * p.log()).sum(1).mean() - (logits.softmax(0) * logits.log_softmax(0)).sum(0).mean()) / 2
    assert loss.item() == pytest.approx(entropy.item(), rel=1e-5)
    loss.backward()
    assert a_.grad.abs().max() < 1e-4 and t_.grad.abs().max() < 1e-4


def test_teachers_are_averaged_before_the_softmax():
    t1 = (unit(5, 8, seed=1), unit(5, 8, seed=2))
    t2 = (unit(5, 4, seed=3), unit(5, 4, seed=4))
    s1, s2 = t1[0] @ t1[1].T, t2[0] @ t2[1].T
    rows, cols = soft_targets(teacher_similarity([t1, t2]), 0.05)
    torch.testing.assert_close(rows, ((s1 + s2) / 2 / 0.05).softmax(1))
    torch.testing.assert_close(cols, ((s1 + s2) / 2 / 0.05).softmax(0))
    mean_of_softmaxes = ((s1 / 0.05).softmax(1) + (s2 / 0.05).softmax(1)) / 2
    assert (rows - mean_of_softmaxes).abs().max() > 0.05   # the two rules really differ here
    # and the loss uses the averaged matrix
    a, t = unit(5, 6, seed=7), unit(5, 6, seed=8)
    L = ContrastiveLoss(0.05, gather=False, hard_weight=0.0, soft_weight=1.0)(a, t, torch.arange(5), [t1, t2])
    assert L.item() == pytest.approx(distill_loss(a @ t.T / 0.05, rows, cols).item(), rel=1e-6)
    wrong = distill_loss(a @ t.T / 0.05, mean_of_softmaxes, ((s1 / 0.05).softmax(0) + (s2 / 0.05).softmax(0)) / 2)
    assert abs(L.item() - wrong.item()) > 1e-3


def _old_contrastive(a, t, idx, tau):
    "The contrastive loss as it was before distillation (lasr 05_model, issue 24's starting point)."
    logits = (a.float() @ t.float().T) / torch.tensor(math.log(tau)).exp().float()
    pos = (idx[:, None] == idx[None, :]).float()
    targets = pos / pos.sum(1, keepdim=True)
    a2t = -(targets * logits.log_softmax(1)).sum(1).mean()
    t2a = -(targets.T * logits.log_softmax(0)).sum(0).mean()
    return (a2t + t2a) / 2


def test_without_teachers_the_loss_is_the_old_one_bit_for_bit():
    idx = torch.tensor([0, 1, 1, 2, 3, 4])
    for hw, sw in ((1.0, 0.0), (0.0, 1.0), (0.3, 0.7)):   # the weights only act on a distilled step
        a, t = unit(6, 8, seed=1).requires_grad_(), unit(6, 8, seed=2).requires_grad_()
        a0, t0 = a.detach().clone().requires_grad_(), t.detach().clone().requires_grad_()
        new = ContrastiveLoss(0.05, gather=False, hard_weight=hw, soft_weight=sw)(a, t, idx)
        old = _old_contrastive(a0, t0, idx, 0.05)
        assert torch.equal(new, old)
        new.backward(); old.backward()
        assert torch.equal(a.grad, a0.grad) and torch.equal(t.grad, t0.grad)


# ---------------------------------------------------------------- training
def _same_weights(p, q) -> bool:
    from safetensors.torch import load_file
    x, y = load_file(str(p)), load_file(str(q))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_soft_weight_zero_trains_bit_identically_and_loads_no_teacher(smoke_corpus, tmp_path):
    steps = ("run.max_steps=2",)
    train(get_preset("smoke", *steps), smoke_corpus, tmp_path/"plain", progress=False)
    with patch.object(lt, "load_teachers", side_effect=AssertionError("a teacher was loaded")), \
         patch.object(lt, "load_checkpoint", side_effect=AssertionError("a checkpoint was read")):
        s = train(get_preset("smoke", *steps, f"loss.teachers={tmp_path}/no-such-teacher", "loss.soft_weight=0"),
                  smoke_corpus, tmp_path/"zero", progress=False)
    assert s["steps"] == 2 and "teachers" not in s
    assert _same_weights(tmp_path/"plain"/"last.safetensors", tmp_path/"zero"/"last.safetensors")
    assert "teachers" not in json.loads((tmp_path/"zero"/"last.json").read_text())


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    "Two random-weight smoke teachers of different embedding sizes (run folders t1, t2)."
    d = tmp_path_factory.mktemp("teachers")
    return [untrained_checkpoint(d/"t1", "audio.hop_seconds=10"), untrained_checkpoint(d/"t2", "model.embed_dim=24")]


DISTIL = ("data.batch_by=clip", "optim.epochs=1", "loss.hard_weight=0", "loss.soft_weight=1", "loss.target_tau=0.1")


def test_teacher_embeddings_are_computed_once_and_recorded(smoke_corpus, teachers, tmp_path, capsys):
    cfg = get_preset("smoke", *DISTIL, f"loss.teachers={teachers[0]},{teachers[1]}")
    s1 = train(cfg, smoke_corpus, tmp_path/"s1", progress=False)
    err1 = capsys.readouterr().err
    want = [{"run": t.name, "weights_sha256": weights_sha256(load_checkpoint(t/"best")[0])} for t in teachers]
    assert [{k: r[k] for k in ("run", "weights_sha256")} for r in s1["teachers"]] == want
    assert [r["embeddings"] for r in s1["teachers"]] == ["computed", "computed"]
    assert "2 of 2 teachers' embeddings computed" in err1
    for f in ("best.json", "last.json"):                  # both sidecars name the teachers
        assert json.loads((tmp_path/"s1"/f).read_text())["teachers"] == want
    assert json.loads((tmp_path/"s1"/"train.json").read_text())["teachers"] == s1["teachers"]
    # the cache holds each teacher's embeddings of every training clip and caption, without augmentation
    cache = torch.load(s1["teachers"][1]["cache"], weights_only=True)
    assert Path(s1["teachers"][1]["cache"]).parent == teachers[1]/"embeddings"
    model = load_model(teachers[1], device="cpu")
    audio_dir = smoke_corpus/"CLOTHO_v2.1"/"clotho_audio_files"/"development"
    from lasr.data import read_split
    sp = read_split(smoke_corpus, "clotho", "development")
    assert cache["audio"].shape == (16, 24) and len(cache["captions"]) == len({c for cs in sp.captions for c in cs})
    # (about 1e-4 apart: training reads the int16 waveform cache; augmentation would move them by ~0.1)
    np.testing.assert_allclose(cache["audio"].numpy(), embed_audio(model, sp.audio_paths), rtol=0, atol=1e-3)
    np.testing.assert_allclose(cache["text"].numpy(), embed_text(model, cache["captions"]), rtol=0, atol=1e-6)
    # a second run with the same teachers and data computes none, says so, and trains the same weights
    with patch.object(lt, "_teacher_embed", side_effect=AssertionError("a teacher embedded the data again")):
        s2 = train(cfg, smoke_corpus, tmp_path/"s2", progress=False)
    err2 = capsys.readouterr().err
    assert "0 of 2 teachers' embeddings computed (none computed: all from the cache)" in err2
    assert err2.count("read from its cache") == 2
    assert [r["embeddings"] for r in s2["teachers"]] == ["cache", "cache"]
    assert _same_weights(tmp_path/"s1"/"last.safetensors", tmp_path/"s2"/"last.safetensors")
    # and distillation changed the training: the contrastive-only run ends elsewhere
    train(get_preset("smoke", *DISTIL[:2]), smoke_corpus, tmp_path/"hard", progress=False)
    assert not _same_weights(tmp_path/"s1"/"last.safetensors", tmp_path/"hard"/"last.safetensors")


def test_a_training_step_distils_the_batch_the_teachers_embedded(smoke_corpus, teachers):
    "The loss of a training step equals hard * contrastive + soft * distillation, the teachers' matrices computed here."
    from lasr.data import RetrievalDataModule, collate
    cfg = get_preset("smoke", "loss.hard_weight=0.3", "loss.soft_weight=0.7", "loss.target_tau=0.1",
                     f"loss.teachers={teachers[0]},{teachers[1]}")
    dm = RetrievalDataModule(cfg, smoke_corpus, progress=False); dm.setup("fit")
    torch.manual_seed(0)
    module = RetrievalModule(cfg, load_weights=False).train()
    module.teachers = load_teachers(cfg, dm.splits["train"], progress=False, device="cpu")
    batch = collate([dm.train_ds[i] for i in (0, 7, 12, 30, 31, 55)])     # clip 6 twice (indices 30, 31)
    with patch.object(RetrievalModule, "log"), patch.object(RetrievalModule, "optimizers"), torch.no_grad():
        torch.manual_seed(1); loss = module.training_step(batch, 0)
        torch.manual_seed(1); a, t = module.model(batch)                   # the same dropout and patchout
    S = (a.double() @ t.double().T).numpy() / cfg.loss.tau
    sims = []
    for run in teachers:
        m = load_model(run, device="cpu")
        ta = embed_audio(m, [dm.splits["train"].audio_paths[i] for i in batch["audio_index"]])
        sims.append(ta.astype(np.float64) @ embed_text(m, batch["captions"]).astype(np.float64).T)
    C = (sims[0] + sims[1]) / 2 / cfg.loss.target_tau                    # mean before the softmax
    rows = np.exp(log_softmax(C, 1)); cols = np.exp(log_softmax(C, 0))
    soft = (-(rows * log_softmax(S, 1)).sum(1).mean() - (cols * log_softmax(S, 0)).sum(0).mean()) / 2
    hard = ContrastiveLoss(cfg.loss.tau, gather=False)(a, t, batch["audio_index"]).item()
    assert loss.item() == pytest.approx(0.3 * hard + 0.7 * soft, rel=1e-4)


def test_distillation_settings_are_checked_before_anything_is_read(tmp_path, cli):
    r = cli("train", "--preset", "smoke", "--data-root", tmp_path, "--out", tmp_path/"run", "--set", "loss.soft_weight=1")
    assert r.returncode == 2 and "loss.teachers=RUN" in r.stderr, r.stderr
    r = cli("train", "--preset", "smoke", "--data-root", tmp_path, "--out", tmp_path/"run", "--set", "loss.soft_weight=1",
            "--set", f"loss.teachers={tmp_path}/nothing")
    assert r.returncode == 2 and "holds no checkpoint" in r.stderr, r.stderr
    assert not (tmp_path/"run").exists()


# ---------------------------------------------------------------- ensembles
def test_an_ensemble_of_one_run_is_that_run(smoke_corpus, teachers, tmp_path):
    one = evaluate(teachers[0], smoke_corpus, out=tmp_path/"run.json", predictions=tmp_path/"run.csv", ci=True, progress=False)
    ens = evaluate_ensemble([teachers[0]], smoke_corpus, out=tmp_path/"ens.json", predictions=tmp_path/"ens.csv", ci=True,
                            progress=False)
    assert ens == one
    assert (tmp_path/"ens.json").read_bytes() == (tmp_path/"run.json").read_bytes()
    assert (tmp_path/"ens.csv").read_bytes() == (tmp_path/"run.csv").read_bytes()


def test_an_ensemble_of_two_scores_the_mean_similarity(smoke_corpus, teachers, tmp_path):
    sims = []
    for k, run in enumerate(teachers):
        evaluate(run, smoke_corpus, predictions=tmp_path/f"m{k}.csv", progress=False)
        q, names, s = read_predictions(tmp_path/f"m{k}.csv"); sims.append(s)
    for weights, mean in ((None, (sims[0] + sims[1]) / 2), ([3.0, 1.0], (3 * sims[0] + sims[1]) / 4)):
        got = evaluate_ensemble(teachers, smoke_corpus, weights=weights, predictions=tmp_path/"e.csv", ci=True, progress=False)
        from lasr.data import read_split
        sp = read_split(smoke_corpus, "clotho", "evaluation")
        targets = np.array(sp.queries()[1])
        values = query_values(mean, targets)
        want = {**summarize(values), "n_queries": 80, "n_items": 16,
                "ci": bootstrap_ci(values, np.asarray(sp.file_names)[targets])}
        assert got.keys() == want.keys()
        for k in want:
            if k != "ci": assert got[k] == pytest.approx(want[k], abs=1e-9), k
        for k in want["ci"]: np.testing.assert_allclose(got["ci"][k], want["ci"][k], rtol=0, atol=1e-9)
        q2, names2, s2 = read_predictions(tmp_path/"e.csv")
        assert (q2, names2) == (q, names)
        np.testing.assert_allclose(s2, mean, rtol=0, atol=1e-6)
    # an ensemble really differs from each member
    assert not np.allclose(sims[0], sims[1], atol=1e-3)


def test_members_that_read_other_data_are_refused(smoke_corpus, teachers, tmp_path):
    real = lt._similarity
    def fewer_clips(run, *args):   # the second member reads one clip less (e.g. other exclusions)
        model, sp, sim = real(run, *args)
        return (model, sp.subset(range(len(sp) - 1)), sim[:-5, :-1]) if run == teachers[1] else (model, sp, sim)
    with patch.object(lt, "_similarity", fewer_clips), pytest.raises(lt.LasrError) as e:
        evaluate_ensemble(teachers, smoke_corpus, progress=False)
    msg = str(e.value)
    assert "do not agree on the evaluation data" in msg and "16 clips" in msg and "15 clips" in msg
    assert str(teachers[0]) in msg and str(teachers[1]) in msg


def test_lasr_evaluate_several_runs_end_to_end(smoke_corpus, teachers, tmp_path, cli):
    r = cli("evaluate", *teachers, "--data-root", smoke_corpus, "--out", tmp_path/"m.json", "--predictions",
            tmp_path/"p.csv", "--ci", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "ensemble of 2 runs" in r.stdout and "mAP@10" in r.stdout
    m = json.loads((tmp_path/"m.json").read_text())
    assert m == json.loads(json.dumps(evaluate_ensemble(teachers, smoke_corpus, ci=True, progress=False)))
    q, names, sim = read_predictions(tmp_path/"p.csv")
    assert sim.shape == (80, 16)
    r = cli("evaluate", *teachers, "--data-root", smoke_corpus, "--weights", "1", "--quiet")
    assert r.returncode == 2 and "one weight per run" in r.stderr, r.stderr
    r = cli("evaluate", teachers[0], "--data-root", smoke_corpus, "--quiet")   # one run: as before
    assert r.returncode == 0 and "ensemble" not in r.stdout, r.stderr

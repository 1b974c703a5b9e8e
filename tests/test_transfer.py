"""Attention transfer (SATN Eqs. 10-12): the loss, its gradients, the teacher, the engine."""

import numpy as np
import pytest
import teacher_stand_in
import torch
from fakes import MemoryDataset

from satn.config import ConfigError, ExperimentConfig, FeatureConfig, TransferConfig
from satn.models.masking import length_mask
from satn.runner import CrossValidation
from satn.transfer import AttentionTransfer, activation_map, transfer_loss

PAIRS = [("encoder.layer0", "encoder.layer0"), ("attention", "encoder.attention")]


def _maps(lengths, t=None, c=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    t = t or int(lengths.max())
    mask = length_mask(lengths, t)
    layer = torch.randn(len(lengths), t, c, generator=g) * mask[..., None]
    scores = torch.randn(len(lengths), 2, t, t, generator=g)
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    return {"encoder.layer0": layer, "attention": scores.softmax(-1)}, lengths


def _as_teacher(m):
    return {"encoder.layer0": m["encoder.layer0"], "encoder.attention": m["attention"].mean(1)}


def test_zero_for_identical_maps_and_positive_otherwise():
    s, lengths = _maps([9, 5])
    assert transfer_loss(s, _as_teacher(s), lengths, PAIRS).item() == pytest.approx(0, abs=1e-6)
    other, _ = _maps([9, 5], seed=1)
    assert transfer_loss(s, _as_teacher(other), lengths, PAIRS).item() > 0.1


def test_activation_map_is_eq_10():
    a = torch.tensor([[[1.0, -2.0], [0.5, 3.0]]])
    assert torch.allclose(activation_map(a, 2), torch.tensor([[5.0, 9.25]]))
    assert torch.allclose(activation_map(a, 1), torch.tensor([[3.0, 3.5]]))


def test_invariant_to_scaling_a_map_and_blind_to_padding():
    s, lengths = _maps([9, 5])
    t = _as_teacher(_maps([9, 5], seed=1)[0])
    base = transfer_loss(s, t, lengths, PAIRS)
    scaled = {**t, "encoder.layer0": t["encoder.layer0"] * 7.0}
    assert torch.allclose(transfer_loss(s, scaled, lengths, PAIRS), base, atol=1e-5)
    garbage = {k: v.clone() for k, v in t.items()}
    garbage["encoder.layer0"][1, 5:] = 1e3  # the teacher's padding is never read
    garbage["encoder.attention"][1, 5:, :] = 0.7
    assert torch.allclose(transfer_loss(s, garbage, lengths, PAIRS), base, atol=1e-5)


def test_maps_of_different_lengths_are_interpolated():
    s, lengths = _maps([8])
    # the same activation profile at twice the frame rate: a linear ramp compares equal
    ramp = torch.linspace(1, 2, 8)[None, :, None].expand(1, 8, 3)
    ramp2 = torch.linspace(1, 2, 16)[None, :, None].expand(1, 16, 3)
    pairs = [("encoder.layer0", "encoder.layer0")]
    loss = transfer_loss({"encoder.layer0": ramp}, {"encoder.layer0": ramp2}, lengths, pairs,
                         p=1.0)
    assert loss.item() == pytest.approx(0, abs=1e-5)
    assert transfer_loss(s, {"encoder.layer0": ramp2}, lengths, pairs).item() > 0


def test_soft_attention_is_compared_with_the_weight_each_frame_receives():
    lengths = torch.tensor([4])
    teacher = torch.tensor([[[0.1, 0.2, 0.3, 0.4]] * 4])  # every query attends alike
    soft = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    pairs = [("attention", "encoder.attention")]
    assert transfer_loss({"attention": soft}, {"encoder.attention": teacher}, lengths,
                         pairs).item() == pytest.approx(0, abs=1e-6)


def test_gradient_reaches_the_student_and_never_the_teacher():
    torch.manual_seed(0)
    # not frozen here: only the no_grad of the term keeps gradients away from it
    teacher = teacher_stand_in.StandInTeacher(6, mean=1.0, std=2.0)
    student = teacher_stand_in.StandInTeacher(6)
    term = AttentionTransfer(teacher, TransferConfig(kind="both"), np.zeros(6), np.ones(6))
    x, lengths = torch.randn(2, 12, 6), torch.tensor([12, 7])
    maps = student.maps(x, lengths)
    maps["attention"] = maps.pop("encoder.attention")
    loss = term(maps, x, lengths, [("a", 0, 12), ("b", 0, 7)])
    loss.backward()
    assert loss.item() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters()
               if p.requires_grad)
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_sees_denormalised_features_and_its_maps_are_cached_per_window():
    calls = []

    class Spy(teacher_stand_in.StandInTeacher):
        def maps(self, x, lengths):
            calls.append(x.clone())
            return super().maps(x, lengths)

    torch.manual_seed(0)
    teacher = Spy(3)
    mean, std = np.array([10.0, -5.0, 0.0]), np.array([2.0, 1.0, 4.0])
    term = AttentionTransfer(teacher, TransferConfig(kind="activation"), mean, std)
    raw = torch.randn(2, 6, 3) * torch.tensor(std, dtype=torch.float32) + torch.tensor(
        mean, dtype=torch.float32)
    lengths = torch.tensor([6, 4])
    x = (raw - torch.tensor(mean)) / torch.tensor(std)
    x = (x * length_mask(lengths, 6)[..., None]).float()
    student = {f"encoder.layer{i}": torch.rand(2, 6, 4) for i in range(5)}
    keys = [("u1", 0, 6), ("u2", 0, 4)]
    first = term(student, x, lengths, keys)
    assert torch.allclose(calls[0][0], raw[0], atol=1e-5)
    assert torch.allclose(calls[0][1, :4], raw[1, :4], atol=1e-5) and calls[0][1, 4:].abs().sum() == 0
    again = term(student, x, lengths, keys)
    assert len(calls) == 1 and term.teacher_calls == 2 and torch.allclose(first, again)
    term(student, x, lengths, [("u1", 3, 6), ("u2", 0, 4)])  # another crop of u1: a new window
    assert len(calls) == 2 and calls[1].shape[0] == 1


def _cfg(variant="tcn_self_at", **over):
    base = {"model.variant": variant, "model.tcn.channels": 8, "model.tcn.dilations": "1,2",
            "model.tcn.convs_per_block": 1, "model.attention.form": "paper",
            "model.rnn.hidden": 4, "train.epochs": 2, "train.batch_size": 16,
            "train.device": "cpu", "features.n_mels": 4, "transfer.pairs":
            "encoder.layer1:encoder.layer4,attention:encoder.attention", "transfer.kind": "both"}
    base.update(over)
    return ExperimentConfig().override(base)


def test_at_variants_without_a_usable_teacher_fail_with_one_clear_line(tmp_path, monkeypatch):
    teacher_stand_in.install(monkeypatch)
    data = MemoryDataset(per_speaker_class=1)  # 12 dims = 4 mels + deltas
    with pytest.raises(ConfigError, match="tcn_self_at trains with attention transfer: set "
                                          "transfer.teacher"):
        CrossValidation(_cfg(), data, folds=[1])
    other = teacher_stand_in.save(tmp_path / "t.pt", FeatureConfig(n_mels=4, hop_ms=20.0))
    with pytest.raises(ConfigError, match="other features than the dataset's.*hop_ms 20.0 vs 10.0"):
        CrossValidation(_cfg(**{"transfer.teacher": str(other)}), data, folds=[1])
    good = teacher_stand_in.save(tmp_path / "g.pt", FeatureConfig(n_mels=4))
    with pytest.raises(ConfigError, match="teacher map 'encoder.layer9'; the teacher gives"):
        CrossValidation(_cfg(**{"transfer.teacher": str(good),
                           "transfer.pairs": "encoder.layer0:encoder.layer9"}), data, folds=[1])
    with pytest.raises(ConfigError, match=r"tcn_self_at gives none of the student maps "
                                          r"\['encoder.layer3'\]"):
        CrossValidation(_cfg(**{"transfer.teacher": str(good),
                           "transfer.pairs": "encoder.layer3:encoder.layer0"}), data, folds=[1])
    # one pair list for a grid: pairs a variant cannot give are left out of its term
    exp = CrossValidation(_cfg(**{"transfer.teacher": str(good), "transfer.pairs":
                             "encoder.layer3:encoder.layer3,encoder.layer1:encoder.layer4"}),
                     data, folds=[1])
    assert exp.trainers["fold1"].aux[0].pairs == [("encoder.layer1", "encoder.layer4")]
    with pytest.raises(ConfigError, match="no teacher at"):
        CrossValidation(_cfg(**{"transfer.teacher": str(tmp_path / "none.pt")}), data, folds=[1])


@pytest.mark.parametrize("variant", ["tcn_self_at", "blstm_soft_at"])
def test_engine_logs_each_term_and_the_weighted_total_on_both_sides(tmp_path, monkeypatch,
                                                                     variant):
    teacher_stand_in.install(monkeypatch)
    torch.set_num_threads(1)
    path = teacher_stand_in.save(tmp_path / "t.pt", FeatureConfig(n_mels=4))
    pairs = ("encoder.layer0:encoder.layer4,attention:encoder.attention"
             if variant.startswith("blstm") else None)
    over = {"transfer.teacher": str(path), "transfer.weight": 0.5}
    if pairs:
        over["transfer.pairs"] = pairs
    exp = CrossValidation(_cfg(variant, **over), MemoryDataset(per_speaker_class=2), folds=[1])
    seen = []

    class Rec:
        def on_start(self, e):
            pass

        def on_epoch(self, e, epoch, stats, final):
            seen.append(e.epoch_summary(stats))

    exp.run([Rec()])
    stats = exp.trainers["fold1"].history
    for s in stats:
        assert set(s.train_losses) == set(s.dev_losses) == {"ser", "at"}
        assert s.train_losses["at"] > 0 and s.dev_losses["at"] > 0
        assert s.dev_loss == pytest.approx(s.dev_losses["ser"] + 0.5 * s.dev_losses["at"],
                                           rel=1e-5)
    assert {"train_loss_ser", "train_loss_at", "dev_loss_ser", "dev_loss_at"} <= set(seen[-1])
    # the teacher ran once per utterance window: dev (never cropped) hits the cache in epoch 2
    term = exp.trainers["fold1"].aux[0]
    n_train, n_dev = (len(exp.prepared[0].data.train), len(exp.prepared[0].data.dev))
    assert term.teacher_calls == n_train + n_dev  # short utterances: no crops, one window each

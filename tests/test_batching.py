"""Normaliser, dataset crops, length buckets, padding collate, loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from satn.batching import (
    Batch,
    BucketBatchSampler,
    Normalizer,
    SequenceDataset,
    collate,
    make_loader,
    set_epoch,
)


def random_arrays(rng: np.random.Generator, n: int, low: int = 5, high: int = 300,
                  dim: int = 6) -> list[np.ndarray]:
    return [rng.normal(size=(int(rng.integers(low, high)), dim)).astype(np.float32)
            for _ in range(n)]


def padding(lengths: np.ndarray, batches: list[list[int]]) -> int:
    """Padded frames the batches would carry."""
    return sum(len(b) * int(lengths[b].max()) - int(lengths[b].sum()) for b in batches)


# ---------------------------------------------------------------- normaliser


def test_normalizer_standardises_its_training_data() -> None:
    rng = np.random.default_rng(0)
    scale = np.array([0.01, 1.0, 30.0, 2.0], dtype=np.float32)
    train = [(1000 + scale * rng.normal(size=(int(rng.integers(1, 200)), 4))).astype(np.float32)
             for _ in range(50)]
    norm = Normalizer.fit(train)
    z = np.concatenate([norm(a) for a in train]).astype(np.float64)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=2e-3)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=2e-3)
    # merged per-array statistics equal the float64 statistics of all frames at once
    ref = np.concatenate(train).astype(np.float64)
    np.testing.assert_allclose(norm.mean, ref.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(norm.std, ref.std(axis=0), rtol=1e-5)
    assert norm(train[0]).dtype == np.float32


def test_normalizer_uses_only_the_data_passed_to_fit() -> None:
    rng = np.random.default_rng(1)
    train = [rng.normal(0, 1, size=(100, 3)).astype(np.float32) for _ in range(4)]
    test = [rng.normal(50, 10, size=(100, 3)).astype(np.float32) for _ in range(4)]
    norm = Normalizer.fit(train)
    ref = np.concatenate(train).astype(np.float64)
    np.testing.assert_allclose(norm.mean, ref.mean(axis=0), rtol=1e-5, atol=1e-6)
    # test data keeps its shift relative to train: it is not re-centred on itself
    assert np.all(np.concatenate([norm(a) for a in test]).mean(axis=0) > 20)


def test_normalizer_floors_constant_dimensions_and_handles_feature_shapes() -> None:
    rng = np.random.default_rng(2)
    arrays = [np.stack([rng.normal(size=(20, 2)), np.full((20, 2), 3.0)], axis=2)
              for _ in range(3)]  # (T, 2, 2) segments; second bin constant
    norm = Normalizer.fit(arrays)
    assert norm.mean.shape == norm.std.shape == (2,)  # one statistic per bin (last axis)
    assert norm.std[1] == pytest.approx(1e-5) and norm.mean[1] == pytest.approx(3.0)
    out = norm(arrays[0])
    assert out.shape == (20, 2, 2) and np.isfinite(out).all()
    with pytest.raises(ValueError, match="frame"):
        Normalizer.fit([np.zeros((0, 3))])


def test_normalizer_dict_round_trip_through_json() -> None:
    rng = np.random.default_rng(3)
    norm = Normalizer.fit(random_arrays(rng, 5))
    back = Normalizer.from_dict(json.loads(json.dumps(norm.to_dict())))
    np.testing.assert_array_equal(back.mean, norm.mean)
    np.testing.assert_array_equal(back.std, norm.std)
    x = random_arrays(rng, 1)[0]
    np.testing.assert_array_equal(back(x), norm(x))
    with pytest.raises(ValueError):  # frozen: the statistics cannot be changed in place
        norm.mean[0] = 1.0


# ---------------------------------------------------------------- collate / Batch


def test_collate_pads_with_zeros_and_keeps_lengths() -> None:
    rng = np.random.default_rng(4)
    items = [(torch.from_numpy(rng.normal(size=(t, 3, 2)).astype(np.float32)) + 5, t % 4,
              f"u{t}") for t in (7, 2, 11, 5)]
    b = collate(items)
    assert b.x.shape == (4, 11, 3, 2) and b.x.dtype == torch.float32
    assert b.lengths.tolist() == [7, 2, 11, 5] and b.lengths.dtype == torch.int64
    assert b.y.tolist() == [3, 2, 3, 1] and b.y.dtype == torch.int64
    assert b.ids == ["u7", "u2", "u11", "u5"]
    for i, (x, _, _) in enumerate(items):
        t = x.shape[0]
        assert torch.equal(b.x[i, :t], x)
        assert torch.all(b.x[i, t:] == 0)
    assert b.mask.sum(dim=1).tolist() == [7, 2, 11, 5]
    assert torch.equal(b.mask, torch.arange(11)[None] < b.lengths[:, None])
    moved = b.to("cpu")
    assert isinstance(moved, Batch) and torch.equal(moved.x, b.x) and len(moved) == 4


# ---------------------------------------------------------------- dataset and crops


def ramp_arrays(lengths: list[int]) -> list[np.ndarray]:
    """Frame t holds value t, so a crop reveals where it came from."""
    return [np.repeat(np.arange(t, dtype=np.float32)[:, None], 2, axis=1) for t in lengths]


def test_crop_is_a_window_within_bounds_and_deterministic_per_seed_and_epoch() -> None:
    lengths = [30, 100, 250, 99, 101, 1000]
    arrays = ramp_arrays(lengths)
    ds = SequenceDataset(arrays, [0] * 6, [f"u{i}" for i in range(6)], max_frames=100, seed=7)
    assert ds.lengths.tolist() == [30, 100, 100, 99, 100, 100]

    def starts(d: SequenceDataset) -> list[int]:
        out = []
        for i in range(len(d)):
            x, _, _ = d[i]
            assert x.shape[0] == d.lengths[i]
            first = int(x[0, 0])
            np.testing.assert_array_equal(x[:, 0].numpy(), np.arange(first, first + len(x)))
            assert 0 <= first and first + len(x) <= lengths[i]
            out.append(first)
        return out

    epoch0 = starts(ds)
    assert epoch0[:2] == [0, 0] and epoch0[3] == 0  # not longer than max_frames: whole item
    again = SequenceDataset(arrays, [0] * 6, [f"u{i}" for i in range(6)], max_frames=100,
                            seed=7)
    assert starts(again) == epoch0
    by_epoch = []
    for e in range(1, 6):
        ds.set_epoch(e)
        by_epoch.append(starts(ds))
    assert any(s[5] != epoch0[5] for s in by_epoch)  # long items move across epochs
    ds.set_epoch(0)
    assert starts(ds) == epoch0
    other_seed = SequenceDataset(arrays, [0] * 6, [str(i) for i in range(6)], max_frames=100,
                                 seed=8)
    assert starts(other_seed)[5] != epoch0[5] or starts(other_seed)[2] != epoch0[2]


def test_dataset_without_max_frames_serves_full_normalised_items() -> None:
    rng = np.random.default_rng(5)
    arrays = random_arrays(rng, 8, dim=4)
    norm = Normalizer.fit(arrays[:4])
    ds = SequenceDataset(arrays, list(range(8)), [f"u{i}" for i in range(8)], normalizer=norm)
    for i in range(8):
        x, y, uid = ds[i]
        assert y == i and uid == f"u{i}" and x.dtype == torch.float32
        np.testing.assert_allclose(x.numpy(), (arrays[i] - norm.mean) / norm.std, rtol=1e-6)
    assert ds.lengths.tolist() == [len(a) for a in arrays]


def test_dataset_rejects_inconsistent_inputs() -> None:
    a = [np.zeros((5, 3), np.float32), np.zeros((4, 3), np.float32)]
    with pytest.raises(ValueError, match="labels"):
        SequenceDataset(a, [0], ["a", "b"])
    with pytest.raises(ValueError, match="feature shapes"):
        SequenceDataset([a[0], np.zeros((4, 2), np.float32)], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="empty"):
        SequenceDataset([a[0], np.zeros((0, 3), np.float32)], [0, 1], ["a", "b"])


# ---------------------------------------------------------------- bucket sampler


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("batch_size", [1, 7, 32, 500])
def test_sampler_yields_every_index_once_per_epoch(shuffle: bool, batch_size: int) -> None:
    lengths = np.random.default_rng(6).integers(1, 800, size=333)
    sampler = BucketBatchSampler(lengths, batch_size, shuffle=shuffle, seed=1, bucket_width=50)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert all(1 <= len(b) <= batch_size for b in batches)
        assert sum(len(b) < batch_size for b in batches) <= 1
        assert sorted(i for b in batches for i in b) == list(range(333))


def test_sampler_order_is_seeded_and_changes_by_epoch_only_when_shuffling() -> None:
    lengths = np.random.default_rng(7).integers(1, 800, size=200)

    def epoch_batches(shuffle: bool, seed: int, epoch: int) -> list[list[int]]:
        s = BucketBatchSampler(lengths, 16, shuffle=shuffle, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert epoch_batches(True, 0, 1) == epoch_batches(True, 0, 1)
    assert epoch_batches(True, 0, 1) != epoch_batches(True, 0, 2)
    assert epoch_batches(True, 0, 1) != epoch_batches(True, 1, 1)
    assert epoch_batches(False, 0, 1) == epoch_batches(False, 3, 2)
    fixed = [i for b in epoch_batches(False, 0, 0) for i in b]
    assert np.all(np.diff(lengths[fixed]) >= 0)  # no shuffle: by length


def test_buckets_reduce_padding_compared_with_random_batches() -> None:
    rng = np.random.default_rng(8)
    lengths = rng.integers(50, 1500, size=2000)
    sampler = BucketBatchSampler(lengths, 16, shuffle=True, seed=0, bucket_width=50)
    bucketed = list(sampler)
    perm = rng.permutation(2000)
    random_batches = [perm[i : i + 16].tolist() for i in range(0, 2000, 16)]
    assert padding(lengths, bucketed) < 0.1 * padding(lengths, random_batches)
    # dense lengths: a batch spans at most two neighbouring buckets
    assert max(int(np.ptp(lengths[b])) for b in bucketed) < 2 * 50


# ---------------------------------------------------------------- loader


def test_loader_serves_every_item_once_as_padded_batches() -> None:
    rng = np.random.default_rng(9)
    arrays = random_arrays(rng, 57, high=400)
    ids = [f"u{i}" for i in range(57)]
    ds = SequenceDataset(arrays, [i % 4 for i in range(57)], ids, max_frames=200, seed=2)
    loader = make_loader(ds, 8, shuffle=True, seed=2, bucket_width=20)
    orders = []
    for epoch in range(2):
        set_epoch(loader, epoch)
        seen = []
        for b in loader:
            assert isinstance(b, Batch) and b.x.shape[0] == len(b.ids) <= 8
            assert b.x.shape[1] == int(b.lengths.max()) <= 200
            assert b.y.tolist() == [int(u[1:]) % 4 for u in b.ids]
            seen += b.ids
        assert sorted(seen) == sorted(ids)
        orders.append(seen)
    assert orders[0] != orders[1]
    assert ds.epoch == 1 and loader.batch_sampler.epoch == 1


def test_evaluation_batches_stay_within_their_attention_cost():
    from satn.batching import BucketBatchSampler

    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(50, 700, 200), [3400, 3000, 2500, 1800]])
    sampler = BucketBatchSampler(lengths, 32, shuffle=False, max_cost=16_000_000)
    batches = sampler.batches()
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # each once
    for b in batches:
        longest = lengths[b].max()
        assert len(b) <= 32
        assert len(b) == 1 or len(b) * longest ** 2 <= 16_000_000
    # the longest turns no longer ride in a batch of 32: 3400 frames goes alone
    assert [len(b) for b in batches if 3400 in lengths[b]] == [1]
    assert len(sampler) == len(batches)
    with pytest.raises(ValueError, match="evaluation"):
        BucketBatchSampler(lengths, 32, shuffle=True, max_cost=10)

"""TACN and TCN blocks: shapes, padding invariance, causality, tap attention."""

import pytest
import torch

from satn.models.tacn import TACN, TapAttentionLayer
from satn.models.tcn import TCN


def _tacn(**kw) -> TACN:
    torch.manual_seed(0)
    args = {"input_dim": 6, "channels": 16, "layers": 3, "kernel_size": 3, "heads": 4,
            "dropout": 0.0}
    return TACN(**{**args, **kw}).eval()


def _tcn() -> TCN:
    torch.manual_seed(0)
    return TCN(6, 16, (1, 2, 4), 3, 0.0, causal=True).eval()


def test_tacn_shapes_and_zero_past_length():
    m = _tacn()
    x = torch.randn(3, 11, 6)
    lengths = torch.tensor([11, 7, 1])
    y, maps = m(x, lengths, return_attention=True)
    assert y.shape == (3, 11, 16)
    assert len(maps) == 3 and maps[0].shape == (3, 11, 4, 3, 3)
    assert torch.all(y[1, 7:] == 0) and torch.all(y[2, 1:] == 0)
    assert m.receptive_field == 1 + 2 * (1 + 2 + 4)


@pytest.mark.parametrize("make", [_tacn, _tcn], ids=["tacn", "tcn"])
def test_padding_invariance(make):
    m = make()
    torch.manual_seed(1)
    a, b = torch.randn(9, 6), torch.randn(5, 6)
    x = torch.zeros(2, 9, 6)
    x[0], x[1, :5] = a, b
    x[1, 5:] = 100.0  # garbage in the padding must not matter
    y = m(x, torch.tensor([9, 5]))
    alone = m(b[None], torch.tensor([5]))
    torch.testing.assert_close(y[1, :5], alone[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y[0], m(a[None], torch.tensor([9]))[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("make", [_tacn, _tcn], ids=["tacn", "tcn"])
@pytest.mark.parametrize("t", [0, 3, 8])
def test_causal_future_never_changes_past(make, t):
    m = make()
    torch.manual_seed(2)
    x = torch.randn(1, 12, 6)
    x2 = x.clone()
    x2[:, t + 1:] = torch.randn(1, 12 - t - 1, 6) * 5
    lengths = torch.tensor([12])
    y, y2 = m(x, lengths), m(x2, lengths)
    torch.testing.assert_close(y[:, :t + 1], y2[:, :t + 1])
    if t + 1 < 12:  # the change is visible later on, so the test can fail
        assert not torch.allclose(y[:, t + 1:], y2[:, t + 1:])


def test_tacn_reads_its_whole_receptive_field_and_no_further():
    m = _tacn(layers=2, kernel_size=2)  # receptive field 1 + 1 * (1 + 2) = 4
    x = torch.randn(1, 10, 6)
    lengths = torch.tensor([10])
    base = m(x, lengths)[0, 9]
    for s, seen in ((6, True), (5, False)):  # 9 - 3 = 6 is the oldest step read
        x2 = x.clone()
        x2[0, s] += 3.0
        changed = not torch.allclose(m(x2, lengths)[0, 9], base)
        assert changed == seen, s


def test_tap_attention_rows_sum_to_one_and_skip_missing_taps():
    torch.manual_seed(3)
    layer = TapAttentionLayer(channels=8, kernel_size=3, dilation=2, heads=2, dropout=0.0)
    x = torch.randn(2, 8, 7)
    mask = torch.ones(2, 1, 7)
    _, attn = layer(x, mask)  # (B, T, H, k, k)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 7, 2, 3))
    # step 1 with dilation 2: taps at -3 and -1 do not exist; step 2: only -2 is missing
    assert torch.all(attn[:, 1, :, :, :2] == 0)
    assert torch.all(attn[:, 2, :, :, 0] == 0) and torch.all(attn[:, 2, :, :, 1:].sum(-1) > 0.99)
    assert torch.all(attn[:, 4:] > 0)  # every tap exists: all get weight


def test_heads_must_divide_channels():
    with pytest.raises(ValueError, match="divisible"):
        TapAttentionLayer(channels=10, kernel_size=3, dilation=1, heads=4, dropout=0.0)

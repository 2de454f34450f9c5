"""Each loss against an explicit formula written as loops over the batch, values and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from dermlib.train.losses import MultimodalLoss, cosine_loss, l1_loss, nt_xent
from dermlib.train.model import ModelOutput


def nt_xent_reference(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """SimCLR's formula, one anchor at a time: -log exp(s_ij/t) / sum_{k != i} exp(s_ik/t), mean over 2N anchors."""
    views = [x / x.norm() for x in list(a) + list(b)]
    n2 = len(views)
    total = 0.0
    for i in range(n2):
        j = (i + n2 // 2) % n2
        denom = sum(torch.exp(torch.dot(views[i], views[k]) / t) for k in range(n2) if k != i)
        total = total - torch.log(torch.exp(torch.dot(views[i], views[j]) / t) / denom)
    return total / n2


@pytest.mark.parametrize("n", [1, 2, 5])
def test_nt_xent_matches_loop_formula_values_and_gradients(n: int) -> None:
    g = torch.Generator().manual_seed(n)
    a = torch.randn(n, 4, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(n, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = 0.5  # a mild temperature keeps the float64 reference far from overflow
    got, want = nt_xent(a, b, t), nt_xent_reference(a, b, t)
    # nt_xent computes in float32 (bf16 safety); compare at float32 precision
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-6)
    ga = torch.autograd.grad(got, (a, b))
    wa = torch.autograd.grad(want, (a, b))
    for x, y in zip(ga, wa):
        torch.testing.assert_close(x.double(), y, rtol=1e-4, atol=1e-6)
    if n == 1:
        assert got.item() == 0.0  # a single pair has no negatives


def test_nt_xent_known_value_and_perfect_alignment() -> None:
    # two orthogonal pairs, each aligned with its partner: every anchor sees 1 positive (cos 1) and 2 negatives (cos 0)
    a = torch.eye(2)
    t = 0.5
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * math.exp(0)))
    assert nt_xent(a, a.clone(), t).item() == pytest.approx(expected, rel=1e-6)
    # swapping partners makes it much worse
    assert nt_xent(a, a.flip(0), t).item() > 1.5


def test_nt_xent_is_bf16_stable_and_temperature_matters() -> None:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(64, 128, generator=g), torch.randn(64, 128, generator=g)
    full = nt_xent(a, b, 0.07)
    half = nt_xent(a.bfloat16(), b.bfloat16(), 0.07)
    assert torch.isfinite(half) and half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=2e-2)
    assert nt_xent(a, b, 1.0).item() != pytest.approx(full.item(), rel=1e-3)


def test_nt_xent_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        nt_xent(torch.zeros(3, 4), torch.zeros(2, 4))


def test_cosine_and_l1_match_formulas_with_gradients() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, 5, generator=g, dtype=torch.float64, requires_grad=True)
    cos_ref = sum(1 - torch.dot(a[i], b[i]) / (a[i].norm() * b[i].norm()) for i in range(6)) / 6
    l1_ref = sum(sum(abs(a[i, d] - b[i, d]) for d in range(5)) / 5 for i in range(6)) / 6
    for fn, ref in ((cosine_loss, cos_ref), (l1_loss, l1_ref)):
        got = fn(a, b)
        assert got.item() == pytest.approx(ref.item(), rel=1e-6)
        for x, y in zip(torch.autograd.grad(got, (a, b)), torch.autograd.grad(ref, (a, b))):
            torch.testing.assert_close(x.double(), y, rtol=1e-4, atol=1e-6)
    assert cosine_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_loss(a, -a).item() == pytest.approx(2.0, abs=1e-6)
    assert l1_loss(a, a + 0.5).item() == pytest.approx(0.5, abs=1e-6)


def _output(n: int = 6, d: int = 8, c: int = 4, seed: int = 0) -> tuple[ModelOutput, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = ModelOutput(image_emb=torch.randn(n, d, generator=g), image_logits=torch.randn(n, c, generator=g),
                      text_emb=torch.randn(n, d, generator=g), text_logits=torch.randn(n, c, generator=g))
    return out, torch.randint(0, c, (n,), generator=g)


def test_multimodal_loss_is_the_weighted_sum_and_weight_zero_switches_off() -> None:
    out, y = _output()
    ce = torch.nn.functional.cross_entropy
    parts = {"ce_image": ce(out.image_logits, y), "ce_text": ce(out.text_logits, y),
             "l1": l1_loss(out.image_emb, out.text_emb), "cosine": cosine_loss(out.image_emb, out.text_emb),
             "nt_xent": nt_xent(out.image_emb, out.text_emb, 0.1)}
    weights = {"ce_image": 1.0, "ce_text": 0.5, "l1": 2.0, "cosine": 0.0, "nt_xent": 3.0}
    total, terms = MultimodalLoss(weights, temperature=0.1)(out, y)
    expected = sum(w * parts[k] for k, w in weights.items())
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    for k in ("ce_image", "ce_text", "l1", "cosine", "nt_xent"):
        assert terms[k].item() == pytest.approx(parts[k].item(), rel=1e-6)
    only_nt, _ = MultimodalLoss({"ce_image": 0, "ce_text": 0, "l1": 0, "cosine": 0, "nt_xent": 1}, 0.1)(out, y)
    assert only_nt.item() == pytest.approx(parts["nt_xent"].item(), rel=1e-6)


def test_multimodal_loss_skips_rows_without_notes_and_image_only() -> None:
    out, y = _output()
    mask = torch.tensor([True, False, True, True, False, True])
    total, terms = MultimodalLoss(temperature=0.1)(out, y, mask)
    assert terms["ce_text"].item() == pytest.approx(
        torch.nn.functional.cross_entropy(out.text_logits[mask], y[mask]).item(), rel=1e-6)
    assert terms["nt_xent"].item() == pytest.approx(
        nt_xent(out.image_emb[mask], out.text_emb[mask], 0.1).item(), rel=1e-6)
    assert terms["ce_image"].item() == pytest.approx(
        torch.nn.functional.cross_entropy(out.image_logits, y).item(), rel=1e-6)  # all rows
    none = torch.zeros(6, dtype=torch.bool)
    total, terms = MultimodalLoss()(out, y, none)
    assert terms["l1"].item() == 0.0 and total.item() == pytest.approx(terms["ce_image"].item())
    img_only = ModelOutput(image_emb=out.image_emb, image_logits=out.image_logits)
    total, terms = MultimodalLoss()(img_only, y)
    assert set(terms) == {"ce_image"}
    with pytest.raises(ValueError, match="unknown loss terms"):
        MultimodalLoss({"mse": 1.0})

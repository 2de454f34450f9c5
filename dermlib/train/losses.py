"""Training losses: cross-entropy on each branch plus three image-text alignment terms (L1, cosine, NT-Xent).

Each function is a scalar mean over the batch, works for any batch size, and computes in float32 whatever the
input dtype (bf16 autocast-safe). `MultimodalLoss` weights the terms; a weight of 0 switches a term off, so the
loss ablations of the paper (NT-Xent only, L1 + cosine only, all) are config changes.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dermlib.train.model import ModelOutput

TERMS = ("ce_image", "ce_text", "l1", "cosine", "nt_xent")


def nt_xent(z_img: torch.Tensor, z_txt: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """SimCLR NT-Xent over the 2N views: each of the 2N embeddings must pick its pair among the other 2N-1.

    Embeddings are L2-normalised; the cosine logits are divided by `temperature`; the result is the mean
    cross-entropy over all 2N anchors. N = 1 has no negatives and gives 0.
    """
    if z_img.shape != z_txt.shape or z_img.ndim != 2:
        raise ValueError(f"nt_xent needs two (N, D) tensors of one shape, got {tuple(z_img.shape)} and "
                         f"{tuple(z_txt.shape)}")
    n = z_img.shape[0]
    z = F.normalize(torch.cat([z_img, z_txt]).float(), dim=1)
    logits = (z @ z.T) / temperature
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pairs, float("-inf"))  # an anchor is never its own candidate
    partner = torch.arange(2 * n, device=z.device).roll(n)  # view i pairs with i+N (and i+N with i)
    return F.cross_entropy(logits, partner)


def cosine_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the cosine distance 1 - cos(a_i, b_i)."""
    return (1.0 - F.cosine_similarity(a.float(), b.float(), dim=1, eps=1e-8)).mean()


def l1_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the per-pair mean absolute difference (1/D) * sum_d |a_id - b_id|."""
    return (a.float() - b.float()).abs().mean(dim=1).mean()


Gather = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class MultimodalLoss(nn.Module):
    """Weighted sum of CE(image), CE(text), L1, cosine and NT-Xent; returns (total, {term: detached value})."""

    def __init__(self, weights: dict[str, float] | None = None, temperature: float = 0.07,
                 gather: Gather | None = None) -> None:
        """`weights` default to 1 for every term; `gather` (multi-GPU) turns local pairs into the global batch."""
        super().__init__()
        unknown = set(weights or {}) - set(TERMS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; the terms are {TERMS}")
        self.weights = {t: float((weights or {}).get(t, 1.0)) for t in TERMS}
        self.temperature = temperature
        self.gather = gather

    def forward(self, out: ModelOutput, labels: torch.Tensor,
                text_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Rows where `text_mask` is False (no usable note) only enter CE(image); no text output: image CE only.

        `text_mask=None` means every row has a note: then nothing is indexed and the step needs no device sync.
        """
        terms: dict[str, torch.Tensor] = {"ce_image": F.cross_entropy(out.image_logits.float(), labels)}
        if out.text_emb is not None:
            if text_mask is None:
                img, txt, logits, y, has = out.image_emb, out.text_emb, out.text_logits, labels, True
            else:
                img, txt, logits, y = (t[text_mask] for t in (out.image_emb, out.text_emb, out.text_logits, labels))
                has = bool(text_mask.any())
            zero = out.image_emb.float().sum() * 0.0  # keeps the graph (and DDP) happy when no row has a note
            terms["ce_text"] = F.cross_entropy(logits.float(), y) if has else zero
            terms["l1"] = l1_loss(img, txt) if has else zero
            terms["cosine"] = cosine_loss(img, txt) if has else zero
            if self.weights["nt_xent"] and self.gather is not None:  # every rank gathers, whatever its mask
                mask = torch.ones_like(labels, dtype=torch.bool) if text_mask is None else text_mask
                g_img, g_txt, g_mask = self.gather(out.image_emb, out.text_emb, mask)
                terms["nt_xent"] = (nt_xent(g_img[g_mask], g_txt[g_mask], self.temperature)
                                    if bool(g_mask.any()) else zero)
            elif self.weights["nt_xent"]:
                terms["nt_xent"] = nt_xent(img, txt, self.temperature) if has else zero
        total = sum(self.weights[t] * v for t, v in terms.items() if self.weights[t])
        if not isinstance(total, torch.Tensor):  # every active weight is 0
            raise ValueError("all loss weights that apply to this model are 0: nothing to train")
        return total, {t: v.detach() for t, v in terms.items()}

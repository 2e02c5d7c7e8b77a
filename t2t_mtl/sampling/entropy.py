"""Prediction entropies used by uncertainty-based sampling (CA-MTL), computed from torch logits."""
from __future__ import annotations

import math
from typing import Optional

import torch


def classification_entropy(choice_scores: torch.Tensor, choice_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Entropy in nats of softmax over answer-choice scores [N, C] -> [N].

    `choice_scores` are per-choice log-likelihoods (or logits); `choice_mask` [N, C] (True = real choice)
    excludes padding choices when examples have different numbers of choices.
    """
    scores = choice_scores.float()
    if choice_mask is not None:
        scores = scores.masked_fill(~choice_mask.bool(), float("-inf"))
    return softmax_entropy(scores)


def softmax_entropy(scores: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax over the last dimension; an entry of -inf has p = 0 and adds 0 (not 0·-inf)."""
    log_p = torch.log_softmax(scores, dim=-1)
    p = log_p.exp()
    return -(p * torch.where(p > 0, log_p, 0.0)).sum(-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of every next-token distribution: [..., V] -> [...] (float32); -inf logits (blocked
    tokens) count as probability 0."""
    return softmax_entropy(logits.float())


def generation_entropy(logits: torch.Tensor, token_mask: Optional[torch.Tensor] = None, *,
                       normalise: bool = True) -> torch.Tensor:
    """Mean per-token entropy of next-token distributions [N, L, V] -> [N], over tokens where mask is True.

    `token_mask` is typically ``labels != -100``. With `normalise`, divided by log V (the entropy of the
    uniform distribution over the vocabulary), giving values in [0, 1].
    """
    entropy = token_entropy(logits)
    if token_mask is None:
        token_mask = torch.ones(entropy.shape, dtype=torch.bool, device=logits.device)
    mask = token_mask.to(entropy.dtype)
    mean = (entropy * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)
    return mean / math.log(logits.shape[-1]) if normalise else mean

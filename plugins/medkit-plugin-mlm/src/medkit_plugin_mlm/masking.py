"""Whole-word masking of word-piece ids with the 80/10/10 replacement rule."""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100
#: ``WordMasking.mode`` values.
KEEP_UNMASKED, REPLACED_MASK, REPLACED_RANDOM, KEPT_ORIGINAL = 0, 1, 2, 3


@dataclass
class WordMasking:
    """The corrupted inputs and the targets of one batch."""

    inputs: torch.Tensor  # [B, L] ids fed to the encoder
    labels: torch.Tensor  # [B, L] original id where a prediction is asked, IGNORE_INDEX elsewhere
    mode: torch.Tensor  # [B, L] KEEP_UNMASKED / REPLACED_MASK / REPLACED_RANDOM / KEPT_ORIGINAL

    @property
    def selected(self) -> torch.Tensor:
        """``[B, L]`` bool, True where the loss is computed."""
        return self.labels != IGNORE_INDEX


def _choose_words(order: list[int], lengths: list[int], quota: int) -> list[int]:
    """Greedy whole-word pick in random ``order``: a word is taken if it still fits in ``quota``
    pieces (as HF's ``DataCollatorForWholeWordMask``); the first word is taken when none fits."""
    chosen: list[int] = []
    total = 0
    for w in order:
        if total >= quota:
            break
        if total + lengths[w] > quota:
            continue
        chosen.append(w)
        total += lengths[w]
    return chosen or order[:1]


def whole_word_mask(ids: torch.Tensor, word_ids: torch.Tensor, *, mask_token_id: int,
                    random_ids: torch.Tensor, mlm_probability: float = 0.15, mask_prob: float = 0.8,
                    random_prob: float = 0.1, generator: torch.Generator | None = None) -> WordMasking:
    """Mask whole words of every sample and apply the 80/10/10 rule per selected piece.

    Per sample, the quota is ``max(1, round(p · n))`` pieces where ``n`` counts its real
    (non-special, non-padding) pieces — not the padded length, which made MedCoSS mask short reports
    more heavily. Words are visited in a random order and taken whole while they fit, so
    at least one word is masked in every sample that has one, and special tokens or padding never are.

    Args:
        ids: ``[B, L]`` word-piece ids.
        word_ids: ``[B, L]`` word index of each piece (pieces of a word share it; ``-1`` for special
            tokens and padding), e.g. from ``text_1d``'s ``word_ids``.
        mask_token_id: id of ``[MASK]``.
        random_ids: ``[K]`` ids a "random" replacement is drawn from (non-special ids).
        mlm_probability: fraction of real pieces to predict.
        mask_prob / random_prob: share of selected pieces replaced by ``[MASK]`` / a random id;
            the rest keep their id.
        generator: every random draw comes from it (same generator state → same masking).
    """
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
    if mask_prob < 0 or random_prob < 0 or mask_prob + random_prob > 1.0:
        raise ValueError(f"mask_prob {mask_prob} and random_prob {random_prob} must be >= 0 with sum <= 1")
    batch, length = ids.shape
    rng_device = generator.device if generator is not None else torch.device("cpu")
    words = word_ids.detach().cpu()
    num_words = (words.max(dim=1).values + 1).clamp_min(0)  # [B]
    noise = torch.rand(batch, length, generator=generator, device=rng_device).cpu()  # word visiting order
    selected = torch.zeros(batch, length, dtype=torch.bool)
    for b in range(batch):
        n_words = int(num_words[b])
        if n_words == 0:
            continue
        real = words[b] >= 0
        lengths = torch.bincount(words[b][real], minlength=n_words).tolist()
        order = [w for w in torch.argsort(noise[b, :n_words]).tolist() if lengths[w] > 0]
        quota = max(1, int(round(int(real.sum()) * mlm_probability)))
        chosen = _choose_words(order, lengths, quota)
        selected[b] = real & torch.isin(words[b], torch.tensor(chosen, dtype=words.dtype))
    action = torch.rand(batch, length, generator=generator, device=rng_device).cpu()
    pick = torch.randint(len(random_ids), (batch, length), generator=generator, device=rng_device).cpu()
    mode = torch.full((batch, length), KEEP_UNMASKED, dtype=torch.int8)
    mode[selected & (action < mask_prob)] = REPLACED_MASK
    mode[selected & (action >= mask_prob) & (action < mask_prob + random_prob)] = REPLACED_RANDOM
    mode[selected & (action >= mask_prob + random_prob)] = KEPT_ORIGINAL
    mode = mode.to(ids.device)
    inputs = ids.clone()
    inputs[mode == REPLACED_MASK] = mask_token_id
    random_tokens = random_ids.to(ids.device)[pick.to(ids.device)].to(ids.dtype)
    inputs = torch.where(mode == REPLACED_RANDOM, random_tokens, inputs)
    labels = torch.where(selected.to(ids.device), ids, torch.full_like(ids, IGNORE_INDEX))
    return WordMasking(inputs=inputs, labels=labels, mode=mode)

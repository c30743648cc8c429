"""The sampled softmax bilm-tf trains with: TensorFlow's `sampled_softmax_loss` with its default sampler.

Candidates: `num_sampled` distinct word ids drawn from the log-uniform (Zipfian) distribution
P(k) = log((k + 2) / (k + 1)) / log(V + 1) by repeated draws with duplicates rejected
(`LogUniformCandidateSampler(unique=True)`); this assumes ids sorted by decreasing frequency. One candidate set
per call is shared by every position. Each logit is corrected by the log of its expected count in the sample
(`subtract_log_q`): p·n when no draw was rejected, else 1 − (1 − p)^tries; a candidate equal to a position's
target is removed for that position (`remove_accidental_hits`). The loss is the cross-entropy of the target
against [target; candidates].
"""
import math

import torch
import torch.nn.functional as F


def log_uniform_probabilities(ids, vocab_size):
    """P(k) of the log-uniform sampler for each id in `ids` (float64)."""
    ids = ids.to(torch.float64)
    return torch.log((ids + 2) / (ids + 1)) / math.log1p(vocab_size)


def sample_log_uniform_candidates(vocab_size, num_sampled, generator=None, device=None):
    """`num_sampled` distinct ids from the log-uniform sampler, and the number of draws it took (duplicates incl.).

    A draw is k = floor(exp(u · log(V + 1))) − 1, u uniform in [0, 1), as TensorFlow's sampler computes it.
    """
    if not 1 <= num_sampled < vocab_size:
        raise ValueError(f"Cannot draw {num_sampled} distinct candidates from a vocabulary of {vocab_size}: "
                         "use fewer negative samples, or the full softmax.")
    seen = torch.zeros(vocab_size, dtype=torch.bool, device=device)
    chosen, tries, remaining = [], 0, num_sampled
    while remaining > 0:
        uniform = torch.rand(2 * remaining + 64, dtype=torch.float64, generator=generator, device=device)
        draws = torch.exp(uniform * math.log1p(vocab_size)).long() - 1
        # A draw is new if its id was not seen before, in earlier chunks or earlier in this one.
        distinct, inverse = torch.unique(draws, return_inverse=True)
        order = torch.arange(len(draws), device=device)
        first = torch.full_like(distinct, len(draws)).scatter_reduce(0, inverse, order, "amin")
        new = (first[inverse] == order) & ~seen[draws]
        found = new.cumsum(0)
        if found[-1] >= remaining:
            last = int(torch.searchsorted(found, remaining))  # the draw that completes the sample
            new, draws = new[: last + 1], draws[: last + 1]
        chosen.append(draws[new])
        seen[draws[new]] = True
        tries += len(draws)
        remaining -= int(new.sum())
    return torch.cat(chosen), tries


def expected_counts(ids, num_sampled, num_tries, vocab_size):
    """How often each id is expected in a sample that took `num_tries` draws (TensorFlow's ExpectedCountHelper)."""
    probabilities = log_uniform_probabilities(ids, vocab_size)
    if num_tries == num_sampled:
        return probabilities * num_sampled
    return -torch.expm1(num_tries * torch.log1p(-probabilities))


def sampled_softmax_loss(hidden, targets, weight, bias, num_sampled, generator=None):
    """Per-position loss [N] for `hidden` [N, P] and `targets` [N] with softmax `weight` [V, P], `bias` [V]."""
    vocab_size = weight.shape[0]
    candidates, tries = sample_log_uniform_candidates(vocab_size, num_sampled, generator, hidden.device)
    target_logits = (hidden * weight[targets]).sum(-1) + bias[targets]
    target_logits = target_logits - torch.log(expected_counts(targets, num_sampled, tries, vocab_size)).to(hidden.dtype)
    candidate_logits = hidden @ weight[candidates].T + bias[candidates]
    candidate_logits = candidate_logits - torch.log(
        expected_counts(candidates, num_sampled, tries, vocab_size)).to(hidden.dtype)
    accidental_hits = candidates[None, :] == targets[:, None]
    candidate_logits = candidate_logits.masked_fill(accidental_hits, torch.finfo(hidden.dtype).min)
    logits = torch.cat([target_logits[:, None], candidate_logits], dim=1)
    return -F.log_softmax(logits, dim=-1)[:, 0]

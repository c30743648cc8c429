"""GPT's causal-LM data: documents tokenised, joined with end-of-text between them, cut into blocks.

Every token of the corpus lands in exactly one block of `seq_len` tokens, in corpus order (GPT-2
trains on such contiguous chunks; nanoGPT on the same flat stream). Only the final partial block is
dropped. `labels` are the input ids themselves: the model shifts them.
"""
from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset, IterableDataset


def pack_blocks(documents: Dataset, seq_len: int) -> Dataset:
    """The whole token stream of `documents` cut into rows of `seq_len` ids."""
    stream = np.concatenate([np.asarray(ids, dtype=np.int64) for ids in documents["input_ids"]] or [np.zeros(0, dtype=np.int64)])
    n_blocks = len(stream) // seq_len
    return Dataset.from_dict({"input_ids": stream[: n_blocks * seq_len].reshape(n_blocks, seq_len)})


def stream_blocks(documents: IterableDataset, seq_len: int) -> IterableDataset:
    """`pack_blocks` for a stream: blocks are produced as documents arrive, never holding the corpus."""
    return IterableDataset.from_generator(_blocks, gen_kwargs={"documents": documents, "seq_len": seq_len})


def _blocks(documents, seq_len):
    pending: list[int] = []
    for document in documents:
        pending.extend(document["input_ids"])
        start = 0
        while len(pending) - start >= seq_len:
            yield {"input_ids": pending[start : start + seq_len]}
            start += seq_len
        del pending[:start]


def collate_blocks(rows: list[dict]) -> dict[str, torch.Tensor]:
    """Rows of equal length stacked; `labels` = `input_ids` (no padding anywhere, so no attention mask)."""
    input_ids = torch.tensor([list(row["input_ids"]) for row in rows], dtype=torch.long)
    return {"input_ids": input_ids, "labels": input_ids.clone()}


def count_block_tokens(batch: dict[str, torch.Tensor]) -> int:
    return batch["input_ids"].numel()


def token_losses(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per row: [summed next-token NLL, number of predicted tokens], float64."""
    logits = model(input_ids=batch["input_ids"]).logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=-100, reduction="none")
    return torch.stack([nll.sum(1).double(), (targets != -100).sum(1).double()], dim=1)


def summarise(totals: torch.Tensor) -> dict[str, float]:
    loss = float(totals[0] / totals[1])
    return {"loss": loss, "perplexity": float(np.exp(loss)), "tokens": float(totals[1])}

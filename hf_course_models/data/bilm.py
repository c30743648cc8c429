"""ELMo's bidirectional-LM data: one row per sentence, `<S> … </S>`, word ids and character ids.

bilm-tf wraps every sentence in `<S> … </S>` and trains the forward LM to predict each next word and
the backward LM each previous one; HfcmElmoTokenizer already produces exactly those rows, so the
rows here are its own output. Batches are right-padded (the backward LSTM reads real tokens only).
"""
from __future__ import annotations

import math

import torch

from ..modeling.elmo.modeling_hfcm_elmo import shifted_targets


def token_rows(lines: list[str], tokenizer, seq_len: int) -> dict:
    """Every sentence as rows of at most `seq_len` tokens (a longer one goes on in the next row, again `<S> … </S>`)."""
    if not lines:
        return {"input_ids": [], "char_ids": []}
    encoded = tokenizer(lines, truncation=True, max_length=seq_len, return_overflowing_tokens=True,
                        return_attention_mask=False)
    return {"input_ids": encoded["input_ids"], "char_ids": encoded["char_ids"]}


class DataCollatorForBidirectionalLM:
    """Pads `input_ids` and `char_ids` on the right; `labels` are the word ids, -100 on padding."""

    def __init__(self, tokenizer):
        if "char_ids" not in getattr(tokenizer, "model_input_names", ()):
            raise ValueError(
                f"ELMo needs character ids, which {type(tokenizer).__name__} does not give; use HfcmElmoTokenizer "
                "(train_elmo_tokenizer or AutoTokenizer on an ELMo tokenizer directory)."
            )
        self.tokenizer = tokenizer

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        features = [{"input_ids": list(row["input_ids"]), "char_ids": [list(c) for c in row["char_ids"]]}
                    for row in rows]
        batch = dict(self.tokenizer.pad(features, padding=True, padding_side="right", return_tensors="pt"))
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        return batch


def direction_losses(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per row: [forward NLL sum, forward targets, backward NLL sum, backward targets], float64 (full softmax)."""
    outputs = model(char_ids=batch["char_ids"], attention_mask=batch["attention_mask"])
    mask = batch["attention_mask"].bool()
    columns = []
    for logits, shift in ((outputs.forward_logits, 1), (outputs.backward_logits, -1)):
        targets = shifted_targets(batch["labels"], mask, shift)
        nll = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=-100,
                                                reduction="none")
        columns += [nll.sum(1).double(), (targets != -100).sum(1).double()]
    return torch.stack(columns, dim=1)


def summarise(totals: torch.Tensor) -> dict[str, float]:
    forward_loss, backward_loss = float(totals[0] / totals[1]), float(totals[2] / totals[3])
    return {
        "loss": 0.5 * (forward_loss + backward_loss),
        "forward_loss": forward_loss,
        "backward_loss": backward_loss,
        "forward_perplexity": math.exp(forward_loss),
        "backward_perplexity": math.exp(backward_loss),
    }

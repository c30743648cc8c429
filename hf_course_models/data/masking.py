"""BERT's masked-language-model collator: 15% of the tokens chosen, then 80% [MASK], 10% random, 10% kept.

With `whole_word_mask=True` all pieces of a word are chosen together: a WordPiece `##` continuation
belongs to the token before it, and a run of Chinese characters (which BERT's tokenizer splits one
character per token) is cut into words by a segmenter, jieba by default.
"""
from __future__ import annotations

import hashlib
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence

import torch
from torch.utils.data import get_worker_info

_CJK_RANGES = (  # the ideograph blocks BERT's basic tokenizer splits into single characters
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)
_SEGMENT_CACHE_SIZE = 100_000


def _is_cjk_character(token: str) -> bool:
    return len(token) == 1 and any(low <= ord(token) <= high for low, high in _CJK_RANGES)


def _as_list(values) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _example_generator(seed: int, example_id: int) -> torch.Generator:
    """A generator that is a pure function of (seed, example_id), the same in every process and run."""
    digest = hashlib.blake2b(f"{seed}/{example_id}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") >> 1)


def _jieba_lcut() -> Callable[[str], list[str]]:
    import jieba  # imported only for whole-word masking: loading its dictionary takes a second

    jieba.setLogLevel(logging.WARNING)
    return jieba.lcut


class DataCollatorForBertPretraining:
    """Pads a batch (right, with the tokenizer's pad id) and masks it afresh on every call.

    A plain callable, usable as a DataLoader `collate_fn` or a Trainer `data_collator`. Features are
    dicts with `input_ids` and optionally `token_type_ids`, `attention_mask`, `next_sentence_label`;
    other keys are ignored. Returns `input_ids`, `attention_mask`, `token_type_ids`, `labels` (the
    original id where a token was chosen, -100 elsewhere) and `next_sentence_label` when given.

    Features with an `example_id` (all of the batch or none) are masked from a generator seeded by
    (`seed`, example_id): the same example gets the same masks in any batch, order or process (static
    masks, as BERT's create_pretraining_data; give copies new ids for more variety). Without one, masks
    come from one generator per process and differ on every call.

    Never chosen: padding and every special token of the tokenizer ([CLS], [SEP], [PAD], [UNK],
    [MASK] and added special tokens). Random replacements are drawn uniformly from the other ids.
    Selection is a Bernoulli draw per word (per token without whole-word masking), so exactly
    `mlm_probability` of the tokens in expectation at any length, where create_pretraining_data's
    round(n * 0.15) per sequence drifts on short ones. The 80/10/10 decision is also made per word,
    so a word chosen for [MASK] shows none of its pieces (Google's script decides per piece).
    """

    def __init__(
        self,
        tokenizer,
        mlm_probability: float = 0.15,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
        whole_word_mask: bool = False,
        chinese_segmenter: str | Callable[[str], list[str]] | None = "jieba",
        pad_to_multiple_of: int | None = None,
        seed: int | None = None,
    ):
        if not 0 < mlm_probability < 1:
            raise ValueError(f"mlm_probability={mlm_probability} must lie in (0, 1); BERT uses 0.15.")
        if mask_replace_prob < 0 or random_replace_prob < 0 or mask_replace_prob + random_replace_prob > 1:
            raise ValueError(
                f"mask_replace_prob={mask_replace_prob} and random_replace_prob={random_replace_prob} must "
                "be non-negative and sum to at most 1 (the rest is left unchanged); BERT uses 0.8 and 0.1."
            )
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ValueError(f"pad_to_multiple_of={pad_to_multiple_of} must be a positive integer or None.")
        if not (chinese_segmenter is None or callable(chinese_segmenter) or chinese_segmenter == "jieba"):
            raise ValueError(
                f"chinese_segmenter={chinese_segmenter!r}: use 'jieba', a callable str -> list[str], "
                "or None (every Chinese character its own word)."
            )
        for name in ("mask", "pad"):
            if getattr(tokenizer, f"{name}_token_id", None) is None:
                raise ValueError(
                    f"The tokenizer has no {name} token, which masked-LM pre-training needs. Add one with "
                    f"`tokenizer.add_special_tokens({{'{name}_token': '[{name.upper()}]'}})` and resize the "
                    "model's embeddings (`model.resize_token_embeddings(len(tokenizer))`)."
                )
        self.tokenizer = tokenizer
        self.mlm_probability = mlm_probability
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.whole_word_mask = whole_word_mask
        self.pad_to_multiple_of = pad_to_multiple_of
        self.seed = seed

        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_ids)
        special |= {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
        self._special_ids = torch.tensor(sorted(special), dtype=torch.long)
        self._random_ids = torch.tensor(sorted(set(vocab.values()) - special), dtype=torch.long)
        if len(self._random_ids) == 0:
            raise ValueError("The tokenizer's vocabulary holds only special tokens: no random replacements.")
        pieces = sorted(i for token, i in vocab.items() if token.startswith("##") and len(token) > 2)
        self._piece_ids = torch.tensor(pieces, dtype=torch.long)
        self._chinese_chars = {i: token for token, i in vocab.items() if _is_cjk_character(token)}
        use_jieba = whole_word_mask and chinese_segmenter == "jieba"
        self._segmenter = _jieba_lcut() if use_jieba else chinese_segmenter
        self._segment_cache: dict[str, list[str]] = {}
        self._generator: torch.Generator | None = None
        self._generator_key = None

    def __call__(self, features: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        batch = self._pad(features)
        input_ids = batch["input_ids"]
        eligible = batch["attention_mask"].bool() & ~torch.isin(input_ids, self._special_ids)
        starts = eligible & ~self._continuations(input_ids, eligible) if self.whole_word_mask else eligible
        batch["input_ids"], batch["labels"] = self._mask(input_ids, eligible, starts, self._generators(features))
        return batch

    def _generators(self, features: Sequence[Mapping]) -> list[torch.Generator]:
        """One generator per row: the process's own, or with `example_id`s one seeded by (seed, example_id),
        so an example's masks do not depend on the batch, its order or the process that collates it."""
        example_ids = [feature.get("example_id") for feature in features]
        if all(example_id is None for example_id in example_ids):
            return [self._rng()] * len(features)
        if any(example_id is None for example_id in example_ids):
            raise ValueError("`example_id` is given for some features of the batch but not all.")
        if self.seed is None:
            raise ValueError("The features carry `example_id`s, whose masks are drawn from `seed`; pass seed=<int>.")
        return [_example_generator(self.seed, int(example_id)) for example_id in example_ids]

    def _pad(self, features: Sequence[Mapping]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("The collator got an empty batch; give it at least one feature.")
        if any("input_ids" not in feature for feature in features):
            raise ValueError("Every feature needs `input_ids`, as the tokenizer and create_nsp_examples give")
        width = max(len(feature["input_ids"]) for feature in features)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of

        def padded(key: str, pad: int, fill: int | None = None) -> torch.Tensor:
            """`key` of every feature (`fill` for a feature without it), right-padded with `pad`."""
            rows = [_as_list(f[key]) if key in f else [fill] * len(f["input_ids"]) for f in features]
            return torch.tensor([row + [pad] * (width - len(row)) for row in rows], dtype=torch.long)

        input_ids = padded("input_ids", self.tokenizer.pad_token_id)
        attention_mask = padded("attention_mask", 0, fill=1)
        token_type_ids = padded("token_type_ids", 0, fill=0)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        nsp_labels = [feature.get("next_sentence_label") for feature in features]
        if any(label is not None for label in nsp_labels):
            if any(label is None for label in nsp_labels):
                raise ValueError("`next_sentence_label` is given for some features of the batch but not all.")
            batch["next_sentence_label"] = torch.tensor([int(label) for label in nsp_labels])
        return batch

    def _continuations(self, input_ids: torch.Tensor, eligible: torch.Tensor) -> torch.Tensor:
        """True where a token continues the word of the token before it."""
        joins = torch.isin(input_ids, self._piece_ids) & eligible
        joins[:, 1:] &= eligible[:, :-1]
        joins[:, 0] = False
        if self._segmenter is None:
            return joins
        joins = joins.tolist()
        for ids, ok, row in zip(input_ids.tolist(), eligible.tolist(), joins):
            runs = itertools.groupby(range(len(ids)), key=lambda p: ok[p] and ids[p] in self._chinese_chars)
            for is_chinese, run in runs:
                if not is_chinese:
                    continue
                run = list(run)
                start = 0
                for word in self._words("".join(self._chinese_chars[ids[p]] for p in run)):
                    for p in run[start + 1 : start + len(word)]:
                        row[p] = True
                    start += len(word)
        return torch.tensor(joins, dtype=torch.bool)

    def _words(self, text: str) -> list[str]:
        """The segmenter's words for a run of Chinese characters; cached, as the text returns every epoch."""
        words = self._segment_cache.get(text)
        if words is None:
            words = list(self._segmenter(text))
            if "".join(words) != text:
                raise ValueError(
                    f"The Chinese segmenter turned {text!r} into {words!r}; it must split the text into "
                    "words without changing, dropping or adding characters."
                )
            if len(self._segment_cache) >= _SEGMENT_CACHE_SIZE:
                self._segment_cache.clear()
            self._segment_cache[text] = words
        return words

    def _mask(self, input_ids: torch.Tensor, eligible: torch.Tensor, starts: torch.Tensor,
              generators: list[torch.Generator]):
        """Choose words, then [MASK] / random / keep per chosen word; returns (masked ids, labels).

        Each row draws from its own generator, and only as many numbers as it has words and eligible
        tokens, so its masks do not depend on the padded width or on the other rows.
        """
        if not starts.any():
            return input_ids, torch.full_like(input_ids, -100)
        draws = [(torch.rand(n_words, generator=rng), torch.rand(n_words, generator=rng),
                  torch.randint(len(self._random_ids), (n_tokens,), generator=rng))
                 for rng, n_words, n_tokens in zip(generators, starts.sum(1).tolist(), eligible.sum(1).tolist())]
        chosen_draws, action_draws, pick_draws = (torch.cat(column) for column in zip(*draws))
        word = (starts.flatten().cumsum(0) - 1).clamp(min=0).view_as(input_ids)  # each token's word number
        selected = eligible & (chosen_draws < self.mlm_probability).take(word)
        action = action_draws.take(word)
        to_mask = selected & (action < self.mask_replace_prob)
        to_random = selected & ~to_mask & (action < self.mask_replace_prob + self.random_replace_prob)
        picks = torch.zeros_like(input_ids)
        picks[eligible] = pick_draws

        masked = input_ids.clone()
        masked[to_mask] = self.tokenizer.mask_token_id
        masked[to_random] = self._random_ids[picks[to_random]]
        return masked, torch.where(selected, input_ids, -100)

    def _rng(self) -> torch.Generator:
        """This process's generator, re-seeded in each DataLoader worker.

        Workers start from copies of this object, so without re-seeding they would all draw the same
        masks; DataLoader gives every worker a seed that differs per worker and per epoch.
        """
        worker = get_worker_info()
        key = None if worker is None else worker.seed
        if self._generator is None or key != self._generator_key:
            self._generator = torch.Generator()
            if key is not None:
                self._generator.manual_seed(hash((self.seed, key)) & 0xFFFF_FFFF_FFFF_FFFF)
            elif self.seed is not None:
                self._generator.manual_seed(self.seed)
            else:
                self._generator.seed()
            self._generator_key = key
        return self._generator

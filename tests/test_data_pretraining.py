"""build_pretraining_data: files through `datasets`, per-family rows checked exactly, masks as a pure function of
(seed, example), evaluation equal to a hand computation, bad input named."""
import csv
import importlib.resources
import json
import math

import accelerate
import pytest
import torch
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForPreTraining

import hf_course_models  # noqa: F401  (registers the Auto classes)
from hf_course_models.data.corpus import read_documents
from hf_course_models.data.masking import DataCollatorForBertPretraining
from hf_course_models.data.nsp import create_nsp_examples
from hf_course_models.data.pretraining import build_pretraining_data, load_text_files, sentences
from hf_course_models.modeling.elmo.modeling_hfcm_elmo import HfcmElmoForBidirectionalLM
from hf_course_models.tokenization.bpe import train_bpe_tokenizer
from hf_course_models.tokenization.elmo_vocab import train_elmo_tokenizer
from hf_course_models.tokenization.wordpiece import train_wordpiece_tokenizer

CORPORA = importlib.resources.files("hf_course_models") / "corpora"
FILES = [str(CORPORA / "sonnets.txt"), str(CORPORA / "tang300.txt")]
SEQ_LEN = 32


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: two OpenMP threads contend and run ~10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def accelerator():
    return accelerate.Accelerator(cpu=True)


@pytest.fixture(scope="module")
def documents():
    return read_documents(FILES)


@pytest.fixture(scope="module")
def bpe():
    return train_bpe_tokenizer(FILES, vocab_size=600)


@pytest.fixture(scope="module")
def wordpiece():
    return train_wordpiece_tokenizer(FILES, vocab_size=3000)


@pytest.fixture(scope="module")
def elmo_tokenizer():
    return train_elmo_tokenizer(FILES, vocab_size=1500)


@pytest.fixture(scope="module")
def gpt_data(bpe):
    return build_pretraining_data("gpt", bpe, FILES, SEQ_LEN, seed=0)


@pytest.fixture(scope="module")
def bert_data(wordpiece):
    return build_pretraining_data("bert", wordpiece, FILES, SEQ_LEN, seed=0, whole_word_masking=True)


@pytest.fixture(scope="module")
def elmo_data(elmo_tokenizer):
    return build_pretraining_data("elmo", elmo_tokenizer, FILES, SEQ_LEN, seed=0)


@pytest.fixture(scope="module")
def models(bpe, wordpiece, elmo_tokenizer):
    torch.manual_seed(0)
    eos = bpe.eos_token_id
    return {
        "gpt": AutoModelForCausalLM.from_config(AutoConfig.for_model(
            "hfcm_gpt", preset="tiny", vocab_size=len(bpe), bos_token_id=eos, eos_token_id=eos)),
        "bert": AutoModelForPreTraining.from_config(AutoConfig.for_model(
            "hfcm_bert", preset="tiny", vocab_size=len(wordpiece))),
        "elmo": HfcmElmoForBidirectionalLM(AutoConfig.for_model(
            "hfcm_elmo", preset="tiny", vocab_size=len(elmo_tokenizer))),
    }


def write_formats(directory, documents):
    """The same documents as .txt (blank line between documents), .jsonl and .csv (a 'text' column)."""
    texts = ["\n".join(document) for document in documents]
    (directory / "corpus.txt").write_text("\n\n".join(texts) + "\n", encoding="utf-8")
    (directory / "corpus.jsonl").write_text("".join(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n"
                                                    for i, t in enumerate(texts)), encoding="utf-8")
    with open(directory / "corpus.csv", "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "source"])
        writer.writerows([text, "test"] for text in texts)
    return [str(directory / name) for name in ("corpus.txt", "corpus.jsonl", "corpus.csv")]


def test_txt_jsonl_csv_and_streams_give_the_same_documents(tmp_path, documents):
    chosen = documents[:40] + documents[-40:]  # English and Chinese
    for path in write_formats(tmp_path, chosen):
        for streaming in (False, True):
            rows = load_text_files(path, streaming=streaming)
            assert rows.column_names == ["text"], path
            assert [sentences(row["text"]) for row in rows] == chosen, (path, streaming)
    both = load_text_files([tmp_path / "corpus.txt", tmp_path / "corpus.csv"])
    assert [sentences(text) for text in both["text"]] == chosen + chosen


def test_gpt_blocks_are_the_token_stream_with_eos_between_documents(gpt_data, bpe, documents):
    # the fixture held out 5% of the documents; rebuild with none to compare against the whole corpus
    data = build_pretraining_data("gpt", bpe, FILES, SEQ_LEN, validation_fraction=0, num_proc=2)
    stream = [token for document in documents
              for token in bpe("\n".join(document))["input_ids"] + [bpe.eos_token_id]]
    blocks = data.train_dataset["input_ids"]
    assert len(blocks) == len(stream) // SEQ_LEN and all(len(block) == SEQ_LEN for block in blocks)
    assert [token for block in blocks for token in block] == stream[: len(blocks) * SEQ_LEN]
    assert data.eval_dataset is None

    streamed = build_pretraining_data("gpt", bpe, FILES, SEQ_LEN, validation_fraction=0, streaming=True)
    assert [row["input_ids"] for row in streamed.train_dataset] == blocks

    batch = gpt_data.collator([gpt_data.train_dataset[i] for i in range(3)])
    assert torch.equal(batch["labels"], batch["input_ids"]) and batch["input_ids"].shape == (3, SEQ_LEN)
    assert gpt_data.count_tokens(batch) == 3 * SEQ_LEN
    held_out = len(gpt_data.train_dataset) + len(gpt_data.eval_dataset)
    assert len(blocks) - 2 <= held_out <= len(blocks)  # two block streams lose at most one partial block more


def test_elmo_rows_are_the_tokenizers_own_output(elmo_tokenizer, tmp_path):
    long_sentence = " ".join(["the", "rose", "of", "beauty"] * 12)  # 48 words: two rows at SEQ_LEN 32
    lines = ["Shall I compare thee to a summer's day?", long_sentence, "床前明月光，疑是地上霜。"]
    path = tmp_path / "elmo.txt"
    path.write_text(f"{lines[0]}\n{lines[1]}\n\n{lines[2]}\n", encoding="utf-8")
    data = build_pretraining_data("elmo", elmo_tokenizer, [path], SEQ_LEN, validation_fraction=0)
    expected = elmo_tokenizer(lines, truncation=True, max_length=SEQ_LEN, return_overflowing_tokens=True)
    assert expected["overflow_to_sample_mapping"] == [0, 1, 1, 2]
    assert data.train_dataset["input_ids"] == expected["input_ids"]
    assert data.train_dataset["char_ids"] == expected["char_ids"]
    assert all(ids[0] == elmo_tokenizer.bos_token_id and ids[-1] == elmo_tokenizer.eos_token_id
               for ids in data.train_dataset["input_ids"])

    batch = data.collator(list(data.train_dataset))
    padded = elmo_tokenizer(lines, truncation=True, max_length=SEQ_LEN, return_overflowing_tokens=True,
                            padding=True, return_tensors="pt")
    for key in ("input_ids", "char_ids", "attention_mask"):
        assert torch.equal(batch[key], padded[key]), key
    assert torch.equal(batch["labels"], padded["input_ids"].masked_fill(padded["attention_mask"] == 0, -100))
    assert data.count_tokens(batch) == int(padded["attention_mask"].sum())


def test_elmo_tokenisation_is_cached_by_fingerprint(elmo_data, elmo_tokenizer):
    again = build_pretraining_data("elmo", elmo_tokenizer, FILES, SEQ_LEN, seed=0)
    assert again.train_dataset.cache_files and again.train_dataset.cache_files == elmo_data.train_dataset.cache_files


def test_bert_pairs_are_create_nsp_examples_of_the_documents(wordpiece, documents):
    data = build_pretraining_data("bert", wordpiece, FILES, SEQ_LEN, seed=3, validation_fraction=0)
    expected = create_nsp_examples(documents, wordpiece, max_seq_length=SEQ_LEN, seed=3)
    rows = data.train_dataset
    assert rows["example_id"] == list(range(len(expected)))
    for key in ("input_ids", "token_type_ids", "next_sentence_label"):
        assert rows[key] == [example[key] for example in expected], key


def test_bert_masking_statistics(bert_data, wordpiece):
    """15% of the words chosen, then 80% [MASK] / 10% random / 10% kept, each within 5 binomial sigmas."""
    rows = list(bert_data.train_dataset)
    batch = bert_data.collator(rows)
    original = torch.tensor([row["input_ids"] + [wordpiece.pad_token_id] * (batch["input_ids"].shape[1] - len(row["input_ids"]))
                             for row in rows])
    specials = torch.tensor(wordpiece.all_special_ids)
    eligible = (batch["attention_mask"] == 1) & ~torch.isin(original, specials)
    selected = batch["labels"] != -100
    assert not (selected & ~eligible).any() and torch.equal(batch["labels"][selected], original[selected])
    assert torch.equal(batch["input_ids"][~selected], original[~selected])
    n, chosen = int(eligible.sum()), int(selected.sum())
    is_mask = selected & (batch["input_ids"] == wordpiece.mask_token_id)
    is_random = selected & ~is_mask & (batch["input_ids"] != original)
    # whole words are chosen together, so count shares over tokens with a sigma widened by the mean word length
    word_length = 1.3
    for share, expected, trials in ((chosen / n, 0.15, n), (int(is_mask.sum()) / chosen, 0.8, chosen),
                                    (int(is_random.sum()) / chosen, 0.1, chosen)):
        sigma = math.sqrt(expected * (1 - expected) * word_length / trials)
        assert abs(share - expected) <= 5 * sigma, (share, expected, sigma)


def test_bert_masks_are_a_function_of_seed_and_example_only(bert_data, wordpiece):
    rows = [bert_data.train_dataset[i] for i in range(12)]

    def masks_by_example(groups):
        found = {}
        for group in groups:
            batch = bert_data.collator(group)
            for row, ids, labels, mask in zip(group, batch["input_ids"], batch["labels"], batch["attention_mask"]):
                length = int(mask.sum())
                found[row["example_id"]] = (ids[:length].tolist(), labels[:length].tolist())
        return found

    together = masks_by_example([rows])
    assert masks_by_example([rows[i : i + 2] for i in range(0, 12, 2)]) == together  # two "processes" of B
    assert masks_by_example([rows[::-1][:5], rows[::-1][5:]]) == together
    assert masks_by_example([[row] for row in rows]) == together
    other_seed = DataCollatorForBertPretraining(wordpiece, whole_word_mask=True, seed=1)
    differs = sum(other_seed([row])["labels"].tolist()[0] != together[row["example_id"]][1] for row in rows)
    assert differs >= 10, f"seed 1 gave the masks of seed 0 for {12 - differs} of 12 examples"


@pytest.mark.parametrize("family", ["gpt", "bert", "elmo"])
def test_a_batch_trains_the_tiny_model(family, models, request):
    """An untrained model predicts nearly uniformly: loss ~ ln(vocabulary) (+ ln 2 for BERT's NSP)."""
    data = request.getfixturevalue(f"{family}_data")
    model = models[family].train()
    batch = data.collator([data.train_dataset[i] for i in range(4)])
    loss = model(**batch).loss
    loss.backward()
    uniform = math.log(model.config.vocab_size) + (math.log(2) if family == "bert" else 0)
    assert abs(loss.item() - uniform) < 0.5, f"loss {loss.item():.3f}, uniform prediction {uniform:.3f}"
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    model.zero_grad()


def hand_metrics(family, model, batch):
    """The metrics from one forward over the whole evaluation set as a single batch."""
    with torch.no_grad():
        outputs = model(**batch)
    if family == "gpt":
        return {"loss": outputs.loss.item(), "perplexity": math.exp(outputs.loss.item())}
    if family == "elmo":
        return {"loss": outputs.loss.item(), "forward_loss": outputs.forward_loss.item(),
                "backward_loss": outputs.backward_loss.item(),
                "forward_perplexity": outputs.forward_perplexity.item(),
                "backward_perplexity": outputs.backward_perplexity.item()}
    selected = batch["labels"] != -100
    logits = outputs.prediction_logits  # the sparse head gives only the labelled positions
    predictions = (logits[selected] if logits.dim() == 3 else logits).argmax(-1)
    mlm_correct = predictions == batch["labels"][selected]
    nsp_correct = outputs.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]
    return {"loss": outputs.loss.item(), "mlm_loss": outputs.mlm_loss.item(), "nsp_loss": outputs.nsp_loss.item(),
            "mlm_accuracy": mlm_correct.float().mean().item(), "nsp_accuracy": nsp_correct.float().mean().item()}


@pytest.mark.parametrize("family", ["gpt", "bert", "elmo"])
def test_evaluate_equals_one_forward_over_the_whole_set(family, models, accelerator, request):
    data = request.getfixturevalue(f"{family}_data")
    model = models[family].train()
    rows = data.eval_dataset.select(range(40))
    loader = accelerator.prepare(DataLoader(rows, batch_size=3, collate_fn=data.collator))  # 13 x 3 + 1
    metrics = data.evaluate(model, loader, accelerator)
    assert model.training, "evaluate must give the model back in training mode"
    expected = hand_metrics(family, model.eval(), data.collator(list(rows)))
    assert set(expected) <= set(metrics)
    deltas = {name: abs(metrics[name] - value) / max(1.0, abs(value)) for name, value in expected.items()}
    assert max(deltas.values()) < 1e-5, f"max relative |Δ| {max(deltas.values()):.2e}: {deltas}"
    if family == "gpt":
        assert metrics["tokens"] == 40 * (SEQ_LEN - 1)


def test_bad_input_is_named(tmp_path, bpe, wordpiece, elmo_tokenizer):
    good = tmp_path / "good.txt"
    good.write_text("one sentence here\nand another\n\na second document\n", encoding="utf-8")
    with pytest.raises(OSError, match="missing.txt.*does not exist"):
        load_text_files([good, tmp_path / "missing.txt"])
    empty = tmp_path / "empty.txt"
    empty.write_text(" \n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.txt.*is empty"):
        build_pretraining_data("gpt", bpe, [good, empty], 16)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text\ncaf\u00e9 au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.csv.*not UTF-8 \(near byte 8\).*iconv"):
        load_text_files(latin, streaming=True)
    gbk = tmp_path / "poem.txt"
    gbk.write_bytes(("床前明月光\n" * 400_000).encode("utf-8") + "疑是地上霜".encode("gb18030"))
    with pytest.raises(ValueError, match="poem.txt.*not UTF-8"):  # past the first chunk the check reads
        load_text_files(gbk)
    no_text = tmp_path / "rows.jsonl"
    no_text.write_text('{"body": "a document"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"rows.jsonl.*columns \['body'\] but no 'text' column"):
        load_text_files(no_text)
    with pytest.raises(ValueError, match=r"notes.md.*suffix '.md'"):
        load_text_files(tmp_path / "notes.md")
    with pytest.raises(ValueError, match="No corpus files"):
        load_text_files([])

    with pytest.raises(ValueError, match="seq_len=2048 is larger than the tokenizer's context, model_max_length=1024"):
        build_pretraining_data("gpt", bpe, [good], 2048)
    with pytest.raises(ValueError, match="seq_len=4 is too short for bert"):
        build_pretraining_data("bert", wordpiece, [good], 4)
    with pytest.raises(ValueError, match="streaming=True supports 'gpt' and 'elmo' only"):
        build_pretraining_data("bert", wordpiece, [good], 16, streaming=True)
    with pytest.raises(ValueError, match="family='t5'"):
        build_pretraining_data("t5", bpe, [good], 16)
    with pytest.raises(ValueError, match="whole_word_masking applies to BERT"):
        build_pretraining_data("gpt", bpe, [good], 16, whole_word_masking=True)
    with pytest.raises(ValueError, match="which BertTokenizer does not give"):
        build_pretraining_data("elmo", wordpiece, [good], 16)
    with pytest.raises(ValueError, match="the tokenizer has none"):
        build_pretraining_data("gpt", wordpiece.__class__(vocab={"a": 0, "[UNK]": 1}, unk_token="[UNK]"), [good], 16)
    with pytest.raises(ValueError, match="2 documents: too few to hold out 2 for validation"):
        build_pretraining_data("bert", wordpiece, [good], 16)
    with pytest.raises(ValueError, match="fewer tokens than one block of seq_len=1000"):
        build_pretraining_data("gpt", bpe, [good], 1000, validation_fraction=0)


TWO_PROCESS_EVALUATION = """
import json, sys, accelerate, torch
from torch.utils.data import DataLoader
from transformers import AutoModelForPreTraining, AutoTokenizer
import hf_course_models
from hf_course_models.data.pretraining import build_pretraining_data

directory, corpus, seq_len, rows, batch_size = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
accelerator = accelerate.Accelerator(cpu=True)
tokenizer, model = AutoTokenizer.from_pretrained(directory), AutoModelForPreTraining.from_pretrained(directory)
data = build_pretraining_data("bert", tokenizer, [corpus], seq_len, seed=0, validation_fraction=0)
loader = accelerator.prepare(DataLoader(data.train_dataset.select(range(rows)), batch_size=batch_size,
                                        collate_fn=data.collator))
metrics = data.evaluate(model, loader, accelerator)
if accelerator.is_main_process:
    json.dump({"processes": accelerator.num_processes, **metrics}, open(directory + "/metrics.json", "w"))
"""


def test_two_processes_evaluate_as_one(tmp_path, documents, wordpiece, models, accelerator):
    """torchrun x 2 with batch 3 per process vs this process with batch 6, over 41 rows (the last batch uneven)."""
    import json
    import os
    import subprocess
    import sys

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join("\n".join(document) for document in documents[:30] + documents[-30:]),
                      encoding="utf-8")
    models["bert"].save_pretrained(tmp_path)
    wordpiece.save_pretrained(tmp_path)
    script = tmp_path / "evaluate.py"
    script.write_text(TWO_PROCESS_EVALUATION, encoding="utf-8")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", str(script),
                    str(tmp_path), str(corpus), str(SEQ_LEN), "41", "3"], check=True, capture_output=True,
                   timeout=300, env={**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"})
    two = json.loads((tmp_path / "metrics.json").read_text())

    data = build_pretraining_data("bert", wordpiece, [corpus], SEQ_LEN, seed=0, validation_fraction=0)
    loader = accelerator.prepare(DataLoader(data.train_dataset.select(range(41)), batch_size=6,
                                            collate_fn=data.collator))
    one = data.evaluate(models["bert"], loader, accelerator)
    assert two.pop("processes") == 2
    deltas = {name: abs(two[name] - one[name]) for name in one}
    assert set(two) == set(one) and max(deltas.values()) < 1e-6, f"max |Δ| {max(deltas.values()):.2e}: {deltas}"

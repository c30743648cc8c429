"""Our ELMo biLM's forward pass against AllenNLP's `_ElmoBiLm` (allennlp 2.10.1), and our biLM training step.

Both models read the same random weights in bilm-tf's hdf5 format (written by tests/allennlp_oracle/weights.py)
for the "small" preset (2 x 1024 LSTM cells, 128 projection, filters 1-7 with 2,048 in all, 1 highway layer,
char embedding 16, cell and projection clip 3, residual), and the same batch: 32 windows of 20 words of the
embedded corpus (`hf_course_models.corpora`, the sonnets by default), cut by our ELMo tokenizer. AllenNLP gets
`batch_to_ids(words)` and adds BOS/EOS itself; ours gets the tokenizer's `char_ids`, which include them.

Two weight sets: "random" (unit-scale, 1/sqrt(fan_in)) and "clips_bind" (the LSTM scaled so that both clips
bind, `LstmInit` below), since whether a clip binds decides which LSTM path ours may take. For each, the script
refuses to time anything unless every layer agrees with AllenNLP within 1e-5 and the masks are equal, and it
measures how much removing the clips would change AllenNLP's outputs. Then, in eval mode under `no_grad`, the
forward passes of AllenNLP and of ours (once per `--implementations`: "auto" is the default, "exact"/"fused"
force a path) alternate (see `common.time_interleaved`); AllenNLP's stateful LSTM is reset before each of its
calls so that every call computes the same function. Tokens/s counts the 640 words (boundaries not counted).
Ours also runs a training step of `HfcmElmoForBidirectionalLM` (forward and backward LM loss, backward,
gradient-norm clip 10, Adagrad lr 0.2 as bilm-tf, dropout 0.1) on the same batch with the word ids as labels.
If ours is under 3x AllenNLP, the script also writes a profile of our forward pass.

    python -m benchmarks.bench_elmo [--repeats 10] [--warmup 2]   # from the repository root
"""
import argparse
import copy
import tempfile
from pathlib import Path

import torch

from benchmarks.common import format_table, machine_info, paired_speedup, throughput, time_interleaved, write_json
from hf_course_models.convert.elmo import load_allennlp_elmo
from hf_course_models.corpora import corpus_files
from hf_course_models.modeling.elmo.modeling_hfcm_elmo import HfcmElmoForBidirectionalLM, HfcmElmoModel
from hf_course_models.tokenization.elmo_vocab import train_elmo_tokenizer
from tests.allennlp_oracle import (OracleUnavailable, environment_dir, import_allennlp_elmo, installation_record,
                                   write_elmo_files, write_options)
from tests.allennlp_oracle.weights import LstmInit

SMALL_OPTIONS = {
    "lstm": {"use_skip_connections": True, "projection_dim": 128, "dim": 1024, "n_layers": 2,
             "cell_clip": 3, "proj_clip": 3},
    "char_cnn": {"activation": "relu", "n_highway": 1, "embedding": {"dim": 16}, "n_characters": 262,
                 "max_characters_per_token": 50,
                 "filters": [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]]},
}
# Clip 3 with 1024 cells: a quadrupled projection takes outputs past the projection clip, forget gates near 1 and
# strong biases take cells past the cell clip; halved recurrent rows keep the recurrence contractive.
WEIGHT_SETS = {
    "random": LstmInit(),
    "clips_bind": LstmInit(recurrent_gain=0.5, projection_gain=4.0, bias_std=2.0, forget_bias=3.0),
}
TOLERANCE = 1e-5
TARGET_SPEEDUP = 3.0
WORDS_PER_SENTENCE, SENTENCES = 20, 32


def word_windows(tokenizer, corpus_file, sentences, words):
    """`sentences` consecutive windows of `words` words of the file, as our tokenizer splits it."""
    text = Path(corpus_file).read_text(encoding="utf-8")
    all_words = tokenizer.split_words([text])[0]
    if len(all_words) < sentences * words:
        raise SystemExit(f"{corpus_file} has {len(all_words)} words, fewer than {sentences} x {words}.")
    return [all_words[i * words : (i + 1) * words] for i in range(sentences)]


def allennlp_step(elmo, char_ids):
    def step():
        elmo._elmo_lstm.reset_states()  # a fresh state per call: the same function as ours computes
        with torch.no_grad():
            return elmo(char_ids)

    return step


def our_step(model, char_ids, attention_mask):
    def step():
        with torch.no_grad():
            return model(char_ids=char_ids, attention_mask=attention_mask)

    return step


def max_layer_deltas(ours, reference):
    """Per layer max |Δ| between our output and AllenNLP's; raises unless the masks are equal."""
    if not torch.equal(ours.mask.bool(), reference["mask"].bool()):
        raise SystemExit("The masks of ours and AllenNLP differ: not benchmarking.")
    return [float((a - b).abs().max()) for a, b in zip(ours.layer_activations, reference["activations"])]


def training_step(model, batch):
    """Forward with both LM losses, backward, gradient-norm clip 10, Adagrad step (bilm-tf's), zero_grad."""
    model.train()
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.2)

    def step():
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return step


def profile_forward(step, rows=15):
    """The top operators of our forward pass by self CPU time, as a table."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        step()
    return profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per contestant and weight set")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per contestant first")
    parser.add_argument("--train-repeats", type=int, default=5, help="timed training steps per weight set")
    parser.add_argument("--implementations", nargs="+", default=["auto", "exact", "fused"],
                        choices=["auto", "exact", "fused"], help="our LSTM paths to time")
    parser.add_argument("--weight-sets", nargs="+", default=list(WEIGHT_SETS), choices=list(WEIGHT_SETS))
    parser.add_argument("--corpus", type=int, default=0, help="index into hf_course_models.corpora.corpus_files()")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="elmo_small_b32_w20.json", help="JSON file name under benchmarks/results/")
    return parser.parse_args()


def main():
    args = parse_args()
    torch.manual_seed(args.seed)
    machine = machine_info()
    print(f"{machine['cpu']}, {machine['cpu_count']} CPUs, torch {machine['torch']} with "
          f"{machine['torch_threads']} threads, load average {machine['load_average_1m']:.1f}")
    try:
        elmo_bilm_class, batch_to_ids = import_allennlp_elmo()
    except OracleUnavailable as error:
        raise SystemExit(f"AllenNLP is not available, nothing to compare against: {error}")
    oracle = installation_record(environment_dir())

    tokenizer = train_elmo_tokenizer(corpus_files(), vocab_size=8000, min_frequency=1)
    windows = word_windows(tokenizer, corpus_files()[args.corpus], SENTENCES, WORDS_PER_SENTENCE)
    batch = tokenizer(windows, is_split_into_words=True, padding=True, return_tensors="pt")
    allennlp_ids = batch_to_ids(windows)
    if not torch.equal(batch["char_ids"][:, 1:-1], allennlp_ids):
        raise SystemExit("Our tokenizer's character ids differ from AllenNLP's batch_to_ids: not benchmarking.")
    words = SENTENCES * WORDS_PER_SENTENCE
    print(f"batch: {SENTENCES} x {WORDS_PER_SENTENCE} words of {Path(corpus_files()[args.corpus]).name} "
          f"({words} words, {batch['char_ids'].shape[1]} tokens per row with BOS/EOS), vocabulary {len(tokenizer)}")

    results, rows = {}, []
    with tempfile.TemporaryDirectory(prefix="bench-elmo-") as scratch:
        for set_name in args.weight_sets:
            options = copy.deepcopy(SMALL_OPTIONS) | {"n_tokens_vocab": len(tokenizer)}
            options_file, weight_file = write_elmo_files(Path(scratch) / set_name, options, seed=args.seed,
                                                         lstm=WEIGHT_SETS[set_name])
            unclipped = copy.deepcopy(options)
            unclipped["lstm"]["cell_clip"] = unclipped["lstm"]["proj_clip"] = None
            unclipped_file = write_options(Path(scratch) / set_name / "unclipped.json", unclipped)

            allennlp = elmo_bilm_class(str(options_file), str(weight_file)).eval()
            reference = allennlp_step(allennlp, allennlp_ids)()
            unclipped_reference = allennlp_step(elmo_bilm_class(str(unclipped_file), str(weight_file)).eval(),
                                                allennlp_ids)()
            clip_effect = max(float((a - b).abs().max()) for a, b in
                              zip(reference["activations"], unclipped_reference["activations"]))
            del unclipped_reference

            saved = Path(scratch) / set_name / "ours"
            load_allennlp_elmo(options_file, weight_file).save_pretrained(saved)
            steps, paths, parity = {}, {}, {}
            for implementation in args.implementations:
                model = HfcmElmoModel.from_pretrained(saved, lstm_implementation=implementation).eval()
                step = our_step(model, batch["char_ids"], batch["attention_mask"])
                deltas = max_layer_deltas(step(), reference)
                name = f"ours ({implementation})"
                paths[name], parity[name] = model.lstm_implementation_used, deltas
                print(f"[{set_name}] {name}: LSTM path {paths[name]!r}, max |Δ| per layer vs AllenNLP "
                      f"{', '.join(f'{d:.1e}' for d in deltas)}")
                if max(deltas) > TOLERANCE:
                    raise SystemExit(f"{name} disagrees with AllenNLP (max |Δ| {max(deltas):.2e} > {TOLERANCE}): "
                                     "not benchmarking.")
                steps[name] = step
            steps["allennlp"] = allennlp_step(allennlp, allennlp_ids)
            print(f"[{set_name}] removing both clips changes AllenNLP's outputs by up to {clip_effect:.3g} "
                  f"({'the clips bind' if clip_effect > TOLERANCE else 'no clip binds'})")

            seconds = time_interleaved(steps, args.repeats, args.warmup)
            speed = {name: throughput(seconds[name], words) for name in steps}
            entry = {
                "clip_effect_max_abs": clip_effect,
                "clips_bind": clip_effect > TOLERANCE,
                "lstm_init": vars(WEIGHT_SETS[set_name]),
                "allennlp": {"words_per_s": speed["allennlp"], "call_seconds": seconds["allennlp"]},
            }
            for name in steps:
                if name == "allennlp":
                    continue
                entry[name] = {
                    "lstm_path": paths[name],
                    "max_abs_delta_per_layer": parity[name],
                    "words_per_s": speed[name],
                    "call_seconds": seconds[name],
                    "ratio_of_medians": speed[name]["median"] / speed["allennlp"]["median"],
                    "paired_speedup": paired_speedup(seconds[name], seconds["allennlp"]),
                }
            for name in steps:
                ratio = speed[name]["median"] / speed["allennlp"]["median"]
                rows.append([set_name, name, paths.get(name, "python loop (AllenNLP)"),
                             *(f"{speed[name][key]:,.0f}" for key in ("median", "min", "max")), f"{ratio:.2f}x"])

            model = load_allennlp_elmo(options_file, weight_file, model_class=HfcmElmoForBidirectionalLM)
            train_seconds = time_interleaved({"train": training_step(model, dict(batch))}, args.train_repeats, 1)
            entry["ours_training_step"] = {
                "lstm_path": model.elmo.lstm_implementation_used,
                "words_per_s": throughput(train_seconds["train"], words),
                "step_seconds": train_seconds["train"],
            }
            rows.append([set_name, "ours: training step", model.elmo.lstm_implementation_used,
                         *(f"{entry['ours_training_step']['words_per_s'][key]:,.0f}" for key in ("median", "min", "max")),
                         ""])
            default = entry.get("ours (auto)")
            if default and default["ratio_of_medians"] < TARGET_SPEEDUP:
                entry["ours_forward_profile"] = profile_forward(steps["ours (auto)"])
                print(f"[{set_name}] under {TARGET_SPEEDUP}x: profile of our forward pass\n"
                      f"{entry['ours_forward_profile']}")
            results[set_name] = entry

    print()
    header = ["weights", "model", "LSTM path", "words/s median", "min", "max", "vs AllenNLP"]
    print(format_table(header, rows), end="\n\n")
    path = write_json(args.output, {
        "benchmark": "ELMo small biLM forward (eval, no_grad): hf_course_models vs AllenNLP _ElmoBiLm; "
                     "our biLM training step",
        "settings": vars(args) | {"sentences": SENTENCES, "words_per_sentence": WORDS_PER_SENTENCE,
                                  "words_per_call": words, "tokens_per_row_with_boundaries": batch["char_ids"].shape[1],
                                  "vocab_size": len(tokenizer), "options": SMALL_OPTIONS, "tolerance": TOLERANCE},
        "allennlp_environment": {"allennlp": "2.10.1", "installed_from": oracle["pinned"],
                                 "first_install_seconds": oracle["install_seconds"]},
        "machine": machine,
        "results": results,
    })
    for set_name, entry in results.items():
        for name in (key for key in entry if key.startswith("ours (")):
            print(f"{set_name}, {name}: {entry[name]['ratio_of_medians']:.2f}x AllenNLP (ratio of medians), "
                  f"paired {entry[name]['paired_speedup']:.2f}x, path {entry[name]['lstm_path']!r}")
    print(f"written to {path}")


if __name__ == "__main__":
    main()

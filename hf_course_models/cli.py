"""`hfcm`: a thin command-line shell over the library (also `python -m hf_course_models`)."""
import argparse
import json
import sys


def _trainer_options(args):
    """The options given on the command line; those left out keep each trainer's own default."""
    given = {"vocab_size": args.vocab_size, "min_frequency": args.min_frequency,
             "model_max_length": args.model_max_length}
    return {name: value for name, value in given.items() if value is not None} | {"show_progress": True}


def _train_wordpiece(args):
    from .tokenization.wordpiece import train_wordpiece_tokenizer

    return train_wordpiece_tokenizer(args.files, lowercase=not args.cased, **_trainer_options(args))


def _train_bpe(args):
    from .tokenization.bpe import train_bpe_tokenizer

    if args.cased:
        raise ValueError("--cased is a wordpiece option; byte-level BPE always keeps case and accents.")
    return train_bpe_tokenizer(args.files, **_trainer_options(args))


def _train_elmo(args):
    from .tokenization.elmo_vocab import train_elmo_tokenizer

    if args.cased:
        raise ValueError("--cased is a wordpiece option; the ELMo tokenizer keeps case unless given --lowercase.")
    return train_elmo_tokenizer(args.files, lowercase=args.lowercase,
                                chinese_segmentation=args.chinese_segmentation or "characters",
                                **_trainer_options(args))


# kind -> (name in messages, trainer taking the parsed arguments)
TOKENIZER_TRAINERS = {
    "wordpiece": ("WordPiece", _train_wordpiece),
    "bpe": ("byte-level BPE", _train_bpe),
    "elmo": ("ELMo word", _train_elmo),
}


def _train_tokenizer(args):
    if args.kind != "elmo" and (args.lowercase or args.chinese_segmentation):
        raise ValueError(f"--lowercase and --chinese-segmentation are elmo options; {args.kind} does not take them.")
    name, train = TOKENIZER_TRAINERS[args.kind]
    tokenizer = train(args)
    tokenizer.save_pretrained(args.out)
    print(f"Saved a {len(tokenizer)}-token {name} tokenizer to {args.out}")


def _convert(args):
    from .convert import convert_checkpoint

    src = args.src[0] if len(args.src) == 1 else args.src
    out = convert_checkpoint(src, args.out, to=args.to)
    print(f"Converted {' + '.join(args.src)} -> {out}")


def _pipeline_output(task, model, text, **kwargs):
    from transformers import pipeline

    return pipeline(task, model=model, **kwargs)(text)


def _fill_mask(args):
    for guess in _pipeline_output("fill-mask", args.model, args.text, top_k=args.top_k):
        print(f"{guess['score']:.4f}  {guess['sequence']}")


def _generate(args):
    from transformers import pipeline, set_seed

    sampling = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p}
    sampling = {name: value for name, value in sampling.items() if value is not None}
    if sampling and not args.do_sample:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in sampling)
        raise ValueError(f"{flags} given without --do-sample: sampling options do nothing in greedy decoding; "
                         "add --do-sample.")
    if args.num_return_sequences > 1 and not args.do_sample:
        raise ValueError(f"--num-return-sequences {args.num_return_sequences} needs --do-sample: greedy decoding "
                         "has only one most likely continuation.")
    generator = pipeline("text-generation", model=args.model)
    if args.seed is not None:
        set_seed(args.seed)
    results = generator(args.prompt, max_new_tokens=args.max_new_tokens, do_sample=args.do_sample,
                        num_return_sequences=args.num_return_sequences, **sampling)
    for number, result in enumerate(results, start=1):
        if len(results) > 1:
            print(f"--- {number} ---")
        print(result["generated_text"])


def _embed(args):
    import torch

    features = torch.tensor(_pipeline_output("feature-extraction", args.model, args.text))[0]
    print(json.dumps({"shape": list(features.shape), "mean_vector": features.mean(0).tolist()}))


def _push(args):
    from .hub import push_folder

    url = push_folder(args.directory, args.repo_id, private=args.private, revision=args.revision,
                      commit_message=args.commit_message)
    print(f"Pushed {args.directory} -> {url}")


def _demo(args):
    from .demo import run_demo

    run_demo(args.out, seed=args.seed, step_fraction=args.step_fraction, families=args.families)


def _config_overrides(pairs):
    """["hidden_dropout_prob=0", "num_hidden_layers=4"] -> {"hidden_dropout_prob": 0, "num_hidden_layers": 4}."""
    overrides = {}
    for pair in pairs or []:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise ValueError(f"--config-overrides takes NAME=VALUE pairs (e.g. hidden_dropout_prob=0), got {pair!r}.")
        try:
            overrides[name] = json.loads(value)
        except json.JSONDecodeError:
            overrides[name] = value  # a bare string such as gelu
    return overrides


def _pretrain(args):
    from .training.loop import TrainingArguments
    from .training.pretrain import pretrain

    options = {"max_steps": args.max_steps, "batch_size": args.batch_size, "grad_accum": args.grad_accum,
               "learning_rate": args.learning_rate, "weight_decay": args.weight_decay,
               "warmup_steps": args.warmup_steps, "max_grad_norm": args.max_grad_norm,
               "mixed_precision": args.mixed_precision, "seed": args.seed, "save_steps": args.save_steps,
               "save_total_limit": args.save_total_limit, "eval_steps": args.eval_steps,
               "logging_steps": args.logging_steps, "dataloader_num_workers": args.num_workers}
    training = TrainingArguments(
        args.out, resume=args.resume, push_to_hub=args.push_to_hub, hub_private=args.private,
        gradient_checkpointing=args.gradient_checkpointing, compile=args.compile,
        **{name: value for name, value in options.items() if value is not None},
    )
    pretrain(args.family, args.tokenizer, args.files, args.preset, training, args.seq_len,
             validation_files=args.validation_files, streaming=args.streaming,
             whole_word_masking=args.whole_word_masking, num_proc=args.num_proc,
             **_config_overrides(args.config_overrides))


def _finetune(args):
    from .training.finetune import finetune
    from .training.loop import TrainingArguments

    options = {"max_steps": args.max_steps, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
               "mixed_precision": args.mixed_precision, "seed": args.seed, "eval_steps": args.eval_steps,
               "save_steps": args.save_steps, "logging_steps": args.logging_steps}
    training = TrainingArguments(args.out, resume=args.resume, push_to_hub=args.push_to_hub,
                                 **{name: value for name, value in options.items() if value is not None})
    finetune(args.task, args.model, args.train, args.validation, training, args.max_length,
             doc_stride=args.doc_stride, num_proc=args.num_proc)


def _make_task(args):
    from .corpora.tasks import make_task

    written = make_task(args.name, args.out, seed=args.seed, validation_fraction=args.validation_fraction)
    print(f"{args.name} ({written['task']}): {written['train_rows']} training rows in {written['train']}, "
          f"{written['validation_rows']} validation rows in {written['validation']}")


def build_parser():
    parser = argparse.ArgumentParser(prog="hfcm", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train-tokenizer", help="train a tokenizer on text files")
    train.add_argument("kind", choices=list(TOKENIZER_TRAINERS))
    train.add_argument("--files", nargs="+", required=True, help="UTF-8 text files")
    train.add_argument("--vocab-size", type=int, help="default: 30522 for wordpiece, 50257 for bpe, 50000 for elmo")
    train.add_argument("--min-frequency", type=int, help="default: 2")
    train.add_argument("--cased", action="store_true", help="wordpiece: keep upper case (default: lower-case)")
    train.add_argument("--model-max-length", type=int, help="default: 512 for wordpiece, 1024 for bpe, none for elmo")
    train.add_argument("--lowercase", action="store_true", help="elmo: lower-case words and characters (default: keep)")
    train.add_argument("--chinese-segmentation", choices=["characters", "jieba"],
                       help="elmo: Chinese as single characters (default) or as jieba's words")
    train.add_argument("--out", required=True)
    train.set_defaults(run=_train_tokenizer)

    convert = commands.add_parser("convert",
                                  help="convert a transformers BERT, GPT-2 or OpenAI-GPT checkpoint to ours, or "
                                       "back; or AllenNLP ELMo weights to ours")
    convert.add_argument("src", nargs="+", help="a checkpoint directory, or an ELMo options.json and weights.hdf5")
    convert.add_argument("out")
    convert.add_argument("--to", choices=["hfcm", "transformers"], default="hfcm")
    convert.set_defaults(run=_convert)

    fill = commands.add_parser("fill-mask", help="predict the [MASK] token(s) of a text")
    fill.add_argument("model")
    fill.add_argument("text")
    fill.add_argument("--top-k", type=int, default=5)
    fill.set_defaults(run=_fill_mask)

    generate = commands.add_parser("generate", help="continue a prompt with a causal language model")
    generate.add_argument("model")
    generate.add_argument("prompt")
    generate.add_argument("--max-new-tokens", type=int, default=50)
    generate.add_argument("--do-sample", action="store_true", help="sample the next token (default: greedy)")
    generate.add_argument("--temperature", type=float, help="with --do-sample; default: the model's generation "
                                                              "config, else 0.7")
    generate.add_argument("--top-k", type=int, help="with --do-sample: sample among the k most likely tokens")
    generate.add_argument("--top-p", type=float, help="with --do-sample: sample among the most likely tokens "
                                                      "holding this probability mass, in (0, 1]")
    generate.add_argument("--seed", type=int, help="seed for sampling, so a run repeats")
    generate.add_argument("--num-return-sequences", type=int, default=1, help="with --do-sample")
    generate.set_defaults(run=_generate)

    embed = commands.add_parser("embed", help="contextual token vectors of a text (JSON)")
    embed.add_argument("model")
    embed.add_argument("text")
    embed.set_defaults(run=_embed)

    push = commands.add_parser("push", help="upload a saved model directory to the Hub, with a model card")
    push.add_argument("directory")
    push.add_argument("repo_id", help="user/name (created if missing; HF_TOKEN or `hf auth login` for access)")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", help="branch to push to (created from main if missing)")
    push.add_argument("--commit-message")
    push.set_defaults(run=_push)

    pretrain = commands.add_parser(
        "pretrain", help="pre-train a BERT, GPT or ELMo on text files (multi-process under torchrun or "
                         "accelerate launch)")
    pretrain.add_argument("family", choices=["bert", "gpt", "elmo"])
    pretrain.add_argument("--tokenizer", required=True, help="a directory from `hfcm train-tokenizer`")
    pretrain.add_argument("--files", nargs="+", required=True,
                          help=".txt (a sentence per line, blank line between documents), .jsonl or .csv")
    pretrain.add_argument("--validation-files", nargs="+", help="default: 5%% of the documents held out")
    pretrain.add_argument("--preset", default="mini", help="model size: tiny, mini, small, base or the papers' "
                                                             "sizes (default: mini)")
    pretrain.add_argument("--config-overrides", nargs="+", metavar="NAME=VALUE",
                          help="config values over the preset, e.g. hidden_dropout_prob=0")
    pretrain.add_argument("--out", required=True, help="final model, checkpoints, metrics and curves")
    pretrain.add_argument("--seq-len", type=int, default=128, help="tokens per row; the model's context")
    pretrain.add_argument("--max-steps", type=int, help="optimizer steps (default: 1000)")
    pretrain.add_argument("--batch-size", type=int, help="rows per process and micro-batch (default: 8)")
    pretrain.add_argument("--grad-accum", type=int, help="micro-batches per optimizer step (default: 1)")
    pretrain.add_argument("--learning-rate", type=float, help="peak learning rate (default: 5e-4)")
    pretrain.add_argument("--weight-decay", type=float, help="AdamW's, not on biases and LayerNorm (default: 0.01)")
    pretrain.add_argument("--warmup-steps", type=int, help="linear warm-up, then linear decay (default: 10%% of "
                                                          "--max-steps)")
    pretrain.add_argument("--max-grad-norm", type=float, help="gradient clipping; 0 for none (default: 1.0)")
    pretrain.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], help="fp16 needs a GPU (default: no)")
    pretrain.add_argument("--gradient-checkpointing", action="store_true")
    pretrain.add_argument("--compile", action="store_true", help="torch.compile the model")
    pretrain.add_argument("--seed", type=int, help="initial weights, data order and masking (default: 0)")
    pretrain.add_argument("--save-steps", type=int, help="checkpoint every N steps (default: 500)")
    pretrain.add_argument("--save-total-limit", type=int, help="checkpoints kept (default: 2)")
    pretrain.add_argument("--eval-steps", type=int, help="evaluate every N steps (default: at the end only)")
    pretrain.add_argument("--logging-steps", type=int, help="default: 10")
    pretrain.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    pretrain.add_argument("--push-to-hub", metavar="REPO_ID", help="push checkpoints and the final model")
    pretrain.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    pretrain.add_argument("--streaming", action="store_true", help="read the corpus as it trains (gpt, elmo)")
    pretrain.add_argument("--whole-word-masking", action="store_true", help="bert: mask whole words")
    pretrain.add_argument("--num-proc", type=int, help="processes for tokenising")
    pretrain.add_argument("--num-workers", type=int, help="data loader workers (default: 0)")
    pretrain.set_defaults(run=_pretrain)

    tune = commands.add_parser("finetune", help="fine-tune a saved model on labelled JSON lines / CSV")
    tune.add_argument("task", choices=["sequence-classification", "token-classification", "question-answering",
                                       "multiple-choice"])
    tune.add_argument("--model", required=True, help="a saved model directory (pre-trained or converted)")
    tune.add_argument("--train", required=True, help=".jsonl / .json / .csv; fields: see `hfcm make-task`")
    tune.add_argument("--validation", required=True)
    tune.add_argument("--out", required=True, help="final model, checkpoints, metrics and curves")
    tune.add_argument("--max-length", type=int, default=128, help="tokens per sequence (default: 128)")
    tune.add_argument("--doc-stride", type=int, default=32, help="question-answering: tokens shared by "
                                                                 "neighbouring context windows (default: 32)")
    tune.add_argument("--max-steps", type=int, help="optimizer steps (default: 1000)")
    tune.add_argument("--batch-size", type=int, help="rows per process (default: 8)")
    tune.add_argument("--learning-rate", type=float, help="peak learning rate (default: 5e-4)")
    tune.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], help="fp16 needs a GPU (default: no)")
    tune.add_argument("--seed", type=int, help="default: 0")
    tune.add_argument("--eval-steps", type=int, help="evaluate every N steps (default: at the end only)")
    tune.add_argument("--save-steps", type=int, help="checkpoint every N steps (default: 500)")
    tune.add_argument("--logging-steps", type=int, help="default: 10")
    tune.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    tune.add_argument("--push-to-hub", metavar="REPO_ID", help="push checkpoints and the final model")
    tune.add_argument("--num-proc", type=int, help="processes for tokenising")
    tune.set_defaults(run=_finetune)

    task = commands.add_parser("make-task", help="write a fine-tuning task derived from the embedded corpus "
                                                 "as train.jsonl + validation.jsonl")
    task.add_argument("name", choices=["attribution-en", "attribution-zh", "punctuation-en", "punctuation-zh",
                                       "who-wrote-en", "who-wrote-zh", "next-line-en", "next-line-zh"])
    task.add_argument("--out", required=True)
    task.add_argument("--seed", type=int, default=0)
    task.add_argument("--validation-fraction", type=float, default=0.1, help="documents held out (default: 0.1)")
    task.set_defaults(run=_make_task)

    demo = commands.add_parser("demo", help="train tokenizers and tiny BERT, GPT and ELMo models on the embedded "
                                            "corpus, then fill masks, generate text and extract features")
    demo.add_argument("--out", default="hfcm-demo")
    demo.add_argument("--families", nargs="+", choices=["bert", "gpt", "elmo"], default=["bert", "gpt", "elmo"])
    demo.add_argument("--step-fraction", type=float, default=1.0,
                      help="shorten every training run to this fraction of its steps (e.g. 0.05 for a smoke test)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ValueError, OSError) as err:
        print(f"hfcm {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

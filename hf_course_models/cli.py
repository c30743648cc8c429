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


def _demo(args):
    from .demo import run_demo

    run_demo(args.out, steps=args.steps, seed=args.seed)


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

    demo = commands.add_parser("demo", help="train a tiny BERT on the embedded corpus, then fill masks")
    demo.add_argument("--out", default="hfcm-demo")
    demo.add_argument("--steps", type=int, default=600)
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

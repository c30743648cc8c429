"""`hfcm`: a thin command-line shell over the library (also `python -m hf_course_models`)."""
import argparse
import json
import sys


def _train_tokenizer(args):
    from .tokenization.wordpiece import train_wordpiece_tokenizer

    tokenizer = train_wordpiece_tokenizer(
        args.files, vocab_size=args.vocab_size, min_frequency=args.min_frequency,
        lowercase=not args.cased, model_max_length=args.model_max_length, show_progress=True,
    )
    tokenizer.save_pretrained(args.out)
    print(f"Saved a {len(tokenizer)}-token WordPiece tokenizer to {args.out}")


def _convert(args):
    from .convert import convert_checkpoint

    out = convert_checkpoint(args.src, args.out, to=args.to)
    print(f"Converted {args.src} -> {out}")


def _pipeline_output(task, model, text, **kwargs):
    from transformers import pipeline

    return pipeline(task, model=model, **kwargs)(text)


def _fill_mask(args):
    for guess in _pipeline_output("fill-mask", args.model, args.text, top_k=args.top_k):
        print(f"{guess['score']:.4f}  {guess['sequence']}")


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
    train.add_argument("kind", choices=["wordpiece"])
    train.add_argument("--files", nargs="+", required=True, help="UTF-8 text files")
    train.add_argument("--vocab-size", type=int, default=30522)
    train.add_argument("--min-frequency", type=int, default=2)
    train.add_argument("--cased", action="store_true", help="keep upper case (default: lower-case)")
    train.add_argument("--model-max-length", type=int, default=512)
    train.add_argument("--out", required=True)
    train.set_defaults(run=_train_tokenizer)

    convert = commands.add_parser("convert", help="convert a transformers BERT checkpoint to ours, or back")
    convert.add_argument("src")
    convert.add_argument("out")
    convert.add_argument("--to", choices=["hfcm", "transformers"], default="hfcm")
    convert.set_defaults(run=_convert)

    fill = commands.add_parser("fill-mask", help="predict the [MASK] token(s) of a text")
    fill.add_argument("model")
    fill.add_argument("text")
    fill.add_argument("--top-k", type=int, default=5)
    fill.set_defaults(run=_fill_mask)

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

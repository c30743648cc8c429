"""Run AllenNLP's `_ElmoBiLm` on batches of tokenised sentences in the oracle environment; save what it returns.

    cd tests && python -m allennlp_oracle.runner REQUEST.json RESULT.npz

The request names the environment and a list of jobs, all run in this one process (importing AllenNLP takes
most of the time). A job names options.json, the hdf5 weights, its batches (lists of token lists) and the state
policy: "fresh" builds a new `_ElmoBiLm` for every batch (AllenNLP's LSTM is stateful and would carry each
batch's final state into the next), "carried" runs all the job's batches through one module, as bilm-tf did
when it dumped the reference embeddings. For job j, batch b the result holds `j{j}_b{b}_char_ids` (the
character ids AllenNLP fed its CNN, BOS/EOS rows included), `j{j}_b{b}_mask` and `j{j}_b{b}_layer{k}` for every
layer; `libraries` says where torch, numpy, transformers, huggingface_hub, h5py and allennlp came from.
"""
import json
import sys

from .shims import activate, library_origins


def run(request):
    activate(request["environment"])
    import torch
    from allennlp.modules.elmo import _ElmoBiLm, batch_to_ids
    from allennlp.nn.util import add_sentence_boundary_token_ids
    import allennlp

    origins = library_origins(request["environment"]) | {"allennlp": (allennlp.__version__, allennlp.__file__)}
    arrays = {"libraries": json.dumps(origins)}
    for j, job in enumerate(request["jobs"]):
        elmo = None
        for b, sentences in enumerate(job["batches"]):
            if elmo is None or job["state"] == "fresh":
                elmo = _ElmoBiLm(job["options_file"], job["weight_file"]).eval()
            char_ids = batch_to_ids(sentences)
            with torch.no_grad():
                output = elmo(char_ids)
            encoder = elmo._token_embedder
            char_ids_with_boundaries, _ = add_sentence_boundary_token_ids(
                char_ids, (char_ids > 0).any(dim=-1), encoder._beginning_of_sentence_characters,
                encoder._end_of_sentence_characters,
            )
            arrays[f"j{j}_b{b}_char_ids"] = char_ids_with_boundaries.numpy()
            arrays[f"j{j}_b{b}_mask"] = output["mask"].numpy()
            for k, layer in enumerate(output["activations"]):
                arrays[f"j{j}_b{b}_layer{k}"] = layer.numpy()
    return arrays


def main(request_path, result_path):
    import numpy as np

    with open(request_path, encoding="utf-8") as handle:
        request = json.load(handle)
    np.savez(result_path, **run(request))


if __name__ == "__main__":
    main(*sys.argv[1:])

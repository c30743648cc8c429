"""The main job in miniature: train a WordPiece tokenizer and a tiny BERT (MLM + NSP) on the
embedded corpus, save both, reload them with the Auto classes and fill masks in English and Chinese."""
import itertools
import os

import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForMaskedLM, AutoTokenizer, get_linear_schedule_with_warmup, pipeline

from .corpora import corpus_files
from .data.corpus import read_documents
from .data.masking import DataCollatorForBertPretraining
from .data.nsp import create_nsp_examples
from .modeling.bert.configuration_hfcm_bert import HfcmBertConfig
from .modeling.bert.modeling_hfcm_bert import HfcmBertForPreTraining
from .tokenization.wordpiece import train_wordpiece_tokenizer

PROMPTS = ["Shall I compare thee to a summer's [MASK]?", "床前明月光，疑是地上[MASK]。"]


def run_demo(out_dir, steps=600, seed=0, batch_size=32, max_seq_length=64):
    torch.manual_seed(seed)
    files = corpus_files()
    tokenizer = train_wordpiece_tokenizer(files, vocab_size=4000, model_max_length=max_seq_length)
    examples = create_nsp_examples(read_documents(files), tokenizer, max_seq_length=max_seq_length,
                                   seed=seed, dupe_factor=10)
    collator = DataCollatorForBertPretraining(tokenizer, seed=seed)
    config = HfcmBertConfig(preset="tiny", vocab_size=len(tokenizer), max_position_embeddings=max_seq_length,
                            pad_token_id=tokenizer.pad_token_id)
    model = HfcmBertForPreTraining(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    schedule = get_linear_schedule_with_warmup(optimizer, steps // 10, steps)
    loader = DataLoader(examples, batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=collator,
                        generator=torch.Generator().manual_seed(seed))
    batches = itertools.chain.from_iterable(itertools.repeat(loader))  # a fresh shuffle every epoch
    print(f"Training a {model.num_parameters() / 1e6:.1f}M-parameter BERT on {len(examples)} NSP pairs "
          f"for {steps} steps")
    for step, batch in zip(range(steps), batches):
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {loss.item():.3f}")

    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    print(f"Saved model and tokenizer to {os.path.abspath(out_dir)}")

    fill_mask = pipeline("fill-mask", model=AutoModelForMaskedLM.from_pretrained(out_dir),
                         tokenizer=AutoTokenizer.from_pretrained(out_dir))
    for prompt in PROMPTS:
        print(prompt)
        for guess in fill_mask(prompt, top_k=5):
            print(f"  {guess['score']:.3f}  {guess['token_str']}")

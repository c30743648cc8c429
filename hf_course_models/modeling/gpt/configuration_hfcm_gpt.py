"""Configuration of the GPT family: GPT-1 (Radford et al. 2018) and GPT-2 (Radford et al. 2019), with the
papers' sizes as named presets.

One decoder covers both papers; they differ in where LayerNorm sits (`layer_norm_position`: "post" in GPT-1,
"pre" plus a final LayerNorm in GPT-2), in GPT-2's scaled initialisation of the residual projections, and in
vocabulary and context size.
"""
from transformers import PretrainedConfig
from transformers.activations import ACT2FN

# The GPT-2 family as released (Radford et al. 2019, Table 2; transformers' GPT2Config and its hub configs).
GPT2_SIZES = {
    "gpt2": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "gpt2-medium": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "gpt2-large": dict(hidden_size=1280, num_hidden_layers=36, num_attention_heads=20, intermediate_size=5120),
    "gpt2-xl": dict(hidden_size=1600, num_hidden_layers=48, num_attention_heads=25, intermediate_size=6400),
}

# Sizes as data. tiny / mini / small are for tests and quick experiments (the BERT family's sizes), base is
# GPT-2 124M's shape; all of these are GPT-2-style (pre-LN, 1024 context, byte-level BPE vocabulary).
# gpt1 is the 2018 paper's model: 12 x 768 post-LN blocks, 512 context, its 40,478-token BPE vocabulary,
# no special tokens and plain N(0, 0.02) initialisation.
PRESETS = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256),
    "mini": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "small": dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048),
    "base": dict(GPT2_SIZES["gpt2"]),
    "gpt1": dict(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        vocab_size=40478, max_position_embeddings=512, layer_norm_position="post", scale_residual_init=False,
        bos_token_id=None, eos_token_id=None,
    ),
    **GPT2_SIZES,
}

# GPT-2 124M, as transformers' GPT2Config defaults. The activation is GELU's tanh approximation, the one both
# papers' code uses (transformers calls it "gelu_new" for GPT-2 and OpenAI-GPT's "gelu" maps to the same
# function); "gelu_pytorch_tanh" is that function as one fused PyTorch kernel.
DEFAULTS = dict(
    vocab_size=50257,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=1024,
    hidden_act="gelu_pytorch_tanh",
    hidden_dropout_prob=0.1,
    embedding_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    classifier_dropout=None,
    layer_norm_eps=1e-5,
    initializer_range=0.02,
    layer_norm_position="pre",
    scale_residual_init=True,
    lm_loss_weight=0.5,
    bos_token_id=50256,
    eos_token_id=50256,
    pad_token_id=None,
    tie_word_embeddings=True,
    use_cache=True,
)
LAYER_NORM_POSITIONS = ("pre", "post")


class HfcmGptConfig(PretrainedConfig):
    """GPT's hyper-parameters under transformers' standard names.

    `HfcmGptConfig(preset="gpt1")` starts from a preset and overrides single values
    (`HfcmGptConfig(preset="mini", vocab_size=8000)`); without a preset the defaults are GPT-2 124M's.

    GPT-specific settings:
    - `layer_norm_position`: "pre" (GPT-2: LayerNorm before attention and MLP, plus one after the last block)
      or "post" (GPT-1 and the original Transformer: LayerNorm after each residual addition, none at the end).
    - `scale_residual_init`: initialise the two residual projections of every block with
      std = initializer_range / sqrt(2 * num_hidden_layers) (GPT-2 §2.3).
    - `embedding_dropout_prob`: dropout on token + position embeddings; `hidden_dropout_prob` on each residual
      branch; `attention_probs_dropout_prob` on the attention weights; `classifier_dropout` (None: the hidden
      dropout) before the classification and multiple-choice heads.
    - `lm_loss_weight`: lambda of GPT-1 §3.2, the weight of the auxiliary LM loss when the double-heads model is
      fine-tuned with both labels (loss = mc_loss + lambda * lm_loss).
    The aliases n_embd, n_layer, n_head, n_positions and n_inner read and write the standard names.
    """

    model_type = "hfcm_gpt"
    attribute_map = {
        "n_embd": "hidden_size",
        "n_layer": "num_hidden_layers",
        "n_head": "num_attention_heads",
        "n_positions": "max_position_embeddings",
        "n_inner": "intermediate_size",
    }

    def __init__(self, preset=None, **kwargs):
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"Unknown GPT preset {preset!r}; valid presets: {', '.join(PRESETS)}.")
        chosen = {name: kwargs.pop(name) for name in list(kwargs) if name in DEFAULTS}
        for name, value in {**DEFAULTS, **PRESETS.get(preset, {}), **chosen}.items():
            setattr(self, name, value)
        super().__init__(**kwargs)  # sets the aliases (n_embd=...) too, so they override the preset
        self._validate()

    def _validate(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.hidden_size % self.num_attention_heads:
            divisor = max(h for h in range(1, self.num_attention_heads + 1) if self.hidden_size % h == 0)
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}); e.g. use num_attention_heads={divisor}."
            )
        for name in ("hidden_dropout_prob", "embedding_dropout_prob", "attention_probs_dropout_prob"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}.")
        if self.classifier_dropout is not None and not 0 <= self.classifier_dropout < 1:
            raise ValueError(f"classifier_dropout must be None or in [0, 1), got {self.classifier_dropout!r}.")
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"Unknown hidden_act {self.hidden_act!r}; choose one of {sorted(ACT2FN)}.")
        if self.layer_norm_position not in LAYER_NORM_POSITIONS:
            raise ValueError(f"layer_norm_position must be 'pre' (GPT-2) or 'post' (GPT-1), "
                             f"got {self.layer_norm_position!r}.")
        if not self.lm_loss_weight >= 0:
            raise ValueError(f"lm_loss_weight must be >= 0 (GPT-1 uses 0.5), got {self.lm_loss_weight!r}.")
        outside = []
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            ids = value if isinstance(value, (list, tuple)) else [value]
            if any(i is not None and not 0 <= i < self.vocab_size for i in ids):
                outside.append(f"{name}={value}")
        if outside:
            raise ValueError(f"{', '.join(outside)} outside the vocabulary [0, vocab_size={self.vocab_size}): set "
                             "them to your tokenizer's ids (e.g. eos_token_id=tokenizer.eos_token_id) or to None.")

"""Configuration of BERT (Devlin et al. 2018), with the paper's sizes as named presets."""
from transformers import PretrainedConfig
from transformers.activations import ACT2FN

# Sizes as data. tiny is for tests; mini/small are Google's compact BERTs (Turc et al. 2019);
# base and large are the paper's BERT-base (110M) and BERT-large (340M).
PRESETS = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256),
    "mini": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "small": dict(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}

# BERT-base, as transformers' BertConfig defaults.
DEFAULTS = dict(
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    hidden_act="gelu",
    hidden_dropout_prob=0.1,
    attention_probs_dropout_prob=0.1,
    max_position_embeddings=512,
    type_vocab_size=2,
    initializer_range=0.02,
    layer_norm_eps=1e-12,
    classifier_dropout=None,
    sparse_mlm_head=True,
)


class HfcmBertConfig(PretrainedConfig):
    """BERT's hyper-parameters under transformers' standard names.

    `HfcmBertConfig(preset="mini", vocab_size=8000)` starts from a preset and overrides single values;
    without a preset the defaults are BERT-base's. `sparse_mlm_head`: with labels, the masked-LM head
    computes vocabulary logits only where a label is set (see `HfcmBertLMHead`).
    """

    model_type = "hfcm_bert"

    def __init__(self, preset=None, **kwargs):
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"Unknown BERT preset {preset!r}; valid presets: {', '.join(PRESETS)}.")
        chosen = {name: kwargs.pop(name) for name in list(kwargs) if name in DEFAULTS}
        for name, value in {**DEFAULTS, **PRESETS.get(preset, {}), **chosen}.items():
            setattr(self, name, value)
        self.pad_token_id = kwargs.pop("pad_token_id", 0)
        self.tie_word_embeddings = kwargs.pop("tie_word_embeddings", True)
        super().__init__(**kwargs)
        self._validate()

    def _validate(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "intermediate_size", "max_position_embeddings", "type_vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads}); e.g. use num_attention_heads="
                f"{max(h for h in range(1, self.num_attention_heads + 1) if self.hidden_size % h == 0)}."
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)!r}.")
        if self.hidden_act not in ACT2FN:
            raise ValueError(f"Unknown hidden_act {self.hidden_act!r}; choose one of {sorted(ACT2FN)}.")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"pad_token_id ({self.pad_token_id}) must lie in [0, vocab_size={self.vocab_size}).")

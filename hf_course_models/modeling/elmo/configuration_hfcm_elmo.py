"""Configuration of ELMo's biLM (Peters et al. 2018), with bilm-tf's sizes as named presets."""
from transformers import PretrainedConfig

# The original filters: 2,048 filters of widths 1-7 (bilm-tf's `char_cnn.filters`).
ORIGINAL_FILTERS = [[1, 32], [2, 32], [3, 64], [4, 128], [5, 256], [6, 512], [7, 1024]]

# Sizes as data. tiny is the shape of AllenNLP's test biLM (for tests); mini is a step up for quick experiments;
# small and original are the released ELMo models (13.6M and 93.6M parameters without the softmax).
PRESETS = {
    "tiny": dict(hidden_size=16, intermediate_size=64, char_embedding_size=4,
                 char_filters=[[1, 4], [2, 8], [3, 16], [4, 32], [5, 64]], num_highway_layers=2),
    "mini": dict(hidden_size=64, intermediate_size=256, char_embedding_size=8,
                 char_filters=[[1, 16], [2, 16], [3, 32], [4, 64], [5, 128]], num_highway_layers=1),
    "small": dict(hidden_size=128, intermediate_size=1024, char_filters=ORIGINAL_FILTERS, num_highway_layers=1),
    "original": dict(hidden_size=512, intermediate_size=4096, char_filters=ORIGINAL_FILTERS, num_highway_layers=2,
                     softmax_negative_samples=8192),
}

# The original ELMo's architecture. bilm-tf's softmax covered the 793,471 words of the 1B Word Benchmark; the
# default vocabulary here is a size a course tokenizer trains.
DEFAULTS = dict(
    vocab_size=32000,
    hidden_size=512,  # LSTM projection size per direction; every layer's output is 2 * hidden_size wide
    num_hidden_layers=2,  # biLSTM layers
    intermediate_size=4096,  # LSTM cell size
    char_vocab_size=262,  # UTF-8 bytes + 1, sentence/word markers 257-260, char padding 261; 0 = padding token
    max_characters_per_token=50,
    char_embedding_size=16,
    char_filters=ORIGINAL_FILTERS,  # [width, number of filters] per convolution
    num_highway_layers=2,
    char_cnn_activation="relu",
    cell_clip=3.0,  # None: no clipping
    proj_clip=3.0,  # None: no clipping
    use_skip_connections=True,  # residual connection around every biLSTM layer after the first
    num_output_representations=1,  # scalar mixes: one per downstream task
    scalar_mix_layer_norm=False,
    hidden_dropout_prob=0.1,
    classifier_dropout=None,  # None: hidden_dropout_prob
    classifier_pooling="mean",  # sequence classification: "mean" or "max" over the real tokens
    freeze_bilm=True,  # task heads use the biLM as a fixed feature extractor (the paper); False fine-tunes it
    softmax_negative_samples=None,  # training: sampled softmax with this many negatives; None: full softmax
    lstm_implementation="auto",  # "auto", "exact" or "fused": see HfcmElmoBiLstm
    initializer_range=0.02,  # task heads; the biLM itself is initialised as bilm-tf does
    layer_norm_eps=1e-12,
)

ACTIVATIONS = ("relu", "tanh")
LSTM_IMPLEMENTATIONS = ("auto", "exact", "fused")
POOLINGS = ("mean", "max")


class HfcmElmoConfig(PretrainedConfig):
    """ELMo's hyper-parameters under transformers' standard names.

    `HfcmElmoConfig(preset="small", vocab_size=8000)` starts from a preset and overrides single values; without a
    preset the architecture is the original ELMo's. `hidden_size` is the projection size of one direction (the
    token layer is duplicated to 2 * hidden_size so that every layer has the same width), `intermediate_size` the
    LSTM cell size. Word ids (`vocab_size`, pad/bos/eos) matter only to the language-model head; the biLM reads
    characters only.
    """

    model_type = "hfcm_elmo"

    def __init__(self, preset=None, **kwargs):
        if preset is not None and preset not in PRESETS:
            raise ValueError(f"Unknown ELMo preset {preset!r}; valid presets: {', '.join(PRESETS)}.")
        chosen = {name: kwargs.pop(name) for name in list(kwargs) if name in DEFAULTS}
        for name, value in {**DEFAULTS, **PRESETS.get(preset, {}), **chosen}.items():
            setattr(self, name, value)
        self.char_filters = [list(pair) for pair in self.char_filters]
        self.pad_token_id = kwargs.pop("pad_token_id", 0)
        self.bos_token_id = kwargs.pop("bos_token_id", 1)
        self.eos_token_id = kwargs.pop("eos_token_id", 2)
        self.tie_word_embeddings = kwargs.pop("tie_word_embeddings", False)  # ELMo has no input word embeddings
        super().__init__(**kwargs)
        self._validate()

    def _validate(self):
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size", "char_embedding_size",
                     "max_characters_per_token", "num_output_representations"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if not isinstance(self.num_highway_layers, int) or self.num_highway_layers < 0:
            raise ValueError(f"num_highway_layers must be a non-negative integer, got {self.num_highway_layers!r}.")
        if not isinstance(self.char_vocab_size, int) or self.char_vocab_size < 262:
            raise ValueError(f"char_vocab_size must be at least 262 (character ids run up to 261), "
                             f"got {self.char_vocab_size!r}.")
        self._validate_filters()
        for name in ("cell_clip", "proj_clip"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a positive number or None (no clipping), got {value!r}.")
        for name, value, choices in (("char_cnn_activation", self.char_cnn_activation, ACTIVATIONS),
                                     ("lstm_implementation", self.lstm_implementation, LSTM_IMPLEMENTATIONS),
                                     ("classifier_pooling", self.classifier_pooling, POOLINGS)):
            if value not in choices:
                raise ValueError(f"Unknown {name} {value!r}; choose one of {', '.join(choices)}.")
        for name in ("hidden_dropout_prob", "classifier_dropout"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value!r}.")
        negatives = self.softmax_negative_samples
        if negatives is not None and not (isinstance(negatives, int) and 1 <= negatives < self.vocab_size):
            raise ValueError(f"softmax_negative_samples must be an integer in [1, vocab_size={self.vocab_size}) or "
                             f"None for the full softmax, got {negatives!r}.")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(f"{name} ({value}) must lie in [0, vocab_size={self.vocab_size}).")

    def _validate_filters(self):
        filters = self.char_filters
        if not filters or any(len(pair) != 2 for pair in filters):
            raise ValueError(f"char_filters must be a non-empty list of [width, number of filters] pairs, "
                             f"got {filters!r}.")
        for width, count in filters:
            if not (isinstance(width, int) and isinstance(count, int) and count >= 1
                    and 1 <= width <= self.max_characters_per_token):
                raise ValueError(f"char_filters entry [{width!r}, {count!r}] must be [width, count] with integers "
                                 f"1 <= width <= max_characters_per_token ({self.max_characters_per_token}), "
                                 "count >= 1.")

    @property
    def layer_types(self):
        """What a generation cache keeps per biLSTM layer: a recurrent state, no per-token keys and values (so
        `DynamicCache(config=...)` builds transformers' "linear_attention" layers, as for Mamba)."""
        return ["linear_attention"] * self.num_hidden_layers

    @property
    def num_char_filters(self):
        """Width of the character CNN's output (the highway layers' size)."""
        return sum(count for _, count in self.char_filters)

"""ELMo (Peters et al. 2018) as Hugging Face-native classes, computing what bilm-tf computes.

Character ids -> character CNN + highway + projection (the token layer) -> two-layer biLSTM with projection,
clipping and a residual connection -> the layer stack [token layer twice, biLSTM 1, biLSTM 2], each [forward;
backward] -> scalar mixes γ Σ_j softmax(w)_j h_j (eq. 1 of the paper), one per downstream task.

Unlike AllenNLP's `_ElmoBiLm`, which carries the LSTM state from one batch to the next, every call starts
from a zero state, so a sentence gets the same vectors whatever batch it is in. The state can be passed in and
read out explicitly (`lstm_state`) to run over a long text in pieces, as bilm-tf does.

This file imports only torch, transformers and its sibling files, so it can travel with a checkpoint as remote
code.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoTokenizer, DynamicCache, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.loss.loss_utils import ForSequenceClassificationLoss
from transformers.modeling_outputs import CausalLMOutputWithPast, SequenceClassifierOutput, TokenClassifierOutput
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .bilstm import HfcmElmoBiLstm, HfcmElmoLstmLayer
from .char_encoder import HfcmElmoCharacterEncoder
from .configuration_hfcm_elmo import HfcmElmoConfig
from .sampled_softmax import sampled_softmax_loss


class HfcmElmoScalarMix(nn.Module):
    """ELMo_task = γ · Σ_j softmax(w)_j · h_j over the layer stack (Peters et al. 2018, eq. 1).

    With `layer_norm`, each layer is first normalised to zero mean and unit variance over the real positions
    of its sentence (all features together), as AllenNLP's ScalarMix does over a whole batch; per sentence, a
    sentence's vectors do not depend on the rest of its batch (for a batch of one the two are the same).
    """

    def __init__(self, num_layers, layer_norm=False, eps=1e-12):
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.gamma = nn.Parameter(torch.ones(1))
        self.layer_norm = layer_norm
        self.eps = eps

    def normalise(self, layer, mask):
        weights = mask[..., None].to(layer.dtype)
        count = (weights.sum((1, 2)) * layer.shape[-1]).clamp(min=1).view(-1, 1, 1)
        mean = (layer * weights).sum((1, 2), keepdim=True) / count
        variance = (((layer - mean) * weights) ** 2).sum((1, 2), keepdim=True) / count
        return (layer - mean) / torch.sqrt(variance + self.eps)

    def forward(self, layers, mask):
        if self.layer_norm:
            layers = [self.normalise(layer, mask) for layer in layers]
        weights = torch.softmax(self.weights, dim=0)
        mixed = sum(weight * layer for weight, layer in zip(weights, layers))
        return self.gamma * mixed * mask[..., None]


@dataclass
class HfcmElmoModelOutput(ModelOutput):
    """`last_hidden_state` is the first scalar mix ([B, T, 2·hidden_size], what feature extraction returns).

    `layer_activations` (a tuple, one [B, T, 2·hidden_size] tensor per layer) is the layer stack: the token
    layer duplicated, then each biLSTM layer as [forward; backward]; zeros at padding, `<S>`/`</S>` included.
    `mixed_representations` is the tuple of scalar mixes. Both are views of the batch-first tensors
    `all_layer_activations` [B, layers, T, D] and `all_mixed_representations` [B, mixes, T, D], which is how
    they are stored: pipelines split outputs along the first axis. `lstm_state` is the final state when one was
    passed in.
    """

    last_hidden_state: torch.FloatTensor | None = None
    all_mixed_representations: torch.FloatTensor | None = None
    all_layer_activations: torch.FloatTensor | None = None
    mask: torch.BoolTensor | None = None
    lstm_state: tuple[torch.FloatTensor, torch.FloatTensor] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None

    @property
    def layer_activations(self):
        return tuple(self.all_layer_activations.unbind(1))

    @property
    def mixed_representations(self):
        if self.all_mixed_representations is None:
            return ()
        return tuple(self.all_mixed_representations.unbind(1))


class HfcmElmoPreTrainedModel(PreTrainedModel):
    config_class = HfcmElmoConfig
    base_model_prefix = "elmo"
    # The losses are means over their own targets; Trainer then scales them for gradient accumulation itself.
    accepts_loss_kwargs = False
    _no_split_modules = ["HfcmElmoCharacterEncoder", "HfcmElmoLstmLayer"]

    @torch.no_grad()
    def _init_weights(self, module):
        """bilm-tf's initialisation for the biLM; `initializer_range` for the task heads."""
        kind = getattr(module, "hfcm_init", None)
        if kind == "char_embedding":
            init.uniform_(module.weight, -1.0, 1.0)
            if not getattr(module.weight, "_is_hf_initialized", False):
                module.weight[module.padding_idx].zero_()
        elif kind == "char_convolution":
            if self.config.char_cnn_activation == "relu":
                init.uniform_(module.weight, -0.05, 0.05)
            else:
                init.normal_(module.weight, 0.0, math.sqrt(1.0 / (module.kernel_size[0] * module.in_channels)))
            init.zeros_(module.bias)
        elif kind in ("highway_carry", "highway_transform", "char_projection"):
            init.normal_(module.weight, 0.0, math.sqrt(1.0 / module.in_features))
            init.constant_(module.bias, -2.0 if kind == "highway_carry" else 0.0)  # carry the input at first
        elif kind == "softmax":
            init.normal_(module.weight, 0.0, 1.0 / math.sqrt(module.in_features))
            init.zeros_(module.bias)
        elif isinstance(module, HfcmElmoLstmLayer):
            self._init_lstm_layer(module)
        elif isinstance(module, HfcmElmoScalarMix):
            init.zeros_(module.weights)
            init.ones_(module.gamma)
        else:
            super()._init_weights(module)

    @staticmethod
    def _init_lstm_layer(layer):
        # TF's LSTMCell: Glorot-uniform over its [x; h] -> 4·cell matrix and over the projection, zero bias
        # plus TF's forget bias of 1 (gate order i, f, g, o).
        _, gates, input_size = layer.weight_ih.shape
        projection_size = layer.weight_hh.shape[2]
        limit = math.sqrt(6.0 / (input_size + projection_size + gates))
        init.uniform_(layer.weight_ih, -limit, limit)
        init.uniform_(layer.weight_hh, -limit, limit)
        limit = math.sqrt(6.0 / (layer.cell_size + projection_size))
        init.uniform_(layer.weight_hr, -limit, limit)
        bias = torch.zeros_like(layer.bias)
        bias[:, layer.cell_size: 2 * layer.cell_size] = 1.0
        init.copy_(layer.bias, bias)


class HfcmElmoModel(HfcmElmoPreTrainedModel):
    """The biLM and its scalar mixes: character ids in, the layer stack and the mixed representations out."""

    # Loaded from a pre-trained biLM, the softmax is not needed and the mixes start as plain averages (s_j equal, γ 1).
    _keys_to_ignore_on_load_unexpected = [r"^softmax\."]
    _keys_to_ignore_on_load_missing = [r"^scalar_mixes\."]

    def __init__(self, config, add_scalar_mixes=True):
        super().__init__(config)
        self.token_embedder = HfcmElmoCharacterEncoder(config)
        self.lstm = HfcmElmoBiLstm(config)
        self.scalar_mixes = None
        self.bilm_frozen = False
        if add_scalar_mixes:
            self.scalar_mixes = nn.ModuleList(
                HfcmElmoScalarMix(config.num_hidden_layers + 1, config.scalar_mix_layer_norm, config.layer_norm_eps)
                for _ in range(config.num_output_representations)
            )
        self.post_init()

    @property
    def lstm_implementation_used(self):
        """What the last forward ran: "exact", "fused", "fused (verified: no clip binds)", ... (see bilstm.py)."""
        return self.lstm.last_implementation

    def freeze_bilm(self, frozen=True):
        """Use the biLM as a fixed feature extractor (the paper's way): no gradients, always in eval mode (no
        dropout); only the scalar mixes learn. `frozen=False` makes it trainable again."""
        self.bilm_frozen = frozen
        for module in (self.token_embedder, self.lstm):
            module.requires_grad_(not frozen)
        return self.train(self.training)

    def train(self, mode=True):
        super().train(mode)
        if self.bilm_frozen:
            self.token_embedder.eval()
            self.lstm.eval()
        return self

    def initial_lstm_state(self, batch_size):
        """A zero state to start an explicit-state run with (then pass each output's `lstm_state` on)."""
        return self.lstm.initial_state(batch_size)

    def _check_inputs(self, input_ids, char_ids, attention_mask, lstm_state):
        if char_ids is None:
            raise ValueError("ELMo reads characters: pass char_ids [batch, seq, "
                             f"{self.config.max_characters_per_token}] as HfcmElmoTokenizer returns them.")
        expected = self.config.max_characters_per_token
        if char_ids.dim() != 3 or char_ids.shape[-1] != expected:
            raise ValueError(f"char_ids must have shape [batch, seq, {expected}], got {list(char_ids.shape)}.")
        if char_ids.is_floating_point():
            raise ValueError(f"char_ids must be integer ids, got dtype {char_ids.dtype}.")
        if char_ids.numel() and (char_ids.min() < 0 or char_ids.max() >= self.config.char_vocab_size):
            bad = char_ids.min().item() if char_ids.min() < 0 else char_ids.max().item()
            raise ValueError(f"char_ids contains {bad}, outside [0, {self.config.char_vocab_size}): character ids "
                             "are UTF-8 byte + 1 with markers 257-261 and 0 for padding tokens; compute them with "
                             "HfcmElmoTokenizer.")
        for name, tensor in (("input_ids", input_ids), ("attention_mask", attention_mask)):
            if tensor is not None and tuple(tensor.shape) != tuple(char_ids.shape[:2]):
                raise ValueError(f"{name} has shape {list(tensor.shape)} but char_ids has {list(char_ids.shape[:2])} "
                                 "tokens: they must describe the same [batch, seq].")
        if lstm_state is not None:
            expected_shapes = [list(part.shape) for part in self.lstm.initial_state(char_ids.shape[0])]
            if len(lstm_state) != 2 or [list(part.shape) for part in lstm_state] != expected_shapes:
                raise ValueError(f"lstm_state must be (h, c) with shapes {expected_shapes} (see "
                                 "initial_lstm_state), got "
                                 f"{[list(getattr(part, 'shape', [])) for part in lstm_state]}.")

    def forward(self, input_ids=None, char_ids=None, attention_mask=None, output_hidden_states=None,
                return_dict=None, lstm_state=None, **kwargs):
        """`char_ids` [B, T, 50] is what is read (`input_ids`, the word ids, are accepted and ignored);
        `attention_mask` defaults to the tokens whose character ids are not all zero and must be right-padded."""
        self._check_inputs(input_ids, char_ids, attention_mask, lstm_state)
        mask = attention_mask.bool() if attention_mask is not None else (char_ids != 0).any(-1)
        if mask.shape[1] > 1 and (mask[:, 1:] & ~mask[:, :-1]).any():
            raise ValueError("attention_mask must be right-padded (real tokens first): ELMo's backward LSTM reads "
                             "each sentence from its last real token; set the tokenizer's padding_side='right'.")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.bilm_frozen):
            tokens = self.token_embedder(char_ids, mask)
            lstm_layers, final_state = self.lstm(tokens, mask, lstm_state)
        layers = torch.stack([torch.cat([tokens, tokens], dim=-1), *lstm_layers], dim=1)
        mixes = None
        if self.scalar_mixes is not None:
            mixes = torch.stack([mix(layers.unbind(1), mask) for mix in self.scalar_mixes], dim=1)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        output = HfcmElmoModelOutput(
            last_hidden_state=mixes[:, 0] if mixes is not None else layers[:, -1],
            all_mixed_representations=mixes,
            all_layer_activations=layers,
            mask=mask,
            lstm_state=final_state,
            hidden_states=layers.unbind(1) if output_hidden_states else None,
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()


@dataclass
class HfcmElmoBidirectionalLMOutput(ModelOutput):
    """`loss` = 0.5 · (`forward_loss` + `backward_loss`), each the mean NLL over its targets; the perplexities
    are exp of those. `forward_logits[b, t]` scores the word at t + 1, `backward_logits[b, t]` the word at t − 1
    (None when the sampled softmax computed the loss)."""

    loss: torch.FloatTensor | None = None
    forward_loss: torch.FloatTensor | None = None
    backward_loss: torch.FloatTensor | None = None
    forward_perplexity: torch.FloatTensor | None = None
    backward_perplexity: torch.FloatTensor | None = None
    forward_logits: torch.FloatTensor | None = None
    backward_logits: torch.FloatTensor | None = None
    lstm_state: tuple[torch.FloatTensor, torch.FloatTensor] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None


def shifted_targets(labels, mask, shift):
    """targets[b, t] = labels[b, t + shift] where both positions are real tokens and the label is set, else -100."""
    targets = torch.full_like(labels, -100)
    valid = mask & (labels != -100)
    if shift > 0:
        targets[:, :-shift] = torch.where(valid[:, shift:] & mask[:, :-shift], labels[:, shift:], -100)
    else:
        targets[:, -shift:] = torch.where(valid[:, :shift] & mask[:, -shift:], labels[:, :shift], -100)
    return targets


class _HfcmElmoLanguageModel(HfcmElmoPreTrainedModel):
    """The biLM without scalar mixes and the word softmax over its top layer: what the bidirectional LM and the
    forward LM share, parameter for parameter, so a checkpoint of one loads as the other."""

    def __init__(self, config):
        super().__init__(config)
        self.elmo = HfcmElmoModel(config, add_scalar_mixes=False)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.softmax = nn.Linear(config.hidden_size, config.vocab_size)
        self.softmax.hfcm_init = "softmax"

    def get_output_embeddings(self):
        return self.softmax

    def set_output_embeddings(self, new_embeddings):
        self.softmax = new_embeddings


class HfcmElmoForBidirectionalLM(_HfcmElmoLanguageModel):
    """bilm-tf's pre-training objective: a forward LM (next word) and a backward LM (previous word) on the top
    layer's two halves, one softmax shared by both directions, loss 0.5 · (forward + backward).

    `labels` are the word ids (usually `input_ids`; -100 and padding positions are ignored). In training mode with
    `config.softmax_negative_samples` set, the loss is bilm-tf's sampled softmax (see sampled_softmax.py; pass a
    `generator` for repeatable samples); in eval mode it is always the full softmax. A model converted from
    AllenNLP / bilm-tf weights has no softmax weights: those files do not contain them.
    """

    def __init__(self, config):
        super().__init__(config)
        self.post_init()

    def _direction_loss(self, states, targets, generator):
        selected = targets != -100
        if not selected.any():
            return states.sum() * 0.0  # nothing to predict: a zero that keeps the graph
        states, targets = states[selected], targets[selected]
        if self.training and self.config.softmax_negative_samples:
            losses = sampled_softmax_loss(states, targets, self.softmax.weight, self.softmax.bias,
                                          self.config.softmax_negative_samples, generator)
            return losses.mean()
        return F.cross_entropy(self.softmax(states).float(), targets)

    @can_return_tuple
    def forward(self, input_ids=None, char_ids=None, attention_mask=None, labels=None, lstm_state=None,
                output_hidden_states=None, generator=None, **kwargs):
        outputs = self.elmo(input_ids, char_ids, attention_mask, output_hidden_states, return_dict=True,
                            lstm_state=lstm_state)
        top = self.dropout(outputs.all_layer_activations[:, -1])
        forward_states, backward_states = top.split(self.config.hidden_size, dim=-1)
        sampled = self.training and self.config.softmax_negative_samples
        forward_logits = backward_logits = None
        if not sampled or labels is None:
            forward_logits, backward_logits = self.softmax(forward_states), self.softmax(backward_states)
        loss = forward_loss = backward_loss = forward_perplexity = backward_perplexity = None
        if labels is not None:
            forward_loss = self._direction_loss(forward_states, shifted_targets(labels, outputs.mask, 1), generator)
            backward_loss = self._direction_loss(backward_states, shifted_targets(labels, outputs.mask, -1), generator)
            loss = 0.5 * (forward_loss + backward_loss)
            forward_perplexity, backward_perplexity = forward_loss.detach().exp(), backward_loss.detach().exp()
        return HfcmElmoBidirectionalLMOutput(
            loss=loss,
            forward_loss=forward_loss,
            backward_loss=backward_loss,
            forward_perplexity=forward_perplexity,
            backward_perplexity=backward_perplexity,
            forward_logits=forward_logits,
            backward_logits=backward_logits,
            lstm_state=outputs.lstm_state,
            hidden_states=outputs.hidden_states,
        )


class HfcmElmoForCausalLM(_HfcmElmoLanguageModel, GenerationMixin):
    """The forward LM of the biLM on its own, for `generate`: a `HfcmElmoForBidirectionalLM` checkpoint loads as it
    is (same parameters; the backward LSTM's weights are loaded and never run).

    ELMo reads characters, so every word fed back needs its character ids: they come from `char_ids` where given
    (a prompt as the tokenizer encodes it, unknown words keeping their characters) and otherwise from the
    vocabulary table `word_char_ids` [vocab_size, max_characters_per_token], a non-persistent buffer filled from
    the tokenizer (`from_pretrained` does it when the directory holds an ELMo tokenizer; else call
    `set_vocabulary_char_ids(tokenizer.vocabulary_char_ids())`). The cache holds each layer's forward-LSTM state
    (h, c), so a generated word costs one character-CNN pass and one LSTM step. Padding may be on the left (the
    state is carried through it); `labels` give the forward LM's next-word loss.
    """

    def __init__(self, config):
        super().__init__(config)
        self.register_buffer("word_char_ids", torch.zeros(0, config.max_characters_per_token, dtype=torch.long),
                             persistent=False)
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        loaded = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        try:
            tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path,
                                                      trust_remote_code=kwargs.get("trust_remote_code"))
        except (OSError, ValueError):
            return loaded  # no tokenizer there: the table is set by the caller
        if len(tokenizer) <= len(tokenizer.all_special_tokens):
            return loaded  # only the config there: AutoTokenizer built an empty vocabulary from it
        if hasattr(tokenizer, "vocabulary_char_ids"):
            model.set_vocabulary_char_ids(tokenizer.vocabulary_char_ids())
        return loaded

    def set_vocabulary_char_ids(self, table):
        """Fill the id -> character ids table (`HfcmElmoTokenizer.vocabulary_char_ids()`)."""
        table = torch.as_tensor(table, dtype=torch.long, device=self.softmax.weight.device)
        expected = [self.config.vocab_size, self.config.max_characters_per_token]
        if list(table.shape) != expected:
            raise ValueError(f"The vocabulary's character table has shape {list(table.shape)}, the model needs "
                             f"{expected} (vocab_size x max_characters_per_token): use the tokenizer the model was "
                             "trained with.")
        self.word_char_ids = table

    def word_characters(self, input_ids):
        """Character ids [B, T, max_characters_per_token] of word ids [B, T], from the vocabulary table."""
        if self.word_char_ids.shape[0] == 0:
            raise ValueError("This model has no vocabulary table to turn word ids into characters: pass char_ids, or "
                             "call model.set_vocabulary_char_ids(tokenizer.vocabulary_char_ids()) first.")
        return self.word_char_ids[input_ids]

    def prepare_inputs_for_generation(self, input_ids, char_ids=None, **kwargs):
        """A prompt's own `char_ids` serve its positions; generated words are read through the table."""
        inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        if char_ids is not None:
            all_char_ids = torch.cat([char_ids, self.word_characters(input_ids[:, char_ids.shape[1]:])], dim=1)
            inputs["char_ids"] = all_char_ids[:, -inputs["input_ids"].shape[1]:]
        return inputs

    def _read_state(self, cache, batch_size):
        """The forward LSTM's (h [layers, B, P], c [layers, B, H]) after the tokens the cache has seen (zeros at
        first). A cache layer keeps [h; c] as one recurrent state."""
        if cache is None or not all(layer.is_recurrent_states_initialized[0] for layer in cache.layers):
            hidden, cell = self.elmo.lstm.initial_state(batch_size)
            return hidden[:, 0], cell[:, 0]
        saved = torch.stack([layer.recurrent_states[0] for layer in cache.layers])
        return saved.split([self.config.hidden_size, self.config.intermediate_size], dim=-1)

    @can_return_tuple
    def forward(self, input_ids=None, char_ids=None, attention_mask=None, cache=None, use_cache=None, labels=None,
                logits_to_keep=0, **kwargs):
        """`attention_mask` may cover earlier tokens too (generate passes the whole text's): its last T columns are
        this call's."""
        if char_ids is None:
            if input_ids is None:
                raise ValueError("Pass input_ids (word ids) or char_ids.")
            char_ids = self.word_characters(input_ids)
        steps = char_ids.shape[1]
        if attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape[1] > steps:
            attention_mask = attention_mask[:, -steps:]
        self.elmo._check_inputs(input_ids, char_ids, attention_mask, None)
        mask = attention_mask.bool() if attention_mask is not None else (char_ids != 0).any(-1)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        tokens = self.elmo.token_embedder(char_ids, mask)
        top, (hidden, cell) = self.elmo.lstm.forward_lm(tokens, mask, self._read_state(cache, char_ids.shape[0]))
        if use_cache:
            for index in range(self.config.num_hidden_layers):
                cache.update_recurrent_state(torch.cat([hidden[index], cell[index]], dim=-1), index)
        top = self.dropout(top)
        logits = self.softmax(top[:, -logits_to_keep:] if logits_to_keep else top)
        loss = None
        if labels is not None:
            targets = shifted_targets(labels, mask, 1)
            full_logits = logits if logits.shape[1] == steps else self.softmax(top)
            loss = F.cross_entropy(full_logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=cache if use_cache else None)


class _HfcmElmoTaskModel(HfcmElmoPreTrainedModel):
    """A task head on the first scalar mix. With `config.freeze_bilm` (the paper's feature-based use) the biLM's
    weights get no gradients and it stays in eval mode (no dropout) even in training; the mix is learned.
    `from_pretrained(..., freeze_bilm=False)` fine-tunes the biLM too."""

    def __init__(self, config):
        super().__init__(config)
        self.elmo = HfcmElmoModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * config.hidden_size, config.num_labels)
        self.post_init()
        self.elmo.freeze_bilm(config.freeze_bilm)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # Loading puts fresh (trainable) parameters in place: freeze them again.
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.elmo.freeze_bilm(model.config.freeze_bilm)
        return loaded

    def _features(self, input_ids, char_ids, attention_mask, output_hidden_states):
        return self.elmo(input_ids, char_ids, attention_mask, output_hidden_states, return_dict=True)


class HfcmElmoForSequenceClassification(_HfcmElmoTaskModel):
    """Mean (or max, `config.classifier_pooling`) of the mixed representation over the real tokens, then a linear
    classifier; regression when num_labels == 1."""

    @can_return_tuple
    def forward(self, input_ids=None, char_ids=None, attention_mask=None, labels=None, output_hidden_states=None,
                **kwargs):
        outputs = self._features(input_ids, char_ids, attention_mask, output_hidden_states)
        features, mask = outputs.last_hidden_state, outputs.mask[..., None]
        if self.config.classifier_pooling == "mean":
            pooled = features.sum(1) / mask.sum(1).clamp(min=1)
        else:
            pooled = features.masked_fill(~mask, torch.finfo(features.dtype).min).amax(1) * mask.any(1)
        logits = self.classifier(self.dropout(pooled))
        loss = ForSequenceClassificationLoss(labels, logits, self.config) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


class HfcmElmoForTokenClassification(_HfcmElmoTaskModel):
    """A linear classifier on each token's mixed representation (NER, POS); label -100 is ignored."""

    @can_return_tuple
    def forward(self, input_ids=None, char_ids=None, attention_mask=None, labels=None, output_hidden_states=None,
                **kwargs):
        outputs = self._features(input_ids, char_ids, attention_mask, output_hidden_states)
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.config.num_labels).float(), labels.view(-1), ignore_index=-100)
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


__all__ = [
    "HfcmElmoModel",
    "HfcmElmoPreTrainedModel",
    "HfcmElmoForBidirectionalLM",
    "HfcmElmoForCausalLM",
    "HfcmElmoForSequenceClassification",
    "HfcmElmoForTokenClassification",
]

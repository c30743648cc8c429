"""GPT-1 (Radford et al. 2018) and GPT-2 (Radford et al. 2019) as Hugging Face-native classes.

Token + learned position embeddings -> N decoder blocks with masked (causal) self-attention -> task heads.
The two papers differ only where the config says so: GPT-1's blocks are post-LN, GPT-2's are pre-LN with
one more LayerNorm after the last block (`layer_norm_position`). The language-model head is the token
embedding matrix itself (logits = H·W_eᵀ). Attention goes through transformers' attention interface, so
`attn_implementation="eager" | "sdpa"` switches it; keys and values are kept in transformers' caches
(DynamicCache by default, StaticCache for `torch.compile`). This file imports only torch, transformers and its
sibling config, so it can travel with a checkpoint as remote code.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.module import _has_any_global_hook  # what nn.Module.__call__ itself checks
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.loss.loss_utils import ForCausalLMLoss, ForSequenceClassificationLoss, fixed_cross_entropy
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, slice_logits_to_keep
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .configuration_hfcm_gpt import HfcmGptConfig


def eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """softmax(QKᵀ·scaling + mask)·V, returning the weights too.

    Reads every mask the mask helpers produce: boolean or additive 4-D masks; None, which (as in sdpa) means
    plain causal attention aligned to the first key; and flash attention's 2-D padding mask, which is causal
    aligned to the last key.
    """
    query_length, key_length = query.shape[2], key.shape[2]
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is None and query_length > 1:
        attention_mask = torch.ones(query_length, key_length, dtype=torch.bool, device=query.device).tril()
    elif attention_mask is not None and attention_mask.dim() == 2:
        causal = torch.ones(query_length, key_length, dtype=torch.bool, device=query.device).tril(
            key_length - query_length)
        attention_mask = causal & attention_mask.bool()[:, None, None, :]
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def sdpa_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """torch's scaled_dot_product_attention in the attention interface's calling convention.

    transformers' own sdpa function also handles grouped-query attention, position biases and NPU masks, none
    of which GPT has; its extra Python costs about 1 ms of a gpt2 decode step on our CPU (benchmarks/README.md).
    Without a mask several queries attend causally, aligned to the first key, as there."""
    is_causal = attention_mask is None and query.shape[2] > 1
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                             scale=scaling, is_causal=is_causal)
    return context.transpose(1, 2), None


@torch.compiler.assume_constant_result  # a compiled graph keeps the count it was traced with
def _intra_op_threads():
    return torch.get_num_threads()


def _decode_slices(weight, rows):
    """Into how many slices to cut `weight` for a product with `rows` vectors: on CPU one per intra-op thread for
    a decode step or a short prompt (at most 64 vectors, no autograd), so that every thread reads a slice; else 1
    (a single kernel call, so that training sums its gradients the same way at every batch size)."""
    if rows > 64 or torch.is_grad_enabled() or weight.device.type != "cpu":
        return 1
    return _intra_op_threads()


class HfcmGptProjection(nn.Module):
    """x·W + b with W stored (in_features, out_features), the layout of GPT-2's `Conv1D`.

    A decode step multiplies one vector per sequence by every weight, so it is bound by how fast the weights are
    read, and MKL runs such a product on one thread. Cut along in_features into one slice per thread, it becomes
    a batched product that every thread works on: on our 2-core CPU a decode step's products take 35 instead of
    45 ms (benchmarks/README.md, GPT section).
    """

    def __init__(self, in_features, out_features):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x):
        weight = self.weight
        rows = x.numel() // weight.shape[0]
        slices = _decode_slices(weight, rows)
        if slices == 1 or weight.shape[0] % slices:
            return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), weight).view(*x.shape[:-1], -1)
        vectors = x.reshape(slices, 1, -1) if rows == 1 else x.reshape(rows, slices, -1).transpose(0, 1)
        # Each slice's product gets bias/slices, so the sum over slices adds the bias once.
        partial = torch.baddbmm(self.bias, vectors, weight.view(slices, -1, weight.shape[1]), beta=1 / slices)
        return partial.sum(0).view(*x.shape[:-1], -1)

    def extra_repr(self):
        return f"in_features={self.weight.shape[0]}, out_features={self.weight.shape[1]}"


class HfcmGptCacheLayer(DynamicLayer):
    """transformers' DynamicLayer, but new keys and values are written into spare room instead of concatenated.

    DynamicLayer copies the whole layer cache at every step, so generating n tokens copies O(n²) values, each
    copy into freshly allocated memory. Here `keys` and `values` are views of buffers sized for `capacity`
    tokens (generate knows its max_length) that double when full. Whatever replaces the views (beam search's
    reordering, batch selection) is copied into a new buffer at the next update, as DynamicLayer would have.
    """

    def __init__(self, capacity=0):
        super().__init__()
        self.capacity = capacity
        self._buffers = self._views = None

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        if not self._writes_in_place(end):
            self._move_to_new_buffers(key_states, start, end)
        key_buffer, value_buffer = self._buffers
        key_buffer.narrow(2, start, end - start).copy_(key_states)
        value_buffer.narrow(2, start, end - start).copy_(value_states)
        self.keys, self.values = self._views = key_buffer.narrow(2, 0, end), value_buffer.narrow(2, 0, end)
        return self.keys, self.values

    def _writes_in_place(self, end):
        """Whether keys and values are still the views this layer made, with room up to `end`."""
        if self._buffers is None or end > self._buffers[0].shape[-2]:
            return False
        return self._views[0] is self.keys and self._views[1] is self.values

    def crop(self, tokens_to_remove):
        super().crop(tokens_to_remove)
        if self._views is not None:
            self._views = (self.keys, self.values)  # still the leading views of the buffers

    def _move_to_new_buffers(self, key_states, start, end):
        capacity = max(self.capacity, 2 * end)
        buffers = tuple(key_states.new_empty(*key_states.shape[:2], capacity, key_states.shape[-1]) for _ in "kv")
        if start:
            buffers[0].narrow(2, 0, start).copy_(self.keys)
            buffers[1].narrow(2, 0, start).copy_(self.values)
        self._buffers = buffers


def _written_in_place(cache, capacity=0):
    """`cache` (a new DynamicCache) with layers that grow in place, `capacity` tokens reserved at first use."""
    cache.layers = [HfcmGptCacheLayer(capacity) for _ in cache.layers]
    return cache


class HfcmGptAttention(nn.Module):
    """Multi-head masked self-attention with one fused Q/K/V projection; keys and values go through the cache."""

    def __init__(self, config, layer_idx):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        self.qkv = HfcmGptProjection(config.hidden_size, 3 * config.hidden_size)
        self.out = HfcmGptProjection(config.hidden_size, config.hidden_size)
        self.out.is_residual_projection = True

    def forward(self, hidden_states, attention_mask=None, cache=None, output_attentions=False):
        batch_size, seq_length, hidden_size = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch_size, seq_length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx)
        # sdpa cannot return attention weights: fall back to eager for calls that ask for them.
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention = (sdpa_attention if implementation == "sdpa"
                     else ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention))
        context, weights = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.config.attention_probs_dropout_prob if self.training else 0.0,
            scaling=self.scaling,
        )
        return self.out(context.reshape(batch_size, seq_length, hidden_size)), weights


class HfcmGptMLP(nn.Module):
    """Position-wise feed-forward network: hidden -> intermediate -> activation -> hidden."""

    def __init__(self, config):
        super().__init__()
        self.intermediate = HfcmGptProjection(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.output = HfcmGptProjection(config.intermediate_size, config.hidden_size)
        self.output.is_residual_projection = True

    def forward(self, hidden_states):
        return self.output(self.activation(self.intermediate(hidden_states)))


class HfcmGptBlock(GradientCheckpointingLayer):
    """A decoder block. Pre-LN (GPT-2 §2.3): x + Attn(LN(x)), then x + MLP(LN(x)).
    Post-LN (GPT-1, as the original Transformer): LN(x + Attn(x)), then LN(x + MLP(x))."""

    def __init__(self, config, layer_idx):
        super().__init__()
        self.pre_norm = config.layer_norm_position == "pre"
        self.attention = HfcmGptAttention(config, layer_idx)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = HfcmGptMLP(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, attention_mask=None, cache=None, output_attentions=False):
        if self.pre_norm:
            attended, weights = self.attention(self.attention_norm(hidden_states), attention_mask, cache,
                                               output_attentions)
            hidden_states = hidden_states + self.residual_dropout(attended)
            return hidden_states + self.residual_dropout(self.mlp(self.mlp_norm(hidden_states))), weights
        attended, weights = self.attention(hidden_states, attention_mask, cache, output_attentions)
        hidden_states = self.attention_norm(hidden_states + self.residual_dropout(attended))
        return self.mlp_norm(hidden_states + self.residual_dropout(self.mlp(hidden_states))), weights

    def residual_dropout(self, x):
        # Called only in training: an eval-mode nn.Dropout still costs ~10 µs a call, 24 calls a decode step.
        return self.dropout(x) if self.training else x

    def forward_one_token(self, hidden_states, cache):
        """`forward` for one new token per sequence with no mask and no dropout, the submodules' `forward` methods
        called directly; None where that would differ from calling them (a hook, a compiled or replaced module).

        A gpt2 decode step calls ten modules a block, and after each weight product, which evicts the caches, every
        call, attribute and config look-up costs several times what it costs warm: skipping `nn.Module.__call__`, the
        attention interface and GradientCheckpointingLayer saves ~1.3 ms (3%) of a step (benchmarks/README.md).
        The operations are forward's own, in its order (less the permute and transpose that one position makes
        views): the logits are bitwise equal (tests)."""
        attention, mlp = self.attention, self.mlp
        if type(attention) is not HfcmGptAttention or type(mlp) is not HfcmGptMLP:
            return None
        attention_norm, qkv, out = self.attention_norm, attention.qkv, attention.out
        mlp_norm, intermediate, activation, output = self.mlp_norm, mlp.intermediate, mlp.activation, mlp.output
        if not _called_plainly(self, attention, mlp, attention_norm, qkv, out, mlp_norm, intermediate, activation,
                               output):
            return None
        batch_size = hidden_states.shape[0]
        residual = hidden_states
        if self.pre_norm:
            hidden_states = attention_norm.forward(hidden_states)
        # With one position, (batch, 1, 3, heads, head_dim) and (batch, 3, heads, 1, head_dim) are the same memory,
        # and so are sdpa's (batch, heads, 1, head_dim) and (batch, 1, hidden): views, no permute or transpose.
        query, key, value = qkv.forward(hidden_states).view(
            batch_size, 3, attention.num_heads, 1, attention.head_dim).unbind(1)
        key, value = cache.update(key, value, attention.layer_idx)
        context = F.scaled_dot_product_attention(query, key, value, scale=attention.scaling)
        hidden_states = residual + out.forward(context.view(batch_size, 1, -1))
        if self.pre_norm:
            return hidden_states + output.forward(activation.forward(intermediate.forward(mlp_norm.forward(
                hidden_states))))
        hidden_states = attention_norm.forward(hidden_states)
        return mlp_norm.forward(hidden_states + output.forward(activation.forward(intermediate.forward(
            hidden_states))))


def _called_plainly(*modules):
    """Whether calling each module would run only its forward: no hook, and not compiled with `module.compile()`."""
    return not any(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                   or module._backward_pre_hooks or module._compiled_call_impl is not None for module in modules)


class HfcmGptPreTrainedModel(PreTrainedModel):
    config_class = HfcmGptConfig
    base_model_prefix = "transformer"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _can_compile_fullgraph = True
    _no_split_modules = ["HfcmGptBlock"]

    def _init_weights(self, module):
        # GPT-2 §2.3: "scale the weights of residual layers at initialization by a factor of 1/√N where N is the
        # number of residual layers" -- two per block (attention and MLP).
        if getattr(module, "is_residual_projection", False) and self.config.scale_residual_init:
            std = self.config.initializer_range / math.sqrt(2 * self.config.num_hidden_layers)
            init.normal_(module.weight, mean=0.0, std=std)
            init.zeros_(module.bias)
        elif isinstance(module, HfcmGptProjection):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class HfcmGptModel(HfcmGptPreTrainedModel):
    """The decoder: token and position embeddings, the blocks and (pre-LN) the final LayerNorm."""

    def __init__(self, config):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.wpe = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.dropout = nn.Dropout(config.embedding_dropout_prob)
        self.layers = nn.ModuleList(HfcmGptBlock(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = (nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
                           if config.layer_norm_position == "pre" else None)
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def set_input_embeddings(self, value):
        self.wte = value

    @staticmethod
    def _outside(ids, size):
        """The first of min(ids), max(ids) outside [0, size), or None (one reduction; skipped when compiling)."""
        if torch.compiler.is_compiling() or ids is None or not ids.numel():
            return None
        low, high = (int(value) for value in torch.aminmax(ids))
        return low if low < 0 else high if high >= size else None

    def _position_ids(self, attention_mask, past_length, seq_length, device):
        if attention_mask is not None and attention_mask.dim() == 2:
            # As generate does: positions count the real tokens, so a left-padded row gets the positions it
            # would have alone.
            positions = attention_mask.long().cumsum(-1) - 1
            return positions.masked_fill(attention_mask == 0, 0)[:, -seq_length:]
        return (torch.arange(seq_length, device=device) + past_length).unsqueeze(0)

    def _causal_mask(self, attention_mask, inputs_embeds, cache, position_ids, past_length, positions_given):
        """The mask for the attention functions, or None where the attention function needs none."""
        # generate passes an all-ones mask at every step of an unpadded batch; one reduction tells, where building
        # the mask costs about a millisecond of Python per step only to find that none is needed.
        no_padding = attention_mask is None or (
            attention_mask.dim() == 2 and not torch.compiler.is_compiling() and bool(attention_mask.all()))
        unpadded = no_padding and not (cache is not None and cache.is_compileable)
        # Given position ids without a cache may describe packed sequences, which create_causal_mask detects.
        if unpadded and (cache is not None or not positions_given):
            if inputs_embeds.shape[1] == 1:
                return None  # one new token attends to every cached one
            if past_length == 0 and self.config._attn_implementation == "sdpa":
                return None  # sdpa's is_causal fast path
        return create_causal_mask(config=self.config, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                  cache=cache, position_ids=position_ids)

    def _forward_one_token_allowed(self, seq_length, mask, cache, output_attentions):
        """Whether the blocks may run `forward_one_token`: a decode step (one token per sequence, no mask) in eval
        mode through sdpa, not traced or compiled, and with no global module hook."""
        return (seq_length == 1 and mask is None and cache is not None and not self.training
                and not output_attentions and self.config._attn_implementation == "sdpa"
                and not torch.compiler.is_compiling() and not torch.jit.is_tracing() and not _has_any_global_hook())

    @can_return_tuple
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        **kwargs,
    ):
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        # Training needs no cache; building one would copy every layer's keys and values for nothing.
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        vocab_size = self.config.vocab_size
        if (bad := self._outside(input_ids, vocab_size)) is not None:
            raise ValueError(f"input_ids contains {bad}, outside [0, {vocab_size}): the tokenizer does not match the "
                             "model; call model.resize_token_embeddings(len(tokenizer)).")
        if inputs_embeds is None:
            inputs_embeds = self.wte(input_ids)
        if use_cache and cache is None:
            cache = _written_in_place(DynamicCache(config=self.config))

        past_length = cache.get_seq_length() if cache is not None else 0
        seq_length = inputs_embeds.shape[1]
        positions_given = position_ids is not None
        if not positions_given:
            position_ids = self._position_ids(attention_mask, past_length, seq_length, inputs_embeds.device)
        context = self.config.max_position_embeddings
        if (bad := self._outside(position_ids, context)) is not None:
            raise ValueError(
                f"position_ids contains {bad}, outside [0, {context}): the cached and new tokens together must fit "
                f"the model's context of {context} tokens (max_position_embeddings); truncate the input "
                f"(tokenizer(..., truncation=True, max_length={context})) or start again with an empty cache."
            )

        hidden_states = self.dropout(inputs_embeds + self.wpe(position_ids))
        mask = self._causal_mask(attention_mask, inputs_embeds, cache, position_ids, past_length, positions_given)

        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        one_token_calls = self._forward_one_token_allowed(seq_length, mask, cache, output_attentions)
        for layer in self.layers:
            hidden = (layer.forward_one_token(hidden_states, cache)
                      if one_token_calls and type(layer) is HfcmGptBlock else None)
            if hidden is None:
                hidden, weights = layer(hidden_states, mask, cache=cache, output_attentions=output_attentions)
            hidden_states = hidden
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)
        if self.final_norm is not None:
            hidden_states = self.final_norm(hidden_states)
            if output_hidden_states:  # the last entry is the output, as in transformers' GPT-2
                all_hidden_states = all_hidden_states[:-1] + (hidden_states,)

        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            cache=cache if use_cache else None,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )


class HfcmGptForCausalLM(HfcmGptPreTrainedModel, GenerationMixin):
    """The language model: next-token logits from the decoder's output and the tied embedding matrix."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.transformer = HfcmGptModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    @can_return_tuple
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        output_attentions=None,
        output_hidden_states=None,
        logits_to_keep=0,
        **kwargs,
    ):
        """`labels` are the input ids themselves (the shift happens inside); -100 is ignored.
        `logits_to_keep`: 0 computes logits everywhere, n only for the last n positions (generate uses 1)."""
        outputs = self.transformer(input_ids, attention_mask, position_ids, cache, inputs_embeds, use_cache,
                                   output_attentions, output_hidden_states, return_dict=True)
        logits = _lm_logits(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep), self.lm_head)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits, labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache,
                                      hidden_states=outputs.hidden_states, attentions=outputs.attentions)

    # generate() hooks: transformers reaches these with the merged generation settings, before any decoding.

    def _prepare_cache_for_generation(self, generation_config, model_kwargs, *args, **kwargs):
        super()._prepare_cache_for_generation(generation_config, model_kwargs, *args, **kwargs)
        cache = model_kwargs.get("cache")
        # Only the default cache generate made itself: a user's cache, static and offloaded caches are kept.
        if type(cache) is DynamicCache and not cache.offloading and not getattr(cache, "_is_user_defined", False) \
                and all(type(layer) is DynamicLayer and not layer.is_initialized for layer in cache.layers):
            _written_in_place(cache, capacity=generation_config.max_length)

    def _prepare_generation_config(self, generation_config, **kwargs):
        generation_config, model_kwargs = super()._prepare_generation_config(generation_config, **kwargs)
        _check_sampling_settings(generation_config)
        _check_pad_token_for_padded_batch(generation_config, model_kwargs.get("attention_mask"))
        return generation_config, model_kwargs

    def _validate_generated_length(self, generation_config, input_ids_length, has_default_max_length):
        # transformers only warns here and fails at the first position beyond the table with an IndexError.
        context, max_length = self.config.max_position_embeddings, generation_config.max_length
        if input_ids_length >= context:
            raise ValueError(
                f"The prompt has {input_ids_length} tokens, which leaves no room to generate within the model's "
                f"context of {context} tokens (max_position_embeddings): truncate the prompt so that prompt tokens "
                f"+ max_new_tokens <= {context}, e.g. tokenizer(..., truncation=True, max_length={context} - "
                "max_new_tokens) with tokenizer.truncation_side = 'left' to keep its end."
            )
        if max_length > context:
            raise ValueError(
                f"The prompt has {input_ids_length} tokens and max_new_tokens={max_length - input_ids_length} "
                f"would make the sequence {max_length} tokens long, beyond the model's context of {context} tokens "
                f"(max_position_embeddings): use max_new_tokens <= {context - input_ids_length}, or shorten the "
                "prompt."
            )
        super()._validate_generated_length(generation_config, input_ids_length, has_default_max_length)


def _lm_logits(hidden_states, lm_head):
    """lm_head(hidden_states) = hidden_states·W_eᵀ. A decode step (one position per sequence) computes it as
    (W_e·hidden_statesᵀ)ᵀ, the same dot products: MKL reads the (vocab, hidden) matrix several times faster as the
    left operand when it meets only a few vectors (batch 8, GPT-2's vocabulary: 47 vs 138 ms on our CPU); with
    its rows cut into one block per thread, every thread reads a block (batch 1: 13 -> 8 ms)."""
    if not (hidden_states.dim() == 3 and hidden_states.shape[1] == 1 and lm_head.bias is None):
        return lm_head(hidden_states)
    weight, vectors = lm_head.weight, hidden_states[:, 0].T
    slices = _decode_slices(weight, vectors.shape[1])
    if slices == 1:
        logits = weight @ vectors
    else:
        whole = len(weight) - len(weight) % slices
        blocks = torch.bmm(weight[:whole].view(slices, -1, weight.shape[1]), vectors.expand(slices, -1, -1))
        logits = torch.cat([blocks.view(whole, -1), weight[whole:] @ vectors])
    # view, not unsqueeze: for one sequence .T.contiguous() keeps the strides (1, 1), and every later copy of
    # such logits (generate makes three a step) runs elementwise, 18x slower.
    return logits.T.contiguous().view(len(hidden_states), 1, -1)


def _check_sampling_settings(generation_config):
    if not generation_config.do_sample:
        return
    top_p, temperature = generation_config.top_p, generation_config.temperature
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p!r} is outside (0, 1]: it is the probability mass of the most likely tokens "
                         "to sample from; use e.g. top_p=0.9, or top_p=1.0 to sample from the whole distribution.")
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature={temperature!r} must be > 0 (it divides the logits); use e.g. "
                         "temperature=0.7, or do_sample=False for the most likely token at every step.")


def _check_pad_token_for_padded_batch(generation_config, attention_mask):
    # With an eos token transformers pads finished rows with it (and warns), as GPT-2 users rely on.
    if generation_config.pad_token_id is not None or generation_config.eos_token_id is not None:
        return
    if attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape[0] > 1 \
            and not bool(attention_mask.all()):
        raise ValueError(
            "Batched generation from padded prompts needs a pad token id, and neither the call nor "
            "model.generation_config has one (nor an eos token id to fall back to). GPT-2's tokenizer has no pad token: set "
            "`tokenizer.pad_token = tokenizer.eos_token` (and `tokenizer.padding_side = 'left'`) before "
            "tokenizing, then pass `pad_token_id=tokenizer.pad_token_id` to generate, or set it once with "
            "`model.generation_config.pad_token_id = tokenizer.pad_token_id`."
        )


def _last_token_index(input_ids, attention_mask, pad_token_id, batch_size, seq_length, device):
    """Index of each row's last real token, for left- and right-padded rows alike: from the attention mask,
    else from the pad token id (as transformers), else the last position."""
    positions = torch.arange(seq_length, device=device)
    if attention_mask is not None:
        return (positions * attention_mask.to(device=device, dtype=torch.long)).argmax(-1)
    if input_ids is not None and pad_token_id is not None:
        return (positions * (input_ids != pad_token_id).long()).argmax(-1)
    return torch.full((batch_size,), seq_length - 1, device=device)


def _classifier_dropout(config):
    return nn.Dropout(
        config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
    )


class HfcmGptForSequenceClassification(HfcmGptPreTrainedModel):
    """GPT-1's fine-tuning head (§3.2): a linear classifier on the decoder's output at the last real token.
    Regression when num_labels == 1; problem_type as in transformers."""

    def __init__(self, config):
        super().__init__(config)
        self.transformer = HfcmGptModel(config)
        self.dropout = _classifier_dropout(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, inputs_embeds=None,
                labels=None, use_cache=False, output_attentions=None, output_hidden_states=None, **kwargs):
        outputs = self.transformer(input_ids, attention_mask, position_ids, cache, inputs_embeds, use_cache,
                                   output_attentions, output_hidden_states, return_dict=True)
        hidden_states = outputs.last_hidden_state
        batch_size, seq_length = hidden_states.shape[:2]
        last = _last_token_index(input_ids, attention_mask, self.config.pad_token_id, batch_size, seq_length,
                                 hidden_states.device)
        pooled = hidden_states[torch.arange(batch_size, device=hidden_states.device), last]
        logits = self.score(self.dropout(pooled))
        loss = ForSequenceClassificationLoss(labels, logits, self.config) if labels is not None else None
        return SequenceClassifierOutputWithPast(loss=loss, logits=logits, cache=outputs.cache,
                                                hidden_states=outputs.hidden_states, attentions=outputs.attentions)


@dataclass
class HfcmGptDoubleHeadsModelOutput(ModelOutput):
    """`loss` = `mc_loss` + lm_loss_weight * `lm_loss` when both labels are given, else whichever is."""

    loss: torch.FloatTensor | None = None
    lm_loss: torch.FloatTensor | None = None
    mc_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    mc_logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class HfcmGptDoubleHeadsModel(HfcmGptPreTrainedModel):
    """GPT-1 §3.2-3.3 fine-tuning: each example has `num_choices` token sequences (batch, num_choices, seq);
    the multiple-choice head scores each choice from its classification token (`mc_token_ids`, default: the
    last real token) and the LM head keeps language modelling as an auxiliary objective,
    loss = mc_loss + lm_loss_weight * lm_loss."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config):
        super().__init__(config)
        self.transformer = HfcmGptModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.dropout = _classifier_dropout(config)
        self.multiple_choice_head = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, mc_token_ids=None,
                labels=None, mc_labels=None, output_attentions=None, output_hidden_states=None, **kwargs):
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference is None or reference.dim() < 3:
            raise ValueError("The double-heads model expects inputs of shape (batch, num_choices, seq_length).")
        batch_size, num_choices, seq_length = reference.shape[:3]

        def flat(tensor):
            return tensor.flatten(0, 1) if tensor is not None else None

        outputs = self.transformer(flat(input_ids), flat(attention_mask), flat(position_ids),
                                   inputs_embeds=flat(inputs_embeds), use_cache=False,
                                   output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                                   return_dict=True)
        hidden_states = outputs.last_hidden_state
        logits = self.lm_head(hidden_states)
        if mc_token_ids is None:
            token_index = _last_token_index(None, flat(attention_mask), None, batch_size * num_choices, seq_length,
                                            hidden_states.device)
        else:
            token_index = mc_token_ids.reshape(-1)
        summary = hidden_states[torch.arange(batch_size * num_choices, device=hidden_states.device), token_index]
        mc_logits = self.multiple_choice_head(self.dropout(summary)).view(batch_size, num_choices)

        lm_loss = mc_loss = None
        if labels is not None:
            lm_loss = ForCausalLMLoss(logits, flat(labels), vocab_size=self.config.vocab_size, **kwargs)
        if mc_labels is not None:
            mc_loss = fixed_cross_entropy(mc_logits.float(), mc_labels.view(-1))
        if lm_loss is not None and mc_loss is not None:
            loss = mc_loss + self.config.lm_loss_weight * lm_loss
        else:
            loss = lm_loss if lm_loss is not None else mc_loss
        return HfcmGptDoubleHeadsModelOutput(
            loss=loss,
            lm_loss=lm_loss,
            mc_loss=mc_loss,
            logits=logits.view(batch_size, num_choices, seq_length, -1),
            mc_logits=mc_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = [
    "HfcmGptPreTrainedModel",
    "HfcmGptModel",
    "HfcmGptForCausalLM",
    "HfcmGptForSequenceClassification",
    "HfcmGptDoubleHeadsModel",
]

"""BERT (Devlin et al. 2018) as Hugging Face-native classes.

Embeddings (token + segment + learned position, LayerNorm, dropout) -> N post-LN Transformer encoder
blocks with bidirectional self-attention -> task heads. Attention goes through transformers' attention
interface, so `attn_implementation="eager" | "sdpa"` switches it. This file imports only torch,
transformers and its sibling config, so it can travel with a checkpoint as remote code.
"""
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN
from transformers.loss.loss_utils import (
    ForQuestionAnsweringLoss,
    ForSequenceClassificationLoss,
    fixed_cross_entropy,
)
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    NextSentencePredictorOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .configuration_hfcm_bert import HfcmBertConfig


class HfcmBertEmbeddings(nn.Module):
    """Token + segment + learned position embeddings, summed, then LayerNorm and dropout."""

    def __init__(self, config):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    @can_return_tuple
    def forward(self, input_ids=None, token_type_ids=None, position_ids=None, inputs_embeds=None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)
        batch_size, seq_length = inputs_embeds.shape[:2]
        if position_ids is None:
            position_ids = torch.arange(seq_length, device=inputs_embeds.device).unsqueeze(0)
        if token_type_ids is None:
            token_type_ids = torch.zeros((batch_size, seq_length), dtype=torch.long, device=inputs_embeds.device)
        embeddings = inputs_embeds + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.layer_norm(embeddings))


def eager_attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """softmax(QKᵀ·scaling + mask)·V, returning the weights too; accepts additive or boolean masks."""
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None and attention_mask.dim() == 2:  # (batch, seq) padding mask of flash_attention_*
        attention_mask = attention_mask.bool()[:, None, None, :]
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


class HfcmBertSelfAttention(nn.Module):
    """Multi-head bidirectional self-attention with one fused Q/K/V projection."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False  # sdpa treats a None mask as causal unless told otherwise
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        batch_size, seq_length, hidden_size = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch_size, seq_length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        # sdpa cannot return attention weights: fall back to eager for calls that ask for them.
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention)
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


class HfcmBertLayer(GradientCheckpointingLayer):
    """Post-LN encoder block: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, config):
        super().__init__()
        self.attention = HfcmBertSelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = ACT2FN[config.hidden_act]
        self.output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.output_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states, attention_mask=None, output_attentions=False):
        attended, weights = self.attention(hidden_states, attention_mask, output_attentions)
        hidden_states = self.attention_norm(hidden_states + self.dropout(attended))
        transformed = self.output(self.activation(self.intermediate(hidden_states)))
        return self.output_norm(hidden_states + self.dropout(transformed)), weights


class HfcmBertPooler(nn.Module):
    """dense + tanh on the [CLS] position: the sentence vector the NSP and classifier heads read."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states):
        return torch.tanh(self.dense(hidden_states[:, 0]))


class HfcmBertPreTrainedModel(PreTrainedModel):
    config_class = HfcmBertConfig
    base_model_prefix = "bert"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _no_split_modules = ["HfcmBertEmbeddings", "HfcmBertLayer"]


class HfcmBertModel(HfcmBertPreTrainedModel):
    """The encoder: embeddings, the blocks and (optionally) the pooler."""

    def __init__(self, config, add_pooling_layer=True):
        super().__init__(config)
        self.embeddings = HfcmBertEmbeddings(config)
        self.layers = nn.ModuleList(HfcmBertLayer(config) for _ in range(config.num_hidden_layers))
        self.pooler = HfcmBertPooler(config) if add_pooling_layer else None
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.embeddings.word_embeddings = value

    def _check_inputs(self, input_ids, inputs_embeds, token_type_ids, position_ids):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        seq_length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        limit = self.config.max_position_embeddings
        if seq_length > limit:
            raise ValueError(
                f"Input sequence length {seq_length} exceeds max_position_embeddings {limit}: truncate the input "
                f"(tokenizer(..., truncation=True, max_length={limit})) or split it into windows."
            )
        checks = (
            ("input_ids", input_ids, self.config.vocab_size,
             "the tokenizer does not match the model; call model.resize_token_embeddings(len(tokenizer))"),
            ("token_type_ids", token_type_ids, self.config.type_vocab_size,
             f"BERT has {self.config.type_vocab_size} segment ids; use 0 for sentence A and 1 for sentence B"),
            ("position_ids", position_ids, limit, "positions count from 0 and must stay below max_position_embeddings"),
        )
        for name, ids, size, fix in checks:
            if ids is not None and ids.numel() and (ids.max() >= size or ids.min() < 0):
                bad = ids.max().item() if ids.max() >= size else ids.min().item()
                raise ValueError(f"{name} contains {bad}, outside [0, {size}): {fix}.")

    @can_return_tuple
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        token_type_ids=None,
        position_ids=None,
        inputs_embeds=None,
        output_attentions=None,
        output_hidden_states=None,
        **kwargs,
    ):
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        self._check_inputs(input_ids, inputs_embeds, token_type_ids, position_ids)

        hidden_states = self.embeddings(input_ids, token_type_ids, position_ids, inputs_embeds)
        attention_mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask
        )
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, attention_mask, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)

        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states,
            pooler_output=self.pooler(hidden_states) if self.pooler is not None else None,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )


class HfcmBertLMHead(nn.Module):
    """Masked-LM head: dense + activation + LayerNorm, then a decoder tied to the word embeddings
    with its own bias."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = ACT2FN[config.hidden_act]
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden_states):
        return self.decoder(self.layer_norm(self.activation(self.dense(hidden_states))))


def masked_lm_logits_and_loss(lm_head, config, sequence_output, labels, num_items_in_batch=None):
    """Vocabulary logits and the MLM loss.

    With labels and `config.sparse_mlm_head`, the head runs only where a label is set (~15% of tokens):
    the loss equals the dense head's, at a fraction of the cost, and `logits` has shape
    (number of labelled tokens, vocab_size), row i for the i-th labelled token in row-major order.
    """
    if labels is None:
        return lm_head(sequence_output), None
    if not config.sparse_mlm_head:
        logits = lm_head(sequence_output)
        loss = fixed_cross_entropy(
            logits.view(-1, config.vocab_size).float(), labels.view(-1), num_items_in_batch, ignore_index=-100
        )
        return logits, loss
    selected = labels != -100
    logits = lm_head(sequence_output[selected])
    if logits.shape[0] == 0:
        # Nothing to predict in this batch: a zero loss that keeps the graph, rather than a NaN mean.
        return logits, logits.sum() * 0.0
    return logits, fixed_cross_entropy(logits.float(), labels[selected], num_items_in_batch, ignore_index=-100)


class _HfcmBertWithLMHead(HfcmBertPreTrainedModel):
    _tied_weights_keys = {"lm_head.decoder.weight": "bert.embeddings.word_embeddings.weight"}

    def get_output_embeddings(self):
        return self.lm_head.decoder

    def set_output_embeddings(self, new_embeddings):
        self.lm_head.decoder = new_embeddings


@dataclass
class HfcmBertForPreTrainingOutput(ModelOutput):
    """`loss` = `mlm_loss` + `nsp_loss` (whichever labels were given)."""

    loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    nsp_loss: torch.FloatTensor | None = None
    prediction_logits: torch.FloatTensor | None = None
    seq_relationship_logits: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class HfcmBertForPreTraining(_HfcmBertWithLMHead):
    """BERT's pre-training model: masked LM + next-sentence prediction, loss = sum of both."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = HfcmBertModel(config)
        self.lm_head = HfcmBertLMHead(config)
        self.nsp_head = nn.Linear(config.hidden_size, 2)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, next_sentence_label=None, output_attentions=None,
                output_hidden_states=None, **kwargs):
        outputs = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                            output_attentions, output_hidden_states, return_dict=True)
        prediction_logits, mlm_loss = masked_lm_logits_and_loss(
            self.lm_head, self.config, outputs.last_hidden_state, labels, kwargs.get("num_items_in_batch")
        )
        seq_relationship_logits = self.nsp_head(outputs.pooler_output)
        nsp_loss = None
        if next_sentence_label is not None:
            nsp_loss = F.cross_entropy(seq_relationship_logits.float(), next_sentence_label.view(-1))
        losses = [part for part in (mlm_loss, nsp_loss) if part is not None]
        return HfcmBertForPreTrainingOutput(
            loss=sum(losses) if losses else None,
            mlm_loss=mlm_loss,
            nsp_loss=nsp_loss,
            prediction_logits=prediction_logits,
            seq_relationship_logits=seq_relationship_logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class HfcmBertForMaskedLM(_HfcmBertWithLMHead):
    """Masked LM only (what the fill-mask pipeline uses)."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = HfcmBertModel(config, add_pooling_layer=False)
        self.lm_head = HfcmBertLMHead(config)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                **kwargs):
        outputs = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                            output_attentions, output_hidden_states, return_dict=True)
        logits, loss = masked_lm_logits_and_loss(
            self.lm_head, self.config, outputs.last_hidden_state, labels, kwargs.get("num_items_in_batch")
        )
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                              attentions=outputs.attentions)


class HfcmBertForNextSentencePrediction(HfcmBertPreTrainedModel):
    """Is sentence B the real continuation of A? Label 0 = IsNext, 1 = NotNext (as transformers)."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = HfcmBertModel(config)
        self.nsp_head = nn.Linear(config.hidden_size, 2)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                **kwargs):
        outputs = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                            output_attentions, output_hidden_states, return_dict=True)
        logits = self.nsp_head(outputs.pooler_output)
        loss = F.cross_entropy(logits.float(), labels.view(-1)) if labels is not None else None
        return NextSentencePredictorOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                           attentions=outputs.attentions)


def _classifier_dropout(config):
    return nn.Dropout(
        config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
    )


class HfcmBertForSequenceClassification(HfcmBertPreTrainedModel):
    """Classifier on the pooled [CLS] vector; sentence pairs via token_type_ids; regression when
    num_labels == 1."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = HfcmBertModel(config)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                **kwargs):
        outputs = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                            output_attentions, output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = ForSequenceClassificationLoss(labels, logits, self.config) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                        attentions=outputs.attentions)


class HfcmBertForTokenClassification(HfcmBertPreTrainedModel):
    """A label per token (NER, POS); label -100 is ignored."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = HfcmBertModel(config, add_pooling_layer=False)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                **kwargs):
        outputs = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                            output_attentions, output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(outputs.last_hidden_state))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, self.config.num_labels).float(), labels.view(-1), ignore_index=-100)
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                     attentions=outputs.attentions)


class HfcmBertForQuestionAnswering(HfcmBertPreTrainedModel):
    """Extractive QA: start and end logits per token; loss = mean of the two span cross-entropies."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = HfcmBertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, start_positions=None, end_positions=None, output_attentions=None,
                output_hidden_states=None, **kwargs):
        outputs = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                            output_attentions, output_hidden_states, return_dict=True)
        start_logits, end_logits = self.qa_outputs(outputs.last_hidden_state).unbind(-1)
        loss = ForQuestionAnsweringLoss(start_logits, end_logits, start_positions, end_positions)
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits.contiguous(),
            end_logits=end_logits.contiguous(),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class HfcmBertForMultipleChoice(HfcmBertPreTrainedModel):
    """Inputs (batch, num_choices, seq); one score per choice from the pooled vector."""

    def __init__(self, config):
        super().__init__(config)
        self.bert = HfcmBertModel(config)
        self.dropout = _classifier_dropout(config)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                **kwargs):
        reference = input_ids if input_ids is not None else inputs_embeds
        if reference is None or reference.dim() < 3:
            raise ValueError("Multiple choice expects inputs of shape (batch, num_choices, seq_length).")
        num_choices = reference.shape[1]

        def flat(tensor):
            return tensor.flatten(0, 1) if tensor is not None else None

        outputs = self.bert(flat(input_ids), flat(attention_mask), flat(token_type_ids), flat(position_ids),
                            flat(inputs_embeds), output_attentions, output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(outputs.pooler_output)).view(-1, num_choices)
        loss = F.cross_entropy(logits.float(), labels.view(-1)) if labels is not None else None
        return MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=outputs.hidden_states,
                                         attentions=outputs.attentions)


__all__ = [
    "HfcmBertModel",
    "HfcmBertPreTrainedModel",
    "HfcmBertForPreTraining",
    "HfcmBertForMaskedLM",
    "HfcmBertForNextSentencePrediction",
    "HfcmBertForSequenceClassification",
    "HfcmBertForTokenClassification",
    "HfcmBertForQuestionAnswering",
    "HfcmBertForMultipleChoice",
]

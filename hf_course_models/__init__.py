"""hf_course_models: BERT, GPT and ELMo written from scratch as Hugging Face-native classes.

Importing the package registers every config, model and tokenizer with transformers' Auto classes.
"""
from . import registry  # noqa: F401  (registers with the Auto classes on import)
from .modeling.bert.configuration_hfcm_bert import HfcmBertConfig
from .modeling.bert.modeling_hfcm_bert import (
    HfcmBertForMaskedLM,
    HfcmBertForMultipleChoice,
    HfcmBertForNextSentencePrediction,
    HfcmBertForPreTraining,
    HfcmBertForQuestionAnswering,
    HfcmBertForSequenceClassification,
    HfcmBertForTokenClassification,
    HfcmBertModel,
)

__version__ = "0.1.0"

"""hf_course_models: BERT, GPT and ELMo written from scratch as Hugging Face-native classes.

Importing the package registers every config, model and tokenizer with transformers' Auto classes.
"""
from . import registry  # noqa: F401  (registers with the Auto classes on import)
from .data.corpus import read_documents
from .data.masking import DataCollatorForBertPretraining
from .data.nsp import create_nsp_examples
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
from .modeling.elmo.configuration_hfcm_elmo import HfcmElmoConfig
from .modeling.elmo.modeling_hfcm_elmo import (
    HfcmElmoForBidirectionalLM,
    HfcmElmoForSequenceClassification,
    HfcmElmoForTokenClassification,
    HfcmElmoModel,
)
from .modeling.gpt.configuration_hfcm_gpt import HfcmGptConfig
from .modeling.gpt.modeling_hfcm_gpt import (
    HfcmGptDoubleHeadsModel,
    HfcmGptForCausalLM,
    HfcmGptForSequenceClassification,
    HfcmGptModel,
)
from .tokenization.bpe import bpe_tokenizer_from_files, train_bpe_tokenizer
from .tokenization.elmo import HfcmElmoTokenizer, elmo_char_ids
from .tokenization.elmo_vocab import elmo_tokenizer_from_vocab, train_elmo_tokenizer
from .tokenization.wordpiece import train_wordpiece_tokenizer, wordpiece_tokenizer_from_vocab

__version__ = "0.1.0"

"""The one place that registers our configs, models and tokenizers with transformers' Auto classes, and
the question-answering pipeline."""
import functools

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForNextSentencePrediction,
    AutoModelForPreTraining,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    BertTokenizer,
    GPT2Tokenizer,
)
from transformers.pipelines import PIPELINE_REGISTRY, REMOVED_TASKS

from .modeling.bert import configuration_hfcm_bert as bert_config
from .modeling.bert import modeling_hfcm_bert as bert
from .modeling.elmo import configuration_hfcm_elmo as elmo_config
from .modeling.elmo import modeling_hfcm_elmo as elmo
from .modeling.gpt import configuration_hfcm_gpt as gpt_config
from .modeling.gpt import modeling_hfcm_gpt as gpt
from .pipelines import ExtractiveQuestionAnsweringPipeline
from .tokenization.elmo import HfcmElmoTokenizer

# (config class, {Auto class: model class}, tokenizer class). Our BERT and GPT use transformers' own
# BertTokenizer and GPT2Tokenizer, so a saved tokenizer loads even where this package is not installed.
# GPT's double-heads model has no Auto class (transformers has none for GPT2DoubleHeadsModel either).
ARCHITECTURES = [
    (
        bert_config.HfcmBertConfig,
        {
            AutoModel: bert.HfcmBertModel,
            AutoModelForPreTraining: bert.HfcmBertForPreTraining,
            AutoModelForMaskedLM: bert.HfcmBertForMaskedLM,
            AutoModelForNextSentencePrediction: bert.HfcmBertForNextSentencePrediction,
            AutoModelForSequenceClassification: bert.HfcmBertForSequenceClassification,
            AutoModelForTokenClassification: bert.HfcmBertForTokenClassification,
            AutoModelForQuestionAnswering: bert.HfcmBertForQuestionAnswering,
            AutoModelForMultipleChoice: bert.HfcmBertForMultipleChoice,
        },
        BertTokenizer,
    ),
    (
        gpt_config.HfcmGptConfig,
        {
            AutoModel: gpt.HfcmGptModel,
            AutoModelForCausalLM: gpt.HfcmGptForCausalLM,
            AutoModelForSequenceClassification: gpt.HfcmGptForSequenceClassification,
        },
        GPT2Tokenizer,
    ),
    (
        elmo_config.HfcmElmoConfig,
        {
            AutoModel: elmo.HfcmElmoModel,
            AutoModelForPreTraining: elmo.HfcmElmoForBidirectionalLM,
            AutoModelForCausalLM: elmo.HfcmElmoForCausalLM,  # the forward LM, for generate
            AutoModelForSequenceClassification: elmo.HfcmElmoForSequenceClassification,
            AutoModelForTokenClassification: elmo.HfcmElmoForTokenClassification,
        },
        HfcmElmoTokenizer,  # ours (it adds char_ids): elsewhere it loads through remote code only
    ),
]


def register_all():
    for config_class, models, tokenizer_class in ARCHITECTURES:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        for auto_class, model_class in models.items():
            auto_class.register(config_class, model_class, exist_ok=True)
        AutoTokenizer.register(config_class, tokenizer_class=tokenizer_class, exist_ok=True)
        save_remote_code(config_class, models)
    # No Auto class has a double-heads model (as in transformers); registering it only makes its save copy the
    # code, and the config's save then writes GPT's usual auto_map.
    gpt.HfcmGptDoubleHeadsModel.register_for_auto_class(AutoModelForCausalLM)
    HfcmElmoTokenizer.register_for_auto_class(AutoTokenizer)
    register_question_answering_pipeline()


def save_remote_code(config_class, models):
    """Make every `save_pretrained` / `push_to_hub` also write the architecture's code and a complete `auto_map`.

    Then a saved directory or Hub repo loads with `trust_remote_code=True` where this package is not installed;
    where it is, the registered classes above are used and the copied code is ignored. Done on every save rather
    than on request because `push_to_hub` is transformers' own: a forgotten request would publish a repo that
    only loads for people who have the package.
    """
    config_class.register_for_auto_class(AutoConfig)
    for auto_class, model_class in models.items():
        model_class.register_for_auto_class(auto_class)
    auto_map = {AutoConfig.__name__: _code_reference(config_class)}
    auto_map |= {auto_class.__name__: _code_reference(model_class) for auto_class, model_class in models.items()}
    save_config = config_class.save_pretrained

    @functools.wraps(save_config)
    def save_pretrained(self, *args, **kwargs):
        # transformers writes only the saved model's own Auto entry: restore every head's, so that a repo saved
        # from a masked LM also loads under AutoModel or AutoModelForSequenceClassification.
        self.auto_map = {**(getattr(self, "auto_map", None) or {}), **auto_map}
        return save_config(self, *args, **kwargs)

    config_class.save_pretrained = save_pretrained


def _code_reference(cls) -> str:
    """`module.Class` as `auto_map` names it: the code files are copied flat, without the package path."""
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"


def register_question_answering_pipeline():
    # transformers 5 removed its extractive question-answering pipeline; this package brings one back for its QA heads.
    REMOVED_TASKS.pop("question-answering", None)
    PIPELINE_REGISTRY.register_pipeline("question-answering", pipeline_class=ExtractiveQuestionAnsweringPipeline,
                                        pt_model=AutoModelForQuestionAnswering, type="text")


register_all()

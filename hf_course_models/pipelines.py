"""Extractive question answering, the pipeline transformers 5 removed, for our QA heads (and BERT-style others).

`pipeline("question-answering", model=directory)` works once `hf_course_models` is imported. The answer is
a span of the context: a long context is cut into overlapping windows (`max_seq_len` tokens each,
consecutive windows sharing `doc_stride` tokens), all windows of one example run as one batch, and in every
window a span of context tokens i..j (i <= j < i + max_answer_len) scores

    softmax(start_logits)[i] * softmax(end_logits)[j],

both softmaxes taken over that window's context tokens only (question, special and padding tokens left
out). The best-scoring distinct spans across all windows are returned, with character offsets into the
context. With `handle_impossible_answer=True` the [CLS] token joins both softmaxes and the null answer
(start = end = [CLS]) competes with score min over windows of softmax(start)[CLS] * softmax(end)[CLS].
"""
import torch
from transformers import Pipeline

NULL_POSITION = 0  # [CLS]: where BERT-style QA heads point to say "no answer in this window"


class ExtractiveQuestionAnsweringPipeline(Pipeline):
    """Answers `pipe(question=..., context=...)`, `pipe({"question": ..., "context": ...})` or a list of dicts.

    Parameters (at construction or per call): `top_k=1` answers (a dict for 1, else a list sorted by score),
    `max_answer_len=30` tokens, `max_seq_len=384` tokens per window (at most the tokenizer's
    `model_max_length`), `doc_stride=128` tokens of overlap (at most half a window), `max_question_len=64`
    tokens (longer questions are cut), `handle_impossible_answer=False`.
    Each answer is `{"score", "start", "end", "answer"}` with `answer == context[start:end]`.
    """

    _load_tokenizer = True
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def __call__(self, inputs=None, *, question=None, context=None, **kwargs):
        if question is not None or context is not None:
            if inputs is not None:
                raise ValueError("Pass either a {'question', 'context'} dict or question=/context=, not both.")
            inputs = {"question": question, "context": context}
        if inputs is None:
            raise ValueError("Nothing to answer: call pipe(question=..., context=...).")
        if (kwargs.get("batch_size") or self._batch_size or 1) > 1:
            raise ValueError(
                "The question-answering pipeline runs with batch_size=1: the windows of each example already "
                "go through the model as one batch. Drop batch_size."
            )
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(self, top_k=None, max_answer_len=None, max_seq_len=None, doc_stride=None,
                             max_question_len=None, handle_impossible_answer=None):
        for name, value, minimum in (("top_k", top_k, 1), ("max_answer_len", max_answer_len, 1),
                                     ("max_seq_len", max_seq_len, 1), ("doc_stride", doc_stride, 0),
                                     ("max_question_len", max_question_len, 1)):
            if value is not None and (not isinstance(value, int) or value < minimum):
                raise ValueError(f"{name}={value!r} is invalid: pass an integer >= {minimum}.")
        preprocess = dict(max_seq_len=max_seq_len, doc_stride=doc_stride, max_question_len=max_question_len)
        postprocess = dict(top_k=top_k, max_answer_len=max_answer_len,
                           handle_impossible_answer=handle_impossible_answer)
        return _given(preprocess), {}, _given(postprocess)

    def preprocess(self, inputs, max_seq_len=None, doc_stride=None, max_question_len=64):
        question, context = _question_and_context(inputs)
        max_seq_len = max_seq_len or min(self.tokenizer.model_max_length, 384)
        doc_stride = doc_stride if doc_stride is not None else min(max_seq_len // 2, 128)
        question_tokens = self._question_tokens(question)
        if len(question_tokens.input_ids) > max_question_len:
            question = question[: question_tokens.offset_mapping[max_question_len - 1][1]]
            question_tokens = self._question_tokens(question)
        room = max_seq_len - len(question_tokens.input_ids) - self.tokenizer.num_special_tokens_to_add(pair=True)
        if doc_stride >= room:
            raise ValueError(
                f"doc_stride={doc_stride} must be smaller than the {room} context tokens that a window of "
                f"max_seq_len={max_seq_len} leaves beside the question ({len(question_tokens.input_ids)} tokens) "
                "and the special tokens: lower doc_stride or max_question_len, or raise max_seq_len."
            )
        encoding = self.tokenizer(
            question, context, truncation="only_second", max_length=max_seq_len, stride=doc_stride,
            return_overflowing_tokens=True, return_offsets_mapping=True, padding=True, return_tensors="pt",
        )
        context_mask = torch.tensor([[sequence == 1 for sequence in encoding.sequence_ids(window)]
                                     for window in range(len(encoding.input_ids))])
        if not context_mask.any():
            raise ValueError(f"The context {context[:50]!r} has no tokens (only whitespace or control characters?).")
        return {
            "model_inputs": {name: encoding[name] for name in self.tokenizer.model_input_names if name in encoding},
            "context_mask": context_mask,
            "offsets": encoding.offset_mapping,
            "context": context,
        }

    def _question_tokens(self, question):
        return self.tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)

    def _forward(self, inputs):
        outputs = self.model(**inputs["model_inputs"])
        rest = {name: value for name, value in inputs.items() if name != "model_inputs"}
        return {**rest, "start_logits": outputs.start_logits, "end_logits": outputs.end_logits}

    def postprocess(self, outputs, top_k=1, max_answer_len=30, handle_impossible_answer=False):
        context_mask = outputs["context_mask"]
        allowed = context_mask.clone()
        allowed[:, NULL_POSITION] = handle_impossible_answer
        p_start = outputs["start_logits"].float().masked_fill(~allowed, float("-inf")).softmax(-1)
        p_end = outputs["end_logits"].float().masked_fill(~allowed, float("-inf")).softmax(-1)

        length = context_mask.shape[1]
        offset = torch.arange(length)[None, :] - torch.arange(length)[:, None]  # j - i
        valid = (offset >= 0) & (offset < max_answer_len) & context_mask[:, :, None] & context_mask[:, None, :]
        span_scores = (p_start[:, :, None] * p_end[:, None, :]).masked_fill(~valid, -1.0).flatten(1)
        # The best top_k spans of each window contain the best top_k distinct spans overall.
        best = span_scores.topk(min(top_k, span_scores.shape[1]), dim=-1)

        scores = {}  # (start char, end char) -> best score over the windows holding that span
        offsets = outputs["offsets"]
        for window, (values, indices) in enumerate(zip(best.values.tolist(), best.indices.tolist())):
            for score, index in zip(values, indices):
                if score < 0:  # fewer valid spans than top_k in this window
                    break
                i, j = divmod(index, length)
                span = (offsets[window, i, 0].item(), offsets[window, j, 1].item())
                scores[span] = max(score, scores.get(span, score))
        context = outputs["context"]
        answers = [{"score": score, "start": start, "end": end, "answer": context[start:end]}
                   for (start, end), score in scores.items()]
        if handle_impossible_answer:
            null_score = (p_start[:, NULL_POSITION] * p_end[:, NULL_POSITION]).min().item()
            answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda answer: answer["score"], reverse=True)[:top_k]
        return answers[0] if top_k == 1 else answers


def _given(parameters):
    return {name: value for name, value in parameters.items() if value is not None}


def _question_and_context(inputs):
    if not isinstance(inputs, dict):
        raise ValueError(f"Expected a dict with 'question' and 'context', got {type(inputs).__name__}: {inputs!r:.80}.")
    for name in ("question", "context"):
        if not isinstance(inputs.get(name), str) or not inputs[name].strip():
            raise ValueError(f"The {name} is missing or empty (got {inputs.get(name)!r:.80}); pass a non-empty string.")
    return inputs["question"], inputs["context"]

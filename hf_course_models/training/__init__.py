"""Training on Accelerate: one loop for pre-training and fine-tuning, atomic checkpoints, metrics and curves."""
from .loop import NonFiniteLossError, TrainingArguments, train

__all__ = ["NonFiniteLossError", "TrainingArguments", "train"]

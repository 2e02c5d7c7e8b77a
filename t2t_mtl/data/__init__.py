"""Data pipeline: per-task tokenized streams, the padding collator and the micro-batch builder."""
from t2t_mtl.data.batches import BatchBuilder, count_tokens
from t2t_mtl.data.collator import LABEL_PAD, Seq2SeqCollator
from t2t_mtl.data.streams import DataPipelineError, TokenizedTask, build_task_streams, tokenize_task

__all__ = ["BatchBuilder", "count_tokens", "LABEL_PAD", "Seq2SeqCollator", "DataPipelineError", "TokenizedTask",
           "build_task_streams", "tokenize_task"]

"""t2t-mtl: text-to-text unified multitask learning.

Every task is an instructed seq2seq example; this package holds the framework around the task registry:
data pipeline, mixture samplers, loss weighting, models, the DeepSpeed engine, gradient surgery,
evaluation, analysis and the command line.
"""

__version__ = "0.1.0"

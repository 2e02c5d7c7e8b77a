"""The DeepSpeed training engine: `train(config) -> TrainResult`, checkpoints, export, logging.

Import the pieces from their modules (`t2t_mtl.engine.trainer.train`, `t2t_mtl.engine.export.
load_trained_model`, ...); this package imports nothing heavy by itself.
"""

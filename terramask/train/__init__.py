"""Training: LoRA tuning of a Qwen-VL click generator on clicks synthesised from masks.

`data` reads the training layouts and caches synthesised clicks, `clicks` runs the training
(checkpoints, resume, validation, the adapter and its model card), `merge` folds an adapter
into its base for serving. The `training` extra (peft, accelerate) is needed to train.
"""

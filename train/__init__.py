"""lbedge.train: LoRA binding, merging and distillation (the training issue).

The package is installed from the ``train/`` folder; its modules land with the training issue.
"""

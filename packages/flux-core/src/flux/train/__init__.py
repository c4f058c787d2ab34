"""Training: the loop (`train`, `back`, `update`), optimisers, saving and checkpoints."""

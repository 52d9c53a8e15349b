"""The engine: DeepSpeed, checkpoints, ranks, memory estimates, a checkpoint's weights."""

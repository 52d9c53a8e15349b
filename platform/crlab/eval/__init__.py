"""Held-out evaluation: pass@k (the unbiased estimator) on all of a problem's tests, critique accuracy,
scoring samples made elsewhere (human-eval and LiveCodeBench formats), and evaluation during training."""

"""The loop: a run's set-up, its step (collect, score, update), evaluation, phase restarts."""

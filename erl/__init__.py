"""Model loading, batched rollouts, the ERL trainer and the `erlgym` command line."""

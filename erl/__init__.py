"""Model loading, batched rollouts, the ERL trainer and the `erlgym` command line."""

import os

# OpenMP threads that busy-wait between operations made small matrix products, such as
# the decode steps of generation, up to 30 times slower on a 2-core virtual machine
# (16 ms instead of 0.5 ms for a 16x576 by 576x1536 float32 product, torch 2.13).
# Passive waiting removes that cost. It takes effect only when set before torch loads
# its OpenMP runtime, and a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

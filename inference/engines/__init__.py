"""Token generators behind one interface (see `base`): torch, trtllm and synthetic."""

"""Stand-ins for what cannot run on CI machines (TensorRT-LLM needs an NVIDIA GPU)."""

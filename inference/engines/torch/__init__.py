"""The torch engine: transformers on PyTorch (CPU by default) with continuous batching."""

from inference.engines.torch.engine import TorchEngine, TorchEngineError
from inference.engines.torch.loader import default_model_gguf, load_model, prepare_gguf_checkpoint

__all__ = [
    "TorchEngine",
    "TorchEngineError",
    "default_model_gguf",
    "load_model",
    "prepare_gguf_checkpoint",
]

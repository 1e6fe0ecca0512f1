"""TensorRT-LLM engine adapter: compiled engines on the C++ Executor (tensorrt-llm 1.2.1).

Importing this package never imports tensorrt_llm; `TrtllmEngine.start()` does.
"""

from inference.engines.trtllm.engine import TrtllmEngine, TrtllmEngineError

__all__ = ["TrtllmEngine", "TrtllmEngineError"]

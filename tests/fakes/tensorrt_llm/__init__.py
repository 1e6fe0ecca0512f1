"""Fake `tensorrt_llm` package: only `bindings.executor` exists (see that module's docstring)."""

__version__ = "1.2.1"

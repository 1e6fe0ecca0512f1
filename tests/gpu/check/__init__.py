"""The prepared GPU check (`scripts/gpu-check`): tiny engines built and served, compared with torch.

On a machine with one H100 or H200 and TensorRT-LLM 1.2.1 it builds the tiny Mistral and Qwen2
checkpoints (tests/support/tiny_models.py) into engines through `enginebuild` (the pipeline of
`tensorchat engines build`), serves them with the inference service next to the torch engine on
the same checkpoints, compares greedy tokens and logprobs, and streams one chat completion
through the facade. One line per check; see docs/gpu.md, "GPU check".

Modules: `report` (the line format), `builds` (the tiny build matrix and the build commands),
`serving` (the service, its clients and the facade), `run` (the steps in order with their
timeouts), `__main__` (the command line). The parity rule is the build pipeline's own
(build/enginebuild/parity.py), so the check and `engines verify` judge an engine alike.
"""

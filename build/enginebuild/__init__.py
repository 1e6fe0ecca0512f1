"""The engine build pipeline: plan, build, verify and list TensorRT-LLM engines per GPU type.

Lives under build/ but imports as `enginebuild`, never `build` (that name belongs to the PyPA
build tool). See build/README.md.
"""

"""Helpers the tests share: real tokenizers and tiny checkpoints built without a model hub."""

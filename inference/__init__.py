"""The gRPC inference service: engines, tokenizers, chat templates and the Generate servicer."""

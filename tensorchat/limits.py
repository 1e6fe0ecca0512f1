"""Request limits that the facade and the inference service must agree on.

The service enforces them on every request (it has clients besides the facade); the facade
checks them first only to refuse with OpenAI's wording before it takes a rate-limit lease.
Limits that differ per model (context, completion tokens) are not here: the service reports
them in ListModels (`ModelInfo`).
"""

# Most choices (`n`) one request may ask for: each is a sequence in the engine's batch.
# The facade's `max_n` setting may lower it, never raise it.
MAX_CHOICES = 16
# Most alternatives per position (`top_logprobs`): OpenAI's own bound.
MAX_TOP_LOGPROBS = 20
# Most functions one request may offer (`tools`, legacy `functions`): OpenAI's own bound.
MAX_TOOLS = 128
# Longest JSON Schema (a tool's parameters, a json_schema response format), as JSON text:
# each is compiled into a grammar for the request, so its size bounds the compile time.
MAX_SCHEMA_CHARS = 65536

"""The OpenAI-compatible REST facade: thin, stateless, HTTP requests in and Generate RPCs out."""

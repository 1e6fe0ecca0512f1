"""`tensorchat bench`: a load generator for OpenAI-compatible endpoints and the Generate RPC."""

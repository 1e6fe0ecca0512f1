"""HTTP routes of the facade: chat completions, models, health and metrics."""

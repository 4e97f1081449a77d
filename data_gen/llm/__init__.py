"""The OpenAI-compatible client: limits, retries, journal, cost."""

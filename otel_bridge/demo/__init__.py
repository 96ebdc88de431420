"""``otel-bridge demo``: the whole path on one machine, or against a real Langfuse."""

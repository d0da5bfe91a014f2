"""jobrl-async: asynchronous RL fine-tuning of a small LLM that writes job offers."""

__version__ = "0.1.0"

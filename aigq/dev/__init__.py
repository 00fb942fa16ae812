"""The local development stack: tansu broker, Redis, topics (``aigq dev up/down/status``)."""

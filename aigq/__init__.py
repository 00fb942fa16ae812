"""aigq-nearline shared core: settings, errors, events, codec, logging, metrics and the CLI."""

__version__ = "0.1.0"

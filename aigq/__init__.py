"""aigq-nearline's shared core, below every subsystem: settings, errors, events and their codec,
logging, metrics, retries, datasets, the Kafka and Redis clients, the model registry, the local
dev services and what every subsystem's commands share. It imports no subsystem (the import
contracts in pyproject.toml)."""

__version__ = "0.1.0"

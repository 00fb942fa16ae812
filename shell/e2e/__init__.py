"""The whole nearline loop on one machine: ``aigq demo`` and ``aigq bench e2e``."""

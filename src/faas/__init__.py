"""faas: AI components served as independent, scalable services."""

__version__ = "0.1.0"

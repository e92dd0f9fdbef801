"""Code imported by both the site agent and the coordinator: models, bundle format, crypto, schemas."""

__version__ = "0.1.0"

__all__ = ["__version__"]

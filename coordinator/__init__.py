"""The coordinator: asks sites for sealed synthetic sets, opens and pools them, trains and evaluates a global model."""

__all__: list[str] = []

"""The site agent: runs inside a hospital, distills local images and releases only a sealed synthetic set."""

__all__: list[str] = []

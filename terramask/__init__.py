"""TerraMask: segment satellite and aerial imagery from text, without training."""

__version__ = "0.1.0"

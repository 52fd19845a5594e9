"""GaUDI engine: catalogue, booru sync, learning pipeline, inference. Imports no UI code."""

__version__ = "0.1.0"

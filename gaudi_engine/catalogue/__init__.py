"""The DuckDB catalogue: schema, migrations, one connection per process, a cursor per thread."""
from .db import Catalogue, open_catalogue, SCHEMA_VERSION

__all__ = ["Catalogue", "open_catalogue", "SCHEMA_VERSION"]

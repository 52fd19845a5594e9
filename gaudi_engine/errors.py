"""Errors a user can cause. They carry a message meant for that user; the CLI and the studio
catch them at the edge and show them in one line."""


class GaudiError(Exception):
    """A user-facing error: bad input, bad configuration, an unreachable service, ..."""


class CatalogueLocked(GaudiError):
    """Another process holds the DuckDB catalogue for writing."""


class RemoteError(GaudiError):
    """A remote service (Danbooru, OpenAI) answered with an error we cannot recover from."""

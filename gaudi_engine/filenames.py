"""File names as users have them, made safe to print and store.

On Linux a name is bytes: a folder copied from an old Windows zip holds names that are not UTF-8
(`caf\\xe9.png`), which Python keeps as lone surrogates. Such a string cannot be printed to a
UTF-8 stdout nor stored in the catalogue; `shown` turns the undecodable bytes into `\\xNN`
escapes, so a message or a `source` column names the file readably and never fails. The file
itself is still opened by its real path.
"""
from __future__ import annotations

import os


def shown(name: str | os.PathLike) -> str:
    """`name` (a str or path) with bytes that are not UTF-8 written as \\xNN escapes."""
    text = os.fspath(name)
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")

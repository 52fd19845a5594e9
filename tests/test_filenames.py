"""gaudi_engine.filenames: names that are not UTF-8 are printable and storable."""
import os

from gaudi_engine.filenames import shown


def test_names_that_are_not_utf8_become_escapes_and_others_stay():
    assert shown(os.fsdecode(b"caf\xe9 one.png")) == "caf\\xe9 one.png"
    assert shown(b"bad\xff.png") == "bad\\xff.png"
    assert shown("café 絵.png") == "café 絵.png"
    shown(os.fsdecode(b"x\xe9")).encode("utf-8")  # storable

"""DText -> plain text, and the default description taken from it."""
from __future__ import annotations

import pytest

from gaudi_engine.text.dtext import dtext_to_plain, first_sentences


@pytest.mark.parametrize("dtext, plain", [
    ("[[hat]] on a [[long_hair|long-haired]] girl", "hat on a long-haired girl"),
    ("worn by a [[witch_(cosplay)|]].", "worn by a witch."),
    ("a [[Hatsune Miku]] fan", "a Hatsune Miku fan"),
    ("see {{witch_hat solo}}", "see witch hat solo"),
    ('"this page":https://example.com/a_(b) and "that":[/wiki_pages/x]', "this page and that"),
    ('ends with "a link":https://example.com/x.', "ends with a link."),
    ("[b]bold[/b], [i]it[/i], [u]u[/u], [s]s[/s], [spoiler]sp[/spoiler], [tn]note[/tn]",
     "bold, it, u, s, sp, note"),
    ("[url=https://x.org]label[/url] and <https://y.org|other>", "label and other"),
    ("h4. Heading\nText.", "Heading\n\nText."),
    ("h4#dtext-see-also. See also\n* [[cap]]\n** [[beret]]", "See also\n\n- cap\n- beret"),
    ("!post #1234\nAfter.", "After."),
    ("[expand=Examples]\ninside\n[/expand]", "inside"),
    ("", ""),
    (None, ""),
])
def test_dtext_to_plain(dtext, plain):
    assert dtext_to_plain(dtext) == plain


WIKI = """h4#dtext-overview. Overview

A [[hat]] worn on the head,
often by a [[witch_(cosplay)|]]. It is [i]pointy[/i]. A third sentence.

h4. See also

* [[cap]]
"""


def test_first_sentences_skips_headings_and_lists():
    plain = dtext_to_plain(WIKI)
    assert first_sentences(plain) == "A hat worn on the head, often by a witch. It is pointy."
    assert first_sentences(plain, 1) == "A hat worn on the head, often by a witch."
    assert first_sentences(dtext_to_plain("* only\n* a list")) == ""
    assert first_sentences("Short heading\n\nThe text. Next one. Third.", 2) == "The text. Next one."

"""One set of tag-text rules for sidecars, manifests and typed tags."""
from gaudi_engine.tags import parse_sidecar, split_tags


def test_split_tags_space_and_comma_forms():
    assert split_tags("1girl long_hair sky 1girl") == ["1girl", "long_hair", "sky"]
    assert split_tags("Long Hair, 1girl,\nsky") == ["long_hair", "1girl", "sky"]
    assert split_tags(["Sky", "sky", " hat "]) == ["sky", "hat"]
    assert split_tags("") == [] and split_tags(None) == []


def test_sidecar_keeps_spaces_inside_a_tag_and_takes_the_rating():
    assert parse_sidecar("long hair, rating:s, Hat") == (["long_hair", "hat"], "s")

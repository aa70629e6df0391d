"""The codec's identity crosses the store boundary through one pair of functions."""

from geocompress.store.identity import from_stored, stored_name, to_stored


def test_stored_names_map_to_the_codecs_and_back():
    stored = {"model": "mgssnet", "weights_digest": "sha256:abc", "quality": 4, "codec_config": {}}
    codec = from_stored(stored)
    assert codec == {"arch": "mgssnet", "digest": "sha256:abc", "quality": 4, "codec_config": {}}
    assert to_stored(codec) == stored and list(to_stored(codec)) == list(stored)
    assert from_stored(codec) == codec  # already in the codec's names
    assert stored_name("digest") == "weights_digest" and stored_name("quality") == "quality"


def test_a_stored_name_wins_over_its_codec_name():
    assert from_stored({"arch": "a", "model": "m"}) == {"arch": "m"}

import numpy as np
import pytest

from gaudi_engine import rle


def _masks():
    rng = np.random.default_rng(0)
    yield np.zeros((5, 7), bool)
    yield np.ones((4, 3), bool)
    m = np.zeros((6, 9), bool)
    m[1:4, 2:7] = True
    yield m
    for _ in range(20):
        h, w = rng.integers(1, 60, size=2)
        yield rng.random((h, w)) < rng.random()
    big = np.zeros((300, 400), bool)
    big[:, :200] = True  # long runs exercise multi-character counts
    big[150:, 350:] = True
    yield big


def test_round_trip_and_known_values():
    for m in _masks():
        r = rle.encode(m)
        assert r["size"] == list(m.shape)
        assert isinstance(r["counts"], str)
        np.testing.assert_array_equal(rle.decode(r), m)
        assert rle.area(r) == int(m.sum())
    # column-major counts starting with zeros: [[0,1],[1,1]] read F-order is 0,1,1,1
    assert rle.mask_to_counts(np.array([[0, 1], [1, 1]], bool)) == [1, 3]
    assert rle.mask_to_counts(np.array([[1, 0], [1, 0]], bool)) == [0, 2, 2]
    assert rle.bbox(np.pad(np.ones((2, 3), bool), 1)) == [1, 1, 3, 2]


def test_matches_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask")
    for m in _masks():
        ref = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
        ours = rle.encode(m)
        assert ours["counts"] == ref["counts"].decode("ascii")
        assert ours["size"] == list(ref["size"])
        back = mask_api.decode({"size": ours["size"], "counts": ours["counts"].encode()})
        np.testing.assert_array_equal(back.astype(bool), m)


def test_bad_rle_rejected():
    with pytest.raises(ValueError):
        rle.decode({"size": [2, 2], "counts": [1, 1]})

"""Aspect-ratio buckets: training crops keep a picture's aspect and nearly all of its area, and a
batch holds one shape."""
import numpy as np
import torch
from PIL import Image

from gaudi_engine.imaging import Preprocess, canvas_box, picture_window, training_shape
from gaudi_engine.train.buckets import BucketBatchSampler


def test_a_portraits_training_crop_is_the_whole_picture_to_a_stride():
    pre = Preprocess(image_size=128)
    box = canvas_box(213, 320, pre)  # a 2:3 portrait's working image
    assert (box.h, box.w) == (192, 128) or abs(box.h - 192) <= 1
    shape = training_shape(box, pre)
    assert shape == (192, 128)  # a square window would keep 128 x 128: a third of it lost
    t = torch.arange(box.height * box.width).view(box.height, box.width)
    top, bottom = picture_window(t, box, shape, (0.0, 0.0)), picture_window(t, box, shape, (1.0, 1.0))
    assert top.shape == bottom.shape == shape
    assert int(top[0, 0]) == box.y0 * box.width + box.x0  # starts at the picture, not the padding
    assert int(bottom[-1, -1]) <= (box.y0 + box.h - 1) * box.width + box.x0 + box.w - 1
    wide = canvas_box(300, 100, pre)  # capped at 2:1
    assert training_shape(wide, pre)[0] == 128 and training_shape(wide, pre)[1] % pre.stride == 0


def test_bucket_batches_hold_one_shape_and_every_item_once():
    keys = [(128, 128)] * 7 + [(192, 128)] * 10 + [(128, 192)] * 1
    s = BucketBatchSampler(keys, 4, seed=1)
    batches = list(s)
    assert len(batches) == len(s)
    assert all(len({keys[i] for i in b}) == 1 for b in batches)
    seen = sorted(i for b in batches for i in b)
    assert seen == list(range(18))  # a lone item of its shape still trains (batch of one: full == 0)
    s.set_epoch(1)
    assert [sorted(b) for b in s] != [sorted(b) for b in batches] or list(s) != batches
    # DDP: the ranks draw disjoint batches and the same number of steps
    r0, r1 = BucketBatchSampler(keys, 4, seed=1, rank=0, world=2), BucketBatchSampler(keys, 4, seed=1, rank=1, world=2)
    b0, b1 = list(r0), list(r1)
    assert len(b0) == len(b1) == len(r0) and not {i for b in b0 for i in b} & {i for b in b1 for i in b}


def test_stage_a_items_of_a_portrait_keep_its_aspect(tmp_path):
    from gaudi_engine.train.data import TagImageDataset

    recs = []
    for i, size in enumerate([(213, 320), (320, 213), (200, 200)]):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((size[1], size[0], 3), 40 * i, np.uint8)).save(p)
        recs.append({"post_id": i + 1, "image_path": p, "tags": ["a"], "md5": ""})
    ds = TagImageDataset(recs, ["a"], Preprocess(image_size=128).to_dict(), train=True)
    shapes = [tuple(ds[i]["image"].shape[-2:]) for i in range(3)]
    assert shapes == [(192, 128), (128, 192), (128, 128)]
    assert ds.bucket_keys == shapes

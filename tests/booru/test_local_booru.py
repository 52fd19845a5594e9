"""LocalBooru answers like Danbooru: paging by id, caps, metatags, errors, media, auth, folders."""
from __future__ import annotations

import hashlib
import json

import requests

from gaudi_engine.booru.local_booru import LocalBooru
from tests.fakes.danbooru import png_bytes_of, tiny_png


def get(b, path, **params):
    return requests.get(b.url + path, params=params, timeout=5)


def test_paging_like_danbooru(booru):
    b = booru(260, seed=1)
    ids = b.post_ids  # newest first
    assert ids == sorted(ids, reverse=True) and len(ids) == 260
    assert [p["id"] for p in get(b, "/posts.json", limit=5).json()] == ids[:5]
    assert len(get(b, "/posts.json", limit=1000).json()) == 200  # limit capped at 200
    assert len(get(b, "/posts.json").json()) == 20  # Danbooru's default
    below = get(b, "/posts.json", limit=3, page=f"b{ids[10]}").json()
    assert [p["id"] for p in below] == ids[11:14]
    above = get(b, "/posts.json", limit=3, page=f"a{ids[10]}").json()
    assert [p["id"] for p in above] == ids[7:10]  # the 3 just above, still newest first
    assert [p["id"] for p in get(b, "/posts.json", limit=4, page=3).json()] == ids[8:12]
    r = get(b, "/posts.json", page=1001)
    assert r.status_code == 410 and "beyond page 1000" in r.json()["message"]
    assert get(b, "/posts.json", page=f"b{ids[-1]}").json() == []


def test_query_metatags_and_tag_limit(booru):
    b = booru(120, seed=2, deleted=0.2)
    posts = [b.post(i) for i in b.post_ids]

    def ids(tags):
        r = get(b, "/posts.json", tags=tags, limit=200)
        assert r.status_code == 200, r.text
        return [p["id"] for p in r.json()]

    assert ids("rating:g,s") == [p["id"] for p in posts if p["rating"] in "gs"]
    assert ids("is:sfw") == ids("rating:g,s") and ids("is:nsfw") == ids("rating:q,e")
    assert ids("-status:deleted") == [p["id"] for p in posts if not p["is_deleted"]]
    assert ids("status:deleted") == [p["id"] for p in posts if p["is_deleted"]]
    assert any(p["is_deleted"] for p in get(b, "/posts.json", limit=200).json())  # returned by default
    cut = b.post_ids[50]
    assert ids(f"id:>{cut}") == b.post_ids[:50]
    assert ids("1girl -solo rating:g id:>0 -status:deleted") == [
        p["id"] for p in posts if "1girl" in p["tag_string"].split()
        and "solo" not in p["tag_string"].split() and p["rating"] == "g" and not p["is_deleted"]]
    r = get(b, "/posts.json", tags="1girl solo smile")
    assert r.status_code == 422 and r.json()["success"] is False and "2 tags" in r.json()["message"]


def test_media_tags_wiki_and_only(booru):
    b = booru(30, seed=3, banned=0.3)
    post = next(p for p in get(b, "/posts.json", limit=30).json() if "md5" in p)
    data = requests.get(post["file_url"], timeout=5).content
    assert hashlib.md5(data).hexdigest() == post["md5"] and post["file_url"].startswith(b.url)
    assert requests.get(post["large_file_url"], timeout=5).content == data
    assert {v["type"] for v in post["media_asset"]["variants"]} >= {"original", "180x180"}
    banned = [p for p in get(b, "/posts.json", limit=30).json() if p["is_banned"]]
    assert banned and all("md5" not in p and "file_url" not in p for p in banned)
    tags = get(b, "/tags.json", **{"search[name_comma]": "1girl,solo,nope", "only": "name,category"}).json()
    assert sorted(tags, key=lambda t: t["name"]) == [{"name": "1girl", "category": 0},
                                                     {"name": "solo", "category": 0}]
    b.add_wiki("solo", "One [[person]].")
    assert get(b, "/wiki_pages.json", **{"search[title]": "solo"}).json()[0]["body"] == "One [[person]]."
    assert get(b, f"/posts/{post['id']}.json").json()["md5"] == post["md5"]
    assert get(b, "/posts/1.json").status_code == 404


def test_auth_by_header_or_params(booru):
    b = booru(3, auth=("u", "k"))
    assert get(b, "/posts.json").status_code == 401
    assert get(b, "/posts.json", login="u", api_key="k").status_code == 200
    assert requests.get(b.url + "/posts.json", auth=("u", "k"), timeout=5).status_code == 200
    assert requests.get(b.url + "/posts.json", auth=("u", "bad"), timeout=5).status_code == 401


def test_from_folder(tmp_path):
    from PIL import Image

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.png").write_bytes(tiny_png(1))
    (tmp_path / "a.txt").write_text("Long Hair, blue_eyes,\nsmile")
    (tmp_path / "sub" / "b.jpg").write_bytes(png_bytes_of(Image.new("RGB", (20, 10))))
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "mask.png").write_bytes(tiny_png(2))  # SynthBooru's ground truth: not a post
    (tmp_path / "tag_descriptions.json").write_text(json.dumps({"smile": ["a smiling face"]}))
    with LocalBooru.from_folder(tmp_path) as b:
        posts = get(b, "/posts.json").json()
        assert [p["id"] for p in posts] == [2, 1]
        assert posts[1]["tag_string_general"] == "blue_eyes long_hair smile"
        assert posts[0]["image_width"] == 20 and posts[0]["tag_string_general"] == ""
        assert hashlib.md5(requests.get(posts[1]["file_url"], timeout=5).content).hexdigest() == posts[1]["md5"]
        assert "a smiling face" in get(b, "/wiki_pages.json", **{"search[title]": "smile"}).json()[0]["body"]

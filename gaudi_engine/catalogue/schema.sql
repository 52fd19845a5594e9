-- GaUDI catalogue, schema version 1; later versions are migrations in catalogue/db.py (the
-- tables they change or add are described at the end). One DuckDB file: data/catalogue.duckdb.
-- Only general tags (Danbooru category 0) go into post_tags.

CREATE TABLE IF NOT EXISTS schema_meta (
    key   VARCHAR PRIMARY KEY,
    value VARCHAR
);

-- One row per booru post or imported image. `raw` keeps the whole API object as JSON.
CREATE TABLE IF NOT EXISTS posts (
    id             BIGINT PRIMARY KEY,
    md5            VARCHAR,           -- NULL for banned/restricted posts
    file_ext       VARCHAR,
    file_size      BIGINT,
    rating         VARCHAR,           -- g|s|q|e (NULL for imports without one)
    width          INTEGER,
    height         INTEGER,
    file_url       VARCHAR,
    large_file_url VARCHAR,
    preview_url    VARCHAR,
    is_deleted     BOOLEAN DEFAULT FALSE,
    is_banned      BOOLEAN DEFAULT FALSE,
    source         VARCHAR,           -- the post's source field, or "local:<path>" for imports
    origin         VARCHAR,           -- where the row came from: a booru base URL or "folder:<dir>"
    created_at     VARCHAR,
    raw            JSON,
    synced_at      TIMESTAMP
);

CREATE TABLE IF NOT EXISTS post_tags (
    post_id BIGINT,
    tag     VARCHAR,
    PRIMARY KEY (post_id, tag)
);

CREATE TABLE IF NOT EXISTS tags (
    name          VARCHAR PRIMARY KEY,
    category      INTEGER,            -- 0 general, 1 artist, 3 copyright, 4 character, 5 meta
    post_count    BIGINT,
    is_deprecated BOOLEAN DEFAULT FALSE,
    updated_at    TIMESTAMP
);

CREATE TABLE IF NOT EXISTS wiki_pages (
    title       VARCHAR PRIMARY KEY,
    body        VARCHAR,              -- DText as fetched
    plain       VARCHAR,              -- DText converted to plain text
    other_names VARCHAR[],
    is_deleted  BOOLEAN DEFAULT FALSE,
    updated_at  VARCHAR
);

-- Several descriptions per tag; source says who wrote it. A user's text is never overwritten
-- by wiki or llm fills.
CREATE TABLE IF NOT EXISTS tag_descriptions (
    tag        VARCHAR,
    idx        INTEGER,
    text       VARCHAR,
    source     VARCHAR,               -- user | wiki | llm
    updated_at TIMESTAMP,
    PRIMARY KEY (tag, idx)
);

CREATE TABLE IF NOT EXISTS media (
    md5        VARCHAR PRIMARY KEY,
    path       VARCHAR,               -- relative to the workspace
    bytes      BIGINT,
    status     VARCHAR,               -- ok | failed | not_downloadable | not_image
    error      VARCHAR,
    fetched_at TIMESTAMP
);

-- Per query key, where a sync stopped: ids below `lowest_id` have not been seen yet.
CREATE TABLE IF NOT EXISTS sync_state (
    query_key  VARCHAR PRIMARY KEY,
    lowest_id  BIGINT,
    highest_id BIGINT,
    done       BOOLEAN DEFAULT FALSE,
    posts_seen BIGINT DEFAULT 0,
    updated_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS runs (
    name       VARCHAR PRIMARY KEY,
    kind       VARCHAR,
    path       VARCHAR,
    config     JSON,
    created_at TIMESTAMP,
    metrics    JSON
);

CREATE INDEX IF NOT EXISTS post_tags_tag ON post_tags (tag);

-- Version 2: post_tags has no PRIMARY KEY and no index (bulk ingest; store.py keeps it exact).
-- Version 3:
--   posts.general_tags VARCHAR: the post's post_tags, sorted and space-separated (one row read
--     for the studio's grid instead of a post_tags scan); written with post_tags.
--   tag_index_tags (tag, tid), tag_index (tid, post_id): a snapshot of post_tags sorted by tag id
--     then newest post first, so a tag filter reads only that tag's row groups.
--   tag_index_dirty (post_id, stale): posts written since that snapshot (stale = it may hold their
--     old tags); tag_index_delta (post_id, tag): their current tags. See catalogue/tag_index.py.

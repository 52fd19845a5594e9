"""PseudoMaskIndex: query a pseudo-mask run's `index.parquet` in place with DuckDB (no copy)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import GaudiError

SCORE_COLUMNS = ("area", "cam_score", "consistency_iou", "deletion_drop", "insertion_keep", "prob",
                 "quality", "margin")


class PseudoMaskIndex:
    def __init__(self, run_dir):
        import duckdb

        self.run_dir = Path(run_dir)
        self.path = self.run_dir / "index.parquet"
        if not self.path.exists():
            raise GaudiError(f"no pseudo-mask index at {self.path} (run `gaudi pseudolabels` first)")
        self._con = duckdb.connect()  # in-memory; the Parquet file is read in place
        self._src = f"read_parquet('{str(self.path).replace(chr(39), chr(39) * 2)}')"

    def _df(self, sql: str, params: list | None = None):
        return self._con.execute(sql.replace("{src}", self._src), params or []).df()

    def tags(self) -> list[dict]:
        """Per tag: masks, accepted, mean quality."""
        df = self._df("SELECT tag, count(*) AS masks, sum(accepted::INT) AS accepted, "
                      "avg(quality) AS mean_quality FROM {src} GROUP BY tag ORDER BY masks DESC, tag")
        return df.to_dict("records")

    def query(self, tag: str | None = None, accepted: bool | None = None, score: str = "quality",
              score_min: float | None = None, score_max: float | None = None, post_id: int | None = None,
              limit: int | None = None, offset: int = 0, order: str = "post_id"):
        """Rows (pandas DataFrame) filtered by tag, verdict and a score range."""
        if score not in SCORE_COLUMNS:
            raise GaudiError(f"unknown score {score!r}; one of {', '.join(SCORE_COLUMNS)}")
        if order not in ("post_id", "score", "-score"):
            raise GaudiError("order must be post_id, score or -score")
        where, params = [], []
        if tag is not None:
            where.append("tag = ?")
            params.append(tag)
        if accepted is not None:
            where.append("accepted = ?")
            params.append(bool(accepted))
        if score_min is not None:
            where.append(f"{score} >= ?")
            params.append(float(score_min))
        if score_max is not None:
            where.append(f"{score} <= ?")
            params.append(float(score_max))
        if post_id is not None:
            where.append("post_id = ?")
            params.append(int(post_id))
        sql = "SELECT * FROM {src}" + (" WHERE " + " AND ".join(where) if where else "")
        sql += {"post_id": " ORDER BY post_id, tag", "score": f" ORDER BY {score} NULLS FIRST, post_id, tag",
                "-score": f" ORDER BY {score} DESC NULLS LAST, post_id, tag"}[order]
        if limit is not None:
            sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
        return self._df(sql, params)

    def scores(self, post_id: int) -> list[dict]:
        """All rows (every score) of one post."""
        return self.query(post_id=post_id).to_dict("records")

    def posts(self, tag: str | None = None, accepted: bool | None = None) -> list[int]:
        df = self.query(tag=tag, accepted=accepted)
        return sorted(set(int(p) for p in df["post_id"]))

    def mask(self, post_id: int, tag: str) -> np.ndarray | None:
        """The stored mask (accepted or rejected) of one (post, tag) as bool, or None."""
        from PIL import Image

        rows = self._df("SELECT mask_path FROM {src} WHERE post_id = ? AND tag = ?", [int(post_id), tag])
        if rows.empty:
            return None
        p = self.run_dir / rows.iloc[0]["mask_path"]
        return (np.asarray(Image.open(p)) > 127) if p.exists() else None

    def score_map(self, post_id: int, tag: str) -> np.ndarray | None:
        """The soft score map in [0, 1] of one (post, tag), or None."""
        from PIL import Image

        rows = self._df("SELECT score_path FROM {src} WHERE post_id = ? AND tag = ?", [int(post_id), tag])
        if rows.empty:
            return None
        p = self.run_dir / rows.iloc[0]["score_path"]
        return (np.asarray(Image.open(p), dtype=np.float32) / 255.0) if p.exists() else None

    def close(self) -> None:
        self._con.close()

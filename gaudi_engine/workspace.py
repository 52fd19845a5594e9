"""A workspace: one folder holding data/catalogue.duckdb, data/images/ and runs/; plus settings
read from the environment (secrets are never written anywhere)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DANBOORU_URL = "https://danbooru.donmai.us"
DEFAULT_USER_AGENT = "GaUDI-Studio/0.1 (+https://github.com/gaudi-studio)"


def mask_secret(secret: str | None) -> str:
    """Show a secret as `ab…yz` (or `***` when short, `(not set)` when empty)."""
    if not secret:
        return "(not set)"
    if len(secret) <= 8:
        return "***"
    return f"{secret[:2]}…{secret[-2:]}"


@dataclass
class DanbooruSettings:
    base_url: str = DEFAULT_DANBOORU_URL
    username: str | None = None
    api_key: str | None = field(default=None, repr=False)
    user_agent: str = DEFAULT_USER_AGENT
    requests_per_second: float = 2.0

    @classmethod
    def from_env(cls, base_url: str | None = None, requests_per_second: float | None = None) -> "DanbooruSettings":
        env = os.environ
        return cls(
            base_url=(base_url or env.get("DANBOORU_BASE_URL") or DEFAULT_DANBOORU_URL).rstrip("/"),
            username=env.get("DANBOORU_USERNAME") or None,
            api_key=env.get("DANBOORU_API_KEY") or None,
            user_agent=env.get("DANBOORU_USER_AGENT") or DEFAULT_USER_AGENT,
            requests_per_second=(
                requests_per_second
                if requests_per_second is not None
                else float(env.get("DANBOORU_RPS", "2.0"))
            ),
        )

    def describe(self) -> str:
        """Settings as one line, with the key masked."""
        return (
            f"base_url={self.base_url} user={self.username or '(anonymous)'} "
            f"api_key={mask_secret(self.api_key)} rps={self.requests_per_second:g}"
        )


class Workspace:
    """Paths of one workspace. Creating the object creates nothing; `ensure()` makes the folders."""

    def __init__(self, root: str | os.PathLike | None = None):
        root = root or os.environ.get("GAUDI_WORKSPACE") or os.getcwd()
        self.root = Path(root).expanduser().resolve()

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def catalogue_path(self) -> Path:
        return self.data_dir / "catalogue.duckdb"

    def ensure(self) -> "Workspace":
        for d in (self.data_dir, self.images_dir, self.runs_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def image_path(self, md5: str, ext: str) -> Path:
        """`data/images/xx/yy/md5.ext`: two levels of fan-out keep folders small."""
        return self.images_dir / md5[:2] / md5[2:4] / f"{md5}.{ext}"

    def rel(self, path: str | os.PathLike) -> str:
        """A path relative to the workspace when it lies inside it, else absolute."""
        p = Path(path).resolve()
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return str(p)

    def resolve(self, path: str | os.PathLike) -> Path:
        """Inverse of `rel`: a stored relative path back to an absolute one."""
        p = Path(path)
        return p if p.is_absolute() else self.root / p

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

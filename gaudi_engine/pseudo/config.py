"""The pseudo-labeller's knobs as data: `PseudoConfig` (with `CamConfig` and `ValidatorConfig`
nested), read from a JSON file (`--config FILE`: its fields, or a run's `config.json`, whose
`pseudo` holds them) and changed key by key (`--set validators.reject_quantile=0.2`). A run writes
the whole of it into its `config.json`, so the run can be redone from that file alone."""
from __future__ import annotations

import json
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path

from ..errors import GaudiError
from .cam import CAM_MODES, CamConfig
from .validators import ValidatorConfig


@dataclass
class PseudoConfig:
    cam: CamConfig = field(default_factory=CamConfig)
    validators: ValidatorConfig = field(default_factory=ValidatorConfig)
    prototypes: bool = False  # each tag's map times its look against the image's unclaimed
    # pixels (`prototypes`: VPL/SSR-style visual prototypes; BENCHMARKS.md, session 9)
    ubiquitous_share: float | None = 0.9  # tags on at least this share of the posts have too few
    # negatives to localise: their maps are weighted by the trunk's objectness (`objectness`; None: off)
    objectness_zoom: float = 2.0  # ... read on the input enlarged this much (the deepest level is coarse)
    affinity: bool = True
    aff_radius: int = 2
    aff_beta: float = 10.0
    aff_iters: int = 3
    regions: str | None = "felzenszwalb"  # or slic | None (pixel threshold); see BENCHMARKS ablations
    region_coarse: float = 2.0  # felzenszwalb regions twice `infer`'s scale: a CAM is blurrier than
    # a segmenter; x4 merged small things into the stuff around them (BENCHMARKS.md)
    seg_region_coarse: float = 1.0  # round 2 reads a segmenter, as sharp as what `infer` reads: its
    # regions (BENCHMARKS.md)
    fixed_threshold: float | None = None  # None: adaptive per map
    threshold_range: tuple[float, float] = (0.3, 0.7)  # the adaptive threshold's clip
    otsu_weight: float = 0.5  # adaptive threshold = w * Otsu + (1 - w) * 0.5
    mutual: str | None = "appearance"  # tags that imply each other (`resolve_mutual`): "appearance"
    # splits their union by colour, its looks oriented by the broad tag seen alone | None (left
    # alone); image-level tags cannot tell such tags apart (BENCHMARKS.md)
    solo_sample: int = 32  # posts showing the broad one of two such tags alone, to orient their looks
    mutual_min_gap: float = 0.02  # a split needs one tag seen alone this much more often (not synonyms)
    max_norm: float | None = 0.6  # divide each present tag's map by max(its maximum, this)
    seg_threshold: float = 0.5  # round 2 with the segmenter alone: its masks are probability >= this
    fine_zoom: float | None = 2.0  # tags whose typical mask is small are mapped on the image x this
    fine_area: float = 0.12  # ... "small": median base-scale mask area below this share of the image
    part_inside: float | None = 0.7  # ... unless it is a part (lies this much inside its whole) of a
    # whole big enough in this image that the part is not small (a big girl's dress; None: never)
    nest_inside: float = 0.5  # a candidate part nests when its mask lies this much inside its whole's
    thing_nest_inside: float = 0.25  # ... this much, for a thing in a thing (a hat lies only partly
    # inside the girl its mask competes with; BENCHMARKS.md)
    inherit_structure: bool = True  # round 2 reuses round 1's structure.json (nests, zooms, looks)
    cut_occluders: bool = True  # a thing nested in stuff (a cloud in the sky, a tree on the grass)
    # stands in front of it: its mask is cut out of the stuff's, as COCO's panoptic masks do; parts of
    # a thing (a dress, a hat: what a character wears) and kinds of stuff (starry_sky) join their whole
    stuff_colours: bool = True  # stuff that borders stuff: each contested region to the colour that fits
    # it best in this image (`reassign_by_colour`: a CAM blurs across the horizon; BENCHMARKS.md)
    stuff_colour_floor: float = 0.1  # ... "contested": two stuff tags' maps reach this over the region
    stuff_span: float = 0.9  # "stuff": a tag whose round-1 mask typically reaches this share of the
    # image's columns (by area, a thin band of stuff passes for a thing; BENCHMARKS.md)

    def to_dict(self) -> dict:
        return asdict(self)


CHOICES = {"regions": ("felzenszwalb", "slic", None), "mutual": ("appearance", None),
           "cam.mode": CAM_MODES, "validators.policy": ("relative", "absolute")}


def _coerce(value, hint):
    """`value` (from JSON) as type `hint`, or ValueError. Lists become tuples where the field is one;
    an int is a float where a float is asked for."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(hint):
            try:
                return _coerce(value, arm)
            except ValueError:
                pass
        raise ValueError
    if hint is type(None):
        if value is None:
            return None
        raise ValueError
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ValueError
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(value) != len(args):
            raise ValueError
        return tuple(_coerce(v, a) for v, a in zip(value, args))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ValueError
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ValueError
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError
    if hint is str:
        if isinstance(value, str):
            return value
        raise ValueError
    raise ValueError


def _type_name(hint) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _set(cfg, path: list[str], value, key: str, source: str):
    """A copy of dataclass `cfg` with the field at `path` set to `value` (checked against its type)."""
    known = {f.name: f for f in fields(cfg)}
    name = path[0]
    if name not in known:
        raise GaudiError(f"{source}: unknown setting {key!r} (known here: {', '.join(known)})")
    hints = typing.get_type_hints(type(cfg))
    current = getattr(cfg, name)
    if is_dataclass(current):
        if len(path) == 1:
            if not isinstance(value, dict):
                raise GaudiError(f"{source}: {key} is a group of settings; give {key}.NAME=VALUE")
            for k, v in value.items():
                current = _set(current, [k], v, f"{key}.{k}", source)
            return replace(cfg, **{name: current})
        return replace(cfg, **{name: _set(current, path[1:], value, key, source)})
    if len(path) > 1:
        raise GaudiError(f"{source}: unknown setting {key!r} ({name} has no sub-settings)")
    try:
        value = _coerce(value, hints[name])
    except ValueError:
        raise GaudiError(f"{source}: {key}={json.dumps(value)} is not a {_type_name(hints[name])}") from None
    if key in CHOICES and value not in CHOICES[key]:
        options = ", ".join(json.dumps(c) for c in CHOICES[key])
        raise GaudiError(f"{source}: {key}={json.dumps(value)} is not one of {options}")
    return replace(cfg, **{name: value})


def config_from_dict(data: dict, base: PseudoConfig | None = None, source: str = "config") -> PseudoConfig:
    """`base` (default: the defaults) with the fields of `data` (nested dicts for `cam`, `validators`)."""
    if not isinstance(data, dict):
        raise GaudiError(f"{source}: expected a JSON object of settings")
    cfg = base or PseudoConfig()
    for key, value in data.items():
        cfg = _set(cfg, [key], value, key, source)
    return cfg


def load_config(path: str | Path, base: PseudoConfig | None = None) -> PseudoConfig:
    """A JSON file of PseudoConfig fields, or a pseudo-mask run's `config.json` (its `pseudo`)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GaudiError(f"--config {path}: file not found") from None
    except (OSError, ValueError) as exc:
        raise GaudiError(f"--config {path}: not a JSON file ({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("pseudo"), dict):
        data = data["pseudo"]
    return config_from_dict(data, base, source=f"--config {path}")


def parse_setting(text: str) -> tuple[str, object]:
    """`key=value` -> (key, value): the value read as JSON (`0.2`, `null`, `true`, `[0.3, 0.7]`),
    else as a string (`cam.mode=all`)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise GaudiError(f"--set {text!r}: expected KEY=VALUE (e.g. validators.reject_quantile=0.2)")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def apply_settings(cfg: PseudoConfig, settings: list[str] | list[tuple[str, object]]) -> PseudoConfig:
    """`cfg` with each `key=value` (dotted keys reach into `cam` and `validators`) applied in order."""
    for s in settings:
        key, value = parse_setting(s) if isinstance(s, str) else s
        cfg = _set(cfg, key.split("."), value, key, f"--set {key}")
    return cfg


def check_config(cfg: PseudoConfig) -> PseudoConfig:
    """Ranges a run cannot work with (GaudiError naming the setting)."""
    q = cfg.validators.reject_quantile
    if not 0.0 <= q < 1.0:
        raise GaudiError(f"validators.reject_quantile must be in [0, 1), got {q}")
    if cfg.fine_zoom is not None and cfg.fine_zoom < 1.0:
        raise GaudiError(f"fine_zoom must be >= 1 (1 or null: every tag at the base scale), got {cfg.fine_zoom}")
    return cfg

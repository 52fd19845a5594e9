"""The pseudo-labeller's settings as data: `--config FILE` and `--set key=value` over PseudoConfig."""
import json

import pytest

from gaudi_engine.errors import GaudiError
from gaudi_engine.pseudo.cam import CamConfig
from gaudi_engine.pseudo.config import PseudoConfig, apply_settings, check_config, config_from_dict, \
    load_config, parse_setting
from gaudi_engine.pseudo.validators import ValidatorConfig


def test_set_top_level_and_nested_keys():
    cfg = apply_settings(PseudoConfig(), ["validators.reject_quantile=0.2", "cam.mode=all", "affinity=false",
                                          "fine_zoom=null", "aff_beta=12", "threshold_range=[0.2, 0.8]",
                                          "regions=slic"])
    assert cfg.validators.reject_quantile == 0.2 and cfg.cam.mode == "all" and cfg.affinity is False
    assert cfg.fine_zoom is None and cfg.aff_beta == 12.0 and isinstance(cfg.aff_beta, float)
    assert cfg.threshold_range == (0.2, 0.8) and cfg.regions == "slic"
    assert cfg.validators.policy == "relative" and cfg.cam.flip is True  # the rest untouched
    assert PseudoConfig() == apply_settings(PseudoConfig(), [])
    assert parse_setting("cam.mode=all") == ("cam.mode", "all")
    assert parse_setting("mutual=null") == ("mutual", None)


@pytest.mark.parametrize("setting, words", [
    ("nope=1", ["unknown setting", "'nope'"]),
    ("cam.nope=1", ["unknown setting", "'cam.nope'"]),
    ("affinity.x=1", ["unknown setting", "affinity.x"]),
    ("aff_iters=2.5", ["aff_iters=2.5", "int"]),
    ("affinity=maybe", ["affinity", "bool"]),
    ("cam.mode=exclusive", ["cam.mode", "not one of"]),
    ("threshold_range=[0.3]", ["threshold_range"]),
    ("cam=3", ["cam", "group"]),
    ("novalue", ["KEY=VALUE"]),
])
def test_bad_settings_are_one_clear_error(setting, words):
    with pytest.raises(GaudiError) as e:
        apply_settings(PseudoConfig(), [setting])
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_config_file_and_a_runs_config_json(tmp_path):
    f = tmp_path / "knobs.json"
    f.write_text(json.dumps({"affinity": False, "cam": {"mode": "background"}, "validators": {"reject_quantile": 0.3}}))
    cfg = load_config(f)
    assert cfg == PseudoConfig(affinity=False, cam=CamConfig(mode="background"),
                               validators=ValidatorConfig(reject_quantile=0.3))
    # a run's config.json (its settings under "pseudo") gives back the very same config
    full = PseudoConfig(mutual=None, threshold_range=(0.25, 0.75), cam=CamConfig(scales=(1.0, 1.5)))
    run = tmp_path / "config.json"
    run.write_text(json.dumps({"manifest": "m.csv", "round": 1, "pseudo": full.to_dict()}))
    assert load_config(run) == full
    assert config_from_dict(json.loads(json.dumps(PseudoConfig().to_dict()))) == PseudoConfig()
    (tmp_path / "bad.json").write_text(json.dumps({"validators": {"reject": 0.3}}))
    with pytest.raises(GaudiError, match="unknown setting 'validators.reject'"):
        load_config(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(GaudiError, match="not a JSON file"):
        load_config(tmp_path / "broken.json")
    with pytest.raises(GaudiError, match="not found"):
        load_config(tmp_path / "missing.json")
    with pytest.raises(GaudiError, match="reject_quantile"):
        check_config(apply_settings(PseudoConfig(), ["validators.reject_quantile=1.5"]))

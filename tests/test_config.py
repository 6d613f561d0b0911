import pytest

from ovseg.config import (
    PipelineConfig,
    get_balanced_config,
    get_config,
    get_fast_config,
    get_quality_config,
    load_config,
)
from ovseg.errors import ConfigError


def test_defaults_are_the_thesis_values():
    c = PipelineConfig()
    assert c.profile == "mini"
    assert (c.sam2.points_per_side, c.sam2.pred_iou_thresh, c.sam2.stability_score_thresh) == (32, 0.88, 0.95)
    assert (c.clip.model, c.clip.pretrained, c.clip.image_size) == ("ViT-L-14-336", "openai", 336)
    assert c.clip.extract_layers == [6, 12, 18, 24]
    assert c.alignment.background_weight == 0.3
    i = c.inpainting
    assert (i.num_inference_steps, i.guidance_scale, i.mask_blur, i.mask_dilation) == (50, 7.5, 8.0, 5)


def test_presets_differ_and_validate():
    fast, bal, qual = get_fast_config(), get_balanced_config(), get_quality_config()
    assert fast.sam2.points_per_side < bal.sam2.points_per_side < qual.sam2.points_per_side
    assert get_config("quality", profile="full").profile == "full"
    with pytest.raises(ConfigError, match="fast, balanced, quality"):
        get_config("turbo")


def test_yaml_round_trip(tmp_path):
    with pytest.raises(ConfigError, match="one non-negative weight per extract_layers entry"):
        get_quality_config("full").replace(**{"clip.layer_weights": [1, 2]})  # two weights, four layers
    c = get_quality_config("full").replace(**{"alignment.background_weight": 0.4, "clip.extract_layers": [12, 24]})
    path = tmp_path / "cfg.yaml"
    c.to_yaml(path)
    back = load_config(path)
    assert back == c
    assert back.to_dict() == c.to_dict()


@pytest.mark.parametrize("text,match", [
    ("sam2: {pred_iou_thresh: 1.5}", r"sam2.pred_iou_thresh must be in \[0.0, 1.0\]; got 1.5"),
    ("sam2: {points_per_sid: 32}", r"unknown config key 'sam2.points_per_sid'.*valid keys here are: model, points_per_side"),
    ("banana: 1", r"unknown config key 'banana'"),
    ("clip: {dense_path: magic}", r"clip.dense_path must be one of 'maskclip', 'tokens', 'sclip', 'clearclip'; got 'magic'"),
    ("clip: {extract_layers: [0, 6]}", r"1-indexed"),
    ("alignment: {spatial_weighting: 3}", r"must be true or false"),
    ("inpainting: {num_inference_steps: many}", r"must be an integer"),
    ("profile: huge", r"profile must be one of 'mini', 'full'"),
    ("clip: {templates: imagenet81}", r"clip.templates must be one of imagenet80, imagenet7, none or a list"),
    ("clip: {templates: ['a photo of']}", r"one '\{\}' each"),
    ("sam2: [1, 2]", r"section 'sam2' must be a mapping"),
])
def test_bad_values_name_key_value_and_range(text, match):
    with pytest.raises(ConfigError, match=match):
        PipelineConfig.from_yaml(text)


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sam2:\n  points_per_side: [1\n")
    with pytest.raises(ConfigError, match="valid YAML at line"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file must exist"):
        load_config(tmp_path / "nope.yaml")


def test_partial_yaml_keeps_other_defaults():
    c = PipelineConfig.from_yaml("sam2:\n  points_per_side: 16\nprofile: full\n")
    assert c.sam2.points_per_side == 16 and c.profile == "full" and c.sam2.pred_iou_thresh == 0.88


def test_custom_template_list_round_trips(tmp_path):
    c = PipelineConfig.from_yaml("clip:\n  templates: ['a photo of a {}.', 'a drawing of a {}.']\n")
    assert c.clip.templates == ["a photo of a {}.", "a drawing of a {}."]
    assert PipelineConfig.from_yaml(c.to_yaml()) == c


def test_presets_are_built_for_their_profile():
    from ovseg.config import MINI_SAM2_PRESETS

    full, mini = get_balanced_config("full"), get_balanced_config("mini")
    assert (full.sam2.points_per_side, full.sam2.pred_iou_thresh, full.sam2.stability_score_thresh) == (32, 0.88, 0.95)
    for key, value in MINI_SAM2_PRESETS["balanced"].items():
        assert getattr(mini.sam2, key) == value
    assert mini.clip == full.clip and mini.alignment == full.alignment  # only the mask generator differs
    assert PipelineConfig.from_yaml("profile: full\n").sam2 == full.sam2
    assert load_config("quality", profile="full").sam2.points_per_side == 48
    assert load_config(None).profile == "mini"


def test_files_are_written_with_ordinary_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        get_balanced_config().to_yaml(tmp_path / "c.yaml")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "c.yaml").st_mode) == 0o644  # not mkstemp's 0600


def test_mini_inpainting_settings_apply_to_mini_presets_only():
    from ovseg.config import MINI_INPAINTING_SETTINGS, get_balanced_config, get_fast_config

    for cfg in (get_balanced_config(), get_fast_config()):
        for key, value in MINI_INPAINTING_SETTINGS.items():
            assert getattr(cfg.inpainting, key) == value
    full = get_balanced_config(profile="full").inpainting
    assert full.guidance_scale == 7.5 and full.negative_prompt.startswith("blurry")  # the thesis's settings
    assert full.num_inference_steps == 50 and full.mask_dilation == 5 and full.mask_blur == 8.0

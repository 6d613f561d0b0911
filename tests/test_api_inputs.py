"""The Python API's inputs (issue #19): OvsegError for what a user may pass wrong, acceptance of what is meant."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_pipeline import tiny_components, tiny_config

from ovseg.config import load_config
from ovseg.errors import ConfigError, InputError
from ovseg.pipeline import OpenVocabSegmentationPipeline


@pytest.fixture(scope="module")
def pipe():
    cfg = tiny_config()
    return OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))


@pytest.fixture(scope="module")
def image():
    img = np.full((96, 128, 3), 200, np.uint8)
    img[20:60, 20:60] = (220, 40, 40)
    return img


def test_a_list_of_prompts_is_refused_not_cut_to_its_first(pipe, image):
    with pytest.raises(InputError, match=r"segment takes one text prompt \(a str\); got a list of 2; fix: .*segment_semantic"):
        pipe.segment(image, ["red circle", "blue square"])


def test_a_single_class_name_is_one_class(pipe, image):
    res = pipe.segment_semantic(image, "red circle")
    assert res.class_names == ["red circle"]  # not ['r', 'e', 'd', ...]


def test_numpy_integer_top_k_is_accepted(pipe, image):
    res = pipe.segment(image, "red circle", top_k=np.int64(2))
    assert res.counts["top_k"] == 2 and type(res.counts["top_k"]) is int
    json.dumps(res.to_dict())  # JSON-ready


@pytest.mark.parametrize("field, value", [("background_weight", math.nan), ("background_weight", 7.0)])
def test_config_changed_after_construction_is_checked_at_each_call(image, field, value):
    cfg = tiny_config()
    p = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    setattr(p.config.alignment, field, value)
    with pytest.raises(ConfigError, match=f"alignment.{field}"):
        p.segment(image, "red circle")
    with pytest.raises(ConfigError, match=f"alignment.{field}"):
        p.segment_semantic(image, ["red circle"])


def test_config_as_a_mapping_or_a_wrong_type():
    cfg = load_config({"alignment": {"background_weight": 0.4}})
    assert cfg.alignment.background_weight == 0.4
    with pytest.raises(ConfigError, match="config must be a preset name, a YAML path, a PipelineConfig or a dict; got int"):
        OpenVocabSegmentationPipeline(config=5)


def test_visualize_results_of_nothing_is_an_ovseg_error(pipe):
    with pytest.raises(InputError, match="visualize_results takes a result of segment"):
        pipe.visualize_results(None)

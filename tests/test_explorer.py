import numpy as np
import pytest
from matplotlib.figure import Figure

from ovseg.errors import InputError
from ovseg.explorer import Explorer


@pytest.fixture(scope="module")
def explorer(request):
    from test_pipeline import tiny_components, tiny_config

    from ovseg.pipeline import OpenVocabSegmentationPipeline

    cfg = tiny_config().replace(**{"sam2.points_per_side": 8, "sam2.box_nms_thresh": 1.0, "sam2.mask_threshold": 2.0})
    pipe = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    ex = Explorer(pipe, pool_iou=0.0, pool_stability=0.0)
    img = np.full((96, 128, 3), 200, np.uint8)
    yy, xx = np.mgrid[0:96, 0:128]
    img[(yy - 48) ** 2 + (xx - 32) ** 2 <= 20**2] = (220, 40, 40)
    img[28:68, 76:116] = (40, 80, 220)
    ex.set_image(img)
    return ex


def test_sliders_need_no_model_run(explorer):
    gen = explorer.pipe.mask_generator
    calls = gen.encoder_calls
    assert gen.config.pred_iou_thresh == 0.0  # tiny_config's own value is restored after building the pool
    loose = explorer.filter(0.0, 0.0)
    cut = float(np.median(explorer.pool.predicted_iou))
    strict = explorer.filter(cut, 0.0)
    assert len(explorer.pool) > 3 and 0 < len(strict) < len(loose) <= len(explorer.pool)
    assert (strict.predicted_iou > cut).all()
    view = explorer.score(["red square", "grey background"], masks=loose, alpha=0.5, threshold=-1.0, top_k=3,
                          layers=[4], spatial_weighting=False)
    assert view.scores.final.shape == (len(loose), 2) and len(view.order) <= 3
    assert view.heatmaps.shape[0] == 2
    assert gen.encoder_calls == calls  # filtering and scoring ran no encoder


def test_score_matches_the_pipeline_with_the_same_settings(explorer):
    pipe = explorer.pipe
    view = explorer.score("red square", masks=explorer.pool, threshold=-1.0, top_k=100)
    a = pipe.config.alignment
    from ovseg.align import score_masks
    from ovseg.utils import score_shape

    shape = score_shape(96, 128, a.score_max_side)
    sim = explorer.features.similarity(pipe.clip.encode_text(["red square"]), size=shape)
    ref = score_masks(explorer.pool.score_weights(shape, a.boundary_width, a.boundary_min_weight), sim,
                      a.background_weight)
    np.testing.assert_allclose(view.scores.final, ref.final)


def test_edit_figure_and_errors(explorer):
    view = explorer.score("red square", threshold=-1.0)
    res = explorer.edit(view, 0, "replace", edit_prompt="blue circle")
    assert res.image.size == (128, 96)
    assert isinstance(explorer.figure(view), Figure)
    with pytest.raises(InputError, match="one of the ranked masks"):
        explorer.edit(view, 99, "remove")
    with pytest.raises(InputError, match="subset of the extracted layers"):
        explorer.score("red square", layers=[7])
    with pytest.raises(InputError, match="needs an image first"):
        Explorer(explorer.pipe).filter(0.5, 0.5)

"""Drive the explorer widgets headlessly (no kernel): set .value, click the button."""

import datetime

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("ipywidgets")


@pytest.fixture(scope="module")
def ui(tmp_path_factory, scene_module):
    from test_pipeline import tiny_components, tiny_config

    from ovseg.explorer import Explorer
    from ovseg.pipeline import OpenVocabSegmentationPipeline
    from ovseg.widgets import ExplorerUI

    folder = tmp_path_factory.mktemp("samples")
    Image.fromarray(scene_module).save(folder / "a.png")
    Image.fromarray(scene_module[:, ::-1].copy()).save(folder / "b.png")
    cfg = tiny_config().replace(**{"sam2.points_per_side": 8, "sam2.box_nms_thresh": 1.0, "sam2.mask_threshold": 2.0})
    pipe = OpenVocabSegmentationPipeline(cfg, **tiny_components(cfg))
    return ExplorerUI(samples=folder, explorer=Explorer(pipe, pool_iou=0.0, pool_stability=0.0))


@pytest.fixture(scope="module")
def scene_module():
    img = np.full((96, 128, 3), 200, np.uint8)
    yy, xx = np.mgrid[0:96, 0:128]
    img[(yy - 48) ** 2 + (xx - 32) ** 2 <= 20**2] = (220, 40, 40)
    img[28:68, 76:116] = (40, 80, 220)
    return img


def test_controls_rescore_without_model_runs(ui):
    assert ui.view is not None and "masks after filtering" in ui.status
    gen = ui.explorer.pipe.mask_generator
    calls = gen.encoder_calls
    before = len(ui.view.masks)
    ui.iou.value = float(np.quantile(ui.explorer.pool.predicted_iou, 0.75))
    assert len(ui.view.masks) < before
    ui.top_k.value = 1
    assert len(ui.view.order) <= 1
    ui.prompt.value = "blue square"
    assert ui.view.prompts == ["blue square"]
    ui.layers.children[0].value = False  # layer selection
    assert ui.selected_layers() == ui.explorer.features.layers[1:]
    assert gen.encoder_calls == calls


def test_edit_button_and_errors_shown_not_raised(ui):
    ui.iou.value = ui.iou.min
    ui.threshold.value = -1.0
    ui.operation.value = "replace"
    ui.edit_prompt.value = "green star"
    ui.edit_button.click()
    assert ui.status.startswith("replace done")
    ui.rank.value = 99
    ui.edit_button.click()
    assert ui.status.startswith("error: the selected mask must be one of the ranked masks")
    ui.prompt.value = "   "
    assert ui.status.startswith("error: prompt must contain text")


def test_picking_another_image_runs_the_models_once(ui):
    gen = ui.explorer.pipe.mask_generator
    calls = gen.encoder_calls
    ui.image.value = ui.image.options[1]
    assert gen.encoder_calls == calls + 1


def test_view_is_a_png_that_changes_with_the_controls(ui):
    import io

    ui.iou.value = ui.iou.min
    ui.top_k.value = 5
    ui.prompt.value = "red circle"
    before = bytes(ui.display.value)
    assert before.startswith(b"\x89PNG")
    ui.top_k.value = 1  # fewer masks drawn: the rendered view differs
    after = bytes(ui.display.value)
    a = np.asarray(Image.open(io.BytesIO(before)).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(io.BytesIO(after)).convert("RGB"), dtype=np.int16)
    assert a.shape == b.shape and np.abs(a - b).max() > 32
    assert not hasattr(ui, "out")  # no Output widget: headless runs need no comm round trip


WHEN = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


def test_uploading_a_non_image_is_reported_in_the_status_line(ui):
    import io

    shown = bytes(ui.display.value)
    ui.upload.value = ({"name": "notes.txt", "type": "text/plain", "size": 5, "content": memoryview(b"hello"),
                        "last_modified": WHEN},)
    assert ui.status.startswith("error: file must be an image PIL can read") and "notes.txt" in ui.status
    assert bytes(ui.display.value) == shown  # the previous view stays
    buf = io.BytesIO()
    Image.fromarray(np.full((64, 80, 3), 90, np.uint8)).save(buf, format="PNG")
    ui.upload.value = ({"name": "grey.png", "type": "image/png", "size": len(buf.getvalue()),
                        "content": memoryview(buf.getvalue()), "last_modified": WHEN},)
    assert ui.explorer.image.shape == (64, 80, 3) and not ui.status.startswith("error")

"""The ipywidgets explorer: controls wired to :class:`ovseg.explorer.Explorer` callbacks.

Everything the widgets do is a call to a plain library function (``Explorer.set_image``,
``filter``, ``score``, ``edit``, ``figure``), so the logic is unit-tested without a kernel; this
module only builds the controls and connects them. ``ipywidgets`` is imported lazily (it is an
optional, notebook-only dependency).

    >>> from ovseg.widgets import ExplorerUI
    >>> ui = ExplorerUI()          # mini profile
    >>> ui.widget                  # display it in a notebook
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .explorer import Explorer, ExplorerView
from .paths import SAMPLES_DIR

if TYPE_CHECKING:  # pragma: no cover
    from .pipeline import OpenVocabSegmentationPipeline

__all__ = ["ExplorerUI"]


class ExplorerUI:
    """Image picker / upload, prompt box, sliders (IoU, stability, alpha, similarity threshold, top-k),
    layer checkboxes, and an edit row (operation, edit prompt, mask rank, button).

    Attributes:
        explorer: the :class:`Explorer` holding cached masks and features.
        view: the last :class:`ExplorerView` shown (None before the first image).
        widget: the ipywidgets ``VBox`` to display.
        status: text of the status line (errors are shown there, not raised).
    """

    def __init__(self, pipe: "OpenVocabSegmentationPipeline | None" = None, samples: Path = SAMPLES_DIR,
                 explorer: Explorer | None = None):
        import ipywidgets as w

        from .pipeline import OpenVocabSegmentationPipeline

        self.explorer = explorer or Explorer(pipe or OpenVocabSegmentationPipeline())
        self.view: ExplorerView | None = None
        cfg = self.explorer.pipe.config
        floor_iou, floor_stab = self.explorer.pool_iou, self.explorer.pool_stability
        self.image = w.Dropdown(options=sorted(str(p) for p in Path(samples).glob("*.png")), description="image")
        self.upload = w.FileUpload(accept="image/*", multiple=False, description="upload")
        self.prompt = w.Text(value="red circle", description="prompt", continuous_update=False)
        self.iou = w.FloatSlider(value=max(cfg.sam2.pred_iou_thresh, floor_iou), min=floor_iou, max=1.0, step=0.01,
                                 description="pred IoU")
        self.stability = w.FloatSlider(value=max(cfg.sam2.stability_score_thresh, floor_stab), min=floor_stab, max=1.0,
                                       step=0.01, description="stability")
        self.alpha = w.FloatSlider(value=cfg.alignment.background_weight, min=0.0, max=1.0, step=0.05, description="alpha")
        self.threshold = w.FloatSlider(value=cfg.alignment.similarity_threshold, min=-1.0, max=1.0, step=0.01,
                                       description="sim. thresh")
        self.top_k = w.IntSlider(value=5, min=1, max=20, description="top-k")
        self.layers = w.HBox([])
        self.operation = w.Dropdown(options=["remove", "replace", "style"], value="remove", description="edit")
        self.edit_prompt = w.Text(value="", description="edit prompt")
        self.rank = w.IntText(value=0, description="mask rank")
        self.edit_button = w.Button(description="edit", button_style="primary")
        # The view is a PNG in an Image widget: each change is one state update sent to the front end. (An Output
        # widget would route display messages through the client -- clear_output(wait=True), capture by msg_id --,
        # a round trip that headless runs (papermill / nbclient) handle poorly and that once hung the main job.)
        self.display = w.Image(format="png", layout=w.Layout(max_width="100%"))
        self.status = ""
        self.status_line = w.HTML()
        self.widget = w.VBox([w.HBox([self.image, self.upload]), self.prompt, w.HBox([self.iou, self.stability]),
                              w.HBox([self.alpha, self.threshold, self.top_k]), self.layers,
                              w.HBox([self.operation, self.edit_prompt, self.rank, self.edit_button]),
                              self.status_line, self.display])
        self.image.observe(lambda _: self.load(self.image.value), names="value")
        self.upload.observe(lambda _: self._on_upload(), names="value")
        for c in (self.prompt, self.iou, self.stability, self.alpha, self.threshold, self.top_k):
            c.observe(lambda _: self.refresh(), names="value")
        self.edit_button.on_click(lambda _: self.run_edit())
        if self.image.options:
            self.load(self.image.value)

    # ---- callbacks (each a thin call into the Explorer) -----------------------------------------
    def _report(self, err: Exception | None, ok: str = "") -> None:
        self.status = f"error: {err}" if err is not None else ok
        self.status_line.value = self.status

    def load(self, image: Any) -> None:
        """New image: the only callback that runs the models."""
        import ipywidgets as w

        from .errors import OvsegError

        try:
            self.explorer.set_image(image)
        except OvsegError as err:
            self._report(err)
            return
        boxes = [w.Checkbox(value=True, description=f"layer {layer}", indent=False)
                 for layer in self.explorer.features.layers]
        for b in boxes:
            b.observe(lambda _: self.refresh(), names="value")
        self.layers.children = boxes
        self.refresh()

    def _on_upload(self) -> None:
        """Upload: the file is read like any input image (same rules); a bad file is reported in the status line."""
        from .errors import OvsegError
        from .io import load_image_bytes

        files = self.upload.value
        if files:
            item = files[0] if isinstance(files, (list, tuple)) else next(iter(files.values()))
            name = item.get("name", "upload") if isinstance(item, dict) else getattr(item, "name", "upload")
            content = item["content"] if isinstance(item, dict) else item.content
            try:
                image = load_image_bytes(bytes(content), name=name)
            except OvsegError as err:
                self._report(err)
                return
            self.load(image)

    def selected_layers(self) -> list[int] | None:
        chosen = [layer for layer, box in zip(self.explorer.features.layers, self.layers.children) if box.value]
        return None if len(chosen) == len(self.layers.children) else chosen

    def refresh(self) -> ExplorerView | None:
        """Slider / prompt change: re-filter and re-score the cached masks (no model run)."""
        from .errors import OvsegError

        if self.explorer.image is None:
            return None
        try:
            masks = self.explorer.filter(self.iou.value, self.stability.value)
            self.view = self.explorer.score(self.prompt.value, masks=masks, alpha=self.alpha.value,
                                            threshold=self.threshold.value, top_k=self.top_k.value,
                                            layers=self.selected_layers())
        except OvsegError as err:
            self._report(err)
            return None
        self._report(None, f"{len(masks)} masks after filtering, {len(self.view.order)} shown")
        self._show(self.explorer.figure(self.view))
        return self.view

    def run_edit(self) -> Any:
        """Edit button: remove / replace / style the selected ranked mask."""
        from .errors import OvsegError

        if self.view is None:
            self._report(None, "pick an image first")
            return None
        try:
            res = self.explorer.edit(self.view, self.rank.value, self.operation.value,
                                     edit_prompt=self.edit_prompt.value or None)
        except OvsegError as err:
            self._report(err)
            return None
        self._report(None, f"{res.operation} done ({res.method})")
        self._show(res.image)
        return res

    def _show(self, obj: Any) -> None:
        """Show a matplotlib Figure or an image (PIL, or HWC uint8 array) as the view's PNG."""
        self.display.value = _png(obj)


def _png(obj: Any) -> bytes:
    """PNG bytes of a matplotlib ``Figure`` (closed afterwards), a PIL image or an (H, W, 3) uint8 array."""
    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    if hasattr(obj, "savefig"):
        obj.savefig(buf, format="png")
        try:
            import matplotlib.pyplot as plt

            plt.close(obj)
        except Exception:  # pragma: no cover - a Figure not managed by pyplot
            pass
    else:
        (obj if isinstance(obj, Image.Image) else Image.fromarray(np.asarray(obj))).save(buf, format="png")
    return buf.getvalue()

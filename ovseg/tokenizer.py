"""A Hugging Face ``CLIPTokenizer`` built offline from open_clip's bundled BPE vocabulary.

CLIP's byte-level BPE (49,408 tokens) ships inside ``open_clip_torch``; diffusers pipelines want
it as a ``transformers.CLIPTokenizer`` (``vocab.json`` + ``merges.txt``). Writing those two files
from open_clip's tables gives the identical tokenizer with no download. Used by the full-size
random-init benchmark and by the mini inpainting model.
"""

from __future__ import annotations

import json
from pathlib import Path

from .io import write_text_atomic

__all__ = ["write_clip_tokenizer_files", "clip_tokenizer"]

_SPECIAL = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}


def write_clip_tokenizer_files(folder: str | Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` (CLIP BPE, open_clip's tables) into ``folder``."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    folder = Path(folder)
    vocab = {_SPECIAL.get(k, k): v for k, v in tok.encoder.items()}
    merges = sorted(tok.bpe_ranks.items(), key=lambda kv: kv[1])
    write_text_atomic(folder / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    write_text_atomic(folder / "merges.txt", "#version: 0.2\n" + "\n".join(f"{a} {b}" for (a, b), _ in merges) + "\n")
    return folder


def clip_tokenizer(folder: str | Path, model_max_length: int = 77):
    """A ``transformers.CLIPTokenizer`` over the files of :func:`write_clip_tokenizer_files`."""
    from transformers import CLIPTokenizer

    folder = Path(folder)
    if not (folder / "vocab.json").exists():
        write_clip_tokenizer_files(folder)
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=model_max_length,
                         pad_token="<|endoftext|>")

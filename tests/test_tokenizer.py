from open_clip.tokenizer import SimpleTokenizer

from ovseg.tokenizer import clip_tokenizer


def test_hf_tokenizer_from_open_clip_bpe_matches_open_clip(tmp_path):
    hf = clip_tokenizer(tmp_path)
    oc = SimpleTokenizer()
    for text in ["a photo of a red circle.", "Modern ultrawide curved monitor!", "jekyll & hyde, 42 cats"]:
        ids = hf(text).input_ids
        ref = oc(text)[0]
        assert ids == ref[: len(ids)].tolist() and int(ref[len(ids):].abs().sum()) == 0
    assert hf.model_max_length == 77 and len(hf) == 49408

import dataclasses

import pytest

from ovseg import weights as W
from ovseg.errors import WeightsError


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def _cache_file(cache, repo, filename, data=b"weights"):
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text("rev0")
    snap = folder / "snapshots" / "rev0"
    snap.mkdir(parents=True, exist_ok=True)
    (snap / filename).write_bytes(data)
    return snap / filename


def test_registry_has_both_profiles():
    assert "sam2.1-hiera-large" in W.list_models("full", "sam2")
    assert W.default_model("full", "clip") == "ViT-L-14-336"
    assert set(W.list_models("mini")) == {"mini-sam2", "mini-sam2-video", "mini-clip", "mini-clip-contrastive",
                                          "mini-inpainting"}
    assert W.default_model("mini", "clip") == "mini-clip"  # the contrastive one is selected by clip.model only
    assert W.default_model("mini", "sam2") == "mini-sam2"  # the video one tracks (ovseg.video.VIDEO_WEIGHTS) only
    e = W.get_entry("ViT-L-14-336")
    assert e.preprocess["image_size"] == 336 and e.preprocess["quick_gelu"] is True
    assert "withdrawn" in W.get_entry("sd2-inpainting").note


def test_missing_full_weights_name_model_place_and_command(hf_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as err:
        W.resolve("sam2.1-hiera-large", "sam2")
    msg = str(err.value)
    assert "sam2.1-hiera-large" in msg and str(hf_cache) in msg
    assert "ovseg weights download full --only sam2.1-hiera-large" in msg


def test_mini_not_installed_is_clear(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "REPO_ROOT", tmp_path)  # a checkout without the embedded models
    with pytest.raises(WeightsError, match="mini profile's clip model 'mini-clip' is not installed"):
        W.resolve("mini-clip", "clip")


def test_resolution_order(tmp_path, hf_cache):
    local = tmp_path / "my.pt"
    local.write_bytes(b"x")
    assert W.resolve(str(local), "sam2").origin == "local path"
    hit = _cache_file(hf_cache, "facebook/sam2.1-hiera-large", "sam2.1_hiera_large.pt")
    found = W.resolve("sam2.1-hiera-large", "sam2")
    assert found.origin == "HF cache" and found.path == hit
    # diffusers models resolve to their folder
    idx = _cache_file(hf_cache, "stable-diffusion-v1-5/stable-diffusion-inpainting", "model_index.json", b"{}")
    assert W.resolve("sd15-inpainting", "inpainting").path == idx.parent
    # a repo id that is not in the registry
    _cache_file(hf_cache, "someone/inpaint-mirror", "model_index.json", b"{}")
    assert W.resolve("someone/inpaint-mirror", "inpainting").origin == "HF cache"


def test_wrong_stage_and_bad_spec():
    with pytest.raises(WeightsError, match="is a sam2 model, not a clip model"):
        W.resolve("sam2.1-hiera-large", "clip")
    with pytest.raises(WeightsError, match="registry name, a local path or an HF repo id"):
        W.resolve("no-such-model", "sam2")


def test_verify_checksums(hf_cache, monkeypatch):
    path = _cache_file(hf_cache, "facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt", b"abc")
    good = W.sha256_file(path)
    entry = W.REGISTRY["sam2.1-hiera-tiny"]
    assert W.verify("sam2.1-hiera-tiny")[0][1].startswith("not pinned")
    monkeypatch.setitem(W.REGISTRY, entry.name, dataclasses.replace(entry, sha256={entry.files[0]: good}))
    assert W.verify("sam2.1-hiera-tiny") == [(entry.files[0], "ok")]
    monkeypatch.setitem(W.REGISTRY, entry.name, dataclasses.replace(entry, sha256={entry.files[0]: "0" * 64}))
    assert W.verify("sam2.1-hiera-tiny") == [(entry.files[0], f"MISMATCH (sha256 {good}, expected {'0' * 64})")]


def test_download_refused_offline(hf_cache, monkeypatch):
    """Offline, download refuses before fetching anything and names the command with the variable unset."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError) as err:
        W.download("full", only="sam2.1-hiera-tiny")
    msg = str(err.value)
    assert "needs the network" in msg and "missing: sam2.1-hiera-tiny" in msg
    assert "`HF_HUB_OFFLINE=0 ovseg weights download full --only sam2.1-hiera-tiny`" in msg
    assert "unset HF_HUB_OFFLINE" in msg
    # a model already in the cache needs no network: offline download just finds it
    hit = _cache_file(hf_cache, "facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt")
    assert [r.path for r in W.download("full", only="sam2.1-hiera-tiny")] == [hit]


def test_missing_weights_error_reads_well(hf_cache, monkeypatch):
    """'got nothing in the HF cache ...' (not 'got looked in'); offline, the fix sets HF_HUB_OFFLINE=0."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(WeightsError) as err:
        W.resolve("sam2.1-hiera-tiny", "sam2")
    msg = str(err.value)
    assert f"; got nothing in the HF cache {hf_cache} for facebook/sam2.1-hiera-tiny/sam2.1_hiera_tiny.pt;" in msg
    assert "got looked" not in msg and "fix: run `ovseg weights download full --only sam2.1-hiera-tiny" in msg
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsError, match=r"run `HF_HUB_OFFLINE=0 ovseg weights download full --only sam2\.1-hiera-tiny`"):
        W.resolve("sam2.1-hiera-tiny", "sam2")


def test_download_plan_and_present_size(hf_cache, monkeypatch):
    plan = W.download_plan("full")
    assert [e.name for e, _ in plan] == ["sam2.1-hiera-large", "ViT-L-14-336", "sd2-inpainting"]
    assert all(found is None for _, found in plan)
    hit = _cache_file(hf_cache, "facebook/sam2.1-hiera-large", "sam2.1_hiera_large.pt", b"x" * 1234)
    (entry, found), *_ = W.download_plan("full")
    assert found is not None and found.path == hit and found.origin == "HF cache"
    assert W.present_size("sam2.1-hiera-large") == 1234
    assert W.present_size("sam2.1-hiera-tiny") is None  # missing
    mini = W.REGISTRY["mini-sam2"]
    assert W.present_size("mini-sam2") == sum((W.REPO_ROOT / mini.local_dir / f).stat().st_size for f in mini.files)
    with pytest.raises(WeightsError, match="model must be a registry name"):
        W.download_plan("full", only="nope")


def test_model_record_names_the_pinned_checksums(tmp_path):
    rec = W.model_record("mini-sam2", "sam2")
    sums = (W.REPO_ROOT / "data/models/mini-sam2/SHA256SUMS").read_text().split()
    assert rec["name"] == "mini-sam2" and rec["sha256"] == {sums[1]: sums[0], sums[3]: sums[2]}
    assert W.model_record("sam2.1-hiera-large", "sam2") == {"name": "sam2.1-hiera-large", "stage": "sam2", "sha256": None}
    export = tmp_path / "run-export"  # a training run's export carries its own SHA256SUMS
    export.mkdir()
    (export / "SHA256SUMS").write_text("ab" * 32 + "  unet/diffusion_pytorch_model.safetensors\n")
    assert W.model_record(str(export), "inpainting")["sha256"] == {"unet/diffusion_pytorch_model.safetensors": "ab" * 32}


def test_loading_checks_pinned_checksums(hf_cache, monkeypatch):
    path = _cache_file(hf_cache, "facebook/sam2.1-hiera-tiny", "sam2.1_hiera_tiny.pt", b"abc")
    entry = W.REGISTRY["sam2.1-hiera-tiny"]
    monkeypatch.setitem(W.REGISTRY, entry.name, dataclasses.replace(entry, sha256={entry.files[0]: W.sha256_file(path)}))
    assert W.resolve("sam2.1-hiera-tiny", "sam2").path == path
    path.write_bytes(b"tampered")
    with pytest.raises(WeightsError, match="corrupt or was replaced"):
        W.resolve("sam2.1-hiera-tiny", "sam2")


def test_embedded_models_are_pinned_by_their_sha256sums(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "REPO_ROOT", tmp_path)
    folder = tmp_path / "data/models/mini-clip"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "config.json").write_text("{}")
    W.pin("mini-clip")
    assert set(W.pinned_sha256(W.REGISTRY["mini-clip"])) == {"model.safetensors", "config.json"}
    assert W.resolve("mini-clip", "clip").origin == "repository"
    assert [s for _, s in W.verify("mini-clip")] == ["ok", "ok"]
    (folder / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(WeightsError, match="corrupt or was replaced"):
        W.resolve("mini-clip", "clip")


def _fake_mini_models(root):
    for name in ("mini-clip", "mini-sam2"):
        entry = W.REGISTRY[name]
        folder = root / entry.local_dir
        folder.mkdir(parents=True)
        for f in entry.files:
            (folder / f).write_bytes(f"{name}/{f}".encode())
        W.pin(name)


def test_deleting_sha256sums_does_not_unpin_an_embedded_model(tmp_path, monkeypatch):
    monkeypatch.setattr(W, "REPO_ROOT", tmp_path)
    _fake_mini_models(tmp_path)
    folder = tmp_path / W.REGISTRY["mini-clip"].local_dir
    (folder / "SHA256SUMS").unlink()  # what an attacker (or an accident) does first
    (folder / "model.safetensors").write_bytes(b"tampered")
    assert W.pinned_sha256(W.REGISTRY["mini-clip"])  # the package's pins.json still pins it
    assert W.verify("mini-clip")[0][1].startswith("MISMATCH")
    with pytest.raises(WeightsError, match="corrupt or was replaced"):
        W.resolve("mini-clip", "clip")


def test_weights_verify_reports_every_mismatch(tmp_path, monkeypatch, capsys):
    from ovseg.cli import main

    monkeypatch.setattr(W, "REPO_ROOT", tmp_path)
    _fake_mini_models(tmp_path)
    (tmp_path / W.REGISTRY["mini-clip"].local_dir / "config.json").write_text("{}")
    (tmp_path / W.REGISTRY["mini-sam2"].local_dir / "model.safetensors").write_bytes(b"x")
    rc = main(["weights", "verify"])
    out, err = capsys.readouterr()
    assert rc == 3
    rows = [ln for ln in out.splitlines() if "MISMATCH" in ln]
    assert len(rows) == 2 and any("mini-clip" in r and "config.json" in r for r in rows)
    assert any("mini-sam2" in r and "model.safetensors" in r for r in rows)
    assert "every model file must match its pinned sha256: 2 do not" in err
    assert "mini-clip/config.json" in err and "mini-sam2/model.safetensors" in err and err.count("\n") == 1


def test_the_shipped_pins_match_the_shipped_models():
    for name in ("mini-sam2", "mini-clip", "mini-clip-contrastive", "mini-inpainting"):
        assert [s for _, s in W.verify(name)] == ["ok"] * len(W.REGISTRY[name].files), name

"""The PIE-Bench runner (benchmarks/pie), offline: the benchmark's file format and mask code, every
metric against an independent computation written here, the runner end to end on `tiny-sd` with tiny
random metric networks read from a Hugging Face-layout cache (tests/pie_fixtures.py), resume, the
table's counting, the shapes export, and the one-line error when the metric weights are missing."""

import json
import math

import numpy as np
import pie_fixtures as pf
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from benchmarks.pie import data as D
from benchmarks.pie import metrics as M
from benchmarks.pie import report, runner
from inversion.errors import ParameterError

SIDE = 512


@pytest.fixture(scope="module")
def metric_env(tmp_path_factory):
    return pf.metric_cache(tmp_path_factory.mktemp("pie-metrics"))


@pytest.fixture
def metric_weights(metric_env, monkeypatch):
    for k, v in metric_env.items():
        monkeypatch.setenv(k, v)
    return metric_env


@pytest.fixture(scope="module")
def models(metric_env):
    with pytest.MonkeyPatch.context() as mp:
        for k, v in metric_env.items():
            mp.setenv(k, v)
        yield M.load_models(tuple(M.METRICS))


@pytest.fixture(scope="module")
def pie_data(tmp_path_factory):
    """One held-out scene as two PIE-Bench items: a colour change (type 6) and a shape change (type 1)."""
    return pf.pie_dataset(tmp_path_factory.mktemp("pie-data"), count=1)


def edited_version(source: np.ndarray, mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """The source with noise everywhere and the edited region repainted: a stand-in edit."""
    rng = np.random.default_rng(seed)
    out = source.astype(np.int32) + rng.integers(-25, 26, source.shape)
    out[mask > 0] = (40, 200, 90)
    return np.clip(out, 0, 255).astype(np.uint8)


# ---- the data format ------------------------------------------------------------------------------
def test_rle_decoder_against_a_hand_made_mask():
    rle = [0, 3, 5 * SIDE + 10, 4, 7 * SIDE + 510, 5, SIDE * SIDE - 2, 10, SIDE * SIDE + 7, 3]
    expected = np.zeros((SIDE, SIDE), np.float32)
    expected[0, 0:3] = 1
    expected[5, 10:14] = 1
    expected[7, 510:512] = 1  # a run wraps onto the next row
    expected[8, 0:3] = 1
    expected[SIDE - 1, SIDE - 2 :] = 1  # clipped at the grid's end; one wholly past it is nothing
    expected[0, :] = expected[-1, :] = expected[:, 0] = expected[:, -1] = 1  # the border always counts as edited
    mask = D.decode_mask(rle)
    assert mask.shape == (SIDE, SIDE) and mask.dtype == np.float32
    np.testing.assert_array_equal(mask, expected)
    assert mask[1:-1, 1:-1].sum() == 4 + 1 + 2  # inside the border: (5, 10..13), (7, 510), (8, 1..2)
    with pytest.raises(ParameterError, match="pairs"):
        D.decode_mask([1, 2, 3])


def test_mask_code_round_trips_a_scene_mask_as_the_benchmark_encodes_it(pie_data):
    _, masks = pie_data
    mask = masks["600000000000"]
    assert D.encode_mask(mask) == pf.rle(mask)  # ours against the encoding written out in the fixture
    decoded = D.decode_mask(pf.rle(mask))
    np.testing.assert_array_equal(decoded[1:-1, 1:-1], mask[1:-1, 1:-1])


def test_items_read_as_the_scripts_read_them(pie_data, tmp_path):
    folder, masks = pie_data
    items = {i.key: i for i in D.read_items(folder)}
    colour, shape = items["600000000000"], items["100000000000"]
    assert "[" in colour.original_prompt and "[" not in colour.source_prompt + colour.target_prompt
    assert colour.source_prompt == colour.original_prompt.replace("[", "").replace("]", "")
    kind = colour.blended_word.split(" ")[0]
    assert colour.blend_pair == (kind, kind) and shape.blend_pair[0] == kind != shape.blend_pair[1]
    assert colour.editing_type_id == "6" and shape.editing_type_id == "1"
    assert D.source_image(folder, colour).size == (SIDE, SIDE)
    assert D.output_path(tmp_path, "ddim+p2p", colour) == tmp_path / "ddim+p2p" / "annotation_images" / colour.image_path
    assert D.Item("k", "x.jpg", "a", "b", "0", "", ()).blend_pair is None
    # their scripts save instruction | source | reconstruction | edit; the evaluator reads the last panel
    strip = np.zeros((SIDE, 4 * SIDE, 3), np.uint8)
    for k in range(4):
        strip[:, k * SIDE : (k + 1) * SIDE] = 60 * k
    Image.fromarray(strip).save(tmp_path / "strip.png")
    assert np.asarray(D.read_edit(tmp_path / "strip.png")).max() == np.asarray(D.read_edit(tmp_path / "strip.png")).min() == 180
    with pytest.raises(ParameterError, match="mapping_file.json"):
        D.read_items(tmp_path)
    (tmp_path / "mapping_file.json").write_text(json.dumps({"1": {"image_path": "a.jpg"}}))
    with pytest.raises(ParameterError, match="original_prompt"):
        D.read_items(tmp_path)


# ---- the metrics against independent computations ----------------------------------------------------
def test_background_psnr_mse_ssim_against_numpy_and_scikit_image(pie_data):
    from skimage.metrics import structural_similarity

    folder, masks = pie_data
    item = D.read_items(folder)[0]
    src = np.asarray(D.source_image(folder, item))
    mask = item.decoded_mask()
    ed = edited_version(src, mask)
    keep = mask == 0
    sq = (ed / 255.0 - src / 255.0) ** 2
    mse = sq[keep].sum() / sq.size  # the edited region is black in both: zero error there, but counted in the mean
    assert M.background_mse(src, ed, mask) == pytest.approx(mse, rel=1e-6)
    assert M.background_psnr(src, ed, mask) == pytest.approx(10 * math.log10(1 / mse), rel=1e-6)
    # (so it is not the PSNR over background pixels alone, which is lower)
    assert M.background_psnr(src, ed, mask) > 10 * math.log10(1 / sq[keep].mean()) + 0.5
    blank = keep[..., None]
    ref = structural_similarity((src / 255.0) * blank, (ed / 255.0) * blank, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1.0)
    assert M.background_ssim(src, ed, mask) == pytest.approx(ref, abs=2e-5)
    assert M.background_psnr(src, src, mask) == 100.0  # identical: the project's cap, not inf
    whole = np.ones_like(mask)
    assert all(math.isnan(f(src, ed, whole)) for f in (M.background_mse, M.background_psnr, M.background_ssim))


def _fire(x, state, i):
    s = F.relu(F.conv2d(x, state[f"features.{i}.squeeze.weight"], state[f"features.{i}.squeeze.bias"]))
    return torch.cat([F.relu(F.conv2d(s, state[f"features.{i}.expand1x1.weight"], state[f"features.{i}.expand1x1.bias"])),
                      F.relu(F.conv2d(s, state[f"features.{i}.expand3x3.weight"], state[f"features.{i}.expand3x3.bias"], padding=1))], 1)


def lpips_reference(a, b, backbone, linear):
    """LPIPS (v0.1, SqueezeNet) from its definition, functionally over the two weight files."""

    def taps(x):
        x = (x - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        x = F.relu(F.conv2d(x, backbone["features.0.weight"], backbone["features.0.bias"], stride=2))
        out = [x]
        for fires in ((3, 4), (6, 7), (9,)):
            x = F.max_pool2d(x, 3, 2, ceil_mode=True)
            for i in fires:
                x = _fire(x, backbone, i)
            out.append(x)
        for i in (10, 11, 12):
            x = _fire(x, backbone, i)
            out.append(x)
        return out

    total = 0.0
    for k, (fa, fb) in enumerate(zip(taps(a), taps(b))):
        fa = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        fb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = linear[f"lin{k}.model.1.weight"].view(1, -1, 1, 1)
        total += float(((fa - fb) ** 2 * w).sum(1).mean())
    return total


def test_background_lpips_is_squeezenet_lpips_on_the_masked_images(pie_data, models, metric_env):
    folder, _ = pie_data
    item = D.read_items(folder)[1]
    src = np.asarray(D.source_image(folder, item))
    mask = item.decoded_mask()
    ed = edited_version(src, mask, seed=1)
    keep = (mask == 0)[..., None]

    def scaled(img):
        return torch.from_numpy(((img / 255.0) * keep).astype(np.float32)).permute(2, 0, 1)[None] * 2 - 1

    ref = lpips_reference(scaled(ed), scaled(src), torch.load(metric_env["PIE_LPIPS_BACKBONE"]), torch.load(metric_env["PIE_LPIPS_LINEAR"]))
    assert M.background_lpips(src, ed, mask, models.lpips) == pytest.approx(ref, rel=1e-4)
    assert M.background_lpips(src, src, mask, models.lpips) == 0.0
    assert math.isnan(M.background_lpips(src, ed, np.ones_like(mask), models.lpips))


def test_structure_distance_from_its_definition(pie_data, models):
    folder, _ = pie_data
    item = D.read_items(folder)[0]
    src = np.asarray(D.source_image(folder, item))
    ed = edited_version(src, item.decoded_mask(), seed=2)
    dino = models.dino

    def self_sim(img):
        # the evaluator's input: 0-255 values, short side to 224 (bilinear), minus ImageNet's 0-1 mean, over its std
        x = torch.from_numpy(img.astype(np.float32)).permute(2, 0, 1)[None]
        x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        with torch.no_grad():  # the keys of block 11 of 12, heads side by side: run the blocks by hand
            h = dino.embeddings(x)
            for block in dino.layers[:11]:
                h = block(h)
            keys = dino.layers[11].attention.k_proj(dino.layers[11].layernorm_before(h))[0]
        unit = keys / keys.norm(dim=1, keepdim=True)
        return unit @ unit.T  # token x token cosine similarity, CLS included

    assert len(dino.layers) == 12 and self_sim(src).shape == (785, 785)  # 28 x 28 patches of 8 px + CLS
    ref = float(((self_sim(ed) - self_sim(src)) ** 2).mean())
    assert M.structure_distance(src, ed, dino) == pytest.approx(ref, rel=1e-4)
    assert M.structure_distance(src, src, dino) == 0.0
    assert M.dino_size(512, 512) == (224, 224) and M.dino_size(300, 1200) == (120, 480)  # Resize(224, max_size=480)


def test_clip_similarity_from_its_definition(pie_data, models):
    folder, _ = pie_data
    item = D.read_items(folder)[0]
    src = np.asarray(D.source_image(folder, item))
    mask = item.decoded_mask()
    clip, tok = models.clip, models.processor.tokenizer

    def cosine(img):  # CLIP's preprocessing by hand: short side 224 bicubic, centre crop, CLIP's mean and std
        pil = Image.fromarray(img).resize((224, 224), Image.Resampling.BICUBIC)
        x = torch.from_numpy(np.asarray(pil, np.float32) / 255).permute(2, 0, 1)[None]
        x = (x - torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)) / torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
        ids = tok([item.target_prompt], return_tensors="pt")
        with torch.no_grad():
            i = clip.visual_projection(clip.vision_model(pixel_values=x).pooler_output)[0]
            t = clip.text_projection(clip.text_model(**ids).pooler_output)[0]
        return float(i @ t / (i.norm() * t.norm()))

    assert M.clip_cosine(src, item.target_prompt, clip, models.processor) == pytest.approx(cosine(src), abs=2e-3)
    masked = np.uint8(src * mask[..., None])  # outside the mask black
    assert M.clip_cosine(src, item.target_prompt, clip, models.processor, mask) == pytest.approx(cosine(masked), abs=2e-3)
    c = M.clip_cosine(src, item.target_prompt, clip, models.processor)
    assert M.clip_similarity(src, item.target_prompt, clip, models.processor) == pytest.approx(max(100 * c, 0.0))
    assert math.isnan(M.clip_similarity(src, item.target_prompt, clip, models.processor, np.zeros_like(mask)))


# ---- the runner --------------------------------------------------------------------------------------
def test_runner_end_to_end_layout_protocol_metrics_table_and_resume(pie_data, metric_weights, tmp_path, monkeypatch):
    folder, masks = pie_data
    items = D.read_items(folder)
    out = tmp_path / "out"
    methods = runner.methods("ddim,rnri", "p2p,diffedit")  # MasaCtrl's protocol: test_shapes_export_is_pie_format_and_runs
    summary = runner.run(folder, "tiny-sd", methods, out, steps=3, progress=False)

    names = [m.name for m in methods]
    assert names == ["ddim+p2p", "ddim+diffedit", "rnri+p2p", "rnri+diffedit"]
    for name in names:  # PnPInversion's layout, at the benchmark's size
        for item in items:
            img = Image.open(out / name / "annotation_images" / item.image_path)
            assert img.size == (SIDE, SIDE) and img.format == "PNG"
    colour = next(i for i in items if i.editing_type_id == "6")
    rec = json.loads((out / "ddim+p2p" / "records" / f"{colour.key}.json").read_text())
    kind = colour.blend_pair[0]
    assert rec["status"] == "ok" and rec["inversion_prompt"] == colour.source_prompt and rec["target_prompt"] == colour.target_prompt
    p = rec["editor_params"]
    assert (p["mode"], p["cross_replace"], p["self_replace"], p["blend_words"], p["reweight_words"]) == ("refine", 0.4, 0.6, kind, f"{kind}:2")
    shape = next(i for i in items if i.editing_type_id == "1")
    p = json.loads((out / "rnri+p2p" / "records" / f"{shape.key}.json").read_text())["editor_params"]
    assert p["blend_words"] == ",".join(shape.blend_pair) and p["reweight_words"] == f"{shape.blend_pair[1]}:2"

    # the record's metrics are those of the saved file, measured independently here
    edited = np.asarray(Image.open(out / "ddim+p2p" / "annotation_images" / colour.image_path).convert("RGB"))
    src = np.asarray(Image.open(folder / "annotation_images" / colour.image_path).convert("RGB"))
    mask = D.decode_mask(pf.rle(masks[colour.key]))
    sq = (edited / 255.0 - src / 255.0) ** 2
    mse = sq[mask == 0].sum() / sq.size
    assert rec["metrics"]["mse_unedit_part"] == pytest.approx(mse, rel=1e-6)
    assert rec["metrics"]["psnr_unedit_part"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-6)
    assert set(rec["metrics"]) == set(M.METRICS) and all(math.isfinite(v) for v in rec["metrics"].values())

    # the table: per method overall and per edit type, in the paper's units
    rows = {(r["method"], r["group"]): r for r in summary["rows"]}
    assert set(rows) == {(n, g) for n in names for g in ("all", "1", "6")}
    recs = [json.loads((out / "rnri+diffedit" / "records" / f"{i.key}.json").read_text()) for i in items]
    overall = rows[("rnri+diffedit", "all")]
    assert overall["structure_distance"] == pytest.approx(1e3 * np.mean([r["metrics"]["structure_distance"] for r in recs]))
    assert overall["mse_unedit_part"] == pytest.approx(1e4 * np.mean([r["metrics"]["mse_unedit_part"] for r in recs]))
    assert overall["ssim_unedit_part"] == pytest.approx(1e2 * np.mean([r["metrics"]["ssim_unedit_part"] for r in recs]))
    assert (overall["items"], overall["ok"], overall["failed"]) == (2, 2, 0) and overall["nfe"] > 0
    assert rows[("rnri+diffedit", "6")]["items"] == 1
    md = (out / "results.md").read_text()
    assert md.splitlines()[2].startswith("| method | Struct ×10³ | bg PSNR | bg LPIPS ×10³ | bg MSE ×10⁴ | bg SSIM ×10² | CLIP whole | CLIP edited | items | failed |")
    assert "| ddim+p2p |" in md and "| DDIM + P2P | PnPInversion" in md and "69.43" in md and "| rnri+diffedit | 6 change color |" in md
    assert json.loads((out / "results.json").read_text())["rows"] == summary["rows"]

    # resume: a second run edits, inverts, loads and measures nothing, and gives the same table
    def refuse(*a, **k):
        raise AssertionError("a resumed run did work")

    for name in ("invert", "edit", "load_model"):
        monkeypatch.setattr(runner, name, refuse)
    monkeypatch.setattr(runner.M, "load_models", refuse)
    again = runner.run(folder, "tiny-sd", methods, out, steps=3, progress=False)
    assert again["rows"] == summary["rows"]
    with pytest.raises(ParameterError, match="steps"):  # another run in the same folder is refused
        runner.run(folder, "tiny-sd", methods, out, steps=4, progress=False)


def test_images_made_elsewhere_are_measured_not_edited(pie_data, metric_weights, tmp_path, monkeypatch):
    """Their scripts' output (a 4-panel strip per item) in the same layout: measured on its last panel."""
    folder, _ = pie_data
    item = D.read_items(folder)[0]
    src = np.asarray(D.source_image(folder, item))
    ed = edited_version(src, item.decoded_mask(), seed=3)
    path = tmp_path / "ddim+p2p" / "annotation_images" / item.image_path
    path.parent.mkdir(parents=True)
    Image.fromarray(np.concatenate([np.zeros_like(src), src, src, ed], 1)).save(path)
    monkeypatch.setattr(runner, "edit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("edited")))
    runner.run(folder, "tiny-sd", runner.methods("ddim", "p2p"), tmp_path, limit=1, metric_names=("mse_unedit_part",), progress=False)
    rec = json.loads((tmp_path / "ddim+p2p" / "records" / f"{item.key}.json").read_text())
    assert rec["made"] == "elsewhere" and rec["metrics"]["mse_unedit_part"] == pytest.approx(M.background_mse(src, ed, item.decoded_mask()))


def test_a_failing_item_is_recorded_counted_and_tried_again(pie_data, tmp_path, monkeypatch):
    from inversion.errors import WordError

    folder, _ = pie_data
    real = runner.edit

    def flaky(model, inv, target, *a, **k):
        if target == shape.target_prompt:
            raise WordError("an edit that cannot be made")
        return real(model, inv, target, *a, **k)

    shape = next(i for i in D.read_items(folder) if i.editing_type_id == "1")
    monkeypatch.setattr(runner, "edit", flaky)
    first = runner.run(folder, "tiny-sd", runner.methods("ddim", "p2p"), tmp_path, steps=2, metric_names=(), progress=False)
    row = next(r for r in first["rows"] if r["group"] == "all")
    assert (row["ok"], row["failed"]) == (1, 1) and first["failures"] == [{"method": "ddim+p2p", "key": shape.key, "error": "WordError: an edit that cannot be made"}]
    assert not (tmp_path / "ddim+p2p" / "annotation_images" / shape.image_path).exists()
    monkeypatch.setattr(runner, "edit", real)
    again = runner.run(folder, "tiny-sd", runner.methods("ddim", "p2p"), tmp_path, steps=2, metric_names=(), progress=False)
    assert next(r for r in again["rows"] if r["group"] == "all")["ok"] == 2 and again["failures"] == []


def test_source_branch_at_the_edit_guidance_changes_the_recorded_guidance_only(tiny_sd, tiny_if, cat_image):
    from inversion import invert

    inv = invert(tiny_sd, cat_image, "a cat", "ddim", 2)
    g = runner.source_sampled_at(inv, 7.5)
    assert (g.guidance, inv.guidance) == (7.5, 1.0) and g.latents is inv.latents and g.prompt == inv.prompt
    cascade = invert(tiny_if, cat_image, "a cat", "ddim", 2)  # a pixel cascade: the edited base stage only
    cg = runner.source_sampled_at(cascade, 7.5)
    assert cg.stages[0].guidance == 7.5 and cg.stages[1] is cascade.stages[1] and cascade.stages[0].guidance != 7.5


def test_table_counts_failed_and_nan_items_as_stated():
    m = runner.methods("ddim", "p2p")[0]
    ok = {"status": "ok", "nfe": 100, "seconds": 2.0, "metrics": {"psnr_unedit_part": 20.0, "mse_unedit_part": 0.01}}
    nan = {"status": "ok", "nfe": 100, "seconds": 4.0, "metrics": {"psnr_unedit_part": None, "mse_unedit_part": None}}  # mask = whole image
    failed = {"status": "failed", "error": "WordError: ...", "key": "3", "metrics": {}}
    row = report.group_row(m, "all", [ok, dict(ok, metrics={"psnr_unedit_part": 30.0, "mse_unedit_part": 0.03}), nan, failed, None],
                           ["psnr_unedit_part", "mse_unedit_part"])
    assert (row["items"], row["ok"], row["failed"], row["missing"]) == (5, 3, 1, 1)
    assert row["psnr_unedit_part"] == 25.0 and row["mse_unedit_part"] == pytest.approx(200.0)  # mean of the defined ones, x10^4
    assert row["nan"] == {"psnr_unedit_part": 1, "mse_unedit_part": 1} and row["seconds"] == pytest.approx(8 / 3)


def test_methods_carry_parameters_and_are_checked_before_work():
    ms = runner.methods("ddim,rnri:iterations=3", "p2p,p2p:pin_source=true")
    assert [m.name for m in ms] == ["ddim+p2p", "ddim+p2p_pin_source=true", "rnri_iterations=3+p2p", "rnri_iterations=3+p2p_pin_source=true"]
    for bad in (("nope", "p2p"), ("ddim", "p2p:nope=1"), ("ddim", "p2p:pin_source")):
        with pytest.raises(ParameterError):
            runner.methods(*bad)


# ---- the shapes export and the command line ----------------------------------------------------------
def test_shapes_export_is_pie_format_and_runs(pie_data, tmp_path, capsys):
    from benchmarks.pie.cli import main

    assert main(["export-shapes", "--out", str(tmp_path / "shapes"), "--scenes", "1"]) == 0
    items = {i.key: i for i in D.read_items(tmp_path / "shapes")}
    folder, masks = pie_data  # the fixture draws the same first scene of the same stream
    assert set(items) == set(masks)
    for key, item in items.items():
        np.testing.assert_array_equal(item.decoded_mask()[1:-1, 1:-1], masks[key][1:-1, 1:-1])
        assert np.array_equal(np.asarray(D.source_image(tmp_path / "shapes", item)), np.asarray(D.source_image(folder, item)))
    shape = items["100000000000"]
    assert shape.original_prompt.count("[") == 1 and shape.blend_pair[1] in shape.target_prompt
    capsys.readouterr()
    assert main(["--data", str(tmp_path / "shapes"), "--model", "tiny-sd", "--steps", "2", "--limit", "1", "--editors", "masactrl", "--no-metrics",
                 "--quiet", "--out", str(tmp_path / "o"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows"][0]["ok"] == 1 and summary["units"] == {} and summary["items"] == 1
    first = next(iter(items.values()))  # --limit 1: the first item only
    assert (tmp_path / "o" / "ddim+masactrl" / "annotation_images" / first.image_path).is_file()
    assert not (tmp_path / "o" / "ddim+masactrl" / "annotation_images" / shape.image_path).exists()
    rec = json.loads((tmp_path / "o" / "ddim+masactrl" / "records" / f"{first.key}.json").read_text())
    assert rec["inversion_prompt"] == "" and rec["target_prompt"] == first.target_prompt  # their MasaCtrl inverts with the empty prompt


def test_missing_metric_weights_fail_in_one_line_before_any_work(pie_data, tmp_path, monkeypatch, capsys):
    from benchmarks.pie.cli import main

    folder, _ = pie_data
    for k in ("PIE_LPIPS_BACKBONE", "PIE_LPIPS_LINEAR"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(runner, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded a model")))
    capsys.readouterr()
    assert main(["--data", str(folder), "--model", "tiny-sd", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    for name in ("facebook/dino-vitb8", "openai/clip-vit-large-patch14", "squeezenet1_1-b8a52dc0.pth", "--no-metrics"):
        assert name in lines[0]
    assert not (tmp_path / "o").exists()
    assert main(["--data", str(folder), "--model", "tiny-sd", "--out", str(tmp_path / "o"), "--metrics", "mse_unedit_part,psnr_unedit_part",
                 "--limit", "0", "--quiet"]) == 0  # metrics without networks need no weights

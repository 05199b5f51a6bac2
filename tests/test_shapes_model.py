"""The trained `shapes` model with its shipped weights: it loads, draws what it is asked,
inverts, edits, and is the app's offline default. Seconds on 2 cores."""

import pytest

from editing import edit
from inversion import generate, invert, load_model
from inversion.pipeline import evaluate
from shapes.evaluate import to_tensor, to_uint8
from shapes.judge import find_objects, has, mask_iou
from shapes.scenes import Scene, Shape, render, scenes

GUIDANCE = 5.0
MIN_GENERATED = 10  # of 12 held-out captions; the full evaluation measures 95% (README)


@pytest.fixture(scope="module")
def shapes_model():
    return load_model("shapes")


def test_the_cascade_loads_from_the_shipped_weights(shapes_model):
    assert [s.image_size for s in shapes_model.stages] == [32, 64]
    assert shapes_model.stages[1].prediction_type == "v_prediction"
    assert len(shapes_model.stages[0].tokenizer("a red circle", add_special_tokens=False).input_ids) == 3


def test_generation_draws_held_out_captions(shapes_model):
    items = scenes(101, 12, held_out=True, single_shape=True)
    imgs = to_uint8(generate(shapes_model, [s.caption for s in items], steps=30, guidance=GUIDANCE, seed=5))
    hits = sum(has(img, s.shapes[0].colour, s.shapes[0].kind) for img, s in zip(imgs, items))
    assert hits >= MIN_GENERATED, hits


def test_iterative_inversion_beats_ddim_on_a_scene(shapes_model):
    s = Scene((Shape("star", "yellow", 0.45, 0.55, 0.5),), ("blue",))
    x = to_tensor(render(s, 64)[0])
    ddim, _ = evaluate(shapes_model, x, invert(shapes_model, x, s.caption, "ddim", steps=10))
    rnri, _ = evaluate(shapes_model, x, invert(shapes_model, x, s.caption, "rnri", steps=10))
    assert rnri["stages"][0]["latent_psnr"] > ddim["stages"][0]["latent_psnr"] + 3
    assert rnri["psnr"] > 20


def test_p2p_changes_the_colour_and_keeps_the_shape(shapes_model):
    s = Scene((Shape("circle", "red", 0.5, 0.5, 0.5),), ("blue",))
    img, masks = render(s, 64)
    inv = invert(shapes_model, to_tensor(img), s.caption, "rnri", steps=20)
    out = edit(shapes_model, inv, "a green circle on a blue background", "p2p")
    objs, _ = find_objects(to_uint8(out.image)[0])
    hit = [o for o in objs if o.colour == "green" and o.shape == "circle"]
    assert hit and mask_iou(hit[0].mask, masks[0]) >= 0.8


def test_the_app_falls_back_along_the_offline_chain_with_a_notice(monkeypatch):
    import inversion.models.shapes as shapes_mod
    from demo.engine import FALLBACKS, Engine

    engine = Engine("auto")  # no GPU here: the first offline model that loads
    assert engine.model.name == FALLBACKS[0] and "no GPU" in engine.notice
    fallback = Engine("sd-1.5")  # weights cannot be fetched offline
    assert fallback.model.name == FALLBACKS[0] and "Could not load" in fallback.notice
    monkeypatch.setattr(shapes_mod, "LCM_WEIGHTS", shapes_mod.LCM_WEIGHTS.with_name("missing.safetensors"))
    assert Engine("auto").model.name == "shapes"  # without the distilled weights
    monkeypatch.setattr(shapes_mod, "WEIGHTS", shapes_mod.WEIGHTS.with_name("missing.safetensors"))
    assert Engine("auto").model.name == "tiny-sd"  # without any trained weights



def test_the_edit_benchmark_runs_on_two_scenes(shapes_model, tmp_path):
    from shapes import edit_bench

    rows = edit_bench.run(shapes_model, ["ddim", "rnri"], count=2, steps=4, progress=lambda *_: None)
    assert [r["editor"] for r in rows[:5]] == ["p2p", "masactrl", "diffedit", "p2p + pin_source", "masactrl + pin_source"]
    for r in rows:
        assert r["scenes"] == 2 and 0 <= r["success"] <= 1 and 0 < r["bg_psnr"] <= 100 and -1 <= r["bg_ssim"] <= 1
        assert 0 <= r["structure_iou"] <= 1 and 0 <= r["region_colour"] <= 1 and r["nfe"] > 0
    rnri = {r["editor"]: r for r in rows if r["inverter"] == "rnri"}
    ddim = {r["editor"]: r for r in rows if r["inverter"] == "ddim"}
    assert rnri["p2p"]["inversion_psnr"] > ddim["p2p"]["inversion_psnr"]
    edit_bench.plot(rows, tmp_path / "plot.png", "test")
    assert (tmp_path / "plot.png").stat().st_size > 1000
    assert "| ddim | p2p |" in edit_bench.markdown(rows)

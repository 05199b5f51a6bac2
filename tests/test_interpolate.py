"""Interpolation between two inversions: exact ends on every sampler and cascades, slerp, the CLI."""

import json
import math

import pytest
import torch
from conftest import ASSETS
from PIL import Image, ImageOps

from editing import interpolate, slerp
from editing.cli import main as edit_main
from editing.interpolate import frame_alphas, lerp, mixed_condition, mixed_inversion
from inversion.errors import IncompatibleInversion, ParameterError
from inversion.pipeline import invert, reconstruct
from inversion.result import stage_inversions

SCENES = ASSETS / "shapes" / "examples"
SHAPE_PROMPTS = ("a red circle on a blue background", "a yellow square on a purple background")


@pytest.fixture(scope="module")
def flipped_cat(cat_image):
    return ImageOps.mirror(Image.open(cat_image).convert("RGB"))


def _pair(model, inverter, cat_image, flipped_cat):
    """Two inversions of one model and step count, with different images and prompts."""
    if model.name.startswith("shapes"):
        images, prompts = (SCENES / "scene0.png", SCENES / "scene1.png"), SHAPE_PROMPTS
    else:
        images, prompts = (cat_image, flipped_cat), ("a cat sitting on the grass", "a dog on a sofa")
    return [invert(model, im, p, inverter, steps=4) for im, p in zip(images, prompts)]


@pytest.mark.parametrize("name, inverter", [
    ("tiny_sd", "ddim"), ("tiny_sd", "rnri"), ("tiny_lcm", "rnri"), ("shapes_lcm", "rnri"), ("tiny_if", "ddim"),
])
def test_the_ends_are_the_two_reconstructions(request, name, inverter, cat_image, flipped_cat):
    model = request.getfixturevalue(name)
    a, b = _pair(model, inverter, cat_image, flipped_cat)
    out = interpolate(model, a, b, frames=3)
    assert out.frames.shape[0] == 3 and out.alphas == [0.0, 0.5, 1.0]
    for frame, inv in ((out.frames[:1], a), (out.frames[-1:], b)):
        rec = reconstruct(model, inv)
        tol = 1e-5 * float(rec.abs().max())
        assert torch.allclose(frame, rec, atol=tol, rtol=0), float((frame - rec).abs().max())
    middle = out.frames[1:2]
    assert torch.isfinite(middle).all()
    assert not torch.equal(middle, out.frames[:1]) and not torch.equal(middle, out.frames[-1:])
    assert len(stage_inversions(a)) == (2 if name in ("shapes_lcm", "tiny_if") else 1)
    assert out.nfe == 3 * sum(s.num_steps for s in stage_inversions(a))  # one sampling pass per frame and stage


def test_frames_are_deterministic_for_a_seed(tiny_lcm, cat_image, flipped_cat):
    first = interpolate(tiny_lcm, *_pair(tiny_lcm, "rnri", cat_image, flipped_cat), frames=4)
    again = interpolate(tiny_lcm, *_pair(tiny_lcm, "rnri", cat_image, flipped_cat), frames=4)
    assert torch.equal(first.frames, again.frames)


def test_what_a_frame_between_replays(shapes_lcm):
    """z_T, per-step noises and the SR condition noise by slerp; LCM's last residual and the
    conditioning linearly; each end is its own inversion and conditioning, untouched."""
    a, b = _pair(shapes_lcm, "ddim", None, None)
    other = a.stages[1].condition_noise
    a.stages[1].condition_noise = torch.randn(other.shape, generator=torch.Generator().manual_seed(1))  # not b's: an angle
    t = 0.3
    for s, (stage, ra, rb) in enumerate(zip(shapes_lcm.stages, a.stages, b.stages)):
        assert mixed_inversion(stage, ra, rb, 0.0) is ra and mixed_inversion(stage, ra, rb, 1.0) is rb
        m = mixed_inversion(stage, ra, rb, t)
        assert torch.allclose(m.z_T, slerp(ra.z_T, rb.z_T, t))
        for j in range(ra.num_steps - 1):
            assert torch.allclose(m.noises[j], slerp(ra.noises[j], rb.noises[j], t))
        assert torch.allclose(m.noises[-1], 0.7 * ra.noises[-1] + 0.3 * rb.noises[-1], atol=1e-6)
        if s == 1:
            assert torch.allclose(m.condition_noise, slerp(ra.condition_noise, rb.condition_noise, t))
        ca = stage.encode_prompt(ra.prompt, guidance=ra.guidance)
        cb = stage.encode_prompt(rb.prompt, guidance=rb.guidance)
        assert mixed_condition(ca, cb, 0.0) is ca and mixed_condition(ca, cb, 1.0) is cb
        mc = mixed_condition(ca, cb, t)
        assert torch.allclose(mc.text, 0.7 * ca.text + 0.3 * cb.text, atol=1e-6)
        assert torch.allclose(mc.guidance, 0.7 * ca.guidance + 0.3 * cb.guidance)


def test_slerp_ends_norm_and_the_parallel_fallback():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 1000, generator=g), torch.randn(2, 1000, generator=g)
    assert torch.equal(slerp(a, b, 0.0), a) and torch.equal(slerp(a, b, 1.0), b)
    # orthogonal unit vectors: the quarter circle, norm 1 all the way (lerp's chord dips to 1/sqrt(2))
    e1, e2 = torch.eye(2, dtype=torch.float64)
    for t in (0.1, 0.25, 0.5, 0.9):
        v = slerp(e1, e2, t)
        assert torch.allclose(v, math.cos(t * math.pi / 2) * e1 + math.sin(t * math.pi / 2) * e2)
        assert abs(float(v.norm()) - 1) < 1e-12
    assert abs(float(lerp(e1, e2, 0.5).norm()) - 2**-0.5) < 1e-12
    # Gaussian noise keeps its norm (rows are separate vectors) where lerp's shrinks by ~1/sqrt(2)
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid.norm(dim=1), a.norm(dim=1), rtol=0.05)
    assert float(lerp(a, b, 0.5).norm(dim=1).max() / a.norm(dim=1).min()) < 0.8
    # parallel, anti-parallel and zero vectors: linear, finite
    x = torch.randn(50, generator=g)
    assert torch.allclose(slerp(x, 2 * x, 0.25), 1.25 * x)
    assert torch.allclose(slerp(x, x + 1e-6, 0.5), x + 0.5e-6)
    assert torch.allclose(slerp(x, -x, 0.25), 0.5 * x)
    assert torch.allclose(slerp(torch.zeros(50), x, 0.5), 0.5 * x)
    assert slerp(a.half(), b.half(), 0.5).dtype == torch.float16


def test_mismatched_inversions_and_bad_counts_are_user_errors(tiny_sd, tiny_lcm, cat_image):
    a = invert(tiny_sd, cat_image, "a cat", "ddim", steps=3)
    with pytest.raises(IncompatibleInversion, match="different models"):
        interpolate(tiny_sd, a, invert(tiny_lcm, cat_image, "a cat", "ddim", steps=3))
    with pytest.raises(IncompatibleInversion, match="step counts"):
        interpolate(tiny_sd, a, invert(tiny_sd, cat_image, "a cat", "ddim", steps=4))
    with pytest.raises(IncompatibleInversion, match="latent shapes"):
        interpolate(tiny_sd, a, invert(tiny_sd, SCENES / "scene0.png", "a cat", "ddim", steps=3))  # 64x64, the cat 64x48
    for bad in (1, 0, 1000, 2.5):
        with pytest.raises(ParameterError):
            frame_alphas(bad)
    with pytest.raises(ParameterError):
        interpolate(tiny_sd, a, a, alphas=[0.0, 1.5])


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_writes_the_strip_and_a_looping_gif(capsys, tmp_path, cat_image, flipped_cat):
    second = tmp_path / "flipped.png"
    flipped_cat.save(second)
    strip, gif = tmp_path / "strip.png", tmp_path / "anim.gif"
    argv = ["interpolate", "--model", "tiny-sd", "--inverter", "rnri", "--image", str(cat_image), "--image", str(second),
            "--prompt", "a cat", "--prompt2", "a dog", "--steps", "3", "--frames", "4", "--out", str(strip),
            "--gif", str(gif), "--pingpong", "--json", "--quiet"]
    assert edit_main(argv) == 0
    r = _last_json(capsys)
    assert {"model", "inverter", "steps", "frames", "alphas", "prompts", "nfe", "inversion_nfe", "interpolation_nfe",
            "seconds", "size", "endpoint_psnr", "out", "gif"} <= set(r)
    assert r["frames"] == 4 and r["alphas"][0] == 0.0 and r["alphas"][-1] == 1.0 and r["prompts"] == ["a cat", "a dog"]
    assert r["interpolation_nfe"] == 4 * 3 and r["nfe"] == r["inversion_nfe"] + r["interpolation_nfe"]
    assert Image.open(strip).size == (4 * 64, 48) and r["size"] == [64, 48]
    assert len(r["endpoint_psnr"]) == 2 and all(0 < v <= 100 for v in r["endpoint_psnr"])  # the reconstructions vs the inputs, capped
    anim = Image.open(gif)
    assert anim.n_frames == 4 + 2 and anim.info["loop"] == 0  # forth and back, forever
    # a second image of another aspect ratio is centre-cropped to the first's
    assert edit_main(["interpolate", "--model", "tiny-sd", "--image", str(cat_image), "--image", str(SCENES / "scene0.png"),
                      "--steps", "2", "--frames", "2", "--json", "--quiet"]) == 0
    r = _last_json(capsys)
    assert r["size"] == [64, 48] and "centre-cropped" in r["warnings"][0]


def test_cli_errors_are_one_line_and_exit_2(capsys, tmp_path, tiny_sd, tiny_lcm, cat_image):
    paths = []
    for model in (tiny_sd, tiny_lcm):
        paths.append(invert(model, cat_image, "a cat", "ddim", steps=2).save(tmp_path / f"{model.name}.safetensors"))
    cases = [
        ["--image", str(cat_image), "--image", str(tmp_path / "missing.png")],
        ["--image", str(cat_image)],
        ["--image", str(cat_image), "--image", str(cat_image), "--frames", "1"],
        ["--inversion", str(paths[0]), "--inversion", str(paths[1])],  # inversions of two models
    ]
    for extra in cases:
        assert edit_main(["interpolate", "--model", "tiny-sd", "--prompt", "a cat", "--steps", "2"] + extra) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err

"""Rare-concept seeds: exact at strength 0, deterministic, varied, the normalised mean, the CLI,
and the shapes measurements (rare seeds, interpolation smoothness) on a tiny configuration."""

import json

import pytest
import torch
from conftest import ASSETS
from PIL import Image

from editing import concept_seeds, normalised_mean, sample_seeds
from editing.cli import main as edit_main
from inversion.errors import IncompatibleInversion, ParameterError
from inversion.pipeline import invert, reconstruct

SCENES = ASSETS / "shapes" / "examples"
RED = "a red circle on a blue background"


def _guidance(inv):
    return (inv.stages[0] if hasattr(inv, "stages") else inv).guidance


@pytest.mark.parametrize("name, inverter", [("tiny_sd", "ddim"), ("tiny_lcm", "rnri"), ("tiny_if", "ddim"), ("shapes_lcm", "rnri"), ("shapes_lcm", "ddim")])
def test_strength_0_from_one_reference_is_its_reconstruction(request, name, inverter, cat_image):
    model = request.getfixturevalue(name)
    image, prompt = (SCENES / "scene0.png", RED) if name == "shapes_lcm" else (cat_image, "a cat")
    inv = invert(model, image, prompt, inverter, steps=None if name == "shapes_lcm" else 3)
    out = sample_seeds(model, concept_seeds(model, [inv]), prompt, samples=2, strength=0.0, guidance=_guidance(inv), step_noise="reuse")
    rec = reconstruct(model, inv)
    assert torch.equal(out.images[:1], rec) and torch.equal(out.images[1:], rec)  # bit for bit, every sample of the one seed
    assert out.rows == [0, 0] and out.nfe == 2 * inv.num_steps * (2 if name in ("tiny_if", "shapes_lcm") else 1)


def test_samples_are_deterministic_for_a_seed_and_differ(shapes_lcm):
    refs = [invert(shapes_lcm, SCENES / f"scene{i}.png", RED, "ddim") for i in (0, 0)]
    seeds = concept_seeds(shapes_lcm, refs, "each")
    assert seeds.count == 2 and seeds.references == 2
    a = sample_seeds(shapes_lcm, seeds, RED, samples=3, strength=0.5, seed=3, step_noise="reuse")
    b = sample_seeds(shapes_lcm, seeds, RED, samples=3, strength=0.5, seed=3, step_noise="reuse")
    assert torch.equal(a.images, b.images) and a.rows == [0, 1, 0]
    for i in range(3):
        for j in range(i + 1, 3):
            assert (a.images[i] - a.images[j]).abs().max() > 0.1
    assert not torch.equal(sample_seeds(shapes_lcm, seeds, RED, samples=1, strength=0.5, seed=4, step_noise="reuse").images, a.images[:1])
    # sample i's fresh noise depends on the seed and i alone: fewer samples are a prefix
    assert torch.equal(sample_seeds(shapes_lcm, seeds, RED, samples=2, strength=0.5, seed=3, step_noise="reuse").images, a.images[:2])
    # strength 1 is fresh noise alone: the seeds no longer matter (the random-noise baseline)
    other = concept_seeds(shapes_lcm, [invert(shapes_lcm, SCENES / "scene1.png", RED, "rnri")], "mean")
    assert torch.equal(sample_seeds(shapes_lcm, seeds, RED, samples=2, strength=1.0, seed=3).images,
                       sample_seeds(shapes_lcm, other, RED, samples=2, strength=1.0, seed=3).images)
    # LCM's per-step noises: reused (the seed's) or fresh give different samples; batching barely changes them
    fresh = sample_seeds(shapes_lcm, seeds, RED, samples=2, strength=0.5, seed=3, step_noise="fresh")
    assert not torch.equal(fresh.images, a.images[:2])
    batched = sample_seeds(shapes_lcm, seeds, RED, samples=3, strength=0.5, seed=3, step_noise="reuse", batch=3)
    assert (batched.images - a.images).abs().max() < 1e-2


def test_the_normalised_mean_keeps_gaussian_noise_on_its_shell():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 64, 64, generator=g)
    m = normalised_mean(x)
    assert m.shape == (1, 3, 64, 64)
    assert abs(float(m.std()) - 1) < 0.03 and abs(float(m.mean())) < 0.03
    assert abs(float(x.mean(0).std()) - 0.5) < 0.03  # the plain mean of 4 shrinks to 1/sqrt(4)
    row = x[:1]
    assert torch.allclose(normalised_mean(row.expand(3, -1, -1, -1)), row, atol=1e-6)  # identical rows: the row itself
    assert torch.equal(normalised_mean(row), row)


def test_mean_seeds_on_a_cascade(shapes_lcm):
    refs = [invert(shapes_lcm, SCENES / f"scene{i}.png", RED, "ddim") for i in (0, 1, 2)]
    seeds = concept_seeds(shapes_lcm, refs, "mean")
    assert seeds.count == 1 and seeds.references == 3 and len(seeds.stages) == 2
    base, sr = seeds.stages
    assert base.noises.shape[:2] == (4, 1) and sr.condition_noise.shape == (1, 3, 64, 64)
    for s, st in enumerate(seeds.stages):  # each stage's mean z_T at the references' mean norm
        norms = torch.stack([ref.stages[s].z_T.flatten().norm() for ref in refs])
        assert torch.allclose(st.z_T.flatten().norm(), norms.mean(), rtol=1e-5)
    out = sample_seeds(shapes_lcm, seeds, RED, samples=2, strength=0.3)
    assert out.images.shape == (2, 3, 64, 64) and out.rows == [0, 0] and torch.isfinite(out.images).all()


def test_bad_options_and_mismatched_references_are_user_errors(tiny_sd, tiny_lcm, cat_image):
    a = invert(tiny_sd, cat_image, "a cat", "ddim", steps=3)
    seeds = concept_seeds(tiny_sd, [a])
    for kw in ({"strength": 1.5}, {"strength": float("nan")}, {"samples": 0}, {"samples": 2.0}, {"step_noise": "new"}, {"batch": 0}):
        with pytest.raises(ParameterError):
            sample_seeds(tiny_sd, seeds, "a cat", **kw)
    with pytest.raises(ParameterError):
        concept_seeds(tiny_sd, [a], combine="median")
    with pytest.raises(ParameterError):
        concept_seeds(tiny_sd, [])
    with pytest.raises(IncompatibleInversion):
        concept_seeds(tiny_sd, [a, invert(tiny_lcm, cat_image, "a cat", "ddim", steps=3)])
    with pytest.raises(IncompatibleInversion, match="step counts"):
        concept_seeds(tiny_sd, [a, invert(tiny_sd, cat_image, "a cat", "ddim", steps=4)])
    with pytest.raises(IncompatibleInversion, match="latent shapes"):
        concept_seeds(tiny_sd, [a, invert(tiny_sd, SCENES / "scene0.png", "a cat", "ddim", steps=3)])
    with pytest.raises(IncompatibleInversion):
        sample_seeds(tiny_lcm, seeds, "a cat")


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_cli_writes_the_grid_and_a_json_line(capsys, tmp_path):
    grid = tmp_path / "grid.png"
    argv = ["seeds", "--model", "shapes-lcm", "--inverter", "ddim", "--image", str(SCENES / "scene0.png"), "--image", str(SCENES / "scene2.png"),
            "--prompt", RED, "--samples", "3", "--strength", "0.4", "--columns", "2", "--out", str(grid), "--json", "--quiet"]
    assert edit_main(argv) == 0
    r = _last_json(capsys)
    assert {"model", "inverter", "steps", "prompt", "references", "samples", "strength", "combine", "step_noise", "rows", "z_norm",
            "nfe", "inversion_nfe", "sampling_nfe", "seconds", "size", "warnings", "out"} <= set(r)
    assert r["references"] == 2 and r["samples"] == 3 and r["rows"] == [0, 1, 0] and r["strength"] == 0.4
    assert r["sampling_nfe"] == 3 * 8 and r["nfe"] == r["inversion_nfe"] + r["sampling_nfe"]
    assert Image.open(grid).size == (2 * 64, 2 * 64)


@pytest.mark.parametrize("extra, message", [(["--strength", "1.5"], "strength"), ([], "reference images")])
def test_cli_errors_are_one_line_with_exit_code_2(capsys, extra, message):
    argv = ["seeds", "--model", "shapes-lcm", "--prompt", RED, *extra]
    if extra:
        argv += ["--image", str(SCENES / "scene0.png")]
    assert edit_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_rare_seeds_measurement_writes_well_formed_json(tmp_path, capsys):
    from shapes import rare_seeds
    from shapes.scenes import is_held_out

    out = tmp_path / "rare.json"
    argv = ["--model", "shapes-lcm", "--triples", "2", "--samples", "1", "--strengths", "0.5", "--inverters", "ddim",
            "--combine", "each", "--out", str(out), "--json"]
    assert rare_seeds.main(argv) == 0
    assert "| random noise |" in capsys.readouterr().out
    run = json.loads(out.read_text())["shapes-lcm"]
    assert run["samples_per_triple"] == 1 and len(run["triples"]) == 2 and len(run["per_triple"]) == 2
    assert [(r["inverter"], r["step_noise"]) for r in run["rows"]] == [(None, None), ("ddim", "reuse"), ("ddim", "fresh")]
    for r in run["rows"]:
        assert r["samples"] == 2 and 0 <= r["correct_count"] <= 2
        assert all(0 <= r[k] <= 1 for k in ("correct", "colour_and_shape", "background"))
        assert r["correct"] <= r["colour_and_shape"]
    assert all(is_held_out(s) for t in run["triples"] for s in rare_seeds.reference_scenes(tuple(t)))


def test_smoothness_measurement_writes_well_formed_json(tmp_path):
    from shapes import smoothness

    out = tmp_path / "interp.json"
    assert smoothness.main(["--model", "shapes-lcm", "--pairs", "1", "--frames", "3", "--inverters", "ddim", "--out", str(out)]) == 0
    run = json.loads(out.read_text())["shapes-lcm"]
    assert [(r["kind"], r["inverter"]) for r in run["rows"]] == [("colour", "ddim"), ("position", "ddim")]
    for r in run["rows"]:
        assert r["pairs"] == 1 and 0 <= r["monotonic"] <= 1 and 0 <= r["largest_step"] <= r["largest_step_max"]
    assert len(run["tracks"]) == 2 and all(len(t["track"]) == 3 for t in run["tracks"])
    assert all(t["track"][0] == 0 and t["track"][-1] == 1 for t in run["tracks"] if None not in t["track"])

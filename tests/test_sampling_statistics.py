"""Every sampling path keeps the statistics of ordinary samples, not only determinism: the grain
(mean |image - its 3x3 median|) of generated images, of edits, of rare-concept samples and of
interpolation in-betweens on `shapes-lcm`, against generate's at the same steps, and a judged success
where the judge applies. A path that mixes noise wrongly (a linear mix that shrinks it, a noise
drawn at the wrong scale) stays deterministic and different per seed, and is caught here."""

import numpy as np
import pytest
import torch

from editing import concept_seeds, edit, interpolate, sample_seeds
from inversion import generate, invert
from shapes.edit_tasks import edit_task, judge_edit
from shapes.evaluate import to_tensor, to_uint8
from shapes.judge import has
from shapes.scenes import render, scenes
from shapes.smoothness import grain


@pytest.fixture(scope="module")
def model(shapes_lcm):  # the offline default, loaded once per session (conftest)
    return shapes_lcm


@pytest.fixture(scope="module")
def items():
    return scenes(61, 6, held_out=True, single_shape=True)


@pytest.fixture(scope="module")
def reference(model, items):
    """Generate's own grain at the model's steps: what every other path is held to."""
    images = to_uint8(generate(model, [s.caption for s in items], seed=61))
    judged = np.mean([has(img, s.shapes[0].colour, s.shapes[0].kind) for img, s in zip(images, items)])
    return float(np.mean([grain(img) for img in images])), judged


def _grain(x: torch.Tensor) -> float:
    return float(np.mean([grain(img) for img in to_uint8(x)]))


def test_generate_is_judged_and_its_grain_is_the_reference(reference):
    g, judged = reference
    assert judged >= 0.8 and 0 < g < 0.05


@pytest.mark.parametrize("editor", ["p2p", "diffedit"])
def test_edits_are_as_clean_as_generated_images_and_succeed(model, items, reference, editor):
    g, _ = reference
    grains, wins = [], []
    for s in items[:4]:
        img, masks = render(s, 64)
        inv = invert(model, to_tensor(img), s.caption, "ddim")
        target, colour, shape, _ = edit_task(s, editor)
        out = edit(model, inv, target, editor)
        grains.append(_grain(out.image))
        wins.append(judge_edit(to_uint8(out.image)[0], colour, shape, editor, masks[0])["success"])
    assert np.mean(grains) <= 2.0 * g, (np.mean(grains), g)
    assert np.mean(wins) >= 0.5


def test_rare_concept_samples_and_interpolation_frames_are_as_clean_as_generated_images(model, items, reference):
    g, _ = reference
    a, b = items[0], items[1]
    inv_a = invert(model, to_tensor(render(a, 64)[0]), a.caption, "ddim")
    inv_b = invert(model, to_tensor(render(b, 64)[0]), b.caption, "ddim")
    more = sample_seeds(model, concept_seeds(model, [inv_a]), a.caption, samples=3, strength=0.5)
    assert 0.5 * g <= _grain(more.images) <= 2.0 * g, (_grain(more.images), g)
    assert np.mean([has(img, a.shapes[0].colour, a.shapes[0].kind) for img in to_uint8(more.images)]) >= 2 / 3
    frames = interpolate(model, inv_a, inv_b, frames=5).frames[1:-1]
    assert 0.5 * g <= _grain(frames) <= 2.0 * g, (_grain(frames), g)


def test_a_seed_and_fresh_noise_mix_on_the_noise_s_shell(model, items):
    """A sample's starting noise mixes its seed with fresh noise by slerp: two independent unit Gaussians
    stay unit Gaussians at any strength (a straight-line mix would shrink them to std 0.71 at 0.5, and the
    samples would come out washed out, each still deterministic and different per seed)."""
    import dataclasses

    from editing.seeds import _start

    a = items[0]
    seeds = concept_seeds(model, [invert(model, to_tensor(render(a, 64)[0]), a.caption, "ddim")])
    stage, st = model.stages[0], seeds.stages[0]
    unit = dataclasses.replace(st, z_T=torch.randn(st.z_T.shape, generator=torch.Generator().manual_seed(1)))
    for strength in (0.25, 0.5, 0.75):
        stds = [float(_start(stage, unit, 4, 0, torch.Generator().manual_seed(s), strength, "fresh")[0].std()) for s in range(8)]
        assert 0.93 <= np.mean(stds) <= 1.07, (strength, stds)

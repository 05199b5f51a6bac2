"""The two settings that keep a few-step inversion editable, on the closed-form oracle with a DDIM and
an LCM sampler: `strength` (invert only the schedule's last steps, as img2img and the official RNRI
code start) and `step_noise` (LCM: invert each step with a drawn Gaussian or with the model's own eps).
"""

import dataclasses

import pytest
import torch

from editing import concept_seeds, edit, interpolate
from inversion import invert, reconstruct
from inversion.errors import IncompatibleInversion, ParameterError
from inversion.inverters import INVERTERS
from inversion.result import load_inversion


@pytest.fixture(scope="module")
def lcm_oracle(oracle):
    return dataclasses.replace(oracle, sampler_kind="lcm", name="oracle-lcm")


@pytest.mark.parametrize("sampler", ["ddim", "lcm"])
@pytest.mark.parametrize("strength, inverted", [(1.0, 8), (0.6, 4), (0.5, 4), (0.13, 1), (0.01, 1)])
def test_strength_inverts_the_last_steps_of_the_schedule(oracle, lcm_oracle, sampler, strength, inverted):
    model = oracle if sampler == "ddim" else lcm_oracle
    x = oracle.sample_data(2)
    inv = invert(model, x, "", "ddim", steps=8, strength=strength)
    full = model.sampler(8).timesteps
    assert inv.num_steps == inverted and inv.steps == 8
    assert inv.timesteps == full[8 - inverted :]
    assert inv.nfe == inverted * (2 if sampler == "lcm" else 1)  # LCM: one more call per step for the noise
    rec = reconstruct(model, inv)
    if sampler == "lcm":  # exact through the recorded noise, from wherever it starts
        assert torch.allclose(rec, inv.x0, atol=1e-4)


def test_a_partial_inversion_is_more_accurate_than_a_whole_one_with_ddim(oracle):
    """Fewer approximate steps to undo: the error of DDIM inversion grows with every step inverted."""
    x = oracle.sample_data(3)
    err = {s: float((reconstruct(oracle, invert(oracle, x, "", "ddim", steps=10, strength=s)) - x).pow(2).mean()) for s in (1.0, 0.5, 0.2)}
    assert err[0.2] < err[0.5] < err[1.0]


def test_a_partial_inversion_saves_edits_and_refuses_to_be_mixed(lcm_oracle, oracle, tmp_path):
    x = oracle.sample_data(4)
    inv = invert(lcm_oracle, x, "", "rnri", steps=4, strength=0.5)
    back = load_inversion(inv.save(tmp_path / "inv.safetensors"))
    assert back.steps == 4 and back.timesteps == inv.timesteps
    assert torch.allclose(reconstruct(lcm_oracle, back), x, atol=1e-4)
    out = edit(lcm_oracle, back, "a cat", "diffedit")  # the oracle has no attention: DiffEdit, from the tail's start
    assert out.nfe > 0 and torch.isfinite(out.image).all()
    whole = invert(lcm_oracle, x, "", "rnri", steps=4)
    with pytest.raises(IncompatibleInversion, match="inverts only the last 2 of 4 steps"):
        interpolate(lcm_oracle, whole, inv, frames=3)
    with pytest.raises(IncompatibleInversion, match="inverts only the last 2 of 4 steps"):
        concept_seeds(lcm_oracle, [inv])


@pytest.mark.parametrize("name", [n for n in INVERTERS if n != "iterinv"])
def test_predicted_step_noise_records_the_models_own_eps_where_the_step_is_solved(lcm_oracle, oracle, name):
    """With step_noise=predicted each LCM step is solved as the deterministic step (its noise is eps at
    x_t), so the recorded, corrected noise is the model's eps at the inverted latent up to the inverter's
    own residual; the reconstruction stays exact."""
    x = oracle.sample_data(5)
    params = {"iterations": 30, "tolerance": 0.0, **({"prior_weight": 0.0} if name == "rnri" else {})} if name in ("fixed-point", "rnri") else {}
    inv = invert(lcm_oracle, x, "", name, steps=4, step_noise="predicted", **params)
    assert torch.allclose(reconstruct(lcm_oracle, inv), x, atol=1e-4)
    if name in ("fixed-point", "rnri"):  # solved to convergence
        cond = lcm_oracle.encode_prompt([""])
        for j in range(inv.num_steps - 1):
            eps = lcm_oracle.predict_noise(inv.latent_before(j), inv.timesteps[j], cond)
            assert torch.allclose(inv.noises[j], eps, atol=1e-3), (name, j, float((inv.noises[j] - eps).abs().max()))


def test_drawn_and_predicted_step_noise_differ_and_ddim_samplers_ignore_it(oracle, lcm_oracle):
    x = oracle.sample_data(6)
    drawn = invert(lcm_oracle, x, "", "fixed-point", steps=4, step_noise="drawn")
    predicted = invert(lcm_oracle, x, "", "fixed-point", steps=4, step_noise="predicted")
    assert not torch.allclose(drawn.z_T, predicted.z_T)
    a = invert(oracle, x, "", "fixed-point", steps=4, step_noise="drawn")
    b = invert(oracle, x, "", "fixed-point", steps=4, step_noise="predicted")
    assert torch.equal(a.latents, b.latents)
    with pytest.raises(ParameterError, match="step_noise must be one of drawn, predicted"):
        invert(lcm_oracle, x, "", "ddim", steps=4, step_noise="fresh")
    with pytest.raises(ParameterError, match="strength=0.0 is out of range"):
        invert(lcm_oracle, x, "", "ddim", steps=4, strength=0.0)


def test_iterinv_hands_the_shared_parameters_to_its_base_inverter(tiny_if):
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    inv = invert(tiny_if, x, "a cat", "iterinv", steps=4, strength=0.5, iterations=1)
    assert [s.num_steps for s in inv.stages] == [2, 2] and [s.steps for s in inv.stages] == [4, 4]


def test_a_diverging_inversion_blames_the_settings_not_the_image(lcm_oracle, oracle, monkeypatch):
    """When an inverter's iterates overflow the network (here: a model that returns inf once its input
    grows), the message names the inverter, the steps and, for drawn step noise, the fix."""
    from inversion.errors import Diverged

    real, x0 = lcm_oracle._eps, oracle.sample_data(7)
    bound = 2 * float(x0.abs().max())

    def overflowing(x, t, cond):  # finite on the image itself, inf once the iterates have grown
        eps = real(x, t, cond)
        return torch.where(x.abs().amax() > bound, torch.full_like(eps, float("inf")), eps)

    monkeypatch.setattr(lcm_oracle, "_eps", overflowing)
    with pytest.raises(Diverged, match=r"fixed-point diverged on oracle-lcm at 16 steps.*step_noise=predicted keeps every step well posed"):
        invert(lcm_oracle, x0, "", "fixed-point", steps=16, step_noise="drawn")

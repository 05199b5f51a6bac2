"""Every inverter's trajectory against an independent re-implementation of the update its
docstring states, on the closed-form oracle with a DDIM and an LCM sampler and a batch of two
different images, call for call: latents, the residual of every UNet call (so the number of
calls per step and every early stop), the recorded noise.

The references are written from the equations, in a different form than the code: early stops
as plain returns where the inverters decide on the device, the secant Jacobian per batch row,
Anderson's mixing as its constrained least-squares problem (KKT system, no ridge), IterInv's
step sizes from linspace, ReNoise's guard as "return the best earlier candidate". Only the
sampler's primitives (tested in test_schedule.py) and ReNoise's regulariser (tested in closed
form in test_inverters.py) are shared.
"""

import dataclasses
import math

import pytest
import torch

from inversion.inverters import get_inverter
from inversion.inverters.renoise import regularise_noise

RENOISE_SEED, FIRST_STEP_T, DIVERGED = 7865, 250, 10.0  # the official seed and first-step bound; our guard


@pytest.fixture(scope="module")
def models(oracle):
    return {"ddim": oracle, "lcm": dataclasses.replace(oracle, sampler_kind="lcm", name="oracle-lcm")}


@pytest.fixture(scope="module")
def pair(oracle):
    """Two different images: a decision made per row or per batch shows."""
    return torch.cat([oracle.sample_data(3), oracle.sample_data(8)])


def rms(x):
    return float(x.pow(2).mean().sqrt())


def reference(model, x0, steps, solve, seed=0, noise_correction=True, step_noise="drawn"):
    """The shared step loop: noise drawn per sampling step from one generator, in the loop's order
    (with step_noise="predicted", none: the step injects its own eps); each step solved by `solve`;
    on LCM the noise that makes the step exact recorded instead (uncorrected and predicted: eps(x_t))."""
    s = model.sampler(steps)
    n, cond = s.num_steps, model.encode_prompt([""] * x0.shape[0])
    gen = torch.Generator().manual_seed(seed)
    drawn = {j: torch.randn(x0.shape, generator=gen) for j in range(n - 1, -1, -1) if s.takes_noise(j)}
    if step_noise == "predicted" and s.stochastic:
        s, drawn = dataclasses.replace(s, predicted_noise=True), {}
    latents, residuals, recorded = [x0], [], [torch.zeros_like(x0)] * n
    for j in range(n - 1, -1, -1):
        z, res = solve(model, cond, s, latents[-1], j, drawn.get(j))
        noise = drawn.get(j)
        if s.stochastic and noise_correction:
            noise = s.corrected_noise(z, model.predict_noise(z, s.timesteps[j], cond), j, latents[-1])
        elif s.predicted_noise and s.takes_noise(j):
            noise = model.predict_noise(z, s.timesteps[j], cond)
        if noise is not None:
            recorded[j] = noise
        latents.append(z)
        residuals.append(res)
    return torch.stack(latents), (torch.stack(recorded) if s.stochastic else None), residuals


def check(model, x0, steps, name, solve, seed=0, atol=1e-5, **params):
    inv = get_inverter(name).invert(model, x0, model.encode_prompt([""] * x0.shape[0]), steps, seed=seed, **params)
    step_noise = get_inverter(name).resolve_params(model.defaults, **params)["step_noise"]
    latents, noises, residuals = reference(model, x0, steps, solve, seed, params.get("noise_correction", True), step_noise)
    assert [len(r) for r in inv.residuals] == [len(r) for r in residuals]
    for got, want, z in zip(inv.residuals, residuals, latents[1:]):  # float32 rounding of the latent bounds the agreement
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6 * float(z.abs().max()))
    assert torch.allclose(inv.latents, latents, rtol=1e-4, atol=atol), (inv.latents - latents).abs().max()
    if noises is None:
        assert inv.noises is None
    else:
        assert torch.allclose(inv.noises, noises, rtol=1e-4, atol=atol)
    return inv


# ---- RNRI ----------------------------------------------------------------------------------
def rnri(x0, iterations, tolerance, prior_weight):
    spread = float((x0 - x0.mean()).pow(2).mean())

    def solve(model, cond, s, x_prev, j, noise):
        t, a, c = s.timesteps[j], s.alpha(j), s.eps_gain(j, noise is not None)
        mu, lam = math.sqrt(a) * x0, prior_weight / (1 - a)
        kappa = [math.sqrt(1 - a) / (a * spread + 1 - a)] * x0.shape[0]  # the Gaussian data's J_eps, per row
        z, last, res, fs = x_prev, None, [], []
        for k in range(iterations):
            eps = model.predict_noise(z, t, cond)
            f = s.inverse_step(x_prev, eps, j, noise)
            res.append(rms(f - z))
            if last is not None:  # the secant estimate, row by row
                for b in range(x0.shape[0]):
                    dz, de = z[b] - last[0][b], eps[b] - last[1][b]
                    if float((dz * dz).sum()) > 0:
                        kappa[b] = float((de * dz).sum()) / float((dz * dz).sum())
            if k > 0 and res[-1] <= tolerance * rms(x_prev):
                return f, res
            fs.append(f)
            jac = 1 - c * torch.tensor(kappa).view(-1, 1, 1, 1)
            last = (z, eps)
            z = z - (jac * (z - f) + lam * (z - mu)) / (jac * jac + lam)
        if res[-1] > min(res[:-1], default=math.inf):  # the last call was not the best: F of the (first) best one
            return fs[res.index(min(res))], res
        return z, res

    return solve


@pytest.mark.parametrize("kind", ["ddim", "lcm"])
@pytest.mark.parametrize("iterations, tolerance, prior_weight", [
    (2, 0.0, 1e-5),  # the default: one Newton step from the Gaussian Jacobian, one from the secant
    (4, 0.0, 0.3),  # a heavy prior: mu and lambda matter
    (1, 0.0, 1e-5),  # no secant at all
    (4, 1e-3, 1e-5),  # some steps stop after 2 or 3 calls, some run all 4
    (3, 0.05, 1e-5),  # stops at the second call, before the last
    (2, 0.05, 1e-5),  # converges at the last call: F(z) is returned, not the Newton iterate
])
def test_rnri_is_the_documented_regularised_newton_step(models, pair, kind, iterations, tolerance, prior_weight):
    check(models[kind], pair, 5, "rnri", rnri(pair, iterations, tolerance, prior_weight),
          iterations=iterations, tolerance=tolerance, prior_weight=prior_weight)


def outcomes(model, x0, name, steps, tolerance, **params):
    """Per step: (UNet calls, whether the last call met the tolerance)."""
    inv = get_inverter(name).invert(model, x0, model.encode_prompt([""] * x0.shape[0]), steps, tolerance=tolerance, **params)
    return {(len(r), r[-1] <= tolerance * rms(x)) for r, x in zip(inv.residuals, inv.latents[:-1])}


def test_rnri_early_stops_are_exercised_by_the_cases_above(models, pair):
    """The cases mean something only if they stop where they say (or the reference would not tell)."""
    assert {n for n, _ in outcomes(models["ddim"], pair, "rnri", 5, 1e-3, iterations=4)} == {2, 3, 4}
    assert (2, True) in outcomes(models["ddim"], pair, "rnri", 5, 0.05, iterations=3)
    for kind in ("ddim", "lcm"):
        assert outcomes(models[kind], pair, "rnri", 5, 0.05, iterations=2) == {(2, True), (2, False)}


def rnri_l1(x0, iterations, alpha):
    def solve(model, cond, s, x_prev, j, noise):
        t, a = s.timesteps[j], s.alpha(j)
        mu = math.sqrt(a) * x0
        z, best, best_obj, res = x_prev, None, math.inf, []
        for _ in range(iterations):
            f = s.inverse_step(x_prev, model.predict_noise(z, t, cond), j, noise)
            res.append(rms(f - z))
            obj = float((f - z).abs().mean()) + alpha / 2 * float(((f - mu) ** 2).mean()) / (1 - a)
            if obj < best_obj:
                best, best_obj = f, obj
            z = z + obj * torch.sign(f - z)
        return best, res

    return solve


@pytest.mark.parametrize("kind", ["ddim", "lcm"])
def test_rnri_l1_is_the_official_scalar_step_keeping_the_best_candidate(models, pair, kind):
    for alpha in (0.1, 3.0):
        check(models[kind], pair, 4, "rnri", rnri_l1(pair, 4, alpha), newton="l1", iterations=4, l1_alpha=alpha)


def test_rnri_data_variance_is_the_residual_given_a_super_resolution_condition():
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(0)
    x0, low = 3 + torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    inv = get_inverter("rnri")
    assert inv.begin(x0, SimpleNamespace(image=None))["data_var"] == pytest.approx(float(((x0 - x0.mean()) ** 2).mean()), rel=1e-6)
    assert inv.begin(x0, SimpleNamespace(image=low))["data_var"] == pytest.approx(float(((x0 - low) ** 2).mean()), rel=1e-6)


# ---- fixed point -----------------------------------------------------------------------------
def anderson(zs, fs):
    """min |sum_i a_i (F(z_i) - z_i)| subject to sum_i a_i = 1, per row (its KKT system); sum_i a_i F(z_i)."""
    rows = []
    for b in range(zs[0].shape[0]):
        g = torch.stack([(f[b] - z[b]).flatten() for z, f in zip(zs, fs)], 1).double()
        m = g.shape[1]
        kkt = torch.zeros(m + 1, m + 1, dtype=torch.float64)
        kkt[:m, :m], kkt[:m, m], kkt[m, :m] = g.T @ g, 1, 1
        weights = torch.linalg.solve(kkt, torch.eye(m + 1, dtype=torch.float64)[m])[:m]
        rows.append(sum(w * f[b].double() for w, f in zip(weights, fs)).float())
    return torch.stack(rows)


def fixed_point(iterations, acceleration, window, tolerance):
    def solve(model, cond, s, x_prev, j, noise):
        z, history, res = x_prev, [], []
        for k in range(iterations):
            f = s.inverse_step(x_prev, model.predict_noise(z, s.timesteps[j], cond), j, noise)
            res.append(rms(f - z))
            history = (history + [(z, f)])[-(window + 1) :]
            if k > 0 and res[-1] <= tolerance * rms(x_prev):
                return f, res
            if acceleration == "anderson" and len(history) > 1:
                z = anderson([h[0] for h in history], [h[1] for h in history])
            elif acceleration == "average" and len(history) > 1:
                z = (history[-1][1] + history[-2][1]) / 2
            else:
                z = f
        return z, res

    return solve


@pytest.mark.parametrize("kind, acceleration, window, iterations, tolerance", [
    # Anderson only while the residuals are not yet at float32's floor (on the oracle they reach
    # exactly 0 within 3 calls; after that its least squares has no well-defined answer) and on DDIM
    # (LCM's latents reach |x| ~ 500, where float32 rounding, not the method, decides the mix)
    ("ddim", "anderson", 1, 3, 0.0),
    ("ddim", "anderson", 2, 3, 0.0),
    ("ddim", "anderson", 2, 2, 0.0),
    ("ddim", "average", 2, 4, 0.0),
    ("lcm", "average", 1, 4, 0.0),
    ("ddim", "none", 2, 4, 0.02),  # stops before the last call
    ("lcm", "none", 2, 3, 0.0),
    ("ddim", "average", 2, 2, 0.05),  # converges at the last call on some steps: F(z) is returned there
    ("lcm", "none", 2, 1, 0.0),
])
def test_fixed_point_is_the_documented_iteration(models, pair, kind, acceleration, window, iterations, tolerance):
    check(models[kind], pair, 4, "fixed-point", fixed_point(iterations, acceleration, window, tolerance),
          iterations=iterations, acceleration=acceleration, window=window, tolerance=tolerance)


def test_fixed_point_early_stops_are_exercised_by_the_cases_above(models, pair):
    assert (2, True) in outcomes(models["ddim"], pair, "fixed-point", 4, 0.02, iterations=4, acceleration="none")
    assert outcomes(models["ddim"], pair, "fixed-point", 4, 0.05, iterations=2, acceleration="average") == {(2, True), (2, False)}


# ---- EasyInv ---------------------------------------------------------------------------------
def easyinv(eta, start, length):
    state = {}

    def solve(model, cond, s, x_prev, j, noise):
        i = s.num_steps - 1 - j
        eps = model.predict_noise(x_prev, s.timesteps[j], cond)
        inside = start * s.num_steps < i < (start + length) * s.num_steps
        blended = eta * x_prev + (1 - eta) * state["last"] if inside else x_prev
        state["last"] = blended
        return s.inverse_step(blended, eps, j, noise), [rms(s.inverse_step(x_prev, eps, j, noise) - x_prev)]

    return solve


@pytest.mark.parametrize("kind", ["ddim", "lcm"])
@pytest.mark.parametrize("eta, start, length", [(0.3, 0.2, 0.3), (0.6, 0.0, 0.5), (0.5, 0.1, 0.9)])
def test_easyinv_blends_as_documented(models, pair, kind, eta, start, length):
    """At 10 steps the window's ends fall on whole steps (2 and 5, 0 and 5, 1 and 10): both are excluded."""
    check(models[kind], pair, 10, "easyinv", easyinv(eta, start, length), eta=eta, inject_start=start, inject_length=length)


# ---- ReNoise ---------------------------------------------------------------------------------
def averaging(t, p):
    k = min(p["renoise_steps"], p["first_step_max"]) if t < FIRST_STEP_T else p["renoise_steps"]
    if t < FIRST_STEP_T and p["first_step_average"]:
        return 0, min(k + 1, p["first_step_average"])
    return max(0, k + 1 - p["average_last"]), k + 1


def renoise(x0, p):
    forward_noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(RENOISE_SEED))

    def solve(model, cond, s, x_prev, j, noise):
        t, a = s.timesteps[j], s.alpha(j)
        first, stop = averaging(t, p)
        gen = torch.Generator().manual_seed(RENOISE_SEED + j)
        regularise = p["noise_reg_steps"] > 0
        ref = model.predict_noise(math.sqrt(a) * x0 + math.sqrt(1 - a) * forward_noise, t, cond) if regularise else None
        z, candidates, averaged, res = x_prev, [], [], []
        for k in range(stop):
            eps = model.predict_noise(z, t, cond)
            res.append(rms(s.inverse_step(x_prev, eps, j, noise) - z))
            if not res[-1] <= DIVERGED * res[0]:  # diverged (or NaN): the best earlier candidate
                return min(candidates, key=lambda c: c[0], default=(0, x_prev))[1], res
            candidates.append((res[-1], z))
            if k >= first:
                averaged.append(eps)
                if regularise:
                    eps = regularise_noise(eps, ref, p, gen)
            z = s.inverse_step(x_prev, eps, j, noise)
        if len(averaged) > 1 or (regularise and averaged):
            avg = torch.stack(averaged).mean(0)
            if regularise:
                avg = regularise_noise(avg, ref, p, gen)
            z = s.inverse_step(x_prev, avg, j, noise)
        return z, res

    return solve


@pytest.mark.parametrize("kind, steps, params", [
    ("ddim", 5, {}),  # K = 4, the last two averaged, no regularisation
    ("lcm", 4, {}),  # the paper's settings: K = 9, (8, 10), first step (0, 5), regularised
    ("lcm", 4, {"renoise_steps": 3, "average_last": 1, "noise_reg_steps": 1, "lambda_kl": 0.5, "lambda_ac": 0.5, "ac_rolls": 2}),
    ("ddim", 12, {"renoise_steps": 6, "first_step_max": 2, "average_last": 3}),  # t = 250 is not the first step's
    ("ddim", 5, {"renoise_steps": 1, "average_last": 1}),  # one estimate averaged: nothing to average
])
def test_renoise_is_the_documented_iteration(models, pair, kind, steps, params):
    model = models[kind]
    p = get_inverter("renoise").resolve_params(model.defaults, **params)
    check(model, pair, steps, "renoise", renoise(pair, p), **params)


def test_renoise_batches_eps_opt_with_the_first_estimate_at_any_batch_size(models, oracle):
    three = torch.cat([oracle.sample_data(seed) for seed in (1, 2, 3)])
    p = get_inverter("renoise").resolve_params(models["lcm"].defaults, renoise_steps=2, noise_reg_steps=1)
    check(models["lcm"], three, 3, "renoise", renoise(three, p), renoise_steps=2, noise_reg_steps=1)


class Exploding:
    """The oracle with a noise prediction that pushes the fixed-point map away from its root
    (d eps / dz = gain): ReNoise's iterates diverge geometrically and its guard stops them."""

    def __init__(self, model, gain):
        self.model, self.gain = model, gain

    def __getattr__(self, name):
        return getattr(self.model, name)

    def predict_noise(self, z, t, cond):
        return self.model.predict_noise(z, t, cond) + self.gain * z


@pytest.mark.parametrize("gain, expected_calls", [(-4.0, 5), (-6.0, 4), (-25.0, 2)])
def test_renoise_stops_a_diverging_iteration_at_its_best_candidate(models, pair, gain, expected_calls):
    model = Exploding(models["ddim"], gain)
    p = get_inverter("renoise").resolve_params(model.defaults, renoise_steps=5)
    inv = check(model, pair, 3, "renoise", renoise(pair, p), renoise_steps=5)
    assert expected_calls in [len(r) for r in inv.residuals]  # a stop before the last call is exercised


def test_renoise_averaging_range_at_the_first_step_bound():
    """Official: where t < 250, K is capped at first_step_max and the first `first_step_average`
    estimates are averaged; at t = 250 and above, the last `average_last` of K + 1."""
    rn = get_inverter("renoise")
    p = rn.resolve_params("lcm")  # K 9, cap 5, first 5, last 2
    assert [rn.averaging_range(t, p) for t in (0, 249, 250, 999)] == [(0, 5), (0, 5), (8, 10), (8, 10)]
    p = rn.resolve_params("lcm", first_step_average=9)
    assert rn.averaging_range(249, p) == (0, 6)  # at most the K + 1 = 6 estimates there are
    p = rn.resolve_params("sd", renoise_steps=6, first_step_max=2, average_last=4)
    assert [rn.averaging_range(t, p) for t in (249, 250)] == [(0, 3), (3, 7)]
    p = rn.resolve_params("sd", renoise_steps=1, average_last=1)
    assert rn.averaging_range(500, p) == (1, 2)


# ---- IterInv ---------------------------------------------------------------------------------
def iterinv(iterations, lr, lr_end, precondition, n):
    sizes = lr * torch.linspace(1, lr_end, n, dtype=torch.float64).sqrt()

    def solve(model, cond, s, x_prev, j, noise):
        size = float(sizes[n - 1 - j])  # ascending step index
        if precondition:
            size /= 2 * s.alpha_next(j) / s.alpha(j)
        z, res = x_prev.clone(), []
        for _ in range(iterations):
            z.requires_grad_(True)
            with torch.enable_grad():
                eps = model.predict_noise(z, s.timesteps[j], cond)
                (grad,) = torch.autograd.grad((s.step(z, eps, j, noise) - x_prev).pow(2).sum(), z)
            res.append(rms(s.inverse_step(x_prev, eps.detach(), j, noise) - z.detach()))
            z = (z - size * grad).detach()
        return z, res

    return solve


@pytest.mark.parametrize("kind", ["ddim", "lcm"])
@pytest.mark.parametrize("steps, precondition, lr, lr_end", [(4, True, 0.3, 0.5), (3, False, 0.05, 0.2), (2, True, 0.5, 0.1)])
def test_iterinv_is_the_documented_gradient_step(models, pair, kind, steps, precondition, lr, lr_end):
    """IterInv's per-step optimisation, run here on a single stage (what it runs on each SR stage)."""
    check(models[kind], pair, steps, "iterinv", iterinv(3, lr, lr_end, precondition, steps),
          iterations=3, lr=lr, lr_end=lr_end, precondition=precondition)


def test_iterinv_hands_the_base_stage_to_its_base_inverter():
    it = get_inverter("iterinv")
    assert it.for_stage(0, {"base_inverter": "rnri"})[0].name == "rnri"
    assert it.for_stage(0, {})[0].name == "fixed-point"
    assert it.for_stage(1, {"iterations": 3}) == (it, {"iterations": 3})


# ---- the shared step loop ----------------------------------------------------------------------
def ddim(model, cond, s, x_prev, j, noise):
    eps = model.predict_noise(x_prev, s.timesteps[j], cond)
    f = s.inverse_step(x_prev, eps, j, noise)
    return f, [rms(f - x_prev)]


def test_the_step_loop_draws_its_noise_from_the_seed_and_records_what_it_used(models, pair):
    for seed in (0, 5):
        check(models["lcm"], pair, 4, "ddim", ddim, seed=seed)
        check(models["lcm"], pair, 4, "ddim", ddim, seed=seed, step_noise="drawn")
    check(models["lcm"], pair, 4, "ddim", ddim, noise_correction=False, step_noise="drawn")  # the drawn noise, zeros at the last step
    check(models["lcm"], pair, 4, "ddim", ddim, noise_correction=False)  # predicted (LCM's default): eps(x_t), what each step injects
    default = get_inverter("ddim").invert(models["lcm"], pair, models["lcm"].encode_prompt(["", ""]), 4, step_noise="drawn")
    assert torch.equal(default.latents, reference(models["lcm"], pair, 4, ddim, seed=0)[0])  # seed 0 by default


def test_the_step_loop_reports_progress_parameters_seed_and_time(models, pair):
    calls = []
    inv = get_inverter("rnri").invert(models["lcm"], pair, models["lcm"].encode_prompt(["", ""]), 3, seed=4,
                                      progress=lambda *a: calls.append(a), iterations=3)
    assert calls == [(1, 3, "rnri inversion"), (2, 3, "rnri inversion"), (3, 3, "rnri inversion")]
    assert inv.seed == 4 and inv.params == get_inverter("rnri").resolve_params(models["lcm"].defaults, iterations=3)
    assert inv.seconds > 0 and inv.nfe == sum(len(r) for r in inv.residuals) + 3  # + LCM's noise correction


def test_residuals_reach_the_host_as_floats_in_their_steps():
    from inversion.inverters.base import host_floats

    assert host_floats([[1.5, 2.0], [3.0]]) == [[1.5, 2.0], [3.0]]  # no tensors at all
    third = torch.tensor(1 / 3)
    assert host_floats([[torch.tensor(0.25), 0.5], [], [third, torch.tensor(4.0)]]) == [[0.25, 0.5], [], [float(third), 4.0]]


def test_tolerances_are_relative_to_the_latent_and_inclusive():
    from inversion.inverters.base import Inverter

    assert float(Inverter.scale(torch.zeros(2, 3))) == 1.0  # an all-zero latent: absolute tolerance
    assert float(Inverter.scale(torch.full((2, 3), -2.0))) == 2.0
    assert bool(Inverter.within(torch.tensor(2.0), 0.5, torch.tensor(4.0)))  # r == bound x scale stops
    assert not bool(Inverter.within(torch.tensor(2.0), 0.5, torch.tensor(3.9)))


def test_an_unknown_inverter_is_named_with_the_choices():
    from inversion.inverters import ParameterError

    with pytest.raises(ParameterError, match=r"^unknown inverter 'ddim2'; choose one of: ddim, easyinv, rnri, renoise, fixed-point, iterinv$"):
        get_inverter("ddim2")
    with pytest.raises(ParameterError, match=r"^inverter 'rnri': "):
        get_inverter("rnri").resolve_params("sd", iterations=0)


# ---- ReNoise's noise regularisation ------------------------------------------------------------
def shifted(x, s, dim):
    """x rolled by s along dim, by index arithmetic: out[i] = x[(i - s) mod n]."""
    n = x.shape[dim]
    return x.index_select(dim, torch.tensor([(i - s) % n for i in range(n)]))


def auto_correlation_reference(n, gen):
    """Per channel and scale (halving by 2x2 means while the side exceeds 8 px): one shift drawn in
    [0, side / 2), the squared mean of the map times itself shifted, along each axis."""
    total = 0.0
    for c in range(n.shape[1]):
        x = n[:, c].double()
        while True:
            h, w = x.shape[-2:]
            s = int(torch.randint(0, max(1, h // 2), (1,), generator=gen))
            total += float((x * shifted(x, s, 1)).mean()) ** 2 + float((x * shifted(x, s, 2)).mean()) ** 2
            if h <= 8:
                break
            x = x[:, : h // 2 * 2, : w // 2 * 2].reshape(x.shape[0], h // 2, 2, w // 2, 2).mean((2, 4))
    return total


@pytest.mark.parametrize("shape", [(2, 3, 32, 24), (1, 2, 18, 18), (1, 16, 2, 2), (1, 1, 9, 12)])
def test_auto_correlation_loss_is_the_documented_sum(shape):
    from inversion.inverters.renoise import auto_correlation_loss

    n = torch.randn(shape, generator=torch.Generator().manual_seed(sum(shape)))
    for seed in (0, 1):
        got = float(auto_correlation_loss(n, torch.Generator().manual_seed(seed)))
        assert got == pytest.approx(auto_correlation_reference(n, torch.Generator().manual_seed(seed)), rel=1e-5)


def patch_kl_reference(n, ref, patch=4):
    """|KL(N(m1, v1) || N(m0, v0))| summed over whole patches and channels, unbiased variances,
    no factor 1/2, variances floored by 1e-6: patch by patch."""
    patch = max(2, min(patch, *n.shape[-2:]))
    total = 0.0
    for b in range(n.shape[0]):
        for c in range(n.shape[1]):
            for i in range(0, n.shape[-2] - patch + 1, patch):
                for j in range(0, n.shape[-1] - patch + 1, patch):
                    p1, p0 = n[b, c, i : i + patch, j : j + patch].double(), ref[b, c, i : i + patch, j : j + patch].double()
                    m1, v1, m0, v0 = p1.mean(), p1.var(), p0.mean(), p0.var()
                    total += abs(float(torch.log((v0 + 1e-6) / (v1 + 1e-6)) + (v1 + (m1 - m0) ** 2) / (v0 + 1e-6) - 1))
    return total


@pytest.mark.parametrize("shape", [(1, 2, 10, 7), (2, 1, 2, 9), (1, 1, 3, 9), (1, 3, 8, 8)])
def test_patch_kl_loss_is_the_documented_sum(shape):
    from inversion.inverters.renoise import patch_kl_loss

    g = torch.Generator().manual_seed(sum(shape))
    n, ref = torch.randn(shape, generator=g), 0.5 + 2 * torch.randn(shape, generator=g)
    side = max(2, min(4, *shape[-2:]))  # the patch
    n[..., :side, :side] = 0.3  # constant patches: a zero variance, floored
    if shape[-2] >= 2 * side:
        ref[..., side : 2 * side, :side] = -1.0
    else:
        ref[..., :side, side : 2 * side] = -1.0
    assert float(patch_kl_loss(n, ref)) == pytest.approx(patch_kl_reference(n, ref), rel=1e-4)


def test_patch_kl_loss_floors_both_variances_from_above():
    """A patch of almost no variance against a constant one: KL ~ log(1e-6 / (v1 + 1e-6)) + v1 / 1e-6 - 1."""
    from inversion.inverters.renoise import patch_kl_loss

    ref = torch.full((1, 1, 4, 4), 0.7)
    n = ref + 1e-4 * torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    assert float(patch_kl_loss(n, ref)) == pytest.approx(patch_kl_reference(n, ref), rel=1e-3)


@pytest.mark.parametrize("start, ref, value, kept", [
    (2.0, 1.0, 20.0, False),  # rms exactly 10 x the larger rms (2): still regularised
    (2.0, 1.0, 20.5, True),  # beyond: the estimate is kept
    (1.0, 2.0, 19.5, False),
    (1.0, 2.0, 20.5, True),
    (0.5, -0.5, 9.5, False),  # both rms below 1: the bound is 10 x 1
    (0.5, -0.5, 10.5, True),
    (-2.0, 1.0, 20.0, False),
    (2.0, 1.0, float("nan"), True),
])
def test_regularise_noise_keeps_the_estimate_where_regularisation_diverges(monkeypatch, start, ref, value, kept):
    import inversion.inverters.renoise as renoise_mod

    seen = []
    monkeypatch.setattr(renoise_mod, "regularised", lambda eps, r, p, gen: seen.append(gen) or torch.full_like(eps, value))
    start_t, gen = torch.full((1, 2, 4, 4), start), torch.Generator()
    out = renoise_mod.regularise_noise(start_t, torch.full((1, 2, 4, 4), ref), {}, gen)
    assert seen == [gen]
    assert torch.equal(out, start_t) if kept else torch.equal(out, torch.full_like(start_t, value))


def test_regularisation_steps_are_the_clipped_kl_step_then_the_auto_correlation_steps():
    """One step of each, from their own losses: eps - l_kl clip(dKL, +-100), then ac_rolls steps of
    eps - l_ac / ac_rolls dAC, each AC loss drawing its shifts from the one generator."""
    from inversion.inverters.renoise import auto_correlation_loss, patch_kl_loss, regularised

    g = torch.Generator().manual_seed(0)
    eps = torch.randn(1, 2, 16, 16, generator=g)
    eps[..., :4, :4] = 0.001 * torch.randn(1, 2, 4, 4, generator=g)  # near-constant patches: steep KL gradients
    ref = torch.randn(1, 2, 16, 16, generator=g)
    def grad(loss, x):
        return torch.autograd.grad(loss(x.requires_grad_(True)), x)[0]

    g_kl = grad(lambda x: patch_kl_loss(x, ref), eps.clone())
    assert g_kl.max() > 100 and g_kl.min() < -100  # both clips matter
    want = eps - 0.5 * g_kl.clamp(-100, 100)
    shifts = torch.Generator().manual_seed(3)
    for _ in range(2):
        want = want - 0.25 / 2 * grad(lambda x: auto_correlation_loss(x, shifts), want.detach().clone())
    p = {"noise_reg_steps": 1, "lambda_kl": 0.5, "lambda_ac": 0.25, "ac_rolls": 2}
    assert torch.allclose(regularised(eps.clone(), ref, p, torch.Generator().manual_seed(3)), want.detach(), atol=1e-5)
    p = {"noise_reg_steps": 2, "lambda_kl": 0.0, "lambda_ac": 0.0, "ac_rolls": 2}
    assert torch.equal(regularised(eps.clone(), ref, p, torch.Generator()), eps)


def test_the_inverter_list_shows_every_parameter_with_its_help(capsys):
    from inversion.cli import main
    from inversion.inverters import INVERTERS

    assert main(["inverters"]) == 0
    out = capsys.readouterr().out
    assert "noise_correction           default True" in out
    assert "LCM, Euler ancestral: record the noise (last step: residual) that makes each step exact" in out
    for inv in INVERTERS.values():
        assert all(f"    {k} " in out and p.help in out for k, p in inv.params.items())

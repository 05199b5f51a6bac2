"""Editors against independent re-implementations of what their docstrings state.

DiffEdit needs no attention control, so it runs on the closed-form oracle (DDIM and LCM samplers):
its whole edit -- the mask pass's timestep, guidance and noise, the start step, the denoising with
the target prompt and the background pasted from the trajectory (or from the source branch) after
every step -- is re-run here step by step from the sampler's primitives and compared with the
editor's latents, mask, info and progress. The mask formula itself is checked against diffusers'
generate_mask in test_editing.py, so the reference calls `diffedit_mask` with its own arguments.

MasaCtrl and P2P run on the tiny SD UNet (LocalBlend on the shapes model, whose word maps are local):
their schedules, refusals and messages against the documented rules, MasaCtrl's mask-guided attention and
P2P's replace and LocalBlend written out from the recorded q, k, v and latents, and the layers each controls.
"""

import dataclasses
import math

import pytest
import torch

import editing.masactrl as masactrl_mod
import editing.p2p as p2p_mod
from editing import edit, get_editor
from editing.attention import WordMaps, layer_registry, word_map_level
from editing.diffedit import diffedit_mask
from editing.words import WordError, find_word, replace_mapper
from inversion.errors import IncompatibleInversion
from inversion.pipeline import invert


@pytest.fixture(scope="module")
def models(oracle):
    return {"ddim": oracle, "lcm": dataclasses.replace(oracle, sampler_kind="lcm", name="oracle-lcm")}


def first_step(n, strength):
    """diffusers' get_timesteps: the sampling step where `strength` of the schedule is left."""
    return n - min(int(n * strength), n)


def diffedit_reference(model, inv, target, guidance, p, region=None):
    n = inv.num_steps
    s = model.sampler(n)
    def prompt(text, g):
        return model.encode_prompt(text, guidance=g, negative=inv.negative_prompt)

    mask_guidance = guidance if p["mask_guidance"] < 0 else p["mask_guidance"]
    t_mask = s.timesteps[min(first_step(n, p["mask_strength"]), n - 1)]
    if region is None:
        noise = torch.randn((p["mask_samples"], *inv.x0.shape[1:]), generator=torch.Generator().manual_seed(p["mask_seed"]))
        mask = diffedit_mask(model, inv.x0, prompt(inv.prompt, mask_guidance), prompt(target, mask_guidance), t_mask, noise, p["mask_clamp"])
    else:
        mask = region
    start = min(first_step(n, p["encode_ratio"]), n - 1)

    def step(x, j, cond):
        noise = inv.noises[j] if s.stochastic else None
        return s.step(x, model.predict_noise(x, s.timesteps[j], cond), j, noise)

    src, tgt = prompt(inv.prompt, inv.guidance), prompt(target, guidance)
    if p["background"] == "inversion":
        x, source = inv.latents[n - start], None  # the trajectory's latent before sampling step `start`
        for j in range(start, n):
            x = step(x, j, tgt) * mask + inv.latents[n - 1 - j] * (1 - mask)  # the level step j lands on
    else:
        source = inv.latents[-1]
        for j in range(start):
            source = step(source, j, src)
        x = source
        for j in range(start, n):
            source, x = step(source, j, src), step(x, j, tgt)
            x = x * mask + source * (1 - mask)
    info = {"mask_timestep": t_mask, "start_step": start, "mask_fraction": float(mask.mean()), "mask": "automatic" if region is None else "painted"}
    return x, source, mask, info


# On the oracle the prompts only tell the images apart near pure noise: masks are made at strength 1
# (a quarter and three quarters of the latent at clamps 3 and 1.5); guidance 0 or strength 0 make none.
CASES = [
    ("ddim", 20, {"mask_strength": 1.0, "encode_ratio": 1.0}, True),  # t = 951: the target's prompt and guidance matter
    ("ddim", 20, {"background": "reconstruction", "encode_ratio": 1.0, "mask_guidance": 3.0, "mask_strength": 1.0, "mask_clamp": 1.5, "mask_samples": 3, "mask_seed": 5}, True),
    ("ddim", 6, {"background": "reconstruction", "encode_ratio": 0.6, "mask_strength": 1.0}, True),  # the source alone for 2 steps
    ("ddim", 6, {"encode_ratio": 1.0, "mask_guidance": 0.0, "mask_strength": 1.0, "mask_clamp": 1.5}, False),
    ("ddim", 5, {"encode_ratio": 0.5, "mask_guidance": 0.5, "mask_strength": 1.0, "mask_clamp": 1.5}, True),
    ("ddim", 4, {"encode_ratio": 0.0, "mask_strength": 1.0}, True),  # the last step only
    ("lcm", 4, {"mask_strength": 1.0}, True),
    ("lcm", 4, {"background": "reconstruction", "encode_ratio": 0.5, "mask_strength": 0.0}, False),
    ("lcm", 5, {"background": "reconstruction", "encode_ratio": 0.8, "mask_strength": 1.0, "mask_clamp": 1.5}, True),  # joins at step 1
]


@pytest.mark.parametrize("kind, steps, params, masked", CASES)
def test_diffedit_is_the_documented_edit(models, kind, steps, params, masked):
    model = models[kind]
    inv = invert(model, model.sample_data(2, component=4), "cat", "ddim", steps=steps, guidance=1.0)
    ed = get_editor("diffedit")
    p = ed.resolve_params(model.defaults, **params)
    calls = []
    out = ed.edit(model, inv, "coffee", 2.5, p, progress=lambda *a: calls.append(a))
    x, source, mask, info = diffedit_reference(model, inv, "coffee", 2.5, p)
    assert (0 < info["mask_fraction"] < 1) == masked  # a mask that tells the branches apart, where meant
    assert torch.equal(out.mask, mask) and out.info == info and out.params is p
    assert torch.allclose(out.latent, x, atol=1e-5), (out.latent - x).abs().max()
    assert (out.source_latent is None) == (source is None)
    if source is not None:
        assert torch.allclose(out.source_latent, source, atol=1e-5)
    todo = steps - info["start_step"]
    assert calls == [(k, todo, "editing") for k in range(1, todo + 1)]


@pytest.mark.parametrize("background", ["inversion", "reconstruction"])
def test_diffedit_with_a_painted_region_skips_the_mask_pass(models, background):
    model = models["lcm"]
    inv = invert(model, model.sample_data(1, component=4), "cat", "ddim", steps=4, guidance=1.0)
    region = torch.zeros(1, 1, 32, 32)
    region[..., 8:20, 4:30] = 1
    ed = get_editor("diffedit")
    p = ed.resolve_params(model.defaults, background=background)
    with model.measure() as meter:
        out = ed.edit(model, inv, "coffee", 2.0, p, region=region)
    x, source, mask, info = diffedit_reference(model, inv, "coffee", 2.0, p, region=region)
    assert torch.equal(out.mask, region) and out.info == info and info["mask"] == "painted"
    assert torch.allclose(out.latent, x, atol=1e-5)
    assert meter.nfe == 4  # no mask pass: one UNet batch per step


def test_diffedit_refuses_an_inversion_of_another_model(models):
    other = dataclasses.replace(models["ddim"], name="oracle-2")
    inv = invert(models["ddim"], models["ddim"].sample_data(0), "cat", "ddim", steps=4)
    ed = get_editor("diffedit")
    with other.measure() as meter, pytest.raises(IncompatibleInversion, match="made with 'oracle', not 'oracle-2'"):
        ed.edit(other, inv, "coffee", 2.0, ed.resolve_params(other.defaults))
    assert meter.nfe == 0  # refused before the mask pass


# ---- MasaCtrl and P2P on the tiny SD UNet ---------------------------------------------------------
PROMPT = "a cat sitting on the grass"


@pytest.fixture(scope="module")
def inv(tiny_sd, cat_image):
    return invert(tiny_sd, cat_image, PROMPT, "ddim", steps=5)


def test_word_maps_come_from_the_coarsest_level_of_at_least_16x16_at_the_native_size():
    """The official codes' 16x16 maps at SD's 512 px; where no level is that wide, the finest."""
    from types import SimpleNamespace

    def layers(native, *levels):
        return [SimpleNamespace(kind="cross", level=v, side=-(-native // 2**v)) for v in levels] + [SimpleNamespace(kind="self", level=9, side=1)]

    assert word_map_level(layers(64, 0, 1, 2, 3)) == 2  # SD at 512 px: 16x16
    assert word_map_level(layers(96, 0, 1, 2, 3)) == 2  # LCM Dreamshaper at 768 px: 24x24 (12x12 is too coarse)
    assert word_map_level(layers(128, 1, 2)) == 2 and word_map_level(layers(64, 1, 2)) == 2  # SDXL, SDXL-Turbo: the deepest
    assert word_map_level(layers(32, 1, 2)) == 1  # shapes: 16x16 at 32 px
    assert word_map_level(layers(8, 0, 1)) == 0 and word_map_level(layers(8, 3, 1, 1)) == 1  # none that wide: the finest


@pytest.mark.parametrize("steps, start_step, start_layer", [(1, 0.5, 0.0), (2, 0.0, 1.0), (5, 0.49, 0.3), (5, 0.5, 0.625), (6, 0.99, 0.07)])
def test_masactrl_schedules_round_fractions_and_keep_step_0_free(tiny_sd, cat_image, steps, start_step, start_layer):
    """start step: f x steps rounded half up, at least 1 (step 0 forms the layout), at most the last step (0 with
    one step); start block: f x blocks rounded half up, at most the last block; blocks in execution order."""
    inv = invert(tiny_sd, cat_image, PROMPT, "ddim", steps=steps)
    out = edit(tiny_sd, inv, "a dog sitting on the grass", "masactrl", start_step=start_step, start_layer=start_layer)
    blocks = len({i.block_order for i in layer_registry(tiny_sd.unet)})
    step = 0 if steps == 1 else min(steps - 1, max(1, math.floor(start_step * steps + 0.5)))
    assert out.info == {"start_step": step, "start_block": min(blocks - 1, math.floor(start_layer * blocks + 0.5)), "blocks": blocks}
    assert out.params["start_step"] == start_step


class FlatWords(WordMaps):
    """Word maps that are flat at the given steps, per branch (the mask checks' inputs, made by hand)."""

    def __init__(self, flat_at):
        super().__init__({"src": [1], "tgt": [1]}, level=0)
        self.flat_at, self.hw, self.step = flat_at, (2, 2), 0

    def refill(self):
        self.total = {b: torch.ones(4) if self.step in self.flat_at[b] else torch.arange(4.0) for b in ("src", "tgt")}
        self.step += 1


@pytest.mark.parametrize("flat_at, message", [
    ({"src": {3}, "tgt": {2, 4}}, "target mask at step 2"),
    ({"src": {1, 3}, "tgt": {3}}, "source mask at step 1"),
    ({"src": {2}, "tgt": {2}}, "source mask at step 2"),  # the source branch first on a tie
    ({"src": {0, 2}, "tgt": set()}, "source mask at step 0"),  # the first stays
    ({"src": set(), "tgt": set()}, None),
])
def test_masactrl_names_the_first_flat_word_map(flat_at, message):
    words = FlatWords(flat_at)
    ctrl = masactrl_mod.MasaCtrlController([], 1, 0, words)
    for step in range(5):
        words.refill()
        ctrl.begin_step(step, 5, [("src", "c"), ("tgt", "c")], (2, 2))
        assert ctrl.num_steps == 5 and ctrl.step == step
    if message is None:
        ctrl.finish()
    else:
        with pytest.raises(WordError, match=f"^MasaCtrl could not build the {message}: the word's attention map is flat$"):
            ctrl.finish()


def test_masactrl_refuses_to_build_a_mask_without_a_map():
    words = WordMaps({"src": [1], "tgt": [1]}, level=0)
    words.hw, words.total = (2, 2), {"tgt": torch.arange(4.0)}
    with pytest.raises(WordError, match="^MasaCtrl could not build the source mask at step 3: the word's attention map is flat$"):
        masactrl_mod.MasaCtrlController([], 1, 0, words).begin_step(3, 5, [], (2, 2))
    words.total = {"src": torch.arange(4.0)}
    with pytest.raises(WordError, match="^MasaCtrl could not build the target mask at step 3"):
        masactrl_mod.MasaCtrlController([], 1, 0, words).begin_step(3, 5, [], (2, 2))


def test_masactrl_mask_words_are_refused_with_their_messages(tiny_sd, inv):
    def check(source, target, **p):
        return masactrl_mod.MasaCtrl.mask_tokens(tiny_sd, source, target, {"mask_word": "", "mask_target_word": "", **p})

    with pytest.raises(WordError, match="^mask_target_word needs mask_word, the object's word in the source prompt$"):
        check(PROMPT, PROMPT, mask_target_word="cat")
    with pytest.raises(WordError, match=r"^MasaCtrl's mask needs a source prompt that names the object \(mask_word\); the source prompt is empty$"):
        check(" ", PROMPT, mask_word="cat")
    with pytest.raises(WordError, match="^MasaCtrl's mask_word: .*horse"):
        check(PROMPT, PROMPT, mask_word="horse")
    assert check(PROMPT, "a dog sitting on the cat", mask_word="cat") == {"src": find_word(tiny_sd.tokenizer, PROMPT, "cat"), "tgt": [6]}
    assert check(PROMPT, PROMPT) is None


def _nearest(mask, hw):
    """A (1, 1, H, W) mask at (h, w) by nearest neighbour, written out: row floor(i H / h), column floor(j W / w)."""
    big_h, big_w = mask.shape[-2:]
    rows = [i * big_h // hw[0] for i in range(hw[0])]
    cols = [j * big_w // hw[1] for j in range(hw[1])]
    return mask[0, 0][rows][:, cols].flatten() > 0.5


class RecordingMasaCtrl(masactrl_mod.MasaCtrlController):
    records = []

    def self_attention(self, info, q, k, v):
        out = super().self_attention(info, q, k, v)
        RecordingMasaCtrl.records.append((self.step, info, q, k, v, out, self.pairs(), dict(self.masks)))
        return out


def _masked_attention(q, k, v, keys):
    """softmax over the allowed keys only, written out."""
    scores = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    return torch.softmax(scores.masked_fill(~keys, float("-inf")), -1) @ v


@pytest.mark.parametrize("params", [{"mask_word": "cat", "mask_target_word": "dog", "mask_threshold": 0.3}, {"region": True}])
def test_masactrl_mask_guidance_attends_foreground_to_foreground(tiny_sd, inv, monkeypatch, params):
    """MasaCtrl-Mask: target queries in the target's foreground attend to the source's foreground keys,
    background queries to its background."""
    params = dict(params)
    region = None
    if params.pop("region", False):
        region = torch.zeros(inv.x0.shape[-2] * 8, inv.x0.shape[-1] * 8)
        region[:, : region.shape[1] // 3] = 1
    RecordingMasaCtrl.records = []
    monkeypatch.setattr(masactrl_mod, "MasaCtrlController", RecordingMasaCtrl)
    out = edit(tiny_sd, inv, "a dog sitting on the grass", "masactrl", guidance=5.0, start_step=0.2, start_layer=0.0, region=region, **params)
    checked = 0
    for step, _, q, k, v, o, pairs, masks in RecordingMasaCtrl.records:
        if step < out.info["start_step"]:
            continue
        scale = (q.shape[-2] / masks["src"][0, 0].numel()) ** 0.5  # the layer's grid against the mask's
        hw = tuple(round(d * scale) for d in masks["src"].shape[-2:])
        m_s, m_t = _nearest(masks["src"], hw), _nearest(masks["tgt"], hw)
        for s, t, _ in pairs:
            fg, bg = _masked_attention(q[t], k[s], v[s], m_s), _masked_attention(q[t], k[s], v[s], ~m_s)
            assert torch.allclose(o[t], torch.where(m_t[None, :, None], fg, bg), atol=1e-5)
            checked += 1
    assert checked  # masks exist from step 1 on, where control starts at the earliest
    if region is None:
        assert not torch.equal(masks["src"], masks["tgt"])  # the two branches' own masks
    else:
        assert all(len(r[-1]) == 2 for r in RecordingMasaCtrl.records)  # the painted mask from the first step


def test_masactrl_painted_region_wins_over_mask_word(tiny_sd, inv):
    region = torch.zeros(inv.x0.shape[-2] * 8, inv.x0.shape[-1] * 8)
    region[:, : region.shape[1] // 3] = 1
    painted = edit(tiny_sd, inv, "a dog sitting on the grass", "masactrl", region=region)
    both = edit(tiny_sd, inv, "a dog sitting on the grass", "masactrl", region=region, mask_word="cat", mask_target_word="dog")
    assert torch.equal(painted.image, both.image) and torch.equal(painted.mask, both.mask)


def test_p2p_replace_mixes_values_through_a_mapper_that_is_not_the_identity(tiny_sd, inv, monkeypatch):
    """'cat' -> a word of more tokens: the mapper spreads the source token over them (its own test is in
    test_words.py); replace edits with A_src M, so M v replaces the target's values."""
    target = "a zebrafish sitting on the grass"
    mapper = replace_mapper(tiny_sd.tokenizer, PROMPT, target)
    assert not torch.equal(mapper, torch.eye(77))
    seen = []

    class Explicit(p2p_mod.P2PController):
        def cross_attention(self, info, q, k, v):
            out = super().cross_attention(info, q, k, v)
            if self.step < self.cross_steps:
                for s, t, role in self.pairs():
                    if role == "c":
                        a_s = torch.softmax(q[s] @ k[s].transpose(-1, -2) * q.shape[-1] ** -0.5, -1)
                        seen.append(torch.allclose(out[t], (a_s @ mapper) @ v[t], atol=1e-5))
            return out

    monkeypatch.setattr(p2p_mod, "P2PController", Explicit)
    edit(tiny_sd, inv, target, "p2p", mode="replace")
    assert seen and all(seen)


def test_local_blend_reads_every_word_in_each_prompt(tiny_sd):
    tok = tiny_sd.tokenizer
    words = p2p_mod._blend_tokens(tok, PROMPT, "a dog sitting on the sofa", ["cat", "grass", "sofa"], 77)
    assert words == {"src": find_word(tok, PROMPT, "cat") + find_word(tok, PROMPT, "grass"), "tgt": find_word(tok, "a dog sitting on the sofa", "sofa")}
    with pytest.raises(WordError, match="^LocalBlend word 'horse' is in neither prompt"):
        p2p_mod._blend_tokens(tok, PROMPT, "a dog sitting on the sofa", ["horse"], 77)


def test_local_blend_resets_the_target_outside_both_word_masks_from_blend_start(monkeypatch):
    """From step int(blend_start x steps) on, after every step: mask = source word mask OR target word
    mask, target <- source + mask (target - source); before it, nothing is touched. On the shapes
    model, whose word maps are local (on the tiny SD UNet every mask covers the whole latent)."""
    from inversion import load_model
    from shapes.evaluate import to_tensor
    from shapes.scenes import Scene, Shape, render

    model = load_model("shapes")
    scene = Scene((Shape("circle", "red", 0.35, 0.4, 0.4),), ("blue",))
    inv = invert(model, to_tensor(render(scene, 64)[0]), scene.describe(), "ddim", steps=6).stages[0]
    real, seen = p2p_mod.edit_both, []

    def spying(model, inv, target_prompt, guidance, ctrl, pin_source, after, progress):
        def spy(j, x):
            words = {b: ctrl.capture.mask(b, tuple(x.shape[-2:]), 0.5) for b in ("src", "tgt")}
            before = x.clone()
            out = after(j, x)
            seen.append((j, before, out.clone(), words))
            return out

        return real(model, inv, target_prompt, guidance, ctrl, pin_source, spy, progress)

    monkeypatch.setattr(p2p_mod, "edit_both", spying)
    p2p = get_editor("p2p")
    p = p2p.resolve_params(model.stages[0].defaults, blend_words="red,green", blend_threshold=0.5, blend_start=0.5)
    out = p2p.edit(model.stages[0], inv, "a green circle on a blue background", 3.0, p)
    overlap = False
    for j, before, after, words in seen:
        if j < 3:  # int(0.5 x 6)
            assert torch.equal(after, before)
            continue
        union = ((words["src"] > 0) | (words["tgt"] > 0)).float()
        overlap |= bool(((words["src"] > 0) & (words["tgt"] > 0)).any()) and not torch.equal(words["src"], words["tgt"])
        assert torch.equal(after[0], before[0])
        assert torch.allclose(after[1:2], before[0:1] + union * (before[1:2] - before[0:1]), atol=1e-6)
    assert [j for j, *_ in seen] == list(range(6)) and overlap  # both words' masks matter, and they overlap
    assert torch.equal(out.mask, union)


def test_p2p_reweight_words_parse_as_documented():
    assert p2p_mod.parse_weights("red:3, big ,small:0.5,") == {"red": 3.0, "big": 2.0, "small": 0.5}  # 2 by default
    for bad in ("red:many", "red:2:3"):
        with pytest.raises(WordError, match=f"^reweight_words takes word:scale pairs, got '{bad}'$"):
            p2p_mod.parse_weights(bad)


def test_p2p_plans_its_mode_and_refuses_what_cannot_work(tiny_sd):
    p2p = get_editor("p2p")

    def mode(target, **params):
        return p2p.plan(tiny_sd, PROMPT, target, p2p.resolve_params(tiny_sd.defaults, **params))[0]

    assert mode("a dog sitting on the grass") == "replace" and mode(PROMPT + " at winter") == "refine"
    with pytest.raises(WordError, match=r"^reweight keeps the prompt: give the same target prompt with reweight_words \(or use replace/refine\)$"):
        mode("a dog sitting on the grass", mode="reweight", reweight_words="dog:2")
    with pytest.raises(WordError, match="^reweight needs reweight_words, e.g. 'red:2'$"):
        mode(PROMPT, mode="reweight")


def three_level_unet(sample_size=16):
    """A tiny UNet with attention at three resolutions (SD has four; the tiny models have two)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=sample_size, block_out_channels=(8, 16, 32), layers_per_block=1, cross_attention_dim=16, attention_head_dim=4,
        norm_num_groups=4, down_block_types=("CrossAttnDownBlock2D",) * 3, up_block_types=("CrossAttnUpBlock2D",) * 3,
    )


@pytest.mark.parametrize("unet", ["tiny-sd", "three-level"])
def test_p2p_controls_every_cross_attention_and_self_attention_from_the_word_map_level_down(tiny_sd, unet):
    """Self-attention in the levels whose maps are at most the official 16x16 at the native size, from the
    coarsest one at least that wide (tiny-sd, 8 and 4 wide: both; the three-level UNet, 16, 8, 4: all)."""
    from editing.attention import deep_levels

    layers = layer_registry(tiny_sd.unet if unet == "tiny-sd" else three_level_unet())
    levels = sorted({i.level for i in layers if i.is_self})
    ctrl = p2p_mod.P2PController(layers, "replace", None, None, None, None, 1, 1)
    assert ctrl.self_levels == set(levels) == deep_levels(layers) and len(levels) == (2 if unet == "tiny-sd" else 3)
    assert [ctrl.wants(i) for i in layers] == [(not i.is_self) or i.level in ctrl.self_levels for i in layers]
    narrow = three_level_unet(sample_size=64)  # 64, 32, 16 wide: only the deepest
    assert deep_levels(layer_registry(narrow)) == {2} and word_map_level(layer_registry(narrow)) == 2


def test_p2p_samples_the_target_with_the_edit_guidance(tiny_sd, inv):
    weak = edit(tiny_sd, inv, "a dog sitting on the grass", "p2p", guidance=1.0)
    strong = edit(tiny_sd, inv, "a dog sitting on the grass", "p2p", guidance=6.0)
    assert torch.allclose(weak.source_image, strong.source_image, atol=1e-4)  # the source keeps the inversion's
    assert not torch.allclose(weak.image, strong.image, atol=1e-3)


@pytest.mark.parametrize("editor", ["p2p", "masactrl"])
def test_both_branches_keep_the_inversion_s_guidance_and_negative_prompt(tiny_sd, cat_image, editor):
    """An inversion made with guidance 3 and a negative prompt: the source branch is its reconstruction,
    and an edit to the same prompt and guidance changes nothing (the target takes the same negative)."""
    from inversion.pipeline import reconstruct

    inv = invert(tiny_sd, cat_image, PROMPT, "ddim", steps=4, guidance=3.0, negative_prompt="blurry, dark")
    rec = reconstruct(tiny_sd, inv)
    out = edit(tiny_sd, inv, PROMPT, editor, guidance=3.0)
    assert torch.allclose(out.source_image, rec, atol=1e-4) and torch.allclose(out.image, rec, atol=1e-4)
    plain = invert(tiny_sd, cat_image, PROMPT, "ddim", steps=4, guidance=3.0)
    assert not torch.allclose(reconstruct(tiny_sd, plain), rec, atol=1e-3)  # the negative prompt matters here


def test_diffedit_mask_is_the_same_at_any_nonzero_classifier_free_guidance(tiny_sd, inv):
    """The guided difference is g (eps_tgt - eps_src) and the mask is normalised by its mean."""
    def mask(g):
        return edit(tiny_sd, inv, "a bowl of fruit", "diffedit", mask_guidance=g, mask_clamp=1.0, mask_samples=4).mask

    reference = mask(1.0)
    assert 0 < float(reference.mean()) < 1
    assert all(torch.equal(mask(g), reference) for g in (2.0, 7.5))
    assert not mask(0.0).any()  # no difference at all: no mask

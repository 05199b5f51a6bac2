"""Editors: no-op invariance, processor restoration, independent references for each editor."""

import pytest
import torch
import torch.nn.functional as F
from conftest import ASSETS, sdxl_shaped_unet

import editing.masactrl as masactrl_mod
import editing.p2p as p2p_mod
from editing import EDITORS as EDITORS_BY_NAME
from editing import edit, get_editor
from editing.attention import Controller, WordMaps, controlled, fraction_to_steps, layer_registry
from editing.diffedit import strength_step
from editing.words import WordError, find_word, replace_mapper
from inversion.pipeline import invert, reconstruct

INVERTERS = ["ddim", "easyinv", "rnri", "renoise", "fixed-point"]
PROMPT = "a cat sitting on the grass"
SCENE, SCENE_PROMPT = ASSETS / "shapes" / "examples" / "scene0.png", "a red circle on a blue background"


@pytest.fixture(scope="module")
def inversions(tiny_sd, cat_image):
    return {name: invert(tiny_sd, cat_image, PROMPT, name, steps=6) for name in INVERTERS}


def _noop(editor):
    return {"background": "reconstruction"} if editor == "diffedit" else {}


@pytest.mark.parametrize("inverter", INVERTERS)
@pytest.mark.parametrize("editor", ["p2p", "masactrl", "diffedit"])
def test_an_edit_that_changes_nothing_equals_the_reconstruction(tiny_sd, inversions, editor, inverter):
    inv = inversions[inverter]
    out = edit(tiny_sd, inv, PROMPT, editor, guidance=inv.guidance, **_noop(editor))
    rec = reconstruct(tiny_sd, inv)
    assert torch.allclose(out.image, rec, atol=1e-4), float((out.image - rec).abs().max())
    assert torch.allclose(out.source_image, rec, atol=1e-4)


@pytest.mark.parametrize("editor", ["p2p", "masactrl", "diffedit"])
def test_noop_edit_on_lcm_equals_the_reconstruction(tiny_lcm, shapes_lcm, cat_image, editor):
    """On the trained shapes-lcm with its defaults, in image space; on the random tiny LCM with drawn
    step noise, in latent space: there float32 batch-size differences (~1e-6 in eps) are amplified by
    LCM's corrected noise (more along the predicted-noise trajectory, up to 7e-4) and, in image space,
    by the random VAE's decoder gain."""
    from editing import get_editor
    from inversion.sampling import reconstruct_latent

    inv = invert(shapes_lcm, SCENE, SCENE_PROMPT, "rnri")
    out = edit(shapes_lcm, inv, SCENE_PROMPT, editor, **_noop(editor))
    rec = reconstruct(shapes_lcm, inv)
    assert torch.allclose(out.image, rec, atol=1e-4) and torch.allclose(out.source_image, rec, atol=1e-4)

    inv = invert(tiny_lcm, cat_image, PROMPT, "rnri", steps=4, step_noise="drawn")
    ed = get_editor(editor)
    out = ed.edit(tiny_lcm, inv, PROMPT, inv.guidance, ed.resolve_params("lcm", **_noop(editor)))
    rec = reconstruct_latent(tiny_lcm, inv)
    tol = 1e-4 * float(inv.latents.abs().max())
    assert torch.allclose(out.latent, rec, atol=tol) and torch.allclose(out.source_latent, rec, atol=tol)


def test_diffedit_noop_keeps_the_input_background(tiny_sd, inversions):
    inv = inversions["ddim"]
    out = edit(tiny_sd, inv, PROMPT, "diffedit", guidance=inv.guidance)
    assert float(out.mask.sum()) == 0
    assert torch.allclose(out.image, tiny_sd.decode(inv.x0), atol=1e-5)


def test_source_branch_is_the_reconstruction_whatever_the_target(tiny_sd, inversions):
    inv = inversions["rnri"]
    rec = reconstruct(tiny_sd, inv)
    for editor in ("p2p", "masactrl"):
        out = edit(tiny_sd, inv, "a dog sitting on the grass", editor, guidance=7.5)
        assert torch.allclose(out.source_image, rec, atol=1e-4)
        assert not torch.allclose(out.image, rec, atol=1e-3)


def test_pinned_source_follows_the_inverted_trajectory(tiny_sd, inversions):
    inv = inversions["ddim"]
    out = edit(tiny_sd, inv, "a dog sitting on the grass", "p2p", pin_source=True)
    assert torch.allclose(out.source_image, tiny_sd.decode(inv.x0), atol=1e-5)


def test_processors_are_restored_after_an_edit_and_after_an_error(tiny_sd, inversions):
    before = dict(tiny_sd.unet.attn_processors)
    edit(tiny_sd, inversions["ddim"], "a dog sitting on the grass", "masactrl")
    assert dict(tiny_sd.unet.attn_processors) == before

    def boom(*_):
        assert any(type(p).__name__ == "EditAttnProcessor" for p in tiny_sd.unet.attn_processors.values())
        raise RuntimeError("interrupted")

    for editor in ("p2p", "masactrl"):
        with pytest.raises(RuntimeError, match="interrupted"):
            edit(tiny_sd, inversions["ddim"], "a dog sitting on the grass", editor, progress=boom)
        assert dict(tiny_sd.unet.attn_processors) == before


def test_diffedit_mask_matches_diffusers_generate_mask(tiny_sd, cat_image):
    from diffusers import DDIMInverseScheduler, DDIMScheduler, StableDiffusionDiffEditPipeline

    from inversion.models.tiny import SD_SCHEDULER

    pipe = StableDiffusionDiffEditPipeline(
        vae=tiny_sd.vae, text_encoder=tiny_sd.text_encoder, tokenizer=tiny_sd.tokenizer, unet=tiny_sd.unet,
        scheduler=DDIMScheduler(**SD_SCHEDULER), inverse_scheduler=DDIMInverseScheduler(**SD_SCHEDULER),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    inv = invert(tiny_sd, cat_image, "a cat", "ddim", steps=10)
    for clamp in (3.0, 1.0):
        ref = pipe.generate_mask(image=inv.x0.clone(), source_prompt="a cat", target_prompt="a bowl of fruit", num_maps_per_mask=4,
                                 mask_encode_strength=0.5, mask_thresholding_ratio=clamp, num_inference_steps=10,
                                 guidance_scale=7.5, generator=torch.Generator().manual_seed(3), output_type="pt")
        out = edit(tiny_sd, inv, "a bowl of fruit", "diffedit", guidance=7.5, mask_samples=4, mask_strength=0.5, mask_clamp=clamp, mask_seed=3)
        assert torch.equal(out.mask[0, 0].cpu(), torch.as_tensor(ref[0]).float())
    assert 0 < float(out.mask.mean()) < 1  # clamp 1.0 gives a non-trivial mask on random weights


def test_diffedit_pastes_background_at_the_matching_level(tiny_sd, inversions, monkeypatch):
    """Outside the mask every step lands on the trajectory latent of its *target* timestep."""
    import editing.diffedit as de

    inv, seen, real = inversions["ddim"], [], de.run_branches

    def spy(model, inv_, cond, x, start=0, after_step=None, **kw):
        def wrapped(j, x):
            x = after_step(j, x)
            seen.append((j, x.clone()))
            return x

        return real(model, inv_, cond, x, start=start, after_step=wrapped, **kw)

    monkeypatch.setattr(de, "run_branches", spy)
    out = edit(tiny_sd, inv, "a bowl of fruit", "diffedit", mask_clamp=2.0)  # about half the latent
    outside = (out.mask == 0).expand_as(inv.x0)
    assert outside.any() and (~outside).any()
    for j, x in seen:
        assert torch.allclose(x[outside], inv.latent_after(j)[outside])
    assert seen[-1][0] == inv.num_steps - 1


class ExplicitP2P(p2p_mod.P2PController):
    """Reference: P2P as the paper writes it, on explicit softmax maps (no value mixing),
    with token maps and schedules the test builds itself (`ExplicitP2P.ref`), not the code's."""

    captured = []
    ref = {}

    def __init__(self, layers, mode, *args, **kwargs):
        super().__init__(layers, mode, *args, **kwargs)
        r = ExplicitP2P.ref  # empty: the test checks the code's own maps
        if r:
            self.cross_steps, self.self_steps = r["cross_steps"], r["self_steps"]
            self.mapper, self.index, self.alpha, self.eq = r.get("mapper"), r.get("index"), r.get("alpha"), r.get("eq")

    def self_attention(self, info, q, k, v):
        out = F.scaled_dot_product_attention(q, k, v)
        if self.step < self.self_steps and info.level in self.self_levels:
            for s, t, role in self.pairs():
                if role == "c":
                    a = torch.softmax(q[s] @ k[s].transpose(-1, -2) * q.shape[-1] ** -0.5, -1)
                    out[t] = a @ v[t]
        return out

    def cross_attention(self, info, q, k, v):
        out = F.scaled_dot_product_attention(q, k, v)
        if self.step < self.cross_steps:
            for s, t, role in self.pairs():
                if role != "c":
                    continue
                a_s = torch.softmax(q[s] @ k[s].transpose(-1, -2) * q.shape[-1] ** -0.5, -1)
                a_t = torch.softmax(q[t] @ k[t].transpose(-1, -2) * q.shape[-1] ** -0.5, -1)
                if self.mode == "replace":
                    a_new = a_s @ self.mapper
                elif self.mode == "refine":
                    a_new = a_s[..., self.index] * self.alpha + a_t * (1 - self.alpha)
                else:
                    a_new = a_s.clone()
                if self.eq is not None:
                    a_new = a_new * self.eq
                ExplicitP2P.captured.append((a_s, a_new))
                out[t] = a_new @ v[t]
        return out


def _reference_maps(tok, source, target, mode, weights=None, steps=6):
    """Token maps built from the token ids alone, for prompt pairs where they are evident:
    replace of one single-token word (the identity), refine by words appended at the end."""
    s_ids, t_ids = tok(source).input_ids, tok(target).input_ids
    ref = {"cross_steps": 5, "self_steps": 2} if steps == 6 else {}  # round(0.8 * 6), round(0.4 * 6)
    if mode == "replace":
        assert len(s_ids) == len(t_ids)
        ref["mapper"] = torch.eye(77)
    elif mode == "refine":
        s_end, t_end = len(s_ids) - 1, len(t_ids) - 1
        assert t_ids[:s_end] == s_ids[:s_end], "the target must extend the source"
        index, alpha = torch.arange(77), torch.ones(77)
        alpha[s_end:t_end] = 0  # the appended tokens keep their own attention
        index[t_end:] = torch.arange(s_end, s_end + 77 - t_end)  # end token and padding follow the source's
        ref["index"], ref["alpha"] = index, alpha
    if weights:
        eq = torch.ones(77)
        for word, scale in weights.items():
            w_ids = tok(word).input_ids[1:-1]
            for i in range(len(t_ids) - len(w_ids) + 1):
                if t_ids[i : i + len(w_ids)] == w_ids:
                    eq[i : i + len(w_ids)] = scale
        assert (eq != 1).any()
        ref["eq"] = eq
    return ref


P2P_CASES = [
    ("a dog sitting on the grass", {"mode": "replace"}, None),
    ("a dog sitting on the grass", {"mode": "replace", "reweight_words": "dog:3"}, {"dog": 3.0}),
    (PROMPT, {"mode": "reweight", "reweight_words": "cat:0.5"}, {"cat": 0.5}),
    (PROMPT + " at winter", {"mode": "refine"}, None),
    (PROMPT + " at winter", {"mode": "refine", "reweight_words": "winter:3"}, {"winter": 3.0}),
    (PROMPT + " at winter", {"mode": "refine", "reweight_words": "cat:2"}, {"cat": 2.0}),
]


@pytest.mark.parametrize("target, params, weights", P2P_CASES)
def test_p2p_value_mixing_equals_explicit_map_editing(tiny_sd, inversions, monkeypatch, target, params, weights):
    inv = inversions["rnri"]
    fast = edit(tiny_sd, inv, target, "p2p", **params)
    ExplicitP2P.captured = []
    ExplicitP2P.ref = _reference_maps(tiny_sd.tokenizer, PROMPT, target, params["mode"], weights)
    monkeypatch.setattr(p2p_mod, "P2PController", ExplicitP2P)
    ref = edit(tiny_sd, inv, target, "p2p", **params)
    monkeypatch.undo()
    assert ExplicitP2P.captured
    assert torch.allclose(fast.image, ref.image, atol=1e-4)


def test_p2p_reweighting_a_word_only_the_target_has_changes_the_refined_edit(tiny_sd, inversions):
    """The P2P notebook's '... at winter' with winter reweighted: refine must scale the target's own map."""
    target = PROMPT + " at winter"
    plain = edit(tiny_sd, inversions["rnri"], target, "p2p", mode="refine")
    strong = edit(tiny_sd, inversions["rnri"], target, "p2p", mode="refine", reweight_words="winter:5")
    assert (strong.image - plain.image).abs().max() > 1e-3


def test_p2p_replace_uses_the_source_map_on_the_replaced_word(tiny_sd, inversions, monkeypatch):
    tok = tiny_sd.tokenizer
    target = "a dog sitting on the grass"
    s_tok, t_tok = find_word(tok, PROMPT, "cat")[0], find_word(tok, target, "dog")[0]
    assert replace_mapper(tok, PROMPT, target)[s_tok, t_tok] == 1
    ExplicitP2P.captured, ExplicitP2P.ref = [], {}
    monkeypatch.setattr(p2p_mod, "P2PController", ExplicitP2P)
    edit(tiny_sd, inversions["rnri"], target, "p2p", mode="replace")
    for a_s, a_new in ExplicitP2P.captured:
        assert torch.equal(a_new[..., t_tok], a_s[..., s_tok])


def test_p2p_reweight_scales_exactly_the_chosen_token(tiny_sd, inversions, monkeypatch):
    tok = tiny_sd.tokenizer
    idx = find_word(tok, PROMPT, "grass")
    ExplicitP2P.captured, ExplicitP2P.ref = [], {}
    monkeypatch.setattr(p2p_mod, "P2PController", ExplicitP2P)
    edit(tiny_sd, inversions["rnri"], PROMPT, "p2p", mode="reweight", reweight_words="grass:2.5")
    others = [i for i in range(77) if i not in idx]
    for a_s, a_new in ExplicitP2P.captured:
        assert torch.allclose(a_new[..., idx], 2.5 * a_s[..., idx])
        assert torch.equal(a_new[..., others], a_s[..., others])


class RecordingMasaCtrl(masactrl_mod.MasaCtrlController):
    records = []

    def self_attention(self, info, q, k, v):
        out = super().self_attention(info, q, k, v)
        RecordingMasaCtrl.records.append((self.step, info, q.clone(), k.clone(), v.clone(), out.clone(), self.pairs()))
        return out


def test_masactrl_target_attends_to_source_keys_and_values(tiny_sd, inversions, monkeypatch):
    RecordingMasaCtrl.records = []
    monkeypatch.setattr(masactrl_mod, "MasaCtrlController", RecordingMasaCtrl)
    out = edit(tiny_sd, inversions["rnri"], "a dog sitting on the grass", "masactrl", guidance=5.0)
    start_step, start_block = out.info["start_step"], out.info["start_block"]
    assert start_step >= 1 and RecordingMasaCtrl.records
    checked = {"controlled": 0, "free": 0}
    for step, info, q, k, v, o, pairs in RecordingMasaCtrl.records:
        assert len(pairs) == 2  # both guidance halves
        for s, t, _ in pairs:
            if step >= start_step and info.block_order >= start_block:
                assert torch.allclose(o[t], F.scaled_dot_product_attention(q[t], k[s], v[s]), atol=1e-6)
                checked["controlled"] += 1
            else:
                assert torch.allclose(o[t], F.scaled_dot_product_attention(q[t], k[t], v[t]), atol=1e-6)
                checked["free"] += 1
            assert torch.allclose(o[s], F.scaled_dot_product_attention(q[s], k[s], v[s]), atol=1e-6)
    assert checked["controlled"] and checked["free"]


def test_layer_registry_is_derived_from_names(tiny_sd):
    from inversion.models.shapes_arch import base_unet

    layers = layer_registry(tiny_sd.unet)
    assert [i.order for i in layers] == list(range(len(layers)))
    places = [i.place for i in layers]
    assert places == sorted(places, key=["down", "mid", "up"].index)
    shapes_layers = layer_registry(base_unet())
    assert max(i.block_order for i in shapes_layers) + 1 == 7 and {i.level for i in shapes_layers} == {1, 2}
    xl = sdxl_shaped_unet()
    xl_layers = layer_registry(xl)
    assert len(xl_layers) == len(xl.attn_processors)
    assert {i.level for i in xl_layers} == {1, 2} and max(i.transformer for i in xl_layers) == 2
    mid = [i.order for i in xl_layers if i.place == "mid"]
    assert max(i.order for i in xl_layers if i.place == "down") < min(mid) < min(i.order for i in xl_layers if i.place == "up")


def test_masactrl_and_p2p_run_on_an_sdxl_shaped_unet():
    """No hard-coded layer counts: the processor handles several transformer blocks and levels."""
    xl = sdxl_shaped_unet()
    layers = layer_registry(xl)
    ctrl = masactrl_mod.MasaCtrlController(layers, 0, 0)
    x = torch.randn(2, 4, 16, 16)
    emb = torch.randn(2, 77, 32)
    ref = xl(x, 500, emb).sample
    with controlled(xl, Controller(layers)) as plain:
        plain.begin_step(0, 1, [("src", "c"), ("tgt", "c")], (16, 16))
        assert torch.allclose(xl(x, 500, emb).sample, ref, atol=1e-5)  # the processor reproduces diffusers
    with controlled(xl, ctrl):
        ctrl.begin_step(0, 1, [("src", "c"), ("tgt", "c")], (16, 16))
        out = xl(torch.cat([x[:1], x[:1]]), 500, torch.cat([emb[:1], emb[1:]])).sample
    assert torch.isfinite(out).all()


def test_schedules_count_steps_as_the_official_p2p_and_control_at_least_one():
    # official: cross-attention int(f * (n + 1)), self-attention int(f * n)
    assert fraction_to_steps(0.8, 4, over=5) == 4 and fraction_to_steps(0.4, 4) == 1
    assert fraction_to_steps(0.8, 50, over=51) == 40 and fraction_to_steps(0.4, 50) == 20
    assert fraction_to_steps(0.2, 4) == 1 and fraction_to_steps(0.01, 4) == 1 and fraction_to_steps(0.0, 4) == 0  # at least one
    assert fraction_to_steps(1.0, 4, over=5) == 4  # at most all


def test_masactrl_controls_at_4_lcm_steps(tiny_lcm, cat_image):
    inv = invert(tiny_lcm, cat_image, PROMPT, "ddim", steps=4)
    out = edit(tiny_lcm, inv, "a dog sitting on the grass", "masactrl")
    assert out.info["start_step"] == 1  # step 0 free for the new layout, steps 1..3 controlled
    p2p = edit(tiny_lcm, inv, "a dog sitting on the grass", "p2p")
    assert p2p.info["cross_steps"] == 4 and p2p.info["self_steps"] == 1  # official counts: int(0.8 * 5), int(0.4 * 4)


def test_word_errors_are_clear(tiny_sd, inversions):
    with pytest.raises(WordError, match="same number of words"):
        edit(tiny_sd, inversions["ddim"], "a dog", "p2p", mode="replace")
    with pytest.raises(WordError, match="not a word of the prompt"):
        edit(tiny_sd, inversions["ddim"], "a dog sitting on the grass", "p2p", reweight_words="horse:2")
    with pytest.raises(WordError, match="neither prompt"):
        edit(tiny_sd, inversions["ddim"], "a dog sitting on the grass", "p2p", blend_words="horse")
    with pytest.raises(ValueError, match="empty"):
        edit(tiny_sd, inversions["ddim"], "  ", "p2p")


def test_refine_mode_runs_for_added_words(tiny_sd, inversions):
    out = edit(tiny_sd, inversions["rnri"], "a fluffy cat sitting on the green grass", "p2p")
    assert out.params["mode"] == "refine"


def test_local_blend_mask_is_pooled_normalised_and_thresholded():
    wm = WordMaps({"tgt": [1]}, level=0)
    wm.hw = (4, 4)
    m = torch.zeros(16)
    m[5] = 1.0  # one hot pixel
    wm.total["tgt"] = m
    mask = wm.mask("tgt", (8, 8), 0.3)
    assert mask.shape == (1, 1, 8, 8) and 0 < float(mask.mean()) < 1
    assert mask[0, 0, 0, 7] == 0 and mask[0, 0, 2, 2] == 1


def test_editors_refuse_models_without_separate_attention(tiny_if, cat_image):
    inv = invert(tiny_if, cat_image, "a cat", "ddim", steps=3)
    with pytest.raises(ValueError, match="added-KV"):
        edit(tiny_if, inv, "a dog", "masactrl")
    out = edit(tiny_if, inv, "a dog", "diffedit")
    assert out.image.shape == (1, 3, 32, 32)


def test_strength_step_matches_diffusers_convention():
    assert strength_step(50, 0.8) == 10 and strength_step(4, 1.0) == 0 and strength_step(10, 0.5) == 5


def test_masactrl_mask_needs_its_word_in_each_prompt(tiny_sd, inversions):
    """The official MaskAuto: a source word and a target word (they may differ); a word missing
    from its prompt is refused (it used to build one mask and silently run plain MasaCtrl)."""
    inv = inversions["rnri"]
    with pytest.raises(WordError, match="mask_word is not in the target prompt.*set mask_target_word"):
        edit(tiny_sd, inv, "a dog sitting on the grass", "masactrl", mask_word="cat")
    with pytest.raises(WordError, match="mask_target_word"):
        edit(tiny_sd, inv, "a dog sitting on the grass", "masactrl", mask_word="cat", mask_target_word="horse")
    out = edit(tiny_sd, inv, "a dog sitting on the grass", "masactrl", mask_word="cat", mask_target_word="dog")
    assert out.mask is not None and 0 < float(out.mask.mean()) < 1


def test_masactrl_mask_needs_a_source_prompt(tiny_sd, cat_image):
    inv = invert(tiny_sd, cat_image, "", "ddim", steps=4)
    with pytest.raises(WordError, match="source prompt is empty"):
        edit(tiny_sd, inv, "a dog", "masactrl", mask_word="dog")


def test_masactrl_masks_come_from_the_16px_level_min_max_normalised(tiny_sd, inversions, monkeypatch):
    made = []

    class Recording(masactrl_mod.MasaCtrlController):
        def begin_step(self, step, num_steps, rows, latent_hw):
            if self.capture is not None and self.capture.total:
                made.append({b: (self.capture.total[b].clone(), self.capture.hw) for b in ("src", "tgt")})
            super().begin_step(step, num_steps, rows, latent_hw)
            if made and self.masks:
                made[-1]["masks"] = dict(self.masks)

    monkeypatch.setattr(masactrl_mod, "MasaCtrlController", Recording)
    edit(tiny_sd, inversions["rnri"], "a dog sitting on the grass", "masactrl", mask_word="cat", mask_target_word="dog", mask_threshold=0.3)
    levels = sorted({i.level for i in layer_registry(tiny_sd.unet) if i.kind == "cross"})
    assert made
    for rec in made:
        for b in ("src", "tgt"):
            total, hw = rec[b]
            assert hw == tuple(s // 2 ** levels[-2] for s in inversions["rnri"].x0.shape[-2:])  # the second-deepest level
            expected = ((total - total.min()) / (total.max() - total.min()) > 0.3).float().view(1, 1, *hw)
            assert torch.equal(rec["masks"][b], expected)


def test_masactrl_refuses_a_flat_word_map():
    wm = WordMaps({"src": [1], "tgt": [1]}, level=0)
    wm.hw, wm.total = (2, 2), {"src": torch.ones(4), "tgt": torch.tensor([0.0, 1.0, 2.0, 3.0])}
    assert wm.minmax_mask("src", 0.1) is None
    assert wm.minmax_mask("tgt", 0.5).flatten().tolist() == [0.0, 0.0, 1.0, 1.0]
    ctrl = masactrl_mod.MasaCtrlController([], 1, 0, wm)
    ctrl.begin_step(1, 4, [], (2, 2))  # noted on the device (no host read per step), refused after the loop
    with pytest.raises(WordError, match="source mask at step 1: the word's attention map is flat"):
        ctrl.finish()


def test_a_painted_region_drives_every_editor(tiny_sd, inversions):
    """The user's painted mask (image pixels) replaces DiffEdit's mask, is P2P's LocalBlend and
    MasaCtrl's foreground; it reaches the latent grid by max-pooling (any painted pixel counts)."""
    from editing.api import latent_region

    inv = inversions["rnri"]
    region = torch.zeros(inv.x0.shape[-2] * 8, inv.x0.shape[-1] * 8)
    region[8:30, 20:41] = 1  # pixels: latent rows 1..3, columns 2..5
    grid = latent_region(region, inv.x0)
    assert grid[0, 0].nonzero().min(0).values.tolist() == [1, 2] and grid[0, 0].nonzero().max(0).values.tolist() == [3, 5]
    target = "a dog sitting on the grass"
    for name in ("diffedit", "p2p", "masactrl"):
        ed = EDITORS_BY_NAME[name]
        p = ed.resolve_params(tiny_sd.defaults, **({"background": "reconstruction"} if name == "diffedit" else {}))
        out = ed.edit(tiny_sd, inv, target, 7.5, p, region=grid)
        assert torch.equal(out.mask, grid), name
        if name != "masactrl":  # outside the region the target is the source branch exactly
            outside = (grid == 0).expand_as(out.latent)
            assert torch.allclose(out.latent[outside], out.source_latent[outside], atol=1e-6), name
            assert not torch.allclose(out.latent[~outside], out.source_latent[~outside], atol=1e-3), name
    with pytest.raises(ValueError, match="empty"):
        edit(tiny_sd, inv, target, "diffedit", region=torch.zeros_like(region))


def test_an_edit_decodes_only_the_edit_and_the_source_branch_when_asked(tiny_sd, inversions, monkeypatch):
    """The source branch equals the reconstruction, which callers usually hold: its VAE decode
    (half an edit's decoding) waits until `source_image` is read, then happens once."""
    decoded = []
    real = tiny_sd.decode
    monkeypatch.setattr(tiny_sd, "decode", lambda z: decoded.append(z.shape) or real(z))
    out = edit(tiny_sd, inversions["ddim"], "a dog sitting on the grass", "p2p")
    assert len(decoded) == 1
    first = out.source_image
    assert len(decoded) == 2 and out.source_image is first
    assert torch.allclose(first, real(out.source_latent))


def test_a_preview_edit_decodes_with_the_preview_decoder_and_says_so(tiny_sd, inversions, monkeypatch):
    """Live mode's preview: the edit is decoded by TAESD (AutoencoderTiny, madebyollin/taesd's
    architecture) from the same latent; without a preview decoder the full VAE decodes it."""
    from diffusers import AutoencoderTiny

    taesd = AutoencoderTiny(act_fn="relu", encoder_block_out_channels=(64,) * 4, decoder_block_out_channels=(64,) * 4,
                            num_encoder_blocks=(1, 3, 3, 3), num_decoder_blocks=(3, 3, 3, 1), latent_magnitude=3, latent_shift=0.5).eval()
    inv = inversions["ddim"]
    full = edit(tiny_sd, inv, "a dog sitting on the grass", "p2p")
    assert not full.previewed and torch.equal(edit(tiny_sd, inv, "a dog sitting on the grass", "p2p", preview=True).image, full.image)  # none set
    monkeypatch.setattr(tiny_sd, "preview_vae", taesd)
    quick = edit(tiny_sd, inv, "a dog sitting on the grass", "p2p", preview=True)
    assert quick.previewed and quick.image.shape == full.image.shape and quick.image.abs().max() <= 1
    latent = get_editor("p2p").edit(tiny_sd, inv, "a dog sitting on the grass", tiny_sd.default_edit_guidance, get_editor("p2p").resolve_params(tiny_sd.defaults)).latent
    assert torch.allclose(quick.image, taesd.decode(latent).sample.clamp(-1, 1), atol=1e-5)  # TAESD takes the sampler's latent as it is
    assert torch.allclose(quick.source_image, tiny_sd.decode(quick.source_latent))  # the source branch: the full decoder

"""`EditAttnProcessor` on attention over conv features: 4-D (B, C, H, W) inputs made tokens and back,
`spatial_norm`, `group_norm`, cross-attention with `norm_cross`, q/k norms, residual connections,
`rescale_output_factor`, the attention-mask refusal. The SD-style UNets the editors run use transformer
blocks (3-D inputs) and never take these branches; diffusers' UNet2DModel (AttnDownBlock2D,
AttnUpBlock2D, UNetMidBlock2D), AutoencoderKL, a MoVQ-style VQModel (SpatialNorm) and bare `Attention`
layers do.

References: diffusers' own `AttnProcessor2_0` when nothing is edited, and `explicit` below (the
attention layer written out with permutes and an explicit softmax(QK^T/sqrt(d)) map, using only the
layer's diffusers submodules) when a controller routes maps between rows."""

import math

import pytest
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DModel, VQModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from editing.attention import Controller, EditAttnProcessor, LayerInfo, WordMaps
from inversion.errors import UnsupportedAttention

# --------------------------------------------------------------------------- references


@torch.no_grad()
def explicit(attn, x, context=None, temb=None, source_of=None, keep=None):
    """One attention layer from its weights: softmax(q k^T / sqrt(d)) v with explicit maps.
    `source_of[i]`: the row whose map row i uses (P2P's self-attention injection); `keep`: a list the
    maps are appended to."""
    residual = x
    if attn.spatial_norm is not None:
        x = attn.spatial_norm(x, temb)
    conv = x.dim() == 4
    if conv:
        b, c, h, w = x.shape
        x = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, HW, C), row-major over (h, w)
    if attn.group_norm is not None:
        gn = attn.group_norm
        x = F.group_norm(x.permute(0, 2, 1), gn.num_groups, gn.weight, gn.bias, gn.eps).permute(0, 2, 1)
    if context is None:
        context = x
    elif attn.norm_cross is not None:
        context = attn.norm_encoder_hidden_states(context)
    heads = attn.heads

    def split(t):  # (B, N, heads * d) -> (B, heads, N, d)
        return t.unflatten(-1, (heads, t.shape[-1] // heads)).permute(0, 2, 1, 3)

    q, k, v = split(attn.to_q(x)), split(attn.to_k(context)), split(attn.to_v(context))
    if attn.norm_q is not None:
        q = attn.norm_q(q)
    if attn.norm_k is not None:
        k = attn.norm_k(k)
    maps = torch.softmax(torch.einsum("bhnd,bhmd->bhnm", q, k) / math.sqrt(q.shape[-1]), dim=-1)
    if source_of is not None:
        maps = maps[list(source_of)]
    if keep is not None:
        keep.append(maps)
    out = torch.einsum("bhnm,bhmd->bhnd", maps, v).permute(0, 2, 1, 3).flatten(2)
    out = attn.to_out[1](attn.to_out[0](out))
    if conv:
        out = out.reshape(b, h, w, c).permute(0, 3, 1, 2)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class Explicit:
    """`explicit` as a processor, to run whole models on the reference."""

    def __init__(self, source_of=None):
        self.source_of = source_of

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        assert attention_mask is None
        return explicit(attn, hidden_states, encoder_hidden_states, temb, self.source_of)


# --------------------------------------------------------------------------- controllers


class Counting(Controller):
    """Plain attention through the base class's paths, counting the calls that reach it."""

    def __init__(self):
        super().__init__([])
        self.calls = 0

    def attend(self, info, q, k, v):
        self.calls += 1
        return super().attend(info, q, k, v)


class Disabled(Controller):
    """A controller switched off: the processor must not consult its edits at all."""

    def __init__(self):
        super().__init__([])
        self.enabled = False

    def self_attention(self, info, q, k, v):
        raise AssertionError("a disabled controller edited self-attention")

    def cross_attention(self, info, q, k, v):
        raise AssertionError("a disabled controller edited cross-attention")


class InjectSelf(Controller):
    """P2P's self-attention injection: each target row attends with its source row's map (softmax
    of the source's q k^T) over its own values. The maps are built explicitly in float32 and returned
    in float32 whatever the model's dtype, as an editor computing maps may do."""

    def self_attention(self, info, q, k, v):
        idx = self.routing(device=q.device)
        maps = torch.softmax(q.float() @ k.float().transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
        return maps[idx] @ v.float()


def info(name="attn", kind="self", level=0):
    return LayerInfo(name=name, place="down", block=0, attention=0, transformer=0, kind=kind, level=level, side=64, order=0, block_order=0)


# --------------------------------------------------------------------------- models


def _unet2d():
    # AttnDownBlock2D, AttnUpBlock2D (two attentions) and UNetMidBlock2D: group_norm, residual, 4-D;
    # the mid block's output scale sqrt(2) as score-SDE's NCSN++ configs (rescale_output_factor).
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                       down_block_types=("AttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "AttnUpBlock2D"),
                       norm_num_groups=4, attention_head_dim=4, mid_block_scale_factor=math.sqrt(2))


def _vae():
    # the encoder's and decoder's mid-block attention: group_norm (eps 1e-6), residual, 4-D
    return AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8,), layers_per_block=1, latent_channels=4,
                         norm_num_groups=4, sample_size=8)


def _movq():
    # MoVQ-style decoder (norm_type "spatial"): its mid-block attention has a SpatialNorm conditioned on
    # the quantised latent (temb), and no group_norm; the encoder's has a group_norm
    return VQModel(in_channels=3, out_channels=3, block_out_channels=(32,), layers_per_block=1, latent_channels=4,
                   norm_num_groups=32, sample_size=8, norm_type="spatial", num_vq_embeddings=16, vq_embed_dim=4)


MODELS = {
    "unet2d": (_unet2d, lambda m, x: m(x, 10).sample),
    "autoencoder-kl": (_vae, lambda m, x: m(x).sample),
    "movq-spatial-norm": (_movq, lambda m, x: m(x).sample),
}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    torch.manual_seed(0)
    make, run = MODELS[request.param]
    m = make().eval()
    layers = [a for a in m.modules() if isinstance(a, Attention)]
    assert layers
    with torch.no_grad():
        for a in layers:  # affine norms away from (1, 0) so a skipped or misplaced norm shows
            for norm in (a.group_norm, a.spatial_norm and a.spatial_norm.norm_layer):
                if norm is not None:
                    norm.weight.normal_(1.0, 0.5)
                    norm.bias.normal_(0.0, 0.5)
    return request.param, m, run, layers


def _install(layers, make):
    for i, a in enumerate(layers):
        a.set_processor(make(i))


def _run(model, make, x):
    name, m, run, layers = model
    _install(layers, make)
    try:
        with torch.no_grad():
            return run(m, x)
    finally:
        _install(layers, lambda i: AttnProcessor2_0())


def _close(a, b, tol=1e-5):
    err = float((a - b).abs().max())
    assert err <= tol * max(1.0, float(b.abs().max())), err


# --------------------------------------------------------------------------- whole models


def test_the_explicit_reference_is_diffusers_attention(model):
    x = torch.randn(2, 3, 8, 8)
    ref = _run(model, lambda i: AttnProcessor2_0(), x)
    _close(_run(model, lambda i: Explicit(), x), ref)


@pytest.mark.parametrize("kind", ["self", "cross"])
def test_a_controller_that_edits_nothing_reproduces_attn_processor_2_0(model, kind):
    """The base controller's self path (SDPA) and cross path (`plain_cross`), on every attention layer."""
    x = torch.randn(2, 3, 8, 8)
    ref = _run(model, lambda i: AttnProcessor2_0(), x)
    ctrl = Counting()
    ctrl.begin_step(0, 1, [("src", "c"), ("tgt", "c")], (8, 8))
    out = _run(model, lambda i: EditAttnProcessor(info(f"layer{i}", kind), ctrl), x)
    assert ctrl.calls >= len(model[3])  # every layer went through the controller
    _close(out, ref, 1e-6)


def test_a_disabled_controller_reproduces_attn_processor_2_0(model):
    x = torch.randn(2, 3, 8, 8)
    ref = _run(model, lambda i: AttnProcessor2_0(), x)
    ctrl = Disabled()
    out = _run(model, lambda i: EditAttnProcessor(info(f"layer{i}", "self" if i % 2 else "cross"), ctrl), x)
    _close(out, ref, 1e-6)


def test_self_attention_injection_equals_the_explicit_maps(model):
    """Row 1 (target) attends with row 0's (source) map in every layer: the model's output equals the
    same model run on the explicit reference with that mapping, and differs from the unedited output."""
    torch.manual_seed(1)
    x = torch.randn(2, 3, 8, 8)
    ctrl = InjectSelf([])
    ctrl.begin_step(0, 1, [("src", "c"), ("tgt", "c")], (8, 8))
    out = _run(model, lambda i: EditAttnProcessor(info(f"layer{i}"), ctrl), x)
    ref = _run(model, lambda i: Explicit(source_of=[0, 0]), x)
    _close(out, ref)
    plain = _run(model, lambda i: AttnProcessor2_0(), x)
    _close(out[0], plain[0])  # the source row is untouched
    assert float((out[1] - plain[1]).abs().max()) > 1e-3  # the edit changed the target


# --------------------------------------------------------------------------- one attention layer


def _layer(cross_norm=None, qk_norm=None, dtype=torch.float32):
    torch.manual_seed(2)
    kw = {}
    if cross_norm is not None:
        kw = {"cross_attention_dim": 6, "cross_attention_norm": cross_norm, "cross_attention_norm_num_groups": 2}
    a = Attention(8, heads=2, dim_head=4, norm_num_groups=4, residual_connection=True, rescale_output_factor=2.0,
                  qk_norm=qk_norm, bias=True, **kw)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return a.to(dtype).eval()


def _call(layer, proc, x, context=None, **kw):
    layer.set_processor(proc)
    with torch.no_grad():
        return layer(x, encoder_hidden_states=context, **kw)


# (B, C, H, W) with H != W and H * W != C, so swapped or skipped transposes cannot line up by chance
X_SHAPE, CONTEXT_SHAPE = (2, 8, 3, 5), (2, 7, 6)


@pytest.mark.parametrize("cross_norm", ["layer_norm", "group_norm"])
@pytest.mark.parametrize("kind", ["self", "cross"])
def test_cross_attention_on_conv_features_with_norm_cross_and_qk_norm(cross_norm, kind):
    layer = _layer(cross_norm, qk_norm="layer_norm")
    x, context = torch.randn(*X_SHAPE), torch.randn(*CONTEXT_SHAPE)
    ref = _call(layer, AttnProcessor2_0(), x, context)
    _close(ref, explicit(layer, x, context))
    ctrl = Controller([])
    out = _call(layer, EditAttnProcessor(info(kind=kind), ctrl), x, context)
    assert out.shape == X_SHAPE
    _close(out, ref, 1e-6)


def test_captured_word_maps_on_conv_features_are_the_explicit_maps():
    """`plain_cross` with a capture: the explicit-map path gives AttnProcessor2_0's output, and each
    branch's captured map is its conditional row's map, summed over its own tokens, averaged over heads,
    and summed over calls."""
    layer = _layer("layer_norm")
    x, context = torch.randn(*X_SHAPE), torch.randn(*CONTEXT_SHAPE)
    tokens = {"src": [2], "tgt": [1, 4]}
    wm = WordMaps(tokens, level=0)
    ctrl = Controller([], capture=wm)
    ctrl.begin_step(0, 1, [("src", "c"), ("tgt", "c")], X_SHAPE[2:])
    out = _call(layer, EditAttnProcessor(info(kind="cross"), ctrl), x, context)
    maps = []
    _close(out, explicit(layer, x, context, keep=maps))
    _close(out, _call(layer, AttnProcessor2_0(), x, context), 1e-6)
    assert wm.hw == X_SHAPE[2:]
    expected = {b: maps[0][row][:, :, tokens[b]].sum(-1).mean(0) for row, b in enumerate(["src", "tgt"])}
    for b in tokens:
        _close(wm.total[b], expected[b], 1e-6)
    _call(layer, EditAttnProcessor(info(kind="cross"), ctrl), x, context)
    for b in tokens:
        _close(wm.total[b], 2 * expected[b], 1e-6)
    # a branch without tokens, and a branch without a conditional row, keep nothing
    wm = WordMaps({"src": [], "tgt": [3]}, level=0)
    ctrl = Controller([], capture=wm)
    ctrl.begin_step(0, 1, [("src", "c"), ("tgt", "u")], X_SHAPE[2:])
    _call(layer, EditAttnProcessor(info(kind="cross"), ctrl), x, context)
    assert wm.total == {}


def test_a_controller_may_return_float32_maps_in_a_half_precision_model():
    """The processor casts the controller's output back to the layer's dtype before the output
    projection (an explicit-map controller works in float32)."""
    layer = _layer(dtype=torch.bfloat16)
    x = torch.randn(*X_SHAPE, dtype=torch.bfloat16)
    ctrl = InjectSelf([])
    ctrl.begin_step(0, 1, [("src", "c"), ("tgt", "c")], X_SHAPE[2:])
    out = _call(layer, EditAttnProcessor(info(), ctrl), x)
    assert out.dtype == torch.bfloat16
    ref = explicit(layer.float(), x.float(), source_of=[0, 0])
    _close(out.float(), ref, 3e-2)


def test_attention_masks_are_refused_with_a_message():
    layer = _layer()
    x = torch.randn(*X_SHAPE)
    mask = torch.zeros(2, 1, X_SHAPE[2] * X_SHAPE[3])
    with pytest.raises(UnsupportedAttention, match="^attention masks are not supported by the editing processor$"):
        _call(layer, EditAttnProcessor(info(), Controller([])), x, attention_mask=mask)


# --------------------------------------------------------------------------- which layers are controlled


def _conditional_unet(down, up, mid="UNetMidBlock2DCrossAttn"):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(3)
    return UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=2,
                                down_block_types=down, up_block_types=up, mid_block_type=mid, cross_attention_dim=8,
                                attention_head_dim=4, norm_num_groups=4).eval()


def test_attention_on_conv_features_is_left_to_diffusers_in_a_mixed_unet():
    """A UNet2DConditionModel whose first block attends over conv features (AttnDownBlock2D, listed first
    by diffusers): the registry holds exactly the transformer blocks' layers, `controlled` installs the
    editing processor there only, and the output is the plain UNet's."""
    from editing.attention import controlled, layer_registry

    unet = _conditional_unet(("AttnDownBlock2D", "CrossAttnDownBlock2D"), ("CrossAttnUpBlock2D", "AttnUpBlock2D"))
    assert next(iter(unet.attn_processors)) == "down_blocks.0.attentions.0.processor"  # a conv attention comes first
    layers = layer_registry(unet)
    expected = [("down", 1, a) for a in range(2)] + [("mid", 0, 0)] + [("up", 0, a) for a in range(3)]
    got = [(i.place, i.block, i.attention, i.transformer, i.kind, i.level) for i in layers]
    assert got == [(p, b, a, 0, kind, 1) for p, b, a in expected for kind in ("self", "cross")]
    assert [i.block_order for i in layers] == [n // 2 for n in range(len(layers))]

    class All(Controller):
        def wants(self, info):
            return True

    x, emb = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8)
    with torch.no_grad():
        ref = unet(x, 10, emb).sample
        with controlled(unet, All(layers)) as ctrl:
            ctrl.begin_step(0, 1, [("src", "c"), ("tgt", "c")], (8, 8))
            procs = unet.attn_processors
            assert {n for n, p in procs.items() if isinstance(p, EditAttnProcessor)} == {i.name for i in layers}
            assert sum(isinstance(p, AttnProcessor2_0) for p in procs.values()) == 5  # 2 down + 3 up, untouched
            out = unet(x, 10, emb).sample
    _close(out, ref, 1e-6)


def test_a_unet_whose_attention_is_all_on_conv_features_is_refused_with_a_message():
    from editing.attention import layer_registry

    unet = _conditional_unet(("AttnDownBlock2D", "DownBlock2D"), ("UpBlock2D", "AttnUpBlock2D"), mid="UNetMidBlock2D")
    message = ("this UNet has no separate self-/cross-attention layers (e.g. DeepFloyd-IF's joint added-KV attention); "
               "Prompt-to-Prompt and MasaCtrl need them. DiffEdit works on any model.")
    with pytest.raises(UnsupportedAttention) as err:
        layer_registry(unet)
    assert str(err.value) == message


def test_spatial_shape_names_tokens_that_fit_no_level():
    from editing.attention import spatial_shape

    assert spatial_shape(15, (3, 5)) == (3, 5) and spatial_shape(6, (3, 5)) == (2, 3)
    with pytest.raises(ValueError, match=r"^cannot place 7 tokens on a \(3, 5\) latent$"):
        spatial_shape(7, (3, 5))


# --------------------------------------------------------------------------- masks from captured maps


def _local_blend(total, hw, size, threshold):
    """P2P's LocalBlend mask written out: 3x3 max-pool (stride 1), bilinear upsampling (half-pixel
    centres), divided by the maximum, strictly above the threshold (the official `.gt`)."""
    m = total.reshape(1, 1, *hw)
    m = F.max_pool2d(m, kernel_size=3, stride=1, padding=1)
    m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
    return (m / m.max() > threshold).float()


@pytest.mark.parametrize("size", [(4, 6), (11, 17)])
def test_local_blend_mask_equals_its_written_out_form(size):
    torch.manual_seed(4)
    total = torch.rand(24) * 0.5  # a map whose maximum is below 1, as summed probabilities often are
    wm = WordMaps({"tgt": [1]}, level=0)
    wm.hw, wm.total["tgt"] = (4, 6), total
    for threshold in (0.3, 0.6, 0.9):
        assert torch.equal(wm.mask("tgt", size, threshold), _local_blend(total, (4, 6), size, threshold))
    assert wm.mask("src", size, 0.3) is None  # a branch without a map


def test_local_blend_threshold_is_strict():
    wm = WordMaps({"tgt": [1]}, level=0)
    wm.hw = (1, 4)
    wm.total["tgt"] = torch.tensor([0.0, 0.0, 0.0, 0.25])  # pooled: 0, 0, .25, .25; normalised: 0, 0, 1, 1
    assert wm.mask("tgt", (1, 4), 0.5).flatten().tolist() == [0.0, 0.0, 1.0, 1.0]
    assert wm.mask("tgt", (1, 4), 1.0).flatten().tolist() == [0.0, 0.0, 0.0, 0.0]


def test_masactrl_mask_is_min_max_normalised_and_strictly_thresholded():
    """MaskAuto as the official MasaCtrl: (m - min) / (max - min) > threshold; None for a flat map or a
    branch without a map."""
    wm = WordMaps({"tgt": [1]}, level=0)
    wm.hw = (2, 2)
    wm.total["tgt"] = torch.tensor([1.0, 2.0, 3.0, 1.5])  # normalised: 0, .5, 1, .25
    assert wm.minmax_mask("tgt", 0.5).flatten().tolist() == [0.0, 0.0, 1.0, 0.0]
    assert wm.minmax_mask("tgt", 0.2).flatten().tolist() == [0.0, 1.0, 1.0, 1.0]
    assert wm.minmax_mask("src", 0.5) is None and wm.minmax_mask_flat("src", 0.5) is None
    wm.total["tgt"] = torch.full((4,), 0.7)
    assert wm.minmax_mask("tgt", 0.5) is None
    mask, flat = wm.minmax_mask_flat("tgt", 0.5)
    assert bool(flat) and mask.flatten().tolist() == [1.0] * 4  # flat: all foreground (plain MasaCtrl)


# --------------------------------------------------------------------------- routing and per-edit constants


def test_routing_maps_each_target_row_to_its_source_row_once_per_edit():
    ctrl = Controller([])
    ctrl.begin_step(0, 4, [("src", "u"), ("tgt", "u"), ("src", "c"), ("tgt", "c")], (8, 8))
    assert ctrl.routing().tolist() == [0, 0, 2, 2]
    assert ctrl.routing("c").tolist() == [0, 1, 2, 2] and ctrl.routing("u").tolist() == [0, 0, 2, 3]
    on = ctrl.routing("c", torch.device("cpu"))
    assert on.dtype == torch.long and on.tolist() == [0, 1, 2, 2]
    assert ctrl.routing("c", torch.device("cpu")) is on  # built once, reused every layer and step
    assert ctrl.routing("u", torch.device("cpu")).tolist() == [0, 0, 2, 3]  # another layout, another entry
    ctrl.begin_step(1, 4, [("src", "c")], (8, 8))
    assert ctrl.routing() is None and ctrl.routing("c", torch.device("cpu")) is None


def test_per_edit_constants_take_the_dtype_of_the_tensor_they_meet_once():
    ctrl = Controller([])
    made = []

    def make():
        made.append(1)
        return torch.tensor([0.5, 2.0])

    like = torch.zeros(3, dtype=torch.bfloat16)
    c = ctrl.on_device("w", make, like)
    assert c.dtype == torch.bfloat16 and c.tolist() == [0.5, 2.0]
    assert ctrl.on_device("w", make, like) is c and len(made) == 1
    assert ctrl.on_device("w", make, like.float()).dtype == torch.float32 and len(made) == 2
    idx = ctrl.index_on("toks", [3, 1], like.device)
    assert idx.dtype == torch.long and idx.tolist() == [3, 1] and ctrl.index_on("toks", [3, 1], like.device) is idx

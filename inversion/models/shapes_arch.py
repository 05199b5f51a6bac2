"""Architecture of `shapes`, our small trained text-to-image cascade.

Shared by the training script (`python -m shapes.train`) and the loader, so the
shipped weights and the code that builds the modules cannot drift apart.

Stage 1: 32x32 RGB pixel-space UNet (epsilon-prediction) with cross-attention at 16x16 and 8x8 (the
levels Prompt-to-Prompt and MasaCtrl act on), conditioned on a tiny CLIP text
encoder trained jointly. Stage 2: 32 -> 64 super-resolution UNet, IF-style: the
noisy 64x64 sample is concatenated with the bilinearly upsampled, noise-augmented
low-res image, and the augmentation level enters as a class embedding; it
predicts v (Salimans & Ho 2022), like SD's x4 upscaler.
"""

from __future__ import annotations

from diffusers import DDIMScheduler, LCMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel

from .tokenizers import clip_text_encoder

BASE_SIZE = 32
SR_SIZE = 64
TEXT_DIM = 64
SR_NOISE_LEVEL = 100  # augmentation level of the low-res condition at inference
# v-prediction for the SR stage: with eps-prediction its x0 error at low SNR is barely
# penalised, and it learned to trust x_t over its low-res condition (PSNR 11 dB from noise).
SR_PREDICTION = "v_prediction"
SR_TRAIN_MAX_NOISE_LEVEL = 300

# shapes-lcm (consistency-distilled base stage): width of the guidance embedding the UNet
# adds to its timestep embedding, and the guidance range it was distilled over.
LCM_W_EMBED_DIM = 64
LCM_GUIDANCE_RANGE = (1.0, 8.0)
LCM_SKELETON_STEPS = 50  # the teacher's DDIM solver skips k = 1000 / 50 = 20 timesteps
LCM_PREDICTION = "epsilon"  # as LCM Dreamshaper's
LCM_DEFAULT_GUIDANCE = 3.0  # inversion, source and target branch of shapes-lcm (w = 2)

# Every word of the training captions ("a red circle and a blue star on a white and black
# background"); tests/test_shapes_world.py checks it against the scene generator.
CAPTION_WORDS = frozenset("a and on background red green blue yellow orange purple white black circle square triangle star cross".split())

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="scaled_linear",  # SD 1.x's and LCM Dreamshaper's: a(999) = 4.7e-3
    beta_start=0.00085,
    beta_end=0.012,
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


def scheduler(spacing: str = "leading") -> DDIMScheduler:
    """DDIM on the training schedule (`shapes`, 20 steps per stage)."""
    return DDIMScheduler(**SCHEDULER_CONFIG, timestep_spacing=spacing)


def sr_lcm_scheduler() -> LCMScheduler:
    """shapes-lcm's SR stage: LCMScheduler's multistep sampling on the (undistilled) v-prediction
    SR UNet. Given its low-res condition the SR stage's x0 prediction is already sharp, so 4 such
    steps judge as 20 DDIM steps (shapes/evaluate.py's SR study), and their recorded noise makes the
    stage's inversion exact; 4 DDIM steps also generate well but invert at about 21 dB."""
    return LCMScheduler(**{**SCHEDULER_CONFIG, "prediction_type": SR_PREDICTION}, original_inference_steps=LCM_SKELETON_STEPS, timestep_scaling=10.0)


def lcm_scheduler() -> LCMScheduler:
    """shapes-lcm's sampler: LCMScheduler on the same training schedule, 50-step skeleton."""
    config = {**SCHEDULER_CONFIG, "prediction_type": LCM_PREDICTION}
    return LCMScheduler(**config, original_inference_steps=LCM_SKELETON_STEPS, timestep_scaling=10.0)


def text_encoder(tok) -> CLIPTextModel:
    return clip_text_encoder(tok, hidden=TEXT_DIM, intermediate=128, heads=4, layers=2)


def base_unet(time_cond_proj_dim: int | None = None) -> UNet2DConditionModel:
    """The base stage; `time_cond_proj_dim` adds LCM's guidance (w) embedding for `shapes-lcm`."""
    return UNet2DConditionModel(
        sample_size=BASE_SIZE,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=16,
        time_cond_proj_dim=time_cond_proj_dim,
    )


def sr_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=SR_SIZE,
        in_channels=6,
        out_channels=3,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D",) * 3,
        up_block_types=("UpBlock2D",) * 3,
        mid_block_type=None,
        cross_attention_dim=TEXT_DIM,
        class_embed_type="timestep",
        norm_num_groups=16,
    )

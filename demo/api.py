"""Named endpoints for gradio_client: /invert, /edit, /compare, /interpolate.

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    edited, reconstruction, metrics = client.predict(
        image=handle_file("assets/shapes/examples/scene0.png"),
        source_prompt="a red circle on a blue background", target_prompt="a green circle on a blue background",
        editor="p2p", api_name="/edit")

Every parameter has a name and a default (steps and guidance: the model's own);
inverter and editor parameters are JSON objects, e.g. '{"iterations": 4}'; `edit_region` (optional)
is a mask image of the input's size whose nonzero pixels mark where to edit.
Metrics use the same names on every endpoint (see demo/report.py).
"""

from __future__ import annotations

import json
import time

import gradio as gr

from editing import EDITORS
from inversion.errors import ParameterError
from inversion.inverters import INVERTERS

from .engine import EditRequest, Engine, InversionRequest
from .glue import NumberField, gpu, output_folder, png, png_once, session_of, uploaded_image, user_errors

MAX_PARAMS_TEXT = 10_000  # characters of a parameters object: a few dozen names and values


def _json_params(text) -> dict:
    if isinstance(text, dict):
        return text
    if isinstance(text, str) and len(text) > MAX_PARAMS_TEXT:
        raise ParameterError(f"parameters must be a small JSON object (at most {MAX_PARAMS_TEXT:,} characters), got {len(text):,}")
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError as e:
        raise ParameterError(f"parameters must be a JSON object, e.g. '{{\"iterations\": 4}}': {e.msg}") from None
    except RecursionError:
        raise ParameterError("parameters must be a flat JSON object of names and values; this one is nested too deeply") from None
    if not isinstance(value, dict):
        raise ParameterError("parameters must be a JSON object, e.g. '{\"iterations\": 4}'")
    return value


def add_endpoints(engine: Engine) -> None:
    """Hidden components and their events; call inside the page's gr.Blocks."""
    inverters, editors = ", ".join(INVERTERS), ", ".join(EDITORS)
    with gr.Row(visible=False):
        image = uploaded_image(label="image")
        source = gr.Textbox(label="source_prompt", info="describes the input image")
        target = gr.Textbox(label="target_prompt", info="describes the edit")
        inverter = gr.Textbox(value="", label="inverter", info=f"one of: {inverters}; empty: the model's default")
        editor = gr.Textbox(value="p2p", label="editor", info=f"one of: {editors}")
        steps = NumberField(value=None, label="steps", info="a whole number; empty: the model's default")
        seed = NumberField(value=0, precision=0, label="seed")
        guidance = NumberField(value=None, label="inversion_guidance", info="empty: the model's default")
        edit_guidance = NumberField(value=None, label="edit_guidance", info="empty: the model's default")
        inv_params = gr.Textbox(value="{}", label="inverter_params", info='JSON object, e.g. {"iterations": 4}')
        ed_params = gr.Textbox(value="{}", label="editor_params", info='JSON object, e.g. {"cross_replace": 0.6}')
        model = gr.Textbox(value="", label="model", info="empty: the app's model")
        region = uploaded_image(label="edit_region")  # optional mask of the input's size: nonzero pixels = edit here
        out_image = gr.Image(type="pil", format="png", label="image_out")
        out_recon = gr.Image(type="pil", format="png", label="reconstruction")
        out_json, out_gallery = gr.JSON(label="metrics"), gr.Gallery(format="png", label="reconstructions")
        image2 = uploaded_image(label="image2")  # /interpolate: the image to morph towards
        prompt2 = gr.Textbox(value="", label="prompt2", info="/interpolate: the second image's prompt; empty: source_prompt")
        frames = NumberField(value=8, precision=0, label="frames", info="/interpolate: 2 to 32, the ends included")
        b_invert, b_edit, b_compare = gr.Button(), gr.Button(), gr.Button()

    def inversion_request(image, source_prompt, inverter, steps, seed, inversion_guidance, inverter_params, model) -> InversionRequest:
        return InversionRequest(image, source_prompt or "", inverter or None, steps, seed, inversion_guidance, _json_params(inverter_params), model or None)

    @gpu("invert")
    @user_errors
    def invert(image, source_prompt="", inverter="", steps=None, seed=0, inversion_guidance=None, inverter_params="{}", model="", request: gr.Request = None):
        """Invert an image to noise with a chosen inverter; returns its reconstruction and the metrics (PSNR, SSIM, NFE, seconds).

        Args:
            image: the image to invert (an uploaded file or an http(s) URL).
            source_prompt: a caption of the image; it conditions the inversion.
            inverter: ddim, easyinv, rnri, renoise, fixed-point or iterinv; empty for the model's default.
            steps: sampling steps; empty for the model's default (4 on a consistency model).
            seed: seed of the noise a stochastic sampler draws.
            inversion_guidance: classifier-free guidance of the inversion; empty for the model's default.
            inverter_params: a JSON object of the inverter's parameters, e.g. {"iterations": 4}.
            model: the model; empty for the server's.
        """
        entry, record = engine.inversion_record(session_of(request), inversion_request(image, source_prompt, inverter, steps, seed, inversion_guidance, inverter_params, model))
        return png_once(entry.shown, entry.reconstruction, "reconstruction.png", at_least=1), record

    @gpu("edit")
    @user_errors
    def edit(image, source_prompt="", target_prompt="", inverter="", editor="p2p", steps=None, seed=0, inversion_guidance=None, edit_guidance=None,
             inverter_params="{}", editor_params="{}", model="", edit_region=None, request: gr.Request = None):
        """Invert an image (or reuse this session's inversion of it) and edit it to match a target prompt; yields the edit
        as soon as it is made, then the edit, the reconstruction and the metrics (what `predict` returns).

        Args:
            image: the image to edit (an uploaded file or an http(s) URL).
            source_prompt: a caption of the image.
            target_prompt: the same caption with the change, e.g. "a red circle" -> "a green circle".
            inverter: ddim, easyinv, rnri, renoise, fixed-point or iterinv; empty for the model's default.
            editor: p2p (Prompt-to-Prompt: change words, keep the layout), masactrl (change shape or pose, keep the look) or diffedit (a local change in an automatic mask).
            steps: sampling steps; empty for the model's default.
            seed: seed of the noise a stochastic sampler draws.
            inversion_guidance: guidance of the inversion and the source branch; empty for the model's default.
            edit_guidance: guidance of the edited branch; empty for the model's default.
            inverter_params: a JSON object of the inverter's parameters.
            editor_params: a JSON object of the editor's parameters, e.g. {"cross_replace": 0.6}.
            model: the model; empty for the server's.
            edit_region: an optional mask of the input's size whose nonzero pixels are where the edit may happen.
        """
        req = EditRequest(inversion_request(image, source_prompt, inverter, steps, seed, inversion_guidance, inverter_params, model), target_prompt or "",
                          editor, edit_guidance, _json_params(editor_params), region=edit_region)
        t0 = time.perf_counter()
        r = engine.edit(session_of(request), req)
        t1 = time.perf_counter()
        folder = output_folder()
        edited = png(r["edit"], "edit.png", 1, folder)
        t2 = time.perf_counter()
        yield edited, None, {"model": r["model"].name, "edit": {"editor": r["out"].editor, "nfe": r["out"].nfe, "seconds": round(r["out"].seconds, 4)}}
        t3 = time.perf_counter()
        r = engine.edit_record(r)  # then the reconstruction and every metric (a client's predict() returns this last output)
        t4 = time.perf_counter()
        recon = png_once(r["entry"].shown, r["reconstruction"], "reconstruction.png", folder, at_least=1)
        # where the server's time went (benchmarks/live_bench.py sets it against the client's): the edit's work
        # (inversion, editor, checks), the PNG files, the measuring after the edit was sent
        timing = {"work_s": round(t1 - t0, 4), "encode_s": round(t2 - t1 + time.perf_counter() - t4, 4), "measure_s": round(t4 - t3, 4)}
        yield edited, recon, {**r["metrics"], "server": timing}

    @gpu("compare")
    @user_errors
    def compare(image, source_prompt="", steps=None, seed=0, inversion_guidance=None, model="", request: gr.Request = None):
        """Invert one image with every inverter; returns their reconstructions and one row of metrics each (PSNR, the PSNR without
        the last recorded residual, NFE, seconds, how Gaussian the recovered noise is).

        Args:
            image: the image (an uploaded file or an http(s) URL).
            source_prompt: a caption of the image.
            steps: sampling steps; empty for the model's default.
            seed: seed of the noise a stochastic sampler draws.
            inversion_guidance: guidance of the inversions; empty for the model's default.
            model: the model; empty for the server's.
        """
        rows = engine.compare(session_of(request), inversion_request(image, source_prompt, "ddim", steps, seed, inversion_guidance, "{}", model))
        folder = output_folder()
        return [(png(r["reconstruction"], f"{r['inverter']}.png", 1, folder), r["inverter"]) for r in rows], [{k: v for k, v in r.items() if k not in ("reconstruction", "reconstruction_uncorrected", "residuals", "edits")} for r in rows]

    b_invert.click(invert, [image, source, inverter, steps, seed, guidance, inv_params, model], [out_recon, out_json], api_name="invert", concurrency_id="model")
    b_edit.click(edit, [image, source, target, inverter, editor, steps, seed, guidance, edit_guidance, inv_params, ed_params, model, region], [out_image, out_recon, out_json], api_name="edit", concurrency_id="model")
    b_compare.click(compare, [image, source, steps, seed, guidance, model], [out_gallery, out_json], api_name="compare", concurrency_id="model")
    _interpolate_endpoint(engine, [image, image2, source, prompt2, inverter, steps, seed, frames, model], out_gallery, out_json)


def _interpolate_endpoint(engine: Engine, inputs: list, out_gallery, out_json) -> None:
    """/interpolate: frames from the first image to the second, both inverted alike."""

    @gpu("interpolate")
    @user_errors
    def interpolate(image, image2=None, source_prompt="", prompt2="", inverter="", steps=None, seed=0, frames=8, model="", request: gr.Request = None):
        """Morph from one image to another: both are inverted alike and their noises mixed; returns the frames (the ends are
        the two reconstructions) and the metrics.

        Args:
            image: the first image (an uploaded file or an http(s) URL).
            image2: the last image.
            source_prompt: a caption of the first image.
            prompt2: a caption of the last image; empty for the first's.
            inverter: the inverter of both; empty for the model's default.
            steps: sampling steps; empty for the model's default.
            seed: seed of the noise a stochastic sampler draws.
            frames: frames, both ends included (2 to 32).
            model: the model; empty for the server's.
        """
        r = engine.interpolate(session_of(request), InversionRequest(image, source_prompt or "", inverter or None, steps, seed, None, {}, model or None), image2, prompt2, frames)
        folder = output_folder()
        return [(png(f[None], f"frame{i}.png", 1, folder), str(i)) for i, f in enumerate(r["frames"])], {**r["metrics"], "notes": r["notes"]}

    with gr.Row(visible=False):
        button = gr.Button()
    button.click(interpolate, inputs, [out_gallery, out_json], api_name="interpolate", concurrency_id="model")

"""The shapes world: scenes, captions, masks, the held-out split and the judge."""

import numpy as np
import torch
import torch.nn.functional as F

from shapes.judge import find_objects, has, mask_iou, nearest_colour
from shapes.scenes import COLOURS, SHAPES, Scene, Shape, is_held_out, render, scenes


def test_captions_describe_the_scene():
    s = Scene((Shape("circle", "red", 0.5, 0.5, 0.4), Shape("star", "green", 0.2, 0.2, 0.3)), ("blue", "white"))
    assert s.describe() == "a red circle and a green star on a blue and white background"


def test_masks_are_exact_and_respect_occlusion():
    s = Scene((Shape("square", "red", 0.5, 0.5, 0.5),), ("blue",))
    img, masks = render(s, 64)
    assert img.shape == (64, 64, 3) and masks.shape == (1, 64, 64)
    assert (img[masks[0]] == COLOURS["red"]).all(axis=1).mean() > 0.9
    assert (img[~masks[0]] == COLOURS["blue"]).all(axis=1).mean() > 0.95
    front = Scene((Shape("square", "red", 0.5, 0.5, 0.5), Shape("circle", "green", 0.5, 0.5, 0.3)), ("blue",))
    _, m = render(front, 64)
    assert not (m[0] & m[1]).any()


def test_scene_streams_are_seeded_and_split():
    a, b = scenes(3, 20), scenes(3, 20)
    assert [s.caption for s in a] == [s.caption for s in b]
    held = scenes(4, 30, held_out=True)
    train = scenes(4, 30, held_out=False)
    assert all(is_held_out(s) for s in held) and not any(is_held_out(s) for s in train)
    for s in scenes(5, 200):
        assert all(sh.colour not in s.background for sh in s.shapes)


def test_judge_names_colour_and_shape_of_ground_truth_scenes():
    hits = total = 0
    for s in scenes(99, 150):
        img, masks = render(s, 64)
        objs, bg = find_objects(img)
        assert bg == s.background
        for sh, m in zip(s.shapes, masks):
            total += 1
            match = [o for o in objs if mask_iou(o.mask, m) > 0.5]
            hits += bool(match) and match[0].colour == sh.colour and match[0].shape == sh.kind
    assert hits / total >= 0.98


def test_judge_at_the_base_resolution():
    hits = total = 0
    for s in scenes(7, 100, single_shape=True):
        img, _ = render(s, 64)
        small = F.avg_pool2d(torch.from_numpy(img).permute(2, 0, 1).float()[None], 2)[0].permute(1, 2, 0).round().byte().numpy()
        total += 1
        hits += has(small, s.shapes[0].colour, s.shapes[0].kind)
    assert hits / total >= 0.9


def test_judge_finds_nothing_on_a_plain_background():
    img = np.full((64, 64, 3), COLOURS["purple"], np.uint8)
    objs, bg = find_objects(img)
    assert objs == [] and bg == ("purple",)
    assert nearest_colour((250, 250, 250)) == "white" and set(SHAPES) >= {"circle", "square"}


def test_evaluation_merge_replaces_only_the_remeasured_inverters():
    from shapes.evaluate import merge_rows

    old = {"generation": {"5.0": 0.9}, "inversion": [{"inverter": "ddim", "psnr": 1}, {"inverter": "rnri", "psnr": 2}],
           "editing": [{"inverter": "rnri", "editor": "p2p"}, {"inverter": "iterinv", "editor": "p2p"}]}
    new = {"seconds": 3, "inversion": [{"inverter": "rnri", "psnr": 9}], "editing": [{"inverter": "rnri", "editor": "p2p", "success": 1}]}
    merged = merge_rows(old, new, ["rnri"])
    assert merged["generation"] == old["generation"] and merged["seconds"] == 3
    assert merged["inversion"] == [{"inverter": "ddim", "psnr": 1}, {"inverter": "rnri", "psnr": 9}]
    assert merged["editing"] == [{"inverter": "rnri", "editor": "p2p", "success": 1}, {"inverter": "iterinv", "editor": "p2p"}]

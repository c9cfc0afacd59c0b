"""Semantic end-to-end checks on a small CNN trained in the session on images of known structure.

Each test states its threshold and the spread of its statistic over training seeds and CPU kernels
(``python benchmarks/spread.py``).
"""

from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

import kernelviz
from kernelviz.units.examples import find_examples

from .conftest import TEST_SEED
from .toy import CLASSES, ORIENTATIONS, make_data


def dominant_orientation(images: torch.Tensor, band: tuple[float, float] = (3.5, 12.0)) -> float:
    """Direction, in degrees in [0, 180), of the intensity change carrying most spectral power.

    ``images``: ``(3, H, W)`` or ``(N, 3, H, W)`` (their power spectra are summed). The
    power-weighted mean of the doubled angle of the frequencies in ``band`` (cycles per 32 px: the
    gratings' periods of 3.5-6 px lie at 5.3-9.1), so a grating whose intensity changes along x
    gives 0 and one changing along y gives 90; slow color blobs do not count.
    """
    images = images if images.dim() == 4 else images[None]
    gray = images.mean(1)  # (N, H, W)
    gray = gray - gray.mean((1, 2), keepdim=True)
    power = torch.fft.fftshift(torch.fft.fft2(gray).abs() ** 2, dim=(1, 2)).sum(0)
    h, w = gray.shape[1:]
    fy = torch.arange(h) - h // 2
    fx = torch.arange(w) - w // 2
    yy, xx = torch.meshgrid(fy.float(), fx.float(), indexing="ij")
    angle = torch.atan2(yy, xx)
    radius = torch.sqrt(xx**2 + yy**2) * 32 / max(h, w)
    power = power * ((radius >= band[0]) & (radius <= band[1]))
    c, s = float((power * torch.cos(2 * angle)).sum()), float((power * torch.sin(2 * angle)).sum())
    return math.degrees(0.5 * math.atan2(s, c)) % 180


def angle_error(a: float, b: float) -> float:
    d = abs(a - b) % 180
    return min(d, 180 - d)


def test_orientation_measure_on_gratings():
    from .toy import grating_patch

    g = torch.Generator().manual_seed(0)
    for cls, expected in ORIENTATIONS.items():
        patch = grating_patch(cls, g, size=32).expand(3, -1, -1)
        assert angle_error(dominant_orientation(patch), expected) < 5


def orientation_power(images: torch.Tensor, band: tuple[float, float] = (3.5, 12.0)) -> dict[int, float]:
    """Spectral power of ``(N, 3, H, W)`` images (summed) in ``band`` within 22.5 degrees of each grating class's
    direction: ``{class: power}``."""
    gray = images.mean(1)  # (N, H, W)
    gray = gray - gray.mean((1, 2), keepdim=True)
    power = torch.fft.fftshift(torch.fft.fft2(gray).abs() ** 2, dim=(1, 2)).sum(0)
    h, w = gray.shape[1:]
    yy, xx = torch.meshgrid((torch.arange(h) - h // 2).float(), (torch.arange(w) - w // 2).float(), indexing="ij")
    angle = torch.rad2deg(torch.atan2(yy, xx)) % 180
    radius = torch.sqrt(xx**2 + yy**2) * 32 / max(h, w)
    power = power * ((radius >= band[0]) & (radius <= band[1]))
    out = {}
    for cls, direction in ORIENTATIONS.items():
        off = (angle - direction).abs() % 180
        out[cls] = float(power[torch.minimum(off, 180 - off) < 22.5].sum())
    return out


@pytest.mark.calibrated
def test_class_visualizations_show_their_orientation(toy_model, measured):
    """Class images of the four grating classes: the class's own orientation carries the most power.

    Six images per class (six starts; spectra summed), 128 steps, ``detail=1`` (a 32-px image: at the default
    detail the Fourier image is 18 px, too coarse for the gratings' 3.5-6 px periods on a diagonal, as the
    README says for tiny images). Statistic: per class, the power within 22.5 degrees of its own direction
    over the most any other class's direction holds. A class logit can also rise on features of other
    directions, and how much it does depends on the training run, so the thresholds are: above 1 (nearer its
    own class than any other) for at least three of the four classes, above 0.5 for every class. Spread (seeds
    0-4 x native AVX-512, AVX2-only, one thread): every class 0.68-16.9, the weakest 0.68-4.8; one class below 1 in
    two of 15 runs (seed 3: 0.71 native, 0.68 AVX2).
    """
    model, accuracy = toy_model
    assert measured("accuracy", accuracy) >= 0.97  # 1.00 on 210 held-out images in every run (seeds x kernels)
    classes = [c for c in range(4) for _ in range(6)]
    result = kernelviz.visualize(
        model, kernelviz.class_logit(classes), steps=128, detail=1.0, image_seeds=range(TEST_SEED, TEST_SEED + 24)
    )
    ratios, errors = {}, {}
    for cls in range(4):
        images = result.images[6 * cls : 6 * cls + 6]
        power = orientation_power(images)
        ratios[CLASSES[cls]] = power[cls] / max(v for c, v in power.items() if c != cls)
        errors[CLASSES[cls]] = angle_error(dominant_orientation(images), ORIENTATIONS[cls])
    measured("worst class's mean-direction error (degrees)", max(errors.values()))
    measured("own-direction power ratio of every class", list(ratios.values()))
    assert measured("weakest class's own-direction power ratio", min(ratios.values())) > 0.5, (ratios, errors)
    assert sum(r > 1 for r in ratios.values()) >= 3, (ratios, errors)


@pytest.mark.calibrated
@pytest.mark.parametrize("param", ["pixel", "fourier"])
def test_first_layer_pictures_are_the_sign_pattern_of_the_weights(toy_model, param, measured):
    """The image patch a first-layer unit sees, after maximizing it, is the pattern of its kernel.

    Unit: the center position of each conv1_1 filter, a linear function of its 5x5x3 patch (conv1_1 is
    before the ReLU), so the known answer is the box optimum: 1 where the weight is positive, 0 where it is
    negative. Statistic: the unit's gain over the patch as a share of the optimum's,
    ``(w·x - min) / (max - min)``; a weight near zero barely matters, so a nearly flat kernel does not make the
    test fragile (its correlation with the weights was: 0.66-0.80 at the exact optimum). Threshold: every
    filter at or above 0.99 (pixel) and 0.85 (fourier). Spread (seeds 0-4 x kernels): pixel 1.000 (the
    optimum exactly), fourier 0.911-0.949 (its sigmoid approaches 0 and 1 slowly). ``detail=1``: every pixel
    free (a 5x5 kernel's pattern is finer than the default detail's 18-px image can form).
    """
    model, _ = toy_model
    conv = model.features[0]  # 5x5, padding 2
    filters = list(range(conv.out_channels))
    result = kernelviz.visualize(
        model,
        kernelviz.neuron("conv1_1", filters),
        steps=80,
        param=param,
        transforms=None,
        detail=1.0,
        seed=TEST_SEED,
    )
    c = 32 // 2  # the center unit of a 32x32 map sees pixels 14..18
    gains = []
    for i, n in enumerate(filters):
        patch = result.images[i, :, c - 2 : c + 3, c - 2 : c + 3]  # (3, 5, 5)
        weights = conv.weight[n].detach()
        best, worst = float(weights.clamp(min=0).sum()), float(weights.clamp(max=0).sum())
        gains.append((float((weights * patch).sum()) - worst) / (best - worst))
    threshold = 0.99 if param == "pixel" else 0.85
    assert measured("worst filter's share of the optimum", min(gains)) >= threshold, gains


def selective_units(model, per_class: int = 3, least: float = 4.0) -> list[tuple[int, int, float]]:
    """``(class, unit, d')``: for each grating class, up to ``per_class`` relu3_1 units whose peak activation on
    generated training images tells that class from the others with a sensitivity index d' of at least
    ``least`` (the difference of the means over their pooled standard deviation)."""
    train = make_data(40, seed=0)
    peak = kernelviz.activations(model, train.images, "relu3_1")["relu3_1"].amax((2, 3))  # (N, 48)
    found = []
    for cls in range(4):
        inside, rest = peak[train.labels == cls], peak[train.labels != cls]
        d = (inside.mean(0) - rest.mean(0)) / ((inside.var(0) + rest.var(0)) / 2).sqrt().clamp(min=1e-6)
        found += [(cls, unit, float(d[unit])) for unit in d.argsort(descending=True)[:per_class].tolist()]
    return [(cls, unit, d) for cls, unit, d in found if d >= least]


@pytest.mark.calibrated
def test_dataset_examples_come_from_the_class_a_unit_serves(toy_model, tmp_path, measured):
    """Each relu3_1 unit selective for a grating class (d' >= 4 on training images; up to three per class): its
    top-9 held-out images (written to disk, scanned as a folder) are of that class.

    Which units are selective depends on the training run (the AVX-512 and AVX2 runs of seed 0 differ), so the
    test takes every unit that is, not the single most selective one per class: that one can be a weak unit
    (d' 2.3-2.7, its top 9 holding 3-4 of its class; at d' 3-4, 7-9). Thresholds: at least 7 of 9 for every
    selective unit; at least five such units over at least three classes. Spread (seeds 0-4 x native AVX-512,
    AVX2-only): 9 of 9 for every selective unit in every run; 7-11 selective units. (The shape classes have no
    such unit: this network tells squares and plus signs apart by combinations of units, so they are not
    tested.)
    """
    model, _ = toy_model
    units = selective_units(model)
    held_out = make_data(12, seed=777)
    for i, (img, label) in enumerate(zip(held_out.images, held_out.labels, strict=True)):
        arr = (img.permute(1, 2, 0) * 255).round().byte().numpy()
        Image.fromarray(arr).save(tmp_path / f"{i:03d}_{int(label)}.png")
    scan = find_examples(model, "relu3_1", sorted({u for _, u, _ in units}), tmp_path, k=9)
    found = {}
    for cls, unit, _ in units:
        labels = [int(e.path.stem.split("_")[1]) for e in scan.examples[unit]]
        found[(CLASSES[cls], unit)] = sum(label == cls for label in labels)
    measured("selective units", len(units))
    assert len(units) >= 5 and len({cls for cls, _, _ in units}) >= 3, units
    assert measured("fewest of its class in a top 9", min(found.values())) >= 7, found


@pytest.mark.calibrated
def test_unit_pictures_paint_the_orientation_their_unit_selects(toy_model, measured):
    """The feature visualization of each unit selective for a grating class (as above) paints that class's
    orientation: within 22.5 degrees of the class's direction lies more spectral power than within 22.5 degrees
    of any other class's direction.

    Three starts per unit, 128 steps, ``detail=1`` (32-px images). Statistic: the ratio of the own direction's
    power to the strongest other's. Thresholds: above 1 for at least 80% of the units, above 0.5 for every one,
    above 1.5 for their median. Spread (seeds 0-4 x native AVX-512, AVX2-only): every unit 1.17-17.4 (all above 1
    in every run), the median 2.39-4.49.
    """
    model, _ = toy_model
    units = selective_units(model)
    starts = 3
    chosen = [unit for _, unit, _ in units for _ in range(starts)]
    result = kernelviz.visualize(
        model,
        kernelviz.channel("relu3_1", chosen),
        steps=128,
        detail=1.0,
        image_seeds=range(TEST_SEED, TEST_SEED + len(chosen)),
    )
    ratios = []
    for i, (cls, _, _) in enumerate(units):
        power = orientation_power(result.images[starts * i : starts * i + starts])
        ratios.append(power[cls] / max(v for c, v in power.items() if c != cls))
    measured("own-direction power ratio of every unit", ratios)
    assert measured("weakest unit's ratio", min(ratios)) > 0.5, list(zip(units, ratios, strict=True))
    assert measured("share of units above 1", sum(r > 1 for r in ratios) / len(ratios)) >= 0.8, ratios
    assert measured("median unit's ratio", sorted(ratios)[len(ratios) // 2]) > 1.5, ratios

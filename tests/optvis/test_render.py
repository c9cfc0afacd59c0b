"""The optimizer against known answers: the article's Sobel example, a linear unit's optimum."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import kernelviz
from kernelviz.core.progress import Progress
from kernelviz.errors import KernelvizError
from kernelviz.optvis.objectives import channel
from kernelviz.optvis.params import fourier_image

from ..conftest import TEST_SEED
from ..nets import sobel_net


def gradient_energy(img: torch.Tensor) -> tuple[float, float]:
    """Mean |change along x| and |change along y| of the gray image of (3, H, W)."""
    gray = img.mean(0)
    return float((gray[:, 1:] - gray[:, :-1]).abs().mean()), float((gray[1:] - gray[:-1]).abs().mean())


@pytest.mark.calibrated
def test_sobel_filter_picture_is_vertical_edges(measured):
    """The article's example: the rectified vertical-Sobel response is maximized by vertical edges."""
    result = kernelviz.visualize(
        sobel_net(), "1:0", steps=150, size=32, param="pixel", transforms=None, lr=0.05, seed=1 + TEST_SEED
    )
    along_x, along_y = gradient_energy(result.images[0])
    measured("change along x", along_x)
    measured("change along x / along y", along_x / along_y)
    # Measured (seed 1): along_x 0.50 (stripes of 0 and 1), along_y 0.086 (a few wiggling stripe
    # borders, local optima of a piecewise-linear objective): 5.8 times more change along x. Spread (seeds 1-5
    # x native AVX-512, AVX2-only, one thread): along_x 0.48-0.50, along_x / along_y 4.2-5.9.
    assert along_x > 0.3
    assert along_x > 4 * along_y
    assert not result.dead[0]


def test_linear_unit_optimum_is_sign_pattern_of_weights():
    """Over the [0, 1] pixel box, w·x + b is maximized by x = 1 where w > 0 and 0 where w < 0."""
    torch.manual_seed(3)
    conv = nn.Conv2d(3, 1, 16)  # one output position that sees the whole 16x16 image
    result = kernelviz.visualize(conv, "logits:0", steps=60, size=16, param="pixel", transforms=None)
    expected = (conv.weight[0] > 0).float()
    assert torch.equal(result.images[0], expected)
    torch.testing.assert_close(result.final[0], conv.weight.clamp(min=0).sum() + conv.bias[0])


def test_negative_picture_of_a_linear_unit_is_its_inverted_sign_pattern(tmp_path):
    """--negative minimizes: over the [0, 1] pixel box, w·x + b is smallest at x = 1 where w < 0 and 0 where w > 0;
    the record says it is negative and gives the activation reached (sum of the negative weights + b)."""
    import json

    from kernelviz.jobs.optimize import synthesize_filters

    torch.manual_seed(4)
    net = kernelviz.set_model_meta(nn.Sequential(nn.Conv2d(3, 2, 16)), name="linear", input_size=16)
    settings = kernelviz.DEFAULTS.with_(steps=60, size=16, param="pixel", transforms=None)
    report = synthesize_filters(net, "0", [0, 1], settings, output=tmp_path, negative=True)
    weight, bias = net[0].weight.detach(), net[0].bias.detach()
    for n, path in zip((0, 1), report.paths, strict=True):
        assert path.name == f"linear_0_{n:04d}_negative.png"
        assert torch.equal(report.grid.images[n], (weight[n] < 0).float())
        record = json.loads(path.with_suffix(".json").read_text())
        assert record["negative"] is True and record["objective"] == f"-channel(0:{n})"
        expected = float(weight[n].clamp(max=0).sum() + bias[n])
        assert record["final_value"] == pytest.approx(expected, abs=1e-4) and record["curve"][-1] < 0
    positive = kernelviz.layer_grid(net, "0", [0], settings)
    assert torch.equal(positive.images[0], (weight[0] > 0).float())  # the other way round


@pytest.mark.calibrated
@pytest.mark.parametrize(("pattern", "detail", "low", "high"), [
    ("checkerboard", 1.0, 0.25, 1.0),  # every pixel free: the one-pixel pattern forms
    ("checkerboard", 0.5, 0.0, 0.05),  # built at 16 px, upsampled: it cannot
    ("halves", 0.5, 0.5, 1.0),  # a coarse pattern still forms at half resolution
])  # fmt: skip
def test_detail_bounds_the_finest_pattern_that_can_form(pattern, detail, low, high, measured):
    """A linear unit over a 32-px image gains at most sum|w| / 2 over gray (the sign pattern of its weights);
    a Fourier image of ``detail`` 0.5 reaches that for a pattern of halves, not for a one-pixel checkerboard.

    Measured (120 steps; the 1/f spectrum makes one-pixel patterns slow to form): checkerboard 0.33 at
    detail 1 (0.53 after 300 steps), 0.001 at 0.5; halves 0.67 at 0.5 (0.69 at detail 1). Spread (seeds 0-4 x
    native AVX-512, AVX2-only, one thread): checkerboard 0.376-0.385 at detail 1, 0.00097 at 0.5; halves 0.75-0.79.
    """
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    sign = {"checkerboard": (yy + xx) % 2 == 0, "halves": xx < 16}[pattern].float() * 2 - 1
    conv = nn.Conv2d(3, 1, 32, bias=False)
    with torch.no_grad():
        conv.weight.copy_(sign.expand(1, 3, 32, 32))
    result = kernelviz.visualize(conv, "logits:0", steps=120, size=32, detail=detail, transforms=None, seed=TEST_SEED)
    gain = measured("gain", float(result.final[0]) / float(conv.weight.detach().abs().sum() / 2))  # gray scores 0
    assert low <= gain <= high, gain
    assert result.images.shape == (1, 3, 32, 32) and result.settings["detail"] == detail


def test_objective_increases_and_history_is_recorded(vgg16):
    result = kernelviz.visualize(vgg16, "conv3_2:17", steps=12, size=32)
    assert result.history.shape == (12, 1)
    assert result.history[-4:].mean() > result.history[:4].mean()
    assert result.images.shape == (1, 3, 32, 32)
    assert result.images.min() >= 0 and result.images.max() <= 1


def test_same_seed_same_image(vgg16):
    a = kernelviz.visualize(vgg16, "conv2_1:3", steps=5, size=32, seed=7)
    b = kernelviz.visualize(vgg16, "conv2_1:3", steps=5, size=32, seed=7)
    c = kernelviz.visualize(vgg16, "conv2_1:3", steps=5, size=32, seed=8)
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


def test_batch_of_filters_equals_separate_runs(vgg16):
    # channels_last=False: oneDNN may pick another algorithm for another batch size (not a bug)
    kwargs = dict(steps=6, size=32, transforms=None, param="pixel", channels_last=False)
    batch = kernelviz.visualize(vgg16, channel("conv3_2", [4, 9]), **kwargs)
    assert batch.settings["computed"] == "one channel of the target layer"
    for i, n in enumerate((4, 9)):
        one = kernelviz.visualize(vgg16, channel("conv3_2", n), init=batch_start(i, kwargs), **kwargs)
        torch.testing.assert_close(batch.images[i], one.images[0], atol=1e-5, rtol=1e-4)


def batch_start(i: int, kwargs: dict) -> torch.Tensor:
    """The start image of image ``i`` of a 2-image pixel batch with seed 0 (same draw as the optimizer)."""
    g = torch.Generator().manual_seed(0)
    return (0.4 + 0.2 * torch.rand(2, 3, 32, 32, generator=g))[i]


def test_fast_path_equals_full_computation(vgg16):
    """Computing only the target channel gives the same optimization as computing the whole layer."""
    kwargs = dict(steps=5, size=32, seed=2)
    fast = kernelviz.visualize(vgg16, channel("relu3_2", 17), **kwargs)
    full = kernelviz.visualize(
        vgg16, channel("relu3_2", 17) + 0.0 * kernelviz.direction("relu3_2", torch.ones(256)), **kwargs
    )
    assert fast.settings["computed"] != full.settings["computed"]
    torch.testing.assert_close(fast.history, full.history, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(fast.images, full.images, rtol=1e-3, atol=1e-4)


def test_dead_unit_gets_going_with_redirected_gradient():
    """A post-ReLU unit that is negative everywhere at the start still learns to fire."""
    conv = nn.Conv2d(3, 1, 3)
    with torch.no_grad():
        conv.weight.fill_(0.1)
        conv.bias.fill_(-1.0)
    net = nn.Sequential(conv, nn.ReLU())
    dark = torch.full((3, 16, 16), 0.2)  # 27 * 0.1 * 0.2 - 1 = -0.46: never fires
    dead = kernelviz.visualize(
        net, "1:0", steps=30, size=16, param="pixel", transforms=None, init=dark, redirect_steps=0
    )
    assert dead.dead[0] and dead.final[0] == 0
    alive = kernelviz.visualize(net, "1:0", steps=30, size=16, param="pixel", transforms=None, init=dark)
    assert not alive.dead[0] and alive.final[0] > 1.0


def test_start_from_image_and_fourier_inversion():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 24, 24, generator=g) * 0.9 + 0.05
    param = fourier_image(1, (24, 24), generator=g, device=torch.device("cpu"), init=img)
    torch.testing.assert_close(param.render().detach(), img, atol=1e-4, rtol=1e-4)
    result = kernelviz.visualize(sobel_net(), "1:0", steps=0, init=img[0], transforms=None)
    torch.testing.assert_close(result.images, img, atol=1e-4, rtol=1e-4)


def test_nan_is_reported_not_drawn():
    net = nn.Sequential(nn.Conv2d(3, 2, 3))
    with torch.no_grad():
        net[0].weight.fill_(float("nan"))
    with pytest.raises(kernelviz.NonFiniteObjectiveError, match="NaN"):
        kernelviz.visualize(net, "0:1", steps=16, size=8)


def test_interrupt_returns_partial_result(vgg16):
    def stop(p: Progress) -> None:
        raise KeyboardInterrupt

    result = kernelviz.visualize(vgg16, "conv2_2:0", steps=100, size=32, progress=stop)
    assert result.interrupted and result.steps_done == 16
    assert result.images.shape == (1, 3, 32, 32)


def test_bad_settings_are_clear_errors(vgg16):
    with pytest.raises(KernelvizError, match="out of range"):
        kernelviz.visualize(vgg16, "conv3_2:256", steps=1, size=32)
    with pytest.raises(KernelvizError, match="out of range"):
        kernelviz.visualize(vgg16, kernelviz.channel("fc8", 5000), steps=1, size=32)
    with pytest.raises(KernelvizError, match="unknown layer"):
        kernelviz.visualize(vgg16, "conv9_9:1", steps=1, size=32)
    with pytest.raises(KernelvizError, match="parameterization"):
        kernelviz.visualize(vgg16, "conv1_1:1", steps=1, size=32, param="wavelet")
    with pytest.raises(KernelvizError, match=">= 0"):
        kernelviz.channel("conv1_1", -1)


def test_save_writes_png_and_sidecar(vgg16, tmp_path):
    import json

    from PIL import Image

    result = kernelviz.visualize(vgg16, "conv1_1:2", steps=3, size=32)
    path = result.save(tmp_path / "a.png", layer="conv1_1", filter=2)
    assert Image.open(path).size == (32, 32)
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["filter"] == 2 and record["settings"]["steps"] == 3
    assert len(record["curve"]) == 3 and "torch" in record["versions"]
    assert {p.name for p in tmp_path.iterdir()} == {"a.png", "a.json"}


@pytest.mark.calibrated
def test_speed_paths_reach_the_same_objective(vgg16, measured):
    """The fast path (one channel, channels-last, truncated forward) climbs as far as the plain one,
    within the noise between seeds.

    Measured at 48 px, 48 steps (standard transforms ending at the size), seeds 3-12: mean final value
    0.0222 (fast) vs 0.0220 (plain), paired difference 0.0002 +- 0.0032; seeds 3-8: 0.0214 vs 0.0226,
    plain's seed-to-seed deviation 0.0019 (three seeds were too few to estimate it); both climb from -0.09.
    Spread (seed sets 3-8 to 7-12 x native AVX-512, AVX2-only, one thread): mean difference 0.04-0.48 of
    plain's deviation (threshold 1), the lowest fast final 0.081-0.085.
    """
    fast, plain = [], []
    for seed in range(3 + TEST_SEED, 9 + TEST_SEED):
        kwargs = dict(steps=48, size=48, seed=seed)
        f = kernelviz.visualize(vgg16, "conv3_2:5", **kwargs)
        p = kernelviz.visualize(
            vgg16,
            channel("conv3_2", 5) + 0.0 * kernelviz.direction("conv3_2", torch.ones(256)),  # no slicing
            channels_last=False,
            **kwargs,
        )
        assert f.settings["channels_last"] and f.settings["computed"] == "one channel of the target layer"
        assert not p.settings["channels_last"] and p.settings["computed"] == "full layers"
        fast.append(float(f.final))
        plain.append(float(p.final))
    noise = torch.tensor(plain).std()
    assert measured("mean difference / plain's spread", abs(sum(fast) - sum(plain)) / len(fast) / noise) < 1
    assert measured("lowest fast final", min(fast)) > -0.05  # both climbed from about -0.09


def test_maco_keeps_its_magnitude_and_climbs(vgg16, tmp_path):
    """MACO optimizes only the phase: the spectrum's magnitude stays the natural one it was given."""
    from kernelviz.optvis.params import maco_image, natural_magnitude

    g = torch.Generator().manual_seed(0)
    mag = natural_magnitude((32, 32))
    assert mag.shape == (32, 17) and mag[0, 0] == 0 and abs(float(mag.mean()) - 1) < 1e-5
    assert mag[0, 1] > mag[0, 8] > mag[0, 16]  # 1/f: low frequencies carry more amplitude
    image = maco_image(2, (32, 32), generator=g, device=torch.device("cpu"), magnitude=mag)
    rendered = image.render()
    assert rendered.shape == (2, 3, 32, 32) and rendered.min() > 0 and rendered.max() < 1
    result = kernelviz.visualize(vgg16, "conv2_1:3", steps=12, size=32, param="maco")
    assert result.settings["param"] == "maco" and result.history[-1] > result.history[0]
    # The optimized image's spectrum, measured: undo the sigmoid and the color mixing, and each
    # channel's amplitude is the natural magnitude up to one scale (the standardization), after 12 steps
    # of changing the phase. Columns 0 and W/2 are left out: irfft2 makes them Hermitian.
    from kernelviz.optvis.params import _COLOR

    logit = torch.log(result.images / (1 - result.images))  # (1, 3, H, W)
    z = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_COLOR), logit)
    amplitude = torch.fft.rfft2(z, norm="ortho").abs()[0, :, :, 1:-1]  # (3, H, W/2 - 1)
    ratio = amplitude / mag[:, 1:-1]
    spread = ratio.std((1, 2)) / ratio.mean((1, 2))  # per channel: 0 = exactly the given magnitude
    assert float(spread.max()) < 1e-3, spread
    pixel = kernelviz.visualize(vgg16, "conv2_1:3", steps=12, size=32, param="pixel")
    free = torch.fft.rfft2(pixel.images[0] - 0.5, norm="ortho").abs()[:, :, 1:-1] / mag[:, 1:-1]
    assert float((free.std((1, 2)) / free.mean((1, 2))).min()) > 0.1  # a free image has no such spectrum
    photos = tmp_path / "photos"
    photos.mkdir()
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype("uint8")).save(photos / "a.png")
    (photos / "b.png").write_text("unreadable")  # skipped
    measured = natural_magnitude((32, 32), images=photos)
    assert measured.shape == (32, 17) and torch.isfinite(measured).all()


def test_works_under_inference_mode_and_refuses_bad_batches(sobel):
    with torch.inference_mode():
        result = kernelviz.visualize(sobel, "1:0", steps=3, size=16)
    assert result.steps_done == 3 and torch.isfinite(result.final).all()
    with pytest.raises(KernelvizError, match="batch must be >= 1"):
        kernelviz.visualize(sobel, "1:0", steps=1, size=16, batch=0)


def test_a_layer_that_ignores_the_image_is_named():
    class Constant(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)
            self.bias = nn.Parameter(torch.ones(1, 2, 1, 1))
            self.const = nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x) + self.const(self.bias)

    with pytest.raises(KernelvizError, match=r"channel\(const:0\) does not depend on the image"):
        kernelviz.visualize(Constant(), "const:0", steps=2, size=16)


def test_the_record_keeps_its_keys(tiny):
    """What a filter picture's JSON holds is what users' scripts and atlases read: its keys, in order, stay."""
    result = kernelviz.visualize(tiny, "conv1_1:0", steps=2)
    record = result.record(0, kernelviz.model_meta(tiny), layer="conv1_1", filter=0)
    assert list(record) == [
        "model", "weights", "objective", "settings", "final_value", "curve", "dead_unit", "interrupted", "steps_done",
        "wall_seconds", "layer", "filter", "versions",
    ]  # fmt: skip
    assert list(record["settings"]) == [
        "steps", "size", "lr", "param", "decay", "detail", "transforms", "seed", "batch", "precision", "device",
        "normalization", "redirect_steps", "init", "computed", "channels_last", "image_seed",
    ]  # fmt: skip
    assert set(kernelviz.DEFAULTS.to_json()) - {"batch_size"} <= set(record["settings"])  # every setting is recorded


def test_direction_per_image_and_its_cosine_power():
    """Rows of a (B, C) direction go to the images in order; dot x cos^p weighs each position by its cosine."""
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])[:, :, None, None].repeat(1, 1, 2, 2)  # (2, 2, 2, 2)
    rows = kernelviz.direction("x", torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    assert torch.allclose(rows({"x": a}), torch.tensor([3.0, 0.0]))
    cos = kernelviz.direction("x", [1.0, 0.0], cosine_power=2)
    assert torch.allclose(cos({"x": a}), torch.tensor([3.0 * 0.6**2, 1.0]))
    with pytest.raises(KernelvizError, match="2 directions for a batch of 3"):
        rows({"x": a[[0, 1, 1]]})

"""A layer's concepts: planted directions found again, the fit scikit-learn's, codes that are the least-squares
codes, importance that is each concept's exact part of a linear head's logit, patches that are the strongest codes,
and the CLI's folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.optimize import linear_sum_assignment, nnls
from torch import nn

import kernelviz
from kernelviz.core.progress import Progress
from kernelviz.errors import KernelvizError, NotFoundError
from kernelviz.units.concepts import concept_codes, find_concepts, fit_concepts, sample_activations

from ..conftest import assert_unchanged, snapshot
from ..nets import PLANTED, PLANTED_HEAD, planted_net

QUADRANTS = [(0, 0), (0, 16), (16, 0), (16, 16)]


def planted_images(root: Path, count: int, classes: int = 0, seed: int = 0) -> list[Path]:
    """``count`` 32 x 32 images whose quadrants each hold one planted concept (a pixel channel) at an intensity of
    0.3 to 1, in ``classes`` subfolders when given (class ``c`` favors concept ``c``)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        pixels = np.zeros((32, 32, 3), dtype=np.uint8)
        for q, (r, c) in enumerate(QUADRANTS):
            k = (i % classes) if classes and q == 0 else int(rng.integers(0, 3))
            pixels[r : r + 16, c : c + 16, k] = int(255 * (0.3 + 0.7 * rng.random()))
        folder = root / f"class{i % classes}" if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img{i:03d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return sorted(paths)


def matched(found: torch.Tensor, planted: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """The planted direction each found one matches best (one to one), and their cosines."""
    cos = torch.nn.functional.normalize(found, dim=1) @ torch.nn.functional.normalize(planted, dim=1).T
    rows, cols = linear_sum_assignment(-cos.numpy())
    order = [int(c) for _, c in sorted(zip(rows, cols, strict=True))]
    return order, cos[torch.arange(len(order)), order]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("planted")
    planted_images(root, 40)
    return root


@pytest.fixture(scope="module")
def found(folder: Path) -> kernelviz.Concepts:
    return find_concepts(planted_net(), "act", folder, k=3, workers=0, target=0)


def test_planted_directions_are_found(found: kernelviz.Concepts, measured) -> None:
    """Known answer: activations that are non-negative combinations of 3 planted directions give them back.

    Measured: cosines 0.998, 1.000, 1.000 (native AVX-512, AVX2-only and one thread alike: the fit is
    scikit-learn's coordinate descent on the same matrix)."""
    _, cos = matched(found.directions, PLANTED)
    assert measured("lowest cosine to its planted direction", float(cos.min())) >= 0.95
    assert found.directions.min() >= 0 and torch.allclose(found.directions.norm(dim=1), torch.ones(3))
    assert abs(float(found.share.sum()) - 1) < 1e-9 and found.error < 0.05
    assert found.per_image == 410 and found.samples == 40 * 410  # ceil(16384 / 40) of each image's 1024 positions


def test_codes_locate_the_planted_regions(found: kernelviz.Concepts, tmp_path: Path) -> None:
    """In a new image, each quadrant's strongest concept is the one matching the quadrant's planted concept, and
    its code is the planted intensity times the planted direction's norm."""
    order, _ = matched(found.directions, PLANTED)
    x = torch.zeros(3, 32, 32)
    planted = [(0, 0.9), (1, 0.5), (2, 0.7), (0, 0.4)]  # (concept, intensity) per quadrant
    for (r, c), (k, v) in zip(QUADRANTS, planted, strict=True):
        x[k, r : r + 16, c : c + 16] = v
    codes = found.codes(planted_net(), x)[0]  # (3, 32, 32): the layer keeps the input's grid
    maps = found.maps(planted_net(), x)[0]
    assert codes.shape == (3, 32, 32) and maps.shape == (3, 32, 32)
    for (r, c), (k, v) in zip(QUADRANTS, planted, strict=True):
        mean = codes[:, r : r + 16, c : c + 16].mean((1, 2))
        j = int(mean.argmax())
        assert order[j] == k
        assert float(mean[j]) == pytest.approx(v * float(PLANTED[k].norm()), rel=0.02)
        assert float(mean.sum() - mean[j]) < 0.05 * float(mean[j])


def test_fit_is_scikit_learns_nmf(folder: Path) -> None:
    """The fit equals scikit-learn's NMF on the same matrix and seed: the same reconstruction (error to 1e-6
    relative), the directions only rescaled to unit norm."""
    from sklearn.decomposition import NMF

    sampled = sample_activations(planted_net(), "act", folder, samples=2000, workers=0)
    noisy = sampled.vectors + 0.05 * torch.rand(sampled.vectors.shape, generator=torch.Generator().manual_seed(1))
    for seed in (0, 3):
        codes, directions, error = fit_concepts(noisy, 4, seed=seed)
        nmf = NMF(n_components=4, init="nndsvda", solver="cd", max_iter=500, tol=1e-4, random_state=seed)
        w = nmf.fit_transform(noisy.numpy())
        theirs = float(np.linalg.norm(noisy.numpy() - w @ nmf.components_) / np.linalg.norm(noisy.numpy()))
        assert abs(error - theirs) <= 1e-6 * theirs
        assert np.allclose((codes @ directions).numpy(), w @ nmf.components_, rtol=1e-4, atol=1e-5)


def test_sampled_vectors_are_the_layers_activations(folder: Path, tmp_path: Path) -> None:
    """The sample holds the activations a plain forward gives at the positions it names, whatever the batches."""
    net = planted_net()
    sampled = sample_activations(net, "act", folder, samples=300, seed=5, batch_size=7, workers=0)
    again = sample_activations(net, "act", folder, samples=300, seed=5, batch_size=16, workers=1)
    assert torch.equal(sampled.vectors, again.vectors) and torch.equal(sampled.positions, again.positions)
    assert sampled.per_image == 8 and len(sampled.vectors) == 40 * 8  # ceil(300 / 40)
    for i in (0, 17, 39):
        x = kernelviz.load_image(sampled.files[i], 32)[None]
        with torch.no_grad():
            reference = torch.relu(net.mix(x))[0].flatten(1)  # (16, 1024), no hooks
        rows = sampled.images == i
        assert torch.allclose(sampled.vectors[rows], reference[:, sampled.positions[rows]].T, atol=1e-6)
    other = sample_activations(net, "act", folder, samples=300, seed=6, workers=0)
    assert not torch.equal(other.positions, sampled.positions)


def test_codes_are_non_negative_least_squares() -> None:
    """Each position's codes solve min ||a - u @ D|| over u >= 0, as scipy's NNLS finds them, for correlated
    directions and activations that are not combinations of them."""
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 24, generator=g)
    directions = torch.nn.functional.normalize(base + 0.6 * torch.rand(5, 24, generator=g), dim=1)  # cosines ~0.9
    acts = torch.rand(2, 24, 3, 4, generator=g) * 3
    codes = concept_codes(acts, directions)
    assert codes.shape == (2, 5, 3, 4) and codes.min() >= 0
    for b in range(2):
        for r in range(3):
            for c in range(4):
                want, _ = nnls(directions.double().T.numpy(), acts[b, :, r, c].double().numpy())
                assert np.allclose(codes[b, :, r, c].numpy(), want, atol=1e-4)
    flat = concept_codes(acts[:, :, 0, 0], directions)
    assert torch.allclose(flat, codes[:, :, 0, 0], atol=1e-4)


def test_importance_is_each_concepts_part_of_the_logit(found: kernelviz.Concepts) -> None:
    """Known answer: after global average pooling and a linear head, concept k's part of logit t is
    ``mean_p x_k(p) * (PLANTED[k] . w_t)``; gradient x code gives it, and the parts add up to the logit less the
    bias."""
    order, _ = matched(found.directions, PLANTED)
    exact = torch.zeros(3)
    for path in found.files:
        x = kernelviz.load_image(path, 32)
        exact += x.mean((1, 2)) * (PLANTED @ PLANTED_HEAD[0])
    exact /= len(found.files)
    assert found.importance is not None and found.targets == [0] * 40 and found.target_name == "0"
    assert torch.allclose(found.importance.float(), exact[order], rtol=0.02, atol=1e-3)
    assert float(exact[0]) > 0 > float(exact[2])  # the head's signs come through: concept 2 lowers class 0


def test_patches_are_the_strongest_codes(found: kernelviz.Concepts) -> None:
    """Each concept's patches are the images with the largest codes (brute force over every image), best first."""
    net = planted_net()
    x = torch.stack([kernelviz.load_image(p, 32) for p in found.files])
    codes = found.codes(net, x).flatten(2)  # (40, 3, 1024)
    best, where = codes.max(2)  # (40, 3)
    spread = codes.mean(2)  # (40, 3): what tells images of equal largest codes apart
    for j in range(3):
        order = torch.from_numpy(np.lexsort((np.arange(40), -spread[:, j].numpy(), -best[:, j].numpy()))[:9])
        patches = found.patches[j]
        assert [p.path for p in patches] == [found.files[i] for i in order]
        assert np.allclose([p.value for p in patches], best[order, j].numpy(), rtol=1e-5)
        assert [p.position for p in patches] == [divmod(int(where[i, j]), 32) for i in order]


def test_the_model_is_left_unchanged(folder: Path) -> None:
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(6, 2))  # fmt: skip
    kernelviz.set_model_meta(net, input_size=32, mean=None, std=None)
    net.train()
    before = snapshot(net)
    found = find_concepts(net, "1", folder, k=2, workers=0)
    assert found.importance is not None and found.target_name == "top-1 prediction"
    assert_unchanged(net, before)
    assert net.training and net[1].inplace and not any(m._forward_hooks for m in net.modules())


def test_classes_choose_the_images(tmp_path: Path) -> None:
    """With a class, only that class's images are factored (CRAFT), and the class statistics come with a labeled
    collection."""
    planted_images(tmp_path, 30, classes=3)
    net = planted_net()
    chosen = find_concepts(net, "act", tmp_path, k=2, class_name="class1", workers=0)
    assert len(chosen.files) == 10 and all(f.parent.name == "class1" for f in chosen.files)
    every = find_concepts(net, "act", tmp_path, k=3, workers=0)
    assert every.scan is not None and every.scan.classes == ["class0", "class1", "class2"]
    order, _ = matched(every.directions, PLANTED)
    means = every.scan.class_means("act")  # (3 concepts, 3 classes)
    for j, k in enumerate(order):
        assert int(means[j].argmax()) == k  # class c's first quadrant always holds concept c
    with pytest.raises(NotFoundError, match=r"no class 'clas1'.*Did you mean: class1"):
        find_concepts(net, "act", tmp_path, k=2, class_name="clas1", workers=0)
    with pytest.raises(NotFoundError, match=r"no class 'dogs'.*Its classes: class0, class1, class2"):
        find_concepts(net, "act", tmp_path, k=2, class_name="dogs", workers=0)


def test_bad_input_is_refused_clearly(folder: Path, tmp_path: Path) -> None:
    signed = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    kernelviz.set_model_meta(signed, input_size=32)
    with pytest.raises(KernelvizError, match=r"negative activations.*--type relu"):
        find_concepts(signed, "0", folder, k=2, workers=0)
    with pytest.raises(KernelvizError, match="ask for 1 to 16 concepts"):
        find_concepts(planted_net(), "act", folder, k=40, workers=0)
    dead = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    nn.init.constant_(dead[0].bias, -100.0)
    kernelviz.set_model_meta(dead, input_size=32)
    with pytest.raises(KernelvizError, match="zero at every sampled position"):
        find_concepts(dead, "1", folder, k=2, workers=0)
    with pytest.raises(NotFoundError, match=r"unknown layer|not found"):
        find_concepts(planted_net(), "actt", folder, k=2, workers=0)
    with pytest.raises(KernelvizError, match="needs a collection with classes"):
        find_concepts(planted_net(), "act", folder, k=2, class_name="cats", workers=0)
    broken = tmp_path / "mixed"
    planted_images(broken, 6)
    (broken / "zz_broken.png").write_bytes(b"not a png")
    found = find_concepts(planted_net(), "act", broken, k=3, workers=0)
    assert found.scan is not None and [p.name for p, _ in found.scan.skipped] == ["zz_broken.png"]
    assert len(found.files) == 7 and found.samples == 6 * found.per_image


def test_cli_writes_the_concepts_folder_and_finds_them_in_new_images(cli, folder: Path, tmp_path: Path) -> None:
    """`kernelviz concepts` writes concepts.json (direction, share, importance, patches per concept), a figure and
    a picture with its record per concept, and the sheet; `heatmap --concepts` finds them in an image."""
    model = "tests.nets:planted_net"
    out = tmp_path / "out"
    result = cli("concepts", model, "act", "--images", folder, "-k", "3", "-o", out, "--steps", "4", "--quiet",
                 "--target", "1")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads((out / "concepts.json").read_text())
    assert data["model"] == model and data["layer"] == "act" and data["k"] == 3 and data["images"] == 40
    assert "gradient x code" in data["importance_method"] and data["target"] == "1"
    directions = torch.tensor([c["direction"] for c in data["concepts"]])
    order, cos = matched(directions, PLANTED)
    assert float(cos.min()) > 0.95
    assert sum(c["share"] for c in data["concepts"]) == pytest.approx(1)
    for c in data["concepts"]:
        assert (out / c["picture"]).is_file() and (out / c["figure"]).is_file()
        record = json.loads((out / c["picture"]).with_suffix(".json").read_text())
        assert record["concept"] == c["index"] and record["settings"]["steps"] == 4
        assert len(c["patches"]) == 9 and all((out / p["crop"]).is_file() for p in c["patches"])
    signs = [data["concepts"][order.index(k)]["importance"] for k in (0, 2)]
    assert signs[0] < 0 < signs[1]  # class 1 shrinks with concept 0 and grows with concept 2
    assert (out / "concepts.png").is_file()

    image = tmp_path / "new.png"
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[:, 16:, 2] = 200  # concept 2 on the right half only
    Image.fromarray(pixels).save(image)
    result = cli("heatmap", model, image, "--concepts", out, "-o", tmp_path / "maps")
    assert result.exit_code == 0, result.output
    codes = np.load(tmp_path / "maps" / "new_concepts.npy")  # (3, 32, 32)
    j = order.index(2)
    assert codes[j, :, 16:].min() > 0.5 and codes[j, :, :16].max() == 0
    assert json.loads((tmp_path / "maps" / "new_concepts.json").read_text())["layer"] == "act"
    (tmp_path / "bad.json").write_text('{"concepts": 3}')
    result = cli("heatmap", model, image, "--concepts", tmp_path / "bad.json")
    assert result.exit_code == 1 and "not a kernelviz concepts file" in result.output


def test_an_interrupted_job_keeps_every_concept_and_the_pictures_drawn(folder: Path, tmp_path: Path) -> None:
    """Ctrl-C while the pictures are drawn: concepts.json is whole, with every concept, and says so; the pictures
    of the batches done are written, the others are marked missing."""
    from kernelviz.jobs.concepts import export_concepts

    def stop(p: Progress) -> None:
        if p.stage == "pictures":  # while the pictures are drawn (the concepts are found by then)
            raise KeyboardInterrupt

    settings = kernelviz.DEFAULTS.with_(steps=40, batch_size=2)
    report = export_concepts(planted_net(), "act", folder, 3, tmp_path / "out", settings, progress=stop)
    data = json.loads((tmp_path / "out" / "concepts.json").read_text())
    assert report.interrupted and data["interrupted"] and len(data["concepts"]) == 3
    assert [c["picture"] is not None for c in data["concepts"]] == [True, True, False]  # the first batch: 2 pictures
    assert (tmp_path / "out" / "concept_01_picture.png").is_file()
    assert not (tmp_path / "out" / "concept_02_picture.png").exists()
    assert (tmp_path / "out" / "concepts.png").is_file()

"""Dataset scans: one pass, every unit, exactly the brute force's rankings, whatever the sharding or interruptions."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import kernelviz
from kernelviz.units.scan import collection, load_scan, merge_scans, scan_units

REPO = Path(__file__).resolve().parents[2]
LAYERS = ["0", "1", "2", "3", "5"]  # conv (signed), its ReLU, max pool, conv (signed), the logits (no positions)


def integer_net() -> nn.Module:
    """Integer weights on 0/1 images: every activation is an integer, computed exactly in any order, so the scan
    and the brute force agree to the bit, and a ReLU's zeros make many ties."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 5, 3),
        nn.Flatten(),
        nn.Linear(5 * 6 * 6, 4),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randint(-2, 3, p.shape, generator=g).float())
        model[0].bias[2] = -40.0  # a dead unit after the ReLU: every image ties at 0
    return kernelviz.set_model_meta(model, input_size=16, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def binary_images(root: Path, count: int, classes: int = 0, seed: int = 0) -> list[Path]:
    """``count`` random 0/1 images of 16 x 16 (in ``classes`` subfolders when given), and the files, sorted."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        folder = root / f"class{i % classes}" if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        density = 0.2 + 0.6 * rng.random()  # images differ in brightness, so classes and rankings differ
        pixels = (rng.random((16, 16, 3)) < density).astype(np.uint8) * 255
        path = folder / f"img{i:03d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return sorted(paths)


def brute_force(model: nn.Module, files: list[Path], layer: str) -> torch.Tensor:
    """``(N, C, H*W)`` activations of ``layer``, one image at a time, with a plain forward hook."""
    out = []
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, i, o: out.append(o.detach().clone()))
    try:
        with torch.no_grad():
            for f in files:
                model(kernelviz.load_image(f, 16)[None])
    finally:
        handle.remove()
    acts = torch.cat(out)
    return acts.flatten(2) if acts.dim() == 4 else acts[:, :, None]


def expected(values: torch.Tensor, tiebreak: torch.Tensor, k: int, lowest: bool) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of each column of ``values`` (N, C): highest first (lowest when ``lowest``), equal values by
    ``tiebreak`` the same way, then to the lower image index (numpy's lexsort, independent of the code under
    test)."""
    v, t = values.numpy(), tiebreak.numpy()
    sign = 1 if lowest else -1
    order = np.stack([np.lexsort((np.arange(len(v)), sign * t[:, c], sign * v[:, c]))[:k] for c in range(v.shape[1])])
    return np.take_along_axis(v.T, order, 1), order


#: The layer whose input ranks it (the ReLU: flat at 0 below its floor, where its input still tells images apart).
RANKED_BY_INPUT = {"1": "0"}


def assert_same_as_brute_force(model, scan, files, k):
    for layer in LAYERS:
        acts = brute_force(model, files, layer)  # (N, C, P)
        ranks = brute_force(model, files, RANKED_BY_INPUT.get(layer, layer))  # what the extremes are ranked by
        got = scan.layers[layer]
        assert got.ranked_by == ("pre-activation" if layer in RANKED_BY_INPUT else "activation")
        for name, scores, tiebreak, shown, lowest in (
            ("top", ranks.amax(2), ranks.mean(2), acts.amax(2), False),
            ("mean", acts.mean(2), ranks.amax(2), acts.mean(2), False),
            ("bottom", ranks.amin(2), ranks.mean(2), acts.amin(2), True),
        ):
            want_scores, want_images = expected(scores, tiebreak, k, lowest)
            ranking = got.ranking(name)
            assert ranking.images.numpy().tolist() == want_images.tolist(), (layer, name)
            assert torch.equal(ranking.scores, torch.from_numpy(want_scores)), (layer, name)
            assert torch.equal(ranking.values, shown.T.gather(1, torch.from_numpy(want_images))), (layer, name)
            if ranking.positions is not None:
                source = ranks if name != "mean" else acts
                picked = source[torch.from_numpy(want_images), torch.arange(acts.shape[1])[:, None]]  # (C, k, P)
                where = picked.argmax(2) if name == "top" else picked.argmin(2)  # the first extreme position
                assert torch.equal(ranking.positions, where), (layer, name)


def test_the_scan_finds_exactly_the_brute_force_rankings_of_every_unit(tmp_path):
    model = integer_net()
    files = binary_images(tmp_path, 37)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    weights = {n: p.clone() for n, p in model.state_dict().items()}
    scan = scan_units(model, tmp_path, LAYERS, k=5, batch_size=4, workers=0)
    assert scan.scanned == 37 and [p.name for p, _ in scan.skipped] == ["broken.png"]
    readable = [f for f in scan.files if f.name != "broken.png"]
    assert readable == files
    # image indices point into scan.files, which holds the broken file too: compare through the paths
    index = {f: i for i, f in enumerate(files)}
    for layer in scan.layers.values():
        for name in ("top", "mean", "bottom"):
            r = layer.ranking(name)
            r.images = torch.tensor([[index[scan.files[i]] for i in row] for row in r.images.tolist()])
    assert_same_as_brute_force(model, scan, files, 5)
    dead = scan.layers["1"].top  # unit 2 never fires: its ReLU gives 0 on every image, its input still differs
    assert torch.equal(dead.values[2], torch.zeros(5)) and bool((dead.scores[2] < 0).all())
    assert dead.images[2].tolist() != [0, 1, 2, 3, 4]  # ranked by how near it comes to firing, not by file order
    assert all(torch.equal(p, weights[n]) for n, p in model.state_dict().items())
    assert all(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))


def test_parallel_loading_and_loaded_checkpoints_change_nothing(tmp_path):
    model = integer_net()
    files = binary_images(tmp_path / "images", 30)
    a = scan_units(model, files, LAYERS, k=4, batch_size=5, workers=0)
    b = scan_units(model, files, LAYERS, k=4, batch_size=5, workers=2)
    a.save(tmp_path / "a.pt")
    c = load_scan(tmp_path / "a.pt")
    for other in (b, c):
        assert _same(other, a)
    assert_same_as_brute_force(model, a, files, 4)


def _same(x, y) -> bool:
    """Whether two scans hold the same rankings, class sums, counts and files."""

    def flat(scan):
        state = scan.state()
        return (
            {k: v for k, v in state.items() if k not in ("layers", "labels", "class_counts", "shard")},
            [
                (name, r, getattr(layer, r).values, getattr(layer, r).images, getattr(layer, r).positions)
                for name, layer in scan.layers.items()
                for r in ("top", "mean", "bottom")
            ],
            [layer.class_sums for layer in scan.layers.values()],
        )

    (a, ra, sa), (b, rb, sb) = flat(x), flat(y)
    if a != b or len(ra) != len(rb):
        return False
    for p, q in zip(ra, rb, strict=True):
        for u, v in zip(p[2:], q[2:], strict=True):
            if (u is None) != (v is None) or (u is not None and not torch.equal(u, v)):
                return False
    return all((u is None and v is None) or torch.equal(u, v) for u, v in zip(sa, sb, strict=True))


def test_shards_merge_into_the_scan_of_one_process(tmp_path):
    model = integer_net()
    files = binary_images(tmp_path, 41, classes=3)
    whole = scan_units(model, tmp_path, LAYERS, k=4, batch_size=3, workers=0)
    parts = [scan_units(model, tmp_path, LAYERS, k=4, batch_size=3, workers=0, shard=(i, 3)) for i in range(3)]
    assert sorted(len(p.done) for p in parts) == [4, 5, 5] and not any(p.complete for p in parts)
    merged = merge_scans(parts)
    assert merged.complete and merged.scanned == 41
    assert _same(merged, whole)
    with pytest.raises(kernelviz.KernelvizError, match="share batches"):
        merge_scans([parts[0], parts[0]])
    other = scan_units(model, tmp_path, LAYERS, k=3, batch_size=3, workers=0, shard=(0, 3))
    with pytest.raises(kernelviz.KernelvizError, match="other settings"):
        merge_scans([parts[1], other])
    assert sorted(files) == whole.files


def test_class_statistics_of_an_image_folder(tmp_path):
    """Class means against a per-class mean of the brute force's per-image means; class counts of the top images
    against the labels of the brute force's top images."""
    model = integer_net()
    binary_images(tmp_path, 30, classes=3)
    scan = scan_units(model, tmp_path, LAYERS, k=6, batch_size=7, workers=0)
    found = collection(tmp_path)
    assert scan.classes == ["class0", "class1", "class2"] and found.labels is not None
    assert torch.equal(scan.class_counts, torch.tensor([10, 10, 10]))
    acts = brute_force(model, scan.files, "3")
    means = acts.mean(2).double()  # (N, C)
    for c in range(3):
        want = means[found.labels == c].mean(0)
        assert torch.allclose(scan.class_means("3")[:, c], want, atol=1e-5)
    unit = 1
    top = scan.layers["3"].top.images[unit]
    counts = torch.bincount(found.labels[top], minlength=3)
    listed = dict(scan.classes_in_top("3", unit))
    assert listed == {f"class{c}": int(n) for c, n in enumerate(counts) if n}
    best = scan.top_classes("3", unit, n=3)
    assert [v for _, v in best] == sorted((v for _, v in best), reverse=True)
    assert best[0][0] == f"class{int(scan.class_means('3')[unit].argmax())}"


class StopScanError(Exception):
    pass


def test_a_killed_scan_resumes_to_exactly_the_uninterrupted_result(tmp_path):
    model = integer_net()
    files = binary_images(tmp_path / "images", 40, classes=2)
    whole = scan_units(model, tmp_path / "images", LAYERS, k=4, batch_size=4, workers=0)
    state = tmp_path / "state.pt"
    seen = []

    def stop_after_six_batches(p):
        seen.append(p.done)
        if p.done >= 24:
            raise StopScanError

    scan = functools.partial(
        scan_units, model, tmp_path / "images", LAYERS, k=4, batch_size=4, workers=0, checkpoint=state, every=8
    )
    with pytest.raises(StopScanError):
        scan(progress=stop_after_six_batches)
    saved = load_scan(state)
    assert len(saved.done) == 6 and not saved.complete  # the last checkpoint: after 24 images
    resumed_from = []
    again = scan(progress=lambda p: resumed_from.append(p.done))
    assert resumed_from[0] == 24 and _same(again, whole) and load_scan(state).complete
    with pytest.raises(kernelviz.KernelvizError, match=r"other settings \(k\)"):
        scan_units(model, tmp_path / "images", LAYERS, k=5, batch_size=4, workers=0, checkpoint=state)
    assert files == whole.files


def test_bad_input_is_refused_in_one_line(tmp_path):
    model = integer_net()
    binary_images(tmp_path / "images", 4)
    with pytest.raises(kernelviz.KernelvizError, match="not found"):
        scan_units(model, tmp_path / "nowhere", LAYERS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(kernelviz.KernelvizError, match="no image files"):
        scan_units(model, tmp_path / "empty", LAYERS)
    with pytest.raises(kernelviz.KernelvizError, match="conv9"):
        scan_units(model, tmp_path / "images", ["conv9"], workers=0)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(kernelviz.KernelvizError, match="cannot read the scan"):
        load_scan(tmp_path / "bad.pt")
    listing = tmp_path / "list.txt"
    listing.write_text("# two images\nimages/img000.png\n\nimages/img001.png\n")
    assert [f.name for f in collection(listing).files] == ["img000.png", "img001.png"]
    nan = integer_net()
    with torch.no_grad():
        nan[0].bias[0] = float("nan")
    with pytest.raises(kernelviz.KernelvizError, match="not finite"):
        scan_units(nan, tmp_path / "images", LAYERS, workers=0)


def test_torchrun_ranks_merge_into_the_scan_of_one_process(tmp_path):
    """Two processes under torchrun (gloo on the CPU), each scanning its share: the merged result on every rank is
    exactly one process's."""
    binary_images(tmp_path / "images", 23, classes=2)
    script = tmp_path / "scan.py"
    script.write_text(
        "import os, sys, torch\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from tests.units.test_scan import integer_net, LAYERS\n"
        "from kernelviz.units.scan import scan_units\n"
        f"scan = scan_units(integer_net(), {str(tmp_path / 'images')!r}, LAYERS, k=3, batch_size=2, workers=0)\n"
        "scan.save(sys.argv[1] + '-' + os.environ['RANK'] + '.pt')\n"
    )
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [torchrun, "--nproc-per-node", "2", "--master-port", "29541", str(script), str(tmp_path / "ranked")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = scan_units(integer_net(), tmp_path / "images", LAYERS, k=3, batch_size=2, workers=0)
    for rank in (0, 1):
        assert _same(load_scan(tmp_path / f"ranked-{rank}.pt"), one)

"""`sem-fast eval` on a model with known predictions, with tiny files in each published format."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from sem_fast.config import SEMConfig
from sem_fast.data import factory
from sem_fast.eval.embedding import equivariance_gap, mixed_features
from sem_fast.eval.evaluate import evaluate_checkpoint
from sem_fast.train import train
from sem_fast.train.checkpoint import load_checkpoint
from tests.utils import write_image_folder, write_svhn_mat

#: The crafted model predicts class 3 for every image with softmax probability 27 / (27 + 9) = 0.75.
CONSTANT_CLASS, CONSTANT_P = 3, 0.75
MAX_IMAGES = 100  # evaluate the first 100 bundled test images


def _constant_prediction_checkpoint(config, path: Path) -> None:
    """Train ``config`` for one step, then make its head predict `CONSTANT_CLASS` with `CONSTANT_P`."""
    train(config.replace(epochs=1, es_epochs=0, max_steps_per_epoch=1))
    state = load_checkpoint(config.run_dir)
    k = state["model"]["head.bias"].numel()
    state["model"]["head.weight"].zero_()
    state["model"]["head.bias"].zero_()
    state["model"]["head.bias"][CONSTANT_CLASS] = math.log(CONSTANT_P / (1 - CONSTANT_P) * (k - 1))
    torch.save(state, path)


def _expected_accuracy(labels) -> float:
    labels = torch.as_tensor(labels)
    return 100.0 * int((labels == CONSTANT_CLASS).sum()) / labels.numel()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """CIFAR-10.1 (.npy pair), CIFAR-10.2 (.npz), CIFAR-10-C (2 corruptions x 5 severities of 4
    images), SVHN (.mat) and an LSUN-style image folder, each with labels chosen per file."""
    root = tmp_path_factory.mktemp("eval_data")
    images = factory.load_bundled("test")[0].numpy()
    np.save(root / "cifar10.1_v6_data.npy", images[:8])
    np.save(root / "cifar10.1_v6_labels.npy", np.array([3, 3, 1, 2, 3, 0, 9, 8]))  # 3 of 8 are class 3
    np.savez(root / "cifar102_test.npz", images=images[8:13], labels=np.array([3, 0, 0, 0, 0]))  # 1 of 5
    c10c = root / "CIFAR-10-C"
    c10c.mkdir()
    for name in ("gaussian_noise", "contrast"):
        np.save(c10c / f"{name}.npy", images[:20])
    # Severity s (4 images each) has s-1 images of class 3 (severity 5 has 4).
    np.save(c10c / "labels.npy", np.array([[3] * min(s, 4) + [0] * (4 - min(s, 4)) for s in range(5)]).ravel())
    write_svhn_mat(root / "test_32x32.mat", images[20:27], [1, 0, 3, 0, 5, 9, 2])
    write_image_folder(root / "LSUN" / "test", {"": [images[k] for k in range(5)]})
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory, data_root):
    from sem_fast.train import get_recipe

    run = tmp_path_factory.mktemp("eval_run")
    config = get_recipe("demo").replace(out=str(run / "run"), width=4, batch_size=16, progress=False)
    _constant_prediction_checkpoint(config, run / "constant.pt")
    return evaluate_checkpoint(
        run / "constant.pt", data_root=data_root, out=run / "eval", corruptions=("gaussian_noise", "pixelate"),
        severities=(1, 5), noise_images=50, max_images=MAX_IMAGES,
    )  # fmt: skip


def test_clean_accuracy_nll_and_ece_of_a_constant_model(report):
    labels = factory.load_bundled("test")[1][:MAX_IMAGES]
    acc = _expected_accuracy(labels)
    clean = report["clean"]
    assert clean["images"] == MAX_IMAGES and clean["accuracy"] == acc
    assert clean["ece"] == pytest.approx(abs(100 * CONSTANT_P - acc), abs=1e-3)
    p_other = (1 - CONSTANT_P) / 9
    nll = -(acc / 100 * math.log(CONSTANT_P) + (1 - acc / 100) * math.log(p_other))
    assert clean["nll"] == pytest.approx(nll, rel=1e-4)


def test_natural_shift_sets_are_read_from_their_published_formats(report):
    assert report["shift"]["cifar10.1"]["accuracy"] == pytest.approx(100 * 3 / 8)
    assert report["shift"]["cifar10.2"]["accuracy"] == pytest.approx(100 * 1 / 5)
    assert report["shift"]["cifar10.1"]["images"] == 8


def test_cifar10c_files_give_accuracy_per_corruption_and_severity(report):
    c10c = report["corruption_files"]["CIFAR-10-C"]
    expected = [0.0, 25.0, 50.0, 75.0, 100.0]
    assert c10c["corruptions"] == 2
    assert c10c["per_corruption"]["contrast"]["accuracy_by_severity"] == expected
    assert c10c["mean"] == pytest.approx(sum(expected) / 5)


def test_on_the_fly_corruptions_cover_the_requested_grid(report):
    fly = report["corruptions"]
    assert fly["severities"] == [1, 5] and set(fly["per_corruption"]) == {"gaussian_noise", "pixelate"}
    clean = report["clean"]["accuracy"]  # a constant model is not affected by corruptions
    assert all(a == clean for v in fly["per_corruption"].values() for a in v["accuracy_by_severity"])


def test_ood_sets_of_a_constant_model_are_indistinguishable(report):
    ood = report["ood"]
    assert set(ood) == {"svhn", "lsun", "uniform noise", "gaussian noise"}
    assert ood["svhn"]["images"] == 7 and ood["lsun"]["images"] == 5 and ood["uniform noise"]["images"] == 50
    for scores in ood.values():
        assert scores["auroc"] == pytest.approx(50.0, abs=1e-9) and scores["fpr95"] == 100.0


def test_report_files_json_markdown_and_embedding_png_are_written(report):
    from PIL import Image

    out = Path(report["embedding"]["png"]).parent
    assert json.loads((out / "eval.json").read_text()) == report
    markdown = (out / "eval.md").read_text()
    for row in ("| clean |", "| cifar10.1 |", "| CIFAR-10-C |", "| on the fly |", "| svhn |", "| lsun |"):
        assert row in markdown
    with Image.open(report["embedding"]["png"]) as image:
        assert image.size == (1125, 900)  # 7.5 x 6 inches at 150 dpi
    assert Path(report["embedding"]["png"]).with_suffix(".svg").is_file()
    gaps = report["embedding"]["equivariance_gap"]
    assert gaps["0.0"] == 0.0 and gaps["1.0"] == 0.0 and gaps["0.5"] > 0


def test_missing_optional_sets_are_listed_with_where_they_were_looked_for(tmp_path, report):
    assert report["skipped"] == {}
    from sem_fast.train import get_recipe

    config = get_recipe("demo").replace(out=str(tmp_path / "run"), width=4, batch_size=16, progress=False)
    _constant_prediction_checkpoint(config, tmp_path / "c.pt")
    empty = evaluate_checkpoint(tmp_path / "c.pt", data_root=tmp_path / "none", corruptions=(), noise_images=0,
                                embedding=False, max_images=20)  # fmt: skip
    assert set(empty["skipped"]) == {"cifar10.1", "cifar10.2", "CIFAR-10-C", "svhn", "lsun"}
    assert str(tmp_path / "none") in empty["skipped"]["svhn"]
    assert empty["ood"] == {} and empty["corruptions"] == {}


def test_held_out_classes_are_scored_as_ood(tmp_path):
    from sem_fast.train import get_recipe

    config = get_recipe("demo").replace(out=str(tmp_path / "run"), width=4, batch_size=16, progress=False,
                                        classes=(0, 1, 2, 3, 4, 5))  # fmt: skip
    _constant_prediction_checkpoint(config, tmp_path / "c.pt")
    got = evaluate_checkpoint(tmp_path / "c.pt", corruptions=(), noise_images=0, embedding=False, max_images=200)
    held_out = got["ood"]["held-out classes"]
    assert held_out["classes"] == [6, 7, 8, 9] and held_out["auroc"] == pytest.approx(50.0)
    labels = factory.load_bundled("test")[1]
    assert got["clean"]["images"] == min(200, int((labels < 6).sum()))
    assert "cifar10.1" not in got["shift"]  # a 6-class model is not scored on 10-class shift sets


class _LinearEncoder(nn.Module):
    """``encode`` = per-channel mean (linear in the image), so mixing commutes with it exactly."""

    def encode(self, x):
        return x.mean((2, 3))

    def classify(self, z):
        return z


def test_equivariance_gap_is_zero_for_a_linear_encoder_and_positive_for_a_relu_one():
    images = factory.load_bundled("test")[0]
    cfg = SEMConfig(channels_last=False)
    linear = mixed_features(_LinearEncoder(), images[:8], images[8:16], cfg)
    assert max(equivariance_gap(linear).values()) < 1e-10

    class Relu(_LinearEncoder):
        def encode(self, x):
            return torch.relu(x - 0.5).mean((2, 3))

    assert equivariance_gap(mixed_features(Relu(), images[:8], images[8:16], cfg))[0.5] > 1e-4


@pytest.fixture(scope="module")
def constant_checkpoint(tmp_path_factory) -> Path:
    from sem_fast.train import get_recipe

    run = tmp_path_factory.mktemp("constant_run")
    config = get_recipe("demo").replace(out=str(run / "run"), width=4, batch_size=16, progress=False, plots=False)
    _constant_prediction_checkpoint(config, run / "run" / "checkpoint.pt")
    return run / "run" / "checkpoint.pt"


QUICK = {"corruptions": (), "noise_images": 0, "progress": False}


def test_an_evaluation_with_other_settings_is_refused_and_overwrite_replaces_it_whole(constant_checkpoint, tmp_path):
    from sem_fast.eval.evaluate import EvaluationExistsError

    out = tmp_path / "eval"
    evaluate_checkpoint(constant_checkpoint, out=out, max_images=MAX_IMAGES, **QUICK)
    full = (out / "eval.json").read_text()
    assert (out / "embedding.png").is_file() and (out / "embedding.svg").is_file()
    with pytest.raises(EvaluationExistsError, match=rf"{out} holds an evaluation with other settings \(embedding: True "
                                                    rf"there, False now, max_images: 100 there, 50 now\).*--overwrite"):
        evaluate_checkpoint(constant_checkpoint, out=out, max_images=50, embedding=False, **QUICK)
    assert (out / "eval.json").read_text() == full  # untouched
    assert evaluate_checkpoint(constant_checkpoint, out=out, max_images=MAX_IMAGES, **QUICK)["clean"]["images"] == 100
    small = evaluate_checkpoint(constant_checkpoint, out=out, max_images=50, embedding=False, overwrite=True, **QUICK)
    assert json.loads((out / "eval.json").read_text()) == small and small["clean"]["images"] == 50
    assert not (out / "embedding.png").exists() and not (out / "embedding.svg").exists()  # no stale figure
    assert sorted(p.name for p in out.iterdir()) == ["eval.json", "eval.md"]


def test_an_evaluation_of_another_checkpoint_is_refused(constant_checkpoint, tmp_path):
    from sem_fast.eval.evaluate import EvaluationExistsError

    other = tmp_path / "other.pt"
    state = load_checkpoint(constant_checkpoint)
    state["model"]["head.bias"] += 1.0
    torch.save(state, other)
    evaluate_checkpoint(constant_checkpoint, out=tmp_path / "eval", max_images=20, embedding=False, **QUICK)
    with pytest.raises(EvaluationExistsError, match="holds an evaluation of another checkpoint"):
        evaluate_checkpoint(other, out=tmp_path / "eval", max_images=20, embedding=False, **QUICK)


def test_an_interrupted_evaluation_leaves_the_earlier_one_whole(constant_checkpoint, tmp_path, monkeypatch):
    from sem_fast.eval import evaluate

    out = tmp_path / "eval"
    evaluate_checkpoint(constant_checkpoint, out=out, max_images=MAX_IMAGES, **QUICK)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "save_embedding_figure", interrupted)  # the last stage
    with pytest.raises(KeyboardInterrupt):
        evaluate_checkpoint(constant_checkpoint, out=out, max_images=MAX_IMAGES, **QUICK)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temporary folder left either


def test_evaluation_progress_names_each_stage_with_an_eta(constant_checkpoint, tmp_path, capsys):
    evaluate_checkpoint(constant_checkpoint, out=tmp_path / "eval", max_images=20, embedding=False, corruptions=("contrast",),
                        severities=(1, 2), noise_images=10)  # fmt: skip
    lines = capsys.readouterr().err.splitlines()
    stages = ["clean test set", "on the fly: contrast severity 1", "on the fly: contrast severity 2",
              "OOD: uniform noise", "OOD: gaussian noise"]  # fmt: skip
    assert [line.split("] ")[1].split("  ")[0] for line in lines] == stages
    assert lines[0].startswith("sem-fast eval [1/5] clean test set") and "eta" not in lines[0]
    assert all(" elapsed  eta " in line for line in lines[1:])


def test_the_embedding_figure_names_the_classes_and_tells_features_from_targets():
    from sem_fast.eval.embedding import embedding_figure

    images = factory.load_bundled("test")[0]
    features = mixed_features(_LinearEncoder(), images[:8], images[8:16], SEMConfig(channels_last=False))
    fig, method = embedding_figure(features, ("airplane", "automobile"), "demo: airplane / automobile")
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["λ = 0: clean automobile", "λ = 0.25: 0.25·airplane + 0.75·automobile",
                      "λ = 0.5: 0.5·airplane + 0.5·automobile", "λ = 0.75: 0.75·airplane + 0.25·automobile",
                      "λ = 1: clean airplane", "dot: g(λ·a + (1−λ)·b), features of the mixed image",
                      "ring: λ·g(a) + (1−λ)·g(b), its equivariant target"]  # fmt: skip
    assert method in ("pca", "umap") and ax.get_xlabel().endswith(" 1") and ax.get_ylabel().endswith(" 2")
    assert ax.get_title().startswith("demo: airplane / automobile\n")
    # 5 ratios of 8 mixed features, 3 ratios of 8 targets: one point per feature, at its projection
    assert sum(len(c.get_offsets()) for c in ax.collections) == 5 * 8 + 3 * 8


def test_the_report_names_the_embedding_classes(report):
    assert report["embedding"]["class_names"] == ["airplane", "automobile"]

"""Every optional dependency that is missing is an error naming the sem_fast extra that installs it,
raised before any long work (never a silent ``None``, never a figure quietly left out)."""

from __future__ import annotations

import sys

import pytest

from sem_fast.extras import EXTRAS, Extra, MissingExtraError, require

NO_SUCH_MODULE = "sem_fast_test_no_such_module"


def _block(monkeypatch, *modules: str) -> None:
    """Make ``import module`` fail as for a package that is not installed."""
    for name in modules:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            monkeypatch.delitem(sys.modules, loaded)
        monkeypatch.setitem(sys.modules, name, None)


def test_require_names_the_extra_that_installs_a_missing_module(monkeypatch):
    monkeypatch.setitem(EXTRAS, "missing", Extra(("missing-dist>=1",), (NO_SUCH_MODULE,), "the test's feature"))
    with pytest.raises(MissingExtraError) as err:
        require(NO_SUCH_MODULE, "drawing the test figure")
    message = str(err.value)
    assert message.startswith(f"drawing the test figure needs {NO_SUCH_MODULE}, which cannot be imported")
    assert 'pip install "sem_fast[missing]"' in message and '"missing-dist>=1"' in message
    assert isinstance(err.value, ImportError)


def test_require_returns_an_installed_module():
    assert require("yaml", "reading YAML").safe_load("a: 1") == {"a": 1}


def test_eval_without_matplotlib_fails_before_evaluating(monkeypatch, tmp_path):
    from sem_fast.eval.evaluate import evaluate_checkpoint

    _block(monkeypatch, "matplotlib")
    with pytest.raises(MissingExtraError, match=r"embedding figure.*needs matplotlib.*sem_fast\[plots\]"):
        evaluate_checkpoint(tmp_path / "no-such-run")  # fails before the (missing) checkpoint is opened


def test_cli_eval_without_matplotlib_exits_with_the_extra(monkeypatch, tmp_path, capsys):
    from sem_fast.cli import main

    _block(monkeypatch, "matplotlib")
    assert main(["eval", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "sem-fast eval: error: the embedding figure" in err and 'pip install "sem_fast[plots]"' in err


def test_sweep_without_matplotlib_fails_before_any_trial(monkeypatch, tmp_path):
    from sem_fast.sweep import parse_spec, run_sweep

    spec = parse_spec({"recipe": "demo", "seeds": [0], "grid": {"gamma": [0.0, 1.0]}, "plot": ["gamma"]}, "test")
    _block(monkeypatch, "matplotlib")
    with pytest.raises(MissingExtraError, match=r"sweep's plots.*sem_fast\[plots\]"):
        run_sweep(spec, tmp_path / "sweep")
    assert not (tmp_path / "sweep").exists()


def test_yaml_spec_without_pyyaml_names_the_extra(monkeypatch, tmp_path):
    from sem_fast.sweep.spec import SweepSpecError, read_spec_file

    path = tmp_path / "spec.yaml"
    path.write_text("recipe: demo\n")
    _block(monkeypatch, "yaml")
    with pytest.raises(SweepSpecError, match=r'spec.yaml: reading YAML needs PyYAML: pip install "sem_fast\[yaml\]"'):
        read_spec_file(path)


def test_ray_backend_without_ray_names_the_extra(monkeypatch):
    from sem_fast.sweep.ray_backend import import_tune

    _block(monkeypatch, "ray")
    with pytest.raises(MissingExtraError, match=r'--backend ray \(Ray Tune\) needs ray.tune.*sem_fast\[ray\]'):
        import_tune()


def test_decoding_image_files_without_pillow_names_the_extra(monkeypatch, tmp_path):
    from sem_fast.data.image_folder import decode_image

    _block(monkeypatch, "PIL")
    with pytest.raises(MissingExtraError, match=r'decoding image files on the cpu loader.*sem_fast\[images\]'):
        decode_image(str(tmp_path / "x.png"), None)


def test_torchvision_without_torchvision_names_the_extra(monkeypatch):
    from sem_fast.extras import import_torchvision

    monkeypatch.setattr("sem_fast.extras.module_present", lambda name: False)
    _block(monkeypatch, "torchvision")
    with pytest.raises(MissingExtraError, match=r'the example needs torchvision.*sem_fast\[torchvision\]'):
        import_torchvision("the example")

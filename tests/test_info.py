"""``sem-fast info`` reports what the installation can do, and `sem_fast.extras` names the extra of
every missing optional package."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from sem_fast import available_backends, info
from sem_fast.extras import ALL, EXTRAS, Extra, extras_require
from sem_fast.ops import native

NO_SUCH_MODULE = "sem_fast_test_no_such_module"


@pytest.fixture
def missing_extra(monkeypatch):
    """An extra ``'missing'`` whose module is not installed."""
    monkeypatch.setitem(EXTRAS, "missing", Extra(("missing-dist>=1",), (NO_SUCH_MODULE,), "the test's feature"))


def test_all_holds_every_extra_but_the_cuda12_dali_and_test_adds_its_tools():
    table = extras_require()
    assert set(ALL) == set(EXTRAS) - {"dali-cuda120"}
    assert set(table["all"]) == {req for name in ALL for req in EXTRAS[name].requirements}
    assert set(table["test"]) == set(table["all"]) | {"hypothesis", "triton"}
    assert "triton" not in table  # CUDA torch pins its own triton


def test_report_matches_the_registry_and_the_extension():
    report = info.collect()
    cpu = report["backends"]["cpu"]
    assert cpu["backends"] == available_backends("cpu")
    assert cpu["auto"] in [name for name, why in cpu["backends"].items() if why is None]
    ext = report["extension"]
    assert ext["built"] == (native.probe("cpu") is None) and ext["cuda_kernels"] == (native.probe("cuda") is None)
    assert report["torch"]["version"] == torch.__version__
    if not torch.cuda.is_available():
        assert "unavailable" in report["backends"]["cuda"] and "unavailable" in report["devices"]["cuda"]


def test_text_report_says_whether_the_extension_was_built_and_what_is_missing(missing_extra):
    report = info.collect()
    text = info.format_report(report)
    built = "compiled extension sem_fast._C: built" in text
    assert built == report["extension"]["built"]
    assert "  missing       not installed" in text
    for name, why in report["backends"]["cpu"]["backends"].items():
        assert f"  cpu   {name:<10} {'runs' if why is None else 'no: ' + why}" in text


@pytest.mark.parametrize("command", [["-m", "sem_fast.info", "--json"], ["-m", "sem_fast", "info", "--json"]])
def test_info_runs_as_a_module_and_as_a_subcommand(command):
    done = subprocess.run([sys.executable, *command], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert set(report["extras"]) == set(EXTRAS) and "cpu" in report["backends"]

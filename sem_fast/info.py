"""``sem-fast info`` / ``python -m sem_fast.info``: what this installation of sem_fast can do, and why not.

An install can silently end up without the compiled backend (a plain ``pip install .`` builds
in isolation, without torch, and installs pure Python; pip hides the build's warning), or with a
CPU build of torch on a GPU machine. This report makes the outcome visible: versions, the
devices torch sees, whether ``sem_fast._C`` was built and with CUDA kernels, which op backend runs
on which device (`sem_fast.available_backends`, with the reason where one does not), what
``backend='auto'`` picks, and which optional extras (`sem_fast.extras`) are installed.

    sem-fast info            # the report as text
    sem-fast info --json     # the same as JSON
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
from typing import Any

import torch

import sem_fast
from sem_fast.extras import EXTRAS, installed_version, module_present
from sem_fast.ops import native
from sem_fast.ops.registry import available_backends, get_backend

DEVICE_TYPES = ("cpu", "cuda")


def cuda_status() -> str | None:
    """``None`` when torch sees a CUDA device, else why it does not."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU build (install a CUDA build of torch to use a GPU)"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but sees no CUDA device (driver, GPU)"
    return None


def _devices() -> dict[str, Any]:
    devices: dict[str, Any] = {"cpu": {"cores": os.cpu_count(), "threads": torch.get_num_threads()}}
    why_not = cuda_status()
    if why_not is None:
        index = torch.cuda.current_device()
        devices["cuda"] = {"count": torch.cuda.device_count(), "name": torch.cuda.get_device_name(index),
                           "capability": ".".join(map(str, torch.cuda.get_device_capability(index)))}  # fmt: skip
    else:
        devices["cuda"] = {"unavailable": why_not}
    return devices


def _extension() -> dict[str, Any]:
    """Whether ``sem_fast._C`` loads, where it is, and whether it holds CUDA kernels."""
    error = native.probe("cpu")
    spec = importlib.util.find_spec("sem_fast._C")
    return {
        "built": error is None,
        "path": spec.origin if spec is not None else None,
        "cpu_kernels": error is None,
        "cuda_kernels": error is None and native.probe("cuda") is None,
        "error": error,
    }


def _backends() -> dict[str, dict[str, Any]]:
    """Per device type: ``{"unavailable": why}`` without such a device, else each backend's reason
    it cannot run there (None: it runs) and the backend ``'auto'`` picks."""
    table: dict[str, dict[str, Any]] = {}
    for device_type in DEVICE_TYPES:
        no_device = cuda_status() if device_type == "cuda" else None
        if no_device is not None:
            table[device_type] = {"unavailable": no_device}
        else:
            table[device_type] = {"backends": available_backends(device_type),
                                  "auto": get_backend("auto", device_type).name}  # fmt: skip
    return table


def _extras() -> dict[str, dict[str, Any]]:
    rows = {}
    for name, extra in EXTRAS.items():
        dists = [req.split("[")[0].split(">")[0].split("=")[0] for req in extra.requirements]
        versions = {d: installed_version(d) for d in dists}
        present = all(module_present(m) for m in extra.modules) and all(versions.values())
        rows[name] = {"present": present, "versions": versions, "needed_by": extra.needed_by}
    return rows


def collect() -> dict[str, Any]:
    """The report as a JSON-ready dict (what ``sem-fast info --json`` prints)."""
    return {
        "sem_fast": {"version": sem_fast.__version__, "path": os.path.dirname(sem_fast.__file__)},
        "python": platform.python_version(),
        "torch": {"version": torch.__version__, "cuda": torch.version.cuda},
        "triton": installed_version("triton"),
        "numpy": installed_version("numpy"),
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
        "devices": _devices(),
        "extension": _extension(),
        "backends": _backends(),
        "extras": _extras(),
    }


def format_report(report: dict[str, Any]) -> str:
    """``collect()``'s report as text, one fact per line."""
    ext, torch_info = report["extension"], report["torch"]
    cuda = report["devices"]["cuda"]
    lines = [
        f"sem_fast {report['sem_fast']['version']} ({report['sem_fast']['path']})",
        (f"python {report['python']}, torch {torch_info['version']}"
         f" ({'CUDA ' + torch_info['cuda'] if torch_info['cuda'] else 'CPU build'}), "
         f"triton {report['triton'] or 'not installed'}, numpy {report['numpy']}"),
        f"cpu: {report['devices']['cpu']['cores']} cores, torch uses {report['devices']['cpu']['threads']} threads",
        "cuda: " + (cuda["unavailable"] if "unavailable" in cuda else
                    f"{cuda['count']} x {cuda['name']} (sm_{cuda['capability'].replace('.', '')})"),
    ]  # fmt: skip
    if ext["built"]:
        kernels = "C++ CPU kernels" + (" and CUDA kernels" if ext["cuda_kernels"] else ", no CUDA kernels")
        lines.append(f"compiled extension sem_fast._C: built, {kernels} ({ext['path']})")
    else:
        lines.append(f"compiled extension sem_fast._C: not available: {ext['error']}")
    lines.append("op backends (sem_fast.available_backends):")
    for device_type, entry in report["backends"].items():
        if "unavailable" in entry:
            lines.append(f"  {device_type:<5} {'-':<10} no {device_type} device: {entry['unavailable']}")
            continue
        for name, why in entry["backends"].items():
            state = "runs" if why is None else "no: " + why
            if name == "triton" and device_type == "cpu" and why is None:
                state += " (in Triton's interpreter, TRITON_INTERPRET=1: for tests, not speed)"
            lines.append(f"  {device_type:<5} {name:<10} {state}")
        lines.append(f"  {device_type:<5} {'auto':<10} picks {entry['auto']!r} (inputs it cannot take fall through)")
    lines.append('optional extras (pip install "sem_fast[NAME]"; all of them: "sem_fast[all]"):')
    for name, row in report["extras"].items():
        if row["present"]:
            state = ", ".join(f"{d} {v}" for d, v in row["versions"].items())
        else:
            state = "not installed"
        lines.append(f"  {name:<13} {state:<36} {row['needed_by']}")
    return "\n".join(lines)


def add_info_parser(commands: Any) -> None:
    """Register ``sem-fast info`` on the CLI's subparsers."""
    parser = commands.add_parser(
        "info", help="versions, devices, compiled extension, backends, extras", description=__doc__.split("\n\n")[1]
    )
    _add_arguments(parser)
    parser.set_defaults(subparser=parser)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run_info(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> int:
    """Print the report (``args.json``: as JSON); exit status 0."""
    report = collect()
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sem_fast.info", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    _add_arguments(parser)
    return run_info(parser.parse_args(argv))


if __name__ == "__main__":  # importing the module alone runs nothing
    sys.exit(main())

"""pytest-benchmark set-up: machine info for the JSON, and the summary table at the end."""

import platform

import torch

from benchmarks.harness import ROWS, format_table


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch"] = torch.__version__
    machine_info["cuda_device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    try:
        import triton

        machine_info["triton"] = triton.__version__
    except ImportError:
        machine_info["triton"] = None
    machine_info["python"] = platform.python_version()


def pytest_terminal_summary(terminalreporter):
    if ROWS:
        terminalreporter.write_sep("=", "sem_fast throughput (median per call; vs reference: >1 is faster)")
        terminalreporter.write_line(format_table(ROWS))

"""benchmarks/report.py turns pytest-benchmark JSON into RESULTS.md sections with target ratios."""

from benchmarks.report import merge, section


def _bench(group, case, provider, us, **extra):
    return {"group": group, "extra_info": {"case": case, "provider": provider, "us_per_call": us, **extra}}


def _report(device, benches):
    return {
        "machine_info": {"cuda_device": device, "torch": "2.11", "triton": "3.6", "python": "3.11"},
        "commit_info": {"id": "0123456789abcdef", "dirty": False},
        "datetime": "2026-11-25T00:00:00",
        "benchmarks": benches,
    }


RUN = _report(
    "NVIDIA H100",
    [
        _bench("mix", "B512", "reference", 400.0, gb_per_s=10.0),
        _bench("mix", "B512", "triton", 40.0, gb_per_s=100.0),
        _bench("mix", "B512", "copy (roofline)", 32.0, gb_per_s=125.0),
        _bench("mix", "B512", "timm-elem", 4000.0, gb_per_s=1.0),
        _bench("sem_loss fwd+bwd", "B512-K10-D512", "reference", 300.0, img_per_s=1.0),
        _bench("sem_loss fwd+bwd", "B512-K10-D512", "triton", 50.0, img_per_s=6.0),
        _bench("step", "B128", "sem", 13.0, img_per_s=1.0),
        _bench("step", "B128", "mixup (gamma=0)", 10.0, img_per_s=1.3),
        _bench("step", "B128", "paper-style loop", 52.0, img_per_s=0.25),
        {"group": "mix", "extra_info": {}},  # a disabled (untimed) run leaves no timing
    ],
)


def test_section_has_the_device_commit_command_tables_and_target_ratios():
    text = section(RUN, "pytest benchmarks --benchmark-only")
    assert text.startswith("## NVIDIA H100\n")
    assert "`0123456789ab`" in text and "`pytest benchmarks --benchmark-only`" in text
    assert "| B512 | triton | 40 | 100 GB/s | 10× |" in text
    assert "| mix B512 | triton bandwidth / copy bandwidth | 80% | ≥ 90% |" in text
    assert "| mix B512 | triton speed-up over timm elem mode | 100.0× | ≥ 20× |" in text
    assert "| loss B512-K10-D512 | triton speed-up over reference | 6.00× | ≥ 5× |" in text
    assert "| step B128 | SEM overhead: sem / mixup (gamma=0) time | 1.30× | ≤ 1.35× |" in text
    assert "| step B128 | fastest sem_fast step over the paper-style loop | 4.00× | ≥ 4× |" in text


def test_merge_replaces_the_same_device_and_keeps_others():
    first = merge("", section(RUN, "run 1"))
    cpu = section(_report(None, []) | {"machine_info": {"cpu": {"brand_raw": "EPYC", "count": 2}}}, "cpu run")
    both = merge(first, cpu)
    again = merge(both, section(RUN, "run 2"))
    assert again.count("## NVIDIA H100") == 1 and "run 2" in again and "run 1" not in again
    assert "## CPU: EPYC (2 cores)" in again and again.startswith("# Benchmark results")


def test_sweep_packing_gain_is_reported_against_one_process_at_a_time():
    run = _report(
        "NVIDIA H100",
        [
            _bench("sweep: trials per device-hour", "8 trials", "sequential", 90.0, img_per_s=1.0),
            _bench("sweep: trials per device-hour", "8 trials", "1 process at a time", 100.0, img_per_s=1.0),
            _bench("sweep: trials per device-hour", "8 trials", "packed x4", 40.0, img_per_s=1.0),
        ],
    )
    assert "| sweep 8 trials | trials per device-hour, packed x4 / 1 process at a time | 2.50× | > 1× |" in section(run, "c")

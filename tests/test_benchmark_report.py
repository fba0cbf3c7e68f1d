"""benchmarks/report.py turns pytest-benchmark JSON into RESULTS.md sections: tables with each row's
spread, target ratios only of rows timed in the same invocation, a subset run marked as such, and
the comparison of two runs."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.report import compare, load_runs, main, merge, section

RUN_ID = "20261125T000000-abcdef01"


def _bench(group, case, provider, us, *, q=(0.95, 1.05), invocation=RUN_ID, **extra):
    """A timed entry: median ``us``, quartiles ``us * q``, min ``0.9 us``, 15 rounds of 1 call."""
    info = {"case": case, "provider": provider, "us_per_call": us, "us_min": 0.9 * us, "us_q1": q[0] * us,
            "us_q3": q[1] * us, "rounds": 15, "calls_per_round": 1, "invocation": invocation, **extra}  # fmt: skip
    return {"group": group, "extra_info": info}


def _report(device, benches, selection=None):
    selection = selection or {"subset": False, "description": "", "selected": len(benches), "deselected": 0}
    machine = {"cuda_device": device, "torch": "2.11", "triton": "3.6", "python": "3.11", "selection": selection}
    return {
        "machine_info": machine,
        "commit_info": {"id": "0123456789abcdef", "dirty": False},
        "datetime": "2026-11-25T00:00:00",
        "benchmarks": benches,
    }


BENCHES = [
    _bench("mix", "B512", "reference", 400.0, gb_per_s=10.0),
    _bench("mix", "B512", "triton", 40.0, gb_per_s=100.0, host_us_per_call=7.5),
    _bench("mix", "B512", "copy (roofline)", 32.0, gb_per_s=125.0),
    _bench("mix", "B512", "timm-elem", 4000.0, gb_per_s=1.0),
    _bench("sem_loss fwd+bwd", "B512-K10-D512", "reference", 300.0, img_per_s=1.0),
    _bench("sem_loss fwd+bwd", "B512-K10-D512", "triton", 50.0, img_per_s=6.0),
    _bench("step", "B128", "sem", 13.0, img_per_s=1.0),
    _bench("step", "B128", "mixup (gamma=0)", 10.0, img_per_s=1.3),
    _bench("step", "B128", "paper-style loop", 52.0, img_per_s=0.25),
    {"group": "mix", "extra_info": {}},  # a disabled (untimed) run leaves no timing
]
RUN = _report("NVIDIA H100", BENCHES)


def test_section_has_the_device_commit_command_selection_tables_with_spread_and_target_ratios():
    text = section(RUN, "pytest benchmarks --benchmark-only")
    assert text.startswith("## NVIDIA H100\n")
    assert "`0123456789ab`" in text and "`pytest benchmarks --benchmark-only`" in text
    assert "- selection: the whole suite (10 benchmarks)" in text and f"`{RUN_ID}`" in text
    # median, min, IQR (absolute and % of the median), rounds x calls, host µs, throughput, vs reference
    assert "| B512 | triton | 40 | 36 | 4 (10%) | 15 × 1 | 7.5 | 100 GB/s | 10× |" in text
    # median over median, in brackets q1/q3 and q3/q1
    assert "| mix B512 | triton bandwidth / copy bandwidth | 80% (72%–88%) | ≥ 90% |" in text
    assert "| mix B512 | triton speed-up over timm elem mode | 100.00× (90.48×–110.53×) | ≥ 20× |" in text
    assert "| loss B512-K10-D512 | triton speed-up over reference | 6.00× (5.43×–6.63×) | ≥ 5× |" in text
    assert "| step B128 | SEM overhead: sem / mixup (gamma=0) time | 1.30× (1.18×–1.44×) | ≤ 1.35× |" in text
    assert "| step B128 | fastest sem_fast step over the paper-style loop | 4.00× (3.62×–4.42×) | ≥ 4× |" in (text)
    assert "Not computed" not in text


def test_a_ratio_of_rows_from_two_invocations_is_refused_not_written():
    benches = [_bench("mix", "B512", "copy (roofline)", 32.0, gb_per_s=125.0, invocation="run-2"), *BENCHES[:2]]
    text = section(_report("NVIDIA H100", benches), "c")
    assert "bandwidth / copy bandwidth |" not in text
    assert "- mix B512: triton bandwidth / copy bandwidth (copy (roofline) and triton from different runs)" in text
    assert "rows of several runs: ratios only within one" in text
    # ... and the table's "vs reference" column compares rows of one invocation only
    assert "| B512 | copy (roofline) | 32 | 28.8 | 3.2 (10%) | 15 × 1 |  | 125 GB/s |  |" in text


def test_rows_without_an_invocation_form_no_ratio():
    benches = [_bench("mix", "B512", p, us, invocation="") for p, us in (("copy (roofline)", 32.0), ("triton", 40.0))]
    assert "| mix B512 | triton bandwidth" not in section(_report("NVIDIA H100", benches), "c")


def test_a_subset_run_is_marked_and_does_not_replace_the_whole_suite():
    subset = {"subset": True, "description": "-k 'mix'", "selected": 4, "deselected": 40}
    text = section(_report("NVIDIA H100", BENCHES[:4], subset), "pytest benchmarks -k mix")
    assert text.startswith("## NVIDIA H100 (subset: -k 'mix')\n")
    assert "- selection: **a subset of the suite** (-k 'mix'; 4 benchmarks selected, 40 deselected)" in text
    whole = merge("", section(RUN, "whole run"))
    both = merge(whole, text)
    assert "whole run" in both and "pytest benchmarks -k mix" in both
    again = merge(both, section(RUN, "whole run 2"))  # a whole run supersedes the subset sections
    assert "subset" not in again and again.count("## NVIDIA H100") == 1 and "whole run 2" in again


def test_a_json_without_recorded_selection_is_treated_as_a_subset():
    run = _report("NVIDIA H100", BENCHES)
    del run["machine_info"]["selection"]
    assert section(run, "c").startswith("## NVIDIA H100 (subset?)\n")


def test_merge_replaces_the_same_device_and_keeps_others():
    first = merge("", section(RUN, "run 1"))
    cpu_machine = {"cpu": {"brand_raw": "EPYC", "count": 2}, "selection": RUN["machine_info"]["selection"]}
    cpu = section(_report(None, []) | {"machine_info": cpu_machine}, "cpu run")
    both = merge(first, cpu)
    again = merge(both, section(RUN, "run 2"))
    assert again.count("## NVIDIA H100") == 1 and "run 2" in again and "run 1" not in again
    assert again.index("## CPU: EPYC") < again.index("## NVIDIA H100")  # replaced where it stood
    assert "## CPU: EPYC (2 cores)" in again and again.startswith("# Benchmark results")


def test_sweep_packing_gain_is_reported_against_one_process_at_a_time():
    group = "sweep: trials per device-hour"
    run = _report("NVIDIA H100", [_bench(group, "8 trials", "sequential", 90.0, img_per_s=1.0),
                                  _bench(group, "8 trials", "1 process at a time", 100.0, img_per_s=1.0),
                                  _bench(group, "8 trials", "packed x4", 40.0, img_per_s=1.0)])  # fmt: skip
    assert "| sweep 8 trials | trials per device-hour, packed x4 / 1 process at a time | 2.50× (" in section(run, "c")


def test_two_runs_agree_when_every_rows_and_target_ratios_spreads_overlap():
    def run(triton, copy, **extra):
        return _report("NVIDIA H100", [_bench("mix", "B512", "triton", triton, **extra),
                                       _bench("mix", "B512", "copy (roofline)", copy)])  # fmt: skip

    first = run(40.0, 30.0)
    text, agree = compare(first, run(41.0, 29.0))  # within each other's interquartile ranges
    assert agree and "Rows: 2 of 2 agree" in text and "Ratios: 1 of 1 agree" in text
    assert "The reports agree (rows and ratios)." in text
    # Both rows 40 % slower: every row disagrees, so the runs do, though the ratio (75 % of copy
    # bandwidth) agrees.
    text, agree = compare(first, run(56.0, 42.0))
    assert not agree and "| mix | B512 | triton | 40 [38, 42] | 56 [53.2, 58.8] | +40.0% | **no** |" in text
    assert "Rows: 0 of 2 agree within their stated spreads" in text and "median drift 40.0%" in text
    assert "| mix B512 | triton bandwidth / copy bandwidth | 0.75 [0.679, 0.829] | 0.75 [0.679, 0.829] | yes |" in text
    assert "Ratios: 1 of 1 agree" in text and "The reports do not agree" in text
    text, agree = compare(first, run(60.0, 30.0))  # the kernel alone 50 % slower: the ratio moves
    assert not agree and "| 0.5 [0.452, 0.553] | **no** |" in text and "Ratios: 0 of 1 agree" in text
    text, agree = compare(first, run(60.0, 30.0, contended=True))  # a contended row is not held to it
    assert agree and "| +50.0% | contended in report 2 |" in text and "| contended |" in text
    text, agree = compare(first, run(60.0, 30.0, rounds=1))  # nor a row timed in one round
    assert agree and "| one round |" in text and "Ratios: 0 of 0 agree" in text


def _runs(*triton_us, copy_us=30.0, contended=()):
    """Runs of one command: triton's median per run, the copy's fixed; quartiles ±1 %."""
    return [_report("NVIDIA H100", [_bench("mix", "B512", "triton", t, q=(0.99, 1.01), invocation=f"run-{i}",
                                           contended=i in contended, gb_per_s=4000 / t),
                                    _bench("mix", "B512", "copy (roofline)", copy_us, q=(0.99, 1.01),
                                           invocation=f"run-{i}")])
            for i, t in enumerate(triton_us)]  # fmt: skip


def test_a_pooled_report_states_the_median_and_range_of_the_runs_medians_and_ratios():
    text = section(_runs(40.0, 50.0, 44.0), "scripts/bench_runs.sh runs 3")
    assert "- runs: 3, one after another" in text and "pooled:" in text
    assert "| case | provider | µs/call (median of the runs) | min | runs' medians | runs: rounds × calls |" in text
    # median of 40, 44, 50; min 0.9 x 40; 40-50 is 23 % of 44; 3 runs of 15 rounds; GB/s at 44 µs
    assert "| B512 | triton | 44 | 36 | 40–50 (23%) | 3: 45 × 1 | 90.9 GB/s |" in text
    # each run's ratio (30/40, 30/50, 30/44): median 68 %, lowest 60 %, highest 75 %
    assert "Formed within each of the 3 runs" in text
    assert "| mix B512 | triton bandwidth / copy bandwidth | 68% (60%–75%) | ≥ 90% |" in text


def test_pooling_refuses_runs_of_another_commit_or_selection():
    runs = _runs(40.0, 41.0)
    runs[1]["commit_info"] = {"id": "fedcba9876543210", "dirty": False}
    with pytest.raises(ValueError, match="reports: run 2 is not a run of the same command as run 1"):
        section(runs, "c")
    runs = _runs(40.0, 41.0)
    runs[1]["machine_info"]["selection"] = {"subset": True, "description": "-k mix", "selected": 2, "deselected": 8}
    with pytest.raises(ValueError, match="run 2 is not a run of the same command"):
        compare(runs[:1], runs)


def test_a_pooled_row_leaves_out_the_runs_it_was_contended_in_while_three_remain():
    text = section(_runs(40.0, 41.0, 42.0, 400.0, contended={3}), "c")
    assert "| B512 | triton | 41 | 36 | 40–42 (5%) | 3: 45 × 1 |" in text
    text = section(_runs(40.0, 41.0, 400.0, contended={1, 2}), "c")  # too few left: all runs, marked
    assert "| B512 | triton | 41 | 36 | 40–400 (878%) | 3: 45 × 1 **contended** |" in text
    assert "**contended** | ≥ 90% |" in text


def test_pooled_reports_agree_where_single_runs_do_not(tmp_path):
    a, b = _runs(40.0, 46.0, 43.0), _runs(45.0, 41.0, 48.0)
    assert not compare(a[0], b[0])[1]  # run against run: 40 [39.6, 40.4] vs 45 [44.6, 45.5]
    text, agree = compare(a, b)
    assert agree and "| report 1 (3 runs): µs [spread] | report 2 (3 runs): µs [spread] |" in text
    assert "| mix | B512 | triton | 43 [40, 46] | 45 [41, 48] | +4.7% | yes |" in text
    # ... and from the command line, each report a directory of runs (exit status 1: disagree)
    for name, runs in (("a", a), ("b", b), ("c", _runs(60.0, 61.0, 62.0))):
        (tmp_path / name).mkdir()
        for i, run in enumerate(runs):  # plain and gzipped JSON alike
            path = tmp_path / name / f"{i}.json"
            if i == 0:
                path.with_suffix(".json.gz").write_bytes(gzip.compress(json.dumps(run).encode()))
            else:
                path.write_text(json.dumps(run))
    assert main(["--compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert main(["--compare", str(tmp_path / "a"), str(tmp_path / "c")]) == 1
    out = tmp_path / "RESULTS.md"
    assert main([str(tmp_path / "a"), "--command", "bench_runs a", "--out", str(out)]) == 0
    assert "- runs: 3" in out.read_text() and "`bench_runs a`" in out.read_text()


def test_bench_runs_sh_times_the_runs_in_fresh_processes_and_pools_them(tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "bench_runs.sh"
    env = {**os.environ, "PYTHON": sys.executable}
    selection = "test_sem_loss_fwd_bwd and reference-B128-K10-D512 and not compiled"
    done = subprocess.run(["bash", script, tmp_path / "runs", "2", "-k", selection], check=False, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    runs = [json.loads((tmp_path / "runs" / f"{i}.json").read_text()) for i in (1, 2)]
    assert runs[0]["machine_info"]["invocation"] != runs[1]["machine_info"]["invocation"]
    report = (tmp_path / "runs" / "report.md").read_text()
    assert "- runs: 2, one after another" in report and "| B128-K10-D512 | reference |" in report
    assert f"- command: `scripts/bench_runs.sh {tmp_path / 'runs'} 2 -k {selection.replace(' ', chr(92) + ' ')}`" in (
        report
    )
    again = subprocess.run(
        ["bash", script, tmp_path / "runs", "2"], check=False, env=env, capture_output=True, text=True
    )
    assert again.returncode == 2 and "already holds runs" in again.stderr


def test_the_recorded_cpu_runs_pool_and_agree_as_the_readme_states():
    recorded = Path(__file__).resolve().parents[1] / "benchmarks" / "recorded_runs" / "2026-11-29-cpu"
    text, agree = compare(*(load_runs(recorded / side) for side in ("a", "b")))
    assert agree and "Rows: 61 of 61 agree" in text and "Ratios: 22 of 22 agree" in text


def test_a_ratio_of_rows_timed_in_one_round_gets_its_range_from_the_runs():
    group = "sweep: trials per device-hour"
    runs = [_report("NVIDIA H100", [_bench(group, "8 trials", "sequential", 100.0, rounds=1, invocation=f"r{i}"),
                                    _bench(group, "8 trials", "packed x4", packed, rounds=1, invocation=f"r{i}")])
            for i, packed in enumerate((40.0, 50.0, 45.0))]  # fmt: skip
    assert "packed x4 / sequential | 2.50× |" in section(runs[0], "c")  # one round: no range in a run
    assert "packed x4 / sequential | 2.22× (2.00×–2.50×) |" in section(runs, "c")

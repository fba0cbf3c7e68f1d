"""The SASS path counter of `benchmarks.static` on hand-written listings (the format of
``nvdisasm -c``): longest path through branches, loops run a given number of times, subroutine
calls, local-memory instructions; and the budget / spill verdict of a table row."""

import pytest

from benchmarks.static import Row, count_paths, parse_sass

HEADER = "//--------------------- .text.k                 --------------------------\n"


def listing(lines: list[str]) -> str:
    body = []
    for k, line in enumerate(lines):
        body.append(line if line.endswith(":") else f"        /*{16 * k:04x}*/                   {line} ;")
    return HEADER + "\n".join(body) + "\n//--------------------- SYMBOLS --------------------------\n"


def kernel(lines: list[str]):
    return parse_sass(listing(lines))["k"]


def test_a_branch_counts_its_longer_side_and_padding_after_exit_is_ignored():
    f = kernel([
        "S2R R0, SR_TID.X", "ISETP.GT.AND P0, PT, R0, 3, PT", "@P0 BRA `(.L_x_0)",
        "IADD3 R1, R0, 1, RZ", "EXIT",
        ".L_x_0:", "IADD3 R1, R0, 2, RZ", "IADD3 R1, R1, 2, RZ", "IADD3 R1, R1, 2, RZ", "EXIT",
        ".L_x_1:", "BRA `(.L_x_1)", "NOP", "NOP",
    ])  # fmt: skip
    pc = count_paths(f)
    assert pc.longest == 3 + 4 and pc.loops == [] and pc.calls == 0 and pc.local == 0


def test_a_loop_counts_its_body_once_per_trip():
    f = kernel([
        "MOV R1, RZ",
        ".L_x_0:", "IADD3 R1, R1, 1, RZ", "ISETP.LT.AND P0, PT, R1, 3, PT", "@P0 BRA `(.L_x_0)",
        "STG.E [R2.64], R1", "EXIT",
    ])  # fmt: skip
    assert count_paths(f).loops == [3]
    assert count_paths(f).longest == 1 + 3 + 2
    assert count_paths(f, trips=(3,)).longest == 1 + 3 * 3 + 2
    with pytest.raises(ValueError, match="1 loops, 2 trip counts"):
        count_paths(f, trips=(3, 3))


def test_a_call_adds_its_subroutine_and_local_memory_is_counted():
    f = kernel([
        "STL [R1], R4", "CALL.REL.NOINC `($__internal_0_$__cuda_sm20_div_u64)", "LDL R4, [R1]", "EXIT",
        "$__internal_0_$__cuda_sm20_div_u64:", "IMAD R2, R3, R4, RZ", "IADD3 R2, R2, 1, RZ", "RET.REL.NODEC R20 `(k)",
    ])  # fmt: skip
    pc = count_paths(f)
    assert pc.longest == 4 + 3 and pc.calls == 1 and pc.local == 2


def test_a_row_fails_over_its_budget_or_with_any_spill():
    def row(instructions, spill, budget):
        return Row("triton", "case", "k", "", instructions, 24, 64, spill, [], 0, budget)

    assert row(480, 0, 20).ok and not row(481, 0, 20).ok
    assert not row(100, 4, None).ok and row(100, 0, None).ok

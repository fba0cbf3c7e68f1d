"""Static measures of the fused kernels for an H100/H200 (sm_90), without a GPU.

    python -m benchmarks.static            # print the table
    python -m benchmarks.static --write    # ... and regenerate its section of benchmarks/RESULTS.md
    python -m benchmarks.static --check    # exit 1 if a mix variant is over budget or any variant spills

What is compiled: the kernel variants the launchers pick at representative shapes. Triton: the
op's own launchers (`sem_fast.ops.triton.mix`, `sem_fast.ops.triton.loss`) are called with
``meta`` tensors while ``JITFunction.run`` is replaced by a recorder, so the kernel, grid,
constexprs, ``num_warps`` and argument specialization (16-byte alignment, divisibility by 16)
are exactly the launchers'; each recorded launch is compiled with Triton's whole compiler for
``GPUTarget("cuda", 90, 32)`` (sm_90a, ptxas from the triton wheel). CUDA: ``csrc/cuda/*.cu``
compiled by ``nvcc -cubin -arch=sm_90 -O3`` with torch's nvcc flags (`CUDA_FLAGS`), every
template instance the launchers dispatch to; `CUDA_MIX` names the instance the launcher picks
for each case.

How "SASS instructions per output element" is counted (reproducible with ``nvdisasm -c`` on the
cubin): the kernel's SASS is split into basic blocks (leaders: the entry, branch targets, the
instruction after a branch or ``EXIT``); the count is the number of instructions on the longest
path from the entry to an ``EXIT`` (every instruction issued on that path, predicated-off ones,
``NOP`` and the final ``EXIT`` included; a ``CALL`` adds its subroutine's longest path), so a
per-sample branch (mixup vs CutMix) counts its longer side. A loop (none in the mix kernels
measured against a budget) counts its body ``trips`` times: the longest path through the DAG
without back edges plus ``(trips - 1)`` times the longest path from the loop's header to its
latch. The count is divided by the output elements one thread writes (a mix "element" is one
``(c, h, w)`` position of a sample, for which the forward writes both ``x_clean`` and ``x_mix``):
``C * V`` for the run-tiled mix kernels (each thread owns ``V`` pixels x ``C`` channels), one
pixel's ``C`` channels for the CUDA kernels that loop over channels. Full tiles are assumed
(the masked tail of the last tile of a sample is not counted separately).

Registers and spills: ``cuobjdump --dump-resource-usage`` (REG, and STACK/LOCAL bytes) of the
cubin, plus the count of local-memory instructions (``LDL``/``STL``) in the SASS; a "spill" is
any of these being non-zero.

Budgets (issue 13, from H100/H200 issue rate vs HBM bandwidth): uint8 -> bf16 (and fp16)
channels-last mixup and CutMix without augmentation <= 20 instructions per element, with crop +
flip <= 30; uint8 -> fp32 <= 35. The loss kernels are listed for registers and spills (their
per-element count depends on loops over classes; not budgeted here).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
HEADING = "## Static measures: SASS for H100/H200 (sm_90), compiled without a GPU"

#: A representative large batch (ImageNet-sized) and CIFAR; B only sets the grid.
SHAPES = {"224x224": (512, 3, 224, 224), "32x32": (512, 3, 32, 32)}
#: The H100/H200 SM count, for launchers that size their grid by it.
SM_COUNT = 132


# ----------------------------------------------------------------------------- SASS analysis


@dataclass
class Instr:
    addr: int
    op: str  # mnemonic with modifiers, e.g. "LDG.E.128"
    predicated: bool
    target: str | None  # label of a BRA/CALL


@dataclass
class Function:
    name: str
    instrs: list[Instr] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)  # label -> index of the next instruction


_INSTR = re.compile(r"^\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_LABEL = re.compile(r"^(\.L_x_\d+|[A-Za-z_$][\w$.]*):\s*$")
_TARGET = re.compile(r"`\(([^)]+)\)")


def parse_sass(text: str) -> dict[str, Function]:
    """``nvdisasm -c`` output -> functions (by symbol name) with their instructions and labels."""
    functions: dict[str, Function] = {}
    current: Function | None = None
    for line in text.splitlines():
        header = re.match(r"^//-+ \.text\.(\S+)\s+-+$", line)
        if header:
            current = functions.setdefault(header.group(1), Function(header.group(1)))
            continue
        if line.startswith("//---"):
            current = None
            continue
        if current is None:
            continue
        m = _INSTR.match(line)
        if m:
            body = m.group(2)
            predicated = body.startswith("@")
            if predicated:
                body = body.split(None, 1)[1]
            op = body.split()[0]
            target = _TARGET.search(body)
            current.instrs.append(Instr(int(m.group(1), 16), op, predicated, target.group(1) if target else None))
            continue
        m = _LABEL.match(line)
        if m:
            current.labels[m.group(1)] = len(current.instrs)
    return functions


@dataclass
class PathCount:
    longest: int  # instructions on the longest entry -> EXIT path (loops run as given, calls inlined)
    loops: list[int]  # per loop (by header address): longest header -> latch path
    calls: int  # CALL instructions reachable
    local: int  # LDL/STL (local memory, i.e. spills or stack arrays) reachable


def _blocks(f: Function, entry: int) -> tuple[list[int], dict[int, list[int]]]:
    """Leaders reachable from ``entry`` and the successor leaders of each block."""
    leaders = {entry} | set(f.labels.values())
    for k, ins in enumerate(f.instrs):
        if ins.op.startswith(("BRA", "EXIT", "RET", "BRX", "JMX")) and k + 1 < len(f.instrs):
            leaders.add(k + 1)
    ordered = sorted(x for x in leaders if x < len(f.instrs))
    succ: dict[int, list[int]] = {}
    for n, start in enumerate(ordered):
        end = ordered[n + 1] if n + 1 < len(ordered) else len(f.instrs)
        last = f.instrs[end - 1]
        out = []
        if last.op.startswith(("BRX", "JMX")):
            raise ValueError(f"{f.name}: indirect branch at {last.addr:#x}, cannot count paths")
        if last.op.startswith("BRA") and last.target:
            out.append(f.labels[last.target])
        ends = last.op.startswith(("EXIT", "RET")) or (last.op.startswith("BRA") and not last.op.startswith("BRA.DIV"))
        if (last.predicated or not ends) and end < len(f.instrs):
            out.append(end)
        succ[start] = out
    reach, todo = set(), [entry]
    while todo:
        b = todo.pop()
        if b not in reach:
            reach.add(b)
            todo.extend(succ[b])
    return sorted(reach), succ


def count_paths(f: Function, entry: int = 0, trips: tuple[int, ...] = (), _memo: dict | None = None) -> PathCount:
    """`PathCount` of the code of ``f`` from instruction ``entry`` (a subroutine ends at RET), with
    loop ``k`` (by header address) run ``trips[k]`` times (default once): its header carries
    ``(trips - 1)`` times the longest header -> latch path, so the longest path through the DAG
    without back edges counts a loop only if it passes through it (inner loops first)."""
    memo = {} if _memo is None else _memo
    blocks, succ = _blocks(f, entry)
    starts = sorted(succ)
    size, calls, local, weight = {}, 0, 0, {}
    for b in blocks:
        end = next((s for s in starts if s > b), len(f.instrs))
        size[b] = end - b
        weight[b] = size[b]
        for ins in f.instrs[b:end]:
            if ins.op.startswith("CALL") and ins.target:
                callee = f.labels[ins.target]
                if callee not in memo:
                    memo[callee] = None  # recursion guard
                    memo[callee] = count_paths(f, callee, (), memo)
                sub = memo[callee]
                if sub is None:
                    raise ValueError(f"{f.name}: recursive call at {ins.addr:#x}")
                weight[b] += sub.longest
                calls += 1 + sub.calls
                local += sub.local
            elif ins.op.startswith(("LDL", "STL")):
                local += 1
    # Back edges by DFS; the rest is a DAG.
    back, state, order = set(), {}, []

    def dfs(b: int) -> None:
        state[b] = 1
        for s in succ[b]:
            if state.get(s) == 1:
                back.add((b, s))
            elif s not in state:
                dfs(s)
        state[b] = 2
        order.append(b)

    sys.setrecursionlimit(max(10000, sys.getrecursionlimit()))
    dfs(entry)
    topo = order[::-1]

    def longest_from(src: int) -> dict[int, int]:
        dist = {src: weight[src]}
        for b in topo:
            if b in dist:
                for s in succ[b]:
                    if (b, s) not in back:
                        dist[s] = max(dist.get(s, 0), dist[b] + weight[s])
        return dist

    def loop_nodes(header: int) -> set[int]:
        nodes, todo = {header}, [b for b, h in back if h == header]
        while todo:
            b = todo.pop()
            if b not in nodes:
                nodes.add(b)
                todo.extend(p for p in blocks if b in succ[p])
        return nodes

    headers = sorted({h for _, h in back})
    if trips and len(trips) != len(headers):
        raise ValueError(f"{f.name}: {len(headers)} loops, {len(trips)} trip counts given")
    trip_of = dict(zip(headers, trips))
    bodies = {}
    for header in sorted(headers, key=lambda h: len(loop_nodes(h))):  # inner loops first
        inside = longest_from(header)
        bodies[header] = max(inside[b] for b, h in back if h == header and b in inside)
        weight[header] += (trip_of.get(header, 1) - 1) * bodies[header]
    dist = longest_from(entry)
    exits = [b for b in blocks if f.instrs[b + size[b] - 1].op.startswith(("EXIT", "RET")) or not succ[b]]
    return PathCount(max(dist[b] for b in exits if b in dist), [bodies[h] for h in headers], calls, local)


def _tool(name: str) -> str:
    """A CUDA binary tool: the one in the triton wheel (same ptxas generation as Triton), else PATH."""
    import triton

    path = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    found = str(path) if path.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found in the triton wheel or on PATH")
    return found


def disassemble(cubin: bytes) -> tuple[dict[str, Function], dict[str, dict[str, int]]]:
    """SASS functions and resource usage (REG, STACK, LOCAL per function) of a cubin."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "k.cubin")
        path.write_bytes(cubin)
        sass = subprocess.run([_tool("nvdisasm"), "-c", str(path)], capture_output=True, text=True, check=True).stdout
        res = subprocess.run(
            [_tool("cuobjdump"), "--dump-resource-usage", str(path)], capture_output=True, text=True, check=True
        ).stdout
    usage, name = {}, None
    for line in res.splitlines():
        m = re.search(r"Function (\S+):", line)
        if m:
            name = m.group(1)
        elif name and "REG:" in line:
            usage[name] = {k: int(v) for k, v in re.findall(r"(REG|STACK|LOCAL):(\d+)", line)}
    return parse_sass(sass), usage


# ----------------------------------------------------------------------------- Triton


@dataclass
class Launch:
    kernel: object  # triton JITFunction
    args: tuple
    kwargs: dict
    grid: tuple


@contextlib.contextmanager
def recorded_launches() -> Iterator[list[Launch]]:
    """Replace ``JITFunction.run`` by a recorder: launches inside the block are listed, not run."""
    from triton.runtime.jit import JITFunction

    launches: list[Launch] = []
    original = JITFunction.run

    def record(self, *args, grid, warmup, **kwargs):
        launches.append(Launch(self, args, kwargs, grid))

    JITFunction.run = record
    try:
        yield launches
    finally:
        JITFunction.run = original


def compile_sm90(launch: Launch):
    """Compile a recorded launch for sm_90a as Triton's JIT would on an H100 (same binder:
    constexprs, specialization of pointers and integers, options)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = launch.kernel
    target = GPUTarget("cuda", 90, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, specialization, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, launch.kwargs, bound, specialization, options)
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)


def _meta(*shape, dtype, channels_last=False):
    import torch

    t = torch.empty(shape, dtype=dtype, device="meta")
    return t.to(memory_format=torch.channels_last) if channels_last else t


def _draws(B: int):
    import torch

    draw = (_meta(B, dtype=torch.int64), _meta(B, dtype=torch.float32), _meta(B, 4, dtype=torch.int32),
            _meta(B, dtype=torch.bool))  # fmt: skip
    return draw, (_meta(B, 2, dtype=torch.int32), _meta(B, dtype=torch.bool))


def triton_mix_launches(case: MixCase, shape: tuple[int, int, int, int]) -> list[Launch]:
    """The launches of the Triton mix op for ``case`` at ``shape`` (B, C, H, W)."""
    import torch

    from sem_fast.ops.triton import mix

    B, C, H, W = shape
    draw, augment = _draws(B)
    offset, flip = augment if case.padding else (None, None)
    dtype = getattr(torch, case.out)
    with recorded_launches() as launches:
        if case.op == "forward":
            if case.input == "uint8":
                images = _meta(B, H, W + (2 if case.strided else 0), C, dtype=torch.uint8)[:, :, :W]
            else:
                images = _meta(B, C, H, W, dtype=getattr(torch, case.input), channels_last=case.channels_last)
            mix.mix_images_kernel(
                images, *draw, offset, flip, [0.5] * C, [0.25] * C, 4 if case.padding else 0,
                case.padding == "reflect", dtype, case.channels_last, case.mixes,
            )  # fmt: skip
        else:
            grad = _meta(B, C, H, W, dtype=dtype, channels_last=case.channels_last)
            mix.mix_images_backward_kernel(
                grad if case.grad_clean else None, grad, *draw, offset, flip, 4 if case.padding else 0,
                case.padding == "reflect", dtype, case.channels_last,
            )  # fmt: skip
    return launches


def triton_loss_launches(B: int, K: int, D: int, dtype: str) -> list[Launch]:
    """The launches of the Triton loss op at ``(B, K, D)``: forward, then backward with the loss's
    gradient alone (every input gradient wanted) and with those of ce and sem (no z_clean
    gradient). Only the launchers' entry points and their device hooks (SM count, the election
    counter) are named here: update them when the loss launchers change."""
    import torch

    from sem_fast.ops.triton import loss

    loss._sm_count = lambda device: SM_COUNT
    loss.election_counter = lambda device: _meta(1, dtype=torch.int32)
    t = getattr(torch, dtype)
    logits, z_mix, z_clean = _meta(B, K, dtype=t), _meta(B, D, dtype=t), _meta(B, D, dtype=t)
    labels, (perm, lam, _, _) = _meta(B, dtype=torch.int64), _draws(B)[0]
    g, row_stats, inv_perm = _meta(dtype=torch.float32), _meta(B, 2, dtype=torch.float32), _meta(B, dtype=torch.int64)
    inputs = (logits, z_mix, z_clean, labels, perm, lam, row_stats, inv_perm, 1.0, 0.1, True)
    with recorded_launches() as launches:
        loss.sem_loss_kernel(logits, z_mix, z_clean, labels, perm, lam, 1.0, 0.1, True)
        loss.sem_loss_backward_kernel(g, None, None, *inputs, True, True, True)
        loss.sem_loss_backward_kernel(None, g, g, *inputs, True, True, False)
    return launches


# ----------------------------------------------------------------------------- cases and budgets


@dataclass(frozen=True)
class MixCase:
    """One mix variant: forward (``input`` -> ``out``) or backward (gradients in ``out``)."""

    name: str
    op: str = "forward"
    input: str = "uint8"
    out: str = "bfloat16"
    padding: str | None = None  # None: no crop/flip; "zeros" / "reflect": crop + flip
    channels_last: bool = True
    mixes: bool = True
    strided: bool = False  # uint8 input as a column slice (not dense)
    grad_clean: bool = True
    budget: int | None = None
    trips: tuple[int, ...] = ()  # loop trip counts (the reflect backward loops over 9 candidates)


MIX_CASES = [
    MixCase("u8->bf16 CL, mixup/CutMix", budget=20),
    MixCase("u8->bf16 CL, crop+flip zeros", padding="zeros", budget=30),
    MixCase("u8->bf16 CL, crop+flip reflect", padding="reflect", budget=30),
    MixCase("u8->fp16 CL, mixup/CutMix", out="float16", budget=20),
    MixCase("u8->fp32 CL, mixup/CutMix", out="float32", budget=35),
    MixCase("u8->fp32 CL, crop+flip zeros", out="float32", padding="zeros", budget=35),
    MixCase("u8->fp32 CL, crop+flip reflect", out="float32", padding="reflect", budget=35),
    MixCase("u8->bf16 CL, clean only", mixes=False),
    MixCase("u8 column slice->bf16 CL", strided=True),
    MixCase("u8->bf16 NCHW", channels_last=False),
    MixCase("fp32 NCHW->fp32 NCHW", input="float32", out="float32", channels_last=False),
    MixCase("bf16 CL->bf16 CL", input="bfloat16"),
    MixCase(
        "fp32 NCHW->fp32 NCHW, crop+flip reflect",
        input="float32",
        out="float32",
        channels_last=False,
        padding="reflect",
    ),
    MixCase("backward fp32 CL", op="backward", out="float32"),
    MixCase("backward bf16 CL", op="backward"),
    MixCase("backward fp32 CL, grad_mix only", op="backward", out="float32", grad_clean=False),
    MixCase("backward fp32 NCHW", op="backward", out="float32", channels_last=False),
    MixCase("backward fp32 CL, crop+flip zeros", op="backward", out="float32", padding="zeros"),
    MixCase("backward fp32 CL, crop+flip reflect", op="backward", out="float32", padding="reflect", trips=(9,)),
]

#: Loss shapes (B, K, D, dtype): CIFAR-10/100 and ImageNet heads.
LOSS_CASES = [(512, 10, 512, "bfloat16"), (512, 100, 640, "bfloat16"), (256, 1000, 2048, "float32")]


@dataclass
class Row:
    backend: str
    case: str
    kernel: str
    shape: str
    instructions: int | None  # dynamic count per thread on the hot path (None: loop-bound, see loops)
    elements: int | None  # output elements per thread
    registers: int
    spill: int  # STACK + LOCAL bytes + LDL/STL instructions
    loops: list[int]
    calls: int
    budget: int | None

    @property
    def per_element(self) -> float | None:
        return None if self.instructions is None or not self.elements else self.instructions / self.elements

    @property
    def ok(self) -> bool:
        within = self.budget is None or (self.per_element is not None and self.per_element <= self.budget)
        return within and self.spill == 0

    def markdown(self) -> str:
        per = "" if self.per_element is None else f"{self.per_element:.1f}"
        loops = ", ".join(map(str, self.loops)) if self.loops else ""
        budget = "" if self.budget is None else f"≤ {self.budget}"
        status = "ok" if self.ok else "**FAIL**"
        return (f"| {self.backend} | {self.case} | `{self.kernel}` | {self.shape} | {per} | {self.instructions or ''} | "
                f"{self.elements or ''} | {self.registers} | {self.spill} | {loops} | {budget} | {status} |")  # fmt: skip


def _measure(functions: dict[str, Function], usage: dict, name: str, trips: tuple[int, ...] = ()):
    """``(PathCount, registers, spill)`` of kernel ``name``: spill = STACK + LOCAL bytes + LDL/STL."""
    pc = count_paths(functions[name], trips=trips)
    u = usage.get(name, {})
    return pc, u.get("REG", 0), u.get("STACK", 0) + u.get("LOCAL", 0) + pc.local


def triton_rows() -> list[Row]:
    """Rows of every Triton mix case at both shapes and of the loss op's launches."""
    rows: list[Row] = []
    compiled: dict[tuple, tuple] = {}

    def measure(launch: Launch, trips: tuple[int, ...] = ()):
        key = (launch.kernel.fn.__name__, repr(launch.args), repr(sorted(launch.kwargs.items())))
        if key not in compiled:
            kernel = compile_sm90(launch)
            compiled[key] = (*disassemble(kernel.asm["cubin"]), kernel.metadata.name)
        functions, usage, name = compiled[key]
        return _measure(functions, usage, name, trips)

    for case in MIX_CASES:
        for shape_name, shape in SHAPES.items():
            for launch in triton_mix_launches(case, shape):
                name = launch.kernel.fn.__name__
                if name == "_inverse_permutation_kernel":
                    continue  # listed once with the loss
                pc, regs, spill = measure(launch, case.trips)
                k = launch.kwargs
                elements = k["C"] * k["V"] * k["TH"] // (32 * k["num_warps"])  # runs of V pixels x C channels
                rows.append(Row("triton", case.name, name, shape_name, pc.longest, elements, regs, spill,
                                pc.loops, pc.calls, case.budget))  # fmt: skip
    for B, K, D, dtype in LOSS_CASES:
        for launch in triton_loss_launches(B, K, D, dtype):
            pc, regs, spill = measure(launch)
            rows.append(Row("triton", f"loss {dtype}", launch.kernel.fn.__name__, f"B{B} K{K} D{D}",
                            None if pc.loops else pc.longest, None, regs, spill, pc.loops, pc.calls, None))  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- CUDA (nvcc)


def cuda_flags() -> list[str]:
    """What torch's CUDAExtension passes to nvcc (no implicit half/bfloat16 conversions or
    operators), for sm_90."""
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    return ["-std=c++17", "-O3", "-arch=sm_90", *COMMON_NVCC_FLAGS]


def nvcc_cubin(source: Path) -> bytes:
    """``nvcc -cubin -arch=sm_90`` of one .cu file."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise FileNotFoundError("nvcc is not on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, source.stem + ".cubin")
        subprocess.run([nvcc, "-cubin", *cuda_flags(), "-o", str(out), str(source)], check=True, capture_output=True,
                       text=True)  # fmt: skip
        return out.read_bytes()


def kernel_names(mangled: list[str]) -> dict[str, str]:
    """Mangled -> short demangled kernel names, e.g. ``mix_forward_run_kernel<__nv_bfloat16, 3, 0>``
    (``c++filt``; the mangled name where it is missing)."""
    filt = shutil.which("c++filt")
    if filt is None:
        return {n: n for n in mangled}
    out = subprocess.run([filt], input="\n".join(mangled), capture_output=True, text=True, check=True).stdout
    short = (re.sub(r"^(void )?sem_fast::cuda::(\(anonymous namespace\)::)?", "", line) for line in out.splitlines())
    return {m: s.split("(")[0] for m, s in zip(mangled, short)}


def _run(out: str, source: int) -> str:
    return f"mix_forward_run_kernel<{out}, 3, {source}>"


#: CUDA mix case -> (kernel instance launch_mix_forward / launch_mix_backward pick at 224x224 and
#: 32x32 with 3 channels, trip count of each of its channel loops, output elements per thread).
#: Run kernel sources: 0 dense, 1 strided, 2 crop+flip zeros, 3 crop+flip reflect (mix_kernels.cu).
CUDA_MIX: dict[str, tuple[str, int, int]] = {
    "u8->bf16 CL, mixup/CutMix": (_run("__nv_bfloat16", 0), 1, 24),
    "u8->bf16 CL, crop+flip zeros": (_run("__nv_bfloat16", 2), 1, 24),
    "u8->bf16 CL, crop+flip reflect": (_run("__nv_bfloat16", 3), 1, 24),
    "u8->fp16 CL, mixup/CutMix": (_run("__half", 0), 1, 24),
    "u8->fp32 CL, mixup/CutMix": (_run("float", 0), 1, 12),
    "u8->fp32 CL, crop+flip zeros": (_run("float", 2), 1, 12),
    "u8->fp32 CL, crop+flip reflect": (_run("float", 3), 1, 12),
    "u8->bf16 CL, clean only": (_run("__nv_bfloat16", 0), 1, 24),
    "u8 column slice->bf16 CL": (_run("__nv_bfloat16", 1), 1, 24),
    "u8->bf16 NCHW": ("mix_forward_kernel<unsigned char, __nv_bfloat16, int>", 3, 3),
    "fp32 NCHW->fp32 NCHW": ("mix_forward_kernel<float, float, int>", 3, 3),
    "bf16 CL->bf16 CL": ("mix_forward_kernel<__nv_bfloat16, __nv_bfloat16, int>", 3, 3),
    "fp32 NCHW->fp32 NCHW, crop+flip reflect": ("mix_forward_kernel<float, float, int>", 3, 3),
    "backward fp32 CL": ("mix_backward_kernel<float, float, int, 1>", 3, 3),
    "backward bf16 CL": ("mix_backward_kernel<__nv_bfloat16, __nv_bfloat16, int, 1>", 3, 3),
    "backward fp32 CL, grad_mix only": ("mix_backward_kernel<float, float, int, 1>", 3, 3),
    "backward fp32 NCHW": ("mix_backward_kernel<float, float, int, 1>", 3, 3),
    "backward fp32 CL, crop+flip zeros": ("mix_backward_kernel<float, float, int, 1>", 3, 3),
    "backward fp32 CL, crop+flip reflect": ("mix_backward_kernel<float, float, int, 9>", 3, 3),
}


def cuda_rows() -> list[Row]:
    """Rows of every CUDA mix case (`CUDA_MIX`), of every other kernel of csrc/cuda (loss,
    permutation) and one summary row of the mix instances no case names (all are checked for
    spills)."""
    rows = []
    for source in sorted((REPO / "csrc" / "cuda").glob("*.cu")):
        functions, usage = disassemble(nvcc_cubin(source))
        names = kernel_names(list(functions))
        by_name = {names[m]: m for m in functions}
        if source.stem != "mix_kernels":
            for short, mangled in sorted(by_name.items()):
                pc, regs, spill = _measure(functions, usage, mangled)
                rows.append(Row("cuda", source.stem, short, "", None if pc.loops else pc.longest, None, regs, spill,
                                pc.loops, pc.calls, None))  # fmt: skip
            continue
        for case in MIX_CASES:
            short, trips, elements = CUDA_MIX[case.name]
            if short not in by_name:
                raise KeyError(f"{case.name}: no kernel {short} in {source.name}")
            loops = len(count_paths(functions[by_name[short]]).loops)
            pc, regs, spill = _measure(functions, usage, by_name[short], (trips,) * loops)
            rows.append(Row("cuda", case.name, short, "224x224, 32x32", pc.longest, elements, regs, spill, pc.loops,
                            pc.calls, case.budget))  # fmt: skip
        others = [_measure(functions, usage, by_name[s]) for s in by_name if s not in {v[0] for v in CUDA_MIX.values()}]
        rows.append(Row("cuda", f"{len(others)} other mix instances", "(max registers, total spill)", "", None, None,
                        max(r for _, r, _ in others), sum(s for _, _, s in others), [], 0, None))  # fmt: skip
    return rows


# ----------------------------------------------------------------------------- report


def _first_line(cmd: list[str], last: bool = False) -> str:
    lines = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()
    return lines[-1] if last else lines[0]


def _versions() -> str:
    import torch
    import triton

    ptxas = _first_line([_tool("ptxas"), "--version"], last=True)
    nvcc = shutil.which("nvcc")
    nvcc_version = _first_line([nvcc, "--version"], last=True) if nvcc else "absent"
    return f"torch {torch.__version__}, triton {triton.__version__} (ptxas {ptxas}), nvcc {nvcc_version}"


def _commit() -> str:
    try:
        sha = _first_line(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"])
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True,
                               check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"`{sha}`{' (dirty tree)' if dirty else ''}"


def section(rows: list[Row]) -> str:
    lines = [
        HEADING,
        "",
        f"- date: {datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')}",
        f"- commit: {_commit()}",
        f"- {_versions()}",
        "- command: `python -m benchmarks.static --write`",
        (
            "- method: SASS instructions on the longest path per thread / output elements per thread "
            "(see the docstring of benchmarks/static.py); no GPU was used, and these are not timings."
        ),
        "",
        (
            "| backend | case | kernel | shape | SASS instr / element | instr / thread | elements / thread "
            "| registers | spills | loop bodies | budget | status |"
        ),
        "|---|---|---|---|---:|---:|---:|---:|---:|---|---|---|",
        *[r.markdown() for r in rows],
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="regenerate this section of benchmarks/RESULTS.md")
    parser.add_argument("--check", action="store_true", help="exit 1 when a variant is over budget or spills")
    parser.add_argument("--no-cuda", action="store_true", help="skip the nvcc part")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        command = [sys.executable, "-m", "benchmarks.static", *(argv or sys.argv[1:])]
        return subprocess.run(command, env=env, cwd=REPO, check=False).returncode
    rows = triton_rows()
    if not args.no_cuda:
        if shutil.which("nvcc") is None:
            print("nvcc not on PATH: CUDA kernels not measured", file=sys.stderr)
        else:
            rows += cuda_rows()
    text = section(rows)
    print(text)
    if args.write:
        from benchmarks.report import merge

        RESULTS.write_text(merge(RESULTS.read_text() if RESULTS.exists() else "", text))
        print(f"wrote {RESULTS}")
    bad = [r for r in rows if not r.ok]
    for r in bad:
        print(f"FAIL {r.backend} {r.case} {r.kernel}: {r.per_element} per element (budget {r.budget}), "
              f"{r.spill} spill", file=sys.stderr)  # fmt: skip
    return 1 if args.check and bad else 0


if __name__ == "__main__":
    sys.exit(main())

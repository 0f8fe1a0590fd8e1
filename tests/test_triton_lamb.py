"""fastcam.kernels.lamb (Triton LAMB) against fastcam.train.lamb (the reference),
and both under a real GradScaler without host reads.

The Triton kernels run in Triton's CPU interpreter on CPU tensors:
TRITON_INTERPRET=1 must be set before the kernels are decorated, so the module
fixture sets it and (re)imports fastcam.kernels.lamb, and restores both after.
Chunks of 16 elements in tiles of 8 make every tensor below span partial tiles
and several chunks.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest
import torch
from lamb_cases import (
    DECAYED,
    OVERFLOW_STEPS,
    ZERO_START,
    HostReads,
    assert_same_state,
    checkpoint_round_trip,
    grads_for,
    groups_of,
    make_params,
    run_scaled,
)

from fastcam.errors import ConfigError
from fastcam.train.lamb import Lamb

CHUNK, BLOCK = 16, 8


def _reload_kernels():
    for name in ("fastcam.kernels.lamb_kernels", "fastcam.kernels.lamb"):
        module = sys.modules.get(name)
        if module is None:
            importlib.import_module(name)
        else:
            importlib.reload(module)
    return sys.modules["fastcam.kernels.lamb"]


@pytest.fixture(scope="module")
def kernels():
    pytest.importorskip("triton")  # the torch-Lamb tests below run without it
    patch = pytest.MonkeyPatch()
    patch.setenv("TRITON_INTERPRET", "1")
    yield _reload_kernels()
    patch.undo()
    _reload_kernels()  # later importers get compiled kernels again


def test_fp32_matches_reference_over_steps_with_changing_lr(kernels) -> None:
    params, ref_params = make_params(), make_params()
    ours = kernels.TritonLamb(groups_of(params), lr=1e-3, chunk_size=CHUNK, block_size=BLOCK)
    ref = Lamb(groups_of(ref_params), lr=1e-3)
    schedules = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0 / (1 + s)) for o in (ours, ref)]
    for step in range(4):
        for i, (p, q, g) in enumerate(zip(params, ref_params, grads_for(step))):
            if step == 2 and i == 0:
                p.grad = q.grad = None  # no gradient: the tensor is left alone
            elif step % 2 and p.grad is not None:
                p.grad.copy_(g)  # same buffers: the pointer tables are reused
                q.grad.copy_(g)
            else:
                # A contiguous gradient for the channels-last parameter takes
                # the copy path; new buffers rebuild the tables.
                p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
        for s in schedules:
            s.step()
        assert_same_state(ours, ref, params, ref_params)
    assert float(ours.param_groups[0]["step"]) == 4
    # The zero-start tensor moved (ratio 1) and the undecayed group moved.
    assert params[ZERO_START].abs().sum() > 0
    assert not torch.equal(params[len(DECAYED)], make_params()[len(DECAYED)])


def test_tensor_lr_is_read_on_the_device(kernels) -> None:
    params, ref_params = make_params(), make_params()
    lr = torch.tensor(1e-2)
    ours = kernels.TritonLamb(groups_of(params, lr=lr), lr=lr, chunk_size=CHUNK, block_size=BLOCK)
    ref = Lamb(groups_of(ref_params, lr=1e-2), lr=1e-2)
    for step in range(2):
        for p, q, g in zip(params, ref_params, grads_for(step)):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
        # In-place, as torch's schedulers update a tensor LR.
        ours.param_groups[0]["lr"].fill_(5e-3)
        ref.param_groups[0]["lr"] = 5e-3
    assert_same_state(ours, ref, params, ref_params)


def test_host_read_counter_sees_reads() -> None:
    t = torch.ones(3)
    with HostReads() as mode:
        t.sum().item()
        bool(t[0] > 0)
        t.tolist()
        torch.equal(t, t)
    assert len(mode.reads) == 4, mode.reads


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_grad_scaler_overflow_steps_skipped_identically(kernels, dtype) -> None:
    def triton_factory(groups):
        return kernels.TritonLamb(groups, lr=1e-2, chunk_size=CHUNK, block_size=BLOCK)

    steps = 5
    ours, ours_opt, ours_hist, _ = run_scaled(triton_factory, dtype, steps, OVERFLOW_STEPS)
    ref, ref_opt, ref_hist, _ = run_scaled(lambda g: Lamb(g, lr=1e-2), dtype, steps, OVERFLOW_STEPS)
    for hist, opt, _params in ((ours_hist, ours_opt, ours), (ref_hist, ref_opt, ref)):
        scales = [after for _, after in hist]
        # Halved on each overflow, kept otherwise (growth_interval not reached).
        assert scales == [1024.0, 512.0, 512.0, 256.0, 256.0]
        for step in OVERFLOW_STEPS:
            p_before, _, steps_before, _ = hist[step][0]
            p_next, m_next, steps_next, _ = hist[step + 1][0]
            assert steps_next == steps_before
            for a, b in zip(p_before, p_next):
                assert torch.equal(a, b)
            m_before = hist[step][0][1]
            for key in m_before:
                for a, b in zip(m_before[key], m_next[key]):
                    assert torch.equal(a, b)
        assert [float(g["step"]) for g in opt.param_groups] == [3.0, 3.0]
    # Between implementations: fp32 moments to 1e-5; fp16 parameters to an fp16 ulp.
    for p, q in zip(ours, ref):
        tol = dict(rtol=1e-3, atol=1e-3) if dtype == torch.float16 else dict(rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(p.detach(), q.detach(), **tol)
        assert set(ours_opt.state[p]) == set(ref_opt.state[q])  # none for the empty tensor
        for key in ours_opt.state[p]:
            torch.testing.assert_close(ours_opt.state[p][key], ref_opt.state[q][key],
                                       rtol=1e-5, atol=1e-7)


def test_scaled_steps_equal_unscaled_reference() -> None:
    """The scaler run divides by the device scale: it equals a run without a
    scaler on the true gradients, with the overflow steps left out."""
    params, opt, _, _ = run_scaled(lambda g: Lamb(g, lr=1e-2), torch.float32, 5, OVERFLOW_STEPS)
    plain = make_params()
    plain_opt = Lamb(groups_of(plain, lr=1e-2), lr=1e-2)
    for step in range(5):
        if step in OVERFLOW_STEPS:
            continue
        for p, g in zip(plain, grads_for(step)):
            p.grad = g
        plain_opt.step()
    for p, q in zip(params, plain):
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("foreach", [True, False])
def test_no_host_reads_in_scaler_step_and_update(foreach: bool) -> None:
    _, _, _, reads = run_scaled(lambda g: Lamb(g, lr=1e-2, foreach=foreach), torch.float32, 4,
                                OVERFLOW_STEPS, count_reads=True)
    assert reads == []


def test_no_host_reads_in_triton_launcher(kernels) -> None:
    def factory(groups):
        return kernels.TritonLamb(groups, lr=1e-2, chunk_size=CHUNK, block_size=BLOCK)

    _, _, _, reads = run_scaled(factory, torch.float32, 3, {1}, count_reads=True)
    assert reads == []


def test_state_dict_moves_between_triton_and_torch_lamb(kernels) -> None:
    resumed, ref, params, ref_params = checkpoint_round_trip(
        lambda groups: kernels.TritonLamb(groups, lr=1e-3, chunk_size=CHUNK, block_size=BLOCK))
    assert_same_state(resumed, ref, params, ref_params)
    assert float(resumed.param_groups[1]["step"]) == 4


def test_names_its_implementation(kernels) -> None:
    from fastcam.train.optim import optimizer_implementation

    opt = kernels.TritonLamb(make_params(), chunk_size=CHUNK, block_size=BLOCK)
    assert optimizer_implementation(opt) == "LAMB (triton fused)"


def test_rejects_what_the_kernels_cannot_run(kernels, monkeypatch) -> None:
    with pytest.raises(ConfigError, match="float32, float16 or bfloat16"):
        kernels.TritonLamb([torch.zeros(3, dtype=torch.float64)])
    with pytest.raises(ConfigError, match="not dense"):
        kernels.TritonLamb([torch.zeros(4, 4)[:, :2]])
    with pytest.raises(ConfigError, match="block_size"):
        kernels.TritonLamb([torch.zeros(3)], chunk_size=24, block_size=16)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ConfigError, match="CUDA"):
        kernels.TritonLamb([torch.zeros(3)])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_compiled_kernels_match_reference_on_cuda() -> None:
    # A fresh process: this module's kernels are the interpreter's.
    script = textwrap.dedent("""
        import torch
        from fastcam.kernels.lamb import TritonLamb
        from fastcam.train.lamb import Lamb
        gen = torch.Generator().manual_seed(0)
        shapes = [(37,), (1000, 999), (3, 3, 64, 64), (1,)]
        start = [torch.randn(s, generator=gen).cuda() for s in shapes]
        a = [torch.nn.Parameter(t.clone()) for t in start]
        b = [torch.nn.Parameter(t.clone()) for t in start]
        oa = TritonLamb([{"params": a[:2]}, {"params": a[2:], "weight_decay": 0.0}], lr=1e-3)
        ob = Lamb([{"params": b[:2]}, {"params": b[2:], "weight_decay": 0.0}], lr=1e-3)
        for step in range(3):
            for p, q in zip(a, b):
                g = torch.randn(p.shape, generator=gen).cuda() * (3.0 if step % 2 else 0.1)
                p.grad, q.grad = g.clone(), g.clone()
            oa.step(); ob.step()
        for p, q in zip(a, b):
            torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-8)
        print("ok")
    """)
    env = {k: v for k, v in __import__("os").environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]

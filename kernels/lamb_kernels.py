"""Triton kernels of the fused LAMB step (launched by fastcam.kernels.lamb).

The math is ``fastcam/train/lamb.py``'s (apex ``FusedLAMB``, adam_w_mode,
use_nvlamb=False); that module is the reference these kernels are tested
against. One step is five launches per parameter dtype, whatever the number of
tensors:

1. ``grad_sq_kernel``      per chunk: sum of squared (still scaled) gradients.
2. ``scalars_kernel``      one program: global norm -> clip divisor (times the
                           GradScaler scale), overflow flag, step counters and
                           bias corrections of every group.
3. ``moments_kernel``      per chunk: new moments (stored unless overflow) and
                           the chunk's sums of ``p^2`` and ``update^2``.
4. ``trust_ratio_kernel``  per tensor: ``lr * ||p|| / ||update||`` (or ``lr``).
5. ``apply_kernel``        per chunk: ``p -= step_size * update``, the update
                           recomputed from the stored moments rather than kept
                           in a parameter-sized buffer (same traffic, no buffer).

Multi-tensor layout: rather than flattening the parameters into one buffer
(which would have to own the parameters' storage and breaks as soon as a
module re-assigns ``.data``, e.g. for channels-last), every launch reads
device tables: per tensor its data pointers (int64), element count and group,
per chunk the tensor it belongs to and its first element. A chunk is
``CHUNK`` elements processed in ``BLOCK``-wide tiles; the last chunk of a tensor
is partial, so every load and store is masked by ``offset < numel``.

Overflow (GradScaler ``found_inf``) is a device flag: loads and stores of the
moment and parameter kernels are masked off with it and the step counters do
not advance, so a skipped step writes nothing and needs no host read.

Only features present in Triton 3.6 are used (the GPU test machine's version).
"""

from __future__ import annotations

import triton
import triton.language as tl

# Globals read inside @triton.jit functions must be tl.constexpr (Triton >= 3.0).
# Per-group hyperparameter table (float32, row-major [groups, HYPER_WIDTH]);
# the launcher fills it in HYPER_COLUMNS order.
HYPER_COLUMNS = ("beta1", "beta2", "one_minus_beta2", "beta3", "eps", "weight_decay")
HYPER_BETA1 = tl.constexpr(0)
HYPER_BETA2 = tl.constexpr(1)
HYPER_ONE_MINUS_BETA2 = tl.constexpr(2)
HYPER_BETA3 = tl.constexpr(3)
HYPER_EPS = tl.constexpr(4)
HYPER_DECAY = tl.constexpr(5)
HYPER_WIDTH = tl.constexpr(len(HYPER_COLUMNS))
# Scalars written by scalars_kernel: [divisor, keep, c1[groups], c2[groups]].
SCALAR_DIVISOR = tl.constexpr(0)
SCALAR_KEEP = tl.constexpr(1)
SCALAR_CORRECTIONS = tl.constexpr(2)
SCALARS_FIXED = 2  # entries before the corrections, for the launcher


@triton.jit
def _tensor_of_chunk(blk_tensor, blk_start, numels, tensor_group):
    pid = tl.program_id(0)
    t = tl.load(blk_tensor + pid)
    return t, tl.load(blk_start + pid), tl.load(numels + t), tl.load(tensor_group + t)


@triton.jit
def _add(a, b):
    return a + b


@triton.jit
def _total(x):
    # tl.sum and tl.zeros are @jit functions of triton's standard library,
    # decorated when triton is imported: compiled-only if triton came in before
    # TRITON_INTERPRET=1 was set. Builtins (tl.full, tl.reduce) and our own
    # combine function run in both modes, whatever the import order.
    return tl.reduce(x, 0, _add)


@triton.jit
def _live_length(scalars, n):
    # Elements to touch: all n, or none when the step overflowed.
    return tl.where(tl.load(scalars + SCALAR_KEEP) != 0, n, 0)


@triton.jit
def _adam_direction(m, v, p, c1, c2, eps, decay):
    # lamb.py: (m / c1) / (sqrt(v / c2) + eps) + weight_decay * p; IEEE-rounded
    # division and square root, as torch's CPU ops.
    denom = tl.sqrt_rn(tl.div_rn(v, c2)) + eps
    return tl.div_rn(tl.div_rn(m, c1), denom) + decay * p


@triton.jit
def grad_sq_kernel(g_ptrs, numels, tensor_group, blk_tensor, blk_start, partials,
                   G_DTYPE: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    t, start, n, _ = _tensor_of_chunk(blk_tensor, blk_start, numels, tensor_group)
    g_ptr = tl.load(g_ptrs + t).to(tl.pointer_type(G_DTYPE))
    acc = tl.full([BLOCK], 0.0, tl.float32)
    for i in range(0, CHUNK, BLOCK):
        offs = start + i + tl.arange(0, BLOCK)
        g = tl.load(g_ptr + offs, mask=offs < n, other=0.0).to(tl.float32)
        acc += g * g
    tl.store(partials + tl.program_id(0), _total(acc))


@triton.jit
def scalars_kernel(grad_partials, n_partials, scale_ptr, found_inf_ptr, steps, betas,
                   corrected, scalars, n_groups, max_grad_norm,
                   HAS_SCALE: tl.constexpr, HAS_FOUND_INF: tl.constexpr,
                   BLOCK: tl.constexpr, GROUP_BLOCK: tl.constexpr):
    acc = tl.full([BLOCK], 0.0, tl.float32)
    for start in range(0, n_partials, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        acc += tl.load(grad_partials + offs, mask=offs < n_partials, other=0.0)
    scaled_norm = tl.sqrt_rn(_total(acc))
    if HAS_SCALE:
        scale = tl.load(scale_ptr).to(tl.float32)
        norm = tl.div_rn(scaled_norm, scale)
    else:
        scale = 1.0
        norm = scaled_norm
    clip = tl.where(norm > max_grad_norm, tl.div_rn(norm, max_grad_norm), 1.0)
    tl.store(scalars + SCALAR_DIVISOR, clip * scale)
    if HAS_FOUND_INF:
        keep = tl.where(tl.load(found_inf_ptr) > 0, 0.0, 1.0)
    else:
        keep = 1.0
    tl.store(scalars + SCALAR_KEEP, keep)

    # Step counters (float64) advance unless the step overflowed; bias
    # corrections 1 - beta**step in float64 (as lamb.py's float64 step tensor).
    g = tl.arange(0, GROUP_BLOCK)
    live = g < n_groups
    step = tl.load(steps + g, mask=live, other=0.0) + keep
    tl.store(steps + g, step, mask=live)
    beta1 = tl.load(betas + 2 * g, mask=live, other=0.5)
    beta2 = tl.load(betas + 2 * g + 1, mask=live, other=0.5)
    on = tl.load(corrected + g, mask=live, other=0) != 0
    c1 = tl.where(on, 1.0 - tl.exp(step * tl.log(beta1)), 1.0)
    c2 = tl.where(on, 1.0 - tl.exp(step * tl.log(beta2)), 1.0)
    tl.store(scalars + SCALAR_CORRECTIONS + g, c1.to(tl.float32), mask=live)
    tl.store(scalars + SCALAR_CORRECTIONS + n_groups + g, c2.to(tl.float32), mask=live)


@triton.jit
def _group_constants(hyper, scalars, grp, n_groups):
    row = hyper + grp * HYPER_WIDTH
    return (tl.load(row + HYPER_BETA1), tl.load(row + HYPER_BETA2),
            tl.load(row + HYPER_ONE_MINUS_BETA2), tl.load(row + HYPER_BETA3),
            tl.load(row + HYPER_EPS), tl.load(row + HYPER_DECAY),
            tl.load(scalars + SCALAR_CORRECTIONS + grp),
            tl.load(scalars + SCALAR_CORRECTIONS + n_groups + grp))


@triton.jit
def moments_kernel(p_ptrs, g_ptrs, m_ptrs, v_ptrs, numels, tensor_group, blk_tensor, blk_start,
                   hyper, scalars, n_groups, p_partials, u_partials,
                   P_DTYPE: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    t, start, n, grp = _tensor_of_chunk(blk_tensor, blk_start, numels, tensor_group)
    p_ptr = tl.load(p_ptrs + t).to(tl.pointer_type(P_DTYPE))
    g_ptr = tl.load(g_ptrs + t).to(tl.pointer_type(P_DTYPE))
    m_ptr = tl.load(m_ptrs + t).to(tl.pointer_type(tl.float32))
    v_ptr = tl.load(v_ptrs + t).to(tl.pointer_type(tl.float32))
    beta1, beta2, one_minus_beta2, beta3, eps, decay, c1, c2 = _group_constants(
        hyper, scalars, grp, n_groups)
    divisor = tl.load(scalars + SCALAR_DIVISOR)
    limit = _live_length(scalars, n)
    acc_p = tl.full([BLOCK], 0.0, tl.float32)
    acc_u = tl.full([BLOCK], 0.0, tl.float32)
    for i in range(0, CHUNK, BLOCK):
        offs = start + i + tl.arange(0, BLOCK)
        live = offs < limit
        p = tl.load(p_ptr + offs, mask=live, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=live, other=0.0).to(tl.float32)
        m = tl.load(m_ptr + offs, mask=live, other=0.0)
        v = tl.load(v_ptr + offs, mask=live, other=0.0)
        scaled = tl.div_rn(g, divisor)
        m = beta1 * m + beta3 * scaled
        v = beta2 * v + one_minus_beta2 * scaled * scaled
        tl.store(m_ptr + offs, m, mask=live)
        tl.store(v_ptr + offs, v, mask=live)
        u = _adam_direction(m, v, p, c1, c2, eps, decay)
        acc_p += p * p
        acc_u += tl.where(live, u * u, 0.0)
    tl.store(p_partials + tl.program_id(0), _total(acc_p))
    tl.store(u_partials + tl.program_id(0), _total(acc_u))


@triton.jit
def trust_ratio_kernel(first_chunk, tensor_group, hyper, lr, p_partials, u_partials, step_sizes,
                       BLOCK: tl.constexpr):
    t = tl.program_id(0)
    lo = tl.load(first_chunk + t)
    hi = tl.load(first_chunk + t + 1)
    acc_p = tl.full([BLOCK], 0.0, tl.float32)
    acc_u = tl.full([BLOCK], 0.0, tl.float32)
    for b in range(lo, hi, BLOCK):
        offs = b + tl.arange(0, BLOCK)
        inside = offs < hi
        acc_p += tl.load(p_partials + offs, mask=inside, other=0.0)
        acc_u += tl.load(u_partials + offs, mask=inside, other=0.0)
    p_norm = tl.sqrt_rn(_total(acc_p))
    u_norm = tl.sqrt_rn(_total(acc_u))
    grp = tl.load(tensor_group + t)
    decay = tl.load(hyper + grp * HYPER_WIDTH + HYPER_DECAY)
    # apex use_nvlamb=False: ratio 1 for groups without weight decay; lamb.py:
    # ratio 1 when either norm is 0.
    trusted = (decay != 0) & (p_norm != 0) & (u_norm != 0)
    rate = tl.load(lr + grp)
    ratio = tl.div_rn(p_norm, tl.where(trusted, u_norm, 1.0))  # no 0/0 in unused lanes
    tl.store(step_sizes + t, tl.where(trusted, ratio * rate, rate))


@triton.jit
def apply_kernel(p_ptrs, m_ptrs, v_ptrs, numels, tensor_group, blk_tensor, blk_start,
                 hyper, scalars, n_groups, step_sizes,
                 P_DTYPE: tl.constexpr, CHUNK: tl.constexpr, BLOCK: tl.constexpr):
    t, start, n, grp = _tensor_of_chunk(blk_tensor, blk_start, numels, tensor_group)
    p_ptr = tl.load(p_ptrs + t).to(tl.pointer_type(P_DTYPE))
    m_ptr = tl.load(m_ptrs + t).to(tl.pointer_type(tl.float32))
    v_ptr = tl.load(v_ptrs + t).to(tl.pointer_type(tl.float32))
    _, _, _, _, eps, decay, c1, c2 = _group_constants(hyper, scalars, grp, n_groups)
    limit = _live_length(scalars, n)
    step_size = tl.load(step_sizes + t)
    for i in range(0, CHUNK, BLOCK):
        offs = start + i + tl.arange(0, BLOCK)
        live = offs < limit
        p = tl.load(p_ptr + offs, mask=live, other=0.0).to(tl.float32)
        m = tl.load(m_ptr + offs, mask=live, other=0.0)
        v = tl.load(v_ptr + offs, mask=live, other=1.0)
        u = _adam_direction(m, v, p, c1, c2, eps, decay)
        tl.store(p_ptr + offs, (p - step_size * u).to(P_DTYPE), mask=live)

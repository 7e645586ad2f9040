"""Triton kernels for the mixers, with PyTorch fallbacks chosen by the caller.

diag_scan: the S5 recurrence x_t = a * x_{t-1} + b_t (a complex per state, time-invariant), one pass over
time per (batch, state-block). On a GPU this reads b and writes x once, where the FFT path pads to 2T and
runs three complex FFTs; the backward is the same kernel run in reverse with conj(a). Runs on CPU tensors
under Triton's interpreter (TRITON_INTERPRET=1, read when this module is imported).
"""
from __future__ import annotations

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # the PyTorch paths need no Triton
    HAVE_TRITON = False


if HAVE_TRITON:

    @triton.jit
    def _diag_scan_kernel(a_re_ptr, a_im_ptr, b_re_ptr, b_im_ptr, x_re_ptr, x_im_ptr, T, P,
                          REVERSE: tl.constexpr, CONJ: tl.constexpr, BLOCK_P: tl.constexpr):
        pid_b = tl.program_id(0)
        offs = tl.program_id(1) * BLOCK_P + tl.arange(0, BLOCK_P)
        mask = offs < P
        a_re = tl.load(a_re_ptr + offs, mask=mask, other=0.0)
        a_im = tl.load(a_im_ptr + offs, mask=mask, other=0.0)
        if CONJ:
            a_im = -a_im
        h_re = tl.zeros([BLOCK_P], dtype=tl.float32)
        h_im = tl.zeros([BLOCK_P], dtype=tl.float32)
        base = pid_b * T * P
        for i in range(T):
            if REVERSE:
                t = T - 1 - i
            else:
                t = i
            ptr = base + t * P + offs
            b_re = tl.load(b_re_ptr + ptr, mask=mask, other=0.0)
            b_im = tl.load(b_im_ptr + ptr, mask=mask, other=0.0)
            new_re = a_re * h_re - a_im * h_im + b_re
            new_im = a_re * h_im + a_im * h_re + b_im
            h_re = new_re
            h_im = new_im
            tl.store(x_re_ptr + ptr, h_re, mask=mask)
            tl.store(x_im_ptr + ptr, h_im, mask=mask)


def _launch_scan(a: Tensor, b: Tensor, reverse: bool, conj: bool) -> Tensor:
    bsz, T, P = b.shape
    a_re, a_im = a.real.float().contiguous(), a.imag.float().contiguous()
    b_re, b_im = b.real.float().contiguous(), b.imag.float().contiguous()
    x_re, x_im = torch.empty_like(b_re), torch.empty_like(b_im)
    block = min(128, triton.next_power_of_2(P))
    grid = (bsz, triton.cdiv(P, block))
    _diag_scan_kernel[grid](a_re, a_im, b_re, b_im, x_re, x_im, T, P, REVERSE=reverse, CONJ=conj, BLOCK_P=block)
    return torch.complex(x_re, x_im)


class _DiagScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor) -> Tensor:
        x = _launch_scan(a, b, reverse=False, conj=False)
        ctx.save_for_backward(a, x)
        return x

    @staticmethod
    def backward(ctx, grad_x: Tensor):
        a, x = ctx.saved_tensors
        # Adjoint recurrence g_t = grad_x_t + conj(a) g_{t+1}; dL/db_t = g_t; dL/da = sum_t g_t conj(x_{t-1}).
        g = _launch_scan(a, grad_x.to(torch.complex64), reverse=True, conj=True)
        grad_a = (g[:, 1:] * x[:, :-1].conj()).sum(dim=(0, 1)) if x.size(1) > 1 else torch.zeros_like(a)
        return grad_a, g


def triton_diag_scan(a: Tensor, b: Tensor) -> Tensor:
    """x_t = a * x_{t-1} + b_t, x_{-1} = 0. a: (P,) complex, b: (B, T, P) complex -> (B, T, P) complex64."""
    if not HAVE_TRITON:
        raise RuntimeError("triton is not installed: pip install triton, or set S5_SCAN=fft")
    return _DiagScan.apply(a.to(torch.complex64), b.to(torch.complex64))

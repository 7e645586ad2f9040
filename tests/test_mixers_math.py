"""Each mixer's own checks from MIXERS.md: HWNODE (1.9), causal Wave (2.5), S5 / Hyena-S5 (3.8), and the
Triton scan under Triton's CPU interpreter."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from arch.hwnode import HWNodeMixer
from arch.hwnode_flow import taylor_flow_matrix, taylor_remainder_bound
from arch.s5 import (HyenaS5Mixer, S5Mixer, S5SSM, discretize_bilinear, discretize_zoh, fft_scan, hippo_n,
                     sequential_scan)
from arch.wave import CausalWaveMixer, causal_wave_components
from quant.int8 import dequantize_state_dict, quantize_state_dict

ROOT = Path(__file__).resolve().parents[1]



# ---------- HWNODE ----------

@pytest.mark.parametrize("order", [2, 4, 8])
def test_taylor_flow_within_remainder_bound_of_matrix_exp(order):
    torch.manual_seed(0)
    M = torch.randn(64, 64, dtype=torch.float64)
    M = M / torch.linalg.matrix_norm(M, 2) * 0.9
    err = torch.linalg.matrix_norm(taylor_flow_matrix(M, order).double() - torch.linalg.matrix_exp(M), 2).item()
    assert err <= taylor_remainder_bound(0.9, order) + 1e-6
    if order == 8:
        assert err < 1e-5


def test_spectral_norm_tracks_exact_value_in_training():
    torch.manual_seed(0)
    m = HWNodeMixer(16, 40, 2)
    m.u.copy_(torch.nn.functional.normalize(torch.randn(40), dim=0))  # forget the exact start
    m.v.copy_(torch.nn.functional.normalize(torch.randn(40), dim=0))
    x = torch.randn(2, 5, 16)
    for _ in range(50):
        m(x)
    exact = torch.linalg.matrix_norm(m.A.detach(), 2)
    assert abs(m.spectral_norm().item() - exact.item()) < 0.01 * exact.item()


def test_spectral_norm_exact_right_after_load():
    """The reference's bug: a fresh model estimates sigma from one power step of a random vector."""
    torch.manual_seed(0)
    trained = HWNodeMixer(16, 40, 2)
    with torch.no_grad():
        trained.A.add_(torch.randn(40, 40))
    state = {k: v.clone() for k, v in trained.state_dict().items()}
    torch.manual_seed(1)
    fresh = HWNodeMixer(16, 40, 2)
    fresh.load_state_dict(state)
    exact = torch.linalg.matrix_norm(state["A"], 2).item()
    assert abs(fresh.spectral_norm().item() - exact) < 1e-4 * exact  # before any forward or cached E
    fresh.eval()
    with torch.no_grad():
        E = fresh.flow_matrix()
    expected = taylor_flow_matrix(state["dt"] * state["A"] / exact, 2)
    torch.testing.assert_close(E, expected, rtol=1e-4, atol=1e-5)


def test_eval_cache_invalidated_on_weight_change():
    torch.manual_seed(0)
    m = HWNodeMixer(16, 40, 2)
    with torch.no_grad():
        m.proj.weight.normal_()
    m.eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        y1 = m(x)
        assert torch.equal(m(x), y1)  # cached E reused
        m.A.add_(0.5 * torch.randn(40, 40))  # in-place change in eval + no_grad
        y2 = m(x)
        assert not torch.allclose(y1, y2)
        other = HWNodeMixer(16, 40, 2)
        m.load_state_dict(other.state_dict())  # reload
        y3 = m(x)
        assert not torch.allclose(y2, y3)
        m.dt.fill_(0.3)
        assert not torch.allclose(m(x), y3)


def test_flow_in_fp32_under_bf16_autocast():
    m = HWNodeMixer(16, 40, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert m.flow_matrix().dtype == torch.float32
        assert m(torch.randn(2, 3, 16)).dtype == torch.bfloat16


def test_v2_zero_w_out_is_dead_and_ours_is_not():
    """Positive control for the liveness check: psi after a zero W_out gives no gradient, ever."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    dead = HWNodeMixer(16, 40, 2, virtual_layers=2)
    with torch.no_grad():
        dead.proj.weight.zero_()
    dead(x).sum().backward()
    assert dead.proj.weight.grad.abs().max() == 0 and dead.fc.weight.grad.abs().max() == 0
    alive = HWNodeMixer(16, 40, 2, virtual_layers=2)
    alive(x).sum().backward()
    assert alive.proj.weight.grad.abs().max() > 0 and alive.fc.weight.grad.abs().max() > 0


def test_v2_flow_is_a_reparametrisation_of_w_out():
    torch.manual_seed(0)
    m = HWNodeMixer(16, 40, 3, virtual_layers=2).eval()
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        fused = m.proj.weight @ m.flow_matrix()
        h = x
        for _ in range(2):
            h = torch.nn.functional.leaky_relu(torch.nn.functional.leaky_relu(m.fc(h), 0.5) @ fused.T, 0.5).square()
        torch.testing.assert_close(m(x), h, rtol=1e-4, atol=1e-5)


def test_int8_flow_error_is_small_next_to_the_projections():
    torch.manual_seed(0)
    m = HWNodeMixer(128, 256, 2)
    with torch.no_grad():
        m.proj.weight.normal_(std=0.05)
    deq = dequantize_state_dict(quantize_state_dict(m.state_dict()))
    q = HWNodeMixer(128, 256, 2)
    q.load_state_dict(deq)

    def rel(a, b):
        return (torch.linalg.matrix_norm(a - b) / torch.linalg.matrix_norm(b)).item()

    with torch.no_grad():
        e_err = rel(q.flow_matrix(), m.flow_matrix())
    assert e_err < 0.02 and e_err < 3 * rel(deq["fc.weight"], m.fc.weight.detach())


# ---------- causal Wave ----------

def test_wave_identities_and_polar_form():
    torch.manual_seed(0)
    eps = 1e-6
    w = torch.randn(2, 30, 8)
    re, im = causal_wave_components(w, eps)
    S = torch.cumsum(w.square(), 1)
    past = torch.cat((torch.zeros_like(S[:, :1]), S[:, :-1]), 1)
    torch.testing.assert_close(re, w)
    torch.testing.assert_close(im, torch.sqrt(past + eps))
    G = torch.sqrt(S + eps)  # prefix norm including t
    torch.testing.assert_close(torch.sqrt(re.square() + im.square()), G)
    # The polar form is computed in float64: at t = 0, r = w/G is +-1 and sqrt(1 - r^2) is ill-conditioned in
    # fp32 (its error depends on the CPU's rounding paths), while the fp32 components themselves are exact.
    w64 = w.double()
    G64 = torch.sqrt(torch.cumsum(w64.square(), 1) + eps)
    r = w64 / G64
    alpha = torch.atan2(torch.sqrt((1 - r.square()).clamp_min(0)), r)
    torch.testing.assert_close(torch.complex(re, im).to(torch.complex128), G64 * torch.exp(1j * alpha), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["interference", "modulation"])
def test_wave_dominant_token_gives_finite_gradients(mode):
    m = CausalWaveMixer(8, mode)
    with torch.no_grad():
        m.proj.weight.normal_()
    x = torch.zeros(1, 6, 8)
    x[0, 0] = 1e3  # one token dominates the prefix, at t = 1
    x.requires_grad_(True)
    m(x).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters()) and torch.isfinite(x.grad).all()


def test_wave_whole_sequence_norm_leaks_and_the_check_sees_it():
    """Positive control: the paper's global norm G over all T fails the future-perturbation check."""
    torch.manual_seed(0)
    w = torch.randn(1, 20, 8)
    w2 = w.clone()
    w2[:, 11:] += 1.0

    def global_im(v):
        return torch.sqrt(v.square().sum(1, keepdim=True) - v.square() + 1e-6)

    assert not torch.allclose(global_im(w)[:, :11], global_im(w2)[:, :11])
    assert torch.equal(causal_wave_components(w)[1][:, :11], causal_wave_components(w2)[1][:, :11])


def test_wave_feature_scale_does_not_grow_with_position():
    torch.manual_seed(0)
    m = CausalWaveMixer(16, "modulation")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = m.features(torch.randn(4, 1000, 16))
    assert feats.dtype == torch.float32  # prefix sums stay fp32 under bf16 autocast
    rms = feats.square().mean(dim=(0, 2)).sqrt()
    assert 1 / 3 < (rms[999] / rms[7]).item() < 3


# ---------- S5 ----------

def test_hippo_n_eigenvalues():
    for N, imag in ((4, [0.5565, 4.6033]), (8, [0.4275, 1.9578, 5.3542, 19.8574])):
        Lam, V = hippo_n(N)
        torch.testing.assert_close(Lam.real, torch.full((N,), -0.5, dtype=torch.float64))
        expected = torch.tensor(sorted([-v for v in imag]) + imag, dtype=torch.float64)
        torch.testing.assert_close(Lam.imag, expected, rtol=0, atol=1e-4)
        torch.testing.assert_close(V.conj().T @ V, torch.eye(N, dtype=torch.complex128))
    assert abs(hippo_n(16)[0].imag.abs().max().item() - 80.97) < 0.01


def test_s5_init_tiling_shapes_and_dtypes():
    ssm = S5SSM(H=12, P=32, blocks=4, conj_sym=True)
    block = hippo_n(8)[0][:4]
    torch.testing.assert_close(ssm.Lambda().detach().to(torch.complex128), block.repeat(4), rtol=0, atol=1e-5)
    log_Lbar, Lbar, Bbar = ssm.discretize()
    assert Lbar.shape == (16,) and Bbar.shape == (16, 12) and ssm.C_tilde().shape == (12, 16)
    assert Lbar.is_complex() and Bbar.is_complex() and ssm.C_tilde().is_complex()
    assert ssm.log_step.shape == (16,)
    steps = ssm.log_step.exp()
    assert steps.min() >= 1e-3 and steps.max() <= 1e-1


def randomised_ssm(**kw) -> S5SSM:
    torch.manual_seed(0)
    ssm = S5SSM(**kw)
    with torch.no_grad():  # away from init, as after training
        ssm.Lambda_re.mul_(torch.rand_like(ssm.Lambda_re) * 2).sub_(0.01)
        ssm.log_step.add_(torch.randn_like(ssm.log_step))
    return ssm


def test_s5_parallel_equals_sequential_at_T1024():
    ssm = randomised_ssm(H=16, P=32, blocks=2)
    u = torch.randn(2, 1024, 16)
    with torch.no_grad():
        log_Lbar, Lbar, Bbar = ssm.discretize()
        Bu = torch.complex(u @ Bbar.real.T, u @ Bbar.imag.T)
        ref = sequential_scan(Lbar, Bu)
        par = fft_scan(log_Lbar, Bu)
        scale = ref.abs().max()
        torch.testing.assert_close(par, ref, rtol=1e-4, atol=1e-4 * scale)
        torch.testing.assert_close(ssm(u), ssm(u, scan="sequential"), rtol=1e-4, atol=1e-4 * scale)


def test_s5_fft_is_causal_and_unpadded_fft_is_not():
    ssm = randomised_ssm(H=8, P=16, blocks=2)
    u = torch.randn(1, 64, 8)
    u2 = u.clone()
    u2[:, 33:] += 5.0
    with torch.no_grad():
        torch.testing.assert_close(ssm(u2)[:, :33], ssm(u)[:, :33], rtol=0, atol=1e-5)
        log_Lbar, _, Bbar = ssm.discretize()

        def circular(v):  # the bug the 2T padding prevents
            Bu = torch.complex(v @ Bbar.real.T, v @ Bbar.imag.T)
            k = torch.exp(torch.arange(64.0)[:, None] * log_Lbar[None])
            return torch.fft.ifft(torch.fft.fft(Bu, dim=1) * torch.fft.fft(k, dim=0), dim=1)

        assert (circular(u2)[:, :33] - circular(u)[:, :33]).abs().max() > 1e-3


def test_s5_conjugate_symmetry_equals_full_real_system():
    half = randomised_ssm(H=8, P=16, blocks=2, conj_sym=True)
    full = S5SSM(H=8, P=16, blocks=1, conj_sym=False)
    Pp = half.num_states
    with torch.no_grad():
        full.Lambda_re.copy_(torch.cat((half.Lambda_re, half.Lambda_re)))
        full.Lambda_im.copy_(torch.cat((half.Lambda_im, -half.Lambda_im)))
        Bre, Bim = half.B.split(Pp, 0)
        full.B.copy_(torch.cat((Bre, Bre, Bim, -Bim), 0))
        Cre, Cim = half.C.split(Pp, 1)
        full.C.copy_(torch.cat((Cre, Cre, Cim, -Cim), 1))
        full.D.copy_(half.D)
        full.log_step.copy_(torch.cat((half.log_step, half.log_step)))
        u = torch.randn(2, 40, 8)
        torch.testing.assert_close(full(u), half(u), rtol=1e-4, atol=1e-5)


def test_zoh_and_bilinear_agree_to_third_order():
    Lam = hippo_n(8)[0].to(torch.complex128)
    B = torch.ones(8, 1, dtype=torch.complex128)
    errs = []
    for dt in (1e-2, 5e-3):
        step = torch.full((8,), dt, dtype=torch.float64)
        errs.append((discretize_zoh(Lam, B, step)[0] - discretize_bilinear(Lam, B, step)[0]).abs().max().item())
    assert 6 < errs[0] / errs[1] < 10  # halving the step divides the gap by ~2^3


def test_clip_eigs_keeps_the_recurrence_stable_after_an_adversarial_step():
    ssm = S5SSM(H=8, P=16, blocks=2)
    opt = torch.optim.Adam([ssm.Lambda_re], lr=10.0)
    (-ssm.Lambda_re.sum()).backward()  # push Re(Lambda) far above 0
    opt.step()
    assert (ssm.Lambda_re > 0).all()
    assert (ssm.discretize()[1].abs() < 1).all()
    assert torch.isfinite(ssm(torch.randn(1, 500, 8))).all()


@pytest.mark.parametrize("mixer", [S5Mixer, HyenaS5Mixer])
def test_prefix_runs_match_the_full_sequence(mixer):
    """What step-mode generation needs: outputs for t depend only on the first t inputs, so running each
    prefix alone (including Hyena's 2-token short-conv history) reproduces the full-sequence outputs."""
    torch.manual_seed(0)
    m = mixer(8, P=16, blocks=2)
    with torch.no_grad():
        for p in m.parameters():
            if p.abs().max() == 0:
                p.normal_(std=0.3)
        u = torch.randn(1, 12, 8)
        full = m(u)
        for t in (1, 2, 3, 7, 12):
            torch.testing.assert_close(m(u[:, :t]), full[:, :t], rtol=1e-4, atol=1e-5)


# ---------- Triton scan (CPU interpreter) ----------

TRITON_CHECK = r"""
import torch
from arch.kernels import triton_diag_scan
from arch.s5 import sequential_scan
torch.manual_seed(0)
P, T = 24, 13
a = torch.polar(torch.rand(P) * 0.5 + 0.49, torch.rand(P) * 6.28).requires_grad_(True)
b = torch.complex(torch.randn(3, T, P), torch.randn(3, T, P)).requires_grad_(True)
w = torch.complex(torch.randn(3, T, P), torch.randn(3, T, P))
x = triton_diag_scan(a, b)
ref = sequential_scan(a, b)
torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-5)
ga, gb = torch.autograd.grad((x * w).real.sum(), (a, b))
ra, rb = torch.autograd.grad((ref * w).real.sum(), (a, b))
torch.testing.assert_close(gb, rb, rtol=1e-5, atol=1e-5)
torch.testing.assert_close(ga, ra, rtol=1e-4, atol=1e-4)
print("triton-scan-ok")
"""


def test_triton_scan_matches_sequential_under_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", TRITON_CHECK], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "triton-scan-ok" in proc.stdout, proc.stderr[-3000:]

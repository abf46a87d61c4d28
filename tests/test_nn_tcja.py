"""TCJA / TLA / CLA: shapes, parameter formula, the official math, non-causality."""
import itertools

import pytest
import torch

from neurocomp.nn import CLA, REGISTRY, TCJA, TLA


def spikes(T=6, B=2, C=5, H=3, W=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, C, H, W, generator=g) < 0.4).float()


def reference_map(x, E, W):
    """A[t,b,c] = σ(P·Q) written from the research notes, with explicit loops and 'same' padding.

    E [T, T, K_C]: CLA weights (slide over channels); W [C, C, K_T]: TLA weights (slide over time).
    """
    T, B, C = x.shape[:3]
    Z = x.mean(dim=(3, 4))                       # [T, B, C]
    kc, kt = E.shape[2], W.shape[2]
    pc, pt = (kc - 1) // 2, (kt - 1) // 2        # left 'same' padding
    P = torch.zeros(T, B, C)
    Q = torch.zeros(T, B, C)
    for t, b, c in itertools.product(range(T), range(B), range(C)):
        for tp in range(T):
            for m in range(kc):
                cc = c + m - pc
                if 0 <= cc < C:
                    P[t, b, c] += E[t, tp, m] * Z[tp, b, cc]
        for cp in range(C):
            for m in range(kt):
                tt = t + m - pt
                if 0 <= tt < T:
                    Q[t, b, c] += W[c, cp, m] * Z[tt, b, cp]
    return P, Q


@pytest.mark.parametrize("kc,kt,T,C", [(2, 2, 6, 5), (4, 4, 8, 3), (3, 1, 4, 7)])
def test_parameter_count_formula(kc, kt, T, C):
    assert sum(p.numel() for p in TCJA(kc, kt, T, C).parameters()) == kc * T * T + kt * C * C
    assert sum(p.numel() for p in TLA(kc, kt, T, C).parameters()) == kt * C * C
    assert sum(p.numel() for p in CLA(kc, kt, T, C).parameters()) == kc * T * T


def test_official_state_dict_names_and_shapes():
    sd = TCJA(kernel_size_t=4, kernel_size_c=2, T=6, channel=5).state_dict()
    assert set(sd) == {"conv.weight", "conv_c.weight"}
    assert sd["conv.weight"].shape == (6, 6, 4)      # T-channel conv, kernel K_C = kernel_size_t
    assert sd["conv_c.weight"].shape == (5, 5, 2)    # C-channel conv, kernel K_T = kernel_size_c


@pytest.mark.parametrize("kc,kt", [(2, 2), (4, 4), (3, 2)])
def test_matches_reference_math(kc, kt):
    torch.manual_seed(1)
    m = TCJA(kc, kt, T=6, channel=5)
    x = spikes()
    P, Q = reference_map(x, m.conv.weight.detach(), m.conv_c.weight.detach())
    A = torch.sigmoid(P * Q)
    y = m(x)
    assert y.shape == x.shape
    torch.testing.assert_close(m.attention(x), A, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y, x * A[:, :, :, None, None], atol=1e-5, rtol=1e-5)
    P2, _ = reference_map(x, m.conv.weight.detach(), torch.zeros_like(m.conv_c.weight))
    cla = CLA(kc, kt, 6, 5)
    cla.conv.weight.data.copy_(m.conv.weight.data)
    torch.testing.assert_close(cla.attention(x), torch.sigmoid(P2), atol=1e-5, rtol=1e-5)


def test_output_is_spikes_rescaled_into_unit_interval():
    x = spikes()
    y = TCJA(2, 2, 6, 5)(x)
    assert torch.all(y[x == 0] == 0)
    assert torch.all((y[x == 1] > 0) & (y[x == 1] < 1))


def test_non_causal_change_at_t_plus_1_changes_attention_at_t():
    torch.manual_seed(0)
    for cls in (TCJA, TLA, CLA):
        m = cls(2, 2, 6, 5)
        x = spikes()
        x2 = x.clone()
        x2[3] = 1 - x2[3]                            # change step t+1 = 3
        a, a2 = m.attention(x), m.attention(x2)
        assert not torch.allclose(a[2], a2[2]), cls.__name__


def test_tla_window_looks_ahead_not_back():
    """K_T = 2 with 'same' padding reads steps t and t+1 only: a change at t-1 leaves step t alone."""
    torch.manual_seed(0)
    m = TLA(2, 2, 6, 5)
    x = spikes()
    x2 = x.clone()
    x2[1] = 1 - x2[1]
    a, a2 = m.attention(x), m.attention(x2)
    torch.testing.assert_close(a[2:], a2[2:])
    assert not torch.allclose(a[0], a2[0])


def test_registry_rebuild_from_config():
    m = TCJA(4, 2, 6, 5)
    m2 = REGISTRY["TCJA"](**m.config)
    m2.load_state_dict(m.state_dict())
    x = spikes()
    torch.testing.assert_close(m(x), m2(x))
    assert m.config == {"kernel_size_t": 4, "kernel_size_c": 2, "T": 6, "channel": 5}

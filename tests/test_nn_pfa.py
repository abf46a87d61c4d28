"""PFA: parameter formula, the official AMC math, the never-trained λ, non-causality."""
import pytest
import torch

from neurocomp.nn import PFA, REGISTRY


@pytest.mark.parametrize("T,C,R,H", [(8, 16, 4, 4), (12, 128, 8, 6), (10, 2, 64, 16)])
def test_parameter_count_formula(T, C, R, H):
    assert sum(p.numel() for p in PFA(H, H, T, C, 3, R).parameters()) == R * (10 * T + C + 4)


def test_official_state_dict_names():
    sd = PFA(4, 4, 8, 16, 3, 4).state_dict()
    assert set(sd) == {"weight", "TS_conv.weight", "TS_conv.bias", "TC_FC.weight", "TC_FC.bias",
                       "SC_FC.weight", "SC_FC.bias"}
    assert sd["TS_conv.weight"].shape == (4, 8, 3, 3)
    assert sd["TC_FC.weight"].shape == (4, 16) and sd["SC_FC.weight"].shape == (4, 8)


def reference_pfa(x, m):
    """Loop over the rank, as the official reconstruct(): A = Σ_r w_r S_r ⊗ τ_r ⊗ κ_r."""
    T, N, C, H, W = x.shape
    R = m.rank
    xn = x.permute(1, 0, 2, 3, 4)
    S = torch.sigmoid(torch.nn.functional.conv2d(xn.mean(2), m.TS_conv.weight, m.TS_conv.bias,
                                                 padding=1))                 # N R H W
    Z = xn.mean(dim=(3, 4))                                                 # N T C
    tau = torch.sigmoid(Z @ m.TC_FC.weight.T + m.TC_FC.bias)                # N T R
    kap = torch.sigmoid(Z.transpose(1, 2) @ m.SC_FC.weight.T + m.SC_FC.bias)  # N C R
    A = torch.zeros(N, T, C, H, W)
    for r in range(R):
        A += (1.0 / R) * (S[:, r][:, None, None] * tau[:, :, r][:, :, None, None, None]
                          * kap[:, :, r][:, None, :, None, None])
    return torch.relu(A * xn).permute(1, 0, 2, 3, 4), A.permute(1, 0, 2, 3, 4)


def test_matches_reference_math():
    torch.manual_seed(0)
    m = PFA(5, 4, 6, 3, 3, 4)
    x = (torch.rand(6, 2, 3, 5, 4) < 0.5).float() * 0.75
    y, A = reference_pfa(x, m)
    with torch.no_grad():
        torch.testing.assert_close(m(x), y, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(m.attention(x), A, atol=1e-6, rtol=1e-5)
        assert torch.all((A > 0) & (A < 1))


def test_lambda_is_never_trained():
    torch.manual_seed(0)
    m = PFA(4, 4, 6, 3, 3, 5)
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    x = torch.rand(6, 2, 3, 4, 4)
    for _ in range(3):
        opt.zero_grad()
        m(x).square().sum().backward()
        opt.step()
    assert m.weight.grad is None
    torch.testing.assert_close(m.weight.data, torch.ones(5))
    assert m.TS_conv.weight.grad is not None


def test_non_causal_change_at_t_plus_1_changes_map_at_t():
    torch.manual_seed(0)
    m = PFA(4, 4, 6, 3, 3, 4)
    x = torch.rand(6, 2, 3, 4, 4)
    x2 = x.clone()
    x2[3] = torch.rand_like(x2[3])
    assert not torch.allclose(m.attention(x)[2], m.attention(x2)[2])


def test_registry_rebuild_from_config():
    m = PFA(4, 4, 8, 16, 3, 4)
    m2 = REGISTRY["PFA"](**m.config)
    m2.load_state_dict(m.state_dict())
    x = torch.rand(8, 2, 16, 4, 4)
    torch.testing.assert_close(m(x), m2(x))

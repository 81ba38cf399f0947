"""Margin-softmax heads: closed forms, gradients, mixed precision and argument checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.func import functional_call

from facesphere.errors import ConfigError
from facesphere.models.heads import HEADS, MarginHead, create_head, list_heads, register_head

ALL_HEADS = [
    "softmax",
    "normface",
    "lsoftmax",
    "sphereface",
    "cosface",
    "arcface",
    "combined",
    "curricularface",
    "adaface",
    "magface",
    "subcenter_arcface",
]


# --------------------------------------------------------------------------------------------
# helpers
def make_case(
    thetas: np.ndarray,
    num_classes: int = 7,
    dim: int = 6,
    seed: int = 0,
    norms: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random centres W, labels y and embeddings x whose angle to W[y] is exactly ``thetas``."""
    rng = np.random.default_rng(seed)
    n = len(thetas)
    w = rng.normal(size=(num_classes, dim)) * rng.uniform(0.5, 2.0, size=(num_classes, 1))
    y = rng.integers(0, num_classes, size=n)
    if norms is None:
        norms = rng.uniform(0.5, 3.0, size=n)
    x = np.empty((n, dim))
    for i in range(n):
        u = w[y[i]] / np.linalg.norm(w[y[i]])
        v = rng.normal(size=dim)
        v -= (v @ u) * u
        v /= np.linalg.norm(v)
        x[i] = norms[i] * (math.cos(thetas[i]) * u + math.sin(thetas[i]) * v)
    return x, w, y


def cos_matrix(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    wn = w / np.linalg.norm(w, axis=1, keepdims=True)
    return xn @ wn.T


def np_cross_entropy(logits: np.ndarray, y: np.ndarray) -> float:
    top = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(lse - logits[np.arange(len(y)), y]))


def build(name: str, w: np.ndarray, **kw: object) -> torch.nn.Module:
    head = create_head(name, w.shape[-1], w.shape[0], **kw).double()
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w))
    return head


def t64(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def logits_of(head: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return head.logits(t64(x), t64(y)).numpy()


def check_loss(head: torch.nn.Module, x: np.ndarray, y: np.ndarray, expected: float) -> None:
    with torch.no_grad():
        loss = head(t64(x), t64(y))
    assert loss.ndim == 0
    assert float(loss) == pytest.approx(expected, rel=1e-10, abs=1e-10)


def arc_target(theta: float, m: float) -> float:
    """insightface rule: cos(theta + m), or cos(theta) - m sin(m) once theta + m >= pi."""
    if theta + m < math.pi:
        return math.cos(theta + m)
    return math.cos(theta) - m * math.sin(m)


def psi_closed(theta: float, m: int) -> float:
    k = min(int(theta * m / math.pi), m - 1)
    return (-1) ** k * math.cos(m * theta) - 2 * k


def arc_thetas(m: float, seed: int = 1) -> np.ndarray:
    """Angles on both sides of pi - m (the fallback region)."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.uniform(0.05, math.pi - m - 0.05, 14), rng.uniform(math.pi - m + 0.02, 3.1, 6)]
    )


# --------------------------------------------------------------------------------------------
# registry
def test_registry_lists_every_head() -> None:
    assert sorted(ALL_HEADS) == list_heads()
    for name in ALL_HEADS:
        assert name in HEADS


def test_unknown_head_is_key_error() -> None:
    with pytest.raises(ConfigError, match="no_such_head"):
        create_head("no_such_head", 8, 4)


def test_duplicate_registration_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_head("arcface")(lambda **kw: None)


# --------------------------------------------------------------------------------------------
# closed forms
def test_softmax_is_affine_with_bias() -> None:
    x, w, y = make_case(np.full(9, 1.0))
    head = build("softmax", w)
    bias = np.linspace(-1.0, 1.0, w.shape[0])
    with torch.no_grad():
        head.bias.copy_(t64(bias))
    expected = x @ w.T + bias
    np.testing.assert_allclose(logits_of(head, x, y), expected, rtol=1e-12, atol=1e-12)
    check_loss(head, x, y, np_cross_entropy(expected, y))


def test_normface_is_scaled_cosine() -> None:
    x, w, y = make_case(np.random.default_rng(3).uniform(0.1, 3.0, 12))
    head = build("normface", w, s=16.0)
    expected = 16.0 * cos_matrix(x, w)
    np.testing.assert_allclose(logits_of(head, x, y), expected, rtol=1e-10, atol=1e-10)
    check_loss(head, x, y, np_cross_entropy(expected, y))


def test_cosface_target_and_others() -> None:
    thetas = np.random.default_rng(4).uniform(0.05, 3.1, 15)
    x, w, y = make_case(thetas)
    head = build("cosface", w, s=30.0, m=0.35)
    expected = 30.0 * cos_matrix(x, w)
    expected[np.arange(len(y)), y] = [30.0 * (math.cos(t) - 0.35) for t in thetas]
    np.testing.assert_allclose(logits_of(head, x, y), expected, rtol=1e-9, atol=1e-9)
    check_loss(head, x, y, np_cross_entropy(expected, y))


@pytest.mark.parametrize("m", [0.5, 0.9])
def test_arcface_target_including_theta_plus_m_beyond_pi(m: float) -> None:
    thetas = arc_thetas(m)
    x, w, y = make_case(thetas)
    head = build("arcface", w, s=64.0, m=m)
    expected = 64.0 * cos_matrix(x, w)
    expected[np.arange(len(y)), y] = [64.0 * arc_target(t, m) for t in thetas]
    np.testing.assert_allclose(logits_of(head, x, y), expected, rtol=1e-9, atol=1e-8)
    check_loss(head, x, y, np_cross_entropy(expected, y))


def test_arcface_easy_margin() -> None:
    near = np.array([math.pi / 2 - 0.03, math.pi / 2 + 0.03])  # either side of cos = 0
    thetas = np.concatenate([np.random.default_rng(5).uniform(0.05, 3.1, 16), near])
    assert (thetas < math.pi / 2).any() and (thetas > math.pi / 2).any()
    x, w, y = make_case(thetas)
    head = build("arcface", w, s=10.0, m=0.5, easy_margin=True)
    expected = 10.0 * cos_matrix(x, w)
    expected[np.arange(len(y)), y] = [
        10.0 * (math.cos(t + 0.5) if math.cos(t) > 0 else math.cos(t)) for t in thetas
    ]
    np.testing.assert_allclose(logits_of(head, x, y), expected, rtol=1e-9, atol=1e-8)


@pytest.mark.parametrize(("m1", "m2", "m3"), [(1.0, 0.3, 0.2), (1.3, 0.25, 0.1)])
def test_combined_margin_including_beyond_pi(m1: float, m2: float, m3: float) -> None:
    limit = (math.pi - m2) / m1
    rng = np.random.default_rng(6)
    thetas = np.concatenate(
        [rng.uniform(0.05, limit - 0.02, 12), rng.uniform(limit + 0.02, 3.1, 6)]
    )
    x, w, y = make_case(thetas)
    head = build("combined", w, s=32.0, m1=m1, m2=m2, m3=m3)

    def target(t: float) -> float:
        if m1 * t + m2 <= math.pi:
            return math.cos(m1 * t + m2) - m3
        return math.cos(t) - math.cos(limit) - 1.0 - m3

    expected = 32.0 * cos_matrix(x, w)
    expected[np.arange(len(y)), y] = [32.0 * target(t) for t in thetas]
    np.testing.assert_allclose(logits_of(head, x, y), expected, rtol=1e-9, atol=1e-8)
    check_loss(head, x, y, np_cross_entropy(expected, y))


def _segment_thetas(m: int, per: int = 3, seed: int = 7) -> np.ndarray:
    """``per`` random angles inside every L-Softmax segment [k pi/m, (k+1) pi/m]."""
    rng = np.random.default_rng(seed)
    width = math.pi / m
    return np.concatenate(
        [rng.uniform(k * width + 0.02, (k + 1) * width - 0.02, per) for k in range(m)]
    )


@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_lsoftmax_target_every_segment_with_annealing(m: int) -> None:
    thetas = _segment_thetas(m)
    x, w, y = make_case(thetas)
    base, gamma, power, lam_min = 3.0, 0.5, 1.5, 0.2
    head = build("lsoftmax", w, m=m, lambda_base=base, gamma=gamma, power=power, lambda_min=lam_min)
    rows = np.arange(len(y))
    magnitude = np.linalg.norm(x, axis=1) * np.linalg.norm(w[y], axis=1)

    def expected_at(step: int) -> np.ndarray:
        lam = max(lam_min, base * (1.0 + gamma * step) ** (-power))
        out = x @ w.T
        margin = magnitude * np.array([psi_closed(t, m) for t in thetas])
        out[rows, y] = (lam * out[rows, y] + margin) / (1.0 + lam)
        return out

    head.train()
    np.testing.assert_allclose(logits_of(head, x, y), expected_at(1), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(logits_of(head, x, y), expected_at(2), rtol=1e-9, atol=1e-9)
    head.eval()  # frozen counter
    np.testing.assert_allclose(logits_of(head, x, y), expected_at(2), rtol=1e-9, atol=1e-9)
    check_loss(head, x, y, np_cross_entropy(expected_at(2), y))


def test_lsoftmax_late_training_reaches_lambda_min() -> None:
    thetas = _segment_thetas(4)
    x, w, y = make_case(thetas)
    head = build("lsoftmax", w, m=4, lambda_base=1000.0, gamma=0.12, power=1.0, lambda_min=0.0)
    head.iteration.fill_(10**9)
    head.eval()
    out = logits_of(head, x, y)
    magnitude = np.linalg.norm(x, axis=1) * np.linalg.norm(w[y], axis=1)
    pure = magnitude * np.array([psi_closed(t, 4) for t in thetas])
    # lambda ~ 1e-5 here: the target is (almost) the pure margin logit
    np.testing.assert_allclose(out[np.arange(len(y)), y], pure, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("m", [2, 4])
def test_sphereface_unit_weights_and_annealing(m: int) -> None:
    thetas = _segment_thetas(m, seed=8)
    x, w, y = make_case(thetas, seed=2)
    head = build("sphereface", w, m=m, lambda_base=5.0, gamma=1.0, power=2.0, lambda_min=0.5)
    xnorm = np.linalg.norm(x, axis=1)
    lam = max(0.5, 5.0 * (1.0 + 1.0) ** -2.0)
    expected = xnorm[:, None] * cos_matrix(x, w)
    rows = np.arange(len(y))
    expected[rows, y] = xnorm * np.array(
        [(lam * math.cos(t) + psi_closed(t, m)) / (1.0 + lam) for t in thetas]
    )
    head.train()
    np.testing.assert_allclose(logits_of(head, x, y), expected, rtol=1e-9, atol=1e-9)
    assert int(head.iteration) == 1
    head.eval()
    check_loss(head, x, y, np_cross_entropy(expected, y))


def test_curricularface_hard_negatives_and_running_t() -> None:
    m, s = 0.5, 20.0
    rng = np.random.default_rng(9)
    thetas = rng.uniform(0.3, 2.9, 24)
    x, w, y = make_case(thetas, num_classes=9)
    head = build("curricularface", w, s=s, m=m)
    rows = np.arange(len(y))
    cos = cos_matrix(x, w)

    def expected_for(t: float) -> tuple[np.ndarray, int, int]:
        out = cos.copy()
        hard = cos > np.cos(thetas + m)[:, None]
        hard[rows, y] = False
        out[hard] = cos[hard] * (t + cos[hard])
        out[rows, y] = [arc_target(th, m) for th in thetas]
        n_easy = int((~hard).sum()) - len(y)
        return s * out, int(hard.sum()), n_easy

    t1 = 0.01 * float(np.cos(thetas).mean())
    expected, n_hard, n_easy = expected_for(t1)
    assert n_hard > 0 and n_easy > 0  # both branches are exercised
    head.train()
    np.testing.assert_allclose(logits_of(head, x, y), expected, rtol=1e-9, atol=1e-9)
    assert float(head.t) == pytest.approx(t1, rel=1e-12)
    # second step: t keeps averaging
    t2 = 0.99 * t1 + 0.01 * float(np.cos(thetas).mean())
    np.testing.assert_allclose(logits_of(head, x, y), expected_for(t2)[0], rtol=1e-9, atol=1e-9)
    head.eval()
    np.testing.assert_allclose(logits_of(head, x, y), expected_for(t2)[0], rtol=1e-9, atol=1e-9)
    check_loss(head, x, y, np_cross_entropy(expected_for(t2)[0], y))


def test_adaface_quality_adaptive_margin() -> None:
    m, s, hs = 0.4, 64.0, 0.333
    rng = np.random.default_rng(10)
    thetas = rng.uniform(0.05, 3.1, 20)
    norms = rng.uniform(1.0, 80.0, 20)
    x, w, y = make_case(thetas, norms=norms)
    head = build("adaface", w, s=s, m=m, h=hs)
    head.running_mean.fill_(30.0)
    head.running_std.fill_(5.0)
    mu = 0.99 * 30.0 + 0.01 * norms.mean()
    sigma = 0.99 * 5.0 + 0.01 * norms.std(ddof=1)
    h = np.clip(hs * (norms - mu) / (sigma + 1e-3), -1.0, 1.0)
    assert (h == 1.0).any() and (h == -1.0).any() and (np.abs(h) < 1).any()
    ang = np.clip(thetas - m * h, 1e-6, math.pi - 1e-6)
    expected = s * cos_matrix(x, w)
    rows = np.arange(len(y))
    expected[rows, y] = s * (np.cos(ang) - (m * h + m))
    head.train()
    np.testing.assert_allclose(logits_of(head, x, y), expected, rtol=1e-9, atol=1e-8)
    assert float(head.running_mean) == pytest.approx(mu)
    assert float(head.running_std) == pytest.approx(sigma)
    head.eval()
    check_loss(head, x, y, np_cross_entropy(expected, y))


def test_magface_margin_regulariser_and_quality() -> None:
    s = 64.0
    rng = np.random.default_rng(11)
    thetas = np.concatenate([rng.uniform(0.05, 2.2, 14), rng.uniform(2.5, 3.1, 6)])
    norms = rng.uniform(3.0, 130.0, 20)
    x, w, y = make_case(thetas, norms=norms)
    head = build("magface", w, s=s)
    a = np.clip(norms, 10.0, 110.0)
    margins = 0.45 + (0.8 - 0.45) * (a - 10.0) / (110.0 - 10.0)
    expected = s * cos_matrix(x, w)
    rows = np.arange(len(y))
    expected[rows, y] = [s * arc_target(t, mm) for t, mm in zip(thetas, margins, strict=True)]
    np.testing.assert_allclose(logits_of(head, x, y), expected, rtol=1e-9, atol=1e-8)
    reg = 35.0 * np.mean(1.0 / a + a / 110.0**2)
    check_loss(head, x, y, np_cross_entropy(expected, y) + reg)
    np.testing.assert_allclose(head.quality(t64(x)).numpy(), norms, rtol=1e-12)


def test_subcenter_arcface_uses_closest_subcentre() -> None:
    rng = np.random.default_rng(12)
    n, c, k, d = 16, 5, 3, 6
    x = rng.normal(size=(n, d)) * 2.0
    w = rng.normal(size=(c, k, d))
    y = rng.integers(0, c, size=n)
    head = create_head("subcenter_arcface", d, c, k=k, s=30.0, m=0.5).double()
    assert tuple(head.weight.shape) == (c, k, d)
    with torch.no_grad():
        head.weight.copy_(t64(w))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    wn = w / np.linalg.norm(w, axis=2, keepdims=True)
    per_centre = np.einsum("nd,ckd->nck", xn, wn)
    assert len(set(per_centre.argmax(axis=2).ravel().tolist())) > 1
    cos = per_centre.max(axis=2)
    expected = 30.0 * cos
    rows = np.arange(n)
    expected[rows, y] = [30.0 * arc_target(math.acos(cv), 0.5) for cv in cos[rows, y]]
    np.testing.assert_allclose(logits_of(head, x, y), expected, rtol=1e-9, atol=1e-8)
    check_loss(head, x, y, np_cross_entropy(expected, y))


def test_apply_margin_on_subset_with_absent_targets() -> None:
    """The margin step works on any cosine matrix; -1 rows keep their cosines."""
    head = create_head("arcface", 4, 3, s=10.0, m=0.5)
    assert isinstance(head, MarginHead)
    cos = torch.tensor([[0.2, 0.9, -0.3], [0.5, 0.1, 0.4]])
    out = head.apply_margin(cos, torch.tensor([1, -1]), target_cos=torch.tensor([0.9, 0.7]))
    theta = math.acos(0.9)
    expected = 10.0 * cos.clone()
    expected[0, 1] = 10.0 * math.cos(theta + 0.5)
    torch.testing.assert_close(out, expected)
    with pytest.raises(ValueError, match="target_cos"):
        head.apply_margin(cos, torch.tensor([1, -1]))


# --------------------------------------------------------------------------------------------
# gradients
def _gradcheck_inputs(
    name: str, seed: int = 0
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    n, c, d = 4, 5, 4
    kw: dict[str, object] = {"s": 4.0} if name not in {"softmax", "lsoftmax", "sphereface"} else {}
    if name in {"lsoftmax", "sphereface"}:
        kw = {"m": 3, "lambda_base": 2.0}
    head = create_head(name, d, c, **kw).double().eval()
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen, dtype=torch.float64))
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    if name == "magface":
        x = 40.0 * x / x.norm(dim=1, keepdim=True) * torch.linspace(0.5, 2.0, n)[:, None]
    if name == "adaface":
        # The paper stops the gradient through the norm; saturate h so the margin is locally
        # constant and finite differences agree.
        head.running_mean.fill_(0.0)
        head.running_std.fill_(0.1)
    if name == "curricularface":
        head.t.fill_(0.3)
    y = torch.arange(n) % c
    return head, x.requires_grad_(), y


@pytest.mark.parametrize("name", ALL_HEADS)
def test_gradcheck_float64(name: str) -> None:
    head, x, y = _gradcheck_inputs(name)
    w = head.weight.detach().clone().requires_grad_()

    def loss(x_: torch.Tensor, w_: torch.Tensor) -> torch.Tensor:
        return functional_call(head, {"weight": w_}, (x_, y))

    assert torch.autograd.gradcheck(loss, (x, w), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_adaface_gradcheck_weight_with_unsaturated_h() -> None:
    head, x, y = _gradcheck_inputs("adaface", seed=1)
    head.running_mean.fill_(float(x.detach().norm(dim=1).mean()))
    head.running_std.fill_(1.0)
    x = x.detach()
    w = head.weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda w_: functional_call(head, {"weight": w_}, (x, y)), (w,), eps=1e-6, atol=1e-5
    )


def _degenerate_batch(head: torch.nn.Module, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random embeddings plus rows exactly on (cos = 1) and opposite (cos = -1) their centre."""
    gen = torch.Generator().manual_seed(seed)
    c = head.weight.shape[0]
    d = head.weight.shape[-1]
    y = torch.randint(0, c, (12,), generator=gen)
    x = torch.randn(12, d, generator=gen) * 30.0
    centre = head.weight.detach().reshape(c, -1, d)[:, 0]
    x[0] = 50.0 * centre[y[0]] / centre[y[0]].norm()
    x[1] = -50.0 * centre[y[1]] / centre[y[1]].norm()
    return x.requires_grad_(), y


@pytest.mark.parametrize("name", ALL_HEADS)
@pytest.mark.parametrize("autocast", [False, True])
def test_finite_in_float32_and_bf16_autocast(name: str, autocast: bool) -> None:
    torch.manual_seed(0)
    head = create_head(name, 16, 10)
    x, y = _degenerate_batch(head, seed=1)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = head(x, y)
    loss.backward()
    assert loss.dtype == torch.float32
    assert torch.isfinite(loss)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert head.weight.grad is not None and torch.isfinite(head.weight.grad).all()
    assert head.weight.grad.abs().sum() > 0


def test_bf16_autocast_close_to_float32() -> None:
    torch.manual_seed(0)
    head = create_head("arcface", 32, 20, s=30.0)
    x = torch.randn(16, 32) * 10
    y = torch.randint(0, 20, (16,))
    with torch.no_grad():
        ref = float(head(x, y))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = float(head(x, y))
    assert low != ref  # the matmul really ran in bfloat16
    assert low == pytest.approx(ref, rel=0.05)


# --------------------------------------------------------------------------------------------
# argument checks
@pytest.mark.parametrize(
    ("name", "kw", "match"),
    [
        ("lsoftmax", {"m": 2.5}, "m must be an integer"),
        ("lsoftmax", {"m": 0}, "m must be an integer"),
        ("sphereface", {"m": -1}, "m must be an integer"),
        ("lsoftmax", {"lambda_min": -1.0}, "lambda_min"),
        ("cosface", {"m": -0.1}, "m must be a non-negative"),
        ("arcface", {"m": -0.5}, "m must be a non-negative"),
        ("arcface", {"m": 3.5}, "must be < pi"),
        ("arcface", {"s": 0.0}, "s must be a positive"),
        ("combined", {"m1": 0.5}, "m1"),
        ("combined", {"m3": -0.2}, "m3"),
        ("curricularface", {"m": -0.1}, "m must be"),
        ("curricularface", {"momentum": 1.5}, "momentum"),
        ("adaface", {"m": -0.4}, "m must be"),
        ("adaface", {"h": 0.0}, "h must be"),
        ("magface", {"l_a": 50.0, "u_a": 20.0}, "u_a must be greater"),
        ("magface", {"l_m": -0.1}, "l_m"),
        ("subcenter_arcface", {"k": 0}, "k must be an integer"),
    ],
)
def test_invalid_parameters_raise_value_error(name: str, kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        create_head(name, 8, 4, **kw)


@pytest.mark.parametrize(("dim", "classes"), [(0, 4), (8, 0)])
def test_invalid_sizes_raise_value_error(dim: int, classes: int) -> None:
    with pytest.raises(ValueError, match="must be an integer"):
        create_head("arcface", dim, classes)


def test_norm_aware_heads_need_norms() -> None:
    head = create_head("magface", 4, 3)
    assert isinstance(head, MarginHead)
    with pytest.raises(ValueError, match="feature norms"):
        head.apply_margin(torch.zeros(2, 3), torch.tensor([0, 1]))

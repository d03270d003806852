import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gpbayes import kernels


def params(q=5, seed=0):
    rng = np.random.default_rng(seed)
    return {"log_w": jnp.asarray(rng.normal(size=q)), "log_rho": jnp.asarray(rng.normal(size=q)),
            "mu": jnp.asarray(rng.uniform(0, 3, size=q))}


def reference_kernel(family, p, x1, x2):
    """The kernel written directly in (x1, x2), differentiated by jax.grad."""
    d = jnp.abs(x1 - x2)
    w, rho = jnp.exp(p["log_w"]), jnp.exp(p["log_rho"])
    if family in ("student-t-mixture", "matern52"):
        s = jnp.sqrt(5.0) * rho * d
        env = (1 + s + s**2 / 3) * jnp.exp(-s)
    else:
        env = jnp.exp(-rho * d**2)
    if kernels.family(family).frequencies:
        env = env * jnp.cos(2 * jnp.pi * p["mu"] * d)
    return jnp.sum(w * env)


@pytest.mark.parametrize("family", kernels.FAMILIES)
@pytest.mark.parametrize("r", [-1.3, -0.2, 0.0, 1e-3, 0.7, 2.5])
def test_closed_form_derivatives_match_autodiff(family, r):
    p = params()
    f = lambda a: reference_kernel(family, p, a, 0.0)  # noqa: E731
    for order, fn in enumerate([f, jax.grad(f), jax.grad(jax.grad(f))]):
        np.testing.assert_allclose(kernels.evaluate(family, p, r, order), fn(r), rtol=1e-10,
                                   atol=1e-12)


@pytest.mark.parametrize("order", [0, 1, 2])
def test_toeplitz_equals_pairwise(order):
    p = params()
    x = jnp.linspace(-1.0, 2.0, 17)
    pairwise = kernels.cross("student-t-mixture", p, x, x, order)
    np.testing.assert_allclose(kernels.toeplitz("student-t-mixture", p, x, order), pairwise,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("family", kernels.FAMILIES)
@pytest.mark.parametrize("order", [0, 1, 2])
def test_cross_on_one_spacing_takes_the_lags_and_equals_pairwise(family, order):
    p = params()
    x = np.linspace(-1.0, 2.0, 17)
    mid = 0.5 * (x[1:] + x[:-1])  # numpy, uniform, the grid's spacing: the lag path
    assert kernels._common_spacing(mid, x) is not None
    assert kernels._common_spacing(jnp.asarray(mid), x) is None  # traced-like: pairwise
    assert kernels._common_spacing(np.sort(np.r_[mid, 0.3]), x) is None  # not uniform
    pairwise = kernels.cross(family, p, jnp.asarray(mid), jnp.asarray(x), order)
    np.testing.assert_allclose(kernels.cross(family, p, mid, x, order), pairwise,
                               rtol=1e-12, atol=1e-12)


def test_first_derivative_is_odd_and_gram_symmetric():
    p = params()
    x = jnp.linspace(0, 1, 9)
    k1 = kernels.toeplitz("gaussian-mixture", p, x, 1)
    np.testing.assert_allclose(k1, -k1.T, atol=1e-13)
    k0 = kernels.toeplitz("gaussian-mixture", p, x, 0)
    np.testing.assert_allclose(k0, k0.T, atol=1e-14)


def test_unsupported_order():
    with pytest.raises(ValueError):
        kernels.evaluate("se", params(), 0.1, 3)


@pytest.mark.parametrize("family", kernels.FAMILIES)
def test_a_family_names_its_sites_and_converts_lengths(family):
    fam = kernels.family(family)
    names = fam.site_names("x")
    assert names[:2] == ["log_w_x", "log_rho_x"] and ("mu_x" in names) == fam.frequencies
    values = {**fam.initial("x", 3, 10.0), "log_w_y": 0.0}
    assert list(fam.axis_params(values, "x")) == [n[:-2] for n in names]
    length = np.array([0.1, 2.0])
    np.testing.assert_allclose(fam.length(np.exp(fam.log_rho(length))), length, rtol=1e-12)
    # the envelope at r = l with the rho of length l is the unit envelope at r = 1
    for l in (0.37, 4.0):
        env = fam.envelope(jnp.asarray(l), np.exp(fam.log_rho(l)), 0)
        assert float(env) == pytest.approx(float(fam.envelope(jnp.asarray(1.0), 1.0, 0)))

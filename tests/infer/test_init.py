import numpy as np
import pytest

import gpbayes as gb
from gpbayes.infer.init import peak_frequencies, spectral_params


def test_spectral_start_finds_the_source_frequency(root):
    p = gb.load_model(root / "models/poisson1d-sin100.toml")
    mu = np.asarray(spectral_params(p)["mu_x"])
    assert abs(mu[0] - 100 / (2 * np.pi)) < 0.02  # the strongest peak comes first
    assert len(mu) == p.components and np.all(mu >= 0)


def test_spectral_start_uses_boundary_data_when_source_is_zero(root):
    p = gb.load_model(root / "models/advection-beta200.toml")  # f = 0
    mu_t = np.asarray(spectral_params(p)["mu_t"])
    assert abs(mu_t[0] - 200 / (2 * np.pi)) < 0.1  # from sin(x - 200 t) on the x faces


def test_spectral_start_does_not_read_the_solution(root):
    p = gb.load_model(root / "models/poisson1d-sin100.toml")
    before = np.asarray(spectral_params(p)["mu_x"])
    object.__setattr__(p, "solution", None)  # the start must not change
    p.__dict__.pop("exact_test", None)
    np.testing.assert_array_equal(np.asarray(spectral_params(p)["mu_x"]), before)


def test_peaks_above_floor_only():
    f = np.linspace(0, 10, 101)
    amp = np.exp(-((f - 3) ** 2) / 0.01) + 0.5 * np.exp(-((f - 7) ** 2) / 0.01)
    np.testing.assert_allclose(peak_frequencies(f, amp, 5), [3.0, 7.0])


def test_peaks_are_refined_between_bins():
    """A tone between two FFT bins is located to a small fraction of the bin width."""
    from gpbayes.infer.init import PAD, window

    n, h, nu = 400, 1 / 399, 79.577
    x = np.arange(n) * h
    freqs = np.fft.rfftfreq(PAD * n, h)
    amp = np.abs(np.fft.rfft(np.sin(2 * np.pi * nu * x) * window(n), PAD * n))
    bin_width = freqs[1] - freqs[0]
    assert abs(freqs[np.argmax(amp)] - nu) > 0.05 * bin_width  # the tone is off-bin
    assert abs(peak_frequencies(freqs, amp / amp.max(), 1)[0] - nu) < 0.01 * bin_width


def test_an_axis_without_data_takes_the_dispersion_relation(root):
    """On an evolution axis (no data spans it) the start's frequencies come from the
    equation's symbol at the other axes' peaks: nu_t = c nu_x for advection and the wave
    equation; none for the heat equation (a smooth start, frequency 0)."""
    import gpbayes as gb
    from gpbayes.infer.init import dispersion_frequencies, spectral_params

    wave = gb.load_model(root / "models/wave1d.toml")  # u = sin(20 pi x)(...), c = 1
    assert dispersion_frequencies(wave, 1, [[10.0], []]) == pytest.approx([10.0])
    adv = gb.load_model(root / "models/advection-periodic.toml")  # c = 0.5, 20 cycles in x
    mu_t = np.asarray(spectral_params(adv)["mu_t"])
    assert mu_t[0] == pytest.approx(10.0, rel=1e-2) and 0.0 in mu_t
    heat = gb.load_model(root / "models/heat1d-neumann.toml")
    assert dispersion_frequencies(heat, 1, [[1.0, 4.0], []]) == []
    assert np.asarray(spectral_params(heat)["mu_t"])[0] == 0.0

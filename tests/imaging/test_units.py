"""``imaging.units``: a lab's µm, ms and Hz against the trap units a⊥, 1/ω⊥."""

import math

import pytest

from bec_jax.imaging.units import ATOMIC_MASS_U, TrapUnits, atomic_mass


def test_oscillator_units_of_rubidium():
    """87Rb at ω⊥ = 2π·100 Hz: a⊥ = √(ħ/mω⊥) = 1.0784 µm (the textbook 1.08 µm), 1/ω⊥ = 1.5915 ms."""
    u = TrapUnits(100.0, "87Rb")
    assert u.length_um == pytest.approx(1.07843, rel=1e-4)
    assert u.time_ms == pytest.approx(1.59155, rel=1e-5)
    assert u.velocity_mm_per_s == pytest.approx(0.677596, rel=1e-5)  # 1.07843 µm / 1.59155 ms
    # a⊥ ∝ (m ω⊥)^(-1/2): a quarter of the frequency doubles it; so does a quarter of the mass
    assert TrapUnits(25.0, "87Rb").length_um == pytest.approx(2 * u.length_um, rel=1e-12)
    assert TrapUnits(100.0, ATOMIC_MASS_U["87Rb"] / 4).length_um == pytest.approx(2 * u.length_um, rel=1e-12)
    assert TrapUnits(100.0, "23Na").length_um == pytest.approx(
        u.length_um * math.sqrt(ATOMIC_MASS_U["87Rb"] / ATOMIC_MASS_U["23Na"]), rel=1e-12)
    d = TrapUnits(100.0, " 87rb").as_dict()
    assert d["species"] == "87Rb" and d["mass_u"] == ATOMIC_MASS_U["87Rb"] and d["time_ms"] == u.time_ms


@pytest.mark.parametrize("species,mass", [("87rb", ATOMIC_MASS_U["87Rb"]), (" 23Na ", ATOMIC_MASS_U["23Na"]),
                                          ("170.5", 170.5), (40, 40.0)])
def test_species_by_name_or_mass(species, mass):
    assert atomic_mass(species) == mass


@pytest.mark.parametrize("species,words", [("Rb", "must be one of 6Li"), ("-3", r"must be in \[1, 1000\]"),
                                           ("nan", r"must be in \[1, 1000\], got .nan."), (True, "must be one of"),
                                           (10**400, r"must be in \[1, 1000\], got 1000")])
def test_bad_species_and_frequencies_are_named(species, words):
    with pytest.raises(ValueError, match=words):
        atomic_mass(species)
    for f in (0.0, -5.0, float("inf"), "10", 10**400):
        with pytest.raises(ValueError, match=r"trap_frequency_hz must be a number in \(0, 1e300\) Hz"):
            TrapUnits(f, "87Rb")


def test_predict_help_lists_every_known_isotope():
    from bec_jax.deploy.predict import ImageSettings
    from bec_jax.flags import field_docs

    doc = field_docs(ImageSettings)["species"]
    assert all(f" {k}," in doc for k in ATOMIC_MASS_U), doc

"""The one line a plugin author adds: avade's conformance kit over everything this plugin registers."""

import pytest

pytest.importorskip("avade_nice")

from avade.testing import check_distribution


def test_avade_nice_conforms():
    assert sorted(check_distribution("avade-nice")) == ["discriminator/sngan", "flow/nice"]


def test_small_configs_reach_the_checks():
    assert "flow/nice" in check_distribution("avade-nice", configs={("flow", "nice"): {"hidden": 4}})
    # proof that the given config, not a default, was built (its error said once, not per test shape)
    with pytest.raises(AssertionError, match=r"flow 'nice': does not build: flow.nice.hidden: expected a number "
                                             r">= 1, got 0$"):
        check_distribution("avade-nice", configs={("flow", "nice"): {"hidden": 0}})


def test_distribution_names_in_any_spelling_and_config_typos():
    assert "flow/nice" in check_distribution("Avade_Nice", configs={("flow", "nice"): {"hidden": 4}})
    with pytest.raises(AssertionError, match=r"configs names flow/nicer, which 'avade-nice' does not register"):
        check_distribution("avade-nice", configs={("flow", "nicer"): {"hidden": 4}})

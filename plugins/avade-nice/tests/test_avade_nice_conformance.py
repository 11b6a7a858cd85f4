"""The one line a plugin author adds: avade's conformance kit over everything this plugin registers."""

import pytest

pytest.importorskip("avade_nice")

from avade.testing import check_distribution


def test_avade_nice_conforms():
    assert sorted(check_distribution("avade-nice")) == ["discriminator/sngan", "flow/nice"]

"""Conformance kit for components, in the spirit of scikit-learn's ``check_estimator``.

A plugin author adds one line to their test suite::

    from avade.testing import check_distribution
    def test_my_plugin_conforms():
        check_distribution("my-avade-plugin")

or checks a single component with ``check_component("flow", "my-flow")``. Each check raises
``AssertionError`` naming the component and what it violated.
"""

from avade.testing.checks import (
    CHECKS,
    check_component,
    check_distribution,
    check_module,
    component_ids,
)
from avade.testing.context import SyntheticEvalContext

__all__ = ["CHECKS", "SyntheticEvalContext", "check_component", "check_distribution", "check_module",
           "component_ids"]

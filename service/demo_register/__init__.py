"""A generated register for trying metreg and benchmarking it: ``metreg demo --instruments N``.

:mod:`~service.demo_register.trades` holds what registers are made of, :mod:`~service.demo_register.generate`
draws enterprises and instruments from a seed (pure), :mod:`~service.demo_register.queries` is the SQL
and :mod:`~service.demo_register.load` loads a register over several connections.
"""

from service.demo_register.generate import SHARES, EnterprisePlan, EnterpriseSpec, enterprise_plan, plan_register
from service.demo_register.load import DemoRegisterError, LoadResult, load_register

__all__ = (
    "SHARES",
    "DemoRegisterError",
    "EnterprisePlan",
    "EnterpriseSpec",
    "LoadResult",
    "enterprise_plan",
    "load_register",
    "plan_register",
)

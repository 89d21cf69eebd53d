"""Reconciliation: a visit's actual state (attendances, status, payable and banked minutes,
exceptions) from its plan, events, amendments, contract rules and `now`."""

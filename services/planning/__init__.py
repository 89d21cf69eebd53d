"""Planning: care plans, the visits generated from them, extra visits, moves and cancellations."""

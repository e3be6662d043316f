"""The audit trail: the one writer and its event kinds."""

"""Adversarial tests: each attack class, the exact refusal, and that nothing was issued, changed or left valid."""

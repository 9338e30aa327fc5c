"""Clinical knowledge that is not a rule: thresholds (as data) and derived clinical facts."""

"""Small shared utilities (atomic writes)."""

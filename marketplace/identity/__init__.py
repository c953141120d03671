"""Identity: API tokens for businesses and operators, and signed single-use links for customers."""

"""The e-wallet: pure ledger rules, offsets, VAT, commission plans and invoice rendering.

The modules here import neither the web framework nor the database; services call them.
"""

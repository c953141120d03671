"""The e-wallet: pure rules (ledger, offset, VAT, commission plans, invoice rendering) that import neither the web
framework nor the database, and the services that move money through the ledger, one module per job (plan
versions, invoices, charges, refunds, debts, withdrawals, settlements) and the credit limits.
"""

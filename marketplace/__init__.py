"""A lead marketplace: businesses receive customer leads ranked by profitability, pay per deal or per lead."""

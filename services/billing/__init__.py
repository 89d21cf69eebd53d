"""Billing: rate bands, invoice periods and lines, invoice runs, payments and disputes."""

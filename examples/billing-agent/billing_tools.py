"""The billing agent's tools: plain Python functions over invoices.json (beside this file).

A tool's name, description and argument schema come from its signature and docstring; the agent
step validates the model's arguments before a tool runs, and a tool's error goes back to the model
as text it can act on.
"""

from __future__ import annotations

import json
from pathlib import Path

INVOICES = Path(__file__).with_name("invoices.json")


def _invoice(number: str) -> dict:
    invoices = json.loads(INVOICES.read_text())
    key = number.strip().upper()
    if key not in invoices:
        raise LookupError(f"there is no invoice {number!r}; invoice numbers look like INV-1042")
    return {"number": key, **invoices[key]}


def get_invoice(number: str) -> dict:
    """Look up an invoice by its number (like INV-1042): customer, total, currency, status and the amount already refunded."""
    return _invoice(number)


def issue_refund(number: str, amount: float) -> dict:
    """Refund part or all of a paid invoice. Refuses an open invoice or more than what is left to refund.
    (A demo: it answers what it would do and changes no file.)"""
    inv = _invoice(number)
    left = round(inv["total"] - inv["refunded"], 2)
    if inv["status"] != "paid":
        raise ValueError(f"{inv['number']} is {inv['status']}: only a paid invoice can be refunded")
    if amount <= 0 or amount > left:
        raise ValueError(f"{inv['number']}: can refund between 0 and {left} {inv['currency']}, not {amount}")
    return {"refund": f"RF-{inv['number'][4:]}-{int(amount * 100)}", "number": inv["number"], "amount": amount,
            "currency": inv["currency"], "left_to_refund": round(left - amount, 2)}

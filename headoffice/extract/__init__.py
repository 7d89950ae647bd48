"""Head-office extract: what other systems consume from the journaled sales.

Owns purchase records for loyalty, the transaction roll-up and AR postings for the ERP, POS-batch
location tax, their JSONL/CSV outputs and HTTP delivery; each record is emitted exactly once.
"""

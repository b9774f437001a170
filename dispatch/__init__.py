"""Outbox to runs: the dispatcher that turns stored signals into Prefect playbook runs."""

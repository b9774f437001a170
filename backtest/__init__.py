"""Backtesting: the real rules and playbooks replayed over past events on a simulated clock."""

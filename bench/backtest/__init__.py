"""`python -m bench.backtest`: events per second of the backtest, beside the live pipeline."""

"""`python -m bench.backtest`: see `bench.backtest.run`."""

from bench.backtest.run import main

if __name__ == "__main__":
    main()

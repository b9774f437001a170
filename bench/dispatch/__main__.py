"""`python -m bench.dispatch`: see `bench.dispatch.run`."""

from bench.dispatch.run import main

if __name__ == "__main__":
    main()

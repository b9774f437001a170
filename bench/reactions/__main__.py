"""`python -m bench.reactions`: see `bench.reactions`."""

from bench.reactions.run import main

if __name__ == "__main__":
    main()

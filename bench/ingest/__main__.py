"""`python -m bench.ingest`: see `bench.ingest.run`."""

from bench.ingest.run import main

if __name__ == "__main__":  # a spawned child (the paced producer) imports this module too
    main()

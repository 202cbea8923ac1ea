"""``python -m turnout.testing.mockserver``: run the loopback mock server in its own process."""

from ._mockserver import main

if __name__ == "__main__":
    main()

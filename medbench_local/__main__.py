"""``python -m medbench_local`` is the same as the ``medbench-local`` command."""

from .cli import main

if __name__ == "__main__":
    main()

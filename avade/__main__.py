"""``python -m avade`` (also what ``torchrun -m avade recipe run ...`` starts on each process)."""

from avade.cli import main

main()

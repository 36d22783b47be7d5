"""`python -m app.entrypoints` is `foley`, for a checkout with no script installed."""

from app.entrypoints import main

main()

"""One module per kernel family; each defines `cases(quick: bool) -> list[Case]`."""

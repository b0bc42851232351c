"""Channel dependency graph and channel surgery (never imports ``algorithms``)."""

__all__: list[str] = []

"""A module that no test imports: if it ever appears in sys.modules, a request made the service import it."""


def factory() -> None:
    raise AssertionError("a request imported a module that was not allow-listed")

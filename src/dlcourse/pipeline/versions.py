"""The installed versions of the project's distributions: the models logged to MLflow name them as
their requirements, and the report's environment section shows them."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def installed_version(*distributions: str) -> str | None:
    """The version of the first of these distributions that is installed (MLflow comes as `mlflow`
    or as its lighter `mlflow-skinny`)."""
    for distribution in distributions:
        try:
            return version(distribution)
        except PackageNotFoundError:
            continue
    return None

"""Request bodies (pydantic). Unknown fields are refused so that typos do not pass silently.

Only the shape is checked here; the grammar (PRIs, labels, times, manifest
rules) is checked by ``pvc_client``'s parsers in the routes, which give the
specific error codes of docs/api.md.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pvc_client import PUBLISH_BATCH_LIMIT, VERSIONS_BATCH_LIMIT
from pydantic import BaseModel, ConfigDict, Field

__all__ = ["PAGE_LIMIT", "WorkspaceOrigin", "PublishBody", "PublicationBody", "PublishManyBody", "RenameBody", "LabelBody", "MissingBody", "BatchGetBody", "ClosureBody", "VersionsBody", "WorkspaceBody",
           "SnapshotBody"]

_TEXT = 256
_MESSAGE = 64 * 1024
_LIST = 100_000
# the most products one page of /index, /closure or /products answers
PAGE_LIMIT = 100_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkspaceOrigin(_Body):
    """The workspace revision a version is published from (its name's grammar is checked in the route)."""

    name: str = Field(min_length=1, max_length=128)
    revision: int = Field(ge=1, le=2**31 - 1)


class PublishBody(_Body):
    # entries stay raw so that validate_manifest gives the precise reason
    manifest: list[Any] = Field(default_factory=list)
    dependencies: list[str] = Field(default_factory=list, max_length=_LIST)
    labels: list[str] = Field(default_factory=list, max_length=1000)
    message: str | None = Field(None, max_length=_MESSAGE)
    author: str | None = Field(None, max_length=_TEXT)
    at: str | None = Field(None, max_length=_TEXT, description="publish time (any accepted time form)")
    workspace: WorkspaceOrigin | None = Field(None, description="the workspace revision it was made in")


class PublicationBody(PublishBody):
    pri: str = Field(max_length=1024)


class PublishManyBody(_Body):
    publications: list[PublicationBody] = Field(min_length=1, max_length=PUBLISH_BATCH_LIMIT)


class RenameBody(_Body):
    new_pri: str = Field(max_length=1024)


class LabelBody(_Body):
    version: int = Field(ge=1, le=2**31 - 1)
    author: str | None = Field(None, max_length=_TEXT)


class MissingBody(_Body):
    sha256: list[str] = Field(max_length=1_000_000)


class BatchGetBody(_Body):
    sha256: list[str] = Field(min_length=1, max_length=10_000)


class ClosureBody(_Body):
    roots: list[str] = Field(max_length=_LIST)
    as_of: str | None = Field(None, max_length=_TEXT)
    depth: int | None = Field(None, ge=0, le=1_000_000,
                              description="levels of dependencies followed; null: all, 0: the roots only")
    missing: Literal["error", "omit"] = Field(
        "error", description="an unknown root: 404 (error) or answered with a null pri and number (omit)")
    after: int | None = Field(None, ge=0, le=2**63 - 1,
                              description="page on from this product id (a page's next); null: the first page")
    limit: int | None = Field(None, ge=1, le=PAGE_LIMIT, description="products per page; null: all")


class VersionsBody(_Body):
    versions: list[Annotated[str, Field(max_length=1024)]] = Field(
        min_length=1, max_length=VERSIONS_BATCH_LIMIT, description="exact versions, PRI@N")
    as_of: str | None = Field(None, max_length=_TEXT)
    missing: Literal["error", "omit"] = Field(
        "error", description="an unknown ref: 404 (error) or answered with null in its place (omit)")


class WorkspaceBody(_Body):
    roots: list[str] = Field(default_factory=list, max_length=_LIST)
    strategy: str = Field("latest", max_length=64)
    pin: str | None = Field(None, max_length=_TEXT)
    prefer: list[str] = Field(default_factory=list, max_length=1000)
    overrides: list[str] = Field(default_factory=list, max_length=_LIST)
    outputs: list[str] = Field(default_factory=list, max_length=_LIST,
                               description="the products this workspace makes (PRIs, no version)")
    author: str | None = Field(None, max_length=_TEXT)


class SnapshotBody(_Body):
    record: dict[str, Any]

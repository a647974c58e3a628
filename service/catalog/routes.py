"""``/v1/catalog``: the legal catalogue, readable by every key."""

from __future__ import annotations

from litestar import Controller, get

from service.catalog.queries import select_catalog
from service.catalog.schemas import CatalogItem
from service.deps import Db, PrincipalDep
from service.policy import Actor, access
from service.problems import problem_responses

__all__ = ("CatalogController",)


class CatalogController(Controller):
    path = "/catalog"
    tags = ["Catalogue"]

    @get(
        operation_id="ListCatalogItems",
        opt=access(*Actor),
        summary="List the catalogue",
        description="Instrument types of the legal catalogue with their regime, compulsory uses, "
        "legal maximum and default cycle, and the regulation that sets them.",
        responses=problem_responses(401),
    )
    async def list_catalog(self, db: Db, principal: PrincipalDep) -> list[CatalogItem]:
        return await select_catalog(db)

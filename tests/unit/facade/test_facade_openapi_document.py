"""The OpenAPI document is the facade's contract with clients and generators: it must not move
when the request path changes underneath (issue 20: the generating routes skip FastAPI's
dependency injection, yet their security scheme, parameters and replies are documented as
before).

data/openapi.json is the document main 9adbaed generated, before that change. Should the API
change on purpose, regenerate it with:

    python -c "import json; from tests.unit.facade.test_facade_openapi_document import \
document; print(json.dumps(document(), indent=1, sort_keys=True))" \
        > tests/unit/facade/data/openapi.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from facade.app import create_app
from facade.settings import FacadeSettings

EXPECTED = Path(__file__).parent / "data" / "openapi.json"


def document() -> dict[str, Any]:
    app = create_app(FacadeSettings(keys_file=None, api_keys=["k"], openapi_docs=True))
    schema: dict[str, Any] = app.openapi()
    return schema


def test_the_openapi_document_is_the_one_main_generated() -> None:
    assert document() == json.loads(EXPECTED.read_text())


def test_the_generating_routes_are_documented_with_the_bearer_scheme() -> None:
    paths = document()["paths"]
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/responses"):
        assert paths[path]["post"]["security"] == [{"HTTPBearer": []}], path

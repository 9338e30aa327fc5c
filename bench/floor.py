"""The floor: the least a Flask app served by gunicorn can do with a CDS Hooks request.

One endpoint, the same route shape as the service: read the body, parse it with the same JSON
parser (orjson, as the service does), answer ``{"cards": []}`` written by orjson too. Whatever
the service costs above this is its own work.

    gunicorn --workers 2 --bind 127.0.0.1:8090 bench.floor:app
"""

from __future__ import annotations

import orjson
from flask import Flask, Response, request

app = Flask(__name__, static_folder=None)


@app.post("/cds-services/<service_id>")
def invoke(service_id: str) -> Response:
    orjson.loads(request.get_data(cache=False))
    return app.response_class(b'{"cards":[]}\n', mimetype="application/json")

"""A standard Open Inference Protocol client (tritonclient[http], from PyPI)
against `serve`, unchanged: health, metadata, infer by model and by version.

Usage: oip_client.py HOST:PORT MODEL VERSION
Prints one JSON line with what the server answered; exits non-zero on any
mismatch (each assert names it).
"""

import json
import sys

import numpy as np
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

url, model, version = sys.argv[1], sys.argv[2], sys.argv[3]
client = httpclient.InferenceServerClient(url=url)

assert client.is_server_live(), "server not live"
assert client.is_server_ready(), "server not ready"
assert client.is_model_ready(model), "model not ready"
server = client.get_server_metadata()
assert server["name"] == "zenflow", server
meta = client.get_model_metadata(model)
assert meta["name"] == model and meta["versions"][0] == version, meta
features = meta["inputs"][0]
assert features["datatype"] == "FP64" and features["shape"][0] == -1, features

width = features["shape"][1]
rows = np.array([[0.1] * width, [0.9] * width], dtype=np.float64)
inp = httpclient.InferInput(features["name"], list(rows.shape), "FP64")
inp.set_data_from_numpy(rows, binary_data=False)
outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=False) for o in meta["outputs"]]

answers = {}
for v in ("", version):
    result = client.infer(model, [inp], model_version=v, outputs=outputs, request_id="oip-1")
    response = result.get_response()
    assert response["model_version"] == version, response
    assert response["id"] == "oip-1", response
    labels = result.as_numpy("label")
    assert labels.shape == (2,) and labels.dtype == np.int64, (labels.shape, labels.dtype)
    probabilities = result.as_numpy("probabilities")
    if probabilities is not None:
        assert probabilities.shape[0] == 2, probabilities.shape
        assert np.allclose(probabilities.sum(axis=1), 1.0), probabilities
    answers[v or "live"] = labels.tolist()

# A bad request is the client's error, with the server's message.
bad = httpclient.InferInput(features["name"], [1, width + 1], "FP64")
bad.set_data_from_numpy(np.zeros((1, width + 1)), binary_data=False)
try:
    client.infer(model, [bad], outputs=outputs)
    raise AssertionError("a [1, %d] input was accepted" % (width + 1))
except InferenceServerException as e:
    assert "must have shape [n, %d]" % width in e.message(), e.message()
    answers["bad"] = e.message()

print(json.dumps(answers))

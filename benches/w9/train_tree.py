"""W9: one scikit-learn decision tree (depth 5, the breast-cancer data set
that scikit-learn ships), written three ways so that every server serves
the very same tree: model.joblib for MLServer's sklearn runtime, an MLflow
model for `mlflow models serve`, and tree.json for zenflow's `serve`.
Also writes the request bodies (one held-out row each) for both protocols
and the sample requests zenflow warms up with.

Usage: train_tree.py OUT_DIR   (run with a Python that has scikit-learn;
pass --mlflow to also write the MLflow model, with a Python that has mlflow)
"""

import json
import os
import sys

import joblib
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
data = load_breast_cancer()
x_train, x_test, y_train, y_test = train_test_split(
    data.data, data.target, test_size=0.3, random_state=7, stratify=data.target
)
tree = DecisionTreeClassifier(max_depth=5, random_state=0).fit(x_train, y_train)
print(f"depth-5 tree: {tree.tree_.node_count} nodes, held-out accuracy {tree.score(x_test, y_test):.3f}")

if "--mlflow" in sys.argv:
    import mlflow.sklearn

    # pickle: the default (skops) refuses to load a tree it did not vet.
    mlflow.sklearn.save_model(tree, os.path.join(out, "mlflow-model"), serialization_format="pickle")
    sys.exit(0)

joblib.dump(tree, os.path.join(out, "model.joblib"))
with open(os.path.join(out, "model-settings.json"), "w") as f:
    json.dump(
        {"name": "breast-cancer", "implementation": "mlserver_sklearn.SKLearnModel",
         "parameters": {"uri": "./model.joblib", "version": "1"}},
        f,
    )
def export(model, path):
    """The tree in scikit-learn's array layout, with its own answers to four
    held-out rows as the warm-up samples zenflow registers with it."""
    t = model.tree_
    with open(path, "w") as f:
        json.dump(
            {
                "width": int(x_train.shape[1]),
                "children_left": t.children_left.tolist(),
                "children_right": t.children_right.tolist(),
                "feature": t.feature.tolist(),
                "threshold": t.threshold.tolist(),
                "leaf_class": [int(np.argmax(v)) for v in t.value[:, 0, :]],
                "classes": model.classes_.tolist(),
                "samples": [
                    {
                        "request": {"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP64", "data": row.tolist()}]},
                        "expected": [int(p)],
                    }
                    for row, p in zip(x_test[:4], model.predict(x_test[:4]))
                ],
            },
            f,
        )


export(tree, os.path.join(out, "tree.json"))
# W10's new version: a deeper tree on the same data.
export(DecisionTreeClassifier(max_depth=6, random_state=0).fit(x_train, y_train), os.path.join(out, "tree_v2.json"))
with open(os.path.join(out, "bodies_oip.jsonl"), "w") as f:
    for row in x_test:
        body = {"inputs": [{"name": "features", "shape": [1, 30], "datatype": "FP64", "data": row.tolist()}]}
        f.write(json.dumps(body) + "\n")
with open(os.path.join(out, "bodies_mlflow.jsonl"), "w") as f:
    for row in x_test:
        f.write(json.dumps({"inputs": [row.tolist()]}) + "\n")

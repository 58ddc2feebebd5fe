"""The revisited Oxford and Paris landmark-retrieval protocol (Radenović et al., CVPR 2018):
Easy / Medium / Hard mAP and mean precision at k, with junk images ignored.

Ground truth, per query q: the database indices of its ``easy``, ``hard`` and ``junk`` images
and its query box ``bbx``. The three settings count as positives / ignore:

- Easy: positives = easy; ignored = junk + hard;
- Medium: positives = easy + hard; ignored = junk;
- Hard: positives = hard; ignored = junk + easy.

Ignored images are removed from the ranking before scoring. With the positives at 0-based
ranks r_1 < ... < r_m of that ranking and P the number of positives, the average precision is
the trapezoidal area under the precision-recall curve used by the protocol's reference
evaluation: AP = (1 / P) sum_j (p0_j + p1_j) / 2 with p1_j = j / (r_j + 1) and
p0_j = (j - 1) / r_j (1 for r_j = 0). Precision at k uses k' = min(k, r_m + 1), the rank of the
last positive when fewer than k ranks hold positives: mP@k = #{r_j < k'} / k'. Queries without
a positive in a setting are left out of that setting's means and counted.

The ground truth is read from a documented JSON file (:func:`load_ground_truth`):
``{"imlist": [names], "qimlist": [names], "gnd": [{"easy": [...], "hard": [...], "junk": [...],
"bbx": [x1, y1, x2, y2]}, ...]}``. The public files are Python pickles of that same structure;
:func:`read_ground_truth_pickle` reads them without executing anything (every opcode must build
plain data: numbers, strings, lists, tuples, dicts), and ``poolwise vision convert-gnd`` writes
the JSON.
"""

from __future__ import annotations

import json
import pickle
import pickletools
from pathlib import Path

import numpy as np

SETTINGS = ("easy", "medium", "hard")
KAPPAS = (1, 5, 10)

# opcodes that only build plain data (no lookup of a global, no call, no object state)
_DATA_OPCODES = frozenset({
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
    "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
    "BINUNICODE8", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "NONE", "NEWTRUE", "NEWFALSE",
    "EMPTY_LIST", "APPEND", "APPENDS", "LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2",
    "TUPLE3", "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "EMPTY_SET", "ADDITEMS", "FROZENSET",
})


class _NoGlobals(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> None:
        raise pickle.UnpicklingError(f"refused to load {module}.{name}")


def read_ground_truth_pickle(path: str | Path) -> dict:
    """The ground truth of a revisited-protocol pickle (``gnd_roxford5k.pkl``), checked.

    Every opcode is checked before anything is loaded; the file is refused if one could look
    up a global or call anything, so no code in it can run.

    Raises:
        ValueError: naming the file and the first opcode (and byte offset) that is not plain
            data, or what is wrong with the structure.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        for opcode, _, position in pickletools.genops(data):
            if opcode.name not in _DATA_OPCODES:
                raise ValueError(
                    f"{path}: opcode {opcode.name} at byte {position} does more than build "
                    "plain data (it could run code); refused. A revisited-protocol ground truth "
                    "holds only lists, dicts, strings and numbers")
    except (ValueError, pickle.UnpicklingError) as error:
        if str(error).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable pickle ({error})") from None
    import io

    table = _NoGlobals(io.BytesIO(data), encoding="latin1").load()
    return check_ground_truth(table, str(path))


def load_ground_truth(path: str | Path) -> dict:
    """The ground truth of a JSON file in the documented form (see the module docstring).

    Raises:
        ValueError: naming the file and the field at fault.
    """
    path = Path(path)
    try:
        table = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error})") from None
    return check_ground_truth(table, str(path))


def check_ground_truth(table: object, source: str) -> dict:
    """``table`` with its lists as plain Python lists, after checking every field."""
    if not isinstance(table, dict) or not {"imlist", "qimlist", "gnd"} <= set(table):
        raise ValueError(f"{source}: expected an object with imlist, qimlist and gnd")
    images, queries, gnd = table["imlist"], table["qimlist"], table["gnd"]
    if not all(isinstance(v, (list, tuple)) for v in (images, queries, gnd)):
        raise ValueError(f"{source}: imlist, qimlist and gnd must be lists")
    if len(gnd) != len(queries):
        raise ValueError(f"{source}: {len(queries)} query names but {len(gnd)} gnd entries")
    n = len(images)
    checked = []
    for q, entry in enumerate(gnd):
        if not isinstance(entry, dict):
            raise ValueError(f"{source}: gnd[{q}] is not an object")
        item = {}
        for key in ("easy", "hard", "junk"):
            values = entry.get(key, [])
            if not isinstance(values, (list, tuple)) or not all(
                    isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n
                    for i in values):
                raise ValueError(f"{source}: gnd[{q}].{key} must list database indices in "
                                 f"[0, {n})")
            item[key] = sorted(set(values))
        overlap = (set(item["easy"]) & set(item["hard"])) | (
            (set(item["easy"]) | set(item["hard"])) & set(item["junk"]))
        if overlap:
            raise ValueError(f"{source}: gnd[{q}] puts image(s) {sorted(overlap)[:5]} in two of "
                             "easy / hard / junk")
        if "bbx" in entry:
            box = entry["bbx"]
            if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(
                    isinstance(v, (int, float)) for v in box):
                raise ValueError(f"{source}: gnd[{q}].bbx must be [x1, y1, x2, y2]")
            item["bbx"] = [float(v) for v in box]
        checked.append(item)
    return {"imlist": [str(i) for i in images], "qimlist": [str(i) for i in queries],
            "gnd": checked}


def average_precision(positive_ranks: np.ndarray, n_positives: int) -> float:
    """The protocol's trapezoidal AP of sorted 0-based ranks (ignored images removed)."""
    ranks = np.asarray(positive_ranks, dtype=np.float64)
    j = np.arange(len(ranks), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        before = np.where(ranks == 0, 1.0, j / ranks)
    after = (j + 1) / (ranks + 1)
    return float(((before + after) / 2).sum() / n_positives)


def _setting(entry: dict, setting: str) -> tuple[list[int], list[int]]:
    if setting == "easy":
        return entry["easy"], entry["junk"] + entry["hard"]
    if setting == "medium":
        return entry["easy"] + entry["hard"], entry["junk"]
    return entry["hard"], entry["junk"] + entry["easy"]


def revisited_metrics(similarity: np.ndarray, ground_truth: dict,
                      kappas: tuple[int, ...] = KAPPAS) -> dict:
    """Easy / Medium / Hard mAP and mP@k of a (queries, database) similarity matrix.

    Returns ``{setting: {"map", "mp@k" for each k, "queries", "queries_without_positive"}}``
    (fractions in [0, 1]). Ties in similarity keep the database order.

    Raises:
        ValueError: for a similarity matrix whose shape does not match the ground truth.
    """
    similarity = np.asarray(similarity)
    gnd = ground_truth["gnd"]
    expected = (len(gnd), len(ground_truth["imlist"]))
    if similarity.shape != expected:
        raise ValueError(f"similarity has shape {similarity.shape}; the ground truth has "
                         f"{expected[0]} queries and {expected[1]} database images")
    order = np.argsort(-similarity, axis=1, kind="stable")
    out = {}
    for setting in SETTINGS:
        aps, precisions, empty = [], [], 0
        for q, entry in enumerate(gnd):
            positives, ignored = _setting(entry, setting)
            if not positives:
                empty += 1
                continue
            ranking = order[q][~np.isin(order[q], ignored)]
            ranks = np.flatnonzero(np.isin(ranking, positives))
            aps.append(average_precision(ranks, len(positives)))
            last = ranks.max() + 1
            precisions.append([(ranks < min(k, last)).sum() / min(k, last) for k in kappas])
        result = {"map": float(np.mean(aps)) if aps else None}
        for i, k in enumerate(kappas):
            result[f"mp@{k}"] = float(np.mean([p[i] for p in precisions])) if aps else None
        result.update(queries=len(aps), queries_without_positive=empty)
        out[setting] = result
    return out

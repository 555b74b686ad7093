"""The external-data files an ONNX graph reads, found without the ``onnx`` package (no torch, no protobuf).

An ONNX initializer may keep its bytes in another file (``TensorProto.external_data``, key ``location``),
relative to the graph's folder. Recent onnxruntime releases refuse locations that leave the model's folder;
older builds follow them anywhere (docs/deploy.md records which). :func:`external_data_locations` walks the protobuf
wire format of the graph (memory-mapped, skipping tensor payloads) and returns every location, so the bundle
loader can hold them to the confinement rule of :mod:`lbedge.paths` whatever onnxruntime is installed.

Walked: the main graph's initializers, sparse initializers and node attributes (tensors, sparse tensors and
subgraphs of If/Loop/Scan, recursively), the graphs of training info and the nodes of model-local functions.
"""

from __future__ import annotations

import mmap
from pathlib import Path

from .errors import CheckpointError

MAX_GRAPH_NESTING = 32  # subgraphs inside subgraphs; real models nest a few levels

# protobuf wire types
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5

# field numbers of onnx.proto (the ones that can lead to a TensorProto)
_MODEL_GRAPH, _MODEL_TRAINING, _MODEL_FUNCTIONS = 7, 20, 25
_TRAINING_GRAPHS = (1, 2)  # TrainingInfoProto.initialization, .algorithm
_GRAPH_NODE, _GRAPH_INIT, _GRAPH_SPARSE_INIT = 1, 5, 15
_NODE_ATTRIBUTE = 5
_FUNCTION_NODE = 7
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_EXTERNAL = 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


class _Malformed(Exception):
    """The bytes are not a well-formed protobuf message."""


class _Reader:
    """Field-by-field reading of protobuf messages inside one buffer, every length checked against it."""

    def __init__(self, buf: mmap.mmap | bytes):
        self.buf = buf

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if pos >= end or shift > 63:
                raise _Malformed("varint runs past its message")
            byte = self.buf[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value, pos
            shift += 7

    def fields(self, start: int, end: int):
        """``(field number, start, end)`` of each length-delimited field of the message ``buf[start:end]``."""
        pos = start
        while pos < end:
            key, pos = self.varint(pos, end)
            number, wire = key >> 3, key & 7
            if wire == _VARINT:
                _, pos = self.varint(pos, end)
            elif wire == _I64:
                pos += 8
            elif wire == _I32:
                pos += 4
            elif wire == _LEN:
                length, pos = self.varint(pos, end)
                if pos + length > end:
                    raise _Malformed("a field runs past its message")
                yield number, pos, pos + length
                pos += length
                continue
            else:
                raise _Malformed(f"unsupported wire type {wire}")
            if pos > end:
                raise _Malformed("a field runs past its message")


class _Walker:
    """Collects external-data locations from the messages of one ONNX model."""

    def __init__(self, reader: _Reader):
        self.r = reader
        self.locations: set[str] = set()

    def model(self, start: int, end: int) -> None:
        for number, s, e in self.r.fields(start, end):
            if number == _MODEL_GRAPH:
                self.graph(s, e, 1)
            elif number == _MODEL_TRAINING:
                for n2, s2, e2 in self.r.fields(s, e):
                    if n2 in _TRAINING_GRAPHS:
                        self.graph(s2, e2, 1)
            elif number == _MODEL_FUNCTIONS:
                for n2, s2, e2 in self.r.fields(s, e):
                    if n2 == _FUNCTION_NODE:
                        self.node(s2, e2, 1)

    def graph(self, start: int, end: int, depth: int) -> None:
        if depth > MAX_GRAPH_NESTING:
            raise _Malformed(f"subgraphs nest deeper than {MAX_GRAPH_NESTING} levels")
        for number, s, e in self.r.fields(start, end):
            if number == _GRAPH_INIT:
                self.tensor(s, e)
            elif number == _GRAPH_SPARSE_INIT:
                self.sparse(s, e)
            elif number == _GRAPH_NODE:
                self.node(s, e, depth)

    def node(self, start: int, end: int, depth: int) -> None:
        for number, s, e in self.r.fields(start, end):
            if number == _NODE_ATTRIBUTE:
                self.attribute(s, e, depth)

    def attribute(self, start: int, end: int, depth: int) -> None:
        for number, s, e in self.r.fields(start, end):
            if number in (_ATTR_T, _ATTR_TENSORS):
                self.tensor(s, e)
            elif number in (_ATTR_SPARSE, _ATTR_SPARSES):
                self.sparse(s, e)
            elif number in (_ATTR_G, _ATTR_GRAPHS):
                self.graph(s, e, depth + 1)

    def sparse(self, start: int, end: int) -> None:
        for number, s, e in self.r.fields(start, end):
            if number in (_SPARSE_VALUES, _SPARSE_INDICES):
                self.tensor(s, e)

    def tensor(self, start: int, end: int) -> None:
        for number, s, e in self.r.fields(start, end):
            if number != _TENSOR_EXTERNAL:
                continue
            key = value = b""
            for n2, s2, e2 in self.r.fields(s, e):
                if n2 == _ENTRY_KEY:
                    key = bytes(self.r.buf[s2:e2])
                elif n2 == _ENTRY_VALUE:
                    value = bytes(self.r.buf[s2:e2])
            if key == b"location":
                try:
                    self.locations.add(value.decode("utf-8"))
                except UnicodeDecodeError:
                    raise _Malformed("an external data location is not UTF-8") from None


def external_data_locations(path: Path) -> set[str]:
    """Every ``location`` of external data that the ONNX graph at ``path`` names (relative to its folder)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            if size == 0:
                raise CheckpointError(f"ONNX graph {path} is empty: rebuild or re-copy the bundle")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                walker = _Walker(_Reader(buf))
                walker.model(0, size)
                return walker.locations
    except _Malformed as exc:
        raise CheckpointError(
            f"{path} is not a well-formed ONNX graph ({exc}): rebuild or re-copy the bundle"
        ) from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read ONNX graph {path}: {exc}") from None

"""`tf.train.Example`, `tf.train.SequenceExample` and TensorBoard's `Event` without TensorFlow.

The messages are built here from their schema (TensorFlow's `core/example/feature.proto` and
`example.proto`, `core/util/event.proto` and `core/framework/summary.proto` — scalars only: the
same field numbers and types, hence the same wire format) with the protobuf runtime, in a
descriptor pool of their own, so that they parse and serialise the records TensorFlow, TFDS and
DMVR write and the event files TensorBoard reads. Why not the generated modules of TFDS,
TensorFlow or TensorBoard: importing those packages is what the training process must not do
(GPU images often have none of them), and protobuf is all these messages need.

    example = Example.FromString(raw)
    example.features.feature["label"].int64_list.value
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_FDP = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "vivit_jax.tf_example"


def _field(message, name: str, number: int, kind, *, label=_FDP.LABEL_OPTIONAL, type_name=None):
    field = message.field.add(name=name, number=number, type=kind, label=label)
    if type_name:
        field.type_name = f".{_PACKAGE}.{type_name}"
    return field


def _map(message, name: str, value_type: str) -> None:
    """`map<string, value_type> name = 1;` as protobuf encodes it: a repeated entry message."""
    entry_name = "".join(part.capitalize() for part in name.split("_")) + "Entry"
    entry = message.nested_type.add(name=entry_name)
    entry.options.map_entry = True
    _field(entry, "key", 1, _FDP.TYPE_STRING)
    _field(entry, "value", 2, _FDP.TYPE_MESSAGE, type_name=value_type)
    _field(
        message, name, 1, _FDP.TYPE_MESSAGE, label=_FDP.LABEL_REPEATED
    ).type_name = f".{_PACKAGE}.{message.name}.{entry_name}"


def _file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(
        name="vivit_jax/tf_example.proto", package=_PACKAGE, syntax="proto3"
    )
    repeated = _FDP.LABEL_REPEATED
    for name, kind in (
        ("BytesList", _FDP.TYPE_BYTES),
        ("FloatList", _FDP.TYPE_FLOAT),
        ("Int64List", _FDP.TYPE_INT64),
    ):
        message = f.message_type.add(name=name)
        field = _field(message, "value", 1, kind, label=repeated)
        if kind != _FDP.TYPE_BYTES:
            field.options.packed = True
    feature = f.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    for number, (name, type_name) in enumerate(
        (("bytes_list", "BytesList"), ("float_list", "FloatList"), ("int64_list", "Int64List")), 1
    ):
        _field(feature, name, number, _FDP.TYPE_MESSAGE, type_name=type_name).oneof_index = 0
    _map(f.message_type.add(name="Features"), "feature", "Feature")
    feature_list = f.message_type.add(name="FeatureList")
    _field(feature_list, "feature", 1, _FDP.TYPE_MESSAGE, label=repeated, type_name="Feature")
    _map(f.message_type.add(name="FeatureLists"), "feature_list", "FeatureList")
    example = f.message_type.add(name="Example")
    _field(example, "features", 1, _FDP.TYPE_MESSAGE, type_name="Features")
    sequence = f.message_type.add(name="SequenceExample")
    _field(sequence, "context", 1, _FDP.TYPE_MESSAGE, type_name="Features")
    _field(sequence, "feature_lists", 2, _FDP.TYPE_MESSAGE, type_name="FeatureLists")
    # TensorBoard's event files: scalar summaries.
    summary = f.message_type.add(name="Summary")
    value = summary.nested_type.add(name="Value")
    value.oneof_decl.add(name="value")
    _field(value, "tag", 1, _FDP.TYPE_STRING)
    _field(value, "simple_value", 2, _FDP.TYPE_FLOAT).oneof_index = 0
    _field(summary, "value", 1, _FDP.TYPE_MESSAGE, label=repeated, type_name="Summary.Value")
    event = f.message_type.add(name="Event")
    event.oneof_decl.add(name="what")
    _field(event, "wall_time", 1, _FDP.TYPE_DOUBLE)
    _field(event, "step", 2, _FDP.TYPE_INT64)
    _field(event, "file_version", 3, _FDP.TYPE_STRING).oneof_index = 0
    _field(event, "summary", 5, _FDP.TYPE_MESSAGE, type_name="Summary").oneof_index = 0
    return f


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file())


def _message(name: str):
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


Feature = _message("Feature")
Features = _message("Features")
FeatureList = _message("FeatureList")
FeatureLists = _message("FeatureLists")
Example = _message("Example")
SequenceExample = _message("SequenceExample")
Summary = _message("Summary")
Event = _message("Event")

"""JSON Schemas for protobuf messages, as the transcoder reads and prints them.

That is the proto3 JSON mapping with proto field names (print option
preserve_proto_field_names): 64-bit integers print as decimal strings and
parse from strings or numbers, floats may be "NaN" or "Infinity", bytes are
base64. Objects list their fields only (additionalProperties: false): the
transcoder skips unknown request fields, but they are no part of the contract.
"""

from typing import Any

from google.protobuf.descriptor_pb2 import DescriptorProto
from google.protobuf.descriptor_pb2 import FieldDescriptorProto as Field

from gateway.protoindex import ProtoIndex

Schema = dict[str, Any]

_FLOAT_LIMIT = 3.4028234663852886e38


def _float(limit: float | None) -> Schema:
    number: Schema = {"type": "number"}
    if limit is not None:
        number |= {"minimum": -limit, "maximum": limit}
    special = {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}
    return {"oneOf": [number, special]}


def _integer(low: int, high: int, digits: str) -> Schema:
    """A 64-bit integer: printed as a string, parsed from a string or a number."""
    return {
        "oneOf": [
            {"type": "string", "pattern": digits},
            {"type": "integer", "minimum": low, "maximum": high},
        ]
    }


_SCALARS: dict[int, Schema] = {
    Field.TYPE_DOUBLE: _float(None),
    Field.TYPE_FLOAT: _float(_FLOAT_LIMIT),
    Field.TYPE_INT32: {"type": "integer", "format": "int32"},
    Field.TYPE_SINT32: {"type": "integer", "format": "int32"},
    Field.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    Field.TYPE_UINT32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    Field.TYPE_FIXED32: {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
    Field.TYPE_INT64: _integer(-(2**63), 2**63 - 1, "^-?[0-9]{1,18}$"),
    Field.TYPE_SINT64: _integer(-(2**63), 2**63 - 1, "^-?[0-9]{1,18}$"),
    Field.TYPE_SFIXED64: _integer(-(2**63), 2**63 - 1, "^-?[0-9]{1,18}$"),
    Field.TYPE_UINT64: _integer(0, 2**64 - 1, "^[0-9]{1,19}$"),
    Field.TYPE_FIXED64: _integer(0, 2**64 - 1, "^[0-9]{1,19}$"),
    Field.TYPE_BOOL: {"type": "boolean"},
    Field.TYPE_STRING: {"type": "string"},
    Field.TYPE_BYTES: {"type": "string", "format": "byte"},
}


def component_ref(full_name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{full_name}"}


class SchemaBuilder:
    """Builds `components.schemas` for the messages that operations reference."""

    def __init__(self, index: ProtoIndex) -> None:
        self.index = index
        self.components: dict[str, Schema] = {}

    def ref(self, full_name: str) -> Schema:
        """A reference to the message or enum `full_name`, adding its component once."""
        if full_name not in self.components:
            self.components[full_name] = {}  # placeholder: messages may be recursive
            if full_name in self.index.enums:
                self.components[full_name] = self.enum(full_name)
            else:
                self.components[full_name] = self.message(full_name)
        return component_ref(full_name)

    def enum(self, full_name: str) -> Schema:
        values = [v.name for v in self.index.enums[full_name].value]
        return self._described({"type": "string", "enum": values}, full_name)

    def message(self, full_name: str, exclude: frozenset[str] = frozenset()) -> Schema:
        """The object schema of a message, without the fields in `exclude`."""
        if full_name.startswith("google.protobuf."):
            raise NotImplementedError(f"{full_name} has a special JSON form this generator lacks")
        message = self.index.messages[full_name]
        fields = [f for f in message.field if f.name not in exclude]
        properties = {f.name: self.field(full_name, f) for f in fields}
        schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
        schema = self._described(schema, full_name)
        oneofs = [self._oneof_members(message, i) for i in range(len(message.oneof_decl))]
        oneofs = [members for members in oneofs if len(members) > 1]
        if oneofs == [[f.name for f in message.field]]:
            schema["maxProperties"] = 1  # the whole message is one oneof
        rules = " ".join(f"At most one of: {', '.join(members)}." for members in oneofs)
        if rules:
            schema["description"] = f"{schema.get('description', '')} {rules}".strip()
        return schema

    def field(self, message_name: str, field: Field) -> Schema:
        """The schema of one field's JSON value, with the field's comment."""
        schema = self._value(field)
        if field.label == Field.LABEL_REPEATED and not self.is_map(field):
            schema = {"type": "array", "items": schema}
        return self._described(schema, f"{message_name}.{field.name}")

    def _value(self, field: Field) -> Schema:
        if field.type in _SCALARS:
            return dict(_SCALARS[field.type])
        type_name = field.type_name.lstrip(".")
        if self.is_map(field):
            entry = self.index.messages[type_name]
            value = next(f for f in entry.field if f.name == "value")
            return {"type": "object", "additionalProperties": self._value(value)}
        return self.ref(type_name)

    def is_map(self, field: Field) -> bool:
        if field.type != Field.TYPE_MESSAGE:
            return False
        entry = self.index.messages.get(field.type_name.lstrip("."))
        return entry is not None and entry.options.map_entry

    @staticmethod
    def _oneof_members(message: DescriptorProto, oneof_index: int) -> list[str]:
        # proto3 `optional` fields sit in synthetic oneofs of one member each.
        return [
            f.name
            for f in message.field
            if f.HasField("oneof_index") and f.oneof_index == oneof_index and not f.proto3_optional
        ]

    def _described(self, schema: Schema, full_name: str) -> Schema:
        comment = self.index.comment(full_name)
        if not comment:
            return schema
        if "$ref" in schema:
            # OpenAPI 3.0 ignores siblings of $ref; wrap it to keep the description.
            return {"allOf": [schema], "description": comment}
        return schema | {"description": comment}

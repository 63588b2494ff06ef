"""A descriptor set indexed by full name, with the proto comments of each element."""

from collections.abc import Iterable

from google.protobuf.descriptor_pb2 import (
    DescriptorProto,
    EnumDescriptorProto,
    FileDescriptorSet,
    ServiceDescriptorProto,
)

# Field numbers in FileDescriptorProto and DescriptorProto, as SourceCodeInfo
# paths use them.
_FILE_MESSAGES, _FILE_ENUMS, _FILE_SERVICES = 4, 5, 6
_MESSAGE_FIELDS, _MESSAGE_NESTED, _MESSAGE_ENUMS = 2, 3, 4
_SERVICE_METHODS = 2


class ProtoIndex:
    """Messages, enums and services by full name (no leading dot), and comments.

    Comments are keyed by full name too: `pkg.Message`, `pkg.Message.field`,
    `pkg.Service`, `pkg.Service.Method`.
    """

    def __init__(self, descriptor_set: FileDescriptorSet) -> None:
        self.messages: dict[str, DescriptorProto] = {}
        self.enums: dict[str, EnumDescriptorProto] = {}
        self.services: dict[str, ServiceDescriptorProto] = {}
        self.comments: dict[str, str] = {}
        for file in descriptor_set.file:
            located = {
                tuple(loc.path): loc.leading_comments.strip()
                for loc in file.source_code_info.location
                if loc.leading_comments.strip()
            }
            self._add_messages(file.package, file.message_type, (_FILE_MESSAGES,), located)
            self._add_enums(file.package, file.enum_type, (_FILE_ENUMS,), located)
            for s, service in enumerate(file.service):
                name = f"{file.package}.{service.name}"
                self.services[name] = service
                self._comment(name, located, (_FILE_SERVICES, s))
                for m, method in enumerate(service.method):
                    path = (_FILE_SERVICES, s, _SERVICE_METHODS, m)
                    self._comment(f"{name}.{method.name}", located, path)

    def comment(self, full_name: str) -> str:
        return self.comments.get(full_name, "")

    def _comment(
        self, full_name: str, located: dict[tuple[int, ...], str], path: tuple[int, ...]
    ) -> None:
        if path in located:
            self.comments[full_name] = located[path]

    def _add_messages(
        self,
        scope: str,
        messages: Iterable[DescriptorProto],
        path: tuple[int, ...],
        located: dict[tuple[int, ...], str],
    ) -> None:
        for i, message in enumerate(messages):
            name = f"{scope}.{message.name}"
            here = (*path, i)
            self.messages[name] = message
            self._comment(name, located, here)
            for k, field in enumerate(message.field):
                self._comment(f"{name}.{field.name}", located, (*here, _MESSAGE_FIELDS, k))
            self._add_messages(name, message.nested_type, (*here, _MESSAGE_NESTED), located)
            self._add_enums(name, message.enum_type, (*here, _MESSAGE_ENUMS), located)

    def _add_enums(
        self,
        scope: str,
        enums: Iterable[EnumDescriptorProto],
        path: tuple[int, ...],
        located: dict[tuple[int, ...], str],
    ) -> None:
        for i, enum in enumerate(enums):
            name = f"{scope}.{enum.name}"
            self.enums[name] = enum
            self._comment(name, located, (*path, i))
